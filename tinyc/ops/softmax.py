"""Softmax, LogSoftmax and Hardmax over one axis (any axis in float32; int8 Softmax and LogSoftmax on the last
axis, as TFLite)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codegen import int8_fast_misc, int16_fast_activations
from ..errors import TinycError
from ..quant import int16_activations as i16
from ..quant import params as qp
from .int8_common import in_quant, out_quant
from .opdef import OpDef


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def evaluate(a, ins):
    return softmax(ins[0].astype(np.float64), a["axis"])


def _axis_loops(k) -> dict:
    shape, axis = k.out_shape, k.node.attrs["axis"]
    return dict(outer=int(np.prod(shape[:axis])), n=shape[axis], inner=int(np.prod(shape[axis + 1:])))


def float_kernel(k):
    return "softmax.c.j2", _axis_loops(k), 0


def log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def hardmax(x, axis):
    """1 at the first maximum along `axis`, 0 elsewhere."""
    y = np.zeros_like(x)
    np.put_along_axis(y, np.expand_dims(x.argmax(axis=axis), axis), 1, axis=axis)
    return y


def check(g, node):
    rank = len(g.tensors[node.inputs[0]].shape)
    if not 0 <= node.attrs["axis"] < rank:
        raise TinycError(f"node '{node.name}' ({node.op}): axis {node.attrs['axis']} is not an axis of a rank-{rank} "
                         "input")


@dataclass(frozen=True)
class SoftmaxParams:
    mult: int
    shift: int
    diff_min: int


@dataclass(frozen=True)
class SoftmaxInt16Params:
    mult: int           # x - max(row) to the exp table's input (-65535 is -10)
    shift: int


def _int16_prepare(k) -> SoftmaxInt16Params:
    """TFLite's 16x8 softmax over the last axis (docs/int16-numerics.md 5.2)."""
    shape, axis, where = k.out_shape, k.node.attrs["axis"], f"node '{k.node.name}'"
    if axis != len(shape) - 1:
        raise TinycError(f"{where}: int16 softmax works on the last axis only (as TFLite's)")
    if k.tensor(0).dtype != "int16" or k.out.dtype != "int16":
        raise TinycError(f"{where}: softmax from {k.tensor(0).dtype} to {k.out.dtype}; tinyc's 16x8 softmax takes "
                         "int16 in and out")
    if not 1 <= len(shape) <= i16.SOFTMAX_MAX_RANK:
        raise TinycError(f"{where}: int16 softmax of a rank-{len(shape)} tensor; TFLite's int16 softmax takes 1 to "
                         f"{i16.SOFTMAX_MAX_RANK} dimensions: reshape it")
    if shape[-1] > i16.SOFTMAX_MAX_ROW:
        raise TinycError(f"{where}: int16 softmax over rows of {shape[-1]}; TFLite's int32 sum of exponentials "
                         f"overflows beyond {i16.SOFTMAX_MAX_ROW}")
    i16.check_softmax_output(qp.scale_of(out_quant(k)), where)
    return SoftmaxInt16Params(*i16.softmax_rescale(qp.scale_of(in_quant(k)), float(k.node.attrs.get("beta", 1.0)),
                                                   where))


def int8_prepare(k) -> SoftmaxParams | SoftmaxInt16Params:
    """gemmlowp fixed-point softmax over the last axis (docs/int8-numerics.md 4.9): PreprocessSoftmaxScaling."""
    if "int16" in (k.tensor(0).dtype, k.out.dtype):
        return _int16_prepare(k)
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
    if real >= float(1 << 30) - 0.25:    # QuantizeMultiplier's shift would be 31: `1 << 31` overflows in C
        raise TinycError(f"node '{k.node.name}': int8 softmax input scale {qp.scale_of(in_quant(k)):g} x beta "
                         f"{beta:g} is 16 or more, beyond what TFLite's softmax arithmetic represents (a shift of "
                         "31); recalibrate the model so its logits' scale is below 16")
    mult, shift = qp.multiplier(real)
    diff_min = -int(np.floor(((1 << 5) - 1) * float(1 << 26) / float(1 << shift)))
    return SoftmaxParams(mult, shift, diff_min)


def fast_kernel(k):
    """16x8: int16_fast_activations.softmax; int8: int8_fast_misc.softmax."""
    if isinstance(k.params, SoftmaxInt16Params):
        return int16_fast_activations.softmax(k)
    return int8_fast_misc.softmax(k)


