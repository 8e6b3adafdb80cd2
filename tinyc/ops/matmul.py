"""MatMul: the matrix product of two computed tensors, a[..., M, K] @ b[..., K, N] -> [..., M, N], the leading
(batch) axes broadcast NumPy-style. `transpose_a` / `transpose_b` read an operand stored as its last two axes
swapped (a[..., K, M], b[..., N, K]: TFLite's adj_x / adj_y, attention's q @ k^T) without a copy. (A product
with a constant right operand is a Dense, with its fast kernels.)

int8 is TFLite's reference BATCH_MATMUL (docs/int8-numerics.md 4.34): per-tensor parameters on both operands
and the output, Σ (a - z_a)(b - z_b) in int32, then MultiplyByQuantizedMultiplier."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codegen import int8_fast
from ..codegen.int8_matmul import geometry, logical_shapes
from ..codegen.loops import strided_loops
from ..errors import TinycError
from ..quant import params as qp
from .int8_common import in_quant, out_quant
from .opdef import OpDef


def _operands(a, ins):
    x, w = ins[0], ins[1]
    if a.get("transpose_a"):
        x = np.swapaxes(x, -1, -2)
    if a.get("transpose_b"):
        w = np.swapaxes(w, -1, -2)
    return x, w


def evaluate(a, ins):
    x, w = _operands(a, ins)
    return np.matmul(x.astype(np.float64), w.astype(np.float64))


def check(g, n) -> None:
    a, b = logical_shapes(n, *(g.tensors[t].shape for t in n.inputs[:2]))
    y = g.tensors[n.outputs[0]].shape
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        raise TinycError(f"MatMul '{n.name}': operands {tuple(a)} and {tuple(b)} do not multiply (IR operands are "
                         "at least 2-D with a[-1] == b[-2], after transpose_a / transpose_b)")
    try:
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    except ValueError:
        raise TinycError(f"MatMul '{n.name}': batch axes {tuple(a[:-2])} and {tuple(b[:-2])} do not broadcast")
    if tuple(y) != tuple(batch) + (a[-2], b[-1]):
        raise TinycError(f"MatMul '{n.name}': output {tuple(y)} is not {tuple(batch) + (a[-2], b[-1])}")


def _comment(k, geo, kind=""):
    a, b, y = geo["shapes"]
    ta = "^T" if k.node.attrs.get("transpose_a") else ""
    tb = "^T" if k.node.attrs.get("transpose_b") else ""
    return f"{kind}matmul {a}{ta} @ {b}{tb} -> {y}"


def float_kernel(k):
    geo = geometry(k)
    a, b = k.weight(0), k.weight(1)     # a constant operand may be stored narrower (--weights float16)
    body = ("{{ const %s *pa = %s + {o1}; const %s *pb = %s + {o2}; float *py = y + {o0};\n"
            "    for (int m = 0; m < %d; ++m) {{\n"
            "      for (int n = 0; n < %d; ++n) {{\n"
            "        float acc = 0.0f;\n"
            "        for (int k = 0; k < %d; ++k) acc += %s * %s;\n"
            "        py[m * %d + n] = acc;\n"
            "      }}\n"
            "    }} }}" % (a.ctype, a, b.ctype, b, geo["m"], geo["n"], geo["k"], a.load(geo["a_at"]),
                         b.load(geo["b_at"]), geo["n"]))
    loops = strided_loops(geo["batch"], geo["strides"], body)
    return "elementwise.c.j2", dict(comment=_comment(k, geo), loops=loops), geo["macs"]


@dataclass(frozen=True)
class MatMulParams:
    a_zp: int
    b_zp: int
    out_zp: int
    mult: int
    shift: int


MAX_DEPTH = ((1 << 31) - 1) // (255 * 255)     # deeper products could overflow TFLite's int32 accumulator


def int8_prepare(k) -> MatMulParams:
    """TFLite's BATCH_MATMUL Prepare (docs/int8-numerics.md 4.34): real = f64(f32(s_a * s_b)) / f64(s_out)
    (GetQuantizedConvolutionMultipler), QuantizeMultiplier; no fused activation."""
    qa, qb, qo = in_quant(k, 0), in_quant(k, 1), out_quant(k)
    for q, what in ((qa, "left operand"), (qb, "right operand"), (qo, "output")):
        if np.asarray(q.scale).size != 1:
            raise TinycError(f"node '{k.node.name}' (MatMul): the {what} is quantized per channel; TFLite's int8 "
                             "BATCH_MATMUL takes per-tensor parameters only")
    depth = logical_shapes(k.node, k.in_shape(0), k.in_shape(1))[0][-1]
    if depth > MAX_DEPTH:
        raise TinycError(f"node '{k.node.name}' (MatMul): int8 product over {depth} values could overflow the int32 "
                         f"accumulator (at most {MAX_DEPTH}); keep this MatMul in float32")
    real = float(np.float32(qp.scale_of(qa)) * np.float32(qp.scale_of(qb))) / qp.scale_of(qo)
    mult, shift = qp.multiplier(real)
    return MatMulParams(qp.zero_point_of(qa), qp.zero_point_of(qb), qp.zero_point_of(qo), mult, shift)


def int8_kernel(k):
    geo, p = geometry(k), k.params
    body = ("{{ const int8_t *pa = %s + {o1}; const int8_t *pb = %s + {o2}; int8_t *py = y + {o0};\n"
            "    for (int m = 0; m < %d; ++m) {{\n"
            "      for (int n = 0; n < %d; ++n) {{\n"
            "        int32_t acc = 0;\n"
            "        for (int k = 0; k < %d; ++k) acc += (%s - (%d)) * (%s - (%d));\n"
            "        py[m * %d + n] = tinyc_sat8(tinyc_requantize(acc, %d, %d) + (%d), -128, 127);\n"
            "      }}\n"
            "    }} }}" % (k.expr(0), k.expr(1), geo["m"], geo["n"], geo["k"], geo["a_at"], p.a_zp, geo["b_at"],
                          p.b_zp, geo["n"], p.mult, p.shift, p.out_zp))
    return "elementwise.c.j2", dict(comment=_comment(k, geo, "int8 "),
                                    loops=strided_loops(geo["batch"], geo["strides"], body)), geo["macs"]


DEFINITIONS = (OpDef(
    "MatMul", "a[..., M, K], b[..., K, N] -> [..., M, N]  [transpose_a?, transpose_b?]  (batch axes broadcast)",
    evaluate, check, float_kernel, int8_prepare, int8_kernel, int8_fast.matmul, memory=None, quantize="own"),)
