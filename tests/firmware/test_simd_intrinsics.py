"""runtime_c/tinyc_simd.h: every DSP intrinsic and GEMM step, run as ARM instructions under QEMU on the M4, M7 and
M33, gives the same bits as its portable C twin on the host (TINYC_SIMD_EMULATE), on edge and random operands."""
from __future__ import annotations

import subprocess

import pytest

from tinyc.resources import resource_dir

from test_emulation_runtime import _image, run_qemu

# Shared with the other tests of runtime_c helpers: emit(name, word) prints one line the same way under QEMU
# (semihosting console) and on the host (printf), so the two outputs compare line by line.
EMIT = r"""
#include <stdint.h>
#include "tinyc_simd.h"
#ifdef TINYC_EMULATION
#include "tinyc_firmware.h"
static void emit(const char *name, uint32_t v) {
  tinyc_print(name); tinyc_print(" "); tinyc_print_hex_bytes(&v, 4); tinyc_print("\n");
}
#else
#include <stdio.h>
static void emit(const char *name, uint32_t v) {
  const unsigned char *b = (const unsigned char *)&v;
  printf("%s %02x%02x%02x%02x\n", name, b[0], b[1], b[2], b[3]);
}
#endif
"""

PROGRAM = EMIT + r"""
static uint32_t state = 0x12345678u;
static uint32_t next(void) {            /* xorshift32 */
  state ^= state << 13; state ^= state >> 17; state ^= state << 5;
  return state;
}
static const uint32_t edges[8] = {0u, 0xFFFFFFFFu, 0x80808080u, 0x7F7F7F7Fu, 0x80007FFFu, 0x7FFF8000u,
                                  0x00010001u, 0x01800180u};
static int16_t packed[16] __attribute__((aligned(4)));
static int8_t inputs[8];
static uint32_t expanded[8] __attribute__((aligned(4)));
int main(void) {
#ifdef TINYC_EMULATION
  tinyc_console_init();
#endif
  for (int i = 0; i < 72; ++i) {
    const uint32_t a = i < 64 ? edges[i % 8] : next(), b = i < 64 ? edges[i / 8] : next(), c = next();
    emit("sxtb16", tinyc_sxtb16(a));
    emit("sxtb16_ror8", tinyc_sxtb16_ror8(a));
    emit("smlad", (uint32_t)tinyc_smlad(a, b, (int32_t)c));
    emit("smmulr", (uint32_t)tinyc_smmulr((int32_t)a, (int32_t)b));
    emit("qadd8", tinyc_qadd8(a, b));
    emit("smax8", tinyc_smax8(a, b));
    emit("pkhbt", tinyc_pkhbt(a, b));
    emit("pkhtb", tinyc_pkhtb(a, b));
    emit("smlabb", (uint32_t)tinyc_smlabb(a, b, (int32_t)c));
    emit("smlatt", (uint32_t)tinyc_smlatt(a, b, (int32_t)c));
    emit("sadd16", tinyc_sadd16(a, b));
    emit("clamp8", (uint32_t)tinyc_clamp8((int32_t)(a >> 20) - 2048, -20, 100));
    const int32_t acc = (int32_t)(a >> 2) - (1 << 29);             /* |acc| < 2^30 */
    const int32_t rshift = 1 + (int32_t)(b % 31u);
    const int32_t mult = (int32_t)((1u << 30) | (c >> 2));        /* [2^30, 2^31) */
    emit("requantize_fast", (uint32_t)tinyc_requantize_fast(acc, mult, rshift, (int32_t)(1u << (rshift - 1))));
  }
  for (int round = 0; round < 8; ++round) {
    for (int i = 0; i < 16; ++i) packed[i] = (int16_t)next();
    for (int i = 0; i < 8; ++i) inputs[i] = (int8_t)next();
    uint32_t ax0 = next(), ax1 = next();
    int32_t ay0 = (int32_t)next(), ay1 = (int32_t)next();
    const int8_t *a = inputs;
    const int16_t *wp = packed;
    TINYC_GEMM_QUAD(ax0, ay0, ax1, ay1, a, wp);
    TINYC_GEMM_PAIR(ax0, ay0, a, wp);
    emit("quad+pair ax0", ax0); emit("quad+pair ay0", (uint32_t)ay0);
    emit("quad+pair ax1", ax1); emit("quad+pair ay1", (uint32_t)ay1);
    emit("pointers", (uint32_t)((a - inputs) * 100 + (wp - packed)));
    for (int i = 0; i < 8; ++i) expanded[i] = next();
    const uint32_t *ep = expanded;
    wp = packed;
#if defined(__ARM_FEATURE_DSP)
    TINYC_GEMM_2PX_ASM(TINYC_GEMM_2PX_STEP TINYC_GEMM_2PX_STEP, ax0, ay0, ax1, ay1, ep, wp);
#else
    TINYC_GEMM_2PX(ax0, ay0, ax1, ay1, ep, wp);
    TINYC_GEMM_2PX(ax0, ay0, ax1, ay1, ep, wp);
#endif
    emit("2px axa", ax0); emit("2px aya", (uint32_t)ay0); emit("2px axb", ax1); emit("2px ayb", (uint32_t)ay1);
    emit("2px pointers", (uint32_t)((ep - expanded) * 100 + (wp - packed)));
  }
  return 0;
}
"""


def host_run(directory, program: str, defines=()) -> list:
    """The program's lines from a host build (gcc, ASan + UBSan) with the runtime headers."""
    (directory / "p.c").write_text(program)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", *defines, "-I", str(resource_dir("runtime_c")),
                    str(directory / "p.c"), "-o", str(directory / "p")], check=True)
    out = subprocess.run([str(directory / "p")], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.fixture(scope="module")
def host_lines(tmp_path_factory):
    return host_run(tmp_path_factory.mktemp("simd_host"), PROGRAM, ("-DTINYC_SIMD_EMULATE",))


@pytest.mark.parametrize("board", ["nucleo-f412zg", "stm32f746g-disco", "pico2"])
def test_dsp_instructions_equal_their_c_twins(tmp_path, host_lines, board):
    machine, elf = _image(tmp_path, board, PROGRAM, defines=("-I", str(resource_dir("runtime_c"))))
    code, text = run_qemu(machine, elf, timeout=60)
    assert code == 0, text
    lines = [ln for ln in text.splitlines() if ln and ln.split()[0] in {h.split()[0] for h in host_lines}]
    assert len(host_lines) == 72 * 13 + 8 * 10 and lines == host_lines


def test_arm_build_uses_the_dsp_instructions(tmp_path):
    """The ARM object really contains the instructions (not the C twins)."""
    src = tmp_path / "p.c"
    src.write_text(PROGRAM.replace("#ifdef TINYC_EMULATION", "#if 0"))
    obj = tmp_path / "p.o"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-O2", "-std=c99", "-I",
                    str(resource_dir("runtime_c")), "-c", str(src), "-o", str(obj)], check=True)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True).stdout
    for insn in ("sxtb16", "smlad", "smmulr", "qadd8", "ssub8", "sel", "pkhbt", "pkhtb", "smlabb", "smlatt",
                 "sadd16", "ldrd"):
        assert insn in dis, insn
