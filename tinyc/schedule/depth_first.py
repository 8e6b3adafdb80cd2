"""Memory model of a row-streamed fused block, in closed form (issue 21): the independent analysis that
tests/schedule/test_row_schedule.py checks the executed row schedule (row_schedule.py) against; the compiler
itself plans with row_schedule.py.

A *block* is a chain of single-input spatial layers on NHWC tensors (Conv2D incl. 1x1 and depthwise, Max/AvgPool2D,
Pad, elementwise Activation), each intermediate read only by the next layer. Row-streamed, the block computes its
last layer's output row by row; every layer computes an output row as soon as its input rows are there, and no row
is ever computed twice. An intermediate tensor then lives only as a rolling line buffer of its rows still needed.

**Rows of a line buffer.** Layer L (kernel height k, stride s, dilation d, top pad p, input height H) reads, for
output row r, the input rows r*s - p + j*d (j < k) that lie in [0, H); padded rows are never stored. Rows no output
reads are never computed. Rows arrive in order; when output row r is computed, the buffer holds every arrived row
(up to the last one r reads) that output row r or a later one still reads. The buffer needs the maximum of that
count over r, computed exactly by `line_rows`. Closed form when s <= k_eff = (k - 1) * d + 1 and H >= k_eff:
rows = k_eff (the window, taps and the rows between them that the next windows read). The (s - 1) extra rows of
"k + s - 1" are not needed here: in one thread the consumer runs before the producer writes its next s rows, and by
then the s oldest rows are dead, so the ring holds the next window in the slots they free. Needed rows are held in
a ring at slot (rank among needed rows) mod rows, which works because the live rows are always consecutive needed
rows. One row fewer and some row is overwritten before its last read (the tests prove both by simulation).

**Bytes.** A line buffer is rows x W x C x element bytes (4-byte aligned, like every arena buffer). The block's
input and output are whole tensors, except that the graph input may be streamed (then a line buffer of the first
layer's rows). The graph's peak with the block fused is the larger of today's live bytes at every step outside the
block (lifetimes.step_bytes of the chosen plan) and, for the block's single step, the buffers live across the block
(not the block's own) + the block's input + its line buffers + its output. Kernel scratch is not counted in the
block step (a row kernel's own scratch is a later increment's); this is the lower bound, as lifetimes.py defines it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import TinycError
from .buffers import align

STREAMED_OPS = ("Conv2D", "MaxPool2D", "AvgPool2D", "Pad", "Activation")


@dataclass(frozen=True)
class RowWindow:
    """How one layer reads its input's rows: output row r reads rows r*stride - pad_top + j*dilation, j < kernel."""
    kernel: int
    stride: int
    dilation: int
    pad_top: int
    in_rows: int      # input height H
    out_rows: int     # output height

    def reads(self, r: int) -> list[int]:
        return [y for j in range(self.kernel)
                if 0 <= (y := r * self.stride - self.pad_top + j * self.dilation) < self.in_rows]


def row_window(g, node) -> RowWindow:
    """The vertical window of a layer of a block; TinycError for what the model does not cover."""
    if node.op not in STREAMED_OPS:
        raise TinycError(f"depth-first block: node '{node.name}' ({node.op}) is not a single-input spatial layer; "
                         f"only {', '.join(STREAMED_OPS)} can be row-streamed (end the block before it)")
    x, y = g.tensors[node.inputs[0]].shape, g.tensors[node.outputs[0]].shape
    if len(x) != 4 or len(y) != 4 or x[0] != 1:
        raise TinycError(f"depth-first block: node '{node.name}' ({node.op}) has input shape {x}; only batch-1 NHWC "
                         "tensors can be row-streamed (end the block before it)")
    a = node.attrs
    if node.op == "Conv2D":
        kernel, stride, dilation, pad_top = (g.tensors[node.inputs[1]].shape[1], a["strides"][0],
                                             a["dilations"][0], a["pads"][0])
    elif node.op in ("MaxPool2D", "AvgPool2D"):
        kernel, stride, dilation, pad_top = (a["kernel"][0], a["strides"][0], a.get("dilations", (1, 1))[0],
                                             a["pads"][0])
    elif node.op == "Pad":
        if tuple(a["pads"][0]) != (0, 0):
            raise TinycError(f"depth-first block: Pad '{node.name}' pads the batch axis ({a['pads'][0]}); "
                             "end the block before it")
        kernel, stride, dilation, pad_top = 1, 1, 1, a["pads"][1][0]
    else:
        if any(len(g.tensors[t].shape) and g.tensors[t].shape != x for t in node.inputs[1:]):
            raise TinycError(f"depth-first block: Activation '{node.name}' has a second input; end the block "
                             "before it")
        kernel, stride, dilation, pad_top = 1, 1, 1, 0
    return RowWindow(int(kernel), int(stride), int(dilation), int(pad_top), x[1], y[1])


