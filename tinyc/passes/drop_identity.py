"""drop_identity: remove Identity nodes (ONNX Identity, Dropout at inference, Keras no-op layers).

An Identity computes nothing, so its consumers can read its input directly and the node disappears. The
one exception is an Identity whose output is a graph output: the output name is part of the model's
interface and must survive, so that node becomes a Reshape to the same shape (after `alias_reshape` a free
alias of its input, or a copy where the scheduler cannot alias, e.g. a graph input read straight back out).
A state whose next value is an Identity's output takes the Identity's input as its next value instead.
"""
from __future__ import annotations

from ..ir import Graph


def _rewire(g: Graph, old: str, new: str) -> None:
    """Every node reading `old` reads `new` instead (graph outputs are left alone)."""
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]


def drop_identity(g: Graph) -> Graph:
    """Remove Identity nodes, rewiring consumers; an Identity producing a graph output becomes a Reshape."""
    g = g.copy()
    kept = []
    for node in g.nodes:
        if node.op != "Identity":
            kept.append(node)
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in g.outputs:
            node.op = "Reshape"
            node.attrs = {}
            kept.append(node)
            continue
        _rewire(g, dst, src)
        g.state = {s: src if v == dst else v for s, v in g.state.items()}
        # Keep the reference-runtime name for per-layer verification if the input has none of its own.
        s, d = g.tensors[src], g.tensors[dst]
        if s.source_name is None and d.source_name is not None and not s.is_const:
            s.source_name, s.source_perm = d.source_name, d.source_perm
    g.nodes = kept
    g.remove_unused_tensors()
    return g
