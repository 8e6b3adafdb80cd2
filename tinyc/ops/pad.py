"""Pad: constant padding on every axis. int8 and int16 (16x8): `value` is the stored integer value."""
from __future__ import annotations

import numpy as np

from ..codegen.literals import c_float
from ..codegen.loops import place_block, strided_loops
from ..errors import TinycError
from ..quant import params as qp
from .int8_common import in_quant, out_quant, same_quant
from .opdef import OpDef


def evaluate(a, ins):
    return np.pad(ins[0], a["pads"], constant_values=a.get("value", 0.0))


def float_kernel(k):
    pads = k.node.attrs["pads"]
    fill = strided_loops([k.out_size], [[1]], "y[{o0}] = %s;" % c_float(k.node.attrs.get("value", 0.0)))
    place = place_block(k.in_shape(0), k.out_shape, [b for b, _ in pads], "x0")
    return "elementwise.c.j2", dict(comment=f"pad {k.in_shape(0)} by {tuple(pads)}", loops=fill + "\n" + place), 0


def int8_kernel(k):
    if not same_quant(in_quant(k), out_quant(k)):
        raise TinycError(f"node '{k.node.name}': {k.out.dtype} Pad needs equal input and output quantization")
    value = k.node.attrs.get("value", qp.zero_point_of(out_quant(k)))
    if k.out.dtype == "int16" and not isinstance(value, (int, np.integer)):
        raise TinycError(f"node '{k.node.name}': int16 PADV2 with the {type(value).__name__} constant {value!r}; "
                         "TFLite takes a constant of the input's type (int16) and refuses this model")
    value = int(value)
    pads = k.node.attrs["pads"]
    fill = strided_loops([k.out_size], [[1]], "y[{o0}] = %d;" % value)
    place = place_block(k.in_shape(0), k.out_shape, [b for b, _ in pads], "x0")
    return "elementwise.c.j2", dict(comment=f"{k.out.dtype} pad {k.in_shape(0)} by {tuple(pads)} with {value}",
                                    loops=fill + "\n" + place), 0


DEFINITIONS = (OpDef(
    "Pad", "x  [pads=((b0,e0),(b1,e1),...), value]", evaluate, None, float_kernel, None, int8_kernel, None,
    memory=None, quantize="shared", int16_activations=True),)
