"""The fast GEMM's compile-time shortcuts (tinyc/codegen/gemm_pack.py) and fast requantization helpers
(runtime_c/tinyc_simd.h) against exact references: the pair-packed arithmetic in exact integers, the fast
fixed-point requantization against TFLite's MultiplyByQuantizedMultiplier, and the integer FULLY_CONNECTED
requantization against round(acc * scale) in double, including accumulators right next to rounding ties."""
from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np
import pytest

from tinyc.codegen import gemm_pack
from tinyc.quant.fixed_point import multiply_by_quantized_multiplier, quantize_multiplier
from tinyc.resources import resource_dir

HARNESS = r"""
#include <stdio.h>
#include "tinyc_simd.h"
int main(void) {
  char kind;
  long long acc, m, s, t;
  double scale;
  while (scanf(" %c", &kind) == 1) {
    if (kind == 'q' && scanf("%lld %lld %lld", &acc, &m, &s) == 3) {
      printf("%ld\n", (long)tinyc_requantize_fast((int32_t)acc, (int32_t)m, (int32_t)s, (int32_t)(1u << (s - 1))));
    } else if (kind == 'd' && scanf("%lld %lld %lld %la", &acc, &m, &t, &scale) == 4) {
      printf("%ld\n", (long)tinyc_requantize_double_fast((int32_t)acc, (int32_t)m, (uint32_t)t, &scale));
    }
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    d = tmp_path_factory.mktemp("fast_requant")
    (d / "h.c").write_text(HARNESS)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", "-DTINYC_SIMD_EMULATE", "-I", str(resource_dir("runtime_c")),
                    str(d / "h.c"), "-o", str(d / "h"), "-lm"], check=True)

    def run(lines):
        out = subprocess.run([str(d / "h")], input="\n".join(lines), capture_output=True, text=True, check=True)
        return [int(v) for v in out.stdout.split()]
    return run


def test_fast_requantize_equals_mbqm(helpers):
    rng = np.random.default_rng(1)
    cases = []
    for _ in range(20000):
        real = float(np.exp(rng.uniform(np.log(1e-6), np.log(0.49))))
        m, s = quantize_multiplier(real)
        if s > -1:
            continue
        acc = int(rng.integers(-(1 << 30) + 1, 1 << 30)) if rng.random() < 0.3 else int(rng.integers(-200000, 200000))
        cases.append((acc, m, s))
    # accumulators whose first rounding lands exactly on an output half-integer (the double-rounding case)
    for r in range(1, 12):
        for acc in range(-3000, 3000, 7):
            cases.append((acc, 1 << 30, -r))
    cases += [((1 << 30) - 1, (1 << 31) - 1, -1), (-(1 << 30) + 1, (1 << 31) - 1, -31), (0, 1 << 30, -5)]
    got = helpers([f"q {a} {m} {-s}" for a, m, s in cases])
    want = [multiply_by_quantized_multiplier(a, m, s) for a, m, s in cases]
    assert len(got) == len(cases) and got == want


def _round_away_double(acc: int, scale: float) -> int:
    """C's round((double)acc * scale) on the exact double product, clamped like tinyc_requantize_double."""
    p = Fraction(float(acc) * scale)            # Python floats are IEEE doubles: the product rounds the same way
    r = int(abs(p) + Fraction(1, 2)) * (1 if p >= 0 else -1)
    return max(-(1 << 24), min(1 << 24, r))


def test_double_requantize_fast_equals_the_double_formula(helpers):
    rng = np.random.default_rng(2)
    lines, want = [], []
    for _ in range(400):
        scale = float(np.exp(rng.uniform(np.log(1e-5), np.log(0.45))))
        fixed = gemm_pack.double_requant(scale)
        assert fixed is not None
        m, tie = fixed
        accs = [int(a) for a in rng.integers(-(1 << 31), 1 << 31, 20)]
        accs += [int(a) for a in rng.integers(-int(400 / scale), int(400 / scale) + 1, 40)]
        for h in rng.integers(-300, 300, 20):          # right next to the half-integers h + 0.5
            center = int(round((h + 0.5) / scale))
            accs += [center + d for d in (-2, -1, 0, 1, 2)]
        for acc in accs:
            if -(1 << 31) <= acc < (1 << 31):
                lines.append(f"d {acc} {m} {tie} {scale.hex()}")
                want.append(_round_away_double(acc, scale))
    got = helpers(lines)
    assert len(got) == len(want)
    # results beyond the int8 range only need to saturate the same way
    clip = lambda v: max(-400, min(400, v))   # noqa: E731
    assert [clip(v) for v in got] == [clip(v) for v in want]


