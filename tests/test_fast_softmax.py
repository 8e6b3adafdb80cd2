"""The fast int8 softmax (int8_fast_misc.softmax, templates/int8_fast/softmax.c.j2) against its reference twin
(templates/int8/softmax.c.j2) byte for byte, on both code paths (plain C, the DSP path emulated in C), and against
TFLite's reference kernels.

Its table of e^-d for the 256 differences d = max - x is checked against the C helpers it replaces for every
difference and every multiplier shift; its rewritten roundings against the reference's on rounding ties (they need
a reciprocal >= 0: checked for every sum); the kernels run on rows chosen to reach every difference, both sides of the
cut, the largest sums (rows of equal values up to the longest row the rule takes) and the smallest (one maximum),
over layers of every multiplier shift and, by hypothesis, random input scales and betas."""
from __future__ import annotations

import importlib.util
import os
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyc.codegen import int8_fast_misc
from tinyc.compiler import codegen_options, compile_graph
from tinyc.ir import Graph, Quant
from tinyc.ops.softmax import SoftmaxParams
from tinyc.quant import params as qp
from tinyc.resources import resource_dir
from tinyc.verify import run_generated

EXAMPLES = 20 if os.environ.get("TINYC_FULL") else 2
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROW_LENGTHS = (1, 3, 4, 7, 32, 37, 256, 300, int8_fast_misc.SOFTMAX_MAX_ROW)


def _params(scale_beta: float) -> SoftmaxParams:
    """ops/softmax.int8_prepare's arithmetic for input scale x beta."""
    mult, shift = qp.multiplier(min(scale_beta * float(1 << 26), float((1 << 31) - 1)))
    return SoftmaxParams(mult, shift, -int(np.floor(31 * float(1 << 26) / float(1 << shift))))


def _scale_for_shift(shift: int, rng) -> float:
    """An input scale whose softmax multiplier has this shift (1..30): scale x 2^26 in [2^(shift-1), 2^shift)."""
    return float(np.float32(2.0 ** (shift - 1 - 26) * rng.uniform(1.0, 1.999)))


# -- the table against the C helpers ----------------------------------------------------------------------------
HARNESS = r"""
#include <stdio.h>
#include "tinyc_int8.h"
int main(void) {
  long long mult, shift, d;
  while (scanf("%lld %lld %lld", &mult, &shift, &d) == 3) {
    printf("%d\n", tinyc_exp_negative_q5(tinyc_srdhm((int32_t)d * (1 << shift), (int32_t)mult)));
  }
  return 0;
}
"""


def test_exp_table_equals_c_helpers(tmp_path):
    """Every difference within the cut, for layers of every shift (several multipliers each), the scale x beta
    extremes included: the table's entries are what the reference kernel's C computes; beyond the cut they are 0."""
    rng = np.random.default_rng(5)
    params = [_params(_scale_for_shift(s, rng)) for s in range(1, 31) for _ in range(3)]
    params += [_params(v) for v in (2.0 ** -26 * 1.0001, 0.1, 1.0, 15.99)]
    lines, want = [], []
    for p in params:
        table = int8_fast_misc.softmax_exp_table(p)
        for d in range(256):
            if -d >= p.diff_min:
                lines.append(f"{p.mult} {p.shift} {-d}")
                want.append(table[d])
            else:
                assert table[d] == 0
    (tmp_path / "h.c").write_text(HARNESS)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", "-I", str(resource_dir("runtime_c")), str(tmp_path / "h.c"),
                    "-o", str(tmp_path / "h"), "-lm"], check=True)
    res = subprocess.run([str(tmp_path / "h")], input="\n".join(lines), capture_output=True, text=True, check=True)
    got = [int(v) for v in res.stdout.split()]
    assert got == want


