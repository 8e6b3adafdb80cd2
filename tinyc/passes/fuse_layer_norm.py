"""fuse_layer_norm: fold the ReduceMean/Sub/Pow/Sqrt/Div decomposition of a layer (or RMS) normalization back
into one Normalize.

Exporters write LayerNormalization out as elementwise ops (PyTorch below opset 17, tf2onnx, hand-written nets):
    m  = Mean(x, A)              (centred form only; A the same axes both times, keepdims)
    d  = Sub(x, m)               (d = x in the RMS form)
    q  = Pow(d, 2) | Mul(d, d) | Activation square(d)
    v  = Mean(q, A)
    e  = Add(v, eps) | Add(eps, v)              eps one float constant >= 0
    n  = Div(d, sqrt(e)) | Mul(d, rsqrt(e)) | Mul(d, reciprocal(sqrt(e))) | Mul(d, Div(1, sqrt(e)))  (Mul: any order)
    [y = Mul(n, gamma) | Mul(gamma, n)]         gamma a float constant broadcasting to n without growing it
    [z = Add(y, beta)  | Add(beta, y)]          beta the same
becomes Normalize(x, gamma, beta) over A with epsilon eps (center=False for the RMS form), which computes the same
function in one kernel and no intermediate buffers. TensorFlow's spelling (Keras LayerNormalization through the
TFLite converter, tf2onnx) is recognised too (`_match_moments`):
    inv = rsqrt(Mean(SquaredDifference(x, m) | Sub(x, m)^2, A) + eps) [* gamma];  y = x * inv + (Neg(m) * inv [+ beta])
Everything between x and the last node must be float32, read only inside the pattern, not a graph output and
without a fused activation; anything else is left alone.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, mark_fused


def _readers(g: Graph, tensor: str) -> list:
    return [n for n in g.nodes for i in n.inputs if i == tensor]


def _const(g: Graph, name: str) -> np.ndarray | None:
    t = g.tensors.get(name)
    if t is None or not t.is_const or t.quant is not None or t.dtype != "float32":
        return None
    return t.data


def _plain(node) -> bool:
    return node is not None and node.attrs.get("activation") is None and len(node.outputs) == 1


def _activation(g: Graph, tensor: str, fn: str):
    p = g.producer(tensor)
    return p if p is not None and p.op == "Activation" and p.attrs.get("fn") == fn else None


def _other(node, tensor: str) -> str | None:
    """The other operand of a binary node reading `tensor` once."""
    if len(node.inputs) != 2 or node.inputs.count(tensor) != 1:
        return None
    return node.inputs[1] if node.inputs[0] == tensor else node.inputs[0]


def _squared(g: Graph, q: str):
    """(d, node) if q = d * d (Pow by 2, Mul of d by itself, square)."""
    p = g.producer(q)
    if not _plain(p):
        return None
    if p.op == "Pow" and len(p.inputs) == 2:
        e = _const(g, p.inputs[1])
        if e is not None and e.size == 1 and float(e.reshape(-1)[0]) == 2.0:
            return p.inputs[0], p
    if p.op == "Mul" and len(p.inputs) == 2 and p.inputs[0] == p.inputs[1]:
        return p.inputs[0], p
    if p.op == "Activation" and p.attrs.get("fn") == "square":
        return p.inputs[0], p
    return None


def _one_over(g: Graph, tensor: str):
    """The node computing `tensor` as Div(1, t) (how PyTorch exports torch.rsqrt's reciprocal), or None."""
    p = g.producer(tensor)
    if not _plain(p) or p.op != "Div" or len(p.inputs) != 2:
        return None
    one = _const(g, p.inputs[0])
    return p if one is not None and one.size == 1 and float(one.reshape(-1)[0]) == 1.0 else None


def _inverse_root(g: Graph, n_node, d: str, e: str):
    """The nodes dividing d by sqrt(e) into n_node's output, or None."""
    if n_node.op == "Div" and n_node.inputs[0] == d and n_node.inputs[1] != d:
        s = _activation(g, n_node.inputs[1], "sqrt")
        return [s] if s is not None and s.inputs[0] == e else None
    if n_node.op == "Mul":
        r = _other(n_node, d)
        if r is None:
            return None
        rs = _activation(g, r, "rsqrt")
        if rs is not None and rs.inputs[0] == e:
            return [rs]
        rec = _activation(g, r, "reciprocal") or _one_over(g, r)
        s = _activation(g, rec.inputs[-1], "sqrt") if rec is not None else None
        if s is not None and s.inputs[0] == e:
            return [s, rec]
    return None


def _affine(g: Graph, node, op: str, x: str, shape) -> np.ndarray | None:
    """The constant operand of `node` (op(x, c) or op(c, x)) at x's rank, if it broadcasts to x without growing it."""
    if node.op != op or not _plain(node):
        return None
    c = _other(node, x)
    value = _const(g, c) if c is not None else None
    if value is None or value.ndim > len(shape):
        return None
    full = value.reshape((1,) * (len(shape) - value.ndim) + value.shape)
    if any(a not in (1, b) for a, b in zip(full.shape, shape)):
        return None
    return full


def _match(g: Graph, v_node):
    """The fusion the variance Mean `v_node` is the centre of, as (x, center, axes, eps, nodes, gamma, beta, out)."""
    if v_node.op != "Mean" or not v_node.attrs["keepdims"]:
        return None
    axes = tuple(sorted(v_node.attrs["axes"]))
    sq = _squared(g, v_node.inputs[0])
    if sq is None:
        return None
    d, q_node = sq
    sub = g.producer(d)
    center = False
    x, nodes = d, [q_node, v_node]
    if _plain(sub) and sub.op == "Sub" and len(sub.inputs) == 2:
        m_node = g.producer(sub.inputs[1])
        if (m_node is not None and m_node.op == "Mean" and m_node.attrs["keepdims"]
                and tuple(sorted(m_node.attrs["axes"])) == axes and m_node.inputs[0] == sub.inputs[0]):
            center, x, nodes = True, sub.inputs[0], [m_node, sub, q_node, v_node]
    xt = g.tensors[x]
    if xt.dtype != "float32" or xt.quant is not None or g.tensors[d].shape != xt.shape:
        return None
    # e = v + eps
    (add,) = _readers(g, v_node.outputs[0]) or [None]
    if add is None or add.op != "Add" or not _plain(add):
        return None
    eps_name = _other(add, v_node.outputs[0])
    eps = _const(g, eps_name) if eps_name is not None else None
    if eps is None or eps.size != 1 or not float(eps.reshape(-1)[0]) >= 0:
        return None
    if g.tensors[add.outputs[0]].shape != g.tensors[v_node.outputs[0]].shape:
        return None
    e = add.outputs[0]
    nodes.append(add)
    # n = d / sqrt(e): the one reader of d, besides the square, that divides it by the root of e
    d_readers = [r for r in _readers(g, d) if r is not q_node]
    n_nodes = [r for r in d_readers if r.op in ("Div", "Mul") and _plain(r) and _inverse_root(g, r, d, e)]
    if len(n_nodes) != 1:
        return None
    n_node = n_nodes[0]
    nodes += _inverse_root(g, n_node, d, e) + [n_node]
    out, shape = n_node.outputs[0], xt.shape
    if g.tensors[out].shape != shape:
        return None
    gamma = beta = None
    following = _readers(g, out)
    if len(following) == 1 and out not in g.live_out():
        gamma = _affine(g, following[0], "Mul", out, shape)
        if gamma is not None:
            nodes.append(following[0])
            out = following[0].outputs[0]
            following = _readers(g, out)
            if len(following) == 1 and out not in g.live_out():
                beta = _affine(g, following[0], "Add", out, shape)
                if beta is not None:
                    nodes.append(following[0])
                    out = following[0].outputs[0]
    if g.tensors[out].shape != shape:
        return None
    if not _private(g, nodes):
        return None
    return x, center, axes, float(eps.reshape(-1)[0]), nodes, gamma, beta, out


def _private(g: Graph, nodes) -> bool:
    """Every intermediate of the pattern (all but the last node's output) is read inside it only and is no graph
    output, so folding the nodes into one loses nothing."""
    inside = {id(n) for n in nodes}
    return not any(n.outputs[0] in g.live_out() or any(id(r) not in inside for r in _readers(g, n.outputs[0]))
                   for n in nodes[:-1])


def _match_moments(g: Graph, v_node):
    """TensorFlow's spelling (Keras LayerNormalization through the TFLite converter, tf2onnx): y = x * inv + res
    with inv = rsqrt(var + eps) [* gamma], res = -mean * inv [+ beta], the variance of SquaredDifference(x, mean);
    as (x, center, axes, eps, nodes, gamma, beta, out) or None."""
    if v_node.op != "Mean" or not v_node.attrs["keepdims"]:
        return None
    axes = tuple(sorted(v_node.attrs["axes"]))
    sq, pre = g.producer(v_node.inputs[0]), []
    if _plain(sq) and sq.op == "SquaredDifference" and len(sq.inputs) == 2:
        pairs = (sq.inputs, sq.inputs[::-1])
    else:       # Keras GroupNormalization's: Sub, then a square ((m - x)^2 is the same)
        squared = _squared(g, v_node.inputs[0])
        sub = g.producer(squared[0]) if squared is not None else None
        if not _plain(sub) or sub.op != "Sub" or len(sub.inputs) != 2:
            return None
        sq, pre, pairs = squared[1], [sub], (sub.inputs, sub.inputs[::-1])
    for x, m in pairs:
        m_node = g.producer(m)
        if (m_node is not None and m_node.op == "Mean" and m_node.attrs["keepdims"] and m_node.inputs[0] == x
                and tuple(sorted(m_node.attrs["axes"])) == axes):
            break
    else:
        return None
    xt = g.tensors[x]
    shape = xt.shape
    if xt.dtype != "float32" or xt.quant is not None or g.tensors[sq.outputs[0]].shape != shape:
        return None
    (add,) = _readers(g, v_node.outputs[0]) or [None]
    eps_name = _other(add, v_node.outputs[0]) if add is not None and add.op == "Add" and _plain(add) else None
    eps = _const(g, eps_name) if eps_name is not None else None
    if eps is None or eps.size != 1 or not float(eps.reshape(-1)[0]) >= 0:
        return None
    (root,) = _readers(g, add.outputs[0]) or [None]
    if root is None or root.op != "Activation" or root.attrs.get("fn") != "rsqrt":
        return None
    nodes = [m_node, *pre, sq, v_node, add, root]
    inv, gamma = root.outputs[0], None
    readers = _readers(g, inv)
    if len(readers) == 1:       # inv * gamma
        gamma = _affine(g, readers[0], "Mul", inv, shape)
        if gamma is None:
            return None
        nodes.append(readers[0])
        inv = readers[0].outputs[0]
        readers = _readers(g, inv)
    # the two readers of inv: x * inv and Neg(mean) * inv
    if len(readers) != 2 or any(r.op != "Mul" or not _plain(r) or _other(r, inv) is None for r in readers):
        return None
    scaled = [r for r in readers if _other(r, inv) == x]
    shifted = [r for r in readers if r not in scaled]
    neg = g.producer(_other(shifted[0], inv)) if len(scaled) == 1 and len(shifted) == 1 else None
    if neg is None or neg.op != "Activation" or neg.attrs.get("fn") != "neg" or neg.inputs[0] != m_node.outputs[0]:
        return None
    nodes += [neg, scaled[0], shifted[0]]
    res, beta = shifted[0].outputs[0], None
    res_readers = _readers(g, res)
    if len(res_readers) == 1 and res_readers[0].op == "Add" and _other(res_readers[0], res) != scaled[0].outputs[0]:
        beta = _affine(g, res_readers[0], "Add", res, shape)
        if beta is None:
            return None
        nodes.append(res_readers[0])
        res = res_readers[0].outputs[0]
    (y,) = _readers(g, res) or [None]
    if y is None or y.op != "Add" or not _plain(y) or _other(y, res) != scaled[0].outputs[0]:
        return None
    nodes.append(y)
    out = y.outputs[0]
    if g.tensors[out].shape != shape or g.tensors[scaled[0].outputs[0]].shape != shape:
        return None
    if not _private(g, nodes):
        return None
    return x, True, axes, float(eps.reshape(-1)[0]), nodes, gamma, beta, out


def fuse_layer_norm(g: Graph) -> Graph:
    """Fold a decomposed layer / RMS normalization (ReduceMean, Sub, Pow, Sqrt, Div, Mul, Add) into one Normalize."""
    g = g.copy()
    changed = True
    while changed:
        changed = False
        for v_node in list(g.nodes):
            found = _match(g, v_node) or _match_moments(g, v_node)
            if found is None:
                continue
            x, center, axes, eps, nodes, gamma, beta, out = found
            rank = len(g.tensors[x].shape)
            gamma = gamma if gamma is not None else np.ones((1,) * rank, np.float32)
            ins = [x, g.add_const(g.unique_name(out + "_scale"), np.ascontiguousarray(gamma, np.float32))]
            if beta is not None:
                ins.append(g.add_const(g.unique_name(out + "_bias"), np.ascontiguousarray(beta, np.float32)))
            last = nodes[-1]
            fused = type(last)("Normalize", ins, [out], dict(axes=axes, epsilon=eps, center=center), last.name)
            for n in nodes[:-1]:
                mark_fused(fused, n.op)
            drop = {id(n) for n in nodes}
            g.nodes = [fused if n is last else n for n in g.nodes if id(n) not in drop or n is last]
            changed = True
            break
    g.remove_unused_tensors()
    return g
