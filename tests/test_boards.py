"""Boards as data: the shipped board files load, carry the vendors' figures, and bad files fail on one line."""
import json
import tomllib

import pytest
from click.testing import CliRunner

from tinyc.boards import board_names, board_table_rows, load_board
from tinyc.cli import main
from tinyc.errors import TinycError
from tinyc.resources import resource_dir

KB = 1024
MB = 1024 * KB
BOARDS = ["nucleo-f412zg", "nucleo-h743zi", "nucleo-l4r5zi", "pico", "pico2", "stm32f746g-disco"]
QEMU_BY_CORE = {"cortex-m0plus": "mps2-an385", "cortex-m33": "mps2-an505", "cortex-m4": "mps2-an386",
                "cortex-m7": "mps2-an500"}


def test_board_names_are_the_shipped_files():
    assert board_names() == BOARDS


@pytest.mark.parametrize("name", BOARDS)
def test_every_board_loads_consistently(name):
    b = load_board(name)
    assert b.name == name
    assert sum(r.arena for r in b.sram_regions) == 1
    assert b.arena_region.arena
    assert b.qemu_machine == QEMU_BY_CORE[b.core]
    assert f"-mcpu={b.core}" in b.cflags and "-mthumb" in b.cflags
    assert (b.fpu == "none") == (b.float_abi == "soft")
    if b.fpu != "none":
        assert f"-mfpu={b.fpu}" in b.cflags and "-mfloat-abi=hard" in b.cflags
    regions = sorted(b.sram_regions, key=lambda r: r.origin)
    assert all(a.end <= c.origin for a, c in zip(regions, regions[1:])), "SRAM regions overlap"
    assert b.image_formats == (("elf", "uf2") if name.startswith("pico") else ("elf", "bin", "hex"))
    assert b.uf2_family == {"pico": "rp2040", "pico2": "rp2350-arm-s"}.get(name)
    assert b.cycle_counter == ("systick" if b.core == "cortex-m0plus" else "dwt")
    assert b.console is not None and b.console.baud == 115_200
    assert b.console.cpu_clock_hz <= b.clock_hz


# The console UART, its pins and the clocks the init steps leave, per board (what the board files cite).
@pytest.mark.parametrize("name, uart, driver, base, tx, rx, uart_hz, cpu_hz", [
    ("pico", "UART0", "pl011", 0x40034000, "GP0", "GP1", 125_000_000, 125_000_000),
    ("pico2", "UART0", "pl011", 0x40070000, "GP0", "GP1", 150_000_000, 150_000_000),
    ("stm32f746g-disco", "USART1", "stm32-usart-isr", 0x40011000, "PA9", "PB7", 16_000_000, 16_000_000),
    ("nucleo-h743zi", "USART3", "stm32-usart-isr", 0x40004800, "PD8", "PD9", 64_000_000, 64_000_000),
    ("nucleo-f412zg", "USART3", "stm32-usart-sr", 0x40004800, "PD8", "PD9", 16_000_000, 16_000_000),
    ("nucleo-l4r5zi", "LPUART1", "stm32-lpuart", 0x40008000, "PG7", "PG8", 4_000_000, 4_000_000),
])
def test_console(name, uart, driver, base, tx, rx, uart_hz, cpu_hz):
    c = load_board(name).console
    assert (c.uart, c.driver, c.base, c.tx_pin, c.rx_pin) == (uart, driver, base, tx, rx)
    assert (c.uart_clock_hz, c.cpu_clock_hz) == (uart_hz, cpu_hz)


def test_console_init_steps_release_what_the_uart_needs():
    # Spot checks of the init data against the documents: a wrong bit here is a silent board.
    pico = [(s.op, s.address, s.value) for s in load_board("pico").console.init]
    assert ("clear", 0x4000C000, (1 << 5) | (1 << 8) | (1 << 22)) in pico      # RESETS: IO_BANK0, PADS_BANK0, UART0
    assert ("write", 0x40014004, 2) in pico and ("write", 0x4001400C, 2) in pico   # GPIO0/1 FUNCSEL = UART
    pico2 = [(s.op, s.address, s.value) for s in load_board("pico2").console.init]
    assert ("clear", 0x40020000, (1 << 6) | (1 << 9) | (1 << 26)) in pico2
    assert ("clear", 0x40038004, 1 << 8) in pico2 and ("clear", 0x40038008, 1 << 8) in pico2   # pad ISO off
    l4 = [(s.op, s.address, s.value) for s in load_board("nucleo-l4r5zi").console.init]
    assert ("set", 0x40007004, 1 << 9) in l4                                   # PWR_CR2.IOSV: VDDIO2 for port G
    assert l4.index(("set", 0x40021058, 1 << 28)) < l4.index(("set", 0x40007004, 1 << 9))   # PWR clock first


