"""Reshape and Identity: the same values under another shape (or the same). A free alias of the input's bytes
when the memory plan can share them (schedule/buffers.py), else a copy."""
from __future__ import annotations

from ..codegen.loops import strided_loops
from ..errors import TinycError
from .int8_common import same_quant_copy
from .opdef import ALL_DTYPES, OpDef


def evaluate(a, ins):
    return ins[0]


def check(g, n) -> None:
    """A Reshape keeps the number of values (a frontend that dropped a batch there would blind later checks)."""
    if n.op == "Reshape" and g.tensors[n.inputs[0]].size != g.tensors[n.outputs[0]].size:
        raise TinycError(f"internal: Reshape '{n.name}' turns {g.tensors[n.inputs[0]].shape} into "
                         f"{g.tensors[n.outputs[0]].shape}, another number of values; report this model")


def copy_kernel(k):
    """Reshape / Identity that could not share storage with its input."""
    return "elementwise.c.j2", dict(comment=f"copy {k.out_size} values",   # x0, or a constant (a constant output)
                                    loops=strided_loops([k.out_size], [[1]], "y[{o0}] = %s[{o0}];" % k.expr(0))), 0


DEFINITIONS = (
    OpDef("Reshape", "x -> y with the same element count", evaluate, check, copy_kernel, None,
          same_quant_copy(copy_kernel), None, memory="alias", quantize="shared", moves_data=True,
          plain_dtypes=ALL_DTYPES, int16_activations=True),
    OpDef("Identity", "x  (Identity / Dropout; dropped by a pass)", evaluate, None, copy_kernel, None,
          same_quant_copy(copy_kernel), None, memory="alias", quantize="shared", moves_data=True,
          plain_dtypes=ALL_DTYPES, int16_activations=True),
)
