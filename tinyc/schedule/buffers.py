"""Storage: which tensors share bytes. Independent of the operator order.

A *buffer* is a block of arena bytes holding one or more tensors:
- a Reshape (or Identity) output is its input seen with another shape: same buffer, same bytes;
- a Concat whose inputs are contiguous blocks of its output (every axis before the concatenation axis has size
  1, e.g. flattened vectors or batch-1 NHWC along H) costs nothing: each input is produced directly in its slice
  of the output's buffer, at a byte offset, and the Concat node emits no code.
Model inputs and outputs live in the arena too (the zero-copy API hands out pointers into it); the copying
`*_invoke` copies them in and out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..disjoint_sets import DisjointSets
from ..ir import Graph
from ..ops import names_where

ALIAS_OPS = names_where(memory="alias")
ALIGN = 4          # every buffer starts on a 4-byte boundary: float32 / int32 data and 32-bit SIMD loads


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass(eq=False)
class Buffer:
    tensors: dict = field(default_factory=dict)   # tensor name -> byte offset inside the buffer
    nbytes: int = 0
    kind: str = "activation"        # "activation" or "scratch" (a layer's temporary, live during that layer only)
    producers: set = field(default_factory=set)   # node ids writing it (several for a concat's slices)
    consumers: set = field(default_factory=set)   # node ids reading it
    start: int = 0                  # first step it is live (written), in the chosen order
    end: int = 0                    # last step it is live (read)
    offset: int | None = None       # arena offset
    anchor: tuple | None = None     # (Buffer y, d): the layer producing y writes over this dying buffer, and
                                    # the plan keeps offset == y.offset + d (see overlap.py)
    label: str = ""
    alignment: int = ALIGN          # its offset is a multiple of this: 8 for 64-bit elements (AAPCS, C)

    @property
    def size(self) -> int:
        """Bytes it occupies in the arena (rounded up to the alignment)."""
        return align(self.nbytes)


def isolate_io(g: Graph) -> Graph:
    """Make every model output its own tensor: an output that is also a model input, a constant, or another
    output gets a copy node, so each output has its own bytes."""
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


def concat_slices(g: Graph, node) -> list | None:
    """Byte offset of each input inside a Concat's output when the inputs are contiguous blocks of it (all axes
    before the concatenation axis have size 1), else None."""
    out = g.tensors[node.outputs[0]]
    axis = node.attrs["axis"] % len(out.shape)
    if int(np.prod(out.shape[:axis], dtype=np.int64)) != 1:
        return None
    offsets, at = [], 0
    for name in node.inputs:
        offsets.append(at)
        at += g.tensors[name].nbytes
    return offsets


def group_tensors(g: Graph) -> tuple[list[Buffer], dict]:
    """Group the graph's runtime tensors into buffers. Returns (buffers, tensor name -> Buffer); the Buffer's
    `tensors` map gives each tensor's byte offset inside it. Node ids are indices into `g.nodes`."""
    runtime = [n for n, t in g.tensors.items() if not t.is_const]
    sets = DisjointSets(runtime)
    producer = {o: i for i, node in enumerate(g.nodes) for o in node.outputs}
    for node in g.nodes:
        if node.op in ALIAS_OPS and node.attrs.get("alias", True) and not g.tensors[node.inputs[0]].is_const:
            sets.merge(node.inputs[0], node.outputs[0])
            node.attrs["alias"] = True
    # Concat slices: group root -> (root of the concat output's group, byte offset in it)
    embedded: dict[str, tuple] = {}
    for node in g.nodes:
        if node.op != "Concat" or node.attrs.get("in_place") is False:
            continue
        offsets = concat_slices(g, node)
        roots = [sets.find(n) if n in sets.parent else None for n in node.inputs]
        out_root = sets.find(node.outputs[0])
        ok = (offsets is not None and None not in roots and len(set(roots)) == len(roots)
              and out_root not in roots and all(r not in embedded for r in roots)
              and all(node.inputs[i] in producer and _members_at_zero(sets, g, roots[i], node.inputs[i])
                      for i in range(len(roots))))
        node.attrs["in_place"] = bool(ok)
        if ok:
            for r, off in zip(roots, offsets):
                embedded[r] = (out_root, off)

    def resolve(root):
        off = 0
        while root in embedded:
            root, d = embedded[root]
            off += d
        return root, off

    buffers: dict[str, Buffer] = {}
    of = {}
    for name in runtime:
        own = sets.find(name)
        root, off = resolve(own)
        buf = buffers.setdefault(root, Buffer())
        buf.tensors[name] = off
        buf.nbytes = max(buf.nbytes, off + g.tensors[name].nbytes)
        buf.alignment = max(buf.alignment, np.dtype(g.tensors[name].dtype).itemsize)
        of[name] = buf
    for i, node in enumerate(g.nodes):
        for name in node.outputs:
            of[name].producers.add(i)
        for name in node.inputs:
            if name in of:
                of[name].consumers.add(i)
    for buf in buffers.values():
        buf.label = min(buf.tensors, key=lambda n: (buf.tensors[n], n))
    return list(buffers.values()), of


def _members_at_zero(sets, g, root, name) -> bool:
    """A concat input may be embedded only if its whole group is that one tensor's bytes (an alias group whose
    members all have the same size)."""
    size = g.tensors[name].nbytes
    return all(g.tensors[m].nbytes == size for m in sets.parent if sets.find(m) == root)
