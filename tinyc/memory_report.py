"""`tinyc report`: where every byte of SRAM and flash goes, per layer, and whether the model fits a board.

`memory_report` returns a JSON-ready dict (the stable schema CI reads, SCHEMA_VERSION); `format_report`
renders it as the terminal table; `plan_picture_data` feeds `plan_picture.render_svg/render_html`.
"""
from __future__ import annotations

from .boards import Board
from .errors import TinycError
from .names import tail_text
from .nibbles import packed_bytes

SCHEMA_VERSION = 1


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def const_bytes(t) -> int:
    """Bytes of a constant in flash: quantized int4 weights are kept packed two per byte (ops/int8_common.py)."""
    return packed_bytes(t.size) if t.dtype == "int4" and t.quant is not None else t.nbytes


def stored_weights_text(stored: dict | None) -> str:
    """", of which float16 6,144 B" for weights --weights stores narrower; "" without."""
    return "".join(f", of which {form} {nbytes:,} B" for form, nbytes in (stored or {}).items())


def memory_report(compiled, board: Board | None = None) -> dict:
    plan, lib = compiled.plan, compiled.library
    g = plan.graph
    peak = plan.peak_step
    layers = []
    for step, (node, info) in enumerate(zip(g.nodes, lib.layers)):
        outs = [g.tensors[o] for o in node.outputs]
        more = dict(output_shapes=[list(t.shape) for t in outs]) if len(outs) > 1 else {}     # (LSTM cell_output)
        layers.append(dict(
            index=step, op=node.op, name=node.name, output_shape=list(outs[0].shape),
            output_bytes=sum(t.nbytes for t in outs), **more,
            macs=info["macs"], weight_bytes=sum(lib.stored_tensors.get(t, const_bytes(g.tensors[t]))
                                                for t in node.inputs if g.tensors[t].is_const),
            live_bytes=plan.live[step], scratch_bytes=_scratch(plan, step),
            in_place=info["in_place"], no_code=info["alias"], peak=step == peak, kernel=info.get("kernel"),
            fused=list(node.attrs.get("fused", ()))))
        if node.op == "FusedBlock":       # (its layers run row by row: r["fusion"]["blocks"])
            layers[-1]["block_layers"] = [n.name for n in node.attrs["graph"].nodes]
    r = dict(schema_version=SCHEMA_VERSION, model=compiled.source, name=lib.prefix,
             arena_bytes=plan.arena_bytes, arena_lower_bound_bytes=plan.lower_bound, weights_bytes=lib.weight_bytes,
             macs=lib.macs, peak_step=peak, order="exact" if plan.exact_order else "heuristic",
             schedule=plan.chosen, variants=plan.variants, layers=layers)
    fusion = fusion_report(compiled, board)
    if fusion is not None:     # fused blocks, run depth-first (docs/depth-first.md)
        r["fusion"] = fusion
    if lib.stored_weights:     # --weights: the bytes each narrower form holds (part of weights_bytes)
        r["stored_weights"] = dict(lib.stored_weights)
    if g.state:      # the streaming state: its own static bytes, beside the arena (docs/streaming-state.md)
        r.update(state_bytes=plan.state_bytes, state=state_rows(compiled))
    if board is not None:
        r["board"] = board_fit(board, plan.arena_bytes + plan.state_bytes, lib.weight_bytes)
        r["fits"] = r["board"]["fits"]
        from .firmware.stack_usage import model_stack
        stack = model_stack(compiled, board)      # None without arm-none-eabi-gcc
        if stack is not None:
            r["stack"] = stack
            r["fits"] = r["fits"] and stack["fits"]
    return r


