"""The emulation runtime itself: SysTick ticks per instruction on each QEMU machine (a loop of known length),
and CCR.UNALIGN_TRP making the Cortex-M3 fault on the unaligned word access a real Cortex-M0+ faults on."""
from __future__ import annotations

import subprocess

import pytest

from tinyc.firmware.emulate import run_qemu
from tinyc.firmware.machines import load_machine
from tinyc.firmware.project import emulation_linker_script
from tinyc.boards import load_board
from tinyc.resources import resource_dir

RUNTIME = resource_dir("runtime_c") / "firmware"
BOARD_OF_MACHINE = {"mps2-an385": "pico", "mps2-an386": "nucleo-f412zg", "mps2-an500": "stm32f746g-disco",
                    "mps2-an505": "pico2"}

# Exactly 2 instructions per iteration (subs + taken bne) between the two counter reads.
LOOP_MAIN = r"""
#include <stdint.h>
#include "tinyc_firmware.h"
int main(void) {
  tinyc_console_init();
  tinyc_cycles_init();
  static const uint32_t counts[3] = {1000u, 100000u, 1000000u};
  for (int k = 0; k < 3; ++k) {
    uint32_t n = counts[k];
    const uint32_t t0 = tinyc_cycles();
    __asm volatile(".syntax unified\n1: subs %0, %0, #1\n bne 1b" : "+l"(n));
    const uint32_t t1 = tinyc_cycles();
    const uint32_t t2 = tinyc_cycles();
    const uint32_t t3 = tinyc_cycles();
    tinyc_print("loop ");
    tinyc_print_u32(counts[k]);
    tinyc_print(" ");
    tinyc_print_u32((t1 - t0) - (t3 - t2));
    tinyc_print("\n");
  }
  return 0;
}
"""

UNALIGNED_MAIN = r"""
#include <stdint.h>
#include "tinyc_firmware.h"
static uint32_t words[2] = {0x11223344u, 0x55667788u};
int main(void) {
  tinyc_console_init();
  volatile const uint32_t *p = (const uint32_t *)((uintptr_t)words + 1);
  uint32_t v;
  __asm volatile("ldr %0, [%1]" : "=l"(v) : "l"(p));   /* an LDR at an odd address: ARMv6-M always faults */
  tinyc_print("unaligned load returned ");
  tinyc_print_hex_bytes(&v, 4);
  tinyc_print("\n");
  return 0;
}
"""


def _image(tmp_path, board_name, main_source, defines=()):
    board = load_board(board_name)
    machine = load_machine(board.qemu_machine)
    (tmp_path / "main.c").write_text(main_source)
    (tmp_path / "emulate.ld").write_text(emulation_linker_script(board, machine))
    elf = tmp_path / "t.elf"
    sources = [str(RUNTIME / f) for f in ("startup.c", "firmware.c", "semihost.c")] + [str(tmp_path / "main.c")]
    cmd = ["arm-none-eabi-gcc", *board.cflags, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
           "-DTINYC_EMULATION", *defines, "-I", str(RUNTIME), "-nostartfiles", "--specs=nano.specs",
           "-T", str(tmp_path / "emulate.ld"), *sources, "-lc", "-lgcc", "-o", str(elf)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return machine, elf


@pytest.mark.parametrize("machine_name", sorted(BOARD_OF_MACHINE))
def test_systick_counts_instructions_at_the_machines_clock(tmp_path, machine_name):
    machine, elf = _image(tmp_path, BOARD_OF_MACHINE[machine_name], LOOP_MAIN)
    expected_factor = {"mps2-an505": 50}.get(machine_name, 40)   # 10^9 / (20 or 25 MHz)
    assert machine.instructions_per_tick == expected_factor
    code, text = run_qemu(machine, elf, timeout=60)
    assert code == 0, text
    rows = [line.split() for line in text.splitlines() if line.startswith("loop ")]
    assert len(rows) == 3
    for _, n, ticks in rows:
        measured = int(ticks) * machine.instructions_per_tick
        # 2 instructions per iteration; the counter's resolution is one tick, plus the loop's few set-up
        # instructions that are not part of the empty interval.
        assert abs(measured - 2 * int(n)) <= 2 * machine.instructions_per_tick, (n, measured)


def test_m0plus_emulation_traps_unaligned_access(tmp_path):
    machine, elf = _image(tmp_path, "pico", UNALIGNED_MAIN, ["-DTINYC_TRAP_UNALIGNED"])
    code, text = run_qemu(machine, elf, timeout=60)
    assert code == 3 and "fault" in text, (code, text)     # TINYC_EXIT_FAULT from the HardFault handler


def test_without_unalign_trp_the_m3_forgives_it(tmp_path):
    # The control: the same program without the startup's CCR setting runs to the end on mps2-an385's M3 --
    # which is why the M0+ emulation must set it.
    machine, elf = _image(tmp_path, "pico", UNALIGNED_MAIN)
    code, text = run_qemu(machine, elf, timeout=60)
    assert code == 0 and "unaligned load returned" in text, (code, text)
