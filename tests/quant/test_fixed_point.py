"""TFLite's fixed-point requantization: the C helpers in runtime_c/tinyc_int8.h equal the exact-integer
Python reference on edge cases and random values (built with UBSan, so no undefined shifts or overflows)."""
import math
import subprocess

import numpy as np
import pytest

from tinyc.quant.fixed_point import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier, quantize_multiplier,
                                     rounding_divide_by_pot, saturating_rounding_doubling_high_mul)
from tinyc.resources import resource_dir

HARNESS = r"""
#include <stdio.h>
#include "tinyc_int8.h"
int main(void) {
  long long x, m; int s;
  while (scanf("%lld %lld %d", &x, &m, &s) == 3) {
    printf("%d %d %d\n", tinyc_srdhm((int32_t)x, (int32_t)m), tinyc_rdbpot((int32_t)x, s < 0 ? -s : 0),
           tinyc_requantize((int32_t)x, (int32_t)m, s));
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def c_helpers(tmp_path_factory):
    d = tmp_path_factory.mktemp("fixed_point")
    (d / "h.c").write_text(HARNESS)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-O2",
                    "-fsanitize=undefined", "-fno-sanitize-recover=all", "-I", str(resource_dir("runtime_c")),
                    str(d / "h.c"), "-o", str(d / "h")], check=True)
    return d / "h"


def cases():
    rng = np.random.default_rng(0)
    edge = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -12345, -3, -2, -1, 0, 1, 2, 3, 12345, 1 << 30, INT32_MAX]
    out = [(x, m, s) for x in edge for m in (INT32_MIN, 1 << 30, 1518500250, INT32_MAX) for s in (-31, -8, -1, 0)]
    for _ in range(3000):
        real = float(np.exp(rng.uniform(np.log(1e-7), np.log(4.0))))
        m, s = quantize_multiplier(real)
        x = int(rng.integers(-(1 << 20), 1 << 20))
        out.append((x, m, s))
    return out


def test_c_equals_python_reference(c_helpers):
    data = cases()
    res = subprocess.run([str(c_helpers)], input="\n".join(f"{x} {m} {s}" for x, m, s in data),
                         capture_output=True, text=True, check=True)
    for (x, m, s), line in zip(data, res.stdout.splitlines()):
        got = tuple(int(v) for v in line.split())
        want = (saturating_rounding_doubling_high_mul(x, m), rounding_divide_by_pot(x, -s if s < 0 else 0),
                multiply_by_quantized_multiplier(x, m, s))
        assert got == want, (x, m, s)
    assert len(res.stdout.splitlines()) == len(data)


@pytest.mark.parametrize("real", [1e-9, 1e-6, 0.0038, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.999])
def test_quantize_multiplier_represents_the_real_value(real):
    m, s = quantize_multiplier(real)
    if real < 2.0 ** -31:
        assert (m, s) == (0, 0)
        return
    assert (1 << 30) <= m <= INT32_MAX
    assert math.isclose(m * 2.0 ** (s - 31), real, rel_tol=2 ** -30)


def test_rounding_matches_gemmlowp():
    assert rounding_divide_by_pot(5, 1) == 3 and rounding_divide_by_pot(-5, 1) == -3
    assert rounding_divide_by_pot(4, 1) == 2 and rounding_divide_by_pot(-6, 2) == -2
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    # 0.5 * 0.5 in Q31 is 0.25
    assert saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29
    # x * 0.75 for x = +-10: the high multiply rounds ties toward +infinity
    m, s = quantize_multiplier(0.75)
    assert multiply_by_quantized_multiplier(10, m, s) == 8
    assert multiply_by_quantized_multiplier(-10, m, s) == -7
