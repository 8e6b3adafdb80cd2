"""Raspberry Pi boot blocks: CRC, the RP2040 boot2 (stored bytes == assembled source), the RP2350 IMAGE_DEF, and
the C sources that place them in the firmware."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tinyc.firmware import rp_boot

ROOT = Path(__file__).resolve().parents[2]
BOOT2_SOURCE = ROOT / "runtime_c" / "firmware" / "boot2_rp2040.S"
GCC = "arm-none-eabi-gcc"
OBJCOPY = "arm-none-eabi-objcopy"
OBJDUMP = "arm-none-eabi-objdump"


def _require_arm_toolchain():
    # CI always has the toolchain: a missing one is a broken machine, not a reason to skip.
    for tool in (GCC, OBJCOPY, OBJDUMP):
        assert shutil.which(tool), f"{tool} is not installed (apt-get install gcc-arm-none-eabi)"


def _run(*cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def boot2_object(tmp_path_factory):
    """runtime_c/firmware/boot2_rp2040.S assembled for the RP2040's Cortex-M0+: (object path, .text bytes)."""
    _require_arm_toolchain()
    out = tmp_path_factory.mktemp("boot2")
    obj, binary = out / "boot2.o", out / "boot2.bin"
    _run(GCC, "-mcpu=cortex-m0plus", "-mthumb", "-nostdlib", "-c", str(BOOT2_SOURCE), "-o", str(obj))
    _run(OBJCOPY, "-O", "binary", "-j", ".text", str(obj), str(binary))
    return obj, binary.read_bytes()


def test_crc32_mpeg2_check_value():
    assert rp_boot.crc32_mpeg2(b"123456789") == 0x0376E6E7  # the catalogued check value of CRC-32/MPEG-2
    assert rp_boot.crc32_mpeg2(b"") == 0xFFFFFFFF  # initial value, no final XOR


def test_boot2_is_256_bytes_with_valid_crc():
    block = rp_boot.rp2040_boot2()
    assert len(block) == 256
    assert block[:len(rp_boot.RP2040_BOOT2_CODE)] == rp_boot.RP2040_BOOT2_CODE
    assert block[len(rp_boot.RP2040_BOOT2_CODE):252] == bytes(252 - len(rp_boot.RP2040_BOOT2_CODE))
    assert struct.unpack("<I", block[252:])[0] == rp_boot.crc32_mpeg2(block[:252])
    assert len(rp_boot.RP2040_BOOT2_CODE) <= 252


def test_stored_boot2_code_is_the_assembled_source(boot2_object):
    _, code = boot2_object
    assert code == rp_boot.RP2040_BOOT2_CODE, (
        "RP2040_BOOT2_CODE in tinyc/firmware/rp_boot.py is stale; set it to " + code.hex())


def test_boot2_disassembly_calls_rom_and_vectors_into_flash(boot2_object):
    obj, _ = boot2_object
    listing = _run(OBJDUMP, "-d", str(obj))
    instructions = [line.split("\t", 2)[-1].strip() for line in listing.splitlines()
                    if re.match(r"\s+[0-9a-f]+:", line)]
    text = "\n".join(instructions)
    # Bootrom lookup: halfword pointers at 0x14 (function table) and 0x18 (rom_table_lookup), code 'C','X'.
    assert re.search(r"movs\s+r0, #20\nldrh\s+r0, \[r0", text)
    assert re.search(r"movs\s+r2, #24\nldrh\s+r2, \[r2", text)
    assert ".word\t0x00005843" in text
    assert re.search(r"blx\s+r2\nblx\s+r0", text)
    # The entry lr decides: 0 (bootrom) -> VTOR = 0x10000100, MSP and PC from that table; else return.
    assert re.search(r"cmp\s+r0, #0\nbeq", text)
    assert re.search(r"pop\s+\{r4, pc\}", text)
    assert ".word\t0x10000100" in text and ".word\t0xe000ed08" in text
    assert re.search(r"str\s+r0, \[r1", text)  # r0 = 0x10000100 stored to r1 = VTOR
    assert re.search(r"ldmia\s+r0!, \{r1, r2\}\nmsr\s+MSP, r1\nbx\s+r2", text)


