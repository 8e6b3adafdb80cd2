"""fold_batchnorm: fold inference-mode BatchNorm into the preceding Conv2D/Dense, or make it a ScaleShift.

At inference BatchNorm is y = x * s + t per channel with s = gamma / sqrt(var + eps), t = beta - mean * s.
When x comes straight from a Conv2D or Dense with constant weights (no fused activation, x read by nobody
else and not a graph output), s and t fold into the weights: w'[o] = w[o] * s[o], b'[o] = b[o] * s[o] + t[o]
(a bias is created if the layer has none). The layer's output channel is axis 0 of its weights for every
kind: plain, grouped and depthwise Conv2D (w[O,KH,KW,C/groups]) and Dense (w[O,K]). The layer then writes
the BatchNorm's output tensor, whose name the reference runtime knows (per-layer verification).
Any other BatchNorm with constant parameters becomes ScaleShift(x, s, t): no BatchNorm reaches codegen.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, mark_fused


def _sole_reader(g: Graph, tensor: str, node) -> bool:
    """`node` is the only reader of `tensor` (and reads it once), which is not a graph input or output."""
    reads = sum(i == tensor for n in g.nodes for i in n.inputs)
    return reads == 1 and tensor in node.inputs and tensor not in g.live_out() and tensor not in g.inputs


def _set_const(g: Graph, node, index: int, data: np.ndarray, base: str, dtype: str) -> None:
    """node.inputs[index] := a constant holding `data`; rewrites in place when `node` owns the tensor."""
    if index < len(node.inputs):
        name = node.inputs[index]
        t = g.tensors[name]
        if _sole_reader(g, name, node):
            t.data = np.ascontiguousarray(data.astype(t.dtype).reshape(t.shape))
            return
        node.inputs[index] = g.add_const(name + "_bn", data.astype(t.dtype), t.dtype)
    else:
        node.inputs.append(g.add_const(base, data.astype(dtype), dtype))


def _float_const(g: Graph, name: str) -> bool:
    t = g.tensors[name]
    return t.is_const and t.quant is None and np.issubdtype(np.dtype(t.dtype), np.floating)


def _try_fold(g: Graph, bn, scale: np.ndarray, shift: np.ndarray) -> bool:
    x = bn.inputs[0]
    p = g.producer(x)
    if p is None or p.op not in ("Conv2D", "Dense") or p.attrs.get("activation") is not None:
        return False
    if not _sole_reader(g, x, bn):
        return False
    if not all(_float_const(g, i) for i in p.inputs[1:]):
        return False
    w = g.tensors[p.inputs[1]].data.astype(np.float64)
    if w.shape[0] != scale.size:
        return False
    b = g.tensors[p.inputs[2]].data.astype(np.float64) if len(p.inputs) > 2 else np.zeros(w.shape[0])
    dtype = g.tensors[p.inputs[1]].dtype
    _set_const(g, p, 1, w * scale.reshape((-1,) + (1,) * (w.ndim - 1)), "", dtype)
    _set_const(g, p, 2, b * scale + shift, (p.name or bn.outputs[0]) + "_bias", dtype)
    p.outputs = [bn.outputs[0]]
    mark_fused(p, "BatchNorm")
    return True


def fold_batchnorm(g: Graph) -> Graph:
    """Fold BatchNorm into a preceding Conv2D/Dense's weights and bias; otherwise turn it into a ScaleShift."""
    g = g.copy()
    kept = []
    for bn in list(g.nodes):
        params = bn.inputs[1:5]
        if bn.op != "BatchNorm" or not all(g.tensors[i].is_const for i in params):
            kept.append(bn)
            continue
        channels = (g.tensors[bn.inputs[0]].shape or (1,))[-1]
        gamma, beta, mean, var = (g.tensors[i].data.astype(np.float64).ravel() for i in params)
        if any(v.size not in (1, channels) for v in (gamma, beta, mean, var)):
            kept.append(bn)  # not a per-channel BatchNorm over the last axis: leave it, codegen will say so
            continue
        if not np.all(var + bn.attrs["epsilon"] > 0):
            raise TinycError(f"BatchNorm '{bn.name}' has a variance of {float(np.min(var)):g} (plus epsilon "
                             f"{bn.attrs['epsilon']:g} not positive); fix the model's statistics")
        scale = np.broadcast_to(gamma / np.sqrt(var + bn.attrs["epsilon"]), (channels,))
        shift = np.broadcast_to(beta - mean * scale, (channels,))
        if _try_fold(g, bn, scale, shift):
            continue
        dtype = g.tensors[bn.outputs[0]].dtype
        s = g.add_const(bn.outputs[0] + "_scale", scale.astype(dtype), dtype)
        t = g.add_const(bn.outputs[0] + "_shift", shift.astype(dtype), dtype)
        bn.op, bn.inputs, bn.attrs = "ScaleShift", [bn.inputs[0], s, t], {}
        kept.append(bn)
    g.nodes = kept
    g.remove_unused_tensors()
    return g
