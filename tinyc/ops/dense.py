"""Dense: a fully connected layer over the last axis, with an optional fused activation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codegen import int8_fast
from ..codegen.literals import c_double
from ..quant import params as qp
from . import hybrid
from .conv2d import check_weights
from .int8_common import bias_expr, in_quant, is_16x8, out_quant, symmetric_weights, weighted_16x8_bias
from .int8_common import int4_weights, int16_activation_range
from .opdef import OpDef


def evaluate(a, ins):
    if a.get("hybrid"):
        return hybrid.evaluate_dense(a, ins)
    y = ins[0].astype(np.float64) @ ins[1].T.astype(np.float64)
    return y + ins[2] if len(ins) > 2 else y


def float_kernel(k):
    kdim = k.in_shape(0)[-1]
    o = k.in_shape(1)[0]
    rows = k.in_size(0) // kdim
    v = dict(rows=rows, k=kdim, o=o, w=k.weight(1), bias=k.expr(2) if len(k.node.inputs) > 2 else None)
    return "dense.c.j2", v, rows * kdim * o


@dataclass(frozen=True)
class DenseParams:
    scales: list          # per output channel (all equal when the weights are per tensor)
    per_channel: bool
    in_zp: int
    out_zp: int
    lo: int
    hi: int


def int8_prepare(k) -> DenseParams:
    """TFLite 2.21's reference FULLY_CONNECTED requantizes in double: round(acc * in_s * w_s[c] / out_s)."""
    iq, oq, wq = in_quant(k), out_quant(k), symmetric_weights(k)
    lo, hi = int16_activation_range(k, oq) if k.out.dtype == "int16" else \
        qp.activation_range(k.node.attrs.get("activation"), oq)
    return DenseParams(qp.fc_scales(iq, wq, oq, k.in_shape(1)[0]), np.asarray(wq.scale).size > 1,
                       qp.zero_point_of(iq), qp.zero_point_of(oq), lo, hi)


def int8_kernel(k):
    v, macs = float_kernel(k)[1:]
    p = k.params
    scale = k.table(p.scales, "float64", "requantization scales") if p.per_channel else c_double(p.scales[0])
    if is_16x8(k):     # int64 accumulator, zero points 0; the same double requantization (int16-numerics 2.3)
        w = np.abs(k.tensor(1).data.astype(np.int64)).sum(axis=1)
        v.update(lo=p.lo, hi=p.hi, bias=weighted_16x8_bias(k, w, bits=62), scale=scale, per_channel=p.per_channel)
        return "dense_16x8.c.j2", v, macs
    v.update(in_zp=p.in_zp, out_zp=p.out_zp, lo=p.lo, hi=p.hi, bias=bias_expr(k), scale=scale,
             per_channel=p.per_channel)
    v.update(int4_weights(k))      # int4 weights stay packed; the template unpacks them per use
    return "dense.c.j2", v, macs


DEFINITIONS = (OpDef(
    "Dense", "x[...,K], w[O,K], b[O]?  -> [...,O]  [activation]",
    evaluate, check_weights, float_kernel, int8_prepare, int8_kernel, int8_fast.dense,
    memory="windowed", quantize="own", fuses_activation=True, qdq_rule="weighted", int16_activations=True),)
DEFINITIONS = tuple(hybrid.with_hybrid_variant(d) for d in DEFINITIONS)     # float inputs, int8 weights
