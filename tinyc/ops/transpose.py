"""Transpose: permute the axes."""
from __future__ import annotations

from ..codegen.loops import row_major_strides, strided_loops
from .int8_common import same_quant_copy
from .opdef import ALL_DTYPES, OpDef


def evaluate(a, ins):
    return ins[0].transpose(a["perm"])


def float_kernel(k):
    src = k.in_shape(0)
    perm = k.node.attrs["perm"]
    in_strides = row_major_strides(src)
    strides = [row_major_strides(k.out_shape), [in_strides[p] for p in perm]]
    return "elementwise.c.j2", dict(comment=f"transpose {src} by {tuple(perm)}",
                                    loops=strided_loops(k.out_shape, strides, "y[{o0}] = x0[{o1}];")), 0


DEFINITIONS = (OpDef(
    "Transpose", "x  [perm]", evaluate, None, float_kernel, None, same_quant_copy(float_kernel), None,
    memory=None, quantize="shared", moves_data=True, plain_dtypes=ALL_DTYPES, int16_activations=True),)