# -- the reciprocal's range -------------------------------------------------------------------------------------
RECIPROCAL = r"""
#include <stdio.h>
#include "tinyc_int8.h"
int main(void) {
  int32_t lo = INT32_MAX;
  /* the input of every sum below 2^28 (rows of at most 511 values): (sum << headroom) - 2^31, headroom >= 4 */
  for (uint32_t a = 0; a < 0x80000000u; a += 16) {
    const int32_t r = tinyc_one_over_one_plus_x((int32_t)a);
    if (r < lo) lo = r;
  }
  printf("%d\n", lo);
  return 0;
}
"""


def test_reciprocal_is_at_least_two_to_the_30_minus_4(tmp_path):
    """The kernel's rounding rewrite needs r >= 0: tinyc_reciprocal_q12 of every sum the rule sees (every input of
    tinyc_one_over_one_plus_x a multiple of 16) is at least 2^30 - 4 (over all 2^31 inputs as well: 2^30 - 4)."""
    (tmp_path / "r.c").write_text(RECIPROCAL)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(resource_dir("runtime_c")),
                    str(tmp_path / "r.c"), "-o", str(tmp_path / "r"), "-lm"], check=True)
    res = subprocess.run([str(tmp_path / "r")], capture_output=True, text=True, check=True)
    assert int(res.stdout) >= (1 << 30) - 4


# -- the kernel's arithmetic against the reference's, on rounding ties -------------------------------------------
ARITHMETIC = r"""
#include <stdio.h>
#include "tinyc_int8.h"
#include "tinyc_simd.h"
int main(void) {
  long long r_in, e_in, b_in;
  while (scanf("%%lld %%lld %%lld", &r_in, &e_in, &b_in) == 3) {
    const uint32_t reciprocal = (uint32_t)r_in, e = (uint32_t)e_in;
    const int bits_over_unit = (int)b_in;
    /* the reference: RDBPOT(e, 12) for the sum, then the output byte */
    const int32_t want_term = tinyc_rdbpot((int32_t)e, 12);
    const int8_t want = tinyc_sat8(tinyc_rdbpot(tinyc_srdhm((int32_t)reciprocal, (int32_t)e), bits_over_unit + 23)
                                   - 128, -128, 127);
    const uint32_t term = %(sum_term)s;
    %(row)s
    int8_t dsp, plain;
    {
      %(row_dsp)s
      %(out_dsp)s
      dsp = %(byte_dsp)s;
    }
    {
      %(row_plain)s
      %(out_plain)s
      plain = %(byte_plain)s;
    }
    printf("%%d %%d %%d %%d %%d\n", want_term, want, (int)term, dsp, plain);
  }
  return 0;
}
"""


