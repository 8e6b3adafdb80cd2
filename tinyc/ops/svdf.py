"""SVDF (TFLite's singular-value-decomposition filter, the layer of TFLite Micro's keyword model), as two ops split
at its memory, which is a state tensor carried across inferences (docs/streaming-state.md):

- `SvdfMemory(x[B,I], w_feature[F,I], memory[B,F*M]) -> memory'[B,F*M]`: every filter's M most recent feature
  values (filter f at f*M .. f*M+M-1, newest last) shifted one step, the oldest dropped, and the newest written:
  w_feature[f] . x[b]. int8: the dot product requantized to the int16 memory's scale.
- `SvdfTimeFilter(memory'[B,F*M], w_time[F,M], bias[U]?) -> y[B,U]  [rank R, activation]`: each filter's time
  filter over its memory, the R filters of a unit summed (U = F / R), the bias added, the activation applied.
  int8: int16 x int16 products summed in int32, requantized to the int8 output.

One TFLite SVDF is `SvdfMemory` then `SvdfTimeFilter` on its result, which is also the memory state's next value.
`SvdfMemory` may write over the memory it reads (its kernel reads element m + 1 before it writes element m, in
index order: the "elementwise" contract), so the state takes its next value in place, without a copy.
The int8 arithmetic is TFLite's reference `EvalIntegerSVDF`, written down in docs/int8-numerics.md §4.39.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codegen import int8_fast_svdf
from ..errors import TinycError
from ..quant import params as qp
from .int8_common import in_quant, out_quant, quant, same_quant
from .opdef import OpDef

def _shapes(g, n, *indices):
    return [g.tensors[n.inputs[i]].shape for i in indices]


# -- SvdfMemory -----------------------------------------------------------------------------------------------
def memory_evaluate(a, ins):
    x, w, mem = (np.asarray(v, np.float64) for v in ins)
    b, f = x.shape[0], w.shape[0]
    mem = mem.reshape(b, f, -1)
    newest = (x @ w.T)[:, :, None]
    return np.concatenate([mem[:, :, 1:], newest], axis=2).reshape(b, -1)


def memory_check(g, n):
    if len(n.inputs) != 3:
        raise TinycError(f"SvdfMemory '{n.name}': needs the input, the feature weights and the memory "
                         f"({len(n.inputs)} inputs given)")
    if n.inputs[0] == n.inputs[2]:
        raise TinycError(f"SvdfMemory '{n.name}': its input and its memory are one tensor '{n.inputs[0]}'; the "
                         "memory is the layer's own state")
    x, w, mem = _shapes(g, n, 0, 1, 2)
    if len(x) != 2 or len(w) != 2 or w[1] != x[1] or w[0] < 1:
        raise TinycError(f"SvdfMemory '{n.name}': feature weights of shape {w} do not fit its input of shape {x} "
                         "([batch, features] and [filters, features])")
    if len(mem) != 2 or mem[0] != x[0] or mem[1] < w[0] or mem[1] % w[0]:
        raise TinycError(f"SvdfMemory '{n.name}': memory of shape {mem} is not [batch {x[0]}, {w[0]} filters x "
                         "memory size]")


def _memory_sizes(k) -> dict:
    batch, features = k.in_shape(0)
    filters = k.in_shape(1)[0]
    return dict(batch=batch, features=features, filters=filters, memory=k.in_shape(2)[1] // filters,
                x=k.expr(0), w=k.expr(1), mem=k.expr(2))


def memory_float_kernel(k):
    v = _memory_sizes(k)
    return "svdf_memory.c.j2", v, v["batch"] * v["filters"] * v["features"]


@dataclass(frozen=True)
class SvdfMemoryParams:
    in_zp: int
    mult: int       # the feature products' requantization to the memory's scale
    shift: int


def _per_tensor(k, i, what, dtype):
    t = k.tensor(i)
    if t.dtype != dtype or not t.is_const:
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): {what} '{t.name}' must be constant {dtype} (found "
                         f"{t.dtype}{'' if t.is_const else ', computed at run time'}); a float input with int8 "
                         "weights is the hybrid SVDF, which tinyc does not support")
    q = quant(t, what)
    if np.asarray(q.scale).size != 1 or np.any(np.asarray(q.zero_point) != 0):
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): {what} '{t.name}' must be quantized per tensor "
                         "with zero point 0, as TFLite's SVDF reads them")
    return q


def memory_quant(k, t):
    """The int16 memory's parameters: TFLite's kernel assumes zero point 0 (TFLite Micro adds a nonzero one, so
    the two disagree there)."""
    q = quant(t, "memory")
    if t.dtype != "int16":
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): memory '{t.name}' is {t.dtype}; TFLite's int8 SVDF "
                         "keeps an int16 memory (TFLite Micro's int8 memory variant is not supported)")
    if np.asarray(q.scale).size != 1 or qp.zero_point_of(q) != 0:
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): memory '{t.name}' must be quantized per tensor with "
                         f"zero point 0 (found {qp.zero_point_of(q)}); TFLite's SVDF assumes it")
    return q


def scale_ratio(a, b, c) -> float:
    """f32(f32(a * b) / c) widened to double: how TFLite's SVDF Prepare combines three float scales."""
    return float(np.float32(np.float32(qp.scale_of(a)) * np.float32(qp.scale_of(b))) / np.float32(qp.scale_of(c)))