def fused_blocks(compiled) -> list:
    """Per fused block of the plan (a FusedBlock layer: its layers run depth-first, row by row, in patch mode in
    column strips; docs/depth-first.md): its layers with the rows and columns each computes and their MACs, its
    strips, its line buffers (rows x row bytes each; the widest strip's), the running pools' accumulators, a
    streamed input's row and the kernel scratch, from the block's row schedules and the library."""
    plan, lib = compiled.plan, compiled.library
    return [_block_report(plan, step, node, info) for step, (node, info) in enumerate(zip(plan.graph.nodes, lib.layers))
            if node.op == "FusedBlock"]


def _block_report(plan, step: int, node, info: dict) -> dict:
    from .codegen.fused_block import block_scratch, line_bytes, own_work_offset, widest_strip
    from .ops.fused_block import strips_of
    strips = strips_of(node)
    sub = node.attrs["graph"]
    layers = strips[0].sched.layers         # (the same layers, in the same order, in every strip)
    computed, columns = _computed(strips)
    figures = {f["layer"]: f for f in info["block"]}      # (codegen/fused_block.layer_figures: over all strips)
    rows = []
    for li, n in enumerate(layers):
        y = sub.tensors[n.outputs[0]]
        rows.append(dict(name=n.name, op=n.op, output_shape=list(y.shape), rows=int(y.shape[1]),
                         rows_computed=computed[n.name], columns=int(y.shape[2]), columns_computed=columns[n.name],
                         macs=figures[li]["macs"], layer_macs=figures[li]["layer_macs"], kernel=figures[li]["kernel"]))
    parts = block_scratch(node)
    at = {p["tensor"]: p["offset"] for p in parts if p["kind"] == "line buffer"}
    streamed = node.inputs[0] if node.attrs.get("stream") else None
    widest = widest_strip(node)
    buffers = [dict(tensor=b.tensor, rows=b.capacity, row_bytes=b.row_bytes, bytes=b.nbytes, offset=at[b.tensor],
                    role="streamed input" if b.tensor == streamed else "input" if b.external else "intermediate")
               for b in strips[widest].sched.buffers.values()]
    input_row = next((dict(tensor=p["tensor"], bytes=p["bytes"], offset=p["offset"]) for p in parts
                      if p["kind"] == "input row"), None)
    total = plan.work[step].size if step in plan.work else 0
    unfused = sum(row["layer_macs"] for row in rows)
    last = strips[0].sched
    last_computed = sum(a.kind == "compute" and a.layer == len(layers) - 1 for a in last.actions)
    return dict(
        index=step, name=node.name, layers=rows, mode="strips" if len(strips) > 1 else "rows",
        strips=[dict(output_columns=list(s.cols), line_buffer_bytes=s.sched.line_bytes) for s in strips],
        widest_strip=widest, output_rows_per_step=sub.tensors[last.output].shape[1] // max(last_computed, 1),
        recompute_factor=round(info["macs"] / unfused, 4) if unfused else 1.0, macs=info["macs"],
        inputs=list(last.inputs), output=last.output, streamed_input=streamed is not None,
        input_passes=len(strips) if streamed is not None else 0,
        slack_rows=int(node.attrs.get("slack_rows", 0)), line_buffers=buffers, line_buffer_bytes=line_bytes(node),
        accumulator_bytes=sum(p["bytes"] for p in parts if p["kind"] == "accumulators"), input_row=input_row,
        kernel_scratch_bytes=total - own_work_offset(node), scratch_bytes=total)


def _computed(strips) -> tuple[dict, dict]:
    """({layer: output rows computed}, {layer: output columns computed}), each summed over the block's strips (a
    strip computes its strip graph's width of every row it computes; rows no window reads are not computed)."""
    rows, columns = {}, {}
    for s in strips:
        for n in s.sched.layers:
            rows.setdefault(n.name, 0)
            columns[n.name] = columns.get(n.name, 0) + int(s.graph.tensors[n.outputs[0]].shape[2])
        for a in s.sched.actions:
            if a.kind == "compute":
                rows[s.sched.layers[a.layer].name] += 1
    return rows, columns


