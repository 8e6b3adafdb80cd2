"""`tinyc compile --board B`: the firmware project next to the generated library (OUT/firmware/).

main.c (sample input baked in), startup and support code from runtime_c/firmware/, the board's console driver and
boot block, a linker script for the board and one for its QEMU machine, and a Makefile for arm-none-eabi-gcc.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..boards import Board
from ..codegen.emit import _env
from ..codegen.literals import c_array_body, c_type
from ..errors import TinycError
from ..memory_report import check_fits
from ..resources import resource_dir
from ..schedule.stream_input import streamed_inputs
from .console import console_source
from .machines import QemuMachine, load_machine
from .rp_boot import boot_block_source
from .soc import SOC_BOARDS

FIRMWARE_DIR = "firmware"
STACK_BYTES = 8192            # main stack of the firmware; the kernels themselves use little
DEFAULT_OPT = "-O2"
_OPT = re.compile(r"-O[0123sgz]|-Ofast")
RUNTIME_FILES = ("tinyc_firmware.h", "startup.c", "firmware.c", "semihost.c")
TARGET_TICKS = 100_000        # emulation: repeat inferences until this many SysTick ticks (about 4-5M instructions)
MAX_REPS = 1000
MAX_SAMPLE_BYTES = 1 << 20    # sample inputs baked into the emulation image (its code region holds 4 MB)


def section_name(region_name: str) -> str:
    """The linker section that places data in an SRAM region: `.axi_sram` for "AXI SRAM"."""
    return "." + re.sub(r"[^a-z0-9]+", "_", region_name.lower()).strip("_")


def _memory_name(region_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", region_name).upper()


def _cpu_clock_hz(board: Board) -> int:
    """The core clock the firmware runs at once the console init has run (RP2040 125 MHz, RP2350 150 MHz: PLL_SYS)."""
    return board.console.cpu_clock_hz if board.console else board.clock_hz


def arena_budget(board: Board) -> int:
    """Bytes the board's firmware has for the arena: its arena region less the stack beside it."""
    return board.arena_region.size - STACK_BYTES


def check_firmware_fits(compiled, board: Board) -> None:
    """The model fits the board (arena in its region, weights in flash) and so does the firmware's stack beside
    the arena: one line, before any linker runs."""
    check_fits(compiled, board)
    region = board.arena_region
    state = compiled.plan.state_bytes      # streaming state: static storage beside the arena
    need = compiled.plan.arena_bytes + state + STACK_BYTES
    if need > region.size:
        raise TinycError(f"model does not fit {board.name} as firmware: arena {compiled.plan.arena_bytes:,} B + "
                         + (f"state {state:,} B + " if state else "") +
                         f"stack {STACK_BYTES:,} B > {region.name} {region.size:,} B; use a smaller model or a "
                         "board with more SRAM (`tinyc report` shows where the memory goes)")


def _linker_script(title: str, source: str, flash: dict, ram: dict, others: list[dict], boot: str | None,
                   extra: list[dict]) -> str:
    return _env().get_template("firmware/link.ld.j2").render(
        title=title, source=source, regions=[flash, ram, *others], flash=flash, ram=ram, boot=boot,
        stack_bytes=STACK_BYTES, extra_sections=extra)


def board_linker_script(board: Board) -> str:
    flash = dict(name="FLASH", attrs="rx", origin=board.flash_origin, size=board.flash_bytes, note="")
    regions = [dict(name=_memory_name(r.name), attrs="rwx", origin=r.origin, size=r.size, note=r.note,
                    section=section_name(r.name), arena=r.arena) for r in board.sram_regions]
    ram = next(r for r in regions if r["arena"])
    others = [r for r in regions if not r["arena"]]
    extra = [dict(section=r["section"], region=r["name"]) for r in others]
    return _linker_script(f"linker script for {board.description}", f"boards/{board.name}.toml", flash, ram,
                          others, _boot_kind(board), extra)


def emulation_linker_script(board: Board, machine: QemuMachine) -> str:
    flash = dict(name="CODE", attrs="rx", origin=machine.code_origin, size=machine.code_bytes, note="")
    ram = dict(name="RAM", attrs="rwx", origin=machine.ram_origin, size=machine.ram_bytes, note="")
    # The board's named SRAM sections exist here too (all in RAM), so --arena-section links for both images.
    extra = [dict(section=section_name(r.name), region="RAM") for r in board.sram_regions if not r.arena]
    return _linker_script(f"linker script for QEMU {machine.name} (emulating {board.name})",
                          f"boards/qemu/{machine.name}.toml", flash, ram, [], None, extra)


def _boot_kind(board: Board) -> str | None:
    return {"rp2040": "rp2040", "rp2350-arm-s": "rp2350"}.get(board.uf2_family)


def sample_inputs(compiled, arrays=None, seed: int = 0, max_samples: int | None = 1) -> list[np.ndarray]:
    """Per model input an array [S, *shape] of its dtype: the user's arrays (the first `max_samples` samples; None:
    all), else one seeded random sample (as `tinyc verify`)."""
    from ..verify import _samples_from
    g = compiled.plan.graph
    data = _samples_from(arrays, [g.tensors[n] for n in g.inputs], 1, seed)
    return [d[:max_samples] for d in data]