def test_double_requant_refuses_scales_it_cannot_prove():
    assert gemm_pack.double_requant(0.5) is None
    assert gemm_pack.double_requant(0.0) is None
    assert gemm_pack.double_requant(1e-3) is not None


def _wrap32(v: int) -> int:
    v %= 1 << 32
    return v - (1 << 32) if v >= (1 << 31) else v


def _dsp_model(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """What the pair-packed kernel computes, in exact integers with 32-bit wrapping: per pair and segment
    (gemm_pack.segments) X = Σ x * h mod 2^32 from X = Y, Y = Σ x * w_A; A = Y, B = Σ over segments of
    (X - Y) >> 8 as int32."""
    o, k = w.shape
    k4 = k - k % 4
    packed = gemm_pack.pack(w)
    bounds = np.cumsum([0] + [4 * n for n in packed.segments])
    out = np.zeros(o, np.int64)
    for p in range(o // 2):
        a, b = w[2 * p, :k4].astype(np.int64), w[2 * p + 1, :k4].astype(np.int64)
        h = a + 256 * b
        xs = x[:k4].astype(np.int64)
        y, big_x, banked = 0, 0, 0
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            y = _wrap32(y + int((xs[lo:hi] * a[lo:hi]).sum()))
            big_x = (big_x + int((xs[lo:hi] * h[lo:hi]).sum())) % (1 << 32)
            banked += _wrap32(big_x - y) >> 8
            big_x = y % (1 << 32)
        out[2 * p], out[2 * p + 1] = y, banked
    if o % 2:
        out[-1] = int((x[:k4].astype(np.int64) * w[-1, :k4]).sum())
    out += (x[k4:].astype(np.int64)[None, :] * w[:, k4:]).sum(axis=1)
    return out


@pytest.mark.parametrize("o,k", [(4, 16), (7, 33), (2, 4), (5, 640), (1, 9), (6, 1568), (3, 4000)])
def test_pair_packed_arithmetic_is_exact(o, k):
    rng = np.random.default_rng(o * 1000 + k)
    for trial in range(20):
        w = rng.integers(-127, 128, (o, k)).astype(np.int8)
        if trial == 0:
            w[:] = 127             # the largest sums: several segments from about 520 inputs on
        x = rng.integers(-128, 128, k).astype(np.int8)
        if trial == 1:
            x[:] = -128
        packed = gemm_pack.pack(w)
        assert packed is not None
        assert np.array_equal(_dsp_model(x, w), x.astype(np.int64) @ w.astype(np.int64).T)


def test_pack_layout_matches_the_kernel_order():
    w = np.arange(8 * 8).reshape(8, 8).astype(np.int8) - 32
    p = gemm_pack.pack(w)
    assert p.quads == 2 and not p.odd_pair and not p.odd_single and p.k4 == 8
    h = lambda a, b, k: int(w[a, k]) + 256 * int(w[b, k])   # noqa: E731
    # quad 0, chunk 0: pair (0, 1) as h0, h2, h1, h3, then pair (2, 3)
    assert list(p.packed[:8]) == [h(0, 1, 0), h(0, 1, 2), h(0, 1, 1), h(0, 1, 3),
                                  h(2, 3, 0), h(2, 3, 2), h(2, 3, 1), h(2, 3, 3)]
    assert list(p.packed[8:12]) == [h(0, 1, 4), h(0, 1, 6), h(0, 1, 5), h(0, 1, 7)]


def test_pack_refuses_words_that_do_not_fit_and_segments_long_rows():
    w = np.full((2, 8), 5, np.int8)
    w[1, 0], w[0, 0] = -128, -1           # h = -1 - 32768 does not fit int16
    assert gemm_pack.pack(w) is None
    assert gemm_pack.pack(np.full((2, 500), 127, np.int8)).segments == [125]
    # 128 * 600 * 127 >= 2^23: one segment's X - Y could not recover Σ x w_B; 129 chunks fit in the first
    big = gemm_pack.pack(np.full((2, 600), 127, np.int8))
    assert big.segments == [129, 21] and all(128 * 127 * 4 * n < gemm_pack.SEGMENT_LIMIT for n in big.segments)
    most = 4 * 129 * gemm_pack.MAX_SEGMENTS
    assert len(gemm_pack.pack(np.full((3, most), 127, np.int8)).segments) == gemm_pack.MAX_SEGMENTS
    assert gemm_pack.pack(np.full((2, most + 4), 127, np.int8)) is None


def test_folded_bias_and_bounds():
    w = np.array([[1, -2, 3, 4], [0, 0, 0, 0]], np.int8)
    assert list(gemm_pack.folded_bias(w, np.array([10, -5]), -3)) == [10 + 3 * 6, -5]
    assert gemm_pack.acc_bound(w, None, -3) == 130 * 10
    assert gemm_pack.fast_mbqm([-1, -7], 1 << 29) and not gemm_pack.fast_mbqm([0], 10)
    assert not gemm_pack.fast_mbqm([-3], 1 << 30)


def test_pair_layout_keeps_each_pairs_words_together():
    w = (np.arange(5 * 8).reshape(5, 8) % 50 - 25).astype(np.int8)
    p = gemm_pack.pack(w, "pair")
    assert p.quads == 0 and p.pairs == 2 and p.odd_single and not p.odd_pair
    h = lambda a, b, k: int(w[a, k]) + 256 * int(w[b, k])   # noqa: E731
    assert list(p.packed[:8]) == [h(0, 1, 0), h(0, 1, 2), h(0, 1, 1), h(0, 1, 3),
                                  h(0, 1, 4), h(0, 1, 6), h(0, 1, 5), h(0, 1, 7)]
    assert list(p.packed[8:12]) == [h(2, 3, 0), h(2, 3, 2), h(2, 3, 1), h(2, 3, 3)]
    assert list(p.single) == list(w[4])


@pytest.mark.parametrize("o,k,zp,seed", [(1, 4, 0, 0), (4, 8, -128, 1), (7, 27, 5, 2), (16, 640, 127, 3),
                                         (3, 13, -7, 4)])
def test_byte_layout_sums_equal_the_int8_dot_product(o, k, zp, seed):
    """The byte kernel's identity: Σ (x + 128)(w + 128) - 128 Σ (x + 128) + folded = Σ (x - z) w + b, for
    every channel (padding channels and positions included in the sums as the kernel walks them)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (o, k)).astype(np.int8)
    b = rng.integers(-50000, 50000, o).astype(np.int32)
    x = rng.integers(-128, 128, k).astype(np.int64)
    v = gemm_pack.pack_bytes(w)                                # [groups, k8, 4]
    k8 = gemm_pack.byte_k(k)
    assert v.shape == (-(-o // 4), k8, 4) and k8 % gemm_pack.BYTE_UNROLL == 0
    u = np.zeros(k8, np.int64)
    u[:k] = x + 128
    sums = np.einsum("k,gkc->gc", u, v.astype(np.int64)).reshape(-1) % (1 << 32)
    folded = gemm_pack.byte_folded_bias(w, b, zp)
    acc = (sums - 128 * int(u.sum()) + folded) % (1 << 32)
    acc = np.where(acc >= 1 << 31, acc - (1 << 32), acc)[:o]
    want = ((x - zp)[None, :] * w.astype(np.int64)).sum(axis=1) + b
    np.testing.assert_array_equal(acc, want)


def test_byte_layout_refuses_sums_beyond_uint32():
    assert gemm_pack.byte_folded_bias(np.ones((1, 70000), np.int8), None, 0) is None
