"""`tinyc run MODEL --board B --emulate`: compile, build the emulation images, run them under QEMU and compare
the outputs with the host build and with the reference runtime. With `--soc` (Pico): build the board image instead
and run it on rp2040js, an emulated RP2040 (soc.py), for cycles."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..boards import Board
from ..compiler import write_library
from ..verify import compare, lsb_tolerance, reference_outputs, run_generated
from .emulate import emulate
from .project import DEFAULT_OPT, _cpu_clock_hz, sample_inputs, write_firmware


def run_emulated(compiled, board: Board, model_path: str, out_dir: str | None = None, inputs=None, seed: int = 0,
                 io_layout: str = "nchw", profile: bool = True, opt: str = DEFAULT_OPT) -> dict:
    """Instruction counts (total, per layer, per MAC) of one inference on `board`'s QEMU machine, and whether the
    outputs equal the host build's (int8: bit for bit) and the reference runtime's, on every sample of `inputs`
    (per model input one sample or a stack of them; default: one seeded random sample). Each output row carries
    the emulated values (`data`, [samples, *shape]). `out_dir` keeps the library and firmware project (default: a
    temporary directory); `opt` is the firmware's optimisation level."""
    samples = sample_inputs(compiled, inputs, seed, max_samples=None)
    with tempfile.TemporaryDirectory(prefix="tinyc-run-") as tmp:
        out = Path(out_dir) if out_dir else Path(tmp)
        write_library(compiled.library, str(out), force=out_dir is None)
        write_firmware(compiled, board, str(out), samples, opt)
        result = emulate(compiled, board, out, profile)
        oracle = {}
        rows = check_outputs(compiled, model_path, samples, result.pop("outputs"), io_layout, Path(tmp), oracle)
    result.update(**oracle, model=model_path, name=compiled.library.prefix, samples=int(samples[0].shape[0]),
                  outputs=rows, outputs_match=all(r["matches_host"] and r["matches_reference"] for r in rows),
                  note="instructions counted by QEMU (-icount shift=0); not cycles: wait states, caches and dual "
                       "issue are not modelled")
    return result


def check_outputs(compiled, model_path: str, samples: list[np.ndarray], emulated: list[np.ndarray],
                  io_layout: str, tmp: Path, oracle: dict | None = None) -> list[dict]:
    """Per model output: do the emulated values ([S, *shape]) equal the host build's (int8: bit for bit) and the
    reference runtime's on the same samples? Each row carries the emulated values (`data`). The reference is
    `tinyc verify`'s: TFLite Micro for a .tflite model TFLite rejects; `oracle` (a dict) receives which."""
    host = run_generated(compiled, samples)
    refs, _ = reference_outputs(compiled, model_path, samples, io_layout, tmp, fallback=True, info=oracle)
    rows = []
    for k, (name, emu) in enumerate(zip(compiled.plan.graph.outputs, emulated)):
        vs_host = compare(emu, host[k])
        vs_ref = compare(emu, refs[k], lsb_tolerance(compiled, name))
        rows.append(dict(index=k, dtype=str(emu.dtype), values=int(emu[0].size),
                         matches_host=bool(np.array_equal(emu, host[k])) if emu.dtype == np.int8 else vs_host["ok"],
                         max_abs_diff_host=vs_host["max_abs_err"], matches_reference=vs_ref["ok"],
                         max_abs_err_reference=vs_ref["max_abs_err"], tolerance=vs_ref["tolerance"],
                         data=emu.tolist()))
    return rows


def soc_cycle_budget(compiled) -> int:
    """Emulated cycles after which a board image that has not finished its first inference counts as hung:
    generous for soft-float layers on the M0+ (hundreds of cycles per MAC), bounded for a hang to show."""
    return 200_000_000 + 1000 * compiled.library.macs


def run_soc(compiled, board: Board, model_path: str, out_dir: str | None = None, inputs=None, seed: int = 0,
            io_layout: str = "nchw", opt: str = DEFAULT_OPT) -> dict:
    """Build `board`'s board image (what ships: the UF2) and run it on its SoC emulator (rp2040js for the Pico):
    cycles per inference and per MAC, milliseconds at the firmware's clock, the emulator's clocks beside the board
    file's, and whether the outputs equal the host build's (int8: bit for bit) and the reference runtime's. The
    board image carries one sample: the first of `inputs` (default: one seeded random sample)."""
    from .build import build_firmware
    from .soc import NOTE, check_soc_board, parse_board_console, run_board_image
    check_soc_board(board)
    given = sample_inputs(compiled, inputs, seed, max_samples=None)
    samples = [d[:1] for d in given]
    with tempfile.TemporaryDirectory(prefix="tinyc-run-") as tmp:
        out = Path(out_dir) if out_dir else Path(tmp)
        write_library(compiled.library, str(out), force=out_dir is None)
        write_firmware(compiled, board, str(out), samples, opt)
        images = build_firmware(out)["images"]
        soc = run_board_image(images.get("uf2", images["elf"]), board, max_cycles=soc_cycle_budget(compiled))
        console = parse_board_console(soc.pop("uart"), compiled)
        if out_dir is None:     # the temporary directory is gone when this returns
            soc["image"] = str(Path(soc["image"]).relative_to(out))
        oracle = {}
        rows = check_outputs(compiled, model_path, samples, console["outputs"], io_layout, Path(tmp), oracle)
    lib = compiled.library
    clock = _cpu_clock_hz(board)
    cycles = soc["cycles"]
    clocks_match = soc["clk_sys"] == soc["board_cpu_clock_hz"] and soc["clk_peri"] == soc["board_uart_clock_hz"]
    return dict(**oracle, board=board.name, core=board.core, mcu=board.mcu, **soc,
                firmware_cycles=console["firmware_cycles"], cpu_clock_hz=clock, ms=round(1000 * cycles / clock, 3),
                macs=lib.macs,
                cycles_per_mac=round(cycles / lib.macs, 3) if lib.macs else None, clocks_match=clocks_match,
                model=model_path, name=lib.prefix, samples=1, samples_given=int(given[0].shape[0]), outputs=rows,
                outputs_match=all(r["matches_host"] and r["matches_reference"] for r in rows), note=NOTE)


