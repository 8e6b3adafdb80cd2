"""Storage and lifetimes: which tensors share bytes, and from which step to which step each buffer lives.

A *buffer* is a set of tensors stored at the same bytes: a Reshape (or Identity) output aliases its input.
Buffers holding a model input or output live in the caller's memory (the `*_invoke` pointers); the rest go in
the arena. Step k is the k-th node; a buffer lives from the step that first writes it to the last step that
reads it, inclusive, so a node's inputs and outputs are live together and never overlap.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..disjoint_sets import DisjointSets
from ..ir import Graph

ALIAS_OPS = ("Reshape", "Identity")


@dataclass
class Buffer:
    tensors: list = field(default_factory=list)
    nbytes: int = 0
    start: int = 0              # first step that writes it
    end: int = 0                # last step that reads it
    pinned: tuple | None = None  # ("input", k) / ("output", k): caller's memory
    offset: int | None = None    # arena offset, for buffers that are not pinned


def isolate_io(g: Graph) -> Graph:
    """Make every model output its own tensor: an output that is also a model input, a constant, or another
    output gets a copy node, so each caller pointer is written exactly once."""
    g = g.copy()
    seen = set(g.inputs)
    for k, name in enumerate(g.outputs):
        if name in seen or g.tensors[name].is_const:
            t = g.tensors[name]
            new = g.unique_name(f"{name}_out{k}")
            g.add_tensor(new, t.shape, t.dtype, quant=t.quant, source_name=t.source_name, source_perm=t.source_perm)
            g.add_node("Reshape", [name], [new], name=new, alias=False)
            g.outputs[k] = new
        seen.add(g.outputs[k])
    return g


def find_buffers(g: Graph) -> tuple[list[Buffer], dict]:
    """Group tensors into buffers and compute lifetimes. Returns (buffers, tensor name -> Buffer)."""
    sets = DisjointSets(name for name, t in g.tensors.items() if not t.is_const)
    pin = {}
    for k, n in enumerate(g.inputs):
        pin[n] = ("input", k)
    for k, n in enumerate(g.outputs):
        pin[n] = ("output", k)
    for node in g.nodes:
        if node.op in ALIAS_OPS and node.attrs.get("alias", True) and node.inputs[0] in sets:
            a, b = sets.find(node.inputs[0]), sets.find(node.outputs[0])
            if a != b and not (a in pin and b in pin):
                sets.merge(*((a, b) if a in pin else (b, a)))
            elif a != b:
                node.attrs["alias"] = False   # both sides are caller memory: a copy is needed
    buffers: dict[str, Buffer] = {}
    of = {}
    for name in sets.parent:
        r = sets.find(name)
        buf = buffers.setdefault(r, Buffer(pinned=pin.get(r)))
        buf.tensors.append(name)
        buf.nbytes = max(buf.nbytes, g.tensors[name].nbytes)
        of[name] = buf
    for buf in buffers.values():
        buf.start, buf.end = len(g.nodes), -1
    for step, node in enumerate(g.nodes):
        for name in node.outputs:
            of[name].start = min(of[name].start, step)
            of[name].end = max(of[name].end, step)
        for name in node.inputs:
            if name in of:
                of[name].end = max(of[name].end, step)
                of[name].start = min(of[name].start, step)
    return list(buffers.values()), of


def lower_bound(buffers: list[Buffer], steps: int) -> int:
    """The largest sum of live arena bytes at any step: no offset assignment can use less."""
    live = [0] * max(steps, 1)
    for b in buffers:
        if b.pinned is None:
            for s in range(b.start, b.end + 1):
                live[s] += b.nbytes
    return max(live)