def test_boot2_literals_feed_the_vtor_store(boot2_object):
    """The `ldr r0/r1, [pc, #n]` before the VTOR store load 0x10000100 and 0xE000ED08 (checks the offsets)."""
    obj, code = boot2_object
    listing = _run(OBJDUMP, "-d", str(obj))
    loads = {}
    for line in listing.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+[0-9a-f ]+\s+ldr\s+(r\d), \[pc, #(\d+)\]", line)
        if m:
            address, register, offset = int(m.group(1), 16), m.group(2), int(m.group(3))
            literal = ((address + 4) & ~3) + offset  # Thumb: PC reads as the instruction address + 4, word aligned
            loads.setdefault(register, []).append(struct.unpack_from("<I", code, literal)[0])
    assert loads["r1"] == [0x5843, 0xE000ED08]
    assert loads["r0"] == [0x10000100]


def test_image_def_fields():
    block = rp_boot.rp2350_image_def()
    assert len(block) == 20
    start, item, last, link, end = struct.unpack("<5I", block)
    assert start == 0xFFFFDED3 and end == 0xAB123579
    # IMAGE_TYPE item: type 0x42 (bit 7 clear: 1-byte size), size 1 word, then the 16-bit flags.
    item_type, item_words, flags = struct.unpack("<BBH", block[4:8])
    assert (item_type, item_words) == (0x42, 1)
    assert flags & 0xF == 1  # image type EXE
    assert (flags >> 4) & 0x3 == 2  # EXE security: secure
    assert (flags >> 8) & 0x7 == 0  # CPU: Arm
    assert (flags >> 11) & 1 == 0  # reserved
    assert (flags >> 12) & 0x7 == 1  # chip: RP2350
    assert not flags & 0x8000  # not try-before-you-buy
    assert flags == 0x1021 and item == 0x10210142
    # LAST item: 0xff (2-byte size), size = words of the items before it (1), pad byte 0.
    assert struct.unpack("<BHB", block[8:12]) == (0xFF, 1, 0)
    assert last == 0x000001FF
    assert link == 0  # the loop is this one block


def test_boot_block_source_other_families():
    for family in ("rp2350-riscv", "rp2350-arm-ns", "absolute", "stm32f4", ""):
        assert rp_boot.boot_block_source(family) is None


@pytest.mark.parametrize("family,cpu,section,symbol,expected", [
    ("rp2040", "cortex-m0plus", ".boot2", "tinyc_boot2", rp_boot.rp2040_boot2),
    ("rp2350-arm-s", "cortex-m33", ".image_def", "tinyc_image_def", rp_boot.rp2350_image_def),
])
def test_boot_block_source_compiles_to_the_block(tmp_path, family, cpu, section, symbol, expected):
    _require_arm_toolchain()
    source = rp_boot.boot_block_source(family)
    assert f"const unsigned char {symbol}[{len(expected())}]" in source
    c, obj, binary = tmp_path / "boot.c", tmp_path / "boot.o", tmp_path / "boot.bin"
    c.write_text(source)
    _run(GCC, f"-mcpu={cpu}", "-mthumb", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c", str(c), "-o", str(obj))
    _run(OBJCOPY, "-O", "binary", "-j", section, str(obj), str(binary))
    assert binary.read_bytes() == expected()
    sections = _run(OBJDUMP, "-h", str(obj))
    m = re.search(rf"\s{re.escape(section)}\s+([0-9a-f]+)\s.*\s2\*\*(\d+)", sections)
    assert m and int(m.group(1), 16) == len(expected())
    if section == ".image_def":
        assert int(m.group(2)) >= 2  # word aligned: the bootrom scans for the start marker on word boundaries
    symbols = _run("arm-none-eabi-nm", str(obj))
    assert re.search(rf"\sR {symbol}$", symbols, re.M)  # global, read-only, kept (used) even at -O2


# --- Behaviour: run the stored boot2 on a tiny Thumb interpreter against a fake bootrom ---------------------------
# Only the instructions boot2 uses are implemented; anything else (or any access to memory nobody set up) fails the
# test, so this also checks that boot2 touches nothing but the ROM tables, its stack, VTOR and the vector table.

ROM_FUNC_TABLE, ROM_LOOKUP, ROM_CX = 0x0100, 0x0200, 0x0300
BOOT2_BASE = 0x20041F00  # where the bootrom loads boot2: the last 256 bytes of SRAM
VTOR = 0xE000ED08


class _Thumb:
    def __init__(self, mem: dict[int, int], hooks):
        self.mem, self.hooks, self.r, self.writes = mem, hooks, [0] * 16, []

    def read(self, address, size):
        return int.from_bytes(bytes(self.mem[address + i] for i in range(size)), "little")

    def write(self, address, value, size=4):
        self.writes.append((address, value))
        for i in range(size):
            self.mem[address + i] = (value >> 8 * i) & 0xFF

    def branch(self, target):
        assert target & 1, f"branch to 0x{target:08x} without the Thumb bit"
        self.r[15] = target & ~1

    def call(self, target):
        self.r[14] = (self.r[15] + 2) | 1
        if target & ~1 in self.hooks:  # a bootrom function: run it in Python and return to the caller
            self.hooks[target & ~1](self.r)
            self.r[15] = self.r[14] & ~1
        else:
            self.branch(target)

    def step(self):
        r, pc = self.r, self.r[15]
        op = self.read(pc, 2)
        nxt = pc + 2
        if op & 0xFE00 == 0xB400:  # push {rlist[, lr]}
            regs = [i for i in range(8) if op >> i & 1] + ([14] if op & 0x100 else [])
            r[13] -= 4 * len(regs)
            for i, reg in enumerate(regs):
                self.write(r[13] + 4 * i, r[reg])
        elif op & 0xFE00 == 0xBC00:  # pop {rlist[, pc]}
            regs = [i for i in range(8) if op >> i & 1] + ([15] if op & 0x100 else [])
            values = [self.read(r[13] + 4 * i, 4) for i in range(len(regs))]
            r[13] += 4 * len(regs)
            for reg, value in zip(regs, values):
                if reg == 15:
                    self.branch(value)
                    return
                r[reg] = value
        elif op & 0xF800 == 0x2000:  # movs rd, #imm8
            r[op >> 8 & 7] = op & 0xFF
        elif op & 0xF800 == 0x2800:  # cmp rn, #imm8
            self.z = r[op >> 8 & 7] == op & 0xFF
        elif op & 0xF800 == 0x8800:  # ldrh rt, [rn, #imm5*2]
            r[op & 7] = self.read(r[op >> 3 & 7] + (op >> 6 & 0x1F) * 2, 2)
        elif op & 0xF800 == 0x4800:  # ldr rt, [pc, #imm8*4]
            r[op >> 8 & 7] = self.read(((pc + 4) & ~3) + (op & 0xFF) * 4, 4)
        elif op & 0xF800 == 0x9800:  # ldr rt, [sp, #imm8*4]
            r[op >> 8 & 7] = self.read(r[13] + (op & 0xFF) * 4, 4)
        elif op & 0xF800 == 0x6000:  # str rt, [rn, #imm5*4]
            self.write(r[op >> 3 & 7] + (op >> 6 & 0x1F) * 4, r[op & 7])
        elif op & 0xF800 == 0xC800:  # ldmia rn!, {rlist}
            base = op >> 8 & 7
            regs = [i for i in range(8) if op >> i & 1]
            address = r[base]
            for i, reg in enumerate(regs):
                r[reg] = self.read(address + 4 * i, 4)
            if base not in regs:
                r[base] = address + 4 * len(regs)
        elif op & 0xFF00 == 0xD000:  # beq label
            if self.z:
                nxt = pc + 4 + (((op & 0xFF) ^ 0x80) - 0x80) * 2
        elif op & 0xFF87 == 0x4780:  # blx rm
            r[15] = pc
            self.call(r[op >> 3 & 0xF])
            return
        elif op & 0xFF87 == 0x4700:  # bx rm
            self.branch(r[op >> 3 & 0xF])
            return
        elif op & 0xFFF0 == 0xF380 and self.read(pc + 2, 2) == 0x8808:  # msr msp, rn
            self.msp = r[13] = r[op & 0xF]
            nxt = pc + 4
        else:
            raise AssertionError(f"unexpected instruction 0x{op:04x} at 0x{pc:08x}")
        r[15] = nxt


def _run_boot2(entry_lr: int):
    mem: dict[int, int] = {}

    def put(address, data):
        mem.update({address + i: b for i, b in enumerate(data)})

    put(0x14, struct.pack("<HHH", ROM_FUNC_TABLE, 0x0180, ROM_LOOKUP | 1))  # ROM 0x14..0x19: three 16-bit pointers
    put(BOOT2_BASE, rp_boot.rp2040_boot2())
    put(0x10000100, struct.pack("<II", 0x20042000, 0x100001C1))  # the image's vector table: MSP, reset handler
    stack_top = 0x20041000
    put(stack_top - 64, bytes(64))
    calls = []

    def lookup(r):
        calls.append(("lookup", r[0], r[1]))
        r[0] = ROM_CX | 1 if (r[0], r[1]) == (ROM_FUNC_TABLE, ord("C") | ord("X") << 8) else 0
        r[1] = r[2] = r[3] = r[12] = 0xDEADBEEF  # caller-saved registers are fair game for the ROM

    def cx(r):
        calls.append(("flash_enter_cmd_xip", r[13] % 8))
        r[0] = r[1] = r[2] = r[3] = r[12] = 0xDEADBEEF

    cpu = _Thumb(mem, {ROM_LOOKUP: lookup, ROM_CX: cx})
    cpu.r[4], cpu.r[13], cpu.r[14], cpu.r[15] = 0x4444, stack_top, entry_lr, BOOT2_BASE
    for _ in range(100):
        cpu.step()
        if not BOOT2_BASE <= cpu.r[15] < BOOT2_BASE + 256:
            return cpu, calls
    raise AssertionError("boot2 did not leave its 256 bytes within 100 instructions")


def test_boot2_from_bootrom_enters_xip_and_vectors_into_flash():
    cpu, calls = _run_boot2(entry_lr=0)  # the bootrom enters boot2 with lr = 0
    assert calls == [("lookup", ROM_FUNC_TABLE, 0x5843), ("flash_enter_cmd_xip", 0)]  # stack 8-byte aligned
    assert (VTOR, 0x10000100) in cpu.writes
    assert cpu.msp == 0x20042000
    assert cpu.r[15] == 0x100001C0  # the reset handler


def test_boot2_called_as_a_function_returns():
    cpu, calls = _run_boot2(entry_lr=0x10001235)
    assert [c[0] for c in calls] == ["lookup", "flash_enter_cmd_xip"]
    assert not any(address == VTOR for address, _ in cpu.writes)
    assert cpu.r[15] == 0x10001234 and cpu.r[13] == 0x20041000 and cpu.r[4] == 0x4444
