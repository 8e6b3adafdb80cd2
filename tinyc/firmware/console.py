"""The board's console as C: `console_source(board)` renders templates/firmware/console.c.j2 into one C99 file with
`tinyc_console_init()` (the board file's init steps, then the UART at 8N1) and `tinyc_console_putc()`.

The baud divisors are computed here, with the rounding each reference manual gives, so a clock/baud pair the UART
cannot hit within 2% fails at generation time instead of printing garbage on the board.
"""
from __future__ import annotations

from dataclasses import dataclass

import jinja2

from ..boards import Board, Console
from ..errors import TinycError
from ..resources import resource_dir

# Both ends sample mid-bit; a few percent of combined error is what 8N1 tolerates, and the host's UART takes part.
MAX_BAUD_ERROR = 0.02


@dataclass(frozen=True)
class Divisor:
    registers: dict       # register name -> value, in the order they are written
    actual_baud: float

    def error(self, baud: int) -> float:
        return self.actual_baud / baud - 1.0


def _round_div(n: int, d: int) -> int:
    """n / d rounded to nearest, halves up (the manuals' "nearest" / "+ 0.5"), in exact integer arithmetic."""
    return (2 * n + d) // (2 * d)


def pl011_divisor(clock_hz: int, baud: int) -> Divisor:
    """PL011: BAUDDIV = UARTCLK / (16 * baud) = IBRD + FBRD / 64, FBRD = integer(fraction * 64 + 0.5)
    (RP2040 datasheet, 4.2 UART, "Fractional baud rate divider"). Rounding 64 * BAUDDIV as a whole is the same
    thing, with a fraction that rounds up to 64 carried into IBRD."""
    sixty_fourths = _round_div(4 * clock_hz, baud)
    ibrd, fbrd = divmod(sixty_fourths, 64)
    # IBRD is 16 bits and 0 is invalid; with IBRD = 0xFFFF the fraction must be 0 (PL011 TRM, UARTFBRD).
    if not 1 <= ibrd <= 0xFFFF or (ibrd == 0xFFFF and fbrd):
        raise ValueError(f"IBRD {ibrd} out of range 1..65535")
    return Divisor({"IBRD": ibrd, "FBRD": fbrd}, 4 * clock_hz / sixty_fourths)


def stm32_usart_brr(clock_hz: int, baud: int) -> Divisor:
    """STM32 USART with 16x oversampling: USARTDIV = fck / baud in sixteenths. The F4 encodes it as mantissa << 4 |
    fraction with the fraction rounded to nearest and its overflow carried (RM0402, 25.4.4 Fractional baud rate
    generation); the F7/H7/L4 USART takes BRR = USARTDIV, rounded to nearest in the manuals' examples. Both come to
    BRR = round(fck / baud), which must be at least 16 (mantissa >= 1) and fit in 16 bits."""
    brr = _round_div(clock_hz, baud)
    if not 16 <= brr <= 0xFFFF:
        raise ValueError(f"BRR {brr} out of range 16..65535")
    return Divisor({"BRR": brr}, clock_hz / brr)


def stm32_lpuart_brr(clock_hz: int, baud: int) -> Divisor:
    """STM32 LPUART: baud = 256 * fck / LPUARTDIV, BRR = LPUARTDIV (20 bits); values below 0x300 are forbidden and
    fck must lie in [3 * baud, 4096 * baud] (RM0432, LPUART baud rate generation)."""
    if not 3 * baud <= clock_hz <= 4096 * baud:
        raise ValueError("kernel clock outside [3, 4096] x baud")
    brr = _round_div(256 * clock_hz, baud)
    if not 0x300 <= brr <= 0xFFFFF:
        raise ValueError(f"BRR 0x{brr:X} out of range 0x300..0xFFFFF")
    return Divisor({"BRR": brr}, 256 * clock_hz / brr)


_DIVISORS = {"pl011": pl011_divisor, "stm32-usart-sr": stm32_usart_brr, "stm32-usart-isr": stm32_usart_brr,
             "stm32-lpuart": stm32_lpuart_brr}


def baud_divisor(console: Console, board_name: str = "") -> Divisor:
    """The divisor register values for the console's baud rate; TinycError when unreachable or more than 2% off."""
    where = f"board '{board_name}': " if board_name else ""
    what = f"{console.uart} at {console.baud} baud from a {console.uart_clock_hz} Hz clock"
    try:
        divisor = _DIVISORS[console.driver](console.uart_clock_hz, console.baud)
    except ValueError as e:
        raise TinycError(f"{where}cannot run {what}: {e}")
    if abs(divisor.error(console.baud)) > MAX_BAUD_ERROR:
        raise TinycError(f"{where}cannot run {what}: the nearest divisor gives {divisor.actual_baud:.0f} baud "
                         f"({100 * divisor.error(console.baud):+.2f}%, more than {100 * MAX_BAUD_ERROR:.0f}%)")
    return divisor


_STEP_TEXT = {"set": "set bits {v} in {a}", "clear": "clear bits {v} in {a}", "write": "write {v} to {a}",
              "wait_set": "wait until bits {v} of {a} are set", "wait_clear": "wait until bits {v} of {a} are clear"}


def _hex(n: int) -> str:
    return f"0x{n:08X}u"


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined, autoescape=False)


def render_console(console: Console | None, board_name: str) -> str:
    """console.c for a Console, which need not come from a board file (tests render one for QEMU's PL011)."""
    template = _env().get_template("firmware/console.c.j2")
    if console is None:
        return template.render(board=board_name, console=None)
    divisor = baud_divisor(console, board_name)
    steps = [{"op": s.op, "address": _hex(s.address), "value": _hex(s.value),
              "text": _STEP_TEXT[s.op].format(v=f"0x{s.value:08X}", a=f"0x{s.address:08X}")} for s in console.init]
    return template.render(
        board=board_name, console=console, steps=steps, base=_hex(console.base),
        divisor={k: (_hex(v) if k == "BRR" else f"{v}u") for k, v in divisor.registers.items()},
        divisor_text=", ".join(f"{k} {v}" for k, v in divisor.registers.items()),
        actual_baud=f"{divisor.actual_baud:.1f}", error=f"{100 * divisor.error(console.baud):+.2f}%")


def console_source(board: Board) -> str:
    """console.c for `board`; a board without [console] gets functions that do nothing."""
    return render_console(board.console, board.name)
