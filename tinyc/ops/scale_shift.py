"""ScaleShift: x * scale[c] + shift[c] over the last axis (a BatchNorm with no conv to fold into)."""
from __future__ import annotations

from ..codegen.loops import strided_loops
from .opdef import OpDef


def evaluate(a, ins):
    return ins[0] * ins[1] + ins[2]


def float_kernel(k):
    c = k.out_shape[-1]
    body = "y[{o0}] = x0[{o0}] * %s[{o1}] + %s[{o1}];" % (k.expr(1), k.expr(2))
    shape = [k.out_size // c, c]
    return "elementwise.c.j2", dict(comment=f"per-channel scale and shift, {c} channels",
                                    loops=strided_loops(shape, [[c, 1], [0, 1]], body)), 0


DEFINITIONS = (OpDef(
    "ScaleShift", "x[...,C], scale[C], shift[C]", evaluate, None, float_kernel, None, None, None,
    memory="elementwise", quantize=None),)
