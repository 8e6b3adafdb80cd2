"""C for a FusedBlock (tinyc/ops/fused_block.py): one kernel per layer specialized for a window of rows, and the
block function that runs the row schedule (schedule/row_schedule.py), its repeating steps compressed into loops.

**Kernels.** Layer L of a block computes one output row at a time from a window of its input's rows with no
vertical padding (padding rows are stored rows): the layer's own kernel rule (fast, else reference) applied to a
copy of the layer whose input is `span` rows high, output one row high, top and bottom pads 0 (`row_variant`). So
the row kernels are the whole-layer kernels, byte for byte the same arithmetic per output pixel, and the
reference twin of a row kernel is the reference rule on the same copy.

**Patch mode** (schedule/column_strips.py): the block function runs each column strip's schedule in turn, each
strip's layers being copies on the strip's columns (their row kernels made the same way; one identical to an earlier
strip's is that function); loads and output rows at the strip's columns, views at their column offsets.

**Scratch** (the block node's arena scratch, `s`): the line buffers (packed by liveness, row_schedule.pack_buffers;
in patch mode the widest strip's, which every strip reuses), the running pools' accumulators, a streamed input's
whole row (patch mode), then the largest fast kernel scratch of one layer (its layers run one at a time).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..ir import Graph
from ..schedule.buffers import align
from ..schedule.row_schedule import VIEW_ATTR
from ..names import comment_text
from .literals import c_type

SCRATCH = "kernel_scratch"       # int8_fast.SCRATCH (imported there from here would be a cycle)
MAX_PERIOD = 256                 # longest run of steps a loop body may repeat


@dataclass
class RowVariant:
    layer: int              # index in the block
    graph: Graph            # the layer on a window of rows: input(s) `span` rows, output one row
    node: object


def row_variant(sub: Graph, node, reads: list, scratch_level: str | None = None) -> tuple[Graph, object]:
    """The layer `node` of block graph `sub` computing one output row from windows of its inputs' rows."""
    from ..schedule.column_strips import view_width
    g = Graph(f"{node.name} (one row)", sub.source_format)
    n = copy.copy(node)
    n.attrs = dict(node.attrs)
    n.attrs.pop(VIEW_ATTR, None)
    for i, (name, w) in enumerate(zip(node.inputs, reads)):
        t = sub.tensors[name]
        if w is None:
            g.tensors[name] = t
            continue
        v = copy.copy(t)
        width = view_width(sub, node, i)
        v.shape = (1, w.span, t.shape[2] if width is None else width, t.shape[3])
        g.tensors[name] = v
    y = copy.copy(sub.tensors[node.outputs[0]])
    y.shape = (1, 1) + tuple(y.shape[2:])
    g.tensors[y.name] = y
    if "pads" in n.attrs:
        t, left, b, r = n.attrs["pads"]
        n.attrs["pads"] = (0, left, 0, r) if isinstance(n.attrs["pads"], tuple) else [0, left, 0, r]
    if scratch_level is not None:
        n.attrs[SCRATCH] = scratch_level
    g.nodes = [n]
    g.inputs = [i for i in node.inputs if not g.tensors[i].is_const]
    g.outputs = list(node.outputs)
    return g, n


def layer_variants(node, strip=None) -> list[RowVariant]:
    """The row kernel of each layer of the block (of one of its column strips: `strip`; default the first)."""
    from ..ops.fused_block import strips_of
    strip = strip or strips_of(node)[0]
    sched, sub = strip.sched, strip.graph
    level = node.attrs.get(SCRATCH)
    out = []
    for li, n in enumerate(sched.layers):
        reads = [sched.reads.get((li, pos)) for pos in range(len(n.inputs))]
        g, v = row_variant(sub, n, reads, level)
        out.append(RowVariant(li, g, v))
    return out


def line_bytes(node) -> int:
    """Bytes of the line buffers: the widest strip's (the strips run one after another in the same bytes)."""
    from ..ops.fused_block import strips_of
    return max(s.sched.line_bytes for s in strips_of(node))


