"""Speed benchmark (`make bench`): instructions per inference of the MLPerf Tiny models (and MobileNetV2-0.35, a conv
autoencoder) on each Cortex-M core under QEMU, against TFLite Micro + CMSIS-NN; writes bench/RESULTS.md.

For each model: build it (bench/mlperf_tiny.py, random weights), convert it to a fully-int8 TFLite model (seeded
representative dataset, tests/int8_zoo.py; the 16x8 models of INT16_TWINS to TFLite's 16x8 instead,
tests/int16_zoo.py), compile it with tinyc (fast kernels), then on each core's board run
the emulation images (instructions per inference, per layer) and build the board image (flash, and the model's
code per kernel from the ELF symbol table). TFLite's reference kernels run once per model and every emulated
output is compared with theirs, byte for byte (--host-check: with the host build's too, as `tinyc run
--emulate` does). On the M4 the plain-C reference kernels run too, to show what the fast kernels gain.

Instruction counts are QEMU -icount counts (one guest instruction per ns of virtual time), not cycles. With --soc
the M0+'s board image (the Pico's UF2) also runs on rp2040js, an emulated RP2040: cycles per inference, per MAC and
milliseconds at the board's clock (`tinyc run --emulate --soc`; lower bounds: no flash wait states or XIP misses).

Usage: python bench/speed.py [--models vww,kws,resnet8,ad,mbv2,convae,attn,lstm,kws16,dae,dae16]
                             [--cores m0+,m4,m7,m33]
                             [--quick] [--jobs N] [--out bench/RESULTS.md] [--json FILE] [--keep DIR]
                             [--host-check] [--soc]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")   # Keras, per probe model
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (ROOT / "tests", HERE, ROOT):     # ROOT last, so first: the tinyc of this checkout is the one measured
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# core -> (board, label); one board per core.
CORES = {
    "m0+": ("pico", "Cortex-M0+"),
    "m4": ("nucleo-f412zg", "Cortex-M4"),
    "m7": ("stm32f746g-disco", "Cortex-M7"),
    "m33": ("pico2", "Cortex-M33"),
}
# A board with the same core (and QEMU machine) for a model whose arena does not fit the core's board: MobileNetV2's
# 249 KB arena is more than the F746's largest SRAM region (240 KB).
FALLBACK_BOARDS = {"m7": ["nucleo-h743zi"]}
# model -> (bench/mlperf_tiny.py builder, label)
MODELS = {
    "vww": ("vww_mobilenet_v1", "VWW, MobileNetV1-0.25 @96x96"),
    "kws": ("kws_ds_cnn", "KWS, DS-CNN"),
    "resnet8": ("ic_resnet8", "IC, ResNet-8"),
    "ad": ("ad_autoencoder", "AD, FC autoencoder"),
    "mbv2": ("mobilenet_v2_035", "MobileNetV2-0.35 @144x144"),
    "convae": ("conv_autoencoder", "Conv autoencoder, Conv2DTranspose @32x32"),
    "attn": ("attention_block", "Attention block, 2 heads of 16 @32 steps"),
    "lstm": ("kws_lstm", "KWS, LSTM of 64 units @49x10"),
    "kws16": ("kws_ds_cnn", "KWS, DS-CNN, 16x8"),
    "dae": ("denoise_autoencoder", "Denoising autoencoder @16x64"),
    "dae16": ("denoise_autoencoder", "Denoising autoencoder @16x64, 16x8"),
}
# models converted to TFLite's 16x8 scheme (int16 activations, int8 weights) instead of int8, and their int8 twin
# (the same builder and weights): the "16x8 against int8" table
INT16_TWINS = {"kws16": "kws", "dae16": "dae"}
RATIO_GOAL = {"m4": 1.5}      # 16x8 / int8 instructions at most
# TFLite Micro + CMSIS-NN, instructions per inference counted the same way (QEMU -icount). The M33 has no figure
# of its own: it is compared with the M4's. MobileNetV2 has none.
TFLM = {
    "vww": {"m7": 24.03e6, "m4": 24.10e6, "m0+": 86.9e6},
    "kws": {"m7": 7.65e6, "m4": 7.70e6, "m0+": 29.0e6},
    "resnet8": {"m7": 30.03e6, "m4": 29.86e6, "m0+": 97.6e6},
    "ad": {"m7": 0.583e6, "m4": 0.583e6, "m0+": 1.76e6},
}
TFLM_COLUMN = {"m33": "m4"}
SIZE_HINT = {"mbv2": 25.4, "resnet8": 12.5, "vww": 7.5, "kws": 2.7, "kws16": 2.7, "convae": 1.4, "dae": 1.1,
             "dae16": 1.1, "lstm": 0.9, "ad": 0.3, "attn": 0.2}   # MACs (M): largest converted first
GOAL = {"m0+": 0.7, "m4": 0.5, "m7": 0.5, "m33": 0.5}     # ours / TFLM at most
REFERENCE_CORE = "m4"     # where the plain-C reference kernels run too
SOC_CORE = "m0+"          # --soc: its board (the Pico) runs on rp2040js too
SEED = 0


def tflm_figure(model: str, core: str) -> float | None:
    return TFLM.get(model, {}).get(TFLM_COLUMN.get(core, core))


# ---------------------------------------------------------------------------------------------------------------
# the steps

def convert(model: str, directory: Path) -> str:
    """The model as a fully-int8 TFLite file (int8 input and output; representative data seeded), or for the
    models of INT16_TWINS as TFLite's 16x8 (int16 input and output, the same representative data)."""
    import int8_zoo
    import int16_zoo
    import mlperf_tiny
    to_tflite = int16_zoo.to_int16_tflite if model in INT16_TWINS else int8_zoo.to_int8_tflite
    return to_tflite(mlperf_tiny.build(MODELS[model][0], seed=SEED), directory / f"{model}.tflite")


