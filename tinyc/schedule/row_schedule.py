"""The row schedule of a fused block (issue 21): which rows each layer computes when, and where they are held.

A *fused block* is a set of layers on batch-1 NHWC tensors (Conv2D incl. 1x1 and depthwise, Max/AvgPool2D
without vertical padding, and elementwise ops: activations, Add with its skip, ...) whose intermediate tensors
are read only inside the block. It runs depth-first: its output is computed row by row, each layer computing a row
when a consumer needs it, so no row is ever computed twice and no intermediate is ever whole.

**Line buffers.** Every tensor the block reads or computes, except its output, lives in a line buffer of
`capacity` rows: the rows [lo, hi) still needed, stored contiguously from slot `row - base`. A consumer's window
(output row r reads rows r*s - pad_top ... r*s - pad_top + (k-1)*d) is then one contiguous run of rows, so each
layer's ordinary kernel computes an output row from a window of `kernel_eff` input rows with no vertical padding:
padding rows are stored as rows (filled with the pad value, the input's zero point), so every call of a layer is
the same shape and one specialized kernel per layer suffices. Before a row is written, rows no consumer will read
again are dropped; when the next slot would be past the capacity, the live rows move down to slot 0 (with the
minimal capacity that is every row: a copy of kernel_eff - stride rows per row).

The block's external inputs are copied row by row into their line buffers ("load"), from the arena or, for a
streamed model input, from the user's callback. The output is written in place in the arena, row by row.

`row_schedule` simulates this at compile time and returns the actions in order: the C of the block
(codegen/fused_block.py) is these actions, compressed into loops.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import TinycError
from .buffers import align

WINDOWED_OPS = ("Conv2D", "MaxPool2D", "AvgPool2D")
VIEW_ATTR = "column_views"  # a strip's layer (column_strips.py): per input, the first column of the row it reads


@dataclass(frozen=True)
class Window:
    """How the output rows of a layer read one input: row r reads rows first(r) .. first(r) + span - 1."""
    kernel: int
    stride: int
    dilation: int
    pad_top: int
    pad_bottom: int
    running: bool = False     # a pooling window over every row: accumulated row by row as rows arrive

    @property
    def span(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    def first(self, r: int) -> int:
        return r * self.stride - self.pad_top

    def end(self, r: int) -> int:
        return self.first(r) + self.span

    def taps(self, r: int) -> range:
        return range(self.first(r), self.end(r), self.dilation)


ONE_ROW = Window(1, 1, 1, 0, 0)


def _refuse(node, why: str):
    raise TinycError(f"fused block: layer '{node.name}' ({node.op}) {why}; end the block before it")


def windows(g, node) -> list:
    """The Window of each runtime input of a layer of a block (None for a constant input); TinycError for a
    layer that cannot run row by row."""
    from ..ops import REGISTRY        # (the ops import the schedule package: imported when used)
    y = g.tensors[node.outputs[0]]
    if len(node.outputs) != 1 or len(y.shape) != 4 or y.shape[0] != 1:
        _refuse(node, f"has output shape {tuple(y.shape)}: only one batch-1 NHWC output can be streamed")
    found = []
    for i, name in enumerate(node.inputs):
        t = g.tensors[name]
        if t.is_const:
            if node.op not in WINDOWED_OPS and len(t.shape) >= 3 and t.shape[-3] != 1:
                _refuse(node, f"reads constant '{name}' of shape {tuple(t.shape)} with a height; only constants "
                        "broadcast over the rows can be streamed")
            found.append(None)
            continue
        if len(t.shape) != 4 or t.shape[0] != 1:
            _refuse(node, f"reads '{name}' of shape {tuple(t.shape)}: only batch-1 NHWC tensors are streamed")
        if node.op in WINDOWED_OPS:
            if i != 0:
                _refuse(node, "has a second runtime input")
            a = node.attrs
            pt, _, pb, _ = a["pads"]
            if node.op == "Conv2D":
                if node.attrs.get("hybrid"):
                    _refuse(node, "is a hybrid layer")
                k, s, d = g.tensors[node.inputs[1]].shape[1], a["strides"][0], a["dilations"][0]
            else:
                if pt or pb:
                    _refuse(node, "pads rows (a padded pooling window excludes them, they cannot be stored)")
                k, s, d = a["kernel"][0], a["strides"][0], a.get("dilations", (1, 1))[0]
            found.append(Window(int(k), int(s), int(d), int(pt), int(pb), running=_running_pool(g, node)))
        elif REGISTRY[node.op].memory == "elementwise":
            if reduced_axes(node) & {0, 1}:
                _refuse(node, f"normalizes over the rows (axes {sorted(reduced_axes(node))})")
            if tuple(t.shape) != tuple(y.shape) and not _view(node, i, t.shape, y.shape):
                _refuse(node, f"broadcasts '{name}' {tuple(t.shape)} to {tuple(y.shape)}")
            found.append(ONE_ROW)
        else:
            _refuse(node, "is not a row-streamed layer (convolution, pooling, elementwise)")
    return found


def reduced_axes(node) -> set:
    """The axes an elementwise-memory layer reduces over (a normalization's): its output at one index reads the
    input along them, so a block cannot split them."""
    if node.op == "Normalize":
        return set(node.attrs["axes"])
    if node.op == "LpNormalize":
        return {node.attrs["axis"]}
    return set()


def _view(node, i: int, x: tuple, y: tuple) -> bool:
    """Does input i of a strip's layer read a view of its rows as wide as the output (column_strips.py)?"""
    views = node.attrs.get(VIEW_ATTR)
    return bool(views) and views[i] is not None and (x[:2], x[3:]) == (y[:2], y[3:]) and x[2] >= y[2] + views[i]


def _running_pool(g, node) -> bool:
    """An integer pooling layer whose window covers every input row (one output row, no padding, no dilation,
    e.g. a global average pool): it runs on each row as it arrives, into one accumulator per output value,
    so its input needs one row, not all (codegen/fused_block.py, templates/int8/pool_rows.c.j2)."""
    if node.op not in ("MaxPool2D", "AvgPool2D"):
        return False
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    a = node.attrs
    return (y.shape[1] == 1 and a["kernel"][0] == x.shape[1] and not any(a["pads"]) and x.quant is not None
            and x.dtype in ("int8", "int16") and tuple(a.get("dilations", (1, 1))) == (1, 1)
            and not a.get("count_include_pad", False))


def running_layers(sched) -> list:
    """Indexes of the block's layers that accumulate their input row by row (`Window.running`)."""
    return sorted({li for (li, pos), w in sched.reads.items() if w.running})


@dataclass
class LineBuffer:
    """A tensor of the block held as rows (external input or intermediate)."""
    tensor: str
    row_bytes: int
    capacity: int = 0          # rows
    pad_value: int = 0         # the byte every padding row is filled with
    external: bool = False     # loaded from outside the block (the arena or the streamed input)
    first_row: int = 0         # virtual rows: pad rows above the tensor are negative, below it >= height
    end_row: int = 0

    @property
    def nbytes(self) -> int:
        return align(self.capacity * self.row_bytes)


@dataclass(frozen=True)
class Action:
    """One step of the block. kind: "load" (row `row` of an external input into `slot`), "fill" (a padding row),
    "move" (`rows` rows from slot `src` down to slot `slot`), "compute" (layer `layer` computes output row `row`:
    its inputs' windows start at `in_slots`, one per runtime input; the output row goes to `slot`, or to the
    block output's row `row` when `tensor` is the block output; for a running pool: from its accumulators),
    "clear" (a running pool's accumulators start), "accumulate" (it takes input row `row` from `in_slots`)."""
    kind: str
    tensor: str
    row: int = 0
    slot: int = 0
    src: int = 0
    rows: int = 0
    layer: int = -1
    in_slots: tuple = ()


@dataclass
class RowSchedule:
    layers: list               # the block's nodes, in execution order
    output: str
    inputs: list               # external runtime inputs
    buffers: dict              # tensor -> LineBuffer (every tensor but the output)
    actions: list = field(default_factory=list)
    reads: dict = field(default_factory=dict)     # (layer index, input position) -> Window

    offsets: dict = field(default_factory=dict)   # tensor -> byte offset of its line buffer (pack_buffers)

    @property
    def line_bytes(self) -> int:
        return max([0] + [self.offsets[t] + b.nbytes for t, b in self.buffers.items()])

    def output_rows_min_read(self, name: str) -> np.ndarray:
        """Per output row q: the lowest row of external input `name` still read when row q is written (the
        rows loaded after it; its height when none): the block's overlap contract (schedule/overlap.py)."""
        loads, writes = [], []
        for i, a in enumerate(self.actions):
            if a.kind == "load" and a.tensor == name:
                loads.append((i, a.row))
            elif a.kind == "compute" and a.tensor == self.output:
                writes.append(i)
        height = self.buffers[name].end_row
        out = []
        for w in writes:        # (a row loaded before row q is written is in its line buffer: dead in the arena)
            later = [r for i, r in loads if i > w]
            out.append(min(later) if later else height)
        return np.minimum.accumulate(np.array(out[::-1], dtype=np.int64))[::-1]


def _pad_value(g, name) -> int:
    """A padding row of an int8 tensor holds its zero point (TFLite pads convolutions with it); float 0.0 and
    int 0 are all-zero bytes."""
    t = g.tensors[name]
    if t.quant is None:
        return 0
    zp = int(np.asarray(t.quant.zero_point).reshape(-1)[0])
    return zp & 0xFF if t.dtype == "int8" else zp


def block_nodes(g, names) -> tuple[list, list, str]:
    """(nodes in graph order, external runtime inputs, output) of the block of `names`; TinycError when they are
    not a block: intermediates read outside it, several outputs, a model output inside."""
    wanted = set(names)
    nodes = [n for n in g.nodes if n.name in wanted]
    if len(nodes) != len(wanted):
        missing = sorted(wanted - {n.name for n in nodes})
        raise TinycError(f"fused block: no layer named {missing[0]!r}; name layers as `tinyc report` shows them")
    produced = {o for n in nodes for o in n.outputs}
    live_out = g.live_out()
    outside = [t for t in produced if t in live_out or any(c.name not in wanted for c in g.consumers(t))]
    if len(outside) != 1:
        raise TinycError(f"fused block: {len(outside)} of its tensors are read after it ({sorted(outside)}); a "
                         "block has one output")
    output = outside[0]
    if output != nodes[-1].outputs[0]:
        raise TinycError(f"fused block: its output '{output}' is not its last layer's; a block ends with its output")
    inputs = []
    for n in nodes:
        for t in n.inputs:
            if t not in produced and not g.tensors[t].is_const and t not in inputs:
                inputs.append(t)
    if any(t in g.state for t in inputs) or output in g.state.values():
        raise TinycError("fused block: streaming state tensors are not streamed by rows; end the block before them")
    return nodes, inputs, output


def row_schedule(g, names, slack_rows: int = 0) -> RowSchedule:
    """The actions of the block of layers `names` (module docstring). `slack_rows`: extra rows per line buffer,
    so rows move down once every slack_rows + 1 rows instead of every row (speed for SRAM)."""
    nodes, inputs, output = block_nodes(g, names)
    index = {id(n): i for i, n in enumerate(nodes)}
    producer = {n.outputs[0]: n for n in nodes}
    wins = {id(n): windows(g, n) for n in nodes}     # each layer's Window per input (None: a constant)
    consumers = {}          # tensor -> [(layer, Window)]
    reads = {}
    for li, n in enumerate(nodes):
        for pos, (name, w) in enumerate(zip(n.inputs, wins[id(n)])):
            if w is not None:
                consumers.setdefault(name, []).append((n, w))
                reads[(li, pos)] = w
    for n in nodes:
        y = g.tensors[n.outputs[0]].shape
        for name, w in zip(n.inputs, wins[id(n)]):
            if w is not None and w.end(y[1] - 1) > g.tensors[name].shape[1] + w.pad_bottom:
                _refuse(n, "reads rows below its padded input")     # (not for a well-formed layer)
    buffers = {}
    for name, readers in consumers.items():
        t = g.tensors[name]
        buffers[name] = LineBuffer(name, t.shape[2] * t.shape[3] * (t.nbytes // t.size),
                                   pad_value=_pad_value(g, name), external=name in inputs,
                                   first_row=min(-w.pad_top for _, w in readers),
                                   end_row=t.shape[1] + max(w.pad_bottom for _, w in readers))
    minimal = _simulate(g, wins, index, producer, consumers, buffers, output, None)
    for b in buffers.values():
        b.capacity = minimal[b.tensor] + (slack_rows if minimal[b.tensor] else 0)
    sched = RowSchedule(nodes, output, inputs, buffers, reads=reads)
    sched.actions = _simulate(g, wins, index, producer, consumers, buffers, output, sched)
    sched.offsets = pack_buffers(sched, busy_intervals(sched))
    return sched


def busy_intervals(sched) -> dict:
    """Per line buffer, the action intervals [write, last read] of each of its rows: when it holds a live row."""
    written, intervals = {}, {t: [] for t in sched.buffers}
    for i, a in enumerate(sched.actions):
        if a.kind in ("compute", "accumulate"):
            n = sched.layers[a.layer]
            ins = [t for t in n.inputs if t in sched.buffers]
            for pos, t in enumerate(ins):
                w = sched.reads[(a.layer, n.inputs.index(t))]
                rows = [a.row] if a.kind == "accumulate" else range(w.first(a.row), w.end(a.row))
                if a.kind == "compute" and w.running:
                    continue
                for r in rows:
                    if (t, r) in written:
                        intervals[t].append((written[(t, r)], i))
        if a.kind in ("load", "fill") or (a.kind == "compute" and a.tensor in sched.buffers):
            written[(a.tensor, a.row)] = i
    return {t: _merged(v) for t, v in intervals.items()}


def _merged(intervals: list) -> list:
    out = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _overlap(a: list, b: list) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


def pack_buffers(sched, busy: dict) -> dict:
    """Byte offsets of the line buffers: two buffers never holding live rows at the same time (e.g. the one-row
    buffers between a depthwise layer and the pointwise one after it, in successive blocks) share bytes. Largest
    first, each at the lowest offset clear of the buffers it overlaps in time."""
    offsets = {}
    for t in sorted(sched.buffers, key=lambda t: (-sched.buffers[t].nbytes, t)):
        size = sched.buffers[t].nbytes
        taken = sorted((offsets[u], offsets[u] + sched.buffers[u].nbytes) for u in offsets
                       if _overlap(busy[t], busy[u]))
        at = 0
        for lo, hi in taken:
            if at + size <= lo:
                break
            at = max(at, hi)
        offsets[t] = at
    return offsets


def _simulate(g, wins, index, producer, consumers, buffers, output, sched):
    """Without `sched`: the minimal capacity of each line buffer (rows moved down whenever one dies). With it:
    the actions for the capacities set in `buffers`."""
    hi = {name: b.first_row for name, b in buffers.items()}
    hi[output] = 0
    lo = dict(hi)
    base = dict(hi)
    peak = {name: 0 for name in buffers}
    actions = []
    taken = {}          # running pool -> rows accumulated so far

    def next_first(name):
        firsts = [taken.get(n.name, 0) if w.running else w.first(hi[n.outputs[0]]) for n, w in consumers[name]
                  if hi[n.outputs[0]] < g.tensors[n.outputs[0]].shape[1]]
        return min(firsts) if firsts else buffers[name].end_row

    known = {}

    def needed(name, r):
        """Whether a row computed is read: by the block's output or a needed row (not only by rows skipped)."""
        if (name, r) not in known:
            known[(name, r)] = any(r in w.taps(q) and (n.outputs[0] == output or needed(n.outputs[0], q))
                                   for n, w in consumers[name] for q in _rows_reading(w, r)
                                   if q < g.tensors[n.outputs[0]].shape[1])
        return known[(name, r)]

    def make_room(name, r):
        b = buffers[name]
        lo[name] = max(lo[name], min(next_first(name), r))
        if sched is None:
            if lo[name] > base[name]:
                base[name] = lo[name]
            peak[name] = max(peak[name], r + 1 - base[name])
            return None
        if r - base[name] >= b.capacity:
            keep = r - lo[name]
            if keep:
                actions.append(Action("move", name, slot=0, src=lo[name] - base[name], rows=keep))
            base[name] = lo[name]
            if r - base[name] >= b.capacity:
                raise TinycError(f"internal: line buffer of '{name}' holds {b.capacity} rows, row {r} needs more")
        return r - base[name]

    def ensure(name, end):
        while hi[name] < end:
            r = hi[name]
            b = buffers.get(name)
            if b is not None and not (0 <= r < g.tensors[name].shape[1]):
                slot = make_room(name, r)
                actions.append(Action("fill", name, row=r, slot=slot or 0))
            elif b is not None and b.external:
                slot = make_room(name, r)
                actions.append(Action("load", name, row=r, slot=slot or 0))
            elif b is not None and not needed(name, r):
                slot = make_room(name, r)       # a row no window reads (e.g. under a 1x1 stride 2): skipped
            elif any(w is not None and w.running for w in wins[id(producer[name])]):
                n = producer[name]
                (name_in, w), = [(t, w) for t, w in zip(n.inputs, wins[id(n)]) if w is not None]
                actions.append(Action("clear", name, layer=index[id(n)]))
                for q in range(w.span):
                    ensure(name_in, q + 1)
                    actions.append(Action("accumulate", name, row=q, layer=index[id(n)],
                                          in_slots=(q - base[name_in],)))
                    taken[n.name] = q + 1
                slot = make_room(name, r) if b is not None else r
                actions.append(Action("compute", name, row=r, slot=slot or 0, layer=index[id(n)]))
            else:
                n = producer[name]
                ins = []
                for name_in, w in zip(n.inputs, wins[id(n)]):
                    if w is not None:
                        ensure(name_in, w.end(r))
                        ins.append((name_in, w))
                slot = make_room(name, r) if b is not None else r
                in_slots = tuple(w.first(r) - base[t] for t, w in ins)
                actions.append(Action("compute", name, row=r, slot=slot or 0, layer=index[id(n)],
                                      in_slots=in_slots))
            hi[name] = r + 1

    ensure(output, g.tensors[output].shape[1])
    if sched is None:
        return peak
    return actions


def _rows_reading(w: Window, r: int) -> range:
    """Output rows whose window may contain row r."""
    lo = max(0, (r + w.pad_top - w.span + 1 + w.stride - 1) // w.stride) if w.stride else 0
    hi = (r + w.pad_top) // w.stride + 1
    return range(lo, max(lo, hi))
