"""Fast 16x8 SOFTMAX rule (templates/int8_fast/softmax_int16.c.j2), the byte-identical twin of the reference rule
in tinyc/ops/softmax.py, reading the same parameters (`k.params`, docs/int16-numerics.md §5.2).

How it stays exact: x - max(row) is in [-65535, 0], so the reference's MultiplyByQuantizedMultiplier becomes the
cheapest expression int8_fast_misc.requant_expr proves equal to it over that bound (SMMULR on DSP cores instead of
a 64-bit product; 16-bit halves on the M0+); the exponentials wait in y as in the reference; the sum's leading
zeros come from CLZ where the core has it.

LOGISTIC and TANH have no fast twin: their reference kernel is already TFLite's table interpolation, and the
branch-free, two-per-word variants measured no better under QEMU (docs/int16-numerics.md §5.5).
"""
from __future__ import annotations

from ..quant import int16_activations as i16
from .int8_fast_misc import requant_expr

DIFF_BOUND = 65535      # |x - max(row)| for int16 x


def _int16_io(k) -> bool:
    return all(k.tensor(i).dtype == "int16" for i in range(len(k.node.inputs))) and k.out.dtype == "int16"


def softmax(k):
    p, n = k.params, k.out_shape[-1]
    if not _int16_io(k):
        return None
    exp_lut, recip_lut = i16.softmax_tables()
    return "softmax_int16.c.j2", dict(
        rows=k.out_size // n, n=n, scaled=requant_expr("(int32_t)in[c] - max", DIFF_BOUND, p.mult, p.shift),
        exp_lut=k.table(exp_lut, "int16", "int16 softmax: e^x on [-10, 0] in Q0.15, 512 steps and the end point"),
        recip_lut=k.table(recip_lut, "int16", "int16 softmax: 1 / (1 + x) on [0, 1] in Q0.15, 512 steps and the "
                                              "end point")), 0

