"""`tinyc run --emulate --soc`: the Pico's board image, as it ships (build/firmware.uf2), on rp2040js, an emulated
RP2040 SoC, with the core's cycle count per inference.

rp2040js (npm, MIT, pinned in rp2040js/package.json) is driven by our own Node.js script, rp2040js/run_image.cjs: it
loads the image into flash, starts where the bootrom hands over after boot2 (VTOR 0x10000100), lets the firmware
bring its clocks up through the CLOCKS/PLL registers, reads rp2040js's cycle counter at the marks the board image
stores to WATCHDOG SCRATCH0 around its inference (templates/firmware/main.c.j2) and captures UART0. It prints one
JSON line; every failure (no node, no rp2040js, a fault, a hang) becomes one TinycError line here.

Cycles are rp2040js's Cortex-M0+ timings with flash read at SRAM speed: no XIP cache misses, no QSPI wait states,
no bus contention, so they are lower bounds for a real board.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..boards import Board
from ..errors import TinycError

RP2040JS_VERSION = "1.4.1"       # as pinned in rp2040js/package.json and package-lock.json
NODE_MIN_MAJOR = 18              # rp2040js 1.4.1's engines field
ENV_DIR = "TINYC_RP2040JS"       # a directory where `npm ci` installed rp2040js (default: beside this module)
PACKAGE_DIR = Path(__file__).resolve().parent / "rp2040js"
RUNNER = PACKAGE_DIR / "run_image.cjs"
SOC_BOARDS = {"pico": "RP2040"}  # boards whose board image rp2040js runs
MARK_START, MARK_END, MARK_COST = 1, 2, 3     # the board image's marks (main.c.j2)
STOP_LINE = "cycles "            # the board image's last line of an inference
TIMEOUT_S = 900
NOTE = ("cycles counted by rp2040js's Cortex-M0+ model running the board image as built (from the bootrom's "
        "hand-over after boot2); flash reads have no wait states and no XIP cache misses in rp2040js, so cycle "
        "figures are lower bounds for a real board")


def rp2040js_dir() -> Path:
    """Where rp2040js is installed: $TINYC_RP2040JS, else the package's own rp2040js/ (a source checkout)."""
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser().resolve() if env else PACKAGE_DIR


def install_hint(directory: Path | None = None) -> str:
    d = directory or rp2040js_dir()
    if d == PACKAGE_DIR:
        return f"run `make setup`, or `npm ci --prefix {d}`"
    return (f"copy package.json and package-lock.json from {PACKAGE_DIR} to {d} and run `npm ci --prefix {d}` "
            f"(or unset {ENV_DIR} to use {PACKAGE_DIR})")


def check_soc_board(board: Board) -> None:
    """One line for a board rp2040js cannot run: only the RP2040 has a SoC emulator here."""
    if board.name not in SOC_BOARDS:
        raise TinycError(f"no SoC emulator for {board.name} ({board.mcu}): --soc runs RP2040 board images on "
                         f"rp2040js only; use --emulate without --soc (QEMU {board.qemu_machine})")


def find_node() -> str:
    """The node executable (Node.js >= 18), or one line saying how to install it and rp2040js."""
    node = shutil.which("node")
    if node is None:
        raise TinycError(f"node not found: --soc needs Node.js >= {NODE_MIN_MAJOR} (Debian: apt-get install nodejs) "
                         f"and rp2040js: {install_hint()}")
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TinycError(f"{node} --version failed ({e}); --soc needs Node.js >= {NODE_MIN_MAJOR}")
    m = re.match(r"v(\d+)\.", out.strip())
    if not m or int(m.group(1)) < NODE_MIN_MAJOR:
        raise TinycError(f"{node} is Node.js {out.strip() or '(unknown version)'}; --soc needs Node.js >= "
                         f"{NODE_MIN_MAJOR} for rp2040js {RP2040JS_VERSION}")
    return node


def check_rp2040js(directory: Path | None = None) -> Path:
    """The install directory if it holds rp2040js at the pinned version, else one line saying how to install it."""
    d = directory or rp2040js_dir()
    pkg = d / "node_modules" / "rp2040js" / "package.json"
    try:
        version = json.loads(pkg.read_text()).get("version")
    except (OSError, ValueError):
        raise TinycError(f"rp2040js is not installed in {d}: {install_hint(d)}")
    if version != RP2040JS_VERSION:
        raise TinycError(f"{d} has rp2040js {version}, tinyc needs {RP2040JS_VERSION} (pinned): {install_hint(d)}")
    return d


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def _failure(r: dict, name: str) -> TinycError:
    """The runner's JSON failure -> one line with the PC and the kind of fault."""
    kind = r.get("kind")
    n = r.get("cycles", 0)
    after = f"after {n:,} cycle{'' if n == 1 else 's'}"
    console = _last_line(r.get("uart", ""))
    tail = f"; last console line: '{console}'" if console else "; no console output"
    if kind == "setup":
        return TinycError(f"{r.get('message')}: {install_hint()}")
    if kind == "image":
        return TinycError(f"rp2040js cannot load the board image: {r.get('message')}")
    if kind == "fault":
        return TinycError(f"the board image {name} faulted under rp2040js: {r.get('fault')} at PC 0x{r.get('pc', 0):08x} "
                          f"({r.get('detail')}) {after}{tail}")
    if kind == "hang":
        return TinycError(f"the board image {name} hung under rp2040js: PC 0x{r.get('pc', 0):08x} {after} "
                          f"({r.get('detail')}){tail}")
    return TinycError(f"rp2040js failed on {name}: {r.get('message') or r}")


