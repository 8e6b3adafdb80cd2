"""Target boards as data: one TOML file per board in `boards/` (figures cited from the vendors' documents there).

A board file is checked field by field when it is loaded, so a typo in the data fails with the file and the field
named instead of surfacing later as a wrong linker script or flag.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import TinycError
from .resources import resource_dir

# A board name becomes a file name: no dots or slashes, so `../x` cannot reach outside boards/.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
CORES = ("cortex-m0plus", "cortex-m33", "cortex-m4", "cortex-m7")
FPUS = ("none", "fpv5-sp-d16", "fpv4-sp-d16", "fpv5-d16")
FLOAT_ABIS = ("soft", "hard")
IMAGE_FORMATS = ("elf", "bin", "hex", "uf2")
# UF2 family IDs the bootloaders accept (uf2.py maps the names to the numbers).
UF2_FAMILIES = ("rp2040", "rp2350-arm-s")
# The cycle counter firmware times inference with: DWT CYCCNT exists on ARMv7-M/ARMv8-M Mainline, not on ARMv6-M,
# where SysTick (24-bit, wraps counted in software) stands in.
CYCLE_COUNTERS = {"cortex-m0plus": "systick", "cortex-m33": "dwt", "cortex-m4": "dwt", "cortex-m7": "dwt"}
# UART register layouts console.c.j2 knows: the Arm PL011 (RP2040/RP2350), STM32F4's USART (SR/DR/BRR/CR1),
# the newer STM32 USART (CR1/BRR/ISR/TDR: F7, H7, L4) and its low-power LPUART (same registers, BRR = 256*fck/baud).
CONSOLE_DRIVERS = ("pl011", "stm32-usart-sr", "stm32-usart-isr", "stm32-lpuart")
# Console init step operations: reg |= v, reg &= ~v, reg = v, spin until (reg & v) == v, spin until (reg & v) == 0.
INIT_OPS = ("set", "clear", "write", "wait_set", "wait_clear")
_UART_RE = re.compile(r"(LP)?U(S)?ART[0-9]{1,2}")
_PIN_RE = re.compile(r"GP[0-9]{1,2}|P[A-K][0-9]{1,2}")
_KINDS = {int: "an integer", str: "a string", bool: "true or false", list: "an array", dict: "a table"}


@dataclass(frozen=True)
class MemoryRegion:
    name: str
    origin: int
    size: int
    arena: bool = False
    note: str = ""

    @property
    def end(self) -> int:
        return self.origin + self.size


@dataclass(frozen=True)
class InitStep:
    """One register access console init does before touching the UART (see INIT_OPS)."""
    op: str
    address: int
    value: int


@dataclass(frozen=True)
class Console:
    """The board's console UART and what it takes to get it running from the reset state."""
    uart: str
    driver: str
    base: int
    baud: int
    uart_clock_hz: int   # the UART's kernel clock once init has run
    cpu_clock_hz: int    # the core clock once init has run: cycles -> seconds
    tx_pin: str
    rx_pin: str
    init: tuple[InitStep, ...]


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    mcu: str
    core: str
    clock_hz: int
    dsp: bool
    fpu: str
    float_abi: str
    cflags: tuple[str, ...]
    qemu_machine: str
    image_formats: tuple[str, ...]
    flash_origin: int
    flash_bytes: int
    sram_regions: tuple[MemoryRegion, ...]
    cycle_counter: str
    uf2_family: str | None = None
    console: Console | None = None

    @property
    def sram_bytes(self) -> int:
        return sum(r.size for r in self.sram_regions)

    @property
    def arena_region(self) -> MemoryRegion:
        return next(r for r in self.sram_regions if r.arena)   # load_board checked there is exactly one


def _boards_dir(directory) -> Path:
    return Path(directory) if directory is not None else resource_dir("boards")


def board_names(directory=None) -> list[str]:
    return sorted(p.stem for p in _boards_dir(directory).glob("*.toml"))