def _peak_at(plan) -> dict | None:
    if not plan.graph.nodes:        # (no layer: the outputs are inputs or constants)
        return None
    node = plan.graph.nodes[plan.peak_step]
    where = dict(step=plan.peak_step, layer=node.name, op=node.op, live_bytes=plan.live[plan.peak_step])
    if node.op == "FusedBlock":
        where["block_layers"] = [n.name for n in node.attrs["graph"].nodes]
    return where


def plan_without_fusion(compiled, board: Board | None = None):
    """The memory plan of the model layer by layer: `Compiled.graph` with every fused block in it inlined, planned
    the way the compiler plans it, for the kernel set the library was generated with (the fast kernels' scratch
    within the board's arena and the fusion budget, as the compiler keeps it)."""
    from .codegen.scratch_fit import schedule_with_scratch
    from .schedule import schedule
    from .schedule.fuse_block import inline_blocks
    g = inline_blocks(compiled.graph)       # (a copy: planning marks the scratch levels on its nodes)
    if compiled.library.kernels != "fast":
        return schedule(g)
    from .firmware.project import arena_budget
    limits = [arena_budget(board)] if board is not None else []
    budget = getattr(getattr(compiled, "fusion", None), "budget", None)
    return schedule_with_scratch(g, min(limits + ([budget] if budget is not None else []), default=None))


def fusion_report(compiled, board: Board | None = None) -> dict | None:
    """The fused blocks and the peak before and after fusion (where it sat, where it sits now); None when the plan
    has no fused block and the compiler made no fusion plan. The compiler's fusion plan (`Compiled.fusion`,
    schedule/depth_first_search.py), when there is one, adds its instruction estimates."""
    blocks = fused_blocks(compiled)
    chosen = getattr(compiled, "fusion", None)
    if not blocks and chosen is None:
        return None
    plan = compiled.plan
    before = plan_without_fusion(compiled, board) if blocks else plan
    r = dict(blocks=blocks, arena_before_bytes=before.arena_bytes, peak_before=_peak_at(before),
             arena_after_bytes=plan.arena_bytes, peak_after=_peak_at(plan))
    if chosen is not None:      # the planner's estimates and why it fused nothing, when it did not
        r["planner"] = dict(est_instructions_before=chosen.est_instr_before,
                            est_instructions_after=chosen.est_instr_after, instr_ratio=round(chosen.instr_ratio, 4),
                            core=chosen.core, budget_bytes=chosen.budget, reason=chosen.reason,
                            plans_tried=chosen.plans_tried)
    return r


def state_rows(compiled) -> list:
    """The model's state tensors for reports: name (the model's), shape, dtype, bytes, next value, and whether the
    next value is written in place or copied at the end of an inference."""
    plan = compiled.plan
    g = plan.graph
    rows = []
    for s in sorted(g.state, key=plan.offset_of):
        t, v = g.tensors[s], g.state[s]
        update = "none" if v == s else "copied" if s in plan.state_copies else "in place"
        rows.append(dict(name=t.source_name or s, shape=list(t.shape), dtype=t.dtype, bytes=t.nbytes,
                         offset=plan.offset_of(s), next=g.tensors[v].source_name or v, update=update))
    return rows


def _scratch(plan, step: int) -> int:
    """The layer's temporary bytes: an in-place depthwise plane and its kernel's own scratch (e.g. im2col)."""
    return sum(d[step].size for d in (plan.scratch, plan.work) if step in d)


def board_fit(board: Board, arena_bytes: int, flash_bytes: int) -> dict:
    region = board.arena_region
    return dict(name=board.name, sram_region=region.name, sram_bytes=region.size, flash_bytes=board.flash_bytes,
                sram_headroom_pct=round(100.0 * (region.size - arena_bytes) / region.size, 1),
                flash_headroom_pct=round(100.0 * (board.flash_bytes - flash_bytes) / board.flash_bytes, 1),
                fits=arena_bytes <= region.size and flash_bytes <= board.flash_bytes,
                note="flash counts the weights; generated code is not counted until the firmware is built")


