"""Tile and BroadcastTo: repeated copies of x.

- Tile: numpy.tile(x, reps) with one repetition count per axis (ONNX Tile, TFLite TILE).
- BroadcastTo: numpy.broadcast_to(x, target): x's axes aligned to the right, size-1 axes repeated (ONNX Expand,
  TFLite BROADCAST_TO; Keras RepeatVector and UpSampling1D are a BroadcastTo between free Reshapes).
"""
from __future__ import annotations

import numpy as np

from ..codegen.loops import broadcast_strides, row_major_strides, strided_loops
from ..errors import TinycError
from .int8_common import same_quant_copy
from .opdef import ALL_DTYPES, OpDef


def evaluate_tile(a, ins):
    return np.tile(ins[0], a["reps"])


def evaluate_broadcast(a, ins):
    return np.broadcast_to(ins[0], a["target"]).copy()


def check(g, n) -> None:
    x, y = g.tensors[n.inputs[0]].shape, g.tensors[n.outputs[0]].shape
    if n.op == "Tile":
        ok = len(n.attrs["reps"]) == len(x) and tuple(d * r for d, r in zip(x, n.attrs["reps"])) == tuple(y)
    else:
        ok = tuple(n.attrs["target"]) == tuple(y) and len(x) <= len(y) and all(
            a in (1, b) for a, b in zip(x[::-1], y[::-1]))
    if not ok:
        raise TinycError(f"internal: {n.op} '{n.name}' cannot make {y} from {x}; report this model")


def tile_kernel(k):
    x, reps = k.in_shape(0), k.node.attrs["reps"]
    # iterate [r0, d0, r1, d1, ...]: copy t of axis a lands at t * d_a in the output, reads the same input
    shape = [v for r, d in zip(reps, x) for v in (r, d)]
    out = row_major_strides(shape)
    src = [v for s in row_major_strides(x) for v in (0, s)]
    loops = strided_loops(shape, [out, src], "y[{o0}] = x0[{o1}];")
    return "elementwise.c.j2", dict(comment=f"tile {x} by {tuple(reps)}", loops=loops), 0


def broadcast_kernel(k):
    x = k.in_shape(0)
    loops = strided_loops(k.out_shape, [row_major_strides(k.out_shape), broadcast_strides(x, k.out_shape)],
                          "y[{o0}] = x0[{o1}];")
    return "elementwise.c.j2", dict(comment=f"broadcast {x} to {k.out_shape}", loops=loops), 0


DEFINITIONS = (
    OpDef("Tile", "x  [reps]  (one per axis)", evaluate_tile, check, tile_kernel, None,
          same_quant_copy(tile_kernel), None, memory=None, quantize="shared", moves_data=True,
          plain_dtypes=ALL_DTYPES),       # (no int16: TF 2.21's TILE refuses INT16)
    OpDef("BroadcastTo", "x  [target (the output shape)]", evaluate_broadcast, check, broadcast_kernel, None,
          same_quant_copy(broadcast_kernel), None, memory=None, quantize="shared", moves_data=True,
          plain_dtypes=ALL_DTYPES, int16_activations=True),
)
