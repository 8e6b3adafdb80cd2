"""Helpers the int8 rules of several ops share: quantization parameters of a layer's tensors, checked."""
from __future__ import annotations

import numpy as np

from ..codegen.loops import strided_loops
from ..errors import TinycError
from ..nibbles import c_nibble, pack_int4
from ..quant import params as qp


def quant(t, what):
    if t.quant is None:
        raise TinycError(f"int8 tensor '{t.name}' ({what}) has no quantization parameters")
    return t.quant


def in_quant(k, i=0):
    return quant(k.tensor(i), "input")


def out_quant(k):
    return quant(k.out, "output")


# Ops whose int8 rules take int4 weights (TFLite's INT4 filters of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED)
INT4_WEIGHT_OPS = ("Conv2D", "Dense")


def symmetric_weights(k, i=1):
    w = k.tensor(i)
    if w.dtype == "int4" and k.node.op not in INT4_WEIGHT_OPS:
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): weights '{w.name}' are int4; tinyc takes int4 weights "
                         "in Conv2D (incl. depthwise) and Dense only: quantize these to int8")
    if w.dtype not in ("int8", "int4") or not w.is_const:
        raise TinycError(f"node '{k.node.name}': weights '{w.name}' must be constant int8 (found {w.dtype}); "
                         "hybrid models (float activations, int8 weights) are not supported")
    q = quant(w, "weights")
    if np.any(np.asarray(q.zero_point) != 0):
        raise TinycError(f"node '{k.node.name}': weights '{w.name}' are asymmetric (zero point != 0); TFLite's "
                         "int8 scheme needs symmetric weights — requantize the model per channel")
    return q


def int4_weights(k, i=1) -> dict:
    """Template variables of int4 weights: `w`, the weights packed two per byte (low nibble first, as TFLite stores
    them) in a uint8 table, so that flash holds half the bytes of int8, and `w4(index)`, the C expression of
    weight `index` of the flattened [O, ...] weights, unpacked per use. Empty for other weights."""
    t = k.tensor(i)
    if t.dtype != "int4":
        return {}
    table = k.table(pack_int4(t.data), "uint8", "int4 weights, two per byte, low nibble first")
    return dict(w=table, w4=lambda index: c_nibble(table, index))


def bias_expr(k):
    if not k.has_input(2):
        return None
    b = k.tensor(2)
    if b.dtype != "int32" or not b.is_const:
        raise TinycError(f"node '{k.node.name}': bias '{b.name}' must be constant int32 (found {b.dtype})")
    return k.expr(2)


def is_16x8(k) -> bool:
    """The layer computes TFLite's 16x8 scheme: int16 activations in and out (docs/int16-numerics.md 1)."""
    return k.tensor(0).dtype == "int16" or k.out.dtype == "int16"


def weighted_16x8_bias(k, w_abs_sums, bits: int = 47) -> str | None:
    """The 16x8 bias of a conv / depthwise / FC / transpose-conv layer: constant int64, accumulated with the
    products in int64 (its C expression, or None). `w_abs_sums`: per output channel, the sum of |w| over its
    reduction; the accumulator must stay below 2^bits for the worst input (every x at -32768): 47 for TFLite's
    int64 MultiplyByQuantizedMultiplier, 62 where the requantization is in double (no int64 overflow)."""
    if k.tensor(0).dtype != "int16" or k.out.dtype != "int16":
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): input '{k.tensor(0).name}' is {k.tensor(0).dtype} and "
                         f"output '{k.out.name}' {k.out.dtype}; a 16x8 layer has int16 input and output")
    if k.tensor(1).dtype != "int8":
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): weights '{k.tensor(1).name}' are {k.tensor(1).dtype}; "
                         "TFLite's 16x8 scheme takes int8 weights")
    bias = np.zeros(len(w_abs_sums), np.int64)
    name = None
    if k.has_input(2):
        b = k.tensor(2)
        if b.dtype != "int64" or not b.is_const:
            raise TinycError(f"node '{k.node.name}': bias '{b.name}' is {b.dtype}; a 16x8 layer takes a constant "
                             "int64 bias, as TFLite's converter writes it (TF 2.21's int16 kernels read an int32 bias "
                             "as int64: docs/int16-numerics.md 1.1)")
        bias, name = b.data.astype(np.int64).reshape(-1), k.expr(2)
    worst = np.abs(bias).astype(object) + np.asarray(w_abs_sums, dtype=object) * 32768
    if max(worst, default=0) >= 1 << bits:
        raise TinycError(f"node '{k.node.name}': its weights and bias can make an accumulator of {max(worst)}; "
                         f"TFLite's 16x8 requantization of this op takes |acc| < 2^{bits}")
    return name


def int16_activation_range(k, q) -> tuple[int, int]:
    """The fused activation's clamp on an int16 (16x8) output of quantization `q`. Where a bound's quantized value
    leaves int32, TFLite's Prepare fails (ADD, SUB, MUL) or its clamp is undefined (the pools: a float -> int32
    cast out of range); refused in one line (docs/int16-numerics.md 3.1)."""
    act = k.node.attrs.get("activation")
    for bound in () if act is None or act["fn"] != "clip" else (act["lo"], act["hi"]):
        steps = float(np.float32(np.float32(bound) / np.float32(qp.scale_of(q))))
        if np.isfinite(bound) and not -2.0 ** 31 <= qp.tflite_round(steps) < 2.0 ** 31:
            raise TinycError(f"node '{k.node.name}' ({k.node.op}): its activation bound {bound:g} is {steps:.3g} "
                             f"steps of the output scale {qp.scale_of(q):g}, beyond int32, where TFLite refuses the "
                             "layer or its clamp is undefined; requantize the model with a coarser output scale")
    return qp.activation_range(act, q, "int16")


def same_quant(a, b) -> bool:
    return qp.scale_of(a) == qp.scale_of(b) and qp.zero_point_of(a) == qp.zero_point_of(b)


def elementwise(k, expr: str, comment: str):
    """One int32 `v` per element of x0 in, `expr` out."""
    body = "{{ const int32_t v = x0[{o0}]; y[{o0}] = %s; }}" % expr
    return "elementwise.c.j2", dict(comment=comment, loops=strided_loops([k.out_size], [[1]], body)), 0


def same_quant_copy(rule):
    """Data movement (reshape, transpose, concat): bytes move unchanged, so the parameters must agree."""
    def convert(k):
        for i in range(len(k.node.inputs)):
            if not same_quant(in_quant(k, i), out_quant(k)):
                raise TinycError(f"node '{k.node.name}' ({k.node.op}): input '{k.tensor(i).name}' and output have "
                                 "different quantization parameters, which tinyc does not support here")
        return rule(k)
    return convert
