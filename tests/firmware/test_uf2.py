"""UF2 images: the block format, round trips, the RP2350-E10 block, the checker's refusals, and ELF -> UF2 end to
end with firmware linked by arm-none-eabi-gcc."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from tinyc.errors import TinycError
from tinyc.firmware import rp_boot, uf2

FLASH = 0x10000000
FLASH_2M, FLASH_4M = 2 << 20, 4 << 20


def _memory(blocks, skip_e10=True):
    """address -> byte, as the blocks would write it."""
    out = {}
    for block in blocks:
        if skip_e10 and block["e10"]:
            continue
        for i, byte in enumerate(block["payload"]):
            out[block["target_addr"] + i] = byte
    return out


def _refuses(data, family, match, origin=FLASH, size=FLASH_2M):
    with pytest.raises(TinycError, match=match) as info:
        uf2.check_uf2(data, family, origin, size)
    assert "\n" not in str(info.value)
    return str(info.value)


def _rp2040_image(extra=b"\x11" * 1000):
    return uf2.uf2_from_segments([(FLASH, rp_boot.rp2040_boot2()), (FLASH + 0x100, extra)], "rp2040")


def _rp2350_image(size=600):
    # Vector table (2 words) at the start of flash, then the IMAGE_DEF block, then "code".
    image = struct.pack("<II", 0x20082000, FLASH + 0x21) + rp_boot.rp2350_image_def() + b"\x22" * size
    return uf2.uf2_from_segments([(FLASH, image)], "rp2350-arm-s")


def _set_word(data, block, offset, value):
    out = bytearray(data)
    struct.pack_into("<I", out, block * 512 + offset, value)
    return bytes(out)


# --- format ------------------------------------------------------------------------------------------------------

def test_family_ids():
    assert uf2.FAMILIES == {
        "rp2040": 0xE48BFF56, "absolute": 0xE48BFF57, "data": 0xE48BFF58,
        "rp2350-arm-s": 0xE48BFF59, "rp2350-riscv": 0xE48BFF5A, "rp2350-arm-ns": 0xE48BFF5B,
    }
    with pytest.raises(TinycError, match="unknown UF2 family 'rp2050'"):
        uf2.uf2_from_segments([(FLASH, b"x")], "rp2050")


def test_block_layout():
    data = uf2.uf2_from_segments([(FLASH + 0x100, b"\xaa" * 300)], "rp2040", fill_sectors=False)
    assert len(data) == 2 * 512
    for n in range(2):
        block = data[n * 512:(n + 1) * 512]
        header = struct.unpack("<8I", block[:32])
        assert header == (0x0A324655, 0x9E5D5157, 0x2000, FLASH + 0x100 * (n + 1), 256, n, 2, 0xE48BFF56)
        assert struct.unpack("<I", block[508:])[0] == 0x0AB16F30
        assert block[32 + 256:508] == bytes(476 - 256)  # unused data bytes are zero
    assert data[32:32 + 256] == b"\xaa" * 256
    assert data[512 + 32:512 + 32 + 44] == b"\xaa" * 44 and data[512 + 32 + 44:512 + 32 + 256] == bytes(212)


def test_round_trip_same_bytes_at_same_addresses():
    segments = [(FLASH + 0x1234, bytes(range(256)) * 3), (FLASH + 0x40, b"head"), (FLASH + 0x2000, b"\x5a" * 512)]
    data = uf2.uf2_from_segments(segments, "rp2040", fill_sectors=False)
    blocks = uf2.parse_uf2(data)
    memory = _memory(blocks)
    for address, payload in segments:
        assert bytes(memory[address + i] for i in range(len(payload))) == payload
    covered = {address + i for address, payload in segments for i in range(len(payload))}
    assert all(byte == 0 for address, byte in memory.items() if address not in covered)  # padding is zero
    assert [b["target_addr"] for b in blocks] == sorted({a & ~0xFF for a in memory})  # sorted, one per page
    assert [(b["block_no"], b["num_blocks"]) for b in blocks] == [(i, len(blocks)) for i in range(len(blocks))]
    assert all(b["family"] == "rp2040" and b["flags"] == 0x2000 and not b["e10"] for b in blocks)


def test_sector_fill_completes_touched_sectors_up_to_the_last_page():
    data = uf2.uf2_from_segments([(FLASH + 0x100, b"a"), (FLASH + 0x1800, b"b")], "rp2040")
    addresses = [b["target_addr"] for b in uf2.parse_uf2(data)]
    # Sector 0 complete (from 0x10000000, RP2040-E14), sector 1 up to its last page only.
    assert addresses == [FLASH + 0x100 * i for i in range(16)] + [FLASH + 0x1000 + 0x100 * i for i in range(9)]
    assert _memory(uf2.parse_uf2(data))[FLASH] == 0


def test_overlapping_segments_are_an_error():
    with pytest.raises(TinycError, match="overlap") as info:
        uf2.uf2_from_segments([(FLASH, b"x" * 0x200), (FLASH + 0x1FF, b"y")], "rp2040")
    assert "\n" not in str(info.value)
    uf2.uf2_from_segments([(FLASH, b"x" * 0x200), (FLASH + 0x200, b"y")], "rp2040")  # touching is fine


# --- RP2350-E10 --------------------------------------------------------------------------------------------------

def test_rp2350_flash_image_starts_with_the_e10_block():
    data = _rp2350_image()
    e10 = data[:512]
    assert struct.unpack("<8I", e10[:32]) == (0x0A324655, 0x9E5D5157, 0x2000 | 0x8000, 0x10FFFF00, 256, 0, 2,
                                              0xE48BFF57)
    assert e10[32:32 + 256] == b"\xef" * 256
    assert struct.unpack("<II", e10[288:296]) == (0x9957E304, 0)  # RP2_IGNORE_BLOCK tag, then the end of tags
    assert e10[296:508] == bytes(212) and struct.unpack("<I", e10[508:])[0] == 0x0AB16F30
    blocks = uf2.parse_uf2(data)
    assert blocks[0]["e10"] and blocks[0]["family"] == "absolute"
    image = blocks[1:]
    assert not any(b["e10"] for b in image)
    # The image keeps its own numbering, independent of the E10 block.
    assert [(b["block_no"], b["num_blocks"], b["family"]) for b in image] == [
        (i, len(image), "rp2350-arm-s") for i in range(len(image))]
    assert image[0]["target_addr"] == FLASH


@pytest.mark.parametrize("family", ["rp2350-arm-s", "rp2350-riscv", "rp2350-arm-ns"])
def test_e10_block_for_every_rp2350_family_only(family):
    assert uf2.parse_uf2(uf2.uf2_from_segments([(FLASH, b"x")], family))[0]["e10"]
    assert not uf2.parse_uf2(uf2.uf2_from_segments([(FLASH, b"x")], family, e10_block=False))[0]["e10"]
    # Like picotool: a RAM image gets no E10 block (nothing is written to flash).
    assert not uf2.parse_uf2(uf2.uf2_from_segments([(0x20000000, b"x")], family))[0]["e10"]


def test_check_refuses_e10_block_not_first():
    data = _rp2350_image()
    _refuses(data[512:] + data[:512], "rp2350-arm-s", "block 3 is an RP2350-E10 block", size=FLASH_4M)
    _refuses(data[:512] + data, "rp2350-arm-s", "block 1 is an RP2350-E10 block", size=FLASH_4M)


def test_no_e10_block_for_rp2040():
    assert not any(b["e10"] or b["family"] != "rp2040" for b in uf2.parse_uf2(_rp2040_image()))


# --- parse_uf2 refusals ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate,match", [
    (lambda d: d[:-1], "not a positive multiple of 512"),
    (lambda d: b"", "not a positive multiple of 512"),
    (lambda d: _set_word(d, 1, 0, 0x12345678), "block 1 has a bad magic"),
    (lambda d: _set_word(d, 2, 508, 0), "block 2 has a bad magic"),
    (lambda d: _set_word(d, 0, 16, 477), "477-byte payload"),
    (lambda d: d[:512] + d[1024:], "block 1 is numbered 2 of 5, expected 1"),  # a block missing
    (lambda d: d[:-512], "are 4 blocks but claim 5"),  # truncated
    (lambda d: d[:1024] + d[512:], "block 2 is numbered 1 of 5, expected 2"),  # duplicated
    (lambda d: _set_word(d, 3, 24, 6), "block 3 is numbered 3 of 6, expected 3 of 5"),
    (lambda d: _set_word(d, 0, 20, 7), "block 0 is numbered 7 of 5"),
])
def test_parse_refuses_malformed_files(mutate, match):
    data = _rp2040_image()
    assert len(data) == 5 * 512
    with pytest.raises(TinycError, match=match) as info:
        uf2.parse_uf2(mutate(data))
    assert "\n" not in str(info.value)


def test_parse_accepts_consecutive_images_of_several_families():
    universal = _rp2040_image() + _rp2350_image()
    blocks = uf2.parse_uf2(universal)
    assert [b["family"] for b in blocks].count("absolute") == 1


# --- check_uf2 ---------------------------------------------------------------------------------------------------

def test_check_accepts_rp2040_image():
    summary = uf2.check_uf2(_rp2040_image(), "rp2040", FLASH, FLASH_2M)
    assert summary["family"] == "rp2040" and summary["family_id"] == 0xE48BFF56
    assert summary["blocks"] == 5 and summary["start"] == FLASH and summary["end"] == FLASH + 5 * 256
    assert summary["boot2_crc"] == struct.unpack("<I", rp_boot.rp2040_boot2()[252:])[0]
    assert summary["e10_block"] is False


def test_check_accepts_rp2350_image():
    summary = uf2.check_uf2(_rp2350_image(), "rp2350-arm-s", FLASH, FLASH_4M)
    assert summary["e10_block"] is True and summary["blocks"] == 3  # the E10 block is not counted
    assert summary["image_def"] == {"address": FLASH + 8, "flags": 0x1021, "image_type": 1, "security": 2,
                                    "cpu": 0, "chip": 1}
    data = uf2.uf2_from_segments([(FLASH, uf2.parse_uf2(_rp2350_image())[1]["payload"])], "rp2350-arm-s",
                                 e10_block=False)
    assert uf2.check_uf2(data, "rp2350-arm-s", FLASH, FLASH_4M)["e10_block"] is False


def test_check_refuses_wrong_family():
    _refuses(_rp2040_image(), "rp2350-arm-s",
             r"block 0 \(0x10000000\) has family 0xe48bff56 \(rp2040\), expected 0xe48bff59")
    # An RP2040 image must not carry the RP2350-E10 block either.
    e10 = _rp2350_image()[:512]
    _refuses(e10 + _rp2040_image(), "rp2040", r"has family 0xe48bff57 \(absolute\)")
    no_family = _set_word(_rp2040_image(), 2, 8, 0)
    _refuses(no_family, "rp2040", "has family no family ID")


def test_check_refuses_addresses_outside_flash():
    data = uf2.uf2_from_segments([(FLASH, rp_boot.rp2040_boot2()), (FLASH + FLASH_2M, b"x")], "rp2040",
                                 fill_sectors=False)
    message = _refuses(data, "rp2040", r"block 1 \(0x10200000\) is outside flash 0x10000000\.\.0x10200000")
    assert "link the firmware" in message
    _refuses(_rp2040_image(), "rp2040", "outside flash", origin=FLASH + 0x100)  # boot2 page below the origin


def test_check_refuses_unaligned_or_short_payloads():
    _refuses(_set_word(_rp2040_image(), 2, 12, FLASH + 0x280), "rp2040", "256-aligned")
    _refuses(_set_word(_rp2040_image(), 2, 16, 128), "rp2040", "256-byte payloads")


def test_check_refuses_duplicate_pages():
    _refuses(_set_word(_rp2040_image(), 2, 12, FLASH + 0x100), "rp2040", "already wrote")


def test_check_refuses_corrupted_magic():
    _refuses(_set_word(_rp2040_image(), 3, 4, 0), "rp2040", "bad magic")


def test_check_refuses_bad_boot2_crc():
    data = bytearray(_rp2040_image())
    data[32 + 10] ^= 1  # one bit of boot2's code
    message = _refuses(bytes(data), "rp2040", "boot2 block at 0x10000000 fails its CRC32")
    assert "link tinyc's boot2" in message


def test_check_refuses_rp2040_image_not_starting_at_flash_origin():
    data = uf2.uf2_from_segments([(FLASH + 0x1000, rp_boot.rp2040_boot2())], "rp2040")
    _refuses(data, "rp2040", r"starts at 0x10001000, not at flash 0x10000000 where the bootrom reads boot2")


def test_check_refuses_missing_image_def():
    plain = uf2.uf2_from_segments([(FLASH, b"\x22" * 1000)], "rp2350-arm-s")
    message = _refuses(plain, "rp2350-arm-s", "no RP2350 IMAGE_DEF block in the first 4 KB", size=FLASH_4M)
    assert ".image_def" in message
    # An IMAGE_DEF past the first 4 KB does not count.
    late = uf2.uf2_from_segments([(FLASH, bytes(4096) + rp_boot.rp2350_image_def())], "rp2350-arm-s")
    _refuses(late, "rp2350-arm-s", "no RP2350 IMAGE_DEF", size=FLASH_4M)
    # Nor does a broken one: LAST item size wrong, end marker missing.
    bad_last = bytearray(rp_boot.rp2350_image_def())
    bad_last[9] = 2
    bad_end = rp_boot.rp2350_image_def()[:-4] + b"\0\0\0\0"
    for block in (bytes(bad_last), bad_end):
        _refuses(uf2.uf2_from_segments([(FLASH, bytes(8) + block)], "rp2350-arm-s"), "rp2350-arm-s",
                 "no RP2350 IMAGE_DEF", size=FLASH_4M)


def test_check_refuses_image_def_for_another_cpu():
    riscv = bytearray(rp_boot.rp2350_image_def())
    struct.pack_into("<H", riscv, 6, rp_boot.image_type_flags(cpu=rp_boot.IMAGE_TYPE_CPU_RISCV))
    data = uf2.uf2_from_segments([(FLASH, bytes(8) + bytes(riscv))], "rp2350-arm-s")
    _refuses(data, "rp2350-arm-s", "IMAGE_TYPE flags 0x1121, not an RP2350 executable for rp2350-arm-s",
             size=FLASH_4M)
    assert uf2.check_uf2(uf2.uf2_from_segments([(FLASH, bytes(8) + bytes(riscv))], "rp2350-riscv"),
                         "rp2350-riscv", FLASH, FLASH_4M)["image_def"]["cpu"] == 1


def test_find_image_def_skips_unrelated_items():
    # A block with an extra (ignored, 2-byte-size) item before IMAGE_TYPE: LAST then covers both items.
    ignored = struct.pack("<BHB", 0xFE, 2, 0) + b"\xaa" * 4
    image_type = rp_boot.rp2350_image_def()[4:8]
    block = (struct.pack("<I", 0xFFFFDED3) + ignored + image_type + struct.pack("<BHB", 0xFF, 3, 0)
             + struct.pack("<iI", 0, 0xAB123579))
    found = uf2.find_image_def(b"\0" * 12 + block)
    assert found["offset"] == 12 and found["image_type"] == 0x1021 and found["items_words"] == 3


# --- ELF -> UF2, end to end --------------------------------------------------------------------------------------

MAIN_C = """
void reset(void);
int counter = 0x5eed;   /* .data: runs from RAM, loaded from flash */
int total;              /* .bss: no file bytes */
__attribute__((section(".vectors"), used)) const unsigned int vectors[2] = {
    0x20040000u, (unsigned int)&reset,
};
void reset(void) { for (;;) { total += counter; } }
"""

LINK_RP2040 = """
MEMORY { FLASH (rx) : ORIGIN = 0x10000000, LENGTH = 2M
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 256K }
ENTRY(reset)
SECTIONS {
  .boot2 : { KEEP(*(.boot2)) } > FLASH
  ASSERT(SIZEOF(.boot2) == 256, "boot2 must be exactly 256 bytes")
  .vectors : { KEEP(*(.vectors)) } > FLASH
  ASSERT(ADDR(.vectors) == 0x10000100, "vector table must follow boot2")
  .text : { *(.text*) *(.rodata*) } > FLASH
  .data : { *(.data*) } > RAM AT> FLASH
  __data_lma = LOADADDR(.data);
  .bss : { *(.bss*) *(COMMON) } > RAM
}
"""

LINK_RP2350 = """
MEMORY { FLASH (rx) : ORIGIN = 0x10000000, LENGTH = 4M
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 512K }
ENTRY(reset)
SECTIONS {
  .vectors : { KEEP(*(.vectors)) } > FLASH
  .image_def : { KEEP(*(.image_def)) } > FLASH
  ASSERT(ADDR(.image_def) + SIZEOF(.image_def) <= 0x10001000, "IMAGE_DEF must be in the first 4 KB")
  .text : { *(.text*) *(.rodata*) } > FLASH
  .data : { *(.data*) } > RAM AT> FLASH
  __data_lma = LOADADDR(.data);
  .bss : { *(.bss*) *(COMMON) } > RAM
}
"""


def _link(tmp_path, family, cpu, script, main=MAIN_C):
    assert shutil.which("arm-none-eabi-gcc"), "arm-none-eabi-gcc is not installed (apt-get install gcc-arm-none-eabi)"
    (tmp_path / "main.c").write_text(main)
    (tmp_path / "boot.c").write_text(rp_boot.boot_block_source(family))
    (tmp_path / "link.ld").write_text(script)
    elf = tmp_path / "fw.elf"
    cmd = ["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
           "-nostdlib", "-nostartfiles", "-T", str(tmp_path / "link.ld"), str(tmp_path / "main.c"),
           str(tmp_path / "boot.c"), "-o", str(elf)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return elf


def _symbol(elf, name):
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        return ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]["st_value"]


def test_rp2040_elf_to_uf2_end_to_end(tmp_path):
    elf = _link(tmp_path, "rp2040", "cortex-m0plus", LINK_RP2040)
    data = uf2.elf_to_uf2(elf, "rp2040", FLASH, FLASH_2M)
    summary = uf2.check_uf2(data, "rp2040", FLASH, FLASH_2M)
    assert summary["start"] == FLASH
    blocks = uf2.parse_uf2(data)
    assert blocks[0]["target_addr"] == FLASH and blocks[0]["payload"] == rp_boot.rp2040_boot2()
    memory = _memory(blocks)
    reset = _symbol(elf, "reset")
    assert struct.unpack("<II", bytes(memory[FLASH + 0x100 + i] for i in range(8))) == (0x20040000, reset)
    assert reset & 1 and FLASH + 0x108 <= reset < FLASH + summary["bytes"]
    lma = _symbol(elf, "__data_lma")  # .data's initial value travels in flash, at its load address
    assert FLASH <= lma < FLASH + FLASH_2M
    assert bytes(memory[lma + i] for i in range(4)) == struct.pack("<I", 0x5EED)
    assert all(b["target_addr"] < 0x20000000 for b in blocks)  # nothing for RAM (.bss, .data's run address)


def test_rp2350_elf_to_uf2_end_to_end(tmp_path):
    elf = _link(tmp_path, "rp2350-arm-s", "cortex-m33", LINK_RP2350)
    data = uf2.elf_to_uf2(elf, "rp2350-arm-s", FLASH, FLASH_4M)
    summary = uf2.check_uf2(data, "rp2350-arm-s", FLASH, FLASH_4M)
    assert summary["e10_block"] and summary["start"] == FLASH
    assert summary["image_def"]["address"] == _symbol(elf, "tinyc_image_def") == FLASH + 8
    blocks = uf2.parse_uf2(data)
    assert blocks[0]["e10"] and blocks[1]["target_addr"] == FLASH
    first = blocks[1]["payload"]
    assert struct.unpack("<II", first[:8]) == (0x20040000, _symbol(elf, "reset"))
    assert first[8:28] == rp_boot.rp2350_image_def()


def test_elf_with_loadable_bytes_outside_flash_is_refused(tmp_path):
    script = LINK_RP2040.replace("> RAM AT> FLASH", "> RAM")  # .data linked to load in RAM: the bootrom can't
    elf = _link(tmp_path, "rp2040", "cortex-m0plus", script)
    with pytest.raises(TinycError, match=r"loadable segment 0x20000000\.\.0x20000004 \(4 bytes\) is outside flash "
                                         r"0x10000000\.\.0x10200000: .*AT> FLASH") as info:
        uf2.elf_to_uf2(elf, "rp2040", FLASH, FLASH_2M)
    assert "\n" not in str(info.value)
    with pytest.raises(TinycError, match="outside flash"):  # flash too small for the image
        uf2.elf_to_uf2(_link(tmp_path, "rp2040", "cortex-m0plus", LINK_RP2040), "rp2040", FLASH, 0x100)


def test_elf_to_uf2_refuses_other_cpus_and_non_elf(tmp_path):
    elf = _link(tmp_path, "rp2350-arm-s", "cortex-m33", LINK_RP2350)
    with pytest.raises(TinycError, match="built for EM_ARM, but UF2 family rp2350-riscv needs EM_RISCV"):
        uf2.elf_to_uf2(elf, "rp2350-riscv", FLASH, FLASH_4M)
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"not an elf at all")
    with pytest.raises(TinycError, match="not a valid ELF"):
        uf2.elf_to_uf2(junk, "rp2040", FLASH, FLASH_2M)
    with pytest.raises(TinycError, match="cannot read"):
        uf2.elf_to_uf2(tmp_path / "missing.elf", "rp2040", FLASH, FLASH_2M)