def accumulator_offsets(node, strip=None) -> dict:
    """Byte offset in the block's scratch of each running pool's int32 accumulators (after the line buffers),
    by layer index, in `strip` (default the first: in row mode the only one); the key None holds the end, the
    largest of the strips' (they run one after another in the same bytes; in patch mode a pool padded at an edge
    of the tensor runs over every row in the strips away from it)."""
    from ..ops.fused_block import strips_of
    from ..schedule.row_schedule import running_layers
    strips = strips_of(node)
    found = []
    for s in strips:
        at, out = align(line_bytes(node)), {}
        for li in running_layers(s.sched):
            out[li] = at
            y = s.graph.tensors[s.sched.layers[li].outputs[0]]
            at += 4 * y.shape[2] * y.shape[3]
        out[None] = at
        found.append(out)
    chosen = dict(found[strips.index(strip) if strip is not None else 0])
    chosen[None] = max(f[None] for f in found)
    return chosen


def input_row_bytes(node) -> int:
    """A block in strips streaming its input holds one whole input row after the accumulators: the callback
    gives whole rows, each strip copies its columns out of it (0 bytes otherwise)."""
    from ..ops.fused_block import strips_of
    if len(strips_of(node)) == 1 or not node.attrs.get("stream"):
        return 0
    x = node.attrs["graph"].tensors[node.inputs[0]]
    return align(x.nbytes // x.shape[1])


def own_work_offset(node) -> int:
    """Bytes of the line buffers, accumulators and a streamed input row: the start of the kernel scratch in the
    block's scratch."""
    return accumulator_offsets(node)[None] + input_row_bytes(node)


def fast_work_bytes(node) -> int:
    """The largest fast-kernel scratch of one of the block's layers (they run one at a time), in any strip."""
    from ..ops.fused_block import strips_of
    return max([0] + [fast_work_bytes_of(v) for s in strips_of(node) for v in layer_variants(node, s)])


class RowPlan:
    """What a kernel rule reads of the plan (KernelContext.plan): the graph, and offsets whose alignment holds for
    every call (0 when every window starts 4-byte aligned, else 1)."""

    def __init__(self, graph, aligned: dict):
        self.graph = graph
        self._aligned = aligned

    def offset_of(self, name):
        return 0 if self._aligned.get(name, True) else 1


def render_block(node, prefix: str, fn: str, render_kernel, render_pool, work_bytes: int) -> tuple[list, str, int]:
    """(functions, body, MACs) of the block layer `fn(x0.., y, s)`: `render_kernel(graph, node, plan, has_work)`
    gives a row kernel's (body, kernel name, params, MACs per row), `render_pool(graph, node, part)` a running
    pool's accumulate / finalize body; `work_bytes`: the block's scratch in the plan. In patch mode the strips'
    schedules follow one another; a strip's row kernel identical to an earlier one's is that function."""
    from ..ops.fused_block import strips_of
    strips = strips_of(node)
    streamed = node.inputs[0] if node.attrs.get("stream") else None     # its rows: <prefix>_input_rows
    xs = {name: f"x{j}" for j, name in enumerate(t for t in strips[0].sched.inputs if t != streamed)}
    functions, lines, macs, loaded, known = [], [], 0, set(), dict(functions={}, layers=set())
    if len(strips) > 1:
        lines.append(f"  /* {len(strips[0].sched.layers)} layers in {len(strips)} column strips, each row by row; "
                     f"line buffers {line_bytes(node)} bytes */")
    for j, strip in enumerate(strips):
        fs, body, m = _render_strip(node, strip, j if len(strips) > 1 else None, prefix, fn, render_kernel,
                                    render_pool, work_bytes, xs, streamed, known)
        functions += fs
        lines += body
        macs += m
        loaded |= {a.tensor for a in strip.sched.actions if a.kind == "load"}
    head = [f"  (void){x};     /* no row of '{comment_text(name)}' is read */" for name, x in xs.items()
            if name not in loaded]
    lines = lines[:1] + head + lines[1:]
    return functions, "\n".join(lines), macs


def _render_strip(node, strip, j, prefix, fn, render_kernel, render_pool, work_bytes, xs, streamed, known):
    """(new functions, lines, MACs) of one strip of the block (`j`: its number in patch mode, None in row mode);
    `known`: the earlier strips' row kernels ({(params, body): function}) and the layers they have, shared."""
    sched, sub, whole = strip.sched, strip.graph, node.attrs["graph"]
    offsets = sched.offsets
    line = own_work_offset(node)
    staging = accumulator_offsets(node)[None]       # (a streamed input's whole row, in patch mode)

    def row_bytes_of(name):
        t = whole.tensors[name]
        return t.shape[2] * t.shape[3] * (t.nbytes // t.size), t.shape[3] * (t.nbytes // t.size)

    def place(name, slot, row):
        """(base pointer, byte offset) of row `row` / slot `slot` of tensor `name`."""
        if name == sched.output:
            full, pixel = row_bytes_of(name)
            return "y", row * full + strip.offset(name) * pixel
        b = sched.buffers[name]
        return "s", offsets[name] + slot * b.row_bytes

    def view(n, pos):
        """Byte offset of the view layer `n` reads of its input `pos` in the input's rows."""
        views = n.attrs.get(VIEW_ATTR)
        if not views or views[pos] is None:
            return 0
        t = sub.tensors[n.inputs[pos]]
        return views[pos] * t.shape[3] * (t.nbytes // t.size)

    def in_places(n, a):
        ins = [(pos, t) for pos, t in enumerate(n.inputs) if not sub.tensors[t].is_const]
        out = []
        for (pos, t), slot in zip(ins, a.in_slots):
            base, at = place(t, slot, 0)
            out.append((base, at + view(n, pos)))
        return out

    computes = {}
    rows_computed = [0] * len(sched.layers)     # (rows no window reads are not computed)
    for a in sched.actions:
        if a.kind == "compute":
            rows_computed[a.layer] += 1
            n = sched.layers[a.layer]
            ins = [t for t in n.inputs if not sub.tensors[t].is_const]
            for t, (_, at) in zip(ins, in_places(n, a)):
                computes.setdefault((a.layer, t), set()).add(at % 4)
    from ..schedule.row_schedule import running_layers
    running = running_layers(sched)
    accs = accumulator_offsets(node, strip)
    functions, kernels, macs = [], {}, 0
    variants = layer_variants(node, strip)
    rendered = {}

    def render(v):
        n = sched.layers[v.layer]
        aligned = {t: computes.get((v.layer, t), {0}) == {0} for t in n.inputs}
        aligned[n.outputs[0]] = True
        need = fast_work_bytes_of(v)
        work = line if need and line + need <= work_bytes else None
        rendered[v.layer] = render_kernel(v.graph, v.node, RowPlan(v.graph, aligned), work is not None) + (work,)

    pairs = channel_major_pairs(sched, sub)
    for v in variants:
        if v.layer not in running:
            _mark_channel_major(variants, pairs, v.layer, True)
            render(v)
    for p, c in pairs.items():       # both fast kernels took the channel-major rows, or neither does
        if not (rendered[p][1].startswith("int8_fast/gemm")
                and rendered[c][1] in ("int8_fast/depthwise/planar", "int8_fast/depthwise_split/planar+raster")):
            _mark_channel_major(variants, {p: c}, p, False)
            render(variants[p])
            render(variants[c])
    for v in variants:
        n = sched.layers[v.layer]
        if v.layer in running:
            base = f"{fn}_r{v.layer}" if not j else f"{fn}_s{j}_r{v.layer}"
            functions += running_pool_functions(v, base, render_pool)
            x = sub.tensors[n.inputs[0]]
            init = (-128 if x.dtype == "int8" else -32768) if n.op == "MaxPool2D" else 0
            kernels[v.layer] = (base, init, [x], sub.tensors[n.outputs[0]], None)
            macs += x.size
            continue
        body, kernel, params, row_macs, work = rendered[v.layer]
        macs += row_macs * rows_computed[v.layer]
        same = known["functions"].get((tuple(params), body))
        if same is not None and rows_computed[v.layer]:
            same["macs"] += row_macs * rows_computed[v.layer]
            name = same["fn"]
        else:
            name = f"{fn}_r{v.layer}" if not j else f"{fn}_s{j}_r{v.layer}"
            whole_macs = 0 if v.layer in known["layers"] else layer_figure_macs(whole, n, row_macs, sub)
            f = dict(fn=name, params=params, body=body, comment=f"row kernel of layer '{comment_text(n.name)}'"
                     + (f", column strip {j}" if j is not None else ""),
                     kernel=kernel, layer=v.layer, macs=row_macs * rows_computed[v.layer], layer_macs=whole_macs)
            if rows_computed[v.layer]:
                functions.append(f)
                known["functions"][(tuple(params), body)] = f
                known["layers"].add(v.layer)
        casts = [p.rsplit("*", 1)[0].strip() + " *" for p in params]
        kernels[v.layer] = (name, work, [sub.tensors[t] for t in n.inputs if not sub.tensors[t].is_const],
                            sub.tensors[n.outputs[0]], casts)
    # A layer none of whose rows is read (a dilated window over a short tensor may read only padding rows) is never
    # called: no function for it.
    functions = [f for f in functions if f.get("layer") is None or rows_computed[f["layer"]]]
    steps = []
    for a in sched.actions:
        if a.kind == "clear":
            y = sub.tensors[sched.layers[a.layer].outputs[0]]
            steps.append((("clear", y.shape[2] * y.shape[3], kernels[a.layer][1]), (accs[a.layer],), None))
        elif a.kind == "accumulate":
            name, _, ins, _, _ = kernels[a.layer]
            steps.append((("accumulate", name, c_type(ins[0].dtype)),
                          (place(ins[0].name, a.in_slots[0], 0)[1], accs[a.layer]), None))
        elif a.kind == "compute" and a.layer in running:
            name, _, _, out, _ = kernels[a.layer]
            base, offset = place(out.name, a.slot, a.row)
            steps.append((("finalize", name, base, c_type(out.dtype)), (accs[a.layer], offset), None))
        elif a.kind == "compute":
            name, work, ins, out, casts = kernels[a.layer]
            args = in_places(sched.layers[a.layer], a) + [place(out.name, a.slot, a.row)]
            key = ("compute", name, work, tuple(b for b, _ in args), tuple(casts))
            steps.append((key, tuple(o for _, o in args), None))
        elif a.kind == "load" and a.tensor == streamed and j is not None:
            full, pixel = row_bytes_of(a.tensor)
            b = sched.buffers[a.tensor]
            steps.append((("input_rows", 1, c_type(sub.tensors[a.tensor].dtype), full), (a.row, staging), None))
            steps.append((("copy", b.row_bytes, "s", "s"),
                          (staging + strip.offset(a.tensor) * pixel, offsets[a.tensor] + a.slot * b.row_bytes), None))
        elif a.kind == "load" and a.tensor == streamed:
            row_bytes = sched.buffers[a.tensor].row_bytes
            _input_rows(steps, a.row, c_type(sub.tensors[a.tensor].dtype), row_bytes,
                        offsets[a.tensor] + a.slot * row_bytes)
        elif a.kind == "load":
            b = sched.buffers[a.tensor]
            full, pixel = row_bytes_of(a.tensor)
            key = ("copy", b.row_bytes, xs[a.tensor], "s")
            at = offsets[a.tensor] + a.slot * b.row_bytes
            steps.append((key, (a.row * full + strip.offset(a.tensor) * pixel, at), None))
        elif a.kind == "fill":
            b = sched.buffers[a.tensor]
            key = ("fill", b.row_bytes, b.pad_value)
            steps.append((key, (offsets[a.tensor] + a.slot * b.row_bytes,), None))
        elif a.kind == "move":
            b = sched.buffers[a.tensor]
            key = ("copy", a.rows * b.row_bytes, "s", "s")
            steps.append((key, (offsets[a.tensor] + a.src * b.row_bytes, offsets[a.tensor] + a.slot * b.row_bytes),
                          None))
    if j is None:
        lines = [f"  /* {len(sched.layers)} layers row by row: {len(sched.actions)} steps; line buffers "
                 f"{sched.line_bytes} bytes ("
                 + ", ".join(f"'{comment_text(t)}' {b.capacity} rows" for t, b in sched.buffers.items()) + ") */"]
    else:
        lines = [f"  /* column strip {j}: output columns {strip.cols[0]}..{strip.cols[1] - 1}, "
                 f"{len(sched.actions)} steps; line buffers {sched.line_bytes} bytes ("
                 + ", ".join(f"'{comment_text(t)}' {b.capacity} x {b.row_bytes} B" for t, b in sched.buffers.items())
                 + ") */"]
    for item in compress(steps):
        if item[0] == "loop":
            _, count, body = item
            lines.append(f"  for (int n = 0; n < {count}; ++n) {{")
            for key, base, delta in body:
                lines.append("    " + _statement(prefix, key, base, delta))
            lines.append("  }")
        else:
            key, args = item[1], item[2]
            lines.append("  " + _statement(prefix, key, args, None))
    return functions, lines, macs


def layer_figure_macs(whole, n, row_macs, sub) -> int:
    """The MACs of layer `n` computed whole (layer by layer): a strip's row kernel's MACs per output column times
    the layer's output columns."""
    y, ys = whole.tensors[n.outputs[0]], sub.tensors[n.outputs[0]]
    return row_macs * y.shape[1] * y.shape[2] // ys.shape[2]


def channel_major_pairs(sched, sub) -> dict:
    """{producer layer: depthwise layer} of the block whose rows in between are stored channel-major (a conv that
    is not depthwise writes them, int8_fast.PLANAR_ROWS_OUT; the depthwise layer alone reads them,
    int8_depthwise.PLANAR_ROWS_IN): its planar kernel then copies each channel's run of a row in words instead of
    gathering every C-th byte, once per row of each window. Rows only: the schedule's bytes are the same."""
    from . import int8_fast
    out = {}
    for c, n in enumerate(sched.layers):
        t = n.inputs[0]
        b = sched.buffers.get(t)
        if not int8_fast.is_depthwise(sub, n) or b is None or b.external:
            continue
        producer = [p for p, m in enumerate(sched.layers) if t in m.outputs]
        if len(producer) == 1 and sum(t in m.inputs for m in sched.layers) == 1:
            m = sched.layers[producer[0]]
            if m.op == "Conv2D" and len(m.outputs) == 1 and not int8_fast.is_depthwise(sub, m):
                out[producer[0]] = c
    return out


def _mark_channel_major(variants: list, pairs: dict, layer: int, on: bool) -> None:
    """Set (or clear) the channel-major marks of `layer` as a producer or consumer of `pairs`."""
    from .int8_depthwise import PLANAR_ROWS_IN
    from .int8_fast import PLANAR_ROWS_OUT
    for p, c in pairs.items():
        for index, attr in ((p, PLANAR_ROWS_OUT), (c, PLANAR_ROWS_IN)):
            if layer in (p, c):
                if on:
                    variants[index].node.attrs[attr] = True
                else:
                    variants[index].node.attrs.pop(attr, None)


def running_pool_functions(v: RowVariant, base: str, render_pool) -> list:
    """The accumulate and finalize functions `<base>_accumulate`, `<base>_finalize` of a running pool
    (row_schedule._running_pool)."""
    n = v.node
    x, y = v.graph.tensors[n.inputs[0]], v.graph.tensors[n.outputs[0]]
    out = []
    for part, params in (("accumulate", [f"const {c_type(x.dtype)} *restrict x0", "int32_t *restrict acc"]),
                         ("finalize", ["const int32_t *restrict acc", f"{c_type(y.dtype)} *restrict y"])):
        macs = x.size if part == "accumulate" else 0
        out.append(dict(fn=f"{base}_{part}", params=params, body=render_pool(v.graph, n, part),
                        comment=f"running {part} of layer '{comment_text(n.name)}'", kernel=f"int8/pool_rows/{part}",
                        layer=v.layer, macs=macs, layer_macs=macs))
    return out


def fast_work_bytes_of(v: RowVariant) -> int:
    from . import int8_fast
    from .emit import kernel_family
    return int8_fast.work_bytes(v.graph, v.node) if kernel_family(v.graph, v.node) == "int8" else 0


def _input_rows(steps: list, row: int, ctype: str, row_bytes: int, offset: int) -> None:
    """Append the load of a streamed input's row to `steps`: one more row of the step before when that one asks
    for the rows just above, into the bytes just below (one callback call for consecutive rows)."""
    if steps and steps[-1][0][0] == "input_rows":
        (_, count, _, _), (first, at), _ = steps[-1]
        if first + count == row and at + count * row_bytes == offset:
            steps[-1] = (("input_rows", count + 1, ctype, row_bytes), (first, at), None)
            return
    steps.append((("input_rows", 1, ctype, row_bytes), (row, offset), None))


def _expr(base: str, offset: int, delta: int | None) -> str:
    step = f" + n * {delta}" if delta else ""
    return f"{base} + {offset}{step}"


def _aligned(offsets, deltas) -> bool:
    return all(o % 4 == 0 for o in offsets) and all((d or 0) % 4 == 0 for d in deltas)


def _statement(prefix: str, key, args, deltas) -> str:
    deltas = deltas or (None,) * len(args)
    if key[0] == "compute":
        _, name, work, bases, casts = key
        ptrs = [f"({cast})({_expr(b, o, d)})" for b, o, d, cast in zip(bases, args, deltas, casts)]
        if work is not None:
            ptrs.append(f"({casts[-1]})(s + {work})")
        return f"{name}({', '.join(ptrs)});"
    if key[0] == "clear":
        _, count, init = key
        return f"for (int i = 0; i < {count}; ++i) ((int32_t *)(void *)(s + {args[0]}))[i] = {init};"
    if key[0] == "accumulate":
        return (f"{key[1]}_accumulate((const {key[2]} *)({_expr('s', args[0], deltas[0])}), "
                f"(int32_t *)(void *)(s + {args[1]}));")
    if key[0] == "finalize":
        _, name, base, ctype = key
        return (f"{name}_finalize((const int32_t *)(const void *)(s + {args[0]}), "
                f"({ctype} *)({_expr(base, args[1], deltas[1])}));")
    if key[0] == "input_rows":        # the user's callback (schedule/stream_input.py)
        _, count, ctype, _ = key
        row = f"{args[0]}" + (f" + n * {deltas[0]}" if deltas[0] else "")
        return f"{prefix}_input_rows({row}, {count}, ({ctype} *)(void *)({_expr('s', args[1], deltas[1])}));"
    if key[0] == "copy":
        _, nbytes, src, dst = key
        words = _aligned(args, deltas) and nbytes % 4 == 0
        fn = f"{prefix}_rows_copy{'4' if words else ''}"
        return f"{fn}({_expr(dst, args[1], deltas[1])}, {_expr(src, args[0], deltas[0])}, {nbytes});"
    _, nbytes, value = key
    return f"{prefix}_rows_fill({_expr('s', args[0], deltas[0])}, {value}, {nbytes});"


def compress(steps: list) -> list:
    """The steps as straight-line items ("one", key, args) and loops ("loop", count, [(key, base, delta)]): a run
    of P steps repeated with the same keys and arguments advancing by the same amounts each time."""
    out, i, n = [], 0, len(steps)
    keys = [s[0] for s in steps]
    while i < n:
        best = (1, 1)           # (period, repetitions)
        for p in range(1, min(MAX_PERIOD, (n - i) // 2) + 1):
            if keys[i + p] != keys[i] or keys[i:i + p] != keys[i + p:i + 2 * p]:
                continue
            deltas = [tuple(b - a for a, b in zip(steps[i + j][1], steps[i + p + j][1])) for j in range(p)]
            reps = 2
            while i + (reps + 1) * p <= n and keys[i + reps * p:i + (reps + 1) * p] == keys[i:i + p] and all(
                    tuple(b - a for a, b in zip(steps[i + (reps - 1) * p + j][1], steps[i + reps * p + j][1]))
                    == deltas[j] for j in range(p)):
                reps += 1
            if reps * p > best[0] * best[1] and reps >= 2:
                best = (p, reps)
        p, reps = best
        if reps >= 2 and p * reps >= 2:
            deltas = [tuple(b - a for a, b in zip(steps[i + j][1], steps[i + p + j][1])) for j in range(p)]
            out.append(("loop", reps, [(steps[i + j][0], steps[i + j][1], deltas[j]) for j in range(p)]))
            i += p * reps
        else:
            out.append(("one", steps[i][0], steps[i][1]))
            i += 1
    return out


def widest_strip(node) -> int:
    """The index of the block's strip with the most line-buffer bytes (0 in row mode): its line buffers are the
    block's (the strips run one after another in the same bytes, line_bytes)."""
    from ..ops.fused_block import strips_of
    strips = strips_of(node)
    return max(range(len(strips)), key=lambda j: (strips[j].sched.line_bytes, -j))


def block_scratch(node) -> list[dict]:
    """The parts of the block's own scratch, in order (reports, the plan picture): each line buffer of its widest
    strip (rows x row bytes; in row mode the one strip), then each running pool's accumulators, then the whole
    input row a block in strips streaming its input copies each strip's columns from; the kernel scratch of its
    layers follows them."""
    from ..ops.fused_block import strips_of
    sched = strips_of(node)[widest_strip(node)].sched
    parts = [dict(kind="line buffer", tensor=name, offset=at, bytes=sched.buffers[name].nbytes,
                  label=f"{name}: {_rows(sched.buffers[name].capacity)} x {sched.buffers[name].row_bytes:,} B")
             for name, at in sched.offsets.items()]
    accs = accumulator_offsets(node)
    layers = strips_of(node)[0].sched.layers        # (accumulator_offsets' indices)
    for li, at in sorted((k, v) for k, v in accs.items() if k is not None):
        end = min([v for k, v in accs.items() if k is not None and v > at] + [accs[None]])
        parts.append(dict(kind="accumulators", tensor=layers[li].outputs[0], offset=at, bytes=end - at,
                          label=f"{layers[li].name}: accumulators"))
    if input_row_bytes(node):
        x = node.inputs[0]
        t = node.attrs["graph"].tensors[x]
        parts.append(dict(kind="input row", tensor=x, offset=accs[None], bytes=input_row_bytes(node),
                          label=f"{x}: 1 whole row x {t.nbytes // t.shape[1]:,} B, streamed"))
    return parts


def layer_figures(node, functions: list) -> list[dict]:
    """Per layer of the block `node` (render_block's functions grouped by layer): its name, op and kernel(s), the
    MACs the block runs and the MACs of the layer computed whole (layer by layer)."""
    from ..ops.fused_block import strips_of
    layers = strips_of(node)[0].sched.layers
    out = {}
    for f in functions:
        n = layers[f["layer"]]
        row = out.setdefault(f["layer"], dict(layer=f["layer"], name=n.name, op=n.op, kernel=f["kernel"], macs=0,
                                              layer_macs=0))
        if f["kernel"] not in row["kernel"].split(" + "):
            row["kernel"] += " + " + f["kernel"]
        row["macs"] += f["macs"]
        row["layer_macs"] += f["layer_macs"]
    return [out[k] for k in sorted(out)]


def _rows(n: int) -> str:
    return f"{n} row{'' if n == 1 else 's'}"
