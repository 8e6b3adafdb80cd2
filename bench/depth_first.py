"""Depth-first fused blocks against the layer-by-layer plan (issue 21): arena bytes and instructions per inference
of the MLPerf Tiny models and MobileNetV2-0.35 @144 on the Cortex-M4 and the Cortex-M0+ under QEMU.

For each model: build it (bench/mlperf_tiny.py, random weights) and convert it to fully-int8 TFLite as
bench/speed.py does, compile it with the fast kernels twice: layer by layer, and with its early layers fused into
one block run row by row (schedule/fuse_block.py on the optimized graph, the layers BLOCKS names; --blocks
overrides them). Both libraries run on each core's board under QEMU (`tinyc run --emulate`: -icount instruction
counts, per layer from the profiling image), and every emulated output is compared with TFLite's reference kernels,
byte for byte. "block": the instructions of the fused layers — layer by layer, the sum of their rows in the
profile; fused, the one FusedBlock layer. A second table: what `--fusion auto` chooses (the planner,
schedule/depth_first_search.py, with each core's cost figures, no budget: the smallest arena within 1.15x the
estimated instructions), run on that core.

Usage: python bench/depth_first.py [--models mbv2,vww,resnet8,kws] [--cores m4,m0+] [--blocks mbv2=0:6,kws=0:10]
                                   [--keep DIR] [--out FILE] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (ROOT / "tests", HERE, ROOT):     # ROOT last, so first: the tinyc of this checkout is the one measured
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import speed  # noqa: E402  (bench/speed.py: its models, boards and conversion)

MODELS = ("mbv2", "vww", "resnet8", "kws")
CORES = ("m4", "m0+")
# model -> the fused block: layers [first, end) of the optimized graph (tinyc.passes.optimize of the loaded model)
BLOCKS = {
    "mbv2": (0, 6),       # conv1 .. block_1 project: the 72x72x48 expansion tensor never whole
    "vww": (0, 4),        # conv1 .. conv_dw_2: the 48x48 tensors as rows
    "resnet8": (0, 4),    # the stem and the first residual stage with its Add
    "kws": (0, 10),       # every conv and the global average pool (accumulated row by row)
}
RATIO_GOAL = 1.15         # fused instructions / layer-by-layer instructions, at most (issue 21)
PLANNER_CORE = {"m0+": "cortex-m0plus", "m4": "cortex-m4", "m7": "cortex-m7", "m33": "cortex-m33"}


def model_file(model: str, directory: Path) -> str:
    """The model's int8 .tflite in `directory`, converted once (kept there with --keep)."""
    path = directory / f"{model}.tflite"
    return str(path) if path.is_file() else speed.convert(model, directory)


def compile_both(path: str, model: str, block: tuple, limit: int) -> dict:
    """{'layer by layer': Compiled, 'fused': Compiled or the refusal}: fast kernels, kernel scratch within
    `limit` (the smallest arena budget of the boards, as bench/speed.py)."""
    from tinyc.compiler import codegen_options, compile_graph, compile_model
    from tinyc.errors import TinycError
    from tinyc.schedule.fuse_block import fuse_block
    options = codegen_options(kernels="fast", arena_limit=limit)
    base = compile_model(path, model, options=dict(options))
    first, end = block
    names = [n.name for n in base.graph.nodes[first:end]]
    try:
        fused = compile_graph(fuse_block(base.graph, names), model, os.path.basename(path), dict(options))
    except TinycError as e:
        fused = f"refused: {e}"
    return {"layer by layer": base, "fused": fused, "layers": names}


def compile_auto(path: str, model: str, core: str):
    """The library `--fusion auto` makes for `core` (its cost figures; no budget: an arena limit would be the
    planner's budget, and the fastest plan within the board's SRAM is layer by layer), or the refusal."""
    from tinyc.compiler import codegen_options, compile_model
    from tinyc.errors import TinycError
    options = dict(codegen_options(kernels="fast"), fusion="auto", core=PLANNER_CORE[core])
    try:
        return compile_model(path, model, options=options)
    except TinycError as e:
        return f"refused: {e}"