def check_fits(compiled, board: Board) -> None:
    """One clear line when the model does not fit the board."""
    plan, lib = compiled.plan, compiled.library
    fit = board_fit(board, plan.arena_bytes + plan.state_bytes, lib.weight_bytes)
    if fit["fits"]:
        return
    if plan.arena_bytes + plan.state_bytes > fit["sram_bytes"]:
        node = plan.graph.nodes[plan.peak_step]
        state = f" and {plan.state_bytes:,} B of streaming state" if plan.state_bytes else ""
        raise TinycError(f"model does not fit {board.name}: it needs {plan.arena_bytes:,} B of arena (peak at layer "
                         f"{plan.peak_step}, {node.op} '{node.name}'){state}, the board's {fit['sram_region']} has "
                         f"{fit['sram_bytes']:,} B; use a smaller model or input, or a board with more SRAM "
                         "(`tinyc report` shows where the memory goes)")
    raise TinycError(f"model does not fit {board.name}: its weights need {lib.weight_bytes:,} B of flash, the board "
                     f"has {board.flash_bytes:,} B; quantize it (--quantize int8) or use a smaller model")


def format_report(r: dict) -> str:
    head = (f"{'#':>3} {'op':<11} {'output':<14} {'MACs':>11} {'weights':>9} {'live':>9} {'scratch':>8}  "
            f"{'in place':<12} kernel")
    lines = [f"{r['model']} ({r['name']}): schedule '{r['schedule']}', {r['order']} operator order", head,
             "-" * len(head)]
    strips = {b["index"]: len(b.get("strips", ())) for b in r.get("fusion", {}).get("blocks", [])}
    for row in r["layers"]:
        how = f"in {strips[row['index']]} column strips" if strips.get(row["index"], 1) > 1 else "row by row"
        mark = (f"  (fused: {', '.join(row['fused'])})" if row.get("fused") else "") + \
            (f"  ({len(row['block_layers'])} layers {how}, below)" if row.get("block_layers") else "") + \
            ("  <- peak" if row["peak"] else "")
        how = row["in_place"] or ("(no code)" if row["no_code"] else "")
        shape = "+".join(_shape(s) for s in row.get("output_shapes", [row["output_shape"]]))
        lines.append(f"{row['index']:>3} {row['op'][:11]:<11} {shape[:14]:<14} "
                     f"{row['macs']:>11,} {row['weight_bytes']:>9,} {row['live_bytes']:>9,} "
                     f"{row['scratch_bytes']:>8,}  {how:<12} {row.get('kernel') or ''}{mark}")
    ratio = r["arena_bytes"] / max(r["arena_lower_bound_bytes"], 1)
    lines += ["-" * len(head),
              f"arena {r['arena_bytes']:,} B (lower bound {r['arena_lower_bound_bytes']:,} B, x{ratio:.3f}); "
              f"weights {r['weights_bytes']:,} B (flash{stored_weights_text(r.get('stored_weights'))}); "
              f"{r['macs']:,} MACs",
              "arena by technique: " + ", ".join(f"{k} {v['arena_bytes']:,} B" for k, v in r["variants"].items())]
    if "fusion" in r:
        lines += format_fusion(r["fusion"])
    if "state" in r:
        lines.append(f"state {r['state_bytes']:,} B (static, not in the arena; reset with {r['name']}_reset_state):")
        lines += [f"  {row['name']}: {row['dtype']} {_shape(row['shape'])}, {row['bytes']:,} B at {row['offset']}, "
                  f"next value '{row['next']}' ({row['update']})" for row in r["state"]]
    b = r.get("board")
    if b:
        verdict = "fits" if b["fits"] else "DOES NOT FIT"
        lines.append(f"{b['name']}: {verdict} — arena {r['arena_bytes']:,} of {b['sram_bytes']:,} B in "
                     f"{b['sram_region']} ({b['sram_headroom_pct']}% free), weights {r['weights_bytes']:,} of "
                     f"{b['flash_bytes']:,} B flash ({b['flash_headroom_pct']}% free; code not counted until built)")
        from .firmware.stack_usage import format_stack
        lines.append(format_stack(r["stack"]) if "stack" in r else
                     "stack: not measured (needs arm-none-eabi-gcc)")
    return "\n".join(lines)