@dataclass
class Prepared:
    model: str
    path: str
    fast: object            # tinyc Compiled, kernels="fast"
    reference: object       # kernels="reference", or None
    samples: list           # one input sample per model input
    refs: list              # per output [1, ...]: TFLite's reference kernels


def arena_limit(cores) -> int:
    """The smallest arena budget of the cores' boards: the fast library is compiled once for all of them, with
    its kernel scratch within what each board's firmware has (as `tinyc run --board` does for one)."""
    from tinyc.boards import load_board
    from tinyc.firmware.project import arena_budget
    return min(arena_budget(load_board(CORES[c][0])) for c in cores)


def prepare(model: str, path: str, with_reference: bool, limit: int | None = None) -> Prepared:
    """Compile (fast, and plain-C reference kernels if asked), pick the input, and compute the outputs the
    emulated runs must give according to the reference runtime, once for all cores (`limit`: arena_limit)."""
    from tinyc.compiler import codegen_options, compile_model
    from tinyc.firmware.project import sample_inputs
    from tinyc.verify import reference_outputs
    fast = compile_model(path, model, options=codegen_options(kernels="fast", arena_limit=limit))
    ref = compile_model(path, model, options=codegen_options(kernels="reference")) if with_reference else None
    samples = sample_inputs(fast, None, SEED)
    with tempfile.TemporaryDirectory(prefix="tinyc-bench-") as tmp:
        refs, _ = reference_outputs(fast, path, samples, "nchw", Path(tmp))
    return Prepared(model, path, fast, ref, samples, refs)


def host_outputs(prep: Prepared) -> list:
    """The host build of the fast library on the same input (gcc with sanitizers: the slow part of checking)."""
    from tinyc.verify import run_generated
    return run_generated(prep.fast, prep.samples)


def outputs_match(compiled, emulated, expected, reference: bool) -> bool:
    """As `tinyc run --emulate`: every emulated output equals the reference runtime's (`reference`; int8: bit
    for bit, ONNX QDQ: within one LSB) or the host build's (int8: bit for bit; float: verify's tolerance)."""
    import numpy as np

    from tinyc.verify import compare, lsb_tolerance
    for k, (name, emu) in enumerate(zip(compiled.plan.graph.outputs, emulated)):
        if reference:
            ok = compare(emu, expected[k], lsb_tolerance(compiled, name))["ok"]
        elif np.issubdtype(emu.dtype, np.integer):     # int8, int16 (16x8): bit for bit
            ok = bool(np.array_equal(emu, expected[k]))
        else:
            ok = compare(emu, expected[k])["ok"]
        if not ok:
            return False
    return True


def code_by_layer(functions: dict, prefix: str, layers) -> tuple[dict, int]:
    """({layer index: code bytes}, bytes of the other model functions: run loop, API, shared helpers). A layer's
    functions are `<prefix>_l<index>_<op>` (a fused block's `<prefix>_l<index>_fused` and its row kernels
    `..._fused_r<k>`), maybe cloned by gcc (`.constprop.0`, `.part.0`, ...); one that gcc inlined into the run loop
    has no symbol of its own (it is then not in the dict, its code counts as other)."""
    per, used = {}, set()
    for info in layers:
        if info["alias"] or not info.get("kernel"):
            continue
        names = [n for n in functions if n.startswith(f"{prefix}_l{info['index']}_")]
        if names:
            per[info["index"]] = sum(functions[n] for n in names)
            used.update(names)
    return per, sum(v for n, v in functions.items() if n not in used)