class _Fields:
    """Typed access to one TOML table; every failure names the file and the dotted field."""

    def __init__(self, table: dict, where: str, prefix: str = ""):
        self.table, self.where, self.prefix = table, where, prefix
        self.used: set[str] = set()

    def fail(self, key: str, problem: str):
        raise TinycError(f"{self.where}: field '{self.prefix}{key}' {problem}")

    def get(self, key: str, kind, choices=None, default=None, positive=False):
        self.used.add(key)
        if key not in self.table:
            if default is not None:
                return default
            self.fail(key, "is missing")
        value = self.table[key]
        # bool is an int in Python; a size written as `true` must not pass as 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, f"must be {_KINDS[kind]}, not {type(value).__name__} {value!r}")
        if kind is int and (value <= 0 if positive else value < 0):
            self.fail(key, "must be positive" if positive else "must not be negative")
        if choices is not None and value not in choices:
            self.fail(key, f"is '{value}'; expected one of {', '.join(choices)}")
        return value

    def optional(self, key: str, kind, choices=None):
        """The value, or None when the key is absent (get() treats absence as an error)."""
        if key not in self.table:
            self.used.add(key)
            return None
        return self.get(key, kind, choices)

    def address(self, key: str) -> int:
        value = self.get(key, int)
        if value >= 1 << 32 or value % 4:
            self.fail(key, f"is 0x{value:X}; expected a 4-byte aligned 32-bit address")
        return value

    def strings(self, key: str, choices=None) -> tuple[str, ...]:
        values = self.get(key, list)
        for v in values:
            if not isinstance(v, str) or (choices is not None and v not in choices):
                self.fail(key, f"has entry {v!r}; expected strings" + (f" from {', '.join(choices)}" if choices else ""))
        return tuple(values)

    def no_extras(self):
        # Unknown keys are typos until the Board dataclass learns them (new fields go in both places).
        for key in self.table:
            if key not in self.used:
                self.fail(key, "is not a known board field")


def _region(table, where: str, prefix: str) -> MemoryRegion:
    if not isinstance(table, dict):
        raise TinycError(f"{where}: field '{prefix.rstrip('.')}' must be a table")
    f = _Fields(table, where, prefix)
    r = MemoryRegion(f.get("name", str), f.get("origin", int), f.get("size", int, positive=True),
                     f.get("arena", bool, default=False), f.get("note", str, default=""))
    f.no_extras()
    return r


def _init_steps(f: _Fields) -> tuple[InitStep, ...]:
    steps = []
    for i, step in enumerate(f.get("init", list)):
        key = f"init[{i}]"
        if not (isinstance(step, list) and len(step) == 3):
            f.fail(key, f"must be [op, address, value], not {step!r}")
        op, address, value = step
        if op not in INIT_OPS:
            f.fail(key, f"has op {op!r}; expected one of {', '.join(INIT_OPS)}")
        if not isinstance(address, int) or isinstance(address, bool) or not 0 <= address < 1 << 32 or address % 4:
            shown = f"0x{address:X}" if isinstance(address, int) else repr(address)
            f.fail(key, f"has address {shown}; expected a 4-byte aligned 32-bit address")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 32:
            f.fail(key, f"has value {value!r}; expected a 32-bit unsigned integer")
        steps.append(InitStep(op, address, value))
    return tuple(steps)


def _console(table, where: str) -> Console:
    if not isinstance(table, dict):
        raise TinycError(f"{where}: field 'console' must be a table")
    f = _Fields(table, where, "console.")
    uart = f.get("uart", str)
    if not _UART_RE.fullmatch(uart):
        f.fail("uart", f"is '{uart}'; expected a name like UART0, USART3 or LPUART1")
    pins = {}
    for key in ("tx_pin", "rx_pin"):
        pins[key] = f.get(key, str)
        if not _PIN_RE.fullmatch(pins[key]):
            f.fail(key, f"is '{pins[key]}'; expected a pin like GP0 (RP2040/RP2350) or PA9 (STM32)")
    console = Console(
        uart=uart, driver=f.get("driver", str, CONSOLE_DRIVERS), base=f.address("base"),
        baud=f.get("baud", int, positive=True), uart_clock_hz=f.get("uart_clock_hz", int, positive=True),
        cpu_clock_hz=f.get("cpu_clock_hz", int, positive=True), init=_init_steps(f), **pins)
    f.no_extras()
    return console


