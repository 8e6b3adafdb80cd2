"""Quantize (float32 -> int8, or int8 -> int8 with new parameters) and Dequantize (int8 -> float32). The
interpreter works on real values, so it has no rule for them (evaluate None); the int8 tests compare with TFLite."""
from __future__ import annotations

from ..codegen import int8_fast_misc
from ..codegen.literals import c_float
from ..codegen.loops import strided_loops
from ..errors import TinycError
from ..quant import params as qp
from .int8_common import elementwise, in_quant, out_quant
from .opdef import OpDef, integer_range


def quantize_prepare(k) -> tuple:
    """int8 -> int8: (multiplier, shift) in_scale / out_scale in double, as TFLite's requantize. float32 -> int16
    (16x8, zero point 0) has no parameters either."""
    if k.out.dtype not in ("int8", "int16"):
        raise TinycError(f"node '{k.node.name}': quantizing to {k.out.dtype} is not supported; only int8 and int16")
    if k.tensor(0).dtype == "float32":
        return ()
    if k.tensor(0).dtype == "int8" and k.out.dtype == "int16":
        raise TinycError(f"node '{k.node.name}': requantizing int8 to int16; TFLite's QUANTIZE takes int16 to int8 or "
                         "int16, and int8 to int8 only")
    return qp.rescale(in_quant(k), out_quant(k))       # int16 -> int8 / int16 too (docs/int16-numerics.md 3.5)


def quantize_kernel(k):
    oq = out_quant(k)
    if k.tensor(0).dtype == "float32" and k.out.dtype == "int16":     # zero point 0 (emit.check_16x8_activation)
        body = "y[{o0}] = tinyc_quantize_f32_s16(x0[{o0}], %s);" % c_float(qp.scale_of(oq))
        return "elementwise.c.j2", dict(comment=f"quantize {k.out_size} floats to int16",
                                        loops=strided_loops([k.out_size], [[1]], body)), 0
    if k.tensor(0).dtype == "float32":
        body = "y[{o0}] = tinyc_quantize_f32(x0[{o0}], %s, %d);" % (c_float(qp.scale_of(oq)), qp.zero_point_of(oq))
        return "elementwise.c.j2", dict(comment=f"quantize {k.out_size} floats",
                                        loops=strided_loops([k.out_size], [[1]], body)), 0
    m, sh = k.params
    if "int16" in (k.tensor(0).dtype, k.out.dtype):
        clamp = "tinyc_clamp16" if k.out.dtype == "int16" else "tinyc_sat8"
        lo, hi = integer_range(k.out.dtype)
        return elementwise(k, "%s(tinyc_requantize(v, %d, %d) + (%d), %d, %d)" % (clamp, m, sh, qp.zero_point_of(oq),
                                                                                  lo, hi),
                           f"requantize int16 to {k.out.dtype}")
    return elementwise(k, "tinyc_sat8(tinyc_requantize(v - (%d), %d, %d) + (%d), -128, 127)"
                       % (qp.zero_point_of(in_quant(k)), m, sh, qp.zero_point_of(oq)), "int8 requantize")


def dequantize_kernel(k):
    q = in_quant(k)
    body = "y[{o0}] = %s * (float)((int32_t)x0[{o0}] - (%d));" % (c_float(qp.scale_of(q)), qp.zero_point_of(q))
    return "elementwise.c.j2", dict(comment=f"dequantize {k.out_size} values",
                                    loops=strided_loops([k.out_size], [[1]], body)), 0


DEFINITIONS = (
    OpDef("Quantize", "x -> y  (float32 -> int8 / int16, or int8 -> int8 and int16 -> int8 / int16 with new "
          "parameters)", None, None, None, quantize_prepare, quantize_kernel, int8_fast_misc.unary,
          memory="elementwise", quantize=None, int16_activations=True),
    OpDef("Dequantize", "x -> y  (int8 / int16 -> float32)", None, None, None, None, dequantize_kernel, None,
          memory="elementwise", quantize=None),
)
