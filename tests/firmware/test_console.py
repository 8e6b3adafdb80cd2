"""Board consoles: every board's console.c compiles warning-free for its core, the baud divisors match the
reference manuals' formulas and worked examples, unreachable rates fail in one line, and the PL011 code really
transmits (QEMU's lm3s6965evb has PL011 UARTs)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tinyc.boards import Console, InitStep, board_names, load_board
from tinyc.errors import TinycError
from tinyc.firmware.console import (baud_divisor, console_source, pl011_divisor, render_console, stm32_lpuart_brr,
                                    stm32_usart_brr)

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-O2"]


def _compile(source: str, tmp_path, flags, name="console"):
    c = tmp_path / f"{name}.c"
    c.write_text(source)
    obj = tmp_path / f"{name}.o"
    res = subprocess.run(["arm-none-eabi-gcc", *WARNINGS, *flags, "-c", str(c), "-o", str(obj)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return obj


def _symbols(obj) -> str:
    return subprocess.run(["arm-none-eabi-nm", str(obj)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", board_names())
def test_board_console_compiles(name, tmp_path):
    board = load_board(name)
    src = console_source(board)
    obj = _compile(src, tmp_path, board.cflags)
    syms = _symbols(obj)
    assert " T tinyc_console_init" in syms and " T tinyc_console_putc" in syms
    # One C statement per init step, in the board file's order, each under its index.
    for i, step in enumerate(board.console.init):
        assert f"/* init[{i}]: " in src and f"TINYC_REG(0x{step.address:08X}u)" in src
    assert f"boards/{name}.toml" in src and board.console.uart in src


def test_board_without_console_gets_empty_functions(tmp_path):
    src = render_console(None, "bare")
    obj = _compile(src, tmp_path, ["-mcpu=cortex-m0plus", "-mthumb"])
    assert " T tinyc_console_putc" in _symbols(obj)
    assert "TINYC_REG" not in src


# --- divisors against the manuals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("clock, baud, ibrd, fbrd", [
    (12_000_000, 115_200, 6, 33),   # Pico at 12 MHz: 6.5104 -> 6 + int(0.5104 * 64 + 0.5) = 33
    (4_000_000, 230_400, 1, 5),     # PL011 TRM / RP2040 datasheet example: 1.085 -> 1 + int(5.44 + 0.5) = 5
    (125_000_000, 115_200, 67, 52),  # the Pico SDK's 125 MHz clk_peri: 67.817 -> 67 + int(52.3 + 0.5) = 52
])
def test_pl011_divisor(clock, baud, ibrd, fbrd):
    assert pl011_divisor(clock, baud).registers == {"IBRD": ibrd, "FBRD": fbrd}


def test_pl011_fraction_carries_into_the_integer_part():
    # 64 * div = 4 * clock / baud = 127.99 rounds to 128: IBRD 2, FBRD 0 rather than an FBRD of 64.
    assert pl011_divisor(3_199_750, 100_000).registers == {"IBRD": 2, "FBRD": 0}


@pytest.mark.parametrize("clock, baud, brr", [
    (40_992, 100, 0x19A),           # RM0402 25.4.4 example 2: USARTDIV 25.62 -> BRR 0x19A
    (81_584, 100, 0x330),           # example 3: USARTDIV 50.99, fraction rounds to 16 and carries -> 0x330
    (8_000_000, 9_600, 0x341),      # F7/H7/L4 USART example: 8 MHz / 9600 = 833.33 -> 0x341
    (48_000_000, 921_600, 0x34),    # 48 MHz / 921600 = 52.08 -> 0x34
    (16_000_000, 115_200, 0x8B),    # F412 / F746 consoles: 138.89 -> 139
    (64_000_000, 115_200, 0x22C),   # H743 console: 555.56 -> 556
])
def test_stm32_usart_brr(clock, baud, brr):
    assert stm32_usart_brr(clock, baud).registers == {"BRR": brr}


def test_stm32_lpuart_brr():
    d = stm32_lpuart_brr(4_000_000, 115_200)      # L4R5 console: 256 * 4 MHz / 115200 = 8888.9 -> 8889
    assert d.registers == {"BRR": 8889} and abs(d.error(115_200)) < 1e-4
    # fck must lie in [3, 4096] x baud; below 3x the BRR would also fall under the forbidden 0x300.
    assert stm32_lpuart_brr(345_600, 115_200).registers == {"BRR": 0x300}
    with pytest.raises(ValueError, match=r"\[3, 4096\] x baud"):
        stm32_lpuart_brr(345_599, 115_200)
    with pytest.raises(ValueError, match=r"\[3, 4096\] x baud"):
        stm32_lpuart_brr(80_000_000, 9_600)


@pytest.mark.parametrize("name, registers", [
    ("pico", {"IBRD": 67, "FBRD": 52}), ("pico2", {"IBRD": 81, "FBRD": 24}), ("stm32f746g-disco", {"BRR": 0x8B}),
    ("nucleo-h743zi", {"BRR": 0x22C}), ("nucleo-f412zg", {"BRR": 0x8B}), ("nucleo-l4r5zi", {"BRR": 8889}),
])
def test_board_divisors(name, registers):
    board = load_board(name)
    d = baud_divisor(board.console, name)
    assert d.registers == registers and abs(d.error(board.console.baud)) < 0.002
    assert all(f"{k} {v}" in console_source(board) for k, v in registers.items())


def _console(**kw) -> Console:
    base = dict(uart="UART0", driver="pl011", base=0x4000C000, baud=115_200, uart_clock_hz=12_000_000,
                cpu_clock_hz=12_000_000, tx_pin="PA1", rx_pin="PA0", init=())
    base.update(kw)
    return Console(**base)


@pytest.mark.parametrize("kw, problem", [
    (dict(driver="stm32-usart-isr", uart_clock_hz=2_000_000), r"117647 baud \(\+2\.12%"),   # BRR 17: 2.1% fast
    (dict(uart_clock_hz=1_000_000), "IBRD 0 out of range"),                                    # clock too slow
    (dict(driver="stm32-usart-sr", uart_clock_hz=1_000_000), "BRR 9 out of range"),
    (dict(driver="stm32-lpuart", uart_clock_hz=100_000_000, baud=9_600), "4096"),
])
def test_unreachable_baud_is_one_line(kw, problem):
    with pytest.raises(TinycError, match=f"board 'x': cannot run UART0 at .* baud from a .* Hz clock: .*{problem}") as e:
        render_console(_console(**kw), "x")
    assert "\n" not in str(e.value)


def test_every_init_op_renders(tmp_path):
    steps = (InitStep("set", 0x40000000, 1), InitStep("clear", 0x40000004, 2), InitStep("write", 0x40000008, 3),
             InitStep("wait_set", 0x4000000C, 4), InitStep("wait_clear", 0x40000010, 5))
    src = render_console(_console(driver="stm32-usart-sr", uart_clock_hz=16_000_000, init=steps), "x")
    assert "TINYC_REG(0x40000000u) |= 0x00000001u;" in src
    assert "TINYC_REG(0x40000004u) &= ~0x00000002u;" in src
    assert "TINYC_REG(0x40000008u) = 0x00000003u;" in src
    assert "while ((TINYC_REG(0x4000000Cu) & 0x00000004u) != 0x00000004u) {}" in src
    assert "while ((TINYC_REG(0x40000010u) & 0x00000005u) != 0u) {}" in src
    assert src.count("TINYC_DSB();") == 3     # after each write, not after the polls
    _compile(src, tmp_path, ["-mcpu=cortex-m4", "-mthumb"])


# --- the PL011 driver on QEMU -------------------------------------------------------------------------------------

# Our own minimal image for QEMU's lm3s6965evb (Stellaris LM3S6965, Cortex-M3): flash at 0, 64 KB SRAM at
# 0x2000_0000, UART0 a PL011 at 0x4000_C000. Vector table = initial SP + reset handler; the program prints through
# the generated console and leaves QEMU with a semihosting SYS_EXIT (0x18, ADP_Stopped_ApplicationExit).
_MAIN_C = r"""
void tinyc_console_init(void);
void tinyc_console_putc(char c);
void reset(void);

