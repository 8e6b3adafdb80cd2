"""The streamed model input (issue 21, `--stream-input`): the first fused block pulls the rows of the model input
from the user's callback `<name>_input_rows(row, count, dst)` as it needs them, so the whole input (a camera
frame) is never in SRAM and the arena does not hold it.

`streamed_blocks(g)` lists the candidates: the runs of layers from the start of the graph that form one fused
block (schedule/row_schedule.py) reading the model input, which no other layer reads (`streamed_block(g)`: the
longest). `stream_input(g, plan)` fuses the one with the smallest arena, with the block's `stream` attribute set:
the planner keeps the input out of the arena (`streamed_inputs`), and codegen calls the callback for the
block's "load" actions of it. (The longest is seldom the smallest: every layer adds its line buffers.)

The rows come in the order the row schedule loads them: increasing, each once, rows 0 .. `requested_rows` - 1
(the whole height unless the first layers never read the bottom rows, e.g. a valid convolution whose stride
skips them). With `passes` >= 2 (`--stream-passes`: the application can serve the frame several times, e.g. from
external RAM or flash) the candidates also run in patch mode (schedule/column_strips.py), in 2 .. `passes`
column strips: each strip asks for the rows again, one pass of 0 .. `requested_rows` - 1 per strip, and holds
line buffers a strip wide only.
"""
from __future__ import annotations

import numbers

from ..errors import TinycError
from ..ir import Graph
from .column_strips import MAX_STRIPS, block_strips
from .fuse_block import fuse_block
from .row_schedule import block_nodes, row_schedule, windows

FLAG = "--stream-input"
PASSES_FLAG = "--stream-passes"


def _input_name(g: Graph, name: str) -> str:
    return g.tensors[name].source_name or name


def _streamable_input(g: Graph) -> str:
    """The model input that can stream, or a one-line TinycError saying why none can."""
    if len(g.inputs) != 1:
        raise TinycError(f"{FLAG}: the model has {len(g.inputs)} inputs; only a model with one image input can "
                         f"stream it, compile without {FLAG}")
    x = g.inputs[0]
    t = g.tensors[x]
    if len(t.shape) != 4 or t.shape[0] != 1 or t.size == 0:
        raise TinycError(f"{FLAG}: the model input '{_input_name(g, x)}' has shape {tuple(t.shape)}; only a "
                         f"batch-1 NHWC image (1, height, width, channels) streams by rows, compile without {FLAG}")
    if x in g.state or x in g.outputs:
        raise TinycError(f"{FLAG}: the model input '{_input_name(g, x)}' is also a state or an output; compile "
                         f"without {FLAG}")
    return x


def _cannot_stream(g: Graph, x: str, node, why: str) -> TinycError:
    hint = " (an ONNX image model: compile with --io-layout nhwc)" if node.op == "Transpose" else ""
    return TinycError(f"{FLAG}: the model input '{_input_name(g, x)}' is read by layer '{node.name}' ({node.op}), "
                      f"which cannot run row by row{hint}: {why}; compile without {FLAG}")


def streamed_blocks(g: Graph) -> list[list[str]]:
    """The names of the layers of every block that can stream the model input, shortest first: the prefixes of
    the graph's order that are one fused block whose only runtime input is the model input and that hold every
    layer reading it. TinycError (one line) for a model with several inputs, an input that is not a batch-1 NHWC
    image, or an input read by a layer that cannot run row by row."""
    x = _streamable_input(g)
    readers = [n for n in g.nodes if x in n.inputs]
    if not readers:
        raise TinycError(f"{FLAG}: no layer reads the model input '{_input_name(g, x)}'; compile without {FLAG}")
    for n in readers:
        try:
            windows(g, n)
        except TinycError as e:
            raise _cannot_stream(g, x, n, str(e).removeprefix("fused block: ").split("; end the block")[0])
    found, stop = [], None
    for k, node in enumerate(g.nodes):
        try:
            windows(g, node)
        except TinycError:
            stop = node
            break
        names = [n.name for n in g.nodes[:k + 1]]
        try:
            _, inputs, _ = block_nodes(g, names)
        except TinycError:
            continue            # (e.g. a residual branch still open: a longer prefix may close it)
        if inputs == [x] and all(n.name in names for n in readers):
            found.append(names)
    if not found:
        where = f" before layer '{stop.name}' ({stop.op}), which cannot," if stop is not None else ""
        raise _cannot_stream(g, x, readers[0], f"the layers reading it join into no block with one output{where}")
    return found


def streamed_block(g: Graph) -> list[str]:
    """The names of the layers of the longest block that can stream the model input (`streamed_blocks`)."""
    return streamed_blocks(g)[-1]


