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
estimated instructions), run on that core. With --rows a third: the instructions of each layer inside the fixed
block (its row kernel, all its calls) beside the same layer run whole, and the block's row copies, from an
instrumented copy of the fused project (row_profile). A streamed-input table: the model input pulled from the
row callback (`--stream-input`), once per inference and with --stream-passes 2 and 3 (the first block may then run
in column strips, patch mode), each with `--fusion auto` for the core, run on that core.

Usage: python bench/depth_first.py [--models mbv2,vww,resnet8,kws] [--cores m4,m0+] [--blocks mbv2=0:6,kws=0:10]
                                   [--rows] [--keep DIR] [--out FILE] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
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
STREAMED = ("vww", "mbv2")  # the camera models whose input the streamed table pulls from the row callback
PASSES = (1, 2, 3)        # --stream-passes of the streamed table
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


def compile_streamed(path: str, model: str, core: str, passes: int):
    """The library with the model input streamed (`--stream-input --stream-passes passes`, `--fusion auto` for
    `core`), or the refusal."""
    from tinyc.compiler import codegen_options, compile_model
    from tinyc.errors import TinycError
    options = dict(codegen_options(kernels="fast", stream_input=True, stream_passes=passes), fusion="auto",
                   core=PLANNER_CORE[core])
    try:
        return compile_model(path, model, options=options)
    except TinycError as e:
        return f"refused: {e}"


def block_modes(compiled) -> str:
    """The fused blocks of a library: layers each, in strips ("8 in 2 strips") or row by row."""
    out = []
    for node in compiled.plan.graph.nodes:
        if node.op == "FusedBlock":
            layers, strips = len(node.attrs["graph"].nodes), node.attrs.get("strips", 1)
            out.append(f"{layers} in {strips} strips" if strips > 1 else f"{layers} rows")
    return ", ".join(out) or "none"


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


ROW_COPIES = "row copies"      # row_profile: the block's loads, moves, fills (and a running pool's clears)


