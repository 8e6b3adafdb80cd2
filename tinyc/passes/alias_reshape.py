"""alias_reshape: simplify Reshape nodes and mark them as free aliases of their input.

Our Reshape (which also stands for Squeeze, Unsqueeze and Flatten, as the frontends emit them) is a
row-major reinterpretation of the same bytes, so it never needs to move data. This pass
  * merges Reshape(Reshape(x)) into one Reshape when the intermediate has no other reader and is not a
    graph output (only the final shape matters);
  * removes a Reshape whose output shape equals its input shape, rewiring its readers to the input
    (kept when its output is a graph output, whose name must survive);
  * marks every remaining Reshape with attrs["alias"] = True: the scheduler may then let output and input
    share storage (or copy, where sharing is impossible, e.g. a graph input reshaped into a graph output).
A Transpose that moves only axes of size 1 (the other axes keep their order) leaves every byte where it is: it
becomes a Reshape first (PyTorch's batch-first recurrent layers of one sequence: [T, 1, H] <-> [1, T, H]).
"""
from __future__ import annotations

from ..ir import Graph


def _reads(g: Graph, tensor: str) -> int:
    return sum(i == tensor for n in g.nodes for i in n.inputs)


def moves_only_unit_axes(shape, perm) -> bool:
    """True when transposing an array of `shape` by `perm` keeps its bytes in place: the axes of size > 1 stay
    in their order."""
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def alias_reshape(g: Graph) -> Graph:
    """Merge Reshape chains, drop no-op Reshapes and mark the rest as aliases (attrs["alias"] = True)."""
    g = g.copy()
    for node in g.nodes:
        if node.op == "Transpose" and moves_only_unit_axes(g.tensors[node.inputs[0]].shape, node.attrs["perm"]):
            node.op, node.attrs = "Reshape", {}
    for node in list(g.nodes):  # in order: a chain R1 -> R2 -> R3 collapses as we go
        if node.op != "Reshape":
            continue
        x = node.inputs[0]
        p = g.producer(x)
        if p is not None and p.op == "Reshape" and x not in g.live_out() and _reads(g, x) == 1:
            node.inputs[0] = p.inputs[0]
            g.nodes = [n for n in g.nodes if n is not p]
        y = node.outputs[0]
        if g.tensors[node.inputs[0]].shape == g.tensors[y].shape and y not in g.live_out():
            for n in g.nodes:
                n.inputs = [node.inputs[0] if i == y else i for i in n.inputs]
            g.nodes = [n for n in g.nodes if n is not node]
            continue
        node.attrs["alias"] = True
    g.remove_unused_tensors()
    return g
