"""Writing a layer's output over its dying input: in-place elementwise ops, in-place depthwise conv, and overlap
at a computed offset for windowed ops.

Kernels write their output in raster order (output pixel after output pixel; element after element for
elementwise ops). If the output y starts at byte `o` and the input x at `o + lead`, writing y never destroys
input that is still to be read as long as, for every output unit p (a pixel, or an element),

    (p + 1) * unit_bytes  <=  lead + R(p) * input_item_bytes

where R(p) is the lowest input element any unit from p on still reads (from p + 1 on for elementwise ops,
whose kernels read element p before writing it; from p on for windowed ops, whose kernels interleave reads and
writes inside one output pixel). The smallest such `lead` is computed here from the op's geometry; a negative
lead puts the input below the output. Kernels must keep this order (docs/memory-plan.md).

In-place depthwise (MCUNet): a depthwise conv with one output channel per input channel computes one channel at
a time into a scratch plane of out_h * out_w values, then stores it into that channel of the output, which sits
at the same offset as the input (lead 0). Channel c of the output only covers channel-c bytes of the input, dead
once the plane is computed, for any stride. Extra memory: the plane, during this layer only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph
from ..ops import names_where
from .buffers import ALIGN, align

# The ops' in-place contracts (OpDef.memory, tinyc/ops/opdef.py).
ELEMENTWISE = names_where(memory="elementwise")
WINDOWED = names_where(memory="windowed")
ONE_IMAGE = names_where(one_image=True)
KINDS = ("elementwise", "depthwise", "overlap")


@dataclass
class InPlace:
    """How node `node` writes its output over its dying input tensor `input`."""
    node: int            # node id
    input: str
    kind: str            # "elementwise" (lead 0, same bytes), "depthwise" (channel by channel via a scratch
                         # plane), "overlap" (raster order at a computed lead)
    lead: int            # input offset - output offset, bytes (a multiple of ALIGN)
    span: int            # bytes the input and output occupy together at this step
    scratch: int         # scratch bytes during this layer
    saving: int          # bytes saved at this step against separate input and output buffers
    unit: int = 0        # depthwise: any lead that is a multiple of this (one pixel) works too, see shifted()

    def shifted(self, sx: int, sy: int, pixels: int) -> "InPlace":
        """Depthwise in place with the output `pixels` pixels above the input: channel c of the output still
        lands on channel-c bytes of the input only. Lets a chain of overlapped layers, each of which moves data
        down, climb back."""
        d = -pixels * self.unit
        span = max(d + sx, sy) - d
        return InPlace(self.node, self.input, self.kind, d, span, self.scratch, sx + sy - span - self.scratch,
                       self.unit)


def _ceil_align(n: int) -> int:
    return -((-n) // ALIGN) * ALIGN


def _elementwise_lead(n: int, ei: int, eo: int) -> int | None:
    """y[i] = f(x[i]) in index order: unit p's write must stay below input element p + 1."""
    if n <= 1:
        return None
    return max(eo - ei, (n - 1) * (eo - ei))


def _window_lead(min_read: np.ndarray, unit_bytes: int, ei: int) -> int:
    """min_read[p]: lowest input element output unit p reads; reads and writes interleave within a unit."""
    still_read = np.minimum.accumulate(min_read[::-1])[::-1]
    p = np.arange(min_read.size, dtype=np.int64)
    return int(np.max((p + 1) * unit_bytes - still_read * ei))


def _pixels_min_read(in_shape, out_shape, strides, pads) -> np.ndarray:
    _, ih, iw, ic = in_shape
    _, oh, ow, _ = out_shape
    iy = np.clip(np.arange(oh) * strides[0] - pads[0], 0, ih - 1)
    ix = np.clip(np.arange(ow) * strides[1] - pads[1], 0, iw - 1)
    return ((iy[:, None] * iw + ix[None, :]) * ic).reshape(-1).astype(np.int64)


def _rows_in_order(shape, node) -> bool:
    """Normalize / LpNormalize read a whole row before writing it, then read and write it in index order: the
    elementwise contract holds when each row is one contiguous block (the normalized axes last) and rows follow
    each other in memory; rows of strided elements (a normalization over H and W of NHWC) interleave."""
    if node.op == "LpNormalize":      # the row: the values along `axis`, contiguous when every later axis is 1
        return all(d == 1 for d in shape[node.attrs["axis"] + 1:])
    axes = set(node.attrs["axes"])
    inner = [i for i, d in enumerate(shape) if d > 1 and i in axes]
    outer = [i for i, d in enumerate(shape) if d > 1 and i not in axes]
    return not inner or not outer or max(outer) < min(inner)