def soc_run(compiled, board, images: dict, refs, emulated) -> dict:
    """The board image on rp2040js (`tinyc run --emulate --soc`): {'soc': cycles, per MAC, ms at the board file's
    clock, the emulator's clocks, outputs vs the reference runtime and the QEMU emulation image}, or
    {'soc_error': the one-line reason}."""
    import numpy as np

    from tinyc.errors import TinycError
    from tinyc.firmware.run import soc_cycle_budget
    from tinyc.firmware.soc import parse_board_console, run_board_image
    try:
        r = run_board_image(images.get("uf2", images["elf"]), board, max_cycles=soc_cycle_budget(compiled))
        outputs = parse_board_console(r["uart"], compiled)["outputs"]
    except TinycError as e:
        return dict(soc_error=str(e))
    clock, macs = r["board_cpu_clock_hz"], compiled.library.macs
    match_ref = outputs_match(compiled, outputs, refs, True)
    match_emu = all(np.array_equal(o, e[:1]) for o, e in zip(outputs, emulated))
    return dict(soc=dict(cycles=r["cycles"], cycles_per_mac=round(r["cycles"] / macs, 3) if macs else None,
                         clock_hz=clock, ms=round(1000 * r["cycles"] / clock, 3), clk_sys=r["clk_sys"],
                         clk_peri=r["clk_peri"], emulator=r["emulator"], wall_s=r["wall_s"],
                         cycles_per_s=r["emulator_cycles_per_s"], outputs_match_reference=match_ref,
                         outputs_match_emulation=match_emu, outputs_match=match_ref and match_emu))


