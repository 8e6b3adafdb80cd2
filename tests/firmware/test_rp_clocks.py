"""The RP2040/RP2350 clock bring-up in the board files, replayed on a model of the clock registers.

Neither chip runs here (rp2040js executes the RP2040's sequence too: test_rp2040_soc.py); this replays each board's
console init steps against a register model that knows what the datasheets require: the crystal is stable before
clk_ref uses it, the PLL's parameters are within limits (REFDIV, FBDIV 16..320, VCO 750..1600 MHz, reference >=
5 MHz, POSTDIV 1..7 with POSTDIV1 >= POSTDIV2), the PLL is locked and its post dividers powered before clk_sys
switches to it, aux muxes only change while unselected or stopped, and every wait can finish. It then computes
clk_ref, clk_sys and clk_peri and compares them with the board file's figures and the Pico SDK's defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from tinyc.boards import InitStep, load_board
from tinyc.firmware.console import baud_divisor

XOSC_HZ = 12_000_000   # the crystal on the Pico and the Pico 2


@dataclass(frozen=True)
class Chip:
    """Register addresses (RP2040 datasheet 2.2.2; RP2350 datasheet 2.2.4) and the few layout differences."""
    xosc: int
    clocks: int
    resets: int
    pll_sys: int
    pll_sys_reset_bit: int        # RESETS.RESET bit of pll_sys (RP2040 2.14.3; RP2350 7.5.2)
    sys_div_one: int              # CLK_SYS_DIV holding divide-by-1: INT at bit 8 (RP2040) or bit 16 (RP2350)
    peri_div: bool                # RP2350's clk_peri has a divider and an ENABLED status bit


CHIPS = {
    "pico": Chip(xosc=0x40024000, clocks=0x40008000, resets=0x4000C000, pll_sys=0x40028000, pll_sys_reset_bit=12,
                 sys_div_one=1 << 8, peri_div=False),
    "pico2": Chip(xosc=0x40048000, clocks=0x40010000, resets=0x40020000, pll_sys=0x40050000, pll_sys_reset_bit=14,
                  sys_div_one=1 << 16, peri_div=True),
}
SDK_DEFAULT_HZ = {"pico": 125_000_000, "pico2": 150_000_000}   # pico-sdk SYS_CLK_HZ defaults


class Fault(AssertionError):
    pass


class ClockModel:
    """The clock-related registers of one chip, written by init steps, read by their waits."""

    def __init__(self, chip: Chip):
        self.c = chip
        self.reg: dict[int, int] = {}
        x, k, p = chip.xosc, chip.clocks, chip.pll_sys
        self.XOSC_CTRL, self.XOSC_STATUS, self.XOSC_STARTUP = x, x + 4, x + 0xC
        self.REF_CTRL, self.REF_SELECTED = k + 0x30, k + 0x38
        self.SYS_CTRL, self.SYS_DIV, self.SYS_SELECTED = k + 0x3C, k + 0x40, k + 0x44
        self.PERI_CTRL, self.PERI_DIV = k + 0x48, k + 0x4C
        self.RESET, self.RESET_DONE = chip.resets, chip.resets + 8
        self.CS, self.PWR, self.FBDIV, self.PRIM = p, p + 4, p + 8, p + 0xC
        # Reset values (datasheets' register lists): ROSC-driven clocks, PLL held in reset and powered down.
        self.reg.update({self.REF_CTRL: 0, self.SYS_CTRL: 0, self.SYS_DIV: chip.sys_div_one, self.PERI_CTRL: 0,
                         self.RESET: 0x1FFFFFFF, self.CS: 1, self.PWR: 0x2D, self.FBDIV: 0, self.PRIM: 0x77000,
                         self.XOSC_CTRL: 0, self.XOSC_STARTUP: 0})
        if chip.peri_div:
            self.reg[self.PERI_DIV] = 1 << 16
        self.xosc_seen_stable = False
        self.pll_seen_locked = False

    # -- derived state
    def pll_in_reset(self) -> bool:
        return bool(self.reg[self.RESET] >> self.c.pll_sys_reset_bit & 1)

    def xosc_running(self) -> bool:
        ctrl = self.reg[self.XOSC_CTRL]
        return ctrl >> 12 & 0xFFF == 0xFAB and ctrl & 0xFFF == 0xAA0 and self.reg[self.XOSC_STARTUP] > 0

    def pll_params(self) -> tuple[int, int, int, int]:
        prim = self.reg[self.PRIM]
        return self.reg[self.CS] & 0x3F, self.reg[self.FBDIV] & 0xFFF, prim >> 16 & 7, prim >> 12 & 7

    def check_pll_params(self) -> None:
        refdiv, fbdiv, pd1, pd2 = self.pll_params()
        if refdiv < 1 or XOSC_HZ // refdiv < 5_000_000:
            raise Fault(f"PLL reference {XOSC_HZ}/{refdiv} below 5 MHz")
        if not 16 <= fbdiv <= 320:
            raise Fault(f"FBDIV {fbdiv} outside 16..320")
        vco = XOSC_HZ // refdiv * fbdiv
        if not 750_000_000 <= vco <= 1_600_000_000:
            raise Fault(f"VCO {vco / 1e6} MHz outside 750..1600 MHz")

    def pll_locked(self) -> bool:
        pwr = self.reg[self.PWR]
        if self.pll_in_reset() or pwr & 0x21:
            return False
        self.check_pll_params()
        return True

    def pll_out_hz(self) -> int:
        refdiv, fbdiv, pd1, pd2 = self.pll_params()
        if not (1 <= pd2 <= pd1 <= 7):
            raise Fault(f"POSTDIV1 {pd1}, POSTDIV2 {pd2}: each must be 1..7 with POSTDIV1 >= POSTDIV2")
        return XOSC_HZ // refdiv * fbdiv // (pd1 * pd2)

    def clk_ref_hz(self) -> int:
        src = self.reg[self.REF_CTRL] & 3
        if src != 2:
            raise Fault(f"clk_ref source {src} is not the crystal")
        return XOSC_HZ

    def clk_sys_hz(self) -> int:
        ctrl = self.reg[self.SYS_CTRL]
        div = self.reg[self.SYS_DIV] / self.c.sys_div_one
        if ctrl & 1 == 0:
            return int(self.clk_ref_hz() / div)
        if ctrl >> 5 & 7 != 0:
            raise Fault("clk_sys aux source is not PLL_SYS")
        return int(self.pll_out_hz() / div)

    def clk_peri_hz(self) -> int:
        ctrl = self.reg[self.PERI_CTRL]
        if not ctrl >> 11 & 1:
            return 0
        if ctrl >> 5 & 7 != 0:
            raise Fault("clk_peri source is not clk_sys")
        div = (self.reg[self.PERI_DIV] >> 16) if self.c.peri_div else 1
        return self.clk_sys_hz() // div

    # -- reads the waits see
    def read(self, a: int) -> int:
        if a == self.XOSC_STATUS:
            return (1 << 31) if self.xosc_running() else 0
        if a == self.REF_SELECTED:
            return 1 << (self.reg[self.REF_CTRL] & 3)
        if a == self.SYS_SELECTED:
            return 1 << (self.reg[self.SYS_CTRL] & 1)
        if a == self.RESET_DONE:
            return ~self.reg[self.RESET] & 0x1FFFFFFF
        if a == self.CS:
            return self.reg[self.CS] | ((1 << 31) if self.pll_locked() else 0)
        if a == self.PERI_CTRL and self.c.peri_div:
            ctrl = self.reg[a]
            return ctrl | ((1 << 28) if ctrl >> 11 & 1 else 0)
        return self.reg.get(a, 0)

    # -- writes and the rules they must keep
    def write(self, a: int, new: int) -> None:
        old = self.reg.get(a, 0)
        if a == self.REF_CTRL and new & 3 == 2 and not self.xosc_seen_stable:
            raise Fault("clk_ref switched to the crystal before XOSC STATUS.STABLE was seen")
        if a == self.SYS_CTRL:
            if (old ^ new) & 0xE0 and old & 1:
                raise Fault("CLK_SYS_CTRL.AUXSRC changed while the aux source is selected (glitches)")
            if new & 1 and not old & 1:
                if not self.pll_seen_locked:
                    raise Fault("clk_sys switched to PLL_SYS before CS.LOCK was seen")
                if self.reg[self.PWR] & 0x08:
                    raise Fault("clk_sys switched to PLL_SYS with its post dividers powered down")
                self.pll_out_hz()
        if a == self.PERI_CTRL and (old ^ new) & 0xE0 and old >> 11 & 1:
            raise Fault("CLK_PERI_CTRL.AUXSRC changed while clk_peri runs (glitches)")
        if a == self.RESET and new >> self.c.pll_sys_reset_bit & 1 and self.reg[self.SYS_CTRL] & 1:
            raise Fault("PLL_SYS reset while clk_sys runs from it")
        if a in (self.CS, self.FBDIV) and not self.reg[self.PWR] & 1:
            raise Fault("PLL parameters changed while the PLL runs")
        if a == self.PWR and old & 0x21 and not new & 0x21:
            self.check_pll_params()
        self.reg[a] = new

    def run(self, steps) -> None:
        for i, s in enumerate(steps):
            try:
                if s.op in ("wait_set", "wait_clear"):
                    value = self.read(s.address) & s.value
                    if value != (s.value if s.op == "wait_set" else 0):
                        raise Fault(f"waits forever on 0x{s.address:08X}")
                    if s.address == self.XOSC_STATUS:
                        self.xosc_seen_stable = True
                    if s.address == self.CS and s.value & (1 << 31):
                        self.pll_seen_locked = True
                    continue
                old = self.read(s.address)
                new = {"write": s.value, "set": old | s.value, "clear": old & ~s.value}[s.op]
                self.write(s.address, new & 0xFFFFFFFF)
            except Fault as e:
                raise Fault(f"init[{i}] ({s.op} 0x{s.address:08X} 0x{s.value:08X}): {e}") from None


@pytest.mark.parametrize("name", ["pico", "pico2"])
def test_board_clock_bringup_meets_the_datasheet_and_gives_the_board_file_clocks(name):
    board = load_board(name)
    model = ClockModel(CHIPS[name])
    model.run(board.console.init)
    refdiv, fbdiv, pd1, pd2 = model.pll_params()
    assert (refdiv, fbdiv) == (1, 125) and XOSC_HZ * fbdiv == 1_500_000_000
    assert model.clk_sys_hz() == board.console.cpu_clock_hz == board.clock_hz == SDK_DEFAULT_HZ[name]
    assert model.clk_peri_hz() == board.console.uart_clock_hz
    # 115200 baud from clk_peri within 0.1% (PL011 fractional divider)
    assert abs(baud_divisor(board.console, name).error(board.console.baud)) < 0.001


def _edit(steps, address, value):
    return tuple(replace(s, value=value) if s.address == address and s.op == "write" else s for s in steps)


@pytest.mark.parametrize("name", ["pico", "pico2"])
@pytest.mark.parametrize("breakage, message", [
    ("fbdiv", "VCO"), ("postdiv", "POSTDIV1"), ("no_lock_wait", "before CS.LOCK"),
    ("no_xosc_wait", "before XOSC"), ("postdiv_off", "post dividers"),
])
def test_the_model_rejects_broken_sequences(name, breakage, message):
    """The checks can fail: each breakage of the board's own sequence is caught."""
    chip, steps = CHIPS[name], load_board(name).console.init
    if breakage == "fbdiv":                       # 12 MHz x 200 = 2400 MHz VCO
        steps = _edit(steps, chip.pll_sys + 8, 200)
    elif breakage == "postdiv":                   # POSTDIV1 2 < POSTDIV2 6
        steps = _edit(steps, chip.pll_sys + 0xC, 0x26000)
    elif breakage == "no_lock_wait":
        steps = tuple(s for s in steps if not (s.op == "wait_set" and s.address == chip.pll_sys))
    elif breakage == "no_xosc_wait":
        steps = tuple(s for s in steps if not (s.op == "wait_set" and s.address == chip.xosc + 4))
    elif breakage == "postdiv_off":
        steps = tuple(s for s in steps if not (s.op == "clear" and s.address == chip.pll_sys + 4 and s.value == 8))
    with pytest.raises(Fault, match=message):
        ClockModel(chip).run(steps)


def test_a_wait_that_cannot_finish_is_caught():
    steps = (InitStep("wait_set", CHIPS["pico"].pll_sys, 1 << 31),)    # PLL never powered: LOCK never comes
    with pytest.raises(Fault, match="waits forever"):
        ClockModel(CHIPS["pico"]).run(steps)
