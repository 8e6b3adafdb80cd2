#!/usr/bin/env python3
"""ELF -> UF2 (https://github.com/microsoft/uf2) for the Raspberry Pi bootroms. Standard library only.

tinyc copies this file, unchanged, next to the Makefile of every Pico / Pico 2 firmware project, so the project
builds its UF2 with arm-none-eabi-gcc, make and a stock python3 alone (no tinyc, no pip packages: a CI job or a
colleague's machine). tinyc itself writes UF2s with the same code (tinyc/firmware/uf2.py imports it), and reads
and checks them there.

    python3 elf2uf2.py build/firmware.elf build/firmware.uf2 --family rp2040 --flash 0x10000000:2097152

A UF2 file is a sequence of 512-byte blocks, each carrying one 256-byte page of flash at a 256-aligned address,
tagged with a family ID that the bootrom checks before writing anything. The ELF is read here with `struct`
(pyelftools is not in the standard library): a 32-bit little-endian ELF's header and program headers, whose
PT_LOAD segments at their physical (load) addresses are what the bootrom must write.
"""

from __future__ import annotations

import argparse
import struct
import sys

# Family IDs, as registered in microsoft/uf2 utils/uf2families.json and used by the RP2040/RP2350 bootroms.
FAMILIES = {
    "rp2040": 0xE48BFF56,
    "absolute": 0xE48BFF57,  # RP2350: write at the absolute address, whatever the partition table says
    "data": 0xE48BFF58,
    "rp2350-arm-s": 0xE48BFF59,
    "rp2350-riscv": 0xE48BFF5A,
    "rp2350-arm-ns": 0xE48BFF5B,
}
RP2350_FAMILIES = ("rp2350-arm-s", "rp2350-riscv", "rp2350-arm-ns")

MAGIC_START0, MAGIC_START1, MAGIC_END = 0x0A324655, 0x9E5D5157, 0x0AB16F30
FLAG_NOT_MAIN_FLASH = 0x00000001
FLAG_FAMILY_ID = 0x00002000
FLAG_EXTENSION_TAGS = 0x00008000
BLOCK_SIZE = 512
HEADER = struct.Struct("<8I")  # magic0, magic1, flags, target address, payload size, block no, blocks, family
DATA_SIZE = 476  # bytes between the 32-byte header and the 4-byte end magic
PAGE = 256  # payload per block: the flash page size, as the bootroms require
SECTOR = 4096  # flash erase sector

XIP_FLASH_START, XIP_FLASH_END = 0x10000000, 0x12000000  # flash window (RP2040 maps 16 MB of it, RP2350 32 MB)

# RP2350-E10 workaround block (see e10_workaround_block).
E10_ADDRESS = 0x10FFFF00
E10_FILL = 0xEF
EXTENSION_RP2_IGNORE_BLOCK = 0x9957E304  # tag: size 4, type 0x9957e3 (Pico SDK boot/uf2.h)

# ELF (System V gABI, "ELF header" and "Program header"): the fields this writer needs.
ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFDATA2LSB = 1, 1
ELF_MACHINES = {40: "EM_ARM", 243: "EM_RISCV"}
PT_LOAD = 1
ELF32_HEADER = struct.Struct("<16sHHIIIIIHHHHHH")  # e_ident .. e_shstrndx (52 bytes)
ELF32_PHDR = struct.Struct("<8I")  # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align


class UF2Error(Exception):
    """A one-line reason the image cannot be written, with what to do about it."""