def run_core(prep: Prepared, core: str, work_dir: Path, kernels: str = "fast", soc: bool = False) -> dict:
    """One model on one core: emulated instructions (per layer with the fast kernels), outputs checked against
    the reference runtime (the emulated outputs are kept in '_outputs' for the check against the host build),
    board image built for flash and code sizes; with `soc` (M0+, fast kernels) the board image also runs on
    rp2040js for cycles."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.errors import TinycError
    from tinyc.firmware.build import build_firmware
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.model_size import model_symbols
    from tinyc.firmware.project import check_firmware_fits, write_firmware
    start = time.time()
    compiled = prep.fast if kernels == "fast" else prep.reference
    lib = compiled.library
    row = dict(model=prep.model, core=core, kernels=kernels, macs=lib.macs, weight_bytes=lib.weight_bytes,
               arena_bytes=lib.arena_bytes)
    out = work_dir / f"{prep.model}-{core.replace('+', 'p')}-{kernels}"
    profile = kernels == "fast"
    try:
        board, misfit = None, None
        for name in [CORES[core][0], *FALLBACK_BOARDS.get(core, [])]:
            try:
                check_firmware_fits(compiled, load_board(name))
            except TinycError as e:
                misfit = misfit or str(e)
                continue
            board = load_board(name)
            break
        if board is None:
            raise TinycError(misfit)
        row["board"] = board.name
        if board.name != CORES[core][0]:
            row["instead_of"] = dict(board=CORES[core][0], reason=misfit)
        write_library(lib, str(out), force=True)
        write_firmware(compiled, board, str(out), prep.samples)
        res = emulate(compiled, board, out, profile)
    except TinycError as e:
        row.update(error=str(e), seconds=round(time.time() - start, 1))
        return row
    row.update(instructions=res["instructions"], instructions_per_mac=res["instructions_per_mac"],
               reps=res["reps"], _outputs=res["outputs"],
               outputs_match_reference=outputs_match(compiled, res["outputs"], prep.refs, True))
    if profile:
        kernel_of = {info["index"]: info["kernel"] for info in lib.layers}
        row["layers"] = [dict(index=r["index"], op=r["op"], kernel=kernel_of.get(r["index"]) or "-", macs=r["macs"],
                              instructions=r["instructions"]) for r in res["layers"]]
        row["profiled_instructions"] = res["profiled_instructions"]
        size = build_firmware(out)
        fw_build = out / "firmware" / "build"
        functions = model_symbols(fw_build / "firmware.elf", f"{lib.prefix}.c", lib.prefix)["functions"]
        per_layer, other = code_by_layer(functions, lib.prefix, lib.layers)
        code_by_kernel, inlined = {}, []
        for info in lib.layers:
            if info["alias"] or not info.get("kernel"):
                continue
            if info["index"] in per_layer:
                code_by_kernel[info["kernel"]] = code_by_kernel.get(info["kernel"], 0) + per_layer[info["index"]]
            else:
                inlined.append(info["index"])
        row.update(flash_bytes=size["flash_bytes"], text_bytes=size["text_bytes"], data_bytes=size["data_bytes"],
                   code_bytes=sum(functions.values()), code_by_kernel=code_by_kernel, code_other_bytes=other,
                   inlined_layers=inlined)
        if soc and core == SOC_CORE:
            row.update(soc_run(compiled, board, size["images"], prep.refs, res["outputs"]))
    row["seconds"] = round(time.time() - start, 1)
    return row


# ---------------------------------------------------------------------------------------------------------------
# the pipeline

def _import_for_workers() -> None:
    """Import here, in one thread, what the worker threads would otherwise import lazily at the same time:
    TensorFlow's modules import each other in cycles, and two threads importing them at once can deadlock
    (Python then raises _DeadlockError in one of them)."""
    import elftools.elf.elffile  # noqa: F401
    import tensorflow  # noqa: F401
    import tensorflow.lite.python.interpreter  # noqa: F401
    import tensorflow.lite.python.schema_py_generated  # noqa: F401

    import tinyc.boards  # noqa: F401
    import tinyc.compiler  # noqa: F401
    import tinyc.firmware.build  # noqa: F401
    import tinyc.firmware.emulate  # noqa: F401
    import tinyc.firmware.project  # noqa: F401
    import tinyc.firmware.soc  # noqa: F401
    import tinyc.reference  # noqa: F401
    import tinyc.verify  # noqa: F401


def benchmark(models, cores, work_dir, reference_core: str | None = REFERENCE_CORE, jobs: int = 2,
              log=lambda msg: None, host_check: bool = False, soc: bool = False) -> dict:
    """Run the benchmark; returns {'models': {model: facts}, 'runs': [one dict per (model, core, kernels)]}.
    Conversion (TensorFlow) runs in up to two processes of its own, the largest model first (in this thread
    when jobs == 1); compiling, the reference outputs, the emulated runs and the host build (`host_check`) of
    the models already converted go on meanwhile in `jobs` worker threads (their work is mostly in gcc, make
    and QEMU subprocesses). A run's 'outputs_match' is its match with the reference runtime and, when
    `host_check`, with the host build. `soc`: the M0+ board image runs on rp2040js too (row 'soc' or 'soc_error')."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    with_reference = reference_core is not None and reference_core in cores
    runs, facts, host, futures, lock = [], {}, {}, [], threading.Lock()
    t0 = time.time()

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        def submit(fn, *args):
            f = pool.submit(fn, *args)
            with lock:
                futures.append(f)

        def one_run(prep, core, kernels):
            try:
                row = run_core(prep, core, work_dir, kernels, soc)
            except Exception as e:     # a broken run is a row of the report, not the end of the benchmark
                row = dict(model=prep.model, core=core, kernels=kernels, error=f"{type(e).__name__}: {e}",
                           seconds=0)
            with lock:
                runs.append(row)
            what = f"{row['instructions']:,} instructions" if "instructions" in row else f"error: {row['error']}"
            if "soc" in row:
                what += f", {row['soc']['cycles']:,} cycles on rp2040js"
            elif "soc_error" in row:
                what += f", rp2040js: {row['soc_error']}"
            log(f"[{time.time() - t0:6.1f}s] {prep.model} on {core} ({kernels}): {what} ({row['seconds']} s)")

        def host_run(prep):
            start = time.time()
            try:
                out = host_outputs(prep)
            except Exception as e:
                out = f"{type(e).__name__}: {e}"
            with lock:
                host[prep.model] = out
            log(f"[{time.time() - t0:6.1f}s] {prep.model}: host build run ({time.time() - start:.1f} s)")

        def prepare_and_submit(model, path):
            start = time.time()
            try:
                prep = prepare(model, path, with_reference, arena_limit(cores))
            except Exception as e:     # e.g. the compiler refuses the model: every run of it is an error row
                error = f"{type(e).__name__}: {e}"
                log(f"[{time.time() - t0:6.1f}s] {model}: {error}")
                with lock:
                    facts[model] = dict(label=MODELS[model][1], error=error)
                    runs.extend(dict(model=model, core=c, kernels=k, error=error, seconds=0)
                                for c, k in [(c, "fast") for c in cores]
                                + ([(reference_core, "reference")] if with_reference else []))
                return
            lib = prep.fast.library
            with lock:
                facts[model] = dict(label=MODELS[model][1], macs=lib.macs, weight_bytes=lib.weight_bytes,
                                    arena_bytes=lib.arena_bytes,
                                    layers=sum(1 for info in lib.layers if not info["alias"]), _prep=prep)
            log(f"[{time.time() - t0:6.1f}s] {model}: compiled, reference outputs ({time.time() - start:.1f} s)")
            for core in cores:       # submitted before this task ends, so the waiting loop below sees them
                submit(one_run, prep, core, "fast")
            if with_reference:
                submit(one_run, prep, reference_core, "reference")
            if host_check:
                submit(host_run, prep)

        def converted(model, path_or_error):
            if not isinstance(path_or_error, str):
                error = f"{type(path_or_error).__name__}: {path_or_error}"
                log(f"[{time.time() - t0:6.1f}s] {model}: conversion failed: {error}")
                with lock:
                    facts[model] = dict(label=MODELS[model][1], error=error)
                    runs.extend(dict(model=model, core=c, kernels="fast", error=error, seconds=0) for c in cores)
                return
            log(f"[{time.time() - t0:6.1f}s] {model}: converted to {'16x8' if model in INT16_TWINS else 'int8'} "
                "TFLite")
            submit(prepare_and_submit, model, path_or_error)

        if jobs > 1:     # TensorFlow in processes of its own: no GIL shared with the worker threads
            largest_first = sorted(models, key=lambda m: -SIZE_HINT.get(m, 0))
            with ProcessPoolExecutor(min(2, len(models)), mp_context=mp.get_context("spawn")) as converter:
                pending = {converter.submit(convert, m, work_dir): m for m in largest_first}
                _import_for_workers()     # meanwhile
                for f in as_completed(pending):
                    converted(pending[f], f.exception() or f.result())
        else:
            _import_for_workers()
            for model in models:
                try:
                    path = convert(model, work_dir)
                except Exception as e:
                    path = e
                converted(model, path)
        while True:
            with lock:
                pending = [f for f in futures if not f.done()]
            if not pending:
                break
            wait(pending)
        for f in futures:
            f.result()       # re-raise a worker's exception
    for row in runs:         # the check against the host build, once both are there
        emulated = row.pop("_outputs", None)
        if emulated is None:
            continue
        row["outputs_match_host"] = None
        if host_check:
            expected = host.get(row["model"])
            if isinstance(expected, list):
                compiled = facts[row["model"]]["_prep"]
                compiled = compiled.fast if row["kernels"] == "fast" else compiled.reference
                row["outputs_match_host"] = outputs_match(compiled, emulated, expected, False)
            else:
                row["outputs_match_host"] = False
                row["host_error"] = expected or "the host build did not run"
        row["outputs_match"] = row["outputs_match_reference"] and row["outputs_match_host"] is not False
    for f in facts.values():
        f.pop("_prep", None)
    order = {m: i for i, m in enumerate(models)}
    corder = {c: i for i, c in enumerate(CORES)}
    runs.sort(key=lambda r: (order[r["model"]], r["kernels"] != "fast", corder[r["core"]]))
    return dict(models={m: facts[m] for m in models if m in facts}, cores=list(cores), runs=runs,
                host_check=host_check, soc=soc, seconds=round(time.time() - t0, 1))