def format_soc_run(r: dict) -> list[str]:
    image = Path(r["image"])
    lines = [f"{r['model']} on {r['board']} ({r['mcu']}, {r['core']}): board image {image.parent.name}/{image.name} "
             f"on {r['emulator']}:",
             f"clocks after the firmware's bring-up: clk_sys {r['clk_sys']:,} Hz, clk_peri {r['clk_peri']:,} Hz "
             f"(board file: cpu {r['board_cpu_clock_hz']:,} Hz, UART {r['board_uart_clock_hz']:,} Hz"
             f"{'' if r['clocks_match'] else ': MISMATCH'})"]
    per_mac = f", {r['cycles_per_mac']} per MAC" if r["cycles_per_mac"] is not None else ""
    lines.append(f"cycles per inference: {r['cycles']:,} ({r['macs']:,} MACs{per_mac}); {r['ms']:.3f} ms at "
                 f"{r['cpu_clock_hz'] / 1e6:g} MHz")
    if r.get("firmware_cycles") is not None:
        lines.append(f"the firmware's own SysTick count: {r['firmware_cycles']:,} cycles (includes its counter reads "
                     "and the marks)")
    speed = f"{r['emulator_cycles_per_s'] / 1e6:.1f} M cycles/s" if r.get("emulator_cycles_per_s") else "-"
    lines.append(f"emulator: {r['emulated_cycles']:,} cycles from reset in {r['wall_s']:.2f} s ({speed})")
    if r["samples_given"] > 1:
        lines.append(f"the board image carries the first of the {r['samples_given']} samples given")
    return lines + _output_lines(r, "")


def format_run(r: dict) -> list[str]:
    lines = [f"{r['model']} on {r['board']} ({r['core']}), emulated by QEMU {r['machine']}:"]
    if "layers" in r:
        lines.append(f"{'#':>3} {'op':<12} {'MACs':>11} {'instructions':>13} {'per MAC':>8}  layer")
        for row in r["layers"]:
            per = f"{row['instructions'] / row['macs']:.2f}" if row["macs"] else "-"
            lines.append(f"{row['index']:>3} {row['op'][:12]:<12} {row['macs']:>11,} {row['instructions']:>13,} "
                         f"{per:>8}  {row['name'][:48]}")
            if row.get("block_layers"):
                lines.append(f"{'':>50}(row by row: {', '.join(row['block_layers'])})")
        lines.append(f"    (layers sum to {r['profiled_instructions']:,} with the profiling hooks compiled in)")
    per_mac = f", {r['instructions_per_mac']} per MAC" if r["instructions_per_mac"] is not None else ""
    lines.append(f"instructions per inference: {r['instructions']:,} ({r['macs']:,} MACs{per_mac}; "
                 f"mean of {r['reps']} run(s) on the first sample)")
    return lines + _output_lines(r, f", {r['samples']} sample(s)")


def _output_lines(r: dict, samples: str) -> list[str]:
    """Per output: host build and reference comparisons; the overall verdict; the note."""
    reference = "reference" if r.get("oracle") != "tflite-micro" else "reference (TFLite Micro)"
    lines = []
    for o in r["outputs"]:
        exact = "bit-exact" if o["dtype"] == "int8" else f"max abs diff {o['max_abs_diff_host']:.3g}"
        lines.append(f"output {o['index']} ({o['dtype']}, {o['values']} values{samples}): host build "
                     f"{'match' if o['matches_host'] else 'MISMATCH'} ({exact}), {reference} "
                     f"{'match' if o['matches_reference'] else 'MISMATCH'} (max abs err "
                     f"{o['max_abs_err_reference']:.3g}, tolerance {o['tolerance']:.3g})")
    if r.get("oracle_reason"):
        lines.append(f"oracle: TFLite Micro {r.get('oracle_version') or ''} -- {r['oracle_reason']}")
    if r.get("oracle_weights"):        # --weights float16: the reference ran the model with its weights rounded
        lines.append(f"weights: {r['oracle_weights']}")
    lines.append(f"outputs match: {'yes' if r['outputs_match'] else 'NO'}")
    lines.append(f"note: {r['note']}")
    return lines
