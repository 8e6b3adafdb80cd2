"""fold_affine: fold Mul/Div/Add/Sub by a per-channel constant into the preceding Conv2D/Dense.

tf2onnx exports a BatchNorm that follows a (depthwise) conv as Conv2D -> Mul(const) -> Add(const). When the
layer's output y comes straight from a Conv2D or Dense with constant float weights (no fused activation, y
read only by that one op and not a graph output), and the other operand c is a float constant that varies at
most along the output channel (every dim 1 except the last, which is 1 or C, and c has no more dims than y):
  Mul(y, c) / Mul(c, y):  w'[o] = w[o] * c[o], b'[o] = b[o] * c[o]
  Div(y, c) (c != 0):     the same with 1 / c
  Add(y, c) / Add(c, y):  b'[o] = b[o] + c[o]        (a bias is created if the layer has none)
  Sub(y, c):              b'[o] = b[o] - c[o]        (Sub(c, y) negates y: not folded)
The output channel is axis 0 of the weights for every kind (plain, grouped, depthwise Conv2D and Dense).
The layer then writes the folded op's output tensor and takes over its fused activation, if any. Weights or
a bias shared with another node are copied, not overwritten. Repeats until nothing changes, so
Conv -> Mul -> Add folds completely.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, mark_fused

_OPS = ("Mul", "Div", "Add", "Sub")


def _reads(g: Graph, tensor: str) -> int:
    return sum(i == tensor for n in g.nodes for i in n.inputs)


def _float_const(g: Graph, name: str) -> bool:
    t = g.tensors.get(name)
    return (t is not None and t.is_const and t.quant is None
            and np.issubdtype(np.dtype(t.dtype), np.floating) and bool(np.all(np.isfinite(t.data))))


def _set_const(g: Graph, node, index: int, data: np.ndarray, base: str, dtype: str) -> None:
    """node.inputs[index] := a constant holding `data`; rewrites in place when `node` is its only reader."""
    if index < len(node.inputs):
        name = node.inputs[index]
        t = g.tensors[name]
        if _reads(g, name) == 1 and name not in g.live_out() and name not in g.inputs:
            t.data = np.ascontiguousarray(data.astype(t.dtype).reshape(t.shape))
            return
        node.inputs[index] = g.add_const(name + "_affine", data.astype(t.dtype).reshape(t.shape), t.dtype)
    else:
        node.inputs.append(g.add_const(base, data.astype(dtype), dtype))


def _channel_vector(g: Graph, c_name: str, y_name: str, channels: int) -> np.ndarray | None:
    """c as a float64 vector of length `channels` if it broadcasts against y only along the last axis."""
    c, y = g.tensors[c_name], g.tensors[y_name]
    if len(c.shape) > len(y.shape) or any(d != 1 for d in c.shape[:-1]):
        return None
    last = c.shape[-1] if c.shape else 1
    if last not in (1, channels):
        return None
    return np.broadcast_to(c.data.astype(np.float64).reshape(-1), (channels,))


def _try_fold(g: Graph, node) -> bool:
    if node.op not in _OPS or len(node.inputs) != 2 or len(node.outputs) != 1:
        return False
    a, b = node.inputs
    # (y, c) candidates: y the layer output, c the constant; Sub and Div only as y - c and y / c.
    orders = [(a, b), (b, a)] if node.op in ("Mul", "Add") else [(a, b)]
    for y, c in orders:
        p = g.producer(y)
        if p is None or p.op not in ("Conv2D", "Dense") or p.attrs.get("activation") is not None:
            continue
        if len(p.outputs) != 1 or not _float_const(g, c):
            continue
        if _reads(g, y) != 1 or y in g.live_out() or y in g.inputs:
            continue
        yt, out = g.tensors[y], g.tensors[node.outputs[0]]
        if yt.quant is not None or out.quant is not None or yt.dtype != out.dtype or out.shape != yt.shape:
            continue
        if not all(_float_const(g, i) for i in p.inputs[1:]):
            continue
        w = g.tensors[p.inputs[1]].data.astype(np.float64)
        channels = w.shape[0]
        if not yt.shape or yt.shape[-1] != channels:
            continue
        vec = _channel_vector(g, c, y, channels)
        if vec is None or (node.op == "Div" and np.any(vec == 0)):
            continue
        has_bias = len(p.inputs) > 2
        bias = g.tensors[p.inputs[2]].data.astype(np.float64).reshape(-1) if has_bias else np.zeros(channels)
        dtype = g.tensors[p.inputs[1]].dtype
        if node.op in ("Mul", "Div"):
            scale = vec if node.op == "Mul" else 1.0 / vec
            _set_const(g, p, 1, w * scale.reshape((-1,) + (1,) * (w.ndim - 1)), "", dtype)
            if has_bias:  # a missing bias is zero and stays zero: no need to create one
                _set_const(g, p, 2, bias * scale, "", dtype)
        else:
            shift = vec if node.op == "Add" else -vec
            _set_const(g, p, 2, bias + shift, (p.name or node.outputs[0]) + "_bias", dtype)
        p.outputs = [node.outputs[0]]
        mark_fused(p, node.op)
        if node.attrs.get("activation") is not None:
            p.attrs["activation"] = node.attrs["activation"]
        return True
    return False


def fold_affine(g: Graph) -> Graph:
    """Fold Mul/Div/Add/Sub by a per-channel float constant into the preceding Conv2D/Dense weights and bias."""
    g = g.copy()
    changed = True
    while changed:
        changed = False
        for node in list(g.nodes):  # in order, so Conv -> Mul -> Add usually collapses in one sweep
            if _try_fold(g, node):
                g.nodes = [n for n in g.nodes if n is not node]
                changed = True
    g.remove_unused_tensors()
    return g
