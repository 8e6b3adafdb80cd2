"""Storage: which tensors share bytes. Independent of the operator order.

A *buffer* is a block of arena bytes holding one or more tensors:
- a Reshape (or Identity) output is its input seen with another shape: same buffer, same bytes;
- a Concat whose inputs are contiguous blocks of its output (every axis before the concatenation axis has size
  1, e.g. flattened vectors or batch-1 NHWC along H) costs nothing: each input is produced directly in its slice
  of the output's buffer, at a byte offset, and the Concat node emits no code;
- a Slice whose output is one contiguous range of its input's bytes (`slice_view`: one value of every axis
  before the first sliced one, step 1 on it, whole axes after it; e.g. a Split of the outermost non-unit axis, or
  one row of an image) is a
  *view*: its output sits inside its input's buffer at that byte offset (the reverse of the Concat case), the
  buffer stays live until the view's last reader, and the Slice emits no code. Not for a model output (it has
  its own bytes) or a constant input; `group_tensors(g, views=False)` plans every Slice as a copy (the scheduler
  keeps whichever plan is smaller: a view keeps all of its input live as long as the view is).
Model inputs and outputs live in the arena too (the zero-copy API hands out pointers into it); the copying
`*_invoke` copies them in and out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..disjoint_sets import DisjointSets
from ..ir import Graph
from ..ops import names_where
from ..ops.int8_common import same_quant

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
    """Make every model output its own tensor: an output that is also a model input, a constant, a state tensor
    (in the state region, not the arena) or another output gets a copy node, so each output has its own bytes. A
    zero-size output gets a tensor of its own that nothing writes (it has no values; its buffer has no bytes)."""
    g = g.copy()
    seen = set(g.inputs)
    for k, name in enumerate(g.outputs):
        if name in seen or g.tensors[name].is_const or name in g.state:
            t = g.tensors[name]
            new = g.unique_name(f"{name}_out{k}")
            g.add_tensor(new, t.shape, t.dtype, quant=t.quant, source_name=t.source_name, source_perm=t.source_perm)
            if t.size:
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


def slice_view(g: Graph, node) -> int | None:
    """Byte offset of a Slice's output inside its input when the output is one contiguous range of the input's
    bytes (one value on every axis before the first axis the output has several values on, step 1 there, every
    axis after it whole and in order) with the same element type and quantization, else None."""
    if node.op != "Slice":
        return None
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    if x.dtype != y.dtype or (x.quant is None) != (y.quant is None) or (
            x.quant is not None and not same_quant(x.quant, y.quant)):
        return None
    starts, steps, sizes = node.attrs["starts"], node.attrs["steps"], node.attrs["sizes"]
    rank = len(x.shape)
    cut = next((a for a, k in enumerate(sizes) if k > 1), max(rank - 1, 0))   # axes before it: one value each
    if rank and sizes[cut] > 1 and steps[cut] != 1:
        return None
    if any((b, st, k) != (0, 1, d) for d, b, st, k in
           zip(x.shape[cut + 1:], starts[cut + 1:], steps[cut + 1:], sizes[cut + 1:])):
        return None
    dense = np.cumprod((1,) + tuple(x.shape[::-1]), dtype=np.int64)[:rank][::-1]
    return int(sum(int(b) * int(d) for b, d in zip(starts, dense))) * np.dtype(x.dtype).itemsize


def group_tensors(g: Graph, views: bool = True, outside=()) -> tuple[list[Buffer], dict]:
    """Group the graph's runtime tensors into buffers. Returns (buffers, tensor name -> Buffer); the Buffer's
    `tensors` map gives each tensor's byte offset inside it. Node ids are indices into `g.nodes`. `views`: Slices
    whose output is a contiguous range of their input become views of its bytes (see the module docstring).
    `outside`: tensors that are not in the arena (the state region's, schedule/state.py); a Reshape of one
    copies."""
    runtime = [n for n, t in g.tensors.items() if not t.is_const and n not in outside]
    sets = DisjointSets(runtime)
    producer = {o: i for i, node in enumerate(g.nodes) for o in node.outputs}
    for node in g.nodes:
        if (node.op in ALIAS_OPS and node.attrs.get("alias", True) and node.inputs[0] in sets.parent
                and node.outputs[0] in sets.parent):
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

    # Slice views, after the Concat slices: the output's group goes inside its input's group at the byte offset
    viewed = set()
    if views:
        outputs = set(g.outputs)
        for i, node in enumerate(g.nodes):
            offset = slice_view(g, node)
            x, y = node.inputs[0] if node.inputs else None, node.outputs[0]
            if offset is None or x not in sets.parent or y not in sets.parent:
                continue
            x_root, y_root = sets.find(x), sets.find(y)
            members = [m for m in sets.parent if sets.find(m) == y_root]
            chain, r = {x_root}, x_root
            while r in embedded:
                r = embedded[r][0]
                chain.add(r)
            if (y_root in embedded or y_root in chain or outputs & set(members)
                    or not _members_at_zero(sets, g, y_root, y)):
                continue
            embedded[y_root] = (x_root, offset)
            viewed.add(i)

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
        for name in node.outputs:        # a view writes nothing: it reads its input's buffer at its step
            if name in of:
                (of[name].consumers if i in viewed else of[name].producers).add(i)
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
