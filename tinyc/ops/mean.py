"""Mean: the average over some axes, keeping them as 1s or dropping them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codegen import int8_fast_misc
from ..codegen.literals import c_float
from ..codegen.loops import row_major_strides, strided_loops
from ..errors import TinycError
from ..quant import params as qp
from .int8_common import in_quant, out_quant
from .opdef import OpDef, integer_range

MAX_INT16_COUNT = 65536     # int16 values per output whose int32 sum cannot overflow
from .reduce import reduction_loops


def evaluate(a, ins):
    return ins[0].mean(axis=tuple(a["axes"]), keepdims=a["keepdims"])


def float_kernel(k):
    shape = k.in_shape(0)
    axes = set(k.node.attrs["axes"])
    count = int(np.prod([shape[i] for i in axes]))
    kept = [1 if i in axes else d for i, d in enumerate(shape)]
    out_strides = [0 if i in axes else s for i, s in enumerate(row_major_strides(kept))]
    loops = strided_loops(shape, [row_major_strides(shape), out_strides], "y[{o1}] += x0[{o0}];")
    return "mean.c.j2", dict(out_size=k.out_size, count=count, loops=loops, scale=c_float(1.0 / count)), 0


@dataclass(frozen=True)
class MeanParams:
    count: int        # values per output
    mult: int         # in_scale / out_scale / count as one multiplier and shift
    shift: int
    in_zp: int
    out_zp: int


def int8_prepare(k) -> MeanParams:
    """TFLite's integer QuantizedMeanOrSum (docs/int8-numerics.md 4.8; int16 the same, docs/int16-numerics.md 4.4):
    the division by the count folded into the multiplier, after shifting it left as far as it goes."""
    shape = k.in_shape(0)
    n = int(np.prod([shape[a] for a in sorted(set(k.node.attrs["axes"]))]))
    if k.tensor(0).dtype != k.out.dtype:
        raise TinycError(f"node '{k.node.name}': MEAN from {k.tensor(0).dtype} to {k.out.dtype}; TFLite averages "
                         "within one type")
    if k.out.dtype == "int16" and n > MAX_INT16_COUNT:
        raise TinycError(f"node '{k.node.name}': int16 MEAN of {n} values per output; TFLite sums them in int32, "
                         f"which can overflow beyond {MAX_INT16_COUNT} (undefined): split the reduction")
    m, e = qp.rescale(in_quant(k), out_quant(k))
    shift = min(n.bit_length() - 1, 32, 31 + e)
    return MeanParams(n, (m << shift) // n, e - shift, qp.zero_point_of(in_quant(k)), qp.zero_point_of(out_quant(k)))


def int8_kernel(k):
    """Sum of raw values minus n * zero point, rescaled."""
    p = k.params
    clamp = "tinyc_clamp16" if k.out.dtype == "int16" else "tinyc_sat8"
    lo, hi = integer_range(k.out.dtype)
    store = ("y[{o1}] = %s(tinyc_requantize(acc - (%d), %d, %d) + (%d), %d, %d);"
             % (clamp, p.in_zp * p.count, p.mult, p.shift, p.out_zp, lo, hi))
    loops = reduction_loops(k.in_shape(0), sorted(set(k.node.attrs["axes"])), "    int32_t acc = 0;",
                            ["acc += x0[base + {o0}];"], store)
    return "elementwise.c.j2", dict(comment=f"{k.out.dtype} mean of {p.count} values per output", loops=loops), 0


DEFINITIONS = (OpDef(
    "Mean", "x  [axes, keepdims]", evaluate, None, float_kernel, int8_prepare, int8_kernel, int8_fast_misc.mean,
    memory=None, quantize="own", qdq_rule="mean", int16_activations=True),)
