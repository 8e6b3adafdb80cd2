"""runtime_c/tinyc_simd.h's byte GEMM step (TINYC_GEMM_U8X4): the Thumb-1 asm a Cortex-M0+ build uses, run under
QEMU (mps2-an385 with the M0+ image, unaligned accesses trapping), gives the same sums and pointers as its C twin
on the host, for byte extremes and random bytes and several lengths."""
from __future__ import annotations

import subprocess

import pytest

from tinyc.resources import resource_dir

from test_emulation_runtime import _image, run_qemu
from test_simd_intrinsics import EMIT, host_run

PROGRAM = EMIT + r"""
static uint32_t state = 0x9E3779B9u;
static uint32_t next(void) {            /* xorshift32 */
  state ^= state << 13; state ^= state >> 17; state ^= state << 5;
  return state;
}
static uint8_t u[40] __attribute__((aligned(4)));
static uint8_t w[4 * 40] __attribute__((aligned(4)));
static int8_t x[40] __attribute__((aligned(4)));
int main(void) {
#ifdef TINYC_EMULATION
  tinyc_console_init();
#endif
  for (int round = 0; round < 12; ++round) {
    const int k8 = 8 * (1 + round % 5);
    for (int i = 0; i < 40; ++i) u[i] = round < 2 ? (uint8_t)(255 * round) : (uint8_t)next();
    for (int i = 0; i < 160; ++i) w[i] = round < 2 ? 255 : (uint8_t)next();
    uint32_t a0 = next(), a1 = next(), a2 = next(), a3 = next();
    const uint8_t *wv = w;
    TINYC_GEMM_U8X4(a0, a1, a2, a3, u, wv, k8);
    emit("a0", a0); emit("a1", a1); emit("a2", a2); emit("a3", a3);
    emit("w advanced", (uint32_t)(wv - w));
    for (int i = 0; i < 40; ++i) x[i] = (int8_t)next();
    emit("bias bytes aligned", tinyc_bias_bytes(u, x, 4 * (1 + round % 10), 1));
    emit("u", tinyc_load32a(u));
    emit("bias bytes", tinyc_bias_bytes(u, x + 1, 3 + round, 0));
    emit("u", tinyc_load32a(u));
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def host_lines(tmp_path_factory):
    return host_run(tmp_path_factory.mktemp("thumb1_host"), PROGRAM)


def test_thumb1_gemm_equals_its_c_twin(tmp_path, host_lines):
    machine, elf = _image(tmp_path, "pico", PROGRAM, defines=("-I", str(resource_dir("runtime_c"))))
    code, text = run_qemu(machine, elf, timeout=60)
    assert code == 0, text
    names = {h.split()[0] for h in host_lines}
    lines = [ln for ln in text.splitlines() if ln and ln.split()[0] in names]
    assert len(host_lines) == 12 * 9 and lines == host_lines


def test_m0plus_build_uses_the_thumb1_asm(tmp_path):
    """The Cortex-M0+ object holds the asm loop (accumulators in high registers), not the C twin."""
    src = tmp_path / "p.c"
    src.write_text(PROGRAM.replace("#ifdef TINYC_EMULATION", "#if 0"))
    obj = tmp_path / "p.o"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-O2", "-std=c99", "-I",
                    str(resource_dir("runtime_c")), "-c", str(src), "-o", str(obj)], check=True)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True).stdout
    assert dis.count("muls") >= 32 and "ldrb" in dis
    assert any(f"add\t{r}, r" in dis for r in ("r8", "r9", "sl", "fp", "ip"))