def _as_batches(compiled, samples: list[np.ndarray]) -> list[np.ndarray]:
    """Per input [S, *shape] (a single sample of the input's shape is one sample); the emulation image runs all S
    samples, the board image the first; their bytes are bounded so the emulation image stays small."""
    g = compiled.plan.graph
    out = [np.asarray(d).reshape((-1, *g.tensors[n].shape)) for d, n in zip(samples, g.inputs)]
    if len({d.shape[0] for d in out}) != 1 or out[0].shape[0] == 0:
        raise TinycError("every sample input must hold the same, non-zero number of samples")
    total = sum(d.nbytes for d in out)
    if total > MAX_SAMPLE_BYTES:
        raise TinycError(f"the sample inputs take {total:,} bytes; at most {MAX_SAMPLE_BYTES:,} are baked into the "
                         "emulation image: pass fewer samples")
    return out


def _io_rows(compiled, names, kind):
    g = compiled.plan.graph
    streamed = streamed_inputs(g)        # (rows from <p>_input_rows, which main.c defines)
    return [dict(index=k, fn=f"{kind}{k if len(names) > 1 else ''}", dtype=g.tensors[n].dtype,
                 ctype=c_type(g.tensors[n].dtype), size=g.tensors[n].size, nbytes=g.tensors[n].nbytes,
                 streamed=n in streamed)
            for k, n in enumerate(names)]


def main_source(compiled, board: Board, samples: list[np.ndarray]) -> str:
    lib = compiled.library
    g = compiled.plan.graph
    empty = [n for n in g.inputs + g.outputs if g.tensors[n].size == 0]
    if empty:   # (its sample and print loops would be zero-length arrays and empty loops)
        raise TinycError(f"'{g.tensors[empty[0]].source_name or empty[0]}' is zero-size; the firmware image runs "
                         "models without zero-size inputs and outputs (the library itself compiles: tinyc compile)")
    external = f"{lib.prefix}_run_with_arena" in lib.files[f"{lib.prefix}.h"]
    rows = _io_rows(compiled, g.inputs, "input")
    batches = _as_batches(compiled, samples)
    for row, data in zip(rows, batches):
        row["bodies"] = [c_array_body(d.reshape(-1), row["dtype"]) for d in data]
    return _env().get_template("firmware/main.c.j2").render(
        p=lib.prefix, P=lib.prefix.upper(), board=board.name, board_description=board.description,
        samples=rows, num_samples=batches[0].shape[0], outputs=_io_rows(compiled, g.outputs, "output"),
        num_layers=len(lib.layers), arena_bytes=lib.arena_bytes, weight_bytes=lib.weight_bytes,
        cpu_clock_hz=_cpu_clock_hz(board), soc_marks=board.name in SOC_BOARDS, target_ticks=TARGET_TICKS,
        max_reps=MAX_REPS, external=external, arena="arena.bytes" if external else "",
        run=f"{lib.prefix}_run{'_with_arena' if external else ''}")


def firmware_files(compiled, board: Board, samples: list[np.ndarray], opt: str = DEFAULT_OPT) -> dict:
    """File name -> text of the firmware project for `board`."""
    if not _OPT.fullmatch(opt):
        raise TinycError(f"--opt {opt} is not an optimisation level; use -O0, -O1, -O2, -O3, -Os, -Oz or -Og")
    machine = load_machine(board.qemu_machine)
    runtime = resource_dir("runtime_c") / "firmware"
    files = {name: (runtime / name).read_text() for name in RUNTIME_FILES}
    files["console.c"] = console_source(board)
    board_sources = ["startup.c", "firmware.c", "console.c", "main.c"]
    boot = boot_block_source(board.uf2_family) if board.uf2_family else None
    if boot is not None:
        files["boot.c"] = boot
        board_sources.append("boot.c")
    if "uf2" in board.image_formats:
        # The UF2 writer, standard library only: the project builds its UF2 where tinyc is not installed.
        files["elf2uf2.py"] = (Path(__file__).parent / "elf2uf2.py").read_text()
    files["main.c"] = main_source(compiled, board, samples)
    files["board.ld"] = board_linker_script(board)
    files["emulate.ld"] = emulation_linker_script(board, machine)
    clock = _cpu_clock_hz(board)
    board_defs = [f"-DTINYC_CPU_CLOCK_HZ={clock}"] + (["-DTINYC_CYCLES_DWT"] if board.cycle_counter == "dwt" else [])
    emu_defs = ["-DTINYC_EMULATION"] + (["-DTINYC_TRAP_UNALIGNED"] if board.core == "cortex-m0plus" else [])
    images = [f for f in board.image_formats if f != "elf"]
    lib = compiled.library
    files["tinyc.json"] = json.dumps(dict(board=board.name, model=compiled.source, name=lib.prefix, macs=lib.macs,
                                          arena_bytes=lib.arena_bytes, weight_bytes=lib.weight_bytes), indent=2) + "\n"
    files["Makefile"] = _env().get_template("firmware/Makefile.j2").render(
        p=compiled.library.prefix, board=board, machine=machine, opt=opt, images=images,
        board_sources=board_sources, board_defs=board_defs, emu_defs=emu_defs)
    return files


def write_firmware(compiled, board: Board, out_dir: str, samples: list[np.ndarray] | None = None,
                   opt: str = DEFAULT_OPT) -> list[str]:
    """Write the firmware project into OUT/firmware/ (OUT holds the library); returns the paths written."""
    check_firmware_fits(compiled, board)
    files = firmware_files(compiled, board, samples if samples is not None else sample_inputs(compiled), opt)
    fw = Path(out_dir) / FIRMWARE_DIR
    fw.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(files.items()):
        (fw / name).write_text(text)
        written.append(str(fw / name))
    return written
