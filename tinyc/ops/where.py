"""Where: cond ? a : b elementwise, the three operands broadcast NumPy-style to the output."""
from __future__ import annotations

import numpy as np

from .compare import operand_loops
from .opdef import ALL_DTYPES, OpDef


def evaluate(a, ins):
    return np.where(ins[0], ins[1], ins[2])


def float_kernel(k):
    body = "y[{o0}] = %s[{o1}] ? %s[{o2}] : %s[{o3}];" % (k.expr(0), k.expr(1), k.expr(2))
    return "elementwise.c.j2", dict(comment=f"where {k.in_shape(0)} ? {k.in_shape(1)} : {k.in_shape(2)} -> "
                                            f"{k.out_shape}", loops=operand_loops(k, body, 3)), 0


DEFINITIONS = (OpDef(
    "Where", "cond (bool), a, b with numpy broadcasting", evaluate, None, float_kernel, None, None, None,
    memory=None, quantize=None, plain_dtypes=ALL_DTYPES),)