@pytest.mark.parametrize("name, sram_kb, flash_mb, arena, arena_kb", [
    ("pico", 264, 2, "SRAM0-3", 256),
    ("pico2", 520, 4, "SRAM0-7", 512),
    ("stm32f746g-disco", 320, 1, "SRAM1", 240),
    ("nucleo-f412zg", 256, 1, "SRAM1", 256),
    ("nucleo-l4r5zi", 640, 2, "SRAM3", 384),
])
def test_datasheet_figures(name, sram_kb, flash_mb, arena, arena_kb):
    b = load_board(name)
    assert b.sram_bytes == sram_kb * KB
    assert b.flash_bytes == flash_mb * MB
    assert (b.arena_region.name, b.arena_region.size) == (arena, arena_kb * KB)


def test_pico_layout():
    b = load_board("pico")
    assert b.sram_bytes == 270336
    assert [(r.origin, r.size) for r in b.sram_regions] == [(0x20000000, 256 * KB), (0x20040000, 4 * KB),
                                                           (0x20041000, 4 * KB)]
    assert b.flash_origin == 0x10000000 and b.core == "cortex-m0plus" and not b.dsp


def test_h743_memories():
    b = load_board("nucleo-h743zi")
    regions = {r.name: r for r in b.sram_regions}
    assert (regions["DTCM"].origin, regions["DTCM"].size) == (0x20000000, 128 * KB)
    assert (regions["AXI SRAM"].origin, regions["AXI SRAM"].size) == (0x24000000, 512 * KB)
    assert b.arena_region.name == "AXI SRAM"
    assert b.flash_bytes == 2 * MB and b.flash_origin == 0x08000000
    assert b.fpu == "fpv5-d16" and b.clock_hz == 480_000_000


@pytest.mark.parametrize("name", ["nope", "PICO", "../boards/pico", "pico/../pico", ".pico", "-pico", "", "pico.toml"])
def test_unknown_or_unsafe_names(name):
    with pytest.raises(TinycError, match="unknown board .*known boards: nucleo-f412zg, .*tinyc boards"):
        load_board(name)


def _board_data(name="pico"):
    with open(resource_dir("boards") / f"{name}.toml", "rb") as fh:
        return tomllib.load(fh)


def _pico_data():
    return _board_data("pico")


