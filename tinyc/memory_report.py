"""`tinyc report`: where every byte of SRAM and flash goes, per layer, and whether the model fits a board.

`memory_report` returns a JSON-ready dict (the stable schema CI reads, SCHEMA_VERSION); `format_report`
renders it as the terminal table; `plan_picture_data` feeds `plan_picture.render_svg/render_html`.
"""
from __future__ import annotations

from .boards import Board
from .errors import TinycError
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
    r = dict(schema_version=SCHEMA_VERSION, model=compiled.source, name=lib.prefix,
             arena_bytes=plan.arena_bytes, arena_lower_bound_bytes=plan.lower_bound, weights_bytes=lib.weight_bytes,
             macs=lib.macs, peak_step=peak, order="exact" if plan.exact_order else "heuristic",
             schedule=plan.chosen, variants=plan.variants, layers=layers)
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
    for row in r["layers"]:
        mark = (f"  (fused: {', '.join(row['fused'])})" if row.get("fused") else "") + \
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


def plan_picture_data(compiled) -> tuple[list, list]:
    """(steps, rects) for plan_picture: one rectangle per buffer (a tensor written over its input is drawn as
    "inplace"; scratch as "scratch")."""
    plan = compiled.plan
    g = plan.graph
    steps = [dict(index=s, op=n.op, name=n.name, live_bytes=plan.live[s],
                  scratch_bytes=_scratch(plan, s)) for s, n in enumerate(g.nodes)]
    inputs, outputs = set(g.inputs), set(g.outputs)
    overwriters = {id(b.anchor[0]) for b in plan.buffers if b.anchor}
    rects = []
    for b in plan.buffers:
        kind = ("scratch" if b.kind == "scratch" else "input" if inputs & b.tensors.keys()
                else "output" if outputs & b.tensors.keys() else "inplace" if id(b) in overwriters
                else "activation")
        rects.append(dict(label=b.label, first_step=b.start, last_step=b.end, offset=b.offset, nbytes=b.size,
                          kind=kind))
    return steps, rects
