"""Softmax over one axis."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..quant import params as qp
from .int8_common import in_quant, out_quant
from .opdef import OpDef


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def evaluate(a, ins):
    return softmax(ins[0].astype(np.float64), a["axis"])


def float_kernel(k):
    shape, axis = k.out_shape, k.node.attrs["axis"]
    v = dict(outer=int(np.prod(shape[:axis])), n=shape[axis], inner=int(np.prod(shape[axis + 1:])))
    return "softmax.c.j2", v, 0


@dataclass(frozen=True)
class SoftmaxParams:
    mult: int
    shift: int
    diff_min: int


def int8_prepare(k) -> SoftmaxParams:
    """gemmlowp fixed-point softmax over the last axis (docs/int8-numerics.md 4.9): PreprocessSoftmaxScaling."""
    shape, axis = k.out_shape, k.node.attrs["axis"]
    if axis != len(shape) - 1:
        raise TinycError(f"node '{k.node.name}': int8 softmax works on the last axis only")
    oq = out_quant(k)
    if qp.zero_point_of(oq) != -128 or abs(qp.scale_of(oq) * 256 - 1) > 1e-3:
        raise TinycError(f"node '{k.node.name}': int8 softmax output must have scale 1/256 and zero point -128")
    beta = float(k.node.attrs.get("beta", 1.0))
    real = min(beta * qp.scale_of(in_quant(k)) * float(1 << 26), float((1 << 31) - 1))
    if not real > 1.0:     # TFLite's PreprocessSoftmaxScaling requires it (its interpreter aborts otherwise)
        raise TinycError(f"node '{k.node.name}': int8 softmax input scale {qp.scale_of(in_quant(k)):g} x beta "
                         f"{beta:g} is below 2^-26, which TFLite's softmax cannot run (its logits span almost "
                         "nothing); recalibrate the model on real data")
    mult, shift = qp.multiplier(real)
    diff_min = -int(np.floor(((1 << 5) - 1) * float(1 << 26) / float(1 << shift)))
    return SoftmaxParams(mult, shift, diff_min)


def int8_kernel(k):
    p, n = k.params, k.out_shape[-1]
    return "softmax.c.j2", dict(rows=k.out_size // n, n=n, mult=p.mult, shift=p.shift, diff_min=p.diff_min), 0


DEFINITIONS = (OpDef(
    "Softmax", "x  [axis, beta?]", evaluate, None, float_kernel, int8_prepare, int8_kernel, None,
    memory=None, quantize="fixed", fixed_quant=(1.0 / 256, -128)),)