def run_one(compiled, core: str, out: Path, samples, refs) -> dict:
    """Instructions (total, per layer) of one library on one core's board, and whether its outputs equal the
    reference's."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    board = load_board(speed.CORES[core][0])
    write_library(compiled.library, str(out), force=True)
    write_firmware(compiled, board, str(out), samples)
    res = emulate(compiled, board, out, True)
    return dict(board=board.name, instructions=res["instructions"],
                layers={r["name"]: r["instructions"] for r in res["layers"]},
                outputs_match=speed.outputs_match(compiled, res["outputs"], refs, True))


def benchmark(models, cores, work_dir: Path, blocks: dict, log=lambda msg: None) -> dict:
    from tinyc.firmware.project import sample_inputs
    from tinyc.verify import reference_outputs
    work_dir.mkdir(parents=True, exist_ok=True)
    limit = speed.arena_limit(cores)
    rows, t0 = [], time.time()
    for model in models:
        path = model_file(model, work_dir)
        built = compile_both(path, model, blocks[model], limit)
        base = built["layer by layer"]
        samples = sample_inputs(base, None, speed.SEED)
        with tempfile.TemporaryDirectory(prefix="tinyc-bench-") as tmp:
            refs, _ = reference_outputs(base, path, samples, "nchw", Path(tmp))
        row = dict(model=model, label=speed.MODELS[model][1], block=list(blocks[model]), layers=built["layers"],
                   arena={}, runs={})
        for kind in ("layer by layer", "fused"):
            compiled = built[kind]
            if isinstance(compiled, str):
                row["error"] = compiled
                continue
            row["arena"][kind] = compiled.plan.arena_bytes
            for core in cores:
                out = work_dir / f"{model}-{'fused' if kind == 'fused' else 'lbl'}-{core.replace('+', 'p')}"
                run = run_one(compiled, core, out, samples, refs)
                if kind == "fused":
                    run["block"] = next(v for name, v in run["layers"].items() if name.startswith("fused_"))
                else:
                    run["block"] = sum(run["layers"].get(name, 0) for name in built["layers"])
                row["runs"][f"{kind}|{core}"] = run
                log(f"[{time.time() - t0:6.1f}s] {model} {kind} on {core}: {run['instructions']:,} instructions, "
                    f"outputs {'equal' if run['outputs_match'] else 'DIFFER'}")
        row["auto"] = {}
        for core in cores:
            auto = compile_auto(path, model, core)
            if isinstance(auto, str):
                row["auto"][core] = dict(error=auto)
                continue
            run = run_one(auto, core, work_dir / f"{model}-auto-{core.replace('+', 'p')}", samples, refs)
            plan = auto.fusion
            run.update(arena=auto.plan.arena_bytes, blocks=[b.layers for b in plan.blocks] if plan else [],
                       est_ratio=round(plan.instr_ratio, 3) if plan else 1.0)
            row["auto"][core] = run
            log(f"[{time.time() - t0:6.1f}s] {model} --fusion auto on {core}: {len(run['blocks'])} block(s), arena "
                f"{run['arena']:,}, {run['instructions']:,} instructions")
        rows.append(row)
    return dict(cores=list(cores), rows=rows, seconds=round(time.time() - t0, 1))


def _ratio(a, b) -> str:
    return f"{b / a:.3f}x" if a and b else "-"


def render(result: dict) -> str:
    cores = result["cores"]
    label = {c: speed.CORES[c][1] for c in cores}
    head = ["Model", "fused layers", "arena LbL", "arena fused", "ratio"]
    for c in cores:
        head += [f"{label[c]} LbL", "fused", "ratio", "block LbL", "block fused"]
    head.append("outputs")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        first, end = row["block"]
        a = row["arena"]
        cells = [row["label"], f"{first}..{end - 1} ({end - first})"]
        if "error" in row:
            lines.append("| " + " | ".join(cells + [row["error"]]) + " |")
            continue
        cells += [f"{a['layer by layer']:,}", f"{a['fused']:,}", _ratio(a["layer by layer"], a["fused"])]
        ok = True
        for c in cores:
            lbl, fused = row["runs"][f"layer by layer|{c}"], row["runs"][f"fused|{c}"]
            ok = ok and lbl["outputs_match"] and fused["outputs_match"]
            cells += [f"{lbl['instructions']:,}", f"{fused['instructions']:,}",
                      _ratio(lbl["instructions"], fused["instructions"]), f"{lbl['block']:,}", f"{fused['block']:,}"]
        cells.append("equal" if ok else "DIFFER")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([
        "Depth-first fused blocks (bench/depth_first.py): int8, fast kernels, QEMU -icount instructions per "
        f"inference; LbL = layer by layer; ratio = fused / LbL (goal <= {RATIO_GOAL}); \"outputs\": every "
        "emulated output equals TFLite's reference kernels'.", "", *lines, "", *render_auto(result)])


def render_auto(result: dict) -> list:
    """The `--fusion auto` table: per model and core, the blocks the planner chose, the arena and the emulated
    instructions against the layer-by-layer run, and the planner's own estimate of the ratio."""
    lines = ["`--fusion auto` (the planner with the core's cost figures, no budget):", "",
             "| Model | core | blocks (layers) | arena | instructions | ratio | estimated ratio | outputs |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for core, auto in row.get("auto", {}).items():
            label = speed.CORES[core][1]
            if "error" in auto:
                lines.append(f"| {row['label']} | {label} | {auto['error']} | | | | | |")
                continue
            lbl = row["runs"].get(f"layer by layer|{core}", {}).get("instructions")
            blocks = ", ".join(str(len(b)) for b in auto["blocks"]) or "none"
            lines.append(f"| {row['label']} | {label} | {blocks} | {auto['arena']:,} | {auto['instructions']:,} | "
                         f"{_ratio(lbl, auto['instructions'])} | {auto['est_ratio']:.3f}x | "
                         f"{'equal' if auto['outputs_match'] else 'DIFFER'} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--cores", default=",".join(CORES), help=f"comma-separated, of {', '.join(speed.CORES)}")
    ap.add_argument("--blocks", default="", help="MODEL=FIRST:END,...: fuse layers [FIRST, END) of the optimized "
                                                 "graph instead of BLOCKS'")
    ap.add_argument("--keep", help="keep the models, libraries and firmware projects in this directory (a model "
                                   "converted there before is reused)")
    ap.add_argument("--out", help="also write the table (Markdown) to this file (TensorFlow's converter prints "
                                  "much to stdout)")
    ap.add_argument("--json", help="also write the raw results as JSON")
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    cores = [c for c in a.cores.split(",") if c]
    bad = [m for m in models if m not in BLOCKS and m not in a.blocks] + [c for c in cores if c not in speed.CORES]
    if bad:
        ap.error(f"unknown model or core: {', '.join(bad)}")
    blocks = dict(BLOCKS)
    for item in filter(None, a.blocks.split(",")):
        model, _, span = item.partition("=")
        first, _, end = span.partition(":")
        if model not in speed.MODELS or not first.isdigit() or not end.isdigit() or int(first) >= int(end):
            ap.error(f"--blocks {item!r}: write MODEL=FIRST:END with FIRST < END")
        blocks[model] = (int(first), int(end))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="tinyc-bench-") as tmp:
        result = benchmark(models, cores, Path(a.keep) if a.keep else Path(tmp), blocks, log)
    text = render(result)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    broken = [r for r in result["rows"] if "error" in r or not all(v["outputs_match"] for v in r["runs"].values())
              or not all(v.get("outputs_match", True) for v in r.get("auto", {}).values())]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