def family_id(family: str) -> int:
    if family not in FAMILIES:
        raise UF2Error(f"unknown UF2 family {family!r}: use one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def in_flash_window(address: int) -> bool:
    return XIP_FLASH_START <= address < XIP_FLASH_END


# ---------------------------------------------------------------------------------------------------------------
# Reading the ELF

def elf_load_segments(data: bytes, where: str = "the ELF") -> tuple[str, list[tuple[int, bytes]]]:
    """(machine name, [(physical address, file bytes)] of every PT_LOAD segment with file bytes) of a 32-bit
    little-endian ELF image; UF2Error when `data` is not one."""
    if len(data) < ELF32_HEADER.size or data[:4] != ELF_MAGIC:
        raise UF2Error(f"{where} is not a valid ELF file (no ELF magic): rebuild the firmware")
    ident = data[:16]
    if ident[4] != ELFCLASS32 or ident[5] != ELFDATA2LSB:
        raise UF2Error(f"{where} is not a 32-bit little-endian ELF: build the firmware for the board's CPU")
    (_, _, machine, _, _, phoff, _, _, _, phentsize, phnum, _, _, _) = ELF32_HEADER.unpack_from(data)
    if phnum and (phentsize < ELF32_PHDR.size or phoff + phnum * phentsize > len(data)):
        raise UF2Error(f"{where} is not a valid ELF file (program headers outside the file): rebuild the firmware")
    segments = []
    for i in range(phnum):
        p_type, offset, _, paddr, filesz, _, _, _ = ELF32_PHDR.unpack_from(data, phoff + i * phentsize)
        if p_type != PT_LOAD or filesz == 0:
            continue
        if offset + filesz > len(data):
            raise UF2Error(f"{where} is not a valid ELF file (segment {i} runs past the end of the file): "
                           "rebuild the firmware")
        segments.append((paddr, data[offset:offset + filesz]))
    return ELF_MACHINES.get(machine, f"machine {machine}"), segments


def elf_flash_segments(elf_path, family: str, flash_origin: int, flash_size: int) -> list[tuple[int, bytes]]:
    """The ELF's loadable bytes, each checked to lie in [flash_origin, flash_origin + flash_size): the bootrom only
    writes flash, so initialized RAM data must be linked AT> flash."""
    family_id(family)
    try:
        with open(elf_path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UF2Error(f"cannot read {elf_path}: {exc.strerror or exc}") from None
    machine, segments = elf_load_segments(data, str(elf_path))
    expected = "EM_RISCV" if family == "rp2350-riscv" else "EM_ARM"
    if family in ("rp2040", *RP2350_FAMILIES) and machine != expected:
        raise UF2Error(f"{elf_path} is built for {machine}, but UF2 family {family} needs {expected}: "
                       "build the firmware with the board's toolchain")
    for address, chunk in segments:
        if address < flash_origin or address + len(chunk) > flash_origin + flash_size:
            raise UF2Error(
                f"{elf_path}: loadable segment 0x{address:08x}..0x{address + len(chunk):08x} ({len(chunk)} bytes) "
                f"is outside flash 0x{flash_origin:08x}..0x{flash_origin + flash_size:08x}: place it in flash in the "
                "linker script (initialized RAM data needs AT> FLASH) or make the image smaller")
    if not segments:
        raise UF2Error(f"{elf_path} has no loadable bytes: check the linker script puts code in flash")
    return segments


# ---------------------------------------------------------------------------------------------------------------
# Writing the UF2

def pages_of(segments) -> dict[int, bytearray]:
    """Splits (address, data) segments into 256-byte pages; bytes of a page no segment covers are 0."""
    pages: dict[int, bytearray] = {}
    ordered = sorted((address, bytes(data)) for address, data in segments if len(data))
    for (a0, d0), (a1, d1) in zip(ordered, ordered[1:]):
        if a1 < a0 + len(d0):
            raise UF2Error(f"UF2 segments overlap: 0x{a0:08x}..0x{a0 + len(d0):08x} and "
                           f"0x{a1:08x}..0x{a1 + len(d1):08x}; fix the linker script so sections do not overlap")
    for address, data in ordered:
        if address < 0 or address + len(data) > 1 << 32:
            raise UF2Error(f"UF2 segment at 0x{address:x} ({len(data)} bytes) is outside the 32-bit address space")
        offset = 0
        while offset < len(data):
            base = (address + offset) & ~(PAGE - 1)
            start = address + offset - base
            n = min(PAGE - start, len(data) - offset)
            page = pages.setdefault(base, bytearray(PAGE))
            page[start:start + n] = data[offset:offset + n]
            offset += n
    return pages


def complete_sectors(pages: dict[int, bytearray]) -> None:
    """Adds zero pages so every 4 KB flash sector the image touches is complete up to the image's last page.

    RP2040-E14 (RP2040 datasheet errata): a sector only partly present at the start or in the middle of a UF2 may
    be written incorrectly, because the bootrom picks the sector to erase from the block number, one erase per
    group of 16 blocks (pico-bootrom-rp2040 issue 19). Complete sectors keep every group of 16 blocks inside one
    sector; picotool pads flash images the same way, for every family.
    """
    flash = [address for address in pages if in_flash_window(address)]
    if not flash:
        return
    last = max(flash)
    for sector in {address // SECTOR * SECTOR for address in flash}:
        for address in range(sector, min(sector + SECTOR, last), PAGE):
            pages.setdefault(address, bytearray(PAGE))


def block(address: int, payload: bytes, block_no: int, num_blocks: int, family: int, *,
          flags: int = FLAG_FAMILY_ID, extra: bytes = b"") -> bytes:
    header = HEADER.pack(MAGIC_START0, MAGIC_START1, flags, address, len(payload), block_no, num_blocks, family)
    return header + (payload + extra).ljust(DATA_SIZE, b"\0") + struct.pack("<I", MAGIC_END)


def e10_workaround_block() -> bytes:
    """The extra first block that works around RP2350-E10, byte for byte as picotool writes it (--abs-block).

    RP2350-E10 (RP2350 datasheet, errata, bootrom): "UF2 drag & drop doesn't work with partition tables". Its
    workaround is this one "absolute"-family block at the start of a flash UF2, which the erratum says "is handled
    for you automatically by picotool in the SDK, which adds this block when generating UF2s if the --abs-block
    flag is specified" (the Pico SDK passes the flag when RP2350 A2 silicon is supported, its default). Facts
    taken from picotool's elf2uf2 and README (we write our own code):
      - target 0x10FFFF00, picotool's default: the last page of a 16 MB flash, so that on most chips it lands
        nowhere (Raspberry Pi on their forum: "ideally it wouldn't actually be written to flash");
      - payload 256 x 0xEF; block 0 of 2 although the file holds one such block (the erratum explains the "wrong"
        num_blocks); the image's own blocks keep their own numbering 0..n-1 of n;
      - flags family-ID-present | extension-tags-present, with the RP2_IGNORE_BLOCK tag (0x9957E304) right after
        the payload, so bootroms that know the tag never write the page;
      - only for images that start in flash (RAM images get no such block).
    """
    extra = struct.pack("<I", EXTENSION_RP2_IGNORE_BLOCK)  # then a zero word: the end of the tag list
    return block(E10_ADDRESS, bytes([E10_FILL]) * PAGE, 0, 2, FAMILIES["absolute"],
                 flags=FLAG_FAMILY_ID | FLAG_EXTENSION_TAGS, extra=extra)


def uf2_from_segments(segments, family: str, *, fill_sectors: bool = True, e10_block: bool = True) -> bytes:
    """A UF2 image of `segments` ((address, data) pairs) for `family`, one block per 256-byte page, in order.

    Pages partially covered are padded with 0; overlapping segments are an error. With `fill_sectors`, flash
    sectors the image touches are completed with zero pages (RP2040-E14, see complete_sectors). For the RP2350
    families, an image starting in flash gets the RP2350-E10 block first (see e10_workaround_block) unless
    `e10_block` is False; like picotool, RAM images do not.
    """
    fid = family_id(family)
    pages = pages_of(segments)
    if not pages:
        raise UF2Error("nothing to put in the UF2: the image has no bytes to load")
    if fill_sectors:
        complete_sectors(pages)
    addresses = sorted(pages)
    out = []
    if e10_block and family in RP2350_FAMILIES and in_flash_window(addresses[0]):
        out.append(e10_workaround_block())
    out += [block(address, bytes(pages[address]), i, len(addresses), fid) for i, address in enumerate(addresses)]
    return b"".join(out)


def elf_to_uf2(elf_path, family: str, flash_origin: int, flash_size: int) -> bytes:
    """The UF2 image of an ELF's loadable bytes (PT_LOAD segments at their physical = load addresses)."""
    return uf2_from_segments(elf_flash_segments(elf_path, family, flash_origin, flash_size), family)


# ---------------------------------------------------------------------------------------------------------------
# Command line (what the firmware Makefile runs)

def _flash_range(text: str) -> tuple[int, int]:
    try:
        origin, size = (int(part, 0) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not ORIGIN:SIZE (e.g. 0x10000000:2097152)") from None
    if origin < 0 or size <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': origin must be >= 0 and size > 0")
    return origin, size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="elf2uf2.py", description="Write the UF2 image of a firmware ELF.")
    ap.add_argument("elf")
    ap.add_argument("out")
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--flash", required=True, type=_flash_range, metavar="ORIGIN:SIZE",
                    help="the board's flash: the only addresses the image may load to")
    a = ap.parse_args(argv)
    try:
        data = elf_to_uf2(a.elf, a.family, *a.flash)
        with open(a.out, "wb") as f:
            f.write(data)
    except UF2Error as e:
        print(f"elf2uf2: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"elf2uf2: error: cannot write {a.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