# ---------------------------------------------------------------------------------------------------------------
# the report

def git_state() -> str:
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout
    head = git("rev-parse", "--short=12", "HEAD").strip() or "unknown"
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--", "tinyc", "templates", "runtime_c").splitlines()
             if ln.strip()]
    if dirty:
        return f"`{head}` plus uncommitted changes in {', '.join(f'`{p}`' for p in dirty)}"
    return f"`{head}`"


def _n(x) -> str:
    return f"{x:,}"


def _m(x) -> str:
    return f"{x / 1e6:.3f} M" if x < 10e6 else f"{x / 1e6:.2f} M"


def _per(ins, macs) -> str:
    return f"{ins / macs:.2f}" if macs else "-"


def group_layers(layers, key: str) -> dict:
    """{kernel or op: dict(layers, macs, instructions)} in order of first appearance."""
    out = {}
    for r in layers:
        g = out.setdefault(r[key], dict(layers=0, macs=0, instructions=0))
        g["layers"] += 1
        g["macs"] += r["macs"]
        g["instructions"] += r["instructions"]
    return out


def render_soc(result: dict, models: dict, fast: dict) -> list[str]:
    """The --soc table: the M0+ board image's cycles on rp2040js beside its QEMU instruction count."""
    rows = [(m, f, fast[(m, SOC_CORE)]) for m, f in models.items()
            if any(k in fast.get((m, SOC_CORE), {}) for k in ("soc", "soc_error"))]
    if not rows:
        return []
    board = CORES[SOC_CORE][0]
    clocks = {r["soc"]["clock_hz"] for _, _, r in rows if "soc" in r}
    mhz = "/".join(f"{c / 1e6:g}" for c in sorted(clocks)) or "-"
    emulators = sorted({r["soc"]["emulator"] for _, _, r in rows if "soc" in r})
    speeds = [r["soc"]["cycles_per_s"] for _, _, r in rows if "soc" in r and r["soc"]["cycles_per_s"]]
    L = ["## RP2040 cycles (rp2040js)", "",
         f"`--soc`: the {CORES[SOC_CORE][1]} board image as it ships ({board}'s UF2, the same build as the flash "
         f"figures below) run on {', '.join(emulators) or 'rp2040js'}, an emulated RP2040 (`tinyc run --emulate "
         "--soc`): it starts where the bootrom hands over after boot2, brings its clocks up through the XOSC, PLL "
         "and CLOCKS registers, and rp2040js's Cortex-M0+ cycle counter is read at marks the image stores around "
         "the inference. The emulator's clk_sys and clk_peri after the bring-up are checked against the board "
         "file's; milliseconds are at that clock. **Lower bounds** for a real board: flash reads have no wait "
         "states and no XIP cache misses in rp2040js. \"outputs\": equal to TFLite's reference kernels' and to "
         "the QEMU emulation image's, byte for byte."
         + (f" Emulator speed on this machine: {min(speeds) / 1e6:.0f}-{max(speeds) / 1e6:.0f} M cycles/s."
            if speeds else ""), "",
         f"| model | MACs | M0+ instructions (QEMU) | RP2040 cycles (rp2040js) | cycles / instruction | cycles per MAC "
         f"| ms at {mhz} MHz | clk_sys / clk_peri (MHz) | outputs |",
         "|---|---|---|---|---|---|---|---|---|"]
    for m, f, r in rows:
        ins = _n(r["instructions"]) if "instructions" in r else "-"
        if "soc_error" in r:
            L.append(f"| {f['label']} | {_n(f['macs'])} | {ins} | not run: {r['soc_error'][:160]} |" + " |" * 5)
            continue
        s = r["soc"]
        ratio = f"{s['cycles'] / r['instructions']:.2f}" if r.get("instructions") else "-"
        clk = f"{s['clk_sys'] / 1e6:g} / {s['clk_peri'] / 1e6:g}"
        if s["clk_sys"] != s["clock_hz"]:
            clk += " (board file: " + f"{s['clock_hz'] / 1e6:g})"
        L.append(f"| {f['label']} | {_n(f['macs'])} | {ins} | {_n(s['cycles'])} | {ratio} | "
                 f"{s['cycles_per_mac'] if s['cycles_per_mac'] is not None else '-'} | {s['ms']:.2f} | {clk} | "
                 f"{'yes' if s['outputs_match'] else '**MISMATCH**'} |")
    return L + [""]