def format_fusion(f: dict) -> list[str]:
    """The fused blocks (each: its layers, mode, line buffers, scratch, recompute factor, MACs) and the peak
    before and after fusion, as lines of the terminal report."""
    planner = f.get("planner")
    none = f" ({planner['reason']})" if planner and not f["blocks"] and planner["reason"] else ""
    lines = [f"fused blocks (depth-first, docs/depth-first.md): {len(f['blocks']) or 'none'}{none}"]
    for b in f["blocks"]:
        lines += _block_lines(b)
    if not f["blocks"]:
        return lines
    before, after = f["peak_before"], f["peak_after"]
    change = (f["arena_after_bytes"] - f["arena_before_bytes"]) / max(f["arena_before_bytes"], 1)
    lines.append(f"layer by layer: arena {f['arena_before_bytes']:,} B, peak at layer {before['step']} {before['op']} "
                 f"'{before['layer']}' ({before['live_bytes']:,} B live)")
    lines.append(f"fused: arena {f['arena_after_bytes']:,} B ({change:+.1%}), peak at layer {after['step']} "
                 f"{after['op']} '{after['layer']}' ({after['live_bytes']:,} B live)")
    if planner and planner["est_instructions_before"]:
        budget = f", budget {planner['budget_bytes']:,} B" if planner["budget_bytes"] else ""
        lines.append(f"planner: estimated instructions x{planner['instr_ratio']:.3f} of layer by layer "
                     f"({planner['est_instructions_after']:,} / {planner['est_instructions_before']:,} on the "
                     f"{planner['core']}){budget}")
    return lines


def _block_lines(b: dict) -> list[str]:
    """One fused block of the terminal report: what it runs and how, its layers, its scratch and line buffers."""
    count = len(b.get("strips", ())) if b["mode"] == "strips" else 1
    stream = "; its input streamed from the row callback" if b["streamed_input"] else ""
    if count > 1 and b["streamed_input"]:
        stream += f", once per strip ({b['input_passes']} passes)"
    how = (f"in {count} column strips, each row by row" if count > 1 else "rows mode")
    lines = [f"  layer {b['index']} '{tail_text(b['name'], 48)}': {len(b['layers'])} layers"
             f"{',' if count == 1 else ''} {how} ({b['output_rows_per_step']} output row per step), "
             f"recompute x{b['recompute_factor']:.2f}, {b['macs']:,} MACs{stream}"]
    if count > 1:
        cols = ", ".join(f"{s['output_columns'][0]}..{s['output_columns'][1] - 1}" for s in b["strips"])
        sizes = " / ".join(f"{s['line_buffer_bytes']:,}" for s in b["strips"])
        lines.append(f"    strips' output columns {cols}: line buffers {sizes} B (strip {b['widest_strip']}'s below)")
    done = [f"{row['rows_computed']}/{row['rows']} rows" if count == 1 else
            f"{row['rows_computed']}/{count}x{row['rows']} rows, {row['columns_computed']}/{row['columns']} columns"
            for row in b["layers"]]
    wide = max([11] + [len(text) for text in done])
    for row, text in zip(b["layers"], done):
        lines.append(f"    {tail_text(row['name'], 40):<40} {row['op'][:10]:<10} {_shape(row['output_shape']):<14} "
                     f"{text:>{wide}} {row['macs']:>11,} MACs  {row['kernel']}")
    shared = " (buffers not live at once share bytes)" if b["line_buffer_bytes"] < sum(
        lb["bytes"] for lb in b["line_buffers"]) else ""
    widest = ", the widest strip's" if count > 1 else ""
    row_in = b.get("input_row")
    lines.append(f"    scratch {b['scratch_bytes']:,} B: line buffers {b['line_buffer_bytes']:,} B{widest}{shared}, "
                 + (f"accumulators {b['accumulator_bytes']:,} B, " if b["accumulator_bytes"] else "")
                 + (f"streamed input row {row_in['bytes']:,} B, " if row_in else "")
                 + f"kernel scratch {b['kernel_scratch_bytes']:,} B")
    for lb in b["line_buffers"]:
        role = f", block {lb['role']}" if lb["role"] != "intermediate" else ""
        lines.append(f"      '{tail_text(lb['tensor'], 44)}' {lb['rows']} x {lb['row_bytes']:,} B = "
                     f"{lb['bytes']:,} B at +{lb['offset']:,}{role}")
    if row_in:
        lines.append(f"      '{tail_text(row_in['tensor'], 44)}' 1 whole row, {row_in['bytes']:,} B at "
                     f"+{row_in['offset']:,}: the callback's rows, each strip copies its columns")
    return lines


