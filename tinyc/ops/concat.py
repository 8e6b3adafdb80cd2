"""Concat: join tensors along one axis. When the memory plan lets every input be produced in its slice of the
output, the Concat is free (attribute `in_place`, set by the scheduler)."""
from __future__ import annotations

import numpy as np

from ..codegen.loops import place_block
from .int8_common import same_quant_copy
from .opdef import ALL_DTYPES, OpDef


def evaluate(a, ins):
    return np.concatenate(ins, axis=a["axis"])


def float_kernel(k):
    axis = k.node.attrs["axis"]
    parts, at = [], 0
    for i in range(len(k.node.inputs)):
        begin = [0] * len(k.out_shape)
        begin[axis] = at
        parts.append(place_block(k.in_shape(i), k.out_shape, begin, k.expr(i)))
        at += k.in_shape(i)[axis]
    return "elementwise.c.j2", dict(comment=f"concatenate {len(parts)} tensors on axis {axis}",
                                    loops="\n".join(parts)), 0


DEFINITIONS = (OpDef(
    "Concat", "x0, x1, ...  [axis]", evaluate, None, float_kernel, None, same_quant_copy(float_kernel), None,
    memory=None, quantize="shared", qdq_rule="concat", plain_dtypes=ALL_DTYPES, int16_activations=True),)
