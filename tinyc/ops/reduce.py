"""Reduce: one value per output from the values of some axes, keeping them as 1s or dropping them.

`kind` says how (the ONNX ReduceX / TFLite reduction it comes from): sum, sumsquare (sum of squares), l1 (sum of
absolute values), l2 (square root of the sum of squares), logsum (log of the sum), logsumexp (log of the sum of
exponentials, computed after subtracting the maximum), prod, max, min. An empty `axes` reduces nothing: each
output is its one input value through the kind's formula (ONNX's noop_with_empty_axes; |x| for l1, x for sum).
The average is the older `Mean` op (tinyc/ops/mean.py), whose C stays as it was.

int8 follows TFLite's reference kernels (docs/int8-numerics.md 4.19-4.21): REDUCE_MAX / REDUCE_MIN compare the
raw values (input and output quantization must be equal), SUM is QuantizedMeanOrSum without the division, PROD
rescales after every multiplication; the other kinds have no TFLite int8 kernel and are refused.

max and min also take plain integer and bool tensors, in their own type (on bool: max is any, min is all).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..codegen.literals import c_type
from ..codegen.loops import row_major_strides, strided_loops
from ..quant import params as qp
from .int8_common import in_quant, out_quant, same_quant
from .opdef import ALL_DTYPES, OpDef

KINDS = ("sum", "sumsquare", "l1", "l2", "logsum", "logsumexp", "prod", "max", "min")
INT8_KINDS = ("sum", "prod", "max", "min")
PLAIN_INTEGER_KINDS = ("max", "min")     # on plain integer and bool tensors


def evaluate(a, ins):
    x, axes, keep = ins[0].astype(np.float64), tuple(a["axes"]), a["keepdims"]
    kind = a["kind"]
    if ins[0].dtype.kind in "iub" and kind in PLAIN_INTEGER_KINDS:     # in the values' own type
        return (ins[0].max if kind == "max" else ins[0].min)(axis=axes, keepdims=keep)
    if kind == "logsumexp":
        m = x.max(axis=axes, keepdims=True)
        y = np.log(np.exp(x - m).sum(axis=axes, keepdims=True)) + m
        return y if keep else np.squeeze(y, axis=axes)
    if kind in ("max", "min"):
        return (x.max if kind == "max" else x.min)(axis=axes, keepdims=keep)
    if kind == "prod":
        return x.prod(axis=axes, keepdims=keep)
    term = {"sum": x, "logsum": x, "sumsquare": x * x, "l2": x * x, "l1": np.abs(x)}[kind]
    s = term.sum(axis=axes, keepdims=keep)
    return {"l2": np.sqrt, "logsum": np.log}.get(kind, lambda v: v)(s)


def check(g, node):
    shape = g.tensors[node.inputs[0]].shape
    a, rank = node.attrs, len(shape)
    if 0 in shape:
        raise TinycError(f"node '{node.name}': Reduce of a zero-size input {tuple(shape)}; tinyc does not compile "
                         "zero-size tensors")
    if a["kind"] not in KINDS:
        raise TinycError(f"node '{node.name}': Reduce kind '{a['kind']}' is not one of {', '.join(KINDS)}")
    if any(not 0 <= ax < rank for ax in a["axes"]) or len(set(a["axes"])) != len(a["axes"]):
        raise TinycError(f"node '{node.name}': Reduce axes {tuple(a['axes'])} are not distinct axes of a rank-{rank} "
                         "input")
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    if x.quant is None and x.dtype != "float32" and (a["kind"] not in PLAIN_INTEGER_KINDS or y.dtype != x.dtype):
        raise TinycError(f"node '{node.name}': Reduce '{a['kind']}' of {x.dtype} -> {y.dtype}; on integer and bool "
                         f"tensors tinyc computes {' and '.join(PLAIN_INTEGER_KINDS)} in the input's type: cast to "
                         "float32 first")


def reduction_loops(shape, axes, setup: str, steps, store: str) -> str:
    """C loops computing each output (the kept axes, row-major) from the values of the reduced `axes` of x0:
    `setup` (statements; `base` is the output's first input offset), then for each of `steps` one loop nest over
    the reduced values (a statement reading x0[base + {o0}]), then `store` (a statement writing y[{o1}])."""
    strides = row_major_strides(shape)
    kept = [d for i, d in enumerate(shape) if i not in axes]
    kept_in = [s for i, s in enumerate(strides) if i not in axes]
    reduced, reduced_in = [shape[a] for a in axes], [strides[a] for a in axes]
    inner = "\n".join(strided_loops(reduced, [reduced_in], s, indent="    ", var="r") for s in steps)

    def esc(s):
        return s.replace("{", "{{").replace("}", "}}")
    body = ("{{ const int base = {o0};\n" + esc(setup) + "\n" + esc(inner) + "\n    "
            + esc(store).replace("{{o1}}", "{o1}") + " }}")
    return strided_loops(kept or [1], [kept_in or [0], row_major_strides(kept or [1])], body)


V = "x0[base + {o0}]"
# kind -> (accumulator start, step per value, output from `acc`), in float
FLOAT_RULES = {
    "sum": ("0.0f", f"acc += {V};", "acc"),
    "sumsquare": ("0.0f", f"acc += {V} * {V};", "acc"),
    "l1": ("0.0f", f"acc += fabsf({V});", "acc"),
    "l2": ("0.0f", f"acc += {V} * {V};", "sqrtf(acc)"),
    "logsum": ("0.0f", f"acc += {V};", "logf(acc)"),
    "prod": ("1.0f", f"acc *= {V};", "acc"),
    "max": ("x0[base]", f"acc = {V} > acc ? {V} : acc;", "acc"),
    "min": ("x0[base]", f"acc = {V} < acc ? {V} : acc;", "acc"),
}


def _count(k) -> int:
    shape = k.in_shape(0)
    return int(np.prod([shape[a] for a in k.node.attrs["axes"]]))


def float_kernel(k):
    a = k.node.attrs
    axes, kind = sorted(a["axes"]), a["kind"]
    if kind == "logsumexp":   # max first, so expf never overflows
        setup = "    float m = x0[base];\n    float acc = 0.0f;"
        steps = [f"m = {V} > m ? {V} : m;", f"acc += expf({V} - m);"]
        store = "y[{o1}] = m + logf(acc);"
    else:
        start, step, result = FLOAT_RULES[kind]
        acc_type = c_type(k.out.dtype)       # float, or the integer / bool type of max and min
        setup, steps, store = f"    {acc_type} acc = {start};", [step], f"y[{{o1}}] = {result};"
    loops = reduction_loops(k.in_shape(0), axes, setup, steps, store)
    return "elementwise.c.j2", dict(comment=f"{kind} of {_count(k)} values per output", loops=loops), 0


@dataclass(frozen=True)
class ReduceParams:
    count: int        # values per output
    mult: int         # sum: in_scale / out_scale; prod: in_scale / out_scale^(1/count), per multiplication
    shift: int
    in_zp: int
    out_zp: int


def int8_prepare(k) -> ReduceParams:
    """TFLite's reduce.cc Prepare (docs/int8-numerics.md 4.19-4.21)."""
    kind, name = k.node.attrs["kind"], k.node.name
    if kind not in INT8_KINDS:
        raise TinycError(f"node '{name}': int8 Reduce '{kind}' has no TFLite int8 kernel; run this reduction in "
                         "float32 (dequantize before it)")
    iq, oq = in_quant(k), out_quant(k)
    n = _count(k)
    types = (k.tensor(0).dtype, k.out.dtype)
    if "int16" in types and (kind not in ("max", "min") or types != ("int16", "int16")):
        raise TinycError(f"node '{name}': 16x8 Reduce '{kind}' from {types[0]} to {types[1]}; tinyc's int16 "
                         "reductions are REDUCE_MAX and REDUCE_MIN (MEAN is Mean): run this one in float32")
    if kind in ("max", "min"):
        if not same_quant(iq, oq):
            raise TinycError(f"node '{name}': int8 reduce {kind} needs equal input and output quantization "
                             "(TFLite requires it)")
        m, e = 0, 0
    elif kind == "sum":
        m, e = qp.rescale(iq, oq)
    else:   # GetQuantProdScaling: in_scale / out_scale^(1/n), in double
        m, e = qp.multiplier(qp.scale_of(iq) / float(np.power(qp.scale_of(oq), 1.0 / n)))
    return ReduceParams(n, m, e, qp.zero_point_of(iq), qp.zero_point_of(oq))


def _requantize64(x: str, mult: int, shift: int) -> str:
    """TFLite's MultiplyByQuantizedMultiplier for an int64 `x` (docs/int8-numerics.md 4.21): the multiplier rounded
    to 16 bits, one rounding with ties toward +infinity, an arithmetic right shift."""
    reduced = (mult + (1 << 15)) >> 16 if mult < 0x7FFF0000 else 0x7FFF
    total = 15 - shift
    if not 1 <= total <= 62:
        raise TinycError(f"int8 reduce prod: rescaling shift {shift} is out of TFLite's range")
    return f"(int32_t)(({x} * {reduced} + {1 << (total - 1)}LL) >> {total})"


def int8_kernel(k):
    p, kind = k.params, k.node.attrs["kind"]
    axes = sorted(k.node.attrs["axes"])
    if kind in ("max", "min"):
        cmp = ">" if kind == "max" else "<"
        setup, steps = f"    {c_type(k.out.dtype)} acc = x0[base];", [f"acc = {V} {cmp} acc ? {V} : acc;"]
        store = "y[{o1}] = acc;"
    elif kind == "sum":   # QuantizedMeanOrSum with compute_sum: int32 sum of raw values, less n * zero point
        setup, steps = "    int32_t acc = 0;", [f"acc += {V};"]
        store = ("y[{o1}] = tinyc_sat8(tinyc_requantize(acc - (%d), %d, %d) + (%d), -128, 127);"
                 % (p.in_zp * p.count, p.mult, p.shift, p.out_zp))
    else:   # QuantizedReduceProd: the first value as is, then each product rescaled, then the product once more
        setup = "    int32_t acc = 0;\n    int first = 1;"
        steps = [f"if (first) {{{{ acc = {V} - ({p.in_zp}); first = 0; }}}} else "
                 f"acc = {_requantize64(f'(int64_t)acc * ({V} - ({p.in_zp}))', p.mult, p.shift)};"]
        store = ("y[{o1}] = tinyc_sat8(%s + (%d), -128, 127);"
                 % (_requantize64("(int64_t)acc", p.mult, p.shift), p.out_zp))
    loops = reduction_loops(k.in_shape(0), axes, setup, steps, store)
    return "elementwise.c.j2", dict(comment=f"{k.out.dtype} {kind} of {p.count} values per output", loops=loops), 0


DEFINITIONS = (OpDef(
    "Reduce", "x  [kind, axes, keepdims]", evaluate, check, float_kernel, int8_prepare, int8_kernel, None,
    memory=None, quantize=None, plain_dtypes=ALL_DTYPES, int16_activations=True),)