def render_int16(models: dict, fast: dict, cores) -> list[str]:
    """The "16x8 against int8" table: each 16x8 model beside its int8 twin, per core."""
    pairs = [(m, INT16_TWINS[m]) for m in models if m in INT16_TWINS and INT16_TWINS[m] in models]
    if not pairs:
        return []
    label = {c: CORES[c][1] for c in CORES}
    L = ["## 16x8 against int8", "",
         "The same Keras model and weights converted by TFLiteConverter twice: fully int8, and 16x8 "
         "(`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`: int16 activations, int8 weights, int64 "
         "biases), both compiled by tinyc with its fast kernels and run as above (outputs equal to TFLite's "
         "reference kernels). Ratio = 16x8 / int8; goal: " + ", ".join(
             f"<= {g} on the {label[c]}" for c, g in RATIO_GOAL.items()) + ". Arena and weights are the "
         "library's (`Library.arena_bytes`, `Library.weight_bytes`); flash is the whole board image.", "",
         "| model | core | int8 instructions | 16x8 instructions | ratio | goal | met | int8 arena | 16x8 arena "
         "| int8 weights | 16x8 weights | int8 flash | 16x8 flash |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m16, m8 in pairs:
        for c in cores:
            a, b = fast.get((m8, c), {}), fast.get((m16, c), {})
            if "instructions" not in a or "instructions" not in b:
                why = (a.get("error") or b.get("error") or "not run")[:160]
                L.append(f"| {models[m16]['label']} | {label[c]} | not run: {why} |" + " |" * 10)
                continue
            ratio, goal = b["instructions"] / a["instructions"], RATIO_GOAL.get(c)
            met = "-" if goal is None else ("yes" if ratio <= goal else "**no**")
            L.append(f"| {models[m16]['label']} | {label[c]} | {_n(a['instructions'])} | {_n(b['instructions'])} | "
                     f"{ratio:.2f} | {f'<= {goal}' if goal else '-'} | {met} | {_n(models[m8]['arena_bytes'])} | "
                     f"{_n(models[m16]['arena_bytes'])} | {_n(models[m8]['weight_bytes'])} | "
                     f"{_n(models[m16]['weight_bytes'])} | {_n(a.get('flash_bytes', 0))} | "
                     f"{_n(b.get('flash_bytes', 0))} |")
    return L + [""]


def render(result: dict, command: str = "make bench") -> str:
    models, cores = result["models"], result["cores"]
    fast = {(r["model"], r["core"]): r for r in result["runs"] if r["kernels"] == "fast"}
    plain = {(r["model"], r["core"]): r for r in result["runs"] if r["kernels"] == "reference"}
    label = {c: CORES[c][1] for c in CORES}
    L = ["# tinyc speed benchmark", "",
         f"Generated by `{command}` (bench/speed.py); every run overwrites this file. tinyc commit {git_state()}.",
         "",
         "Instruction counts are QEMU `-icount` instruction counts (one guest instruction per ns of virtual time, "
         "read through SysTick; `tinyc run --emulate`), **not cycles**: flash wait states, the Picos' XIP cache "
         "misses and the M7's dual issue are not modelled.", "",
         "Models: the MLPerf Tiny reference architectures, MobileNetV2-0.35 @144x144 and a conv autoencoder "
         "(Conv2DTranspose) with random weights "
         "(bench/mlperf_tiny.py), converted to fully-int8 TFLite by TFLiteConverter (seeded representative "
         "dataset, int8 input and output), compiled by tinyc with its fast kernels (`kernels=\"fast\"`, the "
         "default), run on one seeded random input. Boards: " + ", ".join(
             f"{label[c]} = {CORES[c][0]}" for c in cores) + ". \"outputs\": the emulated outputs equal "
         + ("the host build's and " if result.get("host_check", True) else "")
         + "TFLite's reference kernels', byte for byte. The 16x8 models (int16 activations, int8 weights) are "
         "converted to TFLite's 16x8 scheme instead, with the same representative dataset: see \"16x8 against "
         "int8\".", "",
         "TFLM: TFLite Micro with CMSIS-NN, instructions per inference counted the same way; the M33 is compared "
         "with the M4 figure (there is no M33 one); MobileNetV2 and the autoencoder have none. Goal: ours / TFLM "
         + ", ".join(f"<= {GOAL[c]} on {label[c]}" for c in CORES) + ".", ""]
    if any(plain.values()):
        L += [f"\"plain C\": the same model with tinyc's plain-C reference kernels (`kernels=\"reference\"`) on "
              f"the {label[REFERENCE_CORE]}; speed-up = plain C / fast.", ""]

    # main table
    L += ["## Instructions per inference", "",
          "| model | MACs | core | instructions | per MAC | TFLM | ours / TFLM | goal | met | outputs "
          "| plain C (M4) | speed-up |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    passed = failed = 0
    notes = []
    for m, f in models.items():
        for c in cores:
            r = fast.get((m, c))
            if r is None:
                continue
            macs = _n(f["macs"]) if "macs" in f else "-"
            head = f"| {f['label']} | {macs} | {label[c]} |"
            if "error" in r:
                L.append(head + f" not run: {r['error'][:160]} |" + " |" * 8)
                continue
            tflm = tflm_figure(m, c)
            ratio = r["instructions"] / tflm if tflm else None
            met = "-" if ratio is None else ("yes" if ratio <= GOAL[c] else "**no**")
            if ratio is not None:
                passed, failed = passed + (ratio <= GOAL[c]), failed + (ratio > GOAL[c])
            p = plain.get((m, c))
            pc = sp = "-"
            if p is not None and "instructions" in p:
                pc = _n(p["instructions"]) + ("" if p["outputs_match"] else " (outputs MISMATCH)")
                sp = f"{p['instructions'] / r['instructions']:.2f}x"
            if "instead_of" in r:
                head = f"| {f['label']} | {macs} | {label[c]} (on {r['board']}) |"
                notes.append(f"{f['label']} on the {label[c]} ran on {r['board']} (same core and QEMU machine): "
                             f"{r['instead_of']['reason']}")
            L.append(head + f" {_n(r['instructions'])} | {_per(r['instructions'], r['macs'])} | "
                     f"{_m(tflm) if tflm else '-'} | {f'{ratio:.2f}' if ratio else '-'} | "
                     f"{f'<= {GOAL[c]}' if ratio else '-'} | {met} | "
                     f"{'yes' if r['outputs_match'] else '**MISMATCH**'} | {pc} | {sp} |")
    L += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    L += [f"Goals met: {passed} of {passed + failed}.", ""]
    L += render_int16(models, fast, cores)
    L += render_soc(result, models, fast)

    # per layer kind
    L += ["## Instructions per layer kind", "",
          "Per-layer counts come from a second image with profiling hooks between layers (their own cost "
          "subtracted); \"per MAC\" is instructions / MACs of the group. Grouped by the kernel each layer uses "
          "(`Library.layers[...]['kernel']`), then by op.", ""]
    for m, f in models.items():
        rows = [(c, fast[(m, c)]) for c in cores if "layers" in fast.get((m, c), {})]
        if not rows:
            continue
        L += [f"### {f['label']} ({_n(f['macs'])} MACs, {f['layers']} layers)", ""]
        for key, title in (("kernel", "kernel"), ("op", "op")):
            groups = {c: group_layers(r["layers"], key) for c, r in rows}
            names = list(groups[rows[0][0]])
            L.append(f"| {title} | layers | MACs | " + " | ".join(
                f"{label[c]}: instructions (%, per MAC)" for c, _ in rows) + " |")
            L.append("|---|---|---|" + "---|" * len(rows))
            for name in names:
                g0 = groups[rows[0][0]][name]
                cells = []
                for c, r in rows:
                    g = groups[c][name]
                    share = 100 * g["instructions"] / max(r["profiled_instructions"], 1)
                    cells.append(f"{_n(g['instructions'])} ({share:.1f}%, {_per(g['instructions'], g['macs'])})")
                L.append(f"| `{name}` | {g0['layers']} | {_n(g0['macs'])} | " + " | ".join(cells) + " |")
            L.append("")

    # code size per kernel
    L += ["## Code size per kernel", "",
          "Bytes of the model's functions in the board image (-O2), from the ELF symbol table: the layer "
          "functions `<model>_l<index>_<op>` (with gcc's clones) summed per kernel; \"other\" is the rest of the "
          "model's code (run loop, API, shared helpers, and any layer function gcc inlined into the run loop).", ""]
    code_rows = [(m, c) for m in models for c in cores if "code_by_kernel" in fast.get((m, c), {})]
    if code_rows:
        cs = [c for c in cores if any(cc == c for _, cc in code_rows)]
        L += ["| model | kernel | layers | " + " | ".join(label[c] for c in cs) + " |",
              "|---|---|---|" + "---|" * len(cs)]
        for m, f in models.items():
            have = [c for c in cs if (m, c) in code_rows]
            if not have:
                continue
            first = fast[(m, have[0])]
            counts = group_layers(first["layers"], "kernel")
            kernels = list(counts)
            for k in kernels:
                cells = [_n(fast[(m, c)]["code_by_kernel"].get(k, 0)) if (m, c) in code_rows else "-" for c in cs]
                L.append(f"| {f['label']} | `{k}` | {counts[k]['layers']} | " + " | ".join(cells) + " |")
            cells = []
            for c in cs:
                r = fast.get((m, c), {})
                inl = f" ({len(r['inlined_layers'])} layers inlined)" if r.get("inlined_layers") else ""
                cells.append(_n(r["code_other_bytes"]) + inl if (m, c) in code_rows else "-")
            L.append(f"| {f['label']} | other | | " + " | ".join(cells) + " |")
            L.append(f"| {f['label']} | **all model code** | {f['layers']} | " + " | ".join(
                f"**{_n(fast[(m, c)]['code_bytes'])}**" if (m, c) in code_rows else "-" for c in cs) + " |")
        L.append("")

    # flash and arena
    L += ["## Flash and arena", "",
          "Model code: the model's functions as above; weights: `Library.weight_bytes` (the constants the "
          "kernels use); firmware flash: text + data of the whole board image (the model, the sample input "
          "baked into main.c, startup, console, libgcc helpers); arena: all activations incl. inputs and outputs "
          "and kernel scratch (`Library.arena_bytes`).",
          "",
          "| model | core (board) | model code | weights | model code + weights | firmware flash | arena |",
          "|---|---|---|---|---|---|---|"]
    for m, f in models.items():
        for c in cores:
            r = fast.get((m, c), {})
            if "code_bytes" not in r:
                continue
            L.append(f"| {f['label']} | {label[c]} ({r['board']}) | {_n(r['code_bytes'])} | {_n(f['weight_bytes'])} | "
                     f"{_n(r['code_bytes'] + f['weight_bytes'])} | {_n(r['flash_bytes'])} | "
                     f"{_n(f['arena_bytes'])} |")
    L += ["", f"Wall time of this run: {result['seconds']:.0f} s.", ""]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--cores", default=",".join(CORES), help=f"comma-separated, of {', '.join(CORES)}")
    ap.add_argument("--quick", action="store_true", help="only the M4 (development)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="worker threads (default: CPUs)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="the Markdown report (default bench/RESULTS.md)")
    ap.add_argument("--json", help="also write the raw results as JSON")
    ap.add_argument("--keep", help="keep the models, libraries and firmware projects in this directory")
    ap.add_argument("--soc", action="store_true",
                    help="also run the M0+ board image (the Pico's UF2) on rp2040js, an emulated RP2040: cycles per "
                         "inference and per MAC, ms at the board's clock (needs Node.js and rp2040js: make setup)")
    ap.add_argument("--host-check", action="store_true",
                    help="compare the emulated outputs with the host build too (a gcc build with sanitizers per "
                         "model: 15-20%% more time), not only with TFLite's reference kernels")
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    cores = ["m4"] if a.quick else [c for c in a.cores.split(",") if c]
    bad = [m for m in models if m not in MODELS] + [c for c in cores if c not in CORES]
    if bad:
        ap.error(f"unknown model or core: {', '.join(bad)}")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="tinyc-bench-") as tmp:
        result = benchmark(models, cores, Path(a.keep) if a.keep else Path(tmp), REFERENCE_CORE, a.jobs, log,
                           host_check=a.host_check, soc=a.soc)
    args = [x for x in (argv if argv is not None else sys.argv[1:])]
    command = "make bench" if not args else "python bench/speed.py " + " ".join(args)
    text = render(result, command)
    Path(a.out).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    print(text.split("## Instructions per layer kind")[0])
    print(f"wrote {a.out} ({result['seconds']:.0f} s)")
    broken = [r for r in result["runs"] if "error" in r or not r.get("outputs_match") or "soc_error" in r
              or ("soc" in r and not r["soc"]["outputs_match"])]
    for r in broken:
        what = r.get("error") or r.get("host_error") or (
            "outputs differ from the reference runtime's" if not r.get("outputs_match_reference")
            else "outputs differ from the host build's" if not r.get("outputs_match")
            else f"rp2040js: {r['soc_error']}" if "soc_error" in r
            else "rp2040js: the board image's outputs differ from the reference runtime's or the emulation image's")
        print(f"{r['model']} on {r['core']} ({r['kernels']}): {what}",
              file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