def lead_for(g: Graph, node, i: int) -> tuple[bool, int | None] | None:
    """(is_elementwise, smallest lead or None for "any") for writing node's output over input i, or None when
    the op's kernel has no known raster order."""
    x, y = g.tensors[node.inputs[i]], g.tensors[node.outputs[0]]
    ei, eo = np.dtype(x.dtype).itemsize, np.dtype(y.dtype).itemsize
    if node.op in ELEMENTWISE:
        if tuple(x.shape) != tuple(y.shape) or (node.op in ("ScaleShift", "Normalize", "LpNormalize") and i != 0):
            return None
        if node.op in ("Normalize", "LpNormalize") and not _rows_in_order(x.shape, node):
            return None
        return True, _elementwise_lead(y.size, ei, eo)
    if node.op not in WINDOWED or i != 0 or (node.op in ONE_IMAGE and _several_images(x)):
        return None
    if node.op == "FusedBlock":        # output rows in order; input rows are dead once loaded (row_schedule.py)
        if node.attrs.get("stream") or node.attrs.get("strips", 1) > 1:     # (each strip reads the input again)
            return None
        from ..ops.fused_block import schedule_of
        sched = schedule_of(node)
        rows = sched.output_rows_min_read(node.inputs[0])
        row_elems = x.shape[2] * x.shape[3]
        return False, _window_lead(rows * row_elems, y.shape[2] * y.shape[3] * eo, ei)
    if node.op == "Dense":
        k, o = x.shape[-1], y.shape[-1]
        rows = y.size // o
        return False, _window_lead(np.arange(rows, dtype=np.int64) * k, o * eo, ei)
    a = node.attrs
    min_read = _pixels_min_read(x.shape, y.shape, a["strides"], a["pads"])
    return False, _window_lead(min_read, y.shape[-1] * eo, ei)


def _pair(lead, sx: int, sy: int) -> tuple[int, int]:
    """(lead, span) for the best legal relative placement of input (sx bytes) and output (sy bytes)."""
    lo = min(0, sy - sx)                       # any lead in [lo, max(0, sy - sx)] gives span max(sx, sy)
    d = _ceil_align(lo if lead is None else max(lead, lo))
    return d, max(d + sx, sy) - min(d, 0)


def _several_images(x) -> bool:
    """A batch of images: the kernel runs once per image, and the raster-order leads hold for one image only."""
    return len(x.shape) == 4 and x.shape[0] > 1


def is_channelwise_depthwise(g: Graph, node) -> bool:
    if node.op != "Conv2D" or node.attrs.get("hybrid"):    # a hybrid layer reads its quantized image, not x
        return False
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    if _several_images(x):
        return False
    c = x.shape[-1]
    return node.attrs.get("groups", 1) == c == y.shape[-1] and c > 1 and x.dtype == y.dtype


def options(g: Graph, node_id: int, kinds=KINDS) -> list[InPlace]:
    """Every way node `node_id` can write over one of its inputs, best first (the input must die there; the
    caller checks). None for a node with several outputs (OpDef.outputs): each output gets its own bytes, since no
    op proves an in-place contract for more than one."""
    node = g.nodes[node_id]
    if len(node.outputs) != 1:
        return []
    out = g.tensors[node.outputs[0]]
    if any(np.dtype(g.tensors[t].dtype).itemsize > ALIGN for t in node.inputs + node.outputs
           if not g.tensors[t].is_const):
        return []       # leads are multiples of 4 bytes: 64-bit elements would lose their alignment (constants,
                        # e.g. a 16x8 layer's int64 bias, are not in the arena)
    sy = align(out.nbytes)
    found = []
    for i, name in enumerate(node.inputs):
        x = g.tensors[name]
        if x.is_const:
            continue
        sx = align(x.nbytes)
        lead = lead_for(g, node, i)
        if lead is not None:
            elementwise, d_min = lead
            d, span = _pair(d_min, sx, sy)
            kind = "elementwise" if elementwise else "overlap"
            if kind in kinds:
                found.append(InPlace(node_id, name, kind, d, span, 0, sx + sy - span))
        if i == 0 and "depthwise" in kinds and is_channelwise_depthwise(g, node):
            _, oh, ow, _ = out.shape
            scratch = align(oh * ow * np.dtype(out.dtype).itemsize)
            span = max(sx, sy)
            unit = x.shape[-1] * np.dtype(x.dtype).itemsize
            unit = int(unit * ALIGN // np.gcd(unit, ALIGN))       # keep leads aligned
            found.append(InPlace(node_id, name, "depthwise", 0, span, scratch, sx + sy - span - scratch, unit))
    found = [f for f in found if f.saving > 0]
    return sorted(found, key=lambda f: (-f.saving, KINDS.index(f.kind)))