def _parse(data: dict, where: str, stem: str) -> Board:
    f = _Fields(data, where)
    if f.get("name", str) != stem:
        f.fail("name", f"must match the file name '{stem}'")
    core = f.get("core", str, CORES)
    ff = _Fields(f.get("flash", dict), where, "flash.")
    flash = MemoryRegion("flash", ff.get("origin", int), ff.get("size", int, positive=True))
    ff.no_extras()
    sram = f.get("sram", list)
    board = Board(
        name=stem, description=f.get("description", str), mcu=f.get("mcu", str), core=core,
        clock_hz=f.get("clock_hz", int, positive=True), dsp=f.get("dsp", bool), fpu=f.get("fpu", str, FPUS),
        float_abi=f.get("float_abi", str, FLOAT_ABIS), cflags=f.strings("cflags"),
        qemu_machine=f.get("qemu_machine", str), image_formats=f.strings("image_formats", IMAGE_FORMATS),
        flash_origin=flash.origin, flash_bytes=flash.size,
        sram_regions=tuple(_region(t, where, f"sram[{i}].") for i, t in enumerate(sram)),
        cycle_counter=f.get("cycle_counter", str, tuple(sorted(set(CYCLE_COUNTERS.values())))),
        uf2_family=f.optional("uf2_family", str, UF2_FAMILIES),
        console=_console(data["console"], where) if "console" in data else None)
    f.used.add("console")
    f.no_extras()
    if f"-mcpu={core}" not in board.cflags:
        f.fail("cflags", f"must contain -mcpu={core} (the board's core)")
    if board.cycle_counter != CYCLE_COUNTERS[core]:
        f.fail("cycle_counter", f"is '{board.cycle_counter}' but a {core} needs '{CYCLE_COUNTERS[core]}'")
    if ("uf2" in board.image_formats) != (board.uf2_family is not None):
        f.fail("uf2_family", "is required with image format 'uf2'" if board.uf2_family is None
               else "is only meaningful with image format 'uf2'")
    if board.console is not None and board.console.cpu_clock_hz > board.clock_hz:
        f.fail("console.cpu_clock_hz", f"{board.console.cpu_clock_hz} exceeds the board's clock_hz {board.clock_hz}")
    if (board.fpu == "none") != (board.float_abi == "soft"):
        f.fail("float_abi", f"'{board.float_abi}' does not fit fpu '{board.fpu}' (no FPU means soft)")
    arenas = [r.name for r in board.sram_regions if r.arena]
    if len(arenas) != 1:
        f.fail("sram", f"must mark exactly one region 'arena = true' (found {len(arenas)})")
    # Regions sorted by origin overlap iff one starts before its predecessor ends; flash is in the check too.
    regions = sorted(board.sram_regions + (flash,), key=lambda r: r.origin)
    for a, b in zip(regions, regions[1:]):
        if b.origin < a.end:
            f.fail("sram", f"regions '{a.name}' and '{b.name}' overlap")
    if len({r.name for r in board.sram_regions}) != len(board.sram_regions):
        f.fail("sram", "has two regions with the same name")
    return board


def load_board(name: str, directory=None) -> Board:
    """The board `name` from boards/ (or from `directory`, for tests and user-supplied boards)."""
    known = board_names(directory)
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name not in known:
        raise TinycError(f"unknown board '{name}'; known boards: {', '.join(known)} (run `tinyc boards`)")
    path = _boards_dir(directory) / f"{name}.toml"
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise TinycError(f"{path}: not valid TOML ({e})")
    return _parse(data, str(path), name)


def _per(n: int, unit: int):
    """n / unit, as an int when exact (JSON then says 264, not 264.0)."""
    return n // unit if n % unit == 0 else round(n / unit, 3)


def board_table_rows(directory=None) -> list[dict]:
    """One summary row per board, for `tinyc boards` (table) and `tinyc boards --json`."""
    rows = []
    for b in (load_board(n, directory) for n in board_names(directory)):
        rows.append({"board": b.name, "mcu": b.mcu, "core": b.core, "clock_mhz": _per(b.clock_hz, 10**6),
                     "sram_kb": _per(b.sram_bytes, 1024), "arena_region": b.arena_region.name,
                     "arena_kb": _per(b.arena_region.size, 1024), "flash_kb": _per(b.flash_bytes, 1024),
                     "images": list(b.image_formats),
                     "console": f"{b.console.uart} {b.console.tx_pin}/{b.console.rx_pin}" if b.console else "none",
                     "qemu_machine": b.qemu_machine})
    return rows


def format_board_table(rows: list[dict]) -> list[str]:
    """Aligned text lines for board_table_rows(): header first."""
    def num(x):
        return f"{x:g}"
    header = ("board", "mcu", "core", "clock MHz", "SRAM KB", "arena KB (region)", "flash KB", "images",
              "console (TX/RX)", "qemu machine")
    cells = [header] + [(r["board"], r["mcu"], r["core"], num(r["clock_mhz"]), num(r["sram_kb"]),
                         f"{num(r['arena_kb'])} ({r['arena_region']})", num(r["flash_kb"]), ",".join(r["images"]),
                         r["console"], r["qemu_machine"]) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