def plan_picture_data(compiled) -> tuple[list, list]:
    """(steps, rects) for plan_picture: one rectangle per buffer (a tensor written over its input is drawn as
    "inplace"; scratch as "scratch"). A fused block is one step whose scratch is drawn as its parts: a band per
    line buffer (in patch mode the widest strip's; and running pool accumulators, a streamed input's whole row),
    then its kernel scratch."""
    plan = compiled.plan
    g = plan.graph
    steps = [dict(index=s, op=n.op, name=_step_name(n), live_bytes=plan.live[s],
                  scratch_bytes=_scratch(plan, s)) for s, n in enumerate(g.nodes)]
    inputs, outputs = set(g.inputs), set(g.outputs)
    overwriters = {id(b.anchor[0]) for b in plan.buffers if b.anchor}
    blocks = {id(b): s for s, b in plan.work.items() if g.nodes[s].op == "FusedBlock"}
    rects = []
    for b in plan.buffers:
        if id(b) in blocks:
            rects += _block_bands(g.nodes[blocks[id(b)]], b)
            continue
        kind = ("scratch" if b.kind == "scratch" else "input" if inputs & b.tensors.keys()
                else "output" if outputs & b.tensors.keys() else "inplace" if id(b) in overwriters
                else "activation")
        rects.append(dict(label=b.label, first_step=b.start, last_step=b.end, offset=b.offset, nbytes=b.size,
                          kind=kind))
    return steps, rects


def _step_name(node) -> str:
    if node.op != "FusedBlock":
        return node.name
    count = node.attrs.get("strips", 1)
    how = f"in {count} column strips, each row by row" if count > 1 else "row by row"
    return f"{node.name} ({how}: {', '.join(n.name for n in node.attrs['graph'].nodes)})"


def _block_bands(node, work) -> list:
    """A fused block's scratch buffer as bands: its line buffers, accumulators and streamed input row
    (codegen/fused_block.block_scratch), then the kernel scratch."""
    from .codegen.fused_block import block_scratch
    rects, end = [], 0
    for part in block_scratch(node):
        rects.append(dict(label=part["label"], first_step=work.start, last_step=work.end,
                          offset=work.offset + part["offset"], nbytes=part["bytes"], kind="linebuffer"))
        end = max(end, part["offset"] + part["bytes"])
    if work.size > end:
        rects.append(dict(label=f"kernel scratch of layer {work.start}", first_step=work.start, last_step=work.end,
                          offset=work.offset + end, nbytes=work.size - end, kind="scratch"))
    return rects
