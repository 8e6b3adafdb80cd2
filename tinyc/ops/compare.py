"""Compare (Equal, Greater, Less, GreaterOrEqual, LessOrEqual) and the logical ops (And, Or, Xor; Not is one
operand): elementwise with NumPy broadcasting, bool results (one byte, 0 or 1)."""
from __future__ import annotations

import numpy as np

from ..codegen.literals import c_type
from ..codegen.loops import broadcast_strides, row_major_strides, strided_loops
from .opdef import ALL_DTYPES, OpDef

COMPARISONS = {"equal": ("==", np.equal), "greater": (">", np.greater), "less": ("<", np.less),
               "greater_equal": (">=", np.greater_equal), "less_equal": ("<=", np.less_equal)}
LOGICAL = {"and": ("&&", np.logical_and), "or": ("||", np.logical_or), "xor": ("!=", np.logical_xor)}


def operand_loops(k, body: str, operands: int) -> str:
    """Loops over the output with each of the first `operands` inputs broadcast to it ({o0}: output, {o1}...)."""
    out = k.out_shape
    strides = [row_major_strides(out)] + [broadcast_strides(k.in_shape(i), out) for i in range(operands)]
    return strided_loops(out, strides, body)


def compare_evaluate(a, ins):
    return COMPARISONS[a["kind"]][1](ins[0], ins[1])


def compare_kernel(k):
    sym = COMPARISONS[k.node.attrs["kind"]][0]
    ta, tb = (c_type(k.tensor(i).dtype) for i in (0, 1))
    body = "y[{o0}] = (uint8_t)((%s)%s[{o1}] %s (%s)%s[{o2}]);" % (ta, k.expr(0), sym, tb, k.expr(1))
    return "elementwise.c.j2", dict(comment=f"{k.node.attrs['kind']} {k.in_shape(0)}, {k.in_shape(1)} -> "
                                            f"{k.out_shape}", loops=operand_loops(k, body, 2)), 0


def logical_evaluate(a, ins):
    if a["kind"] == "not":
        return np.logical_not(ins[0])
    return LOGICAL[a["kind"]][1](ins[0], ins[1])


def logical_kernel(k):
    kind = k.node.attrs["kind"]
    if kind == "not":
        body = "y[{o0}] = (uint8_t)!%s[{o1}];" % k.expr(0)
        return "elementwise.c.j2", dict(comment=f"not on {k.out_size} values", loops=operand_loops(k, body, 1)), 0
    body = "y[{o0}] = (uint8_t)((%s[{o1}] != 0) %s (%s[{o2}] != 0));" % (k.expr(0), LOGICAL[kind][0], k.expr(1))
    return "elementwise.c.j2", dict(comment=f"{kind} {k.in_shape(0)}, {k.in_shape(1)} -> {k.out_shape}",
                                    loops=operand_loops(k, body, 2)), 0


DEFINITIONS = (
    OpDef("Compare", "a, b with numpy broadcasting -> bool  [kind: equal, greater, less, greater_equal, "
          "less_equal]", compare_evaluate, None, compare_kernel, None, None, None, memory=None, quantize=None,
          plain_dtypes=ALL_DTYPES),
    OpDef("Logical", "a, b (bool, numpy broadcasting), or a alone for not -> bool  [kind: and, or, xor, not]",
          logical_evaluate, None, logical_kernel, None, None, None, memory=None, quantize=None,
          plain_dtypes=("bool",)),
)
