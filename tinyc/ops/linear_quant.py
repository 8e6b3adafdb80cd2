"""LinearQuantize and LinearDequantize: ONNX's QuantizeLinear / DequantizeLinear where they are not folded into
an int8 graph (a model that takes or returns integers, int16, uint16 and the 4- and 2-bit values, scales per axis or
per block): float32 <-> un-quantized integer tensors, with constant scale and zero point tensors broadcast to the
data.

    LinearQuantize:   y = clamp(round_half_even(x / scale) + zero_point) to y's type (NaN -> zero_point)
    LinearDequantize: y = float(x - zero_point) * scale   (the difference in integers, as onnxruntime)"""
from __future__ import annotations

import numpy as np

from ..codegen.literals import c_type
from ..errors import TinycError
from .compare import operand_loops
from .opdef import SUB_BYTE_INTEGERS, OpDef, integer_range

QUANTIZED_TYPES = ("int8", "uint8", "int16", "uint16") + SUB_BYTE_INTEGERS
DEQUANTIZED_TYPES = QUANTIZED_TYPES + ("int32",)


def quantize_evaluate(a, ins):
    x, scale, zp = ins
    lo, hi = integer_range(a["to"])
    q = np.rint(x.astype(np.float32) / scale.astype(np.float32)).astype(np.float64)
    q = np.where(np.isnan(q), 0.0, q) + zp.astype(np.int64).astype(np.float64)
    return np.clip(q, lo, hi).astype(np.int64).astype(a["to"])


def dequantize_evaluate(a, ins):
    x, scale, zp = ins
    return (x.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale.astype(np.float32)


def _check(g, n, data_types, what) -> None:
    t = g.tensors[n.outputs[0] if what == "output" else n.inputs[0]].dtype
    if t not in data_types:
        raise TinycError(f"{n.op} '{n.name}': its {what} is {t}; it takes {', '.join(data_types)}")
    if not all(g.tensors[i].is_const for i in n.inputs[1:]):
        raise TinycError(f"{n.op} '{n.name}': scale and zero point must be constants")


def quantize_kernel(k):
    dst = k.out.dtype
    lo, hi = integer_range(dst)
    body = ("{{ float r = rintf(%s[{o1}] / %s[{o2}]);\n"
            "    const int32_t z = (int32_t)%s[{o3}];\n"
            "    if (r != r) r = 0.0f;\n"
            "    r = r < (float)(%d - z) ? (float)(%d - z) : (r > (float)(%d - z) ? (float)(%d - z) : r);\n"
            "    y[{o0}] = (%s)((int32_t)r + z); }}"
            % (k.expr(0), k.expr(1), k.expr(2), lo, lo, hi, hi, c_type(dst)))
    return "elementwise.c.j2", dict(comment=f"quantize {k.out_size} values to {dst}",
                                    loops=operand_loops(k, body, 3)), 0


def dequantize_kernel(k):
    body = "y[{o0}] = (float)((int64_t)%s[{o1}] - (int64_t)%s[{o3}]) * %s[{o2}];" % (k.expr(0), k.expr(2),
                                                                                    k.expr(1))
    return "elementwise.c.j2", dict(comment=f"dequantize {k.out_size} {k.tensor(0).dtype} values",
                                    loops=operand_loops(k, body, 3)), 0


DEFINITIONS = (
    OpDef("LinearQuantize", "x (float32), scale, zero_point (constants broadcast to x) -> y  [to: y's type]",
          quantize_evaluate, lambda g, n: _check(g, n, QUANTIZED_TYPES, "output"), quantize_kernel, None, None,
          None, memory=None, quantize=None, plain_dtypes=("float32",) + QUANTIZED_TYPES),
    OpDef("LinearDequantize", "x (integers), scale, zero_point (constants broadcast to x) -> y (float32)",
          dequantize_evaluate, lambda g, n: _check(g, n, DEQUANTIZED_TYPES, "input"), dequantize_kernel, None,
          None, None, memory=None, quantize=None, plain_dtypes=("float32",) + DEQUANTIZED_TYPES),
)
