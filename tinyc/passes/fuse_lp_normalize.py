"""fuse_lp_normalize: fold x / max(||x||_p, eps) written out as a reduction, a floor and a division back into one
LpNormalize.

PyTorch exports F.normalize(x, p, dim, eps) as ReduceL2 (ReduceL1 for p = 1) over `dim` with keepdims, Clip(min =
eps), Expand back to x's shape, Div(x, that); hand-written nets use Max(norm, eps) for the Clip. In the IR:
    n = Reduce(x, kind l2 | l1, axes (a,), keepdims)
    f = Activation clip(n, lo = eps, hi >= FLT_MAX) | Max(n, eps) | Max(eps, n)        eps a float constant > 0
    [b = BroadcastTo(f, x's shape)]
    y = Div(x, f | b)
becomes LpNormalize(x, axis a, p, epsilon eps): the same function (the floor eps > 0 means no division by zero, so
LpNormalize's 0 for a zero norm never applies), in one kernel without the broadcast buffer. x must be float32; every
intermediate read only inside the pattern, no graph output, no fused activation; anything else is left alone.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, mark_fused

FLOAT_MAX = float(np.finfo(np.float32).max)


def _readers(g: Graph, tensor: str) -> list:
    return [n for n in g.nodes for i in n.inputs if i == tensor]


def _scalar(g: Graph, name: str) -> float | None:
    t = g.tensors.get(name)
    if t is None or not t.is_const or t.quant is not None or t.dtype != "float32" or t.size != 1:
        return None
    return float(t.data.reshape(-1)[0])


def _floor(g: Graph, node):
    """(the floored tensor, eps) if `node` is clip(n, eps, +inf) or Max(n, eps) with eps > 0."""
    if node is None or len(node.outputs) != 1 or node.attrs.get("activation") is not None:
        return None
    if node.op == "Activation" and node.attrs.get("fn") == "clip" and node.attrs.get("hi", 0) >= FLOAT_MAX:
        eps = float(node.attrs.get("lo", 0.0))
        return (node.inputs[0], eps) if eps > 0 else None
    if node.op == "Max" and len(node.inputs) == 2:
        for n, e in (node.inputs, node.inputs[::-1]):
            eps = _scalar(g, e)
            if eps is not None and eps > 0:
                return n, eps
    return None


def _match(g: Graph, div):
    """(x, axis, p, eps, nodes) for the division `div` that ends the pattern, or None."""
    if div.op != "Div" or len(div.inputs) != 2 or div.attrs.get("activation") is not None:
        return None
    x, f = div.inputs
    xt = g.tensors[x]
    if xt.dtype != "float32" or xt.quant is not None or g.tensors[div.outputs[0]].shape != xt.shape or x == f:
        return None
    nodes = []
    b_node = g.producer(f)
    if b_node is not None and b_node.op == "BroadcastTo":
        nodes.append(b_node)
        f = b_node.inputs[0]
    f_node = g.producer(f)
    floored = _floor(g, f_node)
    if floored is None:
        return None
    n, eps = floored
    nodes.append(f_node)
    r = g.producer(n)
    if (r is None or r.op != "Reduce" or r.attrs["kind"] not in ("l1", "l2") or not r.attrs["keepdims"]
            or len(r.attrs["axes"]) != 1 or r.inputs[0] != x):
        return None
    nodes.append(r)
    for node in nodes:           # every intermediate read inside the pattern only
        t = node.outputs[0]
        if t in g.live_out() or len(_readers(g, t)) != 1:
            return None
    return x, int(r.attrs["axes"][0]), 2 if r.attrs["kind"] == "l2" else 1, eps, nodes


def fuse_lp_normalize(g: Graph) -> Graph:
    """Fold Reduce(L1/L2) -> floor at eps -> [BroadcastTo] -> Div into one LpNormalize."""
    g = g.copy()
    for div in list(g.nodes):
        found = _match(g, div)
        if found is None:
            continue
        x, axis, p, eps, nodes = found
        div.op, div.inputs, div.attrs = "LpNormalize", [x], dict(axis=axis, p=p, epsilon=eps)
        for n in reversed(nodes):
            mark_fused(div, n.op)
        drop = {id(n) for n in nodes}
        g.nodes = [n for n in g.nodes if id(n) not in drop]
    g.remove_unused_tensors()
    return g