def int8_kernel(k):
    p, n = k.params, k.out_shape[-1]
    if isinstance(p, SoftmaxInt16Params):
        return softmax_int16(k)
    return "softmax.c.j2", dict(rows=k.out_size // n, n=n, mult=p.mult, shift=p.shift, diff_min=p.diff_min), 0


def softmax_int16(k):
    p, n = k.params, k.out_shape[-1]
    exp_lut, recip_lut = i16.softmax_tables()
    return "softmax_int16.c.j2", dict(
        rows=k.out_size // n, n=n, mult=p.mult, shift=p.shift,
        exp_lut=k.table(exp_lut, "int16", "int16 softmax: e^x on [-10, 0] in Q0.15, 512 steps and the end point"),
        recip_lut=k.table(recip_lut, "int16", "int16 softmax: 1 / (1 + x) on [0, 1] in Q0.15, 512 steps and the "
                                              "end point")), 0


@dataclass(frozen=True)
class LogSoftmaxParams:
    mult: int           # the input differences to Q5.26, as SOFTMAX
    shift: int
    rev_mult: int       # back from Q5.26 to input LSBs: the lowest difference whose output fits
    rev_shift: int
    diff_min: int


LOG_SOFTMAX_QUANT = (16.0 / 256, 127)
LOG_SOFTMAX_MAX_ROW = 4095      # TFLite's Q12.19 sum of exponentials overflows past 4095 terms of up to 1.0


def log_softmax_prepare(k) -> LogSoftmaxParams:
    """TFLite's LogSoftmaxPrepare<kReference> (docs/int8-numerics.md 4.23): PreprocessLogSoftmaxScalingExp."""
    shape, axis = k.out_shape, k.node.attrs["axis"]
    if axis != len(shape) - 1:
        raise TinycError(f"node '{k.node.name}': int8 log-softmax works on the last axis only (as TFLite's)")
    if shape[-1] > LOG_SOFTMAX_MAX_ROW:
        raise TinycError(f"node '{k.node.name}': int8 log-softmax over {shape[-1]} values; TFLite's fixed-point sum "
                         f"overflows past {LOG_SOFTMAX_MAX_ROW}, keep this log-softmax in float32")
    oq = out_quant(k)
    if (qp.scale_of(oq), qp.zero_point_of(oq)) != LOG_SOFTMAX_QUANT:
        raise TinycError(f"node '{k.node.name}': int8 log-softmax output must have scale 16/256 and zero point 127 "
                         "(TFLite requires it)")
    s_in = qp.scale_of(in_quant(k))
    real = s_in * float(1 << 26)
    if not 1.0 < real < float(1 << 29):     # (shifts of 30 and 31, from scale 8 up, are not modelled)
        raise TinycError(f"node '{k.node.name}': int8 log-softmax input scale {s_in:g} is outside (2^-26, 8), "
                         "where TFLite's log-softmax does not run or tinyc does not follow it; recalibrate the model")
    mult, shift = qp.multiplier(real)
    reverse = float(1 << (31 - shift)) / float(mult)
    if not reverse < 1.0:       # TFLite's QuantizeMultiplierSmallerThanOneExp aborts
        raise TinycError(f"node '{k.node.name}': int8 log-softmax input scale {s_in:g} is too close to 2^-26 for "
                         "TFLite's log-softmax; recalibrate the model on real data")
    rev_mult, rev_shift = qp.multiplier(reverse)
    diff_min = -int(np.floor(((1 << 5) - 1) * float(1 << 26) / float(1 << shift)))
    return LogSoftmaxParams(mult, shift, rev_mult, rev_shift, diff_min)


def log_softmax_kernel(k):
    p, n = k.params, k.out_shape[-1]
    return "log_softmax.c.j2", dict(rows=k.out_size // n, n=n, mult=p.mult, shift=p.shift, rev_mult=p.rev_mult,
                                    rev_shift=p.rev_shift, diff_min=p.diff_min), 0


DEFINITIONS = (
    OpDef("Softmax", "x  [axis, beta?]", evaluate, None, float_kernel, int8_prepare, int8_kernel, fast_kernel,
          memory=None, quantize="fixed", fixed_quant=(1.0 / 256, -128),
          int16_activations=True),
    OpDef("LogSoftmax", "x  [axis]", lambda a, ins: log_softmax(ins[0].astype(np.float64), a["axis"]), check,
          lambda k: ("log_softmax.c.j2", _axis_loops(k), 0), log_softmax_prepare, log_softmax_kernel, None,
          memory=None, quantize=None),
    OpDef("Hardmax", "x  [axis]", lambda a, ins: hardmax(ins[0], a["axis"]), check,
          lambda k: ("hardmax.c.j2", _axis_loops(k), 0), None, None, None, memory=None, quantize=None),
)
