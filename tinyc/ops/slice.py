"""Slice: a strided window of x. On every axis a, output index i reads input index starts[a] + i * steps[a]
(steps may be negative: backwards), for sizes[a] values. Frontends lower ONNX Slice / Split / Gather with a
scalar or evenly spaced constant index, TFLite SLICE / STRIDED_SLICE / SPLIT / SPLIT_V / UNPACK and Keras
Cropping to it, with clamping and masks resolved at compile time (`resolve_slices`), and dropped or new axes as a
free Reshape after it.

A copy, or free: a Slice whose output is one contiguous range of its input's bytes (a Split of the outermost
non-unit axis) is a view of those bytes at an offset when the memory plan keeps it (schedule/buffers.py
`slice_view`), and then emits no code."""
from __future__ import annotations

import numpy as np

from ..codegen.loops import dense_strides, row_major_strides, strided_loops
from ..errors import TinycError
from .int8_common import same_quant_copy
from .opdef import ALL_DTYPES, OpDef


def evaluate(a, ins):
    x = ins[0]
    index = [s + st * np.arange(n) for s, st, n in zip(a["starts"], a["steps"], a["sizes"])]
    return x[np.ix_(*index)] if index else x.copy()


def resolve_slices(shape, starts, ends, steps):
    """Python/NumPy (and ONNX Slice) semantics per axis: out-of-range starts and ends clamp, negative ones count
    from the end, a negative step walks backwards. Returns (starts, steps, sizes) of the values read."""
    out = []
    for d, b, e, s in zip(shape, starts, ends, steps):
        lo, hi, st = slice(int(b), int(e), int(s)).indices(int(d))
        out.append((lo, st, len(range(lo, hi, st))))
    return tuple(o[0] for o in out), tuple(o[1] for o in out), tuple(o[2] for o in out)


def check(g, n) -> None:
    x, y = g.tensors[n.inputs[0]], g.tensors[n.outputs[0]]
    starts, steps, sizes = n.attrs["starts"], n.attrs["steps"], n.attrs["sizes"]
    if not len(starts) == len(steps) == len(sizes) == len(x.shape) or tuple(sizes) != tuple(y.shape):
        raise TinycError(f"internal: Slice '{n.name}' of {x.shape} has starts {starts}, steps {steps}, sizes "
                         f"{sizes} for output {y.shape}; report this model")
    for d, b, s, k in zip(x.shape, starts, steps, sizes):
        if s == 0 or k < 1 or not (0 <= b < d and 0 <= b + s * (k - 1) < d):
            raise TinycError(f"internal: Slice '{n.name}' reads outside its input {x.shape} (starts {starts}, "
                             f"steps {steps}, sizes {sizes}); report this model")


def float_kernel(k):
    src = k.in_shape(0)
    starts, steps = k.node.attrs["starts"], k.node.attrs["steps"]
    dense = dense_strides(src)
    base = sum(b * s for b, s in zip(starts, dense))
    body = "y[{o0}] = x0[%d + {o1}];" % base if base else "y[{o0}] = x0[{o1}];"
    loops = strided_loops(k.out_shape, [row_major_strides(k.out_shape),
                                        [st * s for st, s in zip(steps, dense)]], body)
    return "elementwise.c.j2", dict(comment=f"slice {src} from {tuple(starts)} by steps {tuple(steps)} to "
                                            f"{k.out_shape}", loops=loops), 0


DEFINITIONS = (OpDef(
    "Slice", "x  [starts, steps, sizes]  (one per axis)", evaluate, check, float_kernel, None,
    same_quant_copy(float_kernel), None, memory=None, quantize="shared", moves_data=True,
    plain_dtypes=ALL_DTYPES, int16_activations=True),)