def check_passes(passes) -> int:
    """`passes` (--stream-passes) as an int >= 1, or a one-line TinycError."""
    if isinstance(passes, bool) or not isinstance(passes, numbers.Integral) or passes < 1:
        raise TinycError(f"{PASSES_FLAG} {passes}: the number of times the application can serve the input frame "
                         f"per inference must be a whole number >= 1 (1: each row once)")
    return int(passes)


def _candidates(g: Graph, passes: int) -> list[tuple[int, int, int, list]]:
    """(lower bound of the arena, strips, -layers, names) of every streamed block in row mode and in 2 .. `passes`
    strips (those patch mode refuses left out): its line buffers (the widest strip's), the whole input row a
    block in strips holds, and its output are live together."""
    x = g.inputs[0]
    row_bytes = g.tensors[x].nbytes // g.tensors[x].shape[1]
    found = []
    for names in streamed_blocks(g):
        output = g.tensors[block_nodes(g, names)[2]].nbytes
        found.append((row_schedule(g, names).line_bytes + output, 1, -len(names), names))
        for count in range(2, min(passes, MAX_STRIPS) + 1):
            try:
                strips = block_strips(g, names, count)
            except TinycError:      # (too few columns, a running pool: this block streams in row mode only)
                continue
            found.append((max(s.sched.line_bytes for s in strips) + row_bytes + output, count, -len(names), names))
    return found


def stream_input(g: Graph, plan, passes: int = 1) -> tuple[Graph, object]:
    """`g` with its input streamed, and its plan: of the blocks that can stream it (`streamed_blocks`), in row
    mode or, with `passes` >= 2, in 2 .. `passes` column strips (one pass over the input each), the one whose
    graph `plan(graph)` (a MemoryPlan) gives the smallest arena (of equal arenas, the fewest strips), fused with
    its rows pulled from the user's callback (whether strips are worth their recompute is judged on the whole plan,
    compiler._streamed). The candidates are planned in the order of a lower bound of the
    arena (their line buffers and output are live together; the fewer strips, then the longer block first of
    equal bounds), until that bound exceeds the smallest arena found. Never worse: TinycError (one line) when
    every streamed arena is larger than `g`'s with its input in the arena (a small input, line buffers and
    row-kernel scratch that cost more than it)."""
    passes = check_passes(passes)
    best = None
    for bound, strips, _, names in sorted(_candidates(g, passes)):
        if best is not None and bound > best[1].arena_bytes:
            break
        if best is not None and bound == best[1].arena_bytes and strips >= best[2]:
            continue            # (at best a tie, with no fewer strips)
        h = fuse_block(g, names, stream=True, strips=strips)
        p = plan(h)
        if best is None or (p.arena_bytes, strips) < (best[1].arena_bytes, best[2]):
            best = (h, p, strips)
    base = plan(g)
    if best[1].arena_bytes > base.arena_bytes:
        peak = best[1].graph.nodes[best[1].peak_step]
        raise TinycError(f"{FLAG}: streaming the model input '{_input_name(g, g.inputs[0])}' saves no memory: the "
                         f"arena would be {best[1].arena_bytes:,} B (its peak at layer '{peak.name}' ({peak.op})), "
                         f"{base.arena_bytes:,} B with the input in it; compile without {FLAG}")
    return best[:2]


def streamed_inputs(g: Graph) -> set:
    """The model inputs a fused block streams (not in the arena): the first input of a FusedBlock with `stream`."""
    return {n.inputs[0] for n in g.nodes if n.op == "FusedBlock" and n.attrs.get("stream")}


def input_row_loads(schedule, name: str) -> list[int]:
    """The rows of external input `name` a RowSchedule loads, in order."""
    return [a.row for a in schedule.actions if a.kind == "load" and a.tensor == name]


def requested_rows(node) -> int:
    """How many rows of its streamed input a FusedBlock asks the callback for in each pass: rows 0 .. this - 1,
    each once (a pass per column strip in patch mode, schedule/column_strips.py; one in row mode)."""
    from ..ops.fused_block import strips_of     # (the ops import the schedule package: imported when used)
    counts = set()
    for strip in strips_of(node):
        rows = input_row_loads(strip.sched, node.inputs[0])
        if rows != list(range(len(rows))):
            raise TinycError(f"internal: fused block '{node.name}' loads its streamed input out of order")
        counts.add(len(rows))
    if len(counts) != 1:        # (the header promises the same rows in every pass)
        raise TinycError(f"internal: the strips of fused block '{node.name}' load {sorted(counts)} input rows")
    return counts.pop()


def stream_passes(node) -> int:
    """How many times a FusedBlock asks for its streamed input's rows per inference: once per column strip."""
    from ..ops.fused_block import strips_of
    return len(strips_of(node))
