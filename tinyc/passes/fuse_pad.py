"""fuse_pad: fold an explicit zero Pad of H and W into the Conv2D that reads it.

Frontends emit explicit Pad nodes (ONNX Pad, Keras ZeroPadding2D, TF "SAME" padding with asymmetric
amounts); Conv2D already supports zero padding through its `pads` attribute at no cost, while a Pad node
costs a copy and a buffer. A Pad is fused when it pads a rank-4 NHWC tensor with the value 0, only along H
and W (axes 1 and 2; batch and channel pads zero, no negative pads), its output is read only by one Conv2D
(as the data input) and is not a graph output. Pools are never fused: max pooling pads with -inf and
average pooling may exclude padded cells from the count, unlike an explicit zero Pad. On int8 tensors the
pad value must be the zero point (real 0).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, mark_fused


def _hw_pads(g: Graph, pad) -> tuple | None:
    """(top, left, bottom, right) if `pad` is a fusable zero H/W pad, else None."""
    x = g.tensors[pad.inputs[0]]
    pads = [tuple(int(v) for v in p) for p in pad.attrs["pads"]]
    # The pad value must mean real 0: 0.0 for float, the zero point for int8 (the int8 conv skips padded cells,
    # which is the same as reading the zero point).
    zero = int(np.asarray(x.quant.zero_point).reshape(-1)[0]) if x.quant is not None else 0.0
    if len(x.shape) != 4 or len(pads) != 4 or pad.attrs.get("value", 0.0) != zero:
        return None
    if pads[0] != (0, 0) or pads[3] != (0, 0) or min(min(p) for p in pads) < 0:
        return None
    return pads[1][0], pads[2][0], pads[1][1], pads[2][1]


def fuse_pad(g: Graph) -> Graph:
    """Fold a zero Pad over H/W into the pads of the single Conv2D consuming it."""
    g = g.copy()
    for pad in list(g.nodes):
        if pad.op != "Pad" or len(pad.inputs) != 1:
            continue
        y = pad.outputs[0]
        readers = [(n, k) for n in g.nodes for k, i in enumerate(n.inputs) if i == y]
        if y in g.live_out() or len(readers) != 1 or readers[0][0].op != "Conv2D" or readers[0][1] != 0:
            continue
        extra = _hw_pads(g, pad)
        if extra is None:
            continue
        conv = readers[0][0]
        conv.attrs["pads"] = tuple(int(a) + b for a, b in zip(conv.attrs["pads"], extra))
        mark_fused(conv, "Pad")
        conv.inputs[0] = pad.inputs[0]
        g.nodes = [n for n in g.nodes if n is not pad]
    g.remove_unused_tensors()
    return g