def _arithmetic_cases(rng) -> list:
    """(reciprocal, e, bits over unit): the reciprocal is in [2^30 - 4, 2^31) for every sum (tinyc_reciprocal_q12,
    checked over all its inputs), e in [0, 2^31), bits over unit 0..8 (rows of 1..511 values). Random cases, the
    extremes, ties of the sum's rounding (e = 2^11 mod 2^12), of SRDHM (r e = 2^30 mod 2^31) and of the final
    RDBPOT (SRDHM(r, e) = 2^(E-1) mod 2^E), the least e of each output value, and their neighbours."""
    lo, top = (1 << 30) - 4, (1 << 31) - 1
    cases = []
    for _ in range(20000):
        cases.append((int(rng.integers(lo, top + 1)), int(rng.integers(0, top + 1)), int(rng.integers(0, 9))))
    for r in (lo, lo + 1, 1 << 30, top - 1, top):
        for e in (0, 1, 2047, 2048, 4095, top - 1, top):
            cases += [(r, e, b) for b in range(9)]
    for _ in range(3000):
        r, b = int(rng.integers(lo, top + 1)), int(rng.integers(0, 9))
        cases.append((r, int(rng.integers(0, 1 << 19)) * 4096 + 2048 + int(rng.integers(-1, 2)), b))
        if r % 2:                                           # r e = 2^30 (mod 2^31): e = 2^30 / r (mod 2^31)
            cases.append((r, ((1 << 30) * pow(r, -1, 1 << 31) + int(rng.integers(-1, 2))) % (1 << 31), b))
        big_e = b + 23
        s = int(rng.integers(0, 257)) * (1 << big_e) + (1 << (big_e - 1))    # SRDHM(r, e) = s: the least such e
        e = -(-(s * (1 << 31) - (1 << 30)) // r)
        # where the output steps to k: the least e with r e + 2^30 + 2^(E+30) >= k 2^(E+31)
        k = int(rng.integers(1, 257))
        e2 = -(-(k * (1 << (big_e + 31)) - (1 << 30) - (1 << (big_e + 30))) // r)
        for de in (-1, 0, 1):
            cases += [(r, v + de, b) for v in (e, e2) if 0 <= v + de <= top]
    return cases


def test_kernel_arithmetic_equals_reference_on_ties(tmp_path):
    """The lines of the template's arithmetic (int8_fast_misc.SOFTMAX_*), both paths' forms, against the reference
    helpers: the sum's term and the output byte. Rounding ties decide single bytes that random rows rarely reach."""
    c = ARITHMETIC % dict(sum_term=int8_fast_misc.SOFTMAX_SUM_TERM, row="\n    ".join(int8_fast_misc.SOFTMAX_ROW),
                          row_dsp="\n      ".join(int8_fast_misc.SOFTMAX_ROW_DSP),
                          row_plain="\n      ".join(int8_fast_misc.SOFTMAX_ROW_PLAIN),
                          out_dsp="\n      ".join(int8_fast_misc.SOFTMAX_OUT_DSP),
                          out_plain="\n      ".join(int8_fast_misc.SOFTMAX_OUT_PLAIN),
                          byte_dsp=int8_fast_misc.SOFTMAX_BYTE_DSP, byte_plain=int8_fast_misc.SOFTMAX_BYTE_PLAIN)
    (tmp_path / "a.c").write_text(c)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-O1", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", "-I", str(resource_dir("runtime_c")), str(tmp_path / "a.c"),
                    "-o", str(tmp_path / "a"), "-lm"], check=True)
    cases = _arithmetic_cases(np.random.default_rng(11))
    res = subprocess.run([str(tmp_path / "a")], input="\n".join("%d %d %d" % c for c in cases), capture_output=True,
                         text=True, check=True)
    got = np.array([[int(v) for v in line.split()] for line in res.stdout.splitlines()])
    assert len(got) == len(cases)
    for name, column in (("sum term", 2), ("DSP path", 3), ("plain path", 4)):
        bad = np.flatnonzero(got[:, column] != got[:, column - 2 if column == 2 else 1])
        assert bad.size == 0, (name, [(cases[i], got[i].tolist()) for i in bad[:5]])


# -- fast against reference -------------------------------------------------------------------------------------
def _rows(n: int, cut: int, rng) -> np.ndarray:
    """Rows of n int8 values: all equal (at both ends and in between), one maximum over a floor, the differences
    at the cut and one past it, every value -128..127 (as far as the row reaches), and random rows of narrow and
    wide spread."""
    rows = [np.full(n, v) for v in (-128, 0, 127)]
    for top, low in ((127, -128), (0, -1), (-128 + min(cut, 255), -128)):
        r = np.full(n, low)
        r[rng.integers(n)] = top
        rows.append(r)
    for top in (127, -100):
        edge = [top - cut, top - cut - 1]
        r = rng.choice([top] + [v for v in edge if v >= -128], n)
        r[0] = top
        rows.append(r)
    everything = np.arange(-128, 128)
    for _ in range(2):
        rows.append(np.resize(rng.permutation(everything), n))
    for spread in (3, 20, 256):
        lo = int(rng.integers(-128, 129 - spread))
        rows += [rng.integers(lo, lo + spread, n) for _ in range(3)]
    return np.stack(rows).astype(np.int8)


