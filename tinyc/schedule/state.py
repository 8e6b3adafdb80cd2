"""The state region: where a stateful graph's state tensors live between inferences (docs/streaming-state.md).

The state has its own persistent bytes, never part of the arena (whose contents die with each inference). Each
state tensor has a slot there. At the end of an inference every state tensor takes its next value:
  * *written in place*: the node producing the next value writes it straight into the state's slot, with no copy,
    when that is safe in every operator order the planner may choose: every other reader of the state is an
    ancestor of that node (so it has run before), and if the node itself reads the state, it is an elementwise
    op reading it element by element at the same offset (its in-place contract, overlap.py). The next value must
    be nothing but its own bytes: no alias, Concat slice or Slice view of it, and not a model output (whose bytes
    the zero-copy API hands out in the arena);
  * otherwise the next value is an arena tensor live to the end of the inference (like a model output), copied
    into the slot after the last layer. A next value that is a model input, a constant, a state tensor or the next
    value of another state gets a copy node first (`isolate_state`), so every copy reads bytes of its own and the
    copies' order does not matter.
Slots are laid out largest element type first, so every slot is aligned with no padding between them.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ops import names_where
from .buffers import align
from .overlap import options

ALIAS_OPS = names_where(memory="alias")
# readers or producers that make a tensor share bytes with others in the arena plan (buffers.group_tensors)
_SHARING = set(ALIAS_OPS) | {"Concat", "Slice"}


def isolate_state(g: Graph) -> Graph:
    """Give each next value bytes of its own (see the module docstring): a next value that is a model input, a
    constant, a state tensor or the next value of an earlier state becomes a copy of it."""
    if not g.state:
        return g
    g = g.copy()
    taken = set()
    for s, v in list(g.state.items()):
        if v == s:
            continue
        t = g.tensors[v]
        if v in g.inputs or t.is_const or v in g.state or v in taken:
            new = g.unique_name(f"{s}_next")
            g.add_tensor(new, t.shape, t.dtype, quant=t.quant)
            g.add_node("Reshape", [v], [new], name=new, alias=False)
            g.state[s] = new
            v = new
        taken.add(v)
    return g


def written_in_place(g: Graph) -> dict:
    """state tensor -> its next value, for the next values the producing node writes straight into the state's
    slot (see the module docstring); the others are copied at the end."""
    producer = {o: i for i, node in enumerate(g.nodes) for o in node.outputs}
    direct = {}
    for s, v in g.state.items():
        i = producer.get(v)
        if i is None or v in g.outputs or g.nodes[i].op in _SHARING:
            continue
        if any(r.op in _SHARING for r in g.consumers(v)):
            continue
        before = _ancestors(g, i, producer)
        readers = [j for j, node in enumerate(g.nodes) if s in node.inputs]
        if any(j != i and j not in before for j in readers):
            continue
        if i in readers and not _elementwise_over(g, i, s):
            continue
        direct[s] = v
    return direct


def _ancestors(g: Graph, i: int, producer: dict) -> set:
    seen, todo = set(), [i]
    while todo:
        for t in g.nodes[todo.pop()].inputs:
            j = producer.get(t)
            if j is not None and j not in seen:
                seen.add(j)
                todo.append(j)
    return seen


def _elementwise_over(g: Graph, i: int, s: str) -> bool:
    """Node i may write its output over state `s`, which it reads once, element by element at the same offset."""
    node = g.nodes[i]
    if node.inputs.count(s) != 1 or g.tensors[s].dtype != g.tensors[node.outputs[0]].dtype:
        return False
    return any(c.input == s and c.kind == "elementwise" and c.lead == 0 and not c.scratch
               for c in options(g, i, ("elementwise",)))


def layout(g: Graph) -> tuple[dict, int]:
    """({state tensor: byte offset in the state region}, the region's bytes): slots in order of element size,
    largest first (then the graph's order), so each is aligned without padding; the total rounded up to the
    largest element size (as C sizes a struct of these arrays)."""
    names = sorted(g.state, key=lambda s: -np.dtype(g.tensors[s].dtype).itemsize)
    offsets, at = {}, 0
    for s in names:
        offsets[s] = at
        at += g.tensors[s].nbytes
    widest = max([1] + [np.dtype(g.tensors[s].dtype).itemsize for s in names])
    return offsets, align(at, widest) if names else 0
