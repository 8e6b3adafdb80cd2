"""Lifetimes for a chosen operator order, the live bytes at every step, and the lower bound on the arena.

Step s runs the s-th node of the order. A buffer is live from the first step that writes it (step 0 for a
model input, which the caller fills before step 0) to the last step that reads it (the last step for a model
output, which the caller reads after it, and for the next value of a state, copied into the state after it),
inclusive: a node's inputs and outputs are live together.

**Lower bound.** live(s) = the sum of the sizes (rounded up to the 4-byte alignment) of the buffers live at step
s, plus the scratch of the layer at step s (an in-place depthwise plane; the kernel scratch its op needs,
OpDef.work, e.g. a recurrent layer's gate buffers and cell state; a fast kernel's own), except that a dying input
and the output written over it (in place or overlapped at a lead, see overlap.py) count once, as the union of the
bytes they cover together. The lower bound is max over s of live(s): no assignment of offsets for this order and
these in-place decisions can use a smaller arena, since everything counted at one step must be in the arena at
once, disjoint.
"""
from __future__ import annotations

from ..ir import Graph
from .buffers import Buffer


def set_lifetimes(g: Graph, buffers: list[Buffer], order: list[int]) -> None:
    """Fill start/end of every activation buffer for the order (a permutation of node ids)."""
    step = {node_id: s for s, node_id in enumerate(order)}
    last = max(len(order) - 1, 0)
    inputs, outputs = set(g.inputs), g.live_out()     # (a next value of the state is read after the last step)
    for b in buffers:
        if b.kind == "scratch":
            continue
        touched = [step[i] for i in b.producers | b.consumers]
        b.start = 0 if inputs & b.tensors.keys() else min(touched, default=0)
        b.end = last if outputs & b.tensors.keys() else max(touched, default=b.start)


def step_bytes(buffers: list[Buffer], steps: int) -> list[int]:
    """live(s) for every step, as defined above; the lower bound is its maximum."""
    live = [0] * max(steps, 1)
    for b in buffers:
        for s in range(b.start, b.end + 1):
            live[s] += b.size
        if b.anchor is not None:            # b dies where its overwriter is born: count the union once
            y, d = b.anchor
            live[b.end] -= b.size + y.size - (max(d + b.size, y.size) - min(d, 0))
    return live