__attribute__((section(".vectors"), used))
void (*const vectors[2])(void) = {(void (*)(void))0x20010000u, reset};

static void semihost_exit(void) {
  register unsigned r0 __asm__("r0") = 0x18u;
  register unsigned r1 __asm__("r1") = 0x20026u;
  __asm__ volatile("bkpt 0xAB" : : "r"(r0), "r"(r1) : "memory");
}

void reset(void) {
  const char *s = "tinyc console: PL011 says hi\n";
  tinyc_console_init();
  while (*s) tinyc_console_putc(*s++);
  semihost_exit();
  for (;;) {}
}
"""

_LINK_LD = """
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 256K
         RAM (rwx)  : ORIGIN = 0x20000000, LENGTH = 64K }
SECTIONS {
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) } > FLASH
  /DISCARD/ : { *(.ARM.exidx*) *(.comment) }
}
"""


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm is not installed")
def test_pl011_console_transmits_under_qemu(tmp_path):
    console = _console(base=0x4000C000)            # no init steps: QEMU's UART needs no clock gating
    flags = ["-mcpu=cortex-m3", "-mthumb"]
    objs = [_compile(render_console(console, "lm3s6965evb"), tmp_path, flags),
            _compile(_MAIN_C, tmp_path, flags, name="main")]
    (tmp_path / "link.ld").write_text(_LINK_LD)
    elf = tmp_path / "console.elf"
    subprocess.run(["arm-none-eabi-gcc", *flags, "-nostdlib", "-nostartfiles", "-T", str(tmp_path / "link.ld"),
                    *map(str, objs), "-o", str(elf)], check=True, capture_output=True, text=True)
    try:
        res = subprocess.run(["qemu-system-arm", "-M", "lm3s6965evb", "-nographic", "-monitor", "none",
                              "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)],
                             capture_output=True, timeout=30)   # run() kills QEMU when the timeout expires
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"QEMU did not exit; output so far: {e.stdout!r}")
    assert res.returncode == 0, res.stderr
    assert b"tinyc console: PL011 says hi\r\n" in res.stdout