def _write(path, data):
    """A minimal TOML writer for the board schema (tomllib only reads)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, str)):
            return json.dumps(v)
        return "[" + ", ".join(value(x) for x in v) + "]"
    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, (dict, list)) or
             (isinstance(v, list) and not (v and isinstance(v[0], dict)))]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += [f"[{k}]"] + [f"{kk} = {value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for t in v:
                lines += [f"[[{k}]]"] + [f"{kk} = {value(vv)}" for kk, vv in t.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", BOARDS)
def test_writer_round_trips_a_good_board(tmp_path, name):
    _write(tmp_path / f"{name}.toml", _board_data(name))
    assert load_board(name, tmp_path) == load_board(name)


def test_console_is_optional(tmp_path):
    d = _pico_data()
    del d["console"]
    _write(tmp_path / "pico.toml", d)
    assert load_board("pico", tmp_path).console is None


def _break(kind):
    d = _board_data("nucleo-f412zg" if kind == "uf2-on-stm32" else "pico")
    if kind == "missing":
        del d["clock_hz"]
    elif kind == "type":
        d["clock_hz"] = "125 MHz"
    elif kind == "bool-size":
        d["sram"][1]["size"] = True
    elif kind == "choice":
        d["core"] = "cortex-m3"
    elif kind == "no-arena":
        d["sram"][0]["arena"] = False
    elif kind == "two-arenas":
        d["sram"][1]["arena"] = True
    elif kind == "overlap":
        d["sram"][1]["origin"] = 0x2003F000
    elif kind == "unknown-key":
        d["uart_tx_pin"] = 0
    elif kind == "flash-missing-size":
        del d["flash"]["size"]
    elif kind == "name-mismatch":
        d["name"] = "pico3"
    elif kind == "uf2-on-stm32":
        d["uf2_family"] = "rp2040"
    elif kind == "uf2-missing":
        del d["uf2_family"]
    elif kind == "uf2-unknown":
        d["uf2_family"] = "rp2350-riscv"
    elif kind == "dwt-on-m0plus":
        d["cycle_counter"] = "dwt"
    elif kind == "unknown-driver":
        d["console"]["driver"] = "16550"
    elif kind == "bad-op":
        d["console"]["init"][0][0] = "poke"
    elif kind == "step-arity":
        d["console"]["init"][1] = ["set", 0x4000C000]
    elif kind == "step-unaligned":
        d["console"]["init"][2][1] = 0x40024002
    elif kind == "step-too-wide":
        d["console"]["init"][3][2] = 1 << 32
    elif kind == "console-missing-field":
        del d["console"]["baud"]
    elif kind == "console-unknown-key":
        d["console"]["parity"] = "none"
    elif kind == "console-bad-pin":
        d["console"]["tx_pin"] = "GPIO0"
    elif kind == "console-bad-uart":
        d["console"]["uart"] = "SERIAL0"
    elif kind == "console-base-unaligned":
        d["console"]["base"] = 0x40034001
    elif kind == "console-too-fast":
        d["console"]["cpu_clock_hz"] = 200_000_000
    return d


@pytest.mark.parametrize("kind, field", [
    ("missing", "clock_hz"), ("type", "clock_hz"), ("bool-size", "sram[1].size"), ("choice", "core"),
    ("no-arena", "sram"), ("two-arenas", "sram"), ("overlap", "sram"), ("unknown-key", "uart_tx_pin"),
    ("flash-missing-size", "flash.size"), ("name-mismatch", "name"),
    ("uf2-on-stm32", "uf2_family"), ("uf2-missing", "uf2_family"), ("uf2-unknown", "uf2_family"),
    ("dwt-on-m0plus", "cycle_counter"), ("unknown-driver", "console.driver"), ("bad-op", "console.init[0]"),
    ("step-arity", "console.init[1]"), ("step-unaligned", "console.init[2]"), ("step-too-wide", "console.init[3]"),
    ("console-missing-field", "console.baud"), ("console-unknown-key", "console.parity"),
    ("console-bad-pin", "console.tx_pin"), ("console-bad-uart", "console.uart"),
    ("console-base-unaligned", "console.base"), ("console-too-fast", "console.cpu_clock_hz"),
])
def test_malformed_board_names_file_and_field(tmp_path, kind, field):
    name = "nucleo-f412zg" if kind == "uf2-on-stm32" else "pico"
    _write(tmp_path / f"{name}.toml", _break(kind))
    with pytest.raises(TinycError) as e:
        load_board(name, tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert str(tmp_path / f"{name}.toml") in message and f"'{field}'" in message


def test_invalid_toml_is_one_line(tmp_path):
    (tmp_path / "pico.toml").write_text("name = \n[[sram]\n")
    with pytest.raises(TinycError, match="pico.toml: not valid TOML") as e:
        load_board("pico", tmp_path)
    assert "\n" not in str(e.value)


def test_cli_table():
    result = CliRunner().invoke(main, ["boards"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["board", "mcu", "core", "clock"]
    assert len(lines) == 1 + len(BOARDS)
    pico = next(line for line in lines if line.startswith("pico "))
    assert pico.split() == ["pico", "RP2040", "cortex-m0plus", "125", "264", "256", "(SRAM0-3)", "2048", "elf,uf2",
                            "UART0", "GP0/GP1", "mps2-an385"]


def test_cli_json():
    result = CliRunner().invoke(main, ["boards", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows == board_table_rows()
    assert [r["board"] for r in rows] == BOARDS
    h743 = next(r for r in rows if r["board"] == "nucleo-h743zi")
    assert h743 == {"board": "nucleo-h743zi", "mcu": "STM32H743ZI", "core": "cortex-m7", "clock_mhz": 480,
                    "sram_kb": 1056, "arena_region": "AXI SRAM", "arena_kb": 512, "flash_kb": 2048,
                    "images": ["elf", "bin", "hex"], "console": "USART3 PD8/PD9", "qemu_machine": "mps2-an500"}
