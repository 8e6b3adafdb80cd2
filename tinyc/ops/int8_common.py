"""Helpers the int8 rules of several ops share: quantization parameters of a layer's tensors, checked."""
from __future__ import annotations

import numpy as np

from ..codegen.loops import strided_loops
from ..errors import TinycError
from ..quant import params as qp


def quant(t, what):
    if t.quant is None:
        raise TinycError(f"int8 tensor '{t.name}' ({what}) has no quantization parameters")
    return t.quant


def in_quant(k, i=0):
    return quant(k.tensor(i), "input")


def out_quant(k):
    return quant(k.out, "output")


def symmetric_weights(k, i=1):
    w = k.tensor(i)
    if w.dtype != "int8" or not w.is_const:
        raise TinycError(f"node '{k.node.name}': weights '{w.name}' must be constant int8 (found {w.dtype}); "
                         "hybrid models (float activations, int8 weights) are not supported")
    q = quant(w, "weights")
    if np.any(np.asarray(q.zero_point) != 0):
        raise TinycError(f"node '{k.node.name}': weights '{w.name}' are asymmetric (zero point != 0); TFLite's "
                         "int8 scheme needs symmetric weights — requantize the model per channel")
    return q


def bias_expr(k):
    if not k.has_input(2):
        return None
    b = k.tensor(2)
    if b.dtype != "int32" or not b.is_const:
        raise TinycError(f"node '{k.node.name}': bias '{b.name}' must be constant int32 (found {b.dtype})")
    return k.expr(2)


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
