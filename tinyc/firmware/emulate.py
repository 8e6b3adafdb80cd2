"""`tinyc run --emulate`: the firmware project's emulation images under QEMU, instruction-exact.

QEMU runs with `-icount shift=0,sleep=off`: every guest instruction advances virtual time by 1 ns, so SysTick
(clocked by the CPU at the machine's clock) ticks once per `machine.instructions_per_tick` instructions. The
emulation main repeats the inference until enough ticks accumulate and subtracts what reading the counter costs;
build/emulate.elf (the shipping model object) gives the total and the outputs, build/emulate_profile.elf (the
model compiled with TINYC_PROFILE hooks) the split per layer.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..boards import Board
from ..errors import TinycError
from .machines import QemuMachine, load_machine
from .project import FIRMWARE_DIR

QEMU = "qemu-system-arm"
TIMEOUT_S = 900


def qemu_command(machine: QemuMachine, elf: str | Path) -> list[str]:
    return [QEMU, "-M", machine.name, "-display", "none", "-monitor", "none", "-serial", "null",
            "-chardev", "stdio,id=semihost", "-semihosting-config", "enable=on,target=native,chardev=semihost",
            "-icount", "shift=0,sleep=off",
            "-kernel", str(elf)]


def run_qemu(machine: QemuMachine, elf: str | Path, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """(exit code, console text) of one emulated run."""
    if shutil.which(QEMU) is None:
        raise TinycError(f"{QEMU} not found; install it (Debian: apt-get install qemu-system-arm) or run "
                         "`make setup`")
    try:
        res = subprocess.run(qemu_command(machine, elf), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinycError(f"the emulated run of {Path(elf).name} on {machine.name} did not finish within "
                         f"{timeout:.0f} s (a hang in the generated code or the firmware); rerun the ELF with "
                         "`make run` in the firmware directory to see its output")
    return res.returncode, res.stdout


def make(fw_dir: Path, target: str, extra: list[str] = ()) -> None:
    """Run the firmware project's Makefile; a failure is one line with the first compiler error."""
    if shutil.which("arm-none-eabi-gcc") is None:
        raise TinycError("arm-none-eabi-gcc not found; install it (Debian: apt-get install gcc-arm-none-eabi "
                         "libnewlib-arm-none-eabi) or run `make setup`")
    res = subprocess.run(["make", "-s", "-j2", "-C", str(fw_dir), target, *extra], capture_output=True, text=True)
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr + res.stdout).splitlines() if "error" in ln.lower()]
        first = (lines or (res.stderr + res.stdout).strip().splitlines() or [f"exit code {res.returncode}"])[0]
        raise TinycError(f"building the firmware in {fw_dir} failed: {first.strip()[:300]}")


def firmware_dir(out_dir: str | Path) -> Path:
    """OUT (the library) or OUT/firmware -> the firmware project directory."""
    p = Path(out_dir)
    fw = p if (p / "Makefile").is_file() and (p / "board.ld").is_file() else p / FIRMWARE_DIR
    if not (fw / "Makefile").is_file():
        raise TinycError(f"no firmware project in '{out_dir}'; create one with `tinyc compile MODEL --board B "
                         f"-o {out_dir}`")
    return fw


_LINE = re.compile(r"output (\d+) (\d+) ([0-9a-f]*)|layer (-?\d+) (\d+)|(samples|reps|ticks|overhead) (\d+)")


def parse_console(text: str) -> dict:
    """The emulation main's lines -> {'outputs': {(output k, sample s): bytes}, 'samples', 'reps', 'ticks',
    'overhead', 'layers': {i: ticks}}."""
    r = {"outputs": {}, "layers": {}}
    if "done" not in text.split():
        raise ValueError("the emulated program did not finish")
    for line in text.splitlines():
        m = _LINE.fullmatch(line.strip())
        if not m:
            continue
        if m.group(1) is not None:
            r["outputs"][int(m.group(1)), int(m.group(2))] = bytes.fromhex(m.group(3))
        elif m.group(4) is not None:
            r["layers"][int(m.group(4))] = int(m.group(5))
        else:
            r[m.group(6)] = int(m.group(7))
    return r


def _run_image(machine, elf, what) -> dict:
    code, text = run_qemu(machine, elf)
    if code != 0:
        last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["no output"]
        raise TinycError(f"the {what} image stopped with exit code {code} on {machine.name}: {last[0][:200]}")
    try:
        return parse_console(text)
    except ValueError as e:
        raise TinycError(f"the {what} image's console output is incomplete ({e})")


def emulate(compiled, board: Board, out_dir: str | Path, profile: bool = True) -> dict:
    """Build the emulation images of the firmware project in `out_dir`, run them, and return instruction counts
    (of the first sample) and the outputs of every sample baked into the image (per output [S, *shape])."""
    machine = load_machine(board.qemu_machine)
    fw = firmware_dir(out_dir)
    make(fw, "emulate")
    per_tick = machine.instructions_per_tick
    run = _run_image(machine, fw / "build" / "emulate.elf", "emulation")
    g, lib = compiled.plan.graph, compiled.library
    samples = run.get("samples", 0)
    if samples < 1:
        raise TinycError("the emulation image did not say how many samples it ran")
    outputs = []
    for k, name in enumerate(g.outputs):
        t = g.tensors[name]
        raws = [run["outputs"].get((k, s)) for s in range(samples)]
        if any(raw is None or len(raw) != t.nbytes for raw in raws):
            raise TinycError(f"the emulation image printed no complete output {k}")
        outputs.append(np.frombuffer(b"".join(raws), t.dtype).reshape((samples, *t.shape)).copy())
    instructions = (run["ticks"] - run["overhead"]) * per_tick / run["reps"]
    result = dict(board=board.name, core=board.core, machine=machine.name, instructions_per_tick=per_tick,
                  reps=run["reps"], instructions=round(instructions), macs=lib.macs,
                  instructions_per_mac=round(instructions / lib.macs, 3) if lib.macs else None,
                  outputs=outputs)
    if profile:
        prof = _run_image(machine, fw / "build" / "emulate_profile.elf", "profiling")
        hooks = prof["layers"].get(len(lib.layers), 0)    # ticks of an empty layer: the hooks' own cost
        layers = []
        for info in lib.layers:
            if info["alias"]:
                continue
            ticks = prof["layers"].get(info["index"], 0)
            n = max(ticks - hooks, 0) * per_tick / prof["reps"]
            layers.append(dict(index=info["index"], name=info["name"], op=info["op"], macs=info["macs"],
                               instructions=round(n)))
            if "block" in info:     # a fused block: its layers run row by row inside this one profiled layer
                layers[-1]["block_layers"] = [row["name"] for row in info["block"]]
        result["layers"] = layers
        result["profiled_instructions"] = sum(row["instructions"] for row in layers)
    return result