def line_rows(w: RowWindow) -> int:
    """Rows the input line buffer of a layer must hold (module docstring): the most arrived rows still read."""
    if w.out_rows <= 0:
        return 0
    last_reader = {}
    for r in range(w.out_rows):
        for y in w.reads(r):
            last_reader[y] = r
    best = 0
    for r in range(w.out_rows):
        rows = w.reads(r)
        if not rows:
            continue
        best = max(best, sum(1 for y, last in last_reader.items() if y <= max(rows) and last >= r))
    return best


@dataclass
class FusedBlock:
    nodes: list            # node names, in order
    rows: list             # rows of each layer's input line buffer (the first: only if the input is streamed)
    line_bytes: list       # bytes of the line buffer of each intermediate tensor (layer i's output, i < last)
    input_bytes: int       # the block's input: whole, or its line buffer when streamed
    output_bytes: int
    crossing_bytes: int    # buffers live across the block that are not its own
    block_bytes: int       # live bytes during the block's single step
    peak_bytes: int        # the graph's peak (lower bound) with the block fused
    peak_before: int       # the plan's lower bound layer by layer
    overlapped_bytes: int  # block_bytes with the output over the dead input rows (module docstring)
    peak_overlapped: int   # the graph's peak with that


def _element_bytes(t) -> int:
    return t.nbytes // t.size if t.size else 0


def fused_block(plan, names, stream_input: bool = False) -> FusedBlock:
    """The memory of `plan` (a schedule() MemoryPlan) when the chain of nodes `names` runs row-streamed."""
    g = plan.graph
    step_of = {n.name: s for s, n in enumerate(g.nodes)}
    missing = [n for n in names if n not in step_of]
    if not names or missing:
        raise TinycError(f"depth-first block: nodes {missing or names} are not in the planned graph; name the "
                         "block's layers as they appear in the plan")
    steps = [step_of[n] for n in names]
    if steps != list(range(steps[0], steps[0] + len(steps))):
        raise TinycError(f"depth-first block: nodes {names} are not consecutive in the plan's order "
                         f"(steps {steps}); fuse a chain the plan runs back to back")
    nodes = [g.nodes[s] for s in steps]
    windows = [row_window(g, n) for n in nodes]
    for prev, node in zip(nodes, nodes[1:]):
        t = prev.outputs[0]
        if node.inputs[0] != t or len(prev.outputs) != 1:
            raise TinycError(f"depth-first block: '{node.name}' does not read '{prev.name}''s output; a block is a "
                             "chain")
        readers = [c.name for c in g.consumers(t)]
        if readers != [node.name] or t in g.live_out():
            raise TinycError(f"depth-first block: '{prev.name}''s output '{t}' is read outside the block "
                             f"({readers}); end the block at '{prev.name}' (a residual Add is not modelled yet)")
    first, last = steps[0], steps[-1]
    x, y = nodes[0].inputs[0], nodes[-1].outputs[0]
    if stream_input and x not in g.inputs:
        raise TinycError(f"depth-first block: only the graph input can be streamed, not '{x}'")
    rows = [line_rows(w) for w in windows]
    line = [align(r * _row_bytes(g, n.inputs[0])) for r, n in zip(rows[1:], nodes[1:])]
    whole_x = plan.buffer_of[x].size
    input_bytes = align(rows[0] * _row_bytes(g, x)) if stream_input else whole_x
    if stream_input and len(g.consumers(x)) > 1:
        raise TinycError(f"depth-first block: the streamed input '{x}' is read outside the block too")
    own = {id(plan.buffer_of[t]) for t in (x, y)}
    crossing = sum(b.size for b in plan.buffers if b.kind != "scratch" and id(b) not in own
                   and b.start <= last and b.end >= first and not _block_only(b, steps))
    output_bytes = plan.buffer_of[y].size
    block = crossing + input_bytes + sum(line) + output_bytes
    live = list(plan.live)
    if stream_input:                # the input buffer is no longer whole before the block either
        for s in range(first):
            live[s] -= whole_x - input_bytes
    outside = [v for s, v in enumerate(live) if not first <= s <= last]
    overlapped = block
    if not stream_input and [c.name for c in g.consumers(x)] == [nodes[0].name] and x not in g.live_out():
        rolling = max((windows[0].in_rows - first_live_row(windows, r)) * _row_bytes(g, x) + (r + 1) * _row_bytes(g, y)
                      for r in range(windows[-1].out_rows))
        overlapped = min(block, crossing + sum(line) + align(rolling))
    return FusedBlock([n.name for n in nodes], rows, line, input_bytes, output_bytes, crossing, block,
                      max(outside + [block]), max(plan.live), overlapped, max(outside + [overlapped]))


def first_live_row(windows: list[RowWindow], r: int) -> int:
    """The first row of the chain's input that its output rows >= r still read (windows are monotone)."""
    for w in reversed(windows):
        first = next((min(rows) for q in range(r, w.out_rows) if (rows := w.reads(q))), w.in_rows)
        r = first
    return r


def _row_bytes(g, name) -> int:
    t = g.tensors[name]
    return t.shape[2] * t.shape[3] * _element_bytes(t)


def _block_only(b, steps) -> bool:
    """An intermediate of the block: written and read only inside it."""
    return bool(b.producers) and (b.producers | b.consumers) <= set(steps)