def row_profile(compiled, core: str, out: Path) -> dict:
    """{fused layer name: instructions} of the FusedBlock layers of the fused library in `out` (its emulation
    project written), from a copy of the project with a profiling hook after every statement of each block
    function: one slot per layer of the block (its row kernel's calls), one for the block's row copies; the slots
    follow the model's own. The hooks' own cost, measured per call by the emulation main, is taken off per call."""
    from tinyc.boards import load_board
    from tinyc.errors import TinycError
    from tinyc.firmware.emulate import run_qemu
    from tinyc.firmware.machines import load_machine
    from tinyc.ops.fused_block import schedule_of
    lib, g = compiled.library, compiled.plan.graph
    dst = out.with_name(out.name + "-rows")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(out, dst, ignore=shutil.ignore_patterns("build"))
    main = (dst / "firmware" / "main.c").read_text()
    found = re.search(r"#define NUM_LAYERS (\d+)", main)
    model_c = (dst / f"{lib.prefix}.c").read_text()
    macro = re.search(r"#define (\w+_PROFILE)\(layer\)", model_c)
    if not found or not macro:
        raise TinycError("row profile: the emulation main or the model has no profiling hooks")
    slots, names = int(found.group(1)), {}
    lines = model_c.splitlines()
    for info in lib.layers:
        if info["op"] != "FusedBlock" or info["alias"]:
            continue
        fn = f"{lib.prefix}_l{info['index']}_fused"
        layers = schedule_of(g.nodes[info["index"]]).layers
        first = slots
        names.update({first + k: n.name for k, n in enumerate(layers)})
        names[first + len(layers)] = f"{ROW_COPIES} ({info['name']})"
        slots += len(layers) + 1
        start = lines.index(next(ln for ln in lines if ln.startswith(f"TINYC_LAYER void {fn}(")))
        end = lines.index("}", start)
        body = []
        for ln in lines[start + 1:end]:
            body.append(ln)
            if not ln.rstrip().endswith(";"):
                continue
            call = re.match(rf"\s*{fn}_r(\d+)(_[a-z]+)?\(", ln)      # a row kernel, a running pool's parts
            slot = first + int(call.group(1)) if call else first + len(layers)
            body.append(f"{ln[:len(ln) - len(ln.lstrip())]}{macro.group(1)}({slot});")
        lines[start + 1:end] = body
    (dst / f"{lib.prefix}.c").write_text("\n".join(lines) + "\n")
    counting = "if (layer >= 0) { layer_ticks[layer] += now - profile_last; layer_calls[layer]++; }"
    for old, new in ((found.group(0), f"#define NUM_LAYERS {slots}"),
                     ("static uint32_t profile_last;",
                      "static uint32_t profile_last;\nstatic uint32_t layer_calls[NUM_LAYERS + 1];"),
                     ("if (layer >= 0) layer_ticks[layer] += now - profile_last;", counting),
                     ("    tinyc_print_u32(layer_ticks[i]);\n", "    tinyc_print_u32(layer_ticks[i]);\n"
                      "    tinyc_print(\" \");\n    tinyc_print_u32(layer_calls[i]);\n")):
        if main.count(old) != 1:
            raise TinycError(f"row profile: the emulation main changed ({old!r} not found once)")
        main = main.replace(old, new)
    (dst / "firmware" / "main.c").write_text(main)
    subprocess.run(["make", "-s", "-C", str(dst / "firmware"), "build/emulate_profile.elf"], check=True,
                   capture_output=True)
    machine = load_machine(load_board(speed.CORES[core][0]).qemu_machine)
    code, text = run_qemu(machine, dst / "firmware" / "build" / "emulate_profile.elf")
    reps = re.search(r"^reps (\d+)", text, re.M)
    counts = {int(i): (int(t), int(n)) for i, t, n in re.findall(r"^layer (-?\d+) (\d+) (\d+)", text, re.M)}
    if code or not reps or slots not in counts or not counts[slots][1]:
        raise TinycError(f"row profile: the instrumented image did not finish on {machine.name}")
    hook = counts[slots][0] / counts[slots][1]          # ticks of one hook call
    per_tick, reps = machine.instructions_per_tick, int(reps.group(1))
    return {name: round((counts[i][0] - counts[i][1] * hook) * per_tick / reps) for i, name in names.items()
            if i in counts}


def benchmark(models, cores, work_dir: Path, blocks: dict, log=lambda msg: None,
              profile_rows: bool = False) -> dict:
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
                    if profile_rows:
                        run["rows"] = row_profile(compiled, core, out)
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
        row["streamed"] = {}
        for passes in PASSES if model in STREAMED else ():
            for core in cores:
                built = compile_streamed(path, model, core, passes)
                if isinstance(built, str):
                    row["streamed"][f"{passes}|{core}"] = dict(error=built)
                    continue
                out = work_dir / f"{model}-stream{passes}-{core.replace('+', 'p')}"
                run = run_one(built, core, out, samples, refs)
                run.update(arena=built.plan.arena_bytes, blocks=block_modes(built))
                row["streamed"][f"{passes}|{core}"] = run
                log(f"[{time.time() - t0:6.1f}s] {model} streamed, {passes} pass(es), on {core}: {run['blocks']}, "
                    f"arena {run['arena']:,}, {run['instructions']:,} instructions")
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
        "emulated output equals TFLite's reference kernels'.", "", *lines, "", *render_auto(result),
        *render_streamed(result), *render_rows(result)])