def memory_int8_prepare(k) -> SvdfMemoryParams:
    iq, wq = in_quant(k), _per_tensor(k, 1, "feature weights", "int8")
    mq = memory_quant(k, k.tensor(2))
    if not same_quant(memory_quant(k, k.out), mq):
        raise TinycError(f"SvdfMemory '{k.node.name}': the memory and its next value have different quantization")
    mult, shift = qp.multiplier(scale_ratio(iq, wq, mq))
    return SvdfMemoryParams(qp.zero_point_of(iq), mult, shift)


def memory_int8_kernel(k):
    v = _memory_sizes(k)
    p = k.params
    v.update(in_zp=p.in_zp, mult=p.mult, shift=p.shift)
    return "svdf_memory.c.j2", v, v["batch"] * v["filters"] * v["features"]


# -- SvdfTimeFilter -------------------------------------------------------------------------------------------
def time_evaluate(a, ins):
    mem, w = np.asarray(ins[0], np.float64), np.asarray(ins[1], np.float64)
    b, (f, m) = mem.shape[0], w.shape
    per_filter = (mem.reshape(b, f, m) * w).sum(axis=2)
    y = per_filter.reshape(b, f // a["rank"], a["rank"]).sum(axis=2)
    return y + ins[2] if len(ins) > 2 else y


def time_check(g, n):
    if len(n.inputs) not in (2, 3):
        raise TinycError(f"SvdfTimeFilter '{n.name}': needs the memory, the time weights and an optional bias "
                         f"({len(n.inputs)} inputs given)")
    mem, w = _shapes(g, n, 0, 1)
    rank = n.attrs.get("rank")
    if not isinstance(rank, (int, np.integer)) or rank < 1 or len(w) != 2 or w[0] % rank:
        raise TinycError(f"SvdfTimeFilter '{n.name}': rank {rank} must be a positive divisor of the number of "
                         f"filters (time weights of shape {w})")
    if len(mem) != 2 or mem[1] != w[0] * w[1]:
        raise TinycError(f"SvdfTimeFilter '{n.name}': memory of shape {mem} does not fit time weights of shape {w} "
                         "([batch, filters x memory size] and [filters, memory size])")
    units = w[0] // rank
    if len(n.inputs) > 2 and g.tensors[n.inputs[2]].shape != (units,):
        raise TinycError(f"SvdfTimeFilter '{n.name}': bias of shape {g.tensors[n.inputs[2]].shape} for {units} "
                         "units")


def _time_sizes(k) -> dict:
    filters, memory = k.in_shape(1)
    rank = int(k.node.attrs["rank"])
    return dict(batch=k.in_shape(0)[0], filters=filters, memory=memory, rank=rank, units=filters // rank,
                mem=k.expr(0), w=k.expr(1), bias=k.expr(2) if k.has_input(2) else None)


def time_float_kernel(k):
    v = _time_sizes(k)
    return "svdf_time.c.j2", v, v["batch"] * v["filters"] * v["memory"]


@dataclass(frozen=True)
class SvdfTimeParams:
    mult: int       # the time sums' requantization to the output's scale
    shift: int
    out_zp: int
    lo: int
    hi: int


def time_int8_prepare(k) -> SvdfTimeParams:
    mq, wq, oq = memory_quant(k, k.tensor(0)), _per_tensor(k, 1, "time weights", "int16"), out_quant(k)
    if k.has_input(2) and (k.tensor(2).dtype != "int32" or not k.tensor(2).is_const):
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): bias '{k.tensor(2).name}' must be constant int32 "
                         f"(found {k.tensor(2).dtype})")
    mult, shift = qp.multiplier(scale_ratio(mq, wq, oq))
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), oq)
    return SvdfTimeParams(mult, shift, qp.zero_point_of(oq), lo, hi)


def time_int8_kernel(k):
    v = _time_sizes(k)
    p = k.params
    v.update(mult=p.mult, shift=p.shift, out_zp=p.out_zp, lo=p.lo, hi=p.hi)
    return "svdf_time.c.j2", v, v["batch"] * v["filters"] * v["memory"]


DEFINITIONS = (
    OpDef("SvdfMemory", "x[B,I], w_feature[F,I], memory[B,F*M]  -> memory'[B,F*M] (shifted, newest last)",
          memory_evaluate, memory_check, memory_float_kernel, memory_int8_prepare, memory_int8_kernel,
          int8_fast_svdf.memory,
          memory="elementwise", quantize=None, int8_wide_dtypes=("int16",)),
    OpDef("SvdfTimeFilter", "memory[B,F*M], w_time[F,M], b[F/R]?  -> [B,F/R]  [rank R, activation]",
          time_evaluate, time_check, time_float_kernel, time_int8_prepare, time_int8_kernel, int8_fast_svdf.time,
          memory=None, quantize=None, int8_wide_dtypes=("int16",)),
)
