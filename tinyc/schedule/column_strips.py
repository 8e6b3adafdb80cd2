"""Patch mode of a fused block (issue 21): its output computed in column strips, each strip row by row.

Row mode (row_schedule.py) holds `span` full-width rows of every tensor the block reads. In patch mode the block's
output is cut into `strips` column strips (patches the height of the output); each strip runs the block's row
schedule on only the columns its output needs, so its line buffers are a strip wide. The columns that the windows
of neighbouring strips share are computed once per strip: the recompute factor (MACs of all strips / MACs of the
block). The strips run one after another and use the same line-buffer bytes; the block's inputs are read once per
strip, so they stay whole until the last strip (a streamed input is asked for once per strip: one pass each).

**The columns of a strip.** Going back from the strip's output columns [a, b), each layer computes the columns of
its output that its readers in the block need, and reads the columns its window needs of each input (clipped to
the tensor: beyond it is the layer's horizontal padding, which the kernel handles as for the whole layer). A
tensor's strip columns are the union of its readers' needs. A reader whose window is one row high (elementwise,
1x1 and 1xk layers) reads a *view*: its own columns, at a column offset inside the tensor's row. A reader whose
window spans several rows reads rows at the tensor's row stride, so its window must start at the tensor's first
strip column and end within a stride of its last: where another reader needs more, the layer computes more
output columns (the strip widens) until it does.

`block_strips` gives each strip's graph: the block's layers with their tensors narrowed to the strip's columns
and their horizontal pads set to the padding each strip's window really reads; its row schedule is the ordinary
one of that graph (row_schedule.row_schedule, with the views).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..errors import TinycError
from ..ir import Graph
from .row_schedule import (VIEW_ATTR, WINDOWED_OPS, RowSchedule, block_nodes, reduced_axes, row_schedule,
                           running_layers, windows)
MAX_STRIPS = 8
# The planners (depth_first_search.py, stream_input.py) take patch mode only where it lowers the arena by at least
# this fraction: its recompute (and the estimate's few % error on it) is not spent on a few bytes.
MIN_STRIP_GAIN = 0.02


@dataclass(frozen=True)
class Columns:
    """How a layer's output columns read one input horizontally: column c reads first(c) .. first(c) + span - 1."""
    kernel: int
    stride: int
    dilation: int
    pad_left: int

    @property
    def span(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    def need(self, lo: int, hi: int, width: int) -> tuple[int, int]:
        """Columns [x0, x1) of an input `width` wide that output columns [lo, hi) read (padding excluded)."""
        return max(0, lo * self.stride - self.pad_left), min(width, (hi - 1) * self.stride - self.pad_left + self.span)


def columns(g: Graph, node, i: int) -> tuple[Columns, bool]:
    """(Columns of runtime input i of a block layer, whether its window is one row high)."""
    if node.op not in WINDOWED_OPS:
        return Columns(1, 1, 1, 0), True
    a = node.attrs
    if node.op == "Conv2D":
        kh, kw = g.tensors[node.inputs[1]].shape[1:3]
        dil = a["dilations"]
    else:
        kh, kw = a["kernel"]
        dil = a.get("dilations", (1, 1))
    return Columns(int(kw), int(a["strides"][1]), int(dil[1]), int(a["pads"][1])), int(kh) == 1


@dataclass
class Strip:
    """One column strip of a block: the output columns `cols`, the strip graph (the block's layers on the strip's
    columns, `graph`), each tensor's strip columns (`ranges`), and the strip graph's row schedule."""
    cols: tuple
    graph: Graph
    ranges: dict
    sched: RowSchedule

    def offset(self, tensor: str) -> int:
        """First column of the strip in `tensor` (a block input or the output): where its rows are read/written."""
        return self.ranges[tensor][0]


def strip_bounds(width: int, strips: int) -> list[tuple[int, int]]:
    """`strips` column ranges of an output `width` wide, as equal as can be (the wider ones first)."""
    base, extra = divmod(width, strips)
    out, at = [], 0
    for j in range(strips):
        w = base + (1 if j < extra else 0)
        out.append((at, at + w))
        at += w
    return out


def column_ranges(g: Graph, nodes: list, output: str, cols: tuple) -> dict:
    """{tensor: (x0, x1)}: the strip columns of every runtime tensor of the block (module docstring)."""
    grown = {output: tuple(cols)}          # layer output -> columns it computes at least
    for _ in range(2 * sum(g.tensors[n.outputs[0]].shape[2] for n in nodes) + 2):
        ranges = {}
        for n in reversed(nodes):           # readers before producers
            y = n.outputs[0]
            want = grown.get(y)
            if want is not None:
                ranges[y] = want if y not in ranges else (min(ranges[y][0], want[0]), max(ranges[y][1], want[1]))
            lo, hi = ranges[y]
            for i, t in enumerate(n.inputs):
                if not g.tensors[t].is_const:
                    need = columns(g, n, i)[0].need(lo, hi, g.tensors[t].shape[2])
                    old = ranges.get(t, need)
                    ranges[t] = (min(old[0], need[0]), max(old[1], need[1]))
        widen = _widen(g, nodes, ranges)
        if widen is None:
            return ranges
        node, lo, hi = widen
        if node.outputs[0] == output:
            raise TinycError(f"patch mode: the block's last layer '{node.name}' would compute columns outside its "
                             "strip; run the block in row mode")
        grown[node.outputs[0]] = (lo, hi)
    raise TinycError("patch mode: the strip columns of the block do not settle; run the block in row mode")


def _widen(g: Graph, nodes: list, ranges: dict):
    """(layer, lo, hi): a layer spanning rows whose window does not start at its input's first strip column or
    ends more than a stride before its last, with its output columns widened by one; None when every one fits."""
    for n in nodes:
        lo, hi = ranges[n.outputs[0]]
        for i, t in enumerate(n.inputs):
            if g.tensors[t].is_const:
                continue
            c, one_row = columns(g, n, i)
            if one_row:
                continue
            x0, x1 = ranges[t]
            n0, n1 = c.need(lo, hi, g.tensors[t].shape[2])
            if n0 > x0 and lo > 0:
                return n, lo - 1, hi
            if n1 + c.stride <= x1 and hi < g.tensors[n.outputs[0]].shape[2]:
                return n, lo, hi + 1
            if n0 > x0 or n1 + c.stride <= x1:
                raise TinycError(f"patch mode: layer '{n.name}' cannot read the columns of '{t}' its other "
                                 "readers need; run the block in row mode")
    return None


def strip_graph(g: Graph, names, cols: tuple) -> tuple[Graph, dict]:
    """(the block's layers on output columns `cols`, the strip columns of its tensors). Each layer's horizontal
    pads are the padding its strip window reads; a one-row reader of a view has the node attribute VIEW_ATTR."""
    nodes, inputs, output = block_nodes(g, names)
    ranges = column_ranges(g, nodes, output, cols)
    empty = next((t for t, (x0, x1) in ranges.items() if x1 <= x0), None)
    if empty is not None:
        reader = next(n for n in nodes if empty in n.inputs)
        raise TinycError(f"patch mode: for output columns {cols[0]}..{cols[1] - 1} layer '{reader.name}' reads only "
                         f"padding of '{empty}'; use fewer strips or row mode")
    h = Graph(f"{nodes[0].name}..{nodes[-1].name} columns {cols[0]}..{cols[1] - 1}", g.source_format)
    for n in nodes:
        for t in n.inputs + n.outputs:
            if t in h.tensors:
                continue
            v = copy.copy(g.tensors[t])
            if t in ranges:
                x0, x1 = ranges[t]
                v.shape = (v.shape[0], v.shape[1], x1 - x0, v.shape[3])
            h.tensors[t] = v
    for n in nodes:
        m = copy.copy(n)
        m.attrs = dict(n.attrs)
        lo, hi = ranges[n.outputs[0]]
        views = []
        for i, t in enumerate(n.inputs):
            if g.tensors[t].is_const:
                views.append(None)
                continue
            c, one_row = columns(g, n, i)
            n0, n1 = c.need(lo, hi, g.tensors[t].shape[2])
            x0 = ranges[t][0]
            views.append(n0 - x0 if one_row and (n0, n1) != ranges[t] else None)
            if "pads" in m.attrs and n.op in WINDOWED_OPS and i == 0:
                pt, _, pb, _ = m.attrs["pads"]
                left = (n0 if one_row else x0) - (lo * c.stride - c.pad_left)
                width = (n1 - n0) if one_row else (ranges[t][1] - x0)
                right = max(0, (hi - lo - 1) * c.stride + c.span - left - width)
                m.attrs["pads"] = type(n.attrs["pads"])((pt, left, pb, right))
        if any(v is not None for v in views):
            m.attrs[VIEW_ATTR] = tuple(views)
        h.nodes.append(m)
    h.inputs, h.outputs = list(inputs), [output]
    return h, ranges


def view_width(g: Graph, node, i: int) -> int | None:
    """The width of the view layer `node` of a strip graph reads of input i (None: it reads the whole row)."""
    views = node.attrs.get(VIEW_ATTR)
    if not views or views[i] is None:
        return None
    y = g.tensors[node.outputs[0]]
    c, _ = columns(g, node, i)
    left = node.attrs["pads"][1] if "pads" in node.attrs else 0
    right = node.attrs["pads"][3] if "pads" in node.attrs else 0
    return (y.shape[2] - 1) * c.stride + c.span - left - right


def _columns_apart(g: Graph, node) -> None:
    """Refuse a layer whose output columns are not computed apart from each other in a strip graph: a
    normalization over the columns, a constant with one value per column (the strip graph keeps constants whole)."""
    if 2 in reduced_axes(node):
        raise TinycError(f"patch mode: layer '{node.name}' ({node.op}) normalizes over the columns; run the block in "
                         "row mode")
    if node.op in WINDOWED_OPS:
        return
    for t in node.inputs:
        c = g.tensors[t]
        if c.is_const and len(c.shape) >= 2 and c.shape[-2] != 1:
            raise TinycError(f"patch mode: layer '{node.name}' ({node.op}) reads constant '{t}' with a value per "
                             "column; run the block in row mode")


def block_strips(g: Graph, names, strips: int, slack_rows: int = 0) -> list[Strip]:
    """The strips of the block of layers `names` of `g` in patch mode (`strips` >= 2), each with its row
    schedule; TinycError (one line) when the block cannot run in strips."""
    nodes, _, output = block_nodes(g, names)
    for n in nodes:
        windows(g, n)           # refuses what cannot run row by row
        _columns_apart(g, n)
    width = g.tensors[output].shape[2]
    if not 2 <= strips <= min(MAX_STRIPS, width):
        raise TinycError(f"patch mode: {strips} strips of an output {width} columns wide; use 2 to "
                         f"{min(MAX_STRIPS, width)} strips, or row mode")
    found = []
    whole = row_schedule(g, names, slack_rows)
    if running_layers(whole):
        layer = whole.layers[running_layers(whole)[0]]
        raise TinycError(f"patch mode: layer '{layer.name}' pools over whole rows; run the block in row mode")
    for cols in strip_bounds(width, strips):
        h, ranges = strip_graph(g, names, cols)
        found.append(Strip(cols, h, ranges, row_schedule(h, [n.name for n in h.nodes], slack_rows)))
    return found