def run_image(image: str | Path, *, max_cycles: int = 3_000_000_000, timeout: float = TIMEOUT_S,
              stop_line: str | None = STOP_LINE) -> dict:
    """Run a board image (ELF, UF2 or .bin) on rp2040js until the console prints a line starting with
    `stop_line`; returns the runner's result (uart, markers, cycles, clk_sys, clk_peri, clock_changes, ...).
    A fault, a hang (`max_cycles` emulated cycles or `timeout` seconds without the stop line) or a missing
    install is a TinycError of one line."""
    image = Path(image)
    node = find_node()
    directory = check_rp2040js()
    cmd = [node, str(RUNNER), str(image), "--rp2040js", str(directory), "--max-cycles", str(int(max_cycles)),
           "--timeout-s", str(timeout)]
    if stop_line is not None:
        cmd += ["--stop-line", stop_line]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        raise TinycError(f"rp2040js did not finish {image.name} within {timeout + 60:.0f} s")
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    try:
        r = json.loads(lines[-1])
    except (IndexError, ValueError):
        first = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[0]
        raise TinycError(f"the rp2040js runner gave no result for {image.name}: {first[:200]}")
    if not r.get("ok"):
        raise _failure(r, image.name)
    return r


def inference_cycles(r: dict) -> tuple[int, int]:
    """(cycles of one inference, cost of one mark subtracted) from the marks of the first inference."""
    first = {}
    for m in r.get("markers", []):
        first.setdefault(m["value"], m["cycles"])
    if not all(k in first for k in (MARK_START, MARK_END, MARK_COST)) or \
            not first[MARK_START] < first[MARK_END] <= first[MARK_COST]:
        raise TinycError("the board image stored no inference marks to WATCHDOG SCRATCH0; regenerate its firmware "
                         "project with this tinyc (`tinyc compile MODEL --board pico`)")
    cost = first[MARK_COST] - first[MARK_END]
    return first[MARK_END] - first[MARK_START] - cost, cost


_OUT = re.compile(r"output (\d+) \((\w+), (\d+) values\):((?: \S+)*)")
_BYTES = re.compile(r"output (\d+) bytes: ([0-9a-f]*)")
_CYCLES = re.compile(r"cycles (\d+) \(")


def parse_board_console(text: str, compiled) -> dict:
    """The board image's first inference -> {'outputs': per model output an array [1, *shape], 'cycles': what
    the firmware measured with SysTick}. int8 outputs print as integers (exact); float ones also as their bytes."""
    g = compiled.plan.graph
    values, raw, fw_cycles = {}, {}, None
    for line in text.replace("\r", "").split("\n"):
        if (m := _OUT.fullmatch(line)) and int(m.group(1)) not in values:
            values[int(m.group(1))] = (m.group(2), m.group(4).split())
        elif (m := _BYTES.fullmatch(line)) and int(m.group(1)) not in raw:
            raw[int(m.group(1))] = bytes.fromhex(m.group(2))
        elif (m := _CYCLES.match(line)) and fw_cycles is None:
            fw_cycles = int(m.group(1))
    outputs = []
    for k, name in enumerate(g.outputs):
        t = g.tensors[name]
        if np.dtype(t.dtype) == np.int8:
            dtype, items = values.get(k, (None, []))
            try:
                data = np.array([int(v) for v in items], np.int64)
            except ValueError:
                data = np.zeros(0)
            if dtype != "int8" or data.size != t.size or data.min() < -128 or data.max() > 127:
                raise TinycError(f"the board image printed no complete int8 output {k}")
            arr = data.astype(np.int8)
        else:
            b = raw.get(k)
            if b is None or len(b) != t.nbytes:
                raise TinycError(f"the board image printed no complete 'output {k} bytes:' line")
            arr = np.frombuffer(b, t.dtype).copy()
        outputs.append(arr.reshape((1, *t.shape)))
    return dict(outputs=outputs, firmware_cycles=fw_cycles)


def run_board_image(image: str | Path, board: Board, *, max_cycles: int = 3_000_000_000,
                    timeout: float = TIMEOUT_S) -> dict:
    """Run `board`'s board image on its SoC emulator: the runner's result plus 'cycles' per inference,
    'mark_cycles' (subtracted), and the emulator's clocks next to the board file's."""
    check_soc_board(board)
    r = run_image(image, max_cycles=max_cycles, timeout=timeout)
    cycles, cost = inference_cycles(r)
    console = board.console
    return dict(
        image=str(image), image_format=r["image"]["format"], emulator=f"rp2040js {r['rp2040js']}",
        cycles=cycles, mark_cycles=cost, clk_sys=r["clk_sys"], clk_peri=r["clk_peri"],
        clock_changes=r.get("clock_changes", []),
        board_cpu_clock_hz=console.cpu_clock_hz if console else board.clock_hz,
        board_uart_clock_hz=console.uart_clock_hz if console else None,
        emulated_cycles=r["cycles"], wall_s=round(r["wall_s"], 3), emulator_cycles_per_s=r["cycles_per_s"],
        warnings=r.get("warnings", []), uart=r["uart"])
