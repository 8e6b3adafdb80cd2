"""Fast 16x8 SOFTMAX, LOGISTIC and TANH rules, the byte-identical twins of the reference rules in tinyc/ops/softmax.py
and activation.py, reading the same parameters (`k.params`, docs/int16-numerics.md §5).

SOFTMAX (templates/int8_fast/softmax_int16.c.j2): x - max(row) is in [-65535, 0], so the reference's
MultiplyByQuantizedMultiplier becomes the cheapest expression int8_fast_misc.requant_expr proves equal to it over
that bound (SMMULR on DSP cores instead of a 64-bit product; 16-bit halves on the M0+); the exponentials wait in y
as in the reference; differences that rescale to the table's first entry (at most `cut`, found at compile time) take
its value without the rescale; the sum's leading zeros come from CLZ where the core has it.

LOGISTIC / TANH (templates/int8_fast/sigmoid_tanh_int16.c.j2): the reference takes |v| of the rescaled input v,
interpolates TFLite's sigmoid table between two entries and mirrors the result below 0 with a rounding of its
own. Over one segment of v (2^9 values for sigmoid, 2^8 for tanh) that is one affine function of v's offset in
the segment, so the fast kernel reads a base and a rise per signed segment (512 of each: the mirror, both
roundings and the saturation folded in, `segment_tables`) and computes (base + offset * rise) >> 10 (or 8): no
absolute value, no branch, no mirror. Checked here for every v in the saturated range, and for every int16 input
of the layer.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..quant import int16_activations as i16
from .int8_fast_misc import requant_expr

EVERY_INT16 = np.arange(-32768, 32768, dtype=np.int64)

DIFF_BOUND = 65535      # |x - max(row)| for int16 x


def _int16_io(k) -> bool:
    return all(k.tensor(i).dtype == "int16" for i in range(len(k.node.inputs))) and k.out.dtype == "int16"


def softmax_cut(mult: int, shift: int, exp_lut) -> tuple[int, int] | None:
    """(cut, e0): every difference d = x - max <= cut (and only those) rescales to the exp table's first entry,
    whose value is e0; None when no difference does. Checked for every d in [-65535, 0]."""
    d = np.arange(-DIFF_BOUND, 1, dtype=np.int64)
    first = i16.multiply_by_quantized_multiplier(d, mult, shift) + 65535 <= 0
    if not first.any():
        return None
    cut = int(d[first].max())
    assert np.array_equal(first, d <= cut)
    return cut, int(i16.table_lookup(np.array([-32768]), exp_lut)[0])


def softmax(k):
    """SOFTMAX on int16 rows: the reference's tables, its rescale by the cheapest exact expression."""
    p, n = k.params, k.out_shape[-1]
    if not _int16_io(k):
        return None
    exp_lut, recip_lut = i16.softmax_tables()
    return "softmax_int16.c.j2", dict(
        rows=k.out_size // n, n=n, scaled=requant_expr("d", DIFF_BOUND, p.mult, p.shift),
        cut=softmax_cut(p.mult, p.shift, exp_lut),
        exp_lut=k.table(exp_lut, "int16", "int16 softmax: e^x on [-10, 0] in Q0.15, 512 steps and the end point"),
        recip_lut=k.table(recip_lut, "int16", "int16 softmax: 1 / (1 + x) on [0, 1] in Q0.15, 512 steps and the "
                                              "end point")), 0


def _segment_bits(fn: str) -> tuple[int, int]:
    """(bits of v's offset within a segment, the final right shift): sigmoid 9 and 10, tanh 8 and 8."""
    return (9, 10) if fn == "sigmoid" else (8, 8)


@lru_cache(maxsize=None)
def segment_tables(fn: str) -> tuple[tuple, tuple]:
    """(base, rise) per segment s = v >> bits (index s + 256, s in -256..255) with the reference's output equal to
    (base[s] + (v & (2^bits - 1)) * rise[s]) >> out_shift for every v, once v is saturated to the 512 segments."""
    bits, out_shift = _segment_bits(fn)
    width, table = 1 << bits, i16.SIGMOID_TABLE
    base, rise = [], []
    for s in range(-256, 256):
        if 0 <= s < 255:                # |v| in table interval s: the reference's rounding, offset = |v|'s
            b = (table[s] << bits) + (1 << (out_shift - 1)) - (0 if fn == "sigmoid" else 1 << 23)
            r = table[s + 1] - table[s]
        elif 0 > s > -256:              # the mirror: |v| = -s * width - offset, in interval -s - 1 (offset > 0)
            k = -s
            b = ((1 << 25) + (1 << 9) - 1 if fn == "sigmoid" else (1 << 23) + (1 << 7) - 1) - (table[k] << bits)
            r = table[k] - table[k - 1]
        else:
            b, r = None, 0
        ref = i16.sigmoid_tanh_of_rescaled(fn, np.arange(s * width, (s + 1) * width, dtype=np.int64))
        offsets = np.arange(width, dtype=np.int64)
        if b is None or not np.array_equal((b + offsets * r) >> out_shift, ref):
            if not np.all(ref == ref[0]):       # the saturation's edge: a constant segment
                raise AssertionError(f"{fn} segment {s} is neither affine nor constant")
            b, r = int(ref[0]) << out_shift, 0
        base.append(int(b))
        rise.append(int(r))
    v = np.arange(-256 * width - 5, 256 * width + 5, dtype=np.int64)      # beyond the ends: saturated
    clamped = np.clip(v, -256 * width, 256 * width - 1)
    seg = (clamped >> bits) + 256
    fast = (np.asarray(base, np.int64)[seg] + (clamped & (width - 1)) * np.asarray(rise, np.int64)[seg]) >> out_shift
    assert np.array_equal(fast, i16.sigmoid_tanh_of_rescaled(fn, v)), fn
    return tuple(base), tuple(rise)


def sigmoid_tanh(k):
    """LOGISTIC / TANH on int16 by segment tables; DSP cores take two inputs per word and rescale each with one
    SMLABB / SMLATB (x * multiplier + rounding) where the multiplier fits a signed halfword."""
    p = k.params
    if not _int16_io(k) or not p.int16_rescale:
        return None
    mult, shift = p.int16_rescale
    bits, out_shift = _segment_bits(p.fn)
    base, rise = segment_tables(p.fn)
    v = i16.rescaled(EVERY_INT16, mult, shift)
    limit = 256 << bits
    clamped = np.clip(v, -limit, limit - 1)
    seg = (clamped >> bits) + 256
    fast = (np.asarray(base, np.int64)[seg] + (clamped & ((1 << bits) - 1)) * np.asarray(rise, np.int64)[seg])
    assert np.array_equal(fast >> out_shift, i16.sigmoid_tanh_of_rescaled(p.fn, v)), (p.fn, mult, shift)
    what = "logistic" if p.fn == "sigmoid" else "tanh"
    n = k.out_size
    return "sigmoid_tanh_int16.c.j2", dict(
        what=what, n=n, n2=n - n % 2, mult=mult, shift=shift, round=(1 << (shift - 1)) if shift > 0 else 0,
        bits=bits, mask=(1 << bits) - 1, out_shift=out_shift, lo=-limit, hi=limit - 1,
        clamp=bool(v.min() < -limit or v.max() > limit - 1), halfword=mult <= 32767, x=k.expr(0),
        base=k.table(list(base), "int32", f"int16 {what}: per segment of the rescaled input, the output's base "
                                          f"(<< {out_shift})"),
        rise=k.table(list(rise), "uint16", f"int16 {what}: per segment of the rescaled input, the output's rise per "
                                           f"step (<< {out_shift})")), 0