def render_streamed(result: dict) -> list:
    """The streamed-input table: per model and --stream-passes, the blocks, the arena (the frame not in it) and
    the instructions on each core against the layer-by-layer run (its input in the arena)."""
    cores = result["cores"]
    rows = [r for r in result["rows"] if r.get("streamed")]
    if not rows:
        return []
    head = ["Model", "passes", "blocks (layers)", "arena"]
    for c in cores:
        head += [speed.CORES[c][1], "ratio"]
    head.append("outputs")
    lines = ["", "Streamed input (`--stream-input --stream-passes N`, `--fusion auto` for the core; the frame is not "
             "in the arena; ratio against layer by layer with the frame in the arena; blocks and arena of the "
             "first core's plan):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        for passes in sorted({int(k.split("|")[0]) for k in row["streamed"]}):
            runs = [row["streamed"].get(f"{passes}|{c}", {}) for c in cores]
            first = next((r for r in runs if "error" not in r), None)
            if first is None:
                lines.append(f"| {row['label']} | {passes} | {runs[0].get('error', '-')} |" + " |" * (len(head) - 3))
                continue
            cells = [row["label"], str(passes), first["blocks"], f"{first['arena']:,}"]
            ok = True
            for c, r in zip(cores, runs):
                lbl = row["runs"].get(f"layer by layer|{c}", {}).get("instructions")
                if "error" in r:
                    cells += [r["error"], "-"]
                    ok = False
                    continue
                ok = ok and r["outputs_match"]
                cells += [f"{r['instructions']:,}", _ratio(lbl, r["instructions"])]
            cells.append("equal" if ok else "DIFFER")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_rows(result: dict) -> list:
    """The --rows table: per layer of each fixed block, per core, the layer run whole and its row kernel's calls
    in the block (instrumented profile), and the block's row copies."""
    cores = [c for c in result["cores"] if any(f"fused|{c}" in r["runs"] and "rows" in r["runs"][f"fused|{c}"]
                                               for r in result["rows"])]
    if not cores:
        return []
    head = ["Model", "layer"] + [x for c in cores for x in (f"{speed.CORES[c][1]} whole", "rows", "ratio")]
    lines = ["", "Inside the fixed blocks (--rows: a hook after every statement of the block, their cost taken off):",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        names = row["layers"] + sorted({n for c in cores for n in row["runs"].get(f"fused|{c}", {}).get("rows", {})
                                        if n.startswith(ROW_COPIES)})
        for name in names:
            cells = [row["label"], name if len(name) <= 48 else "..." + name[-45:]]
            for c in cores:
                whole = row["runs"].get(f"layer by layer|{c}", {}).get("layers", {}).get(name)
                fused = row["runs"].get(f"fused|{c}", {}).get("rows", {}).get(name)
                cells += [f"{whole:,}" if whole is not None else "-", f"{fused:,}" if fused is not None else "-",
                          _ratio(whole, fused)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


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


SECTION = "## Depth-first fused blocks (bench/depth_first.py)"


def append_section(path: Path, text: str) -> None:
    """`text` as the section SECTION at the end of the Markdown file `path` (an older one replaced)."""
    old = path.read_text() if path.exists() else ""
    head = old.split("\n" + SECTION + "\n")[0].rstrip("\n")
    path.write_text((head + "\n\n" if head else "") + SECTION + "\n\n" + text.strip("\n") + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--cores", default=",".join(CORES), help=f"comma-separated, of {', '.join(speed.CORES)}")
    ap.add_argument("--blocks", default="", help="MODEL=FIRST:END,...: fuse layers [FIRST, END) of the optimized "
                                                 "graph instead of BLOCKS'")
    ap.add_argument("--rows", action="store_true", help="also profile each layer inside the fixed blocks (an "
                                                        "instrumented copy of each fused project)")
    ap.add_argument("--keep", help="keep the models, libraries and firmware projects in this directory (a model "
                                   "converted there before is reused)")
    ap.add_argument("--out", help="also write the table (Markdown) to this file (TensorFlow's converter prints "
                                  "much to stdout)")
    ap.add_argument("--append", help="also put the tables into this Markdown file (make bench: bench/RESULTS.md, "
                                     "which bench/speed.py writes first) as its last section, replacing an older one")
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
        result = benchmark(models, cores, Path(a.keep) if a.keep else Path(tmp), blocks, log, a.rows)
    text = render(result)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    if a.append:
        append_section(Path(a.append), text)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    broken = [r for r in result["rows"] if "error" in r or not all(v["outputs_match"] for v in r["runs"].values())
              or not all(v.get("outputs_match", True) for v in r.get("auto", {}).values())
              or not all(v.get("outputs_match", True) for v in r.get("streamed", {}).values())]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