def _graph(layers, rng):
    """One Softmax per (input scale, beta, row length); inputs [1, rows, n] of _rows."""
    g = Graph("softmax")
    inputs = []
    for i, (scale, beta, n) in enumerate(layers):
        rows = _rows(n, -_params(float(np.float32(scale)) * beta).diff_min, rng)
        g.add_tensor(f"x{i}", (1, len(rows), n), "int8", quant=Quant(np.float32(scale), np.int64(0)))
        g.add_tensor(f"y{i}", (1, len(rows), n), "int8", quant=Quant(np.float32(1 / 256), np.int64(-128)))
        g.add_node("Softmax", [f"x{i}"], [f"y{i}"], axis=2, beta=beta, name=f"softmax{i}")
        g.inputs.append(f"x{i}")
        g.outputs.append(f"y{i}")
        inputs.append(rows[None, None])
    return g, inputs


def _same_bytes(layers, seed):
    g, inputs = _graph(layers, np.random.default_rng(seed))
    fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
    ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
    assert all(r["kernel"] == "int8_fast/softmax" for r in fast.library.layers)
    want = run_generated(ref, inputs)
    for dsp in (False, True):
        got = run_generated(fast, inputs, dsp=dsp)
        for i, (a, b) in enumerate(zip(got, want)):
            bad = np.argwhere(a != b)
            assert bad.size == 0, (f"layer {layers[i]}, dsp={dsp}: {len(bad)} bytes differ, first at {bad[0]}: "
                                   f"{a[tuple(bad[0])]} vs {b[tuple(bad[0])]}")


@pytest.mark.parametrize("shifts", [range(1, 11), range(11, 21), range(21, 31)])
def test_fast_equals_reference_for_every_shift(shifts):
    rng = np.random.default_rng(shifts[0])
    layers = [(_scale_for_shift(s, rng), 1.0, ROW_LENGTHS[i % len(ROW_LENGTHS)]) for i, s in enumerate(shifts)]
    _same_bytes(layers, seed=shifts[0])


@settings(**SETTINGS)
@given(data=st.data())
def test_fast_equals_reference_random_layers(data):
    """Input scale x beta log-uniform over TFLite's whole range (2^-26, 16)."""
    draw = data.draw
    layers = []
    for _ in range(6):
        beta = draw(st.sampled_from([1.0, 1.0, 0.5, 2.0, 0.125]))
        product = float(np.exp2(draw(st.floats(-25.99, 3.99))))
        layers.append((product / beta, beta, draw(st.sampled_from(ROW_LENGTHS))))
    _same_bytes(layers, seed=draw(st.integers(0, 2 ** 16)))


def test_long_rows_take_the_reference_kernel():
    g, _ = _graph([(0.05, 1.0, int8_fast_misc.SOFTMAX_MAX_ROW + 1)], np.random.default_rng(0))
    fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
    assert fast.library.layers[0]["kernel"] == "int8/softmax"


# -- against TFLite -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
@settings(**SETTINGS)
@given(data=st.data())
def test_fast_softmax_equals_tflite(tmp_path, data):
    from tinyc.quant.tflite_writer import write_tflite
    from tinyc.verify import verify
    draw = data.draw
    scale = float(np.float32(np.exp2(draw(st.floats(-25.99, 3.99)))))
    n = draw(st.sampled_from(ROW_LENGTHS))
    g, inputs = _graph([(scale, 1.0, n)], np.random.default_rng(draw(st.integers(0, 2 ** 16))))
    path = tmp_path / "softmax.tflite"
    write_tflite(g, str(path))
    report = verify(str(path), inputs=inputs)
    assert report["oracle"] == "tflite", report.get("oracle_reason")
    assert report["mismatched_bytes"] == 0 and report["dsp_path_matches"], report["outputs"]
