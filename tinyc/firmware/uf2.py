"""UF2 images (https://github.com/microsoft/uf2) for the Raspberry Pi bootroms: write from an ELF (elf2uf2.py), parse,
check.

A UF2 file is a sequence of 512-byte blocks, each carrying one 256-byte page of flash at a 256-aligned address,
tagged with a family ID that the bootrom checks before writing anything.
"""

from __future__ import annotations

import struct

from tinyc.errors import TinycError
from tinyc.firmware import elf2uf2, rp_boot
# The writer is elf2uf2.py, standard library only, which firmware projects carry a copy of; its names are ours.
from tinyc.firmware.elf2uf2 import (BLOCK_SIZE, DATA_SIZE, EXTENSION_RP2_IGNORE_BLOCK, E10_FILL, FAMILIES,
                                    FLAG_EXTENSION_TAGS, FLAG_FAMILY_ID, FLAG_NOT_MAIN_FLASH, HEADER, MAGIC_END,
                                    MAGIC_START0, MAGIC_START1, PAGE, RP2350_FAMILIES)

FAMILY_NAMES = {value: name for name, value in FAMILIES.items()}
IMAGE_DEF_WINDOW = 4096  # the RP2350 bootrom looks for the first block of the block loop in the first 4 KB


def _family_id(family: str) -> int:
    try:
        return elf2uf2.family_id(family)
    except elf2uf2.UF2Error as e:
        raise TinycError(str(e)) from None


def _family_label(family_id: int) -> str:
    name = FAMILY_NAMES.get(family_id)
    return f"0x{family_id:08x} ({name})" if name else f"0x{family_id:08x}"


# ---------------------------------------------------------------------------------------------------------------
# Writing: elf2uf2.py's functions, their one-line errors as TinycError

def uf2_from_segments(segments: list[tuple[int, bytes]], family: str, *, fill_sectors: bool = True,
                      e10_block: bool = True) -> bytes:
    """See elf2uf2.uf2_from_segments."""
    try:
        return elf2uf2.uf2_from_segments(segments, family, fill_sectors=fill_sectors, e10_block=e10_block)
    except elf2uf2.UF2Error as e:
        raise TinycError(str(e)) from None


def elf_to_uf2(elf_path, family: str, flash_origin: int, flash_size: int) -> bytes:
    """The UF2 image of an ELF's loadable bytes (see elf2uf2.elf_to_uf2); any byte outside flash is an error."""
    try:
        return elf2uf2.elf_to_uf2(elf_path, family, flash_origin, flash_size)
    except elf2uf2.UF2Error as e:
        raise TinycError(str(e)) from None


# ---------------------------------------------------------------------------------------------------------------
# Reading and checking

def _is_e10_block(block: dict) -> bool:
    """Recognizes the RP2350-E10 block by its content, as picotool does (the address may be customized)."""
    flags_ok = block["flags"] & ~FLAG_EXTENSION_TAGS == FLAG_FAMILY_ID
    tag_ok = not block["flags"] & FLAG_EXTENSION_TAGS or block["extra"][:4] == struct.pack(
        "<I", EXTENSION_RP2_IGNORE_BLOCK)
    return (flags_ok and tag_ok and block["family_id"] == FAMILIES["absolute"] and block["payload_size"] == PAGE
            and block["block_no"] == 0 and block["num_blocks"] == 2 and block["payload"] == bytes([E10_FILL]) * PAGE)


def parse_uf2(data: bytes) -> list[dict]:
    """The blocks of a UF2 file, in file order, each a dict of its header fields and bytes.

    Keys: index, magic_start0, magic_start1, flags, target_addr, payload_size, block_no, num_blocks, family_id
    (the file-size field when flag 0x2000 is clear), family (name or None), magic_end, payload (payload_size
    bytes), extra (the rest of the data area: extension tags, padding), e10 (is it the RP2350-E10 block).
    Raises TinycError on a malformed file; each run of consecutive blocks of one family must be numbered 0..n-1
    with num_blocks n (the RP2350-E10 block excepted).
    """
    if not data or len(data) % BLOCK_SIZE:
        raise TinycError(f"not a UF2 file: its size ({len(data)} bytes) is not a positive multiple of "
                         f"{BLOCK_SIZE}; regenerate it")
    blocks = []
    for index in range(len(data) // BLOCK_SIZE):
        raw = data[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE]
        magic0, magic1, flags, target, size, block_no, num_blocks, family_id = HEADER.unpack_from(raw)
        (magic_end,) = struct.unpack_from("<I", raw, BLOCK_SIZE - 4)
        if (magic0, magic1, magic_end) != (MAGIC_START0, MAGIC_START1, MAGIC_END):
            raise TinycError(f"UF2 block {index} has a bad magic number (file corrupted or not UF2): regenerate it")
        if size > DATA_SIZE:
            raise TinycError(f"UF2 block {index} claims a {size}-byte payload (at most {DATA_SIZE}): regenerate it")
        if num_blocks == 0 or block_no >= num_blocks:
            raise TinycError(f"UF2 block {index} is numbered {block_no} of {num_blocks}: regenerate the file")
        body = raw[HEADER.size:BLOCK_SIZE - 4]
        block = {
            "index": index, "magic_start0": magic0, "magic_start1": magic1, "flags": flags, "target_addr": target,
            "payload_size": size, "block_no": block_no, "num_blocks": num_blocks, "family_id": family_id,
            "family": FAMILY_NAMES.get(family_id) if flags & FLAG_FAMILY_ID else None, "magic_end": magic_end,
            "payload": bytes(body[:size]), "extra": bytes(body[size:]),
        }
        block["e10"] = _is_e10_block(block)
        blocks.append(block)
    _check_numbering(blocks)
    return blocks


def _check_numbering(blocks: list[dict]) -> None:
    run: list[dict] = []

    def close(done: list[dict]) -> None:
        if done and len(done) != done[0]["num_blocks"]:
            first = done[0]
            raise TinycError(f"UF2 blocks {first['index']}..{done[-1]['index']} (family "
                             f"{_family_label(first['family_id'])}) are {len(done)} blocks but claim "
                             f"{first['num_blocks']}: the file is truncated or mixed up; regenerate it")

    for block in blocks:
        if block["e10"]:
            continue
        new_run = (not run or block["family_id"] != run[0]["family_id"]
                   or (block["block_no"] == 0 and len(run) == run[0]["num_blocks"]))
        if new_run:
            close(run)
            run = []
        expected = len(run)
        if block["block_no"] != expected or (run and block["num_blocks"] != run[0]["num_blocks"]):
            raise TinycError(f"UF2 block {block['index']} is numbered {block['block_no']} of "
                             f"{block['num_blocks']}, expected {expected} of "
                             f"{run[0]['num_blocks'] if run else block['num_blocks']}: blocks are missing, "
                             f"duplicated or out of order; regenerate the file")
        run.append(block)
    close(run)


def _image_bytes(blocks: list[dict], start: int, size: int) -> bytearray:
    """Bytes [start, start + size) of flash as the blocks write them (0xFF = erased where no block writes)."""
    image = bytearray(b"\xff" * size)
    for block in blocks:
        lo, hi = max(block["target_addr"], start), min(block["target_addr"] + block["payload_size"], start + size)
        if lo < hi:
            image[lo - start:hi - start] = block["payload"][lo - block["target_addr"]:hi - block["target_addr"]]
    return image


def find_image_def(image: bytes) -> dict | None:
    """The first well-formed RP2350 block with an IMAGE_TYPE item in `image` (word-aligned scan), or None.

    Block layout (RP2350 datasheet 5.9): start marker, items (each: a byte whose bit 7 selects a 1- or 2-byte size
    in words that follows it, the size counting the item's header word), a LAST item (0xff) whose size is the
    total of the items before it, a relative link to the next block, end marker.
    """
    start_marker = struct.pack("<I", rp_boot.PICOBIN_BLOCK_MARKER_START)
    for offset in range(0, len(image) - 15, 4):
        if image[offset:offset + 4] != start_marker:
            continue
        block = _parse_block(image, offset)
        if block is not None and block["image_type"] is not None:
            return block
    return None


def _parse_block(image: bytes, offset: int) -> dict | None:
    pos, words, image_type = offset + 4, 0, None
    while pos + 4 <= len(image) and pos - offset < 0x280:  # PICOBIN_MAX_BLOCK_SIZE
        head = image[pos]
        if head == rp_boot.PICOBIN_ITEM_LAST:
            (size,) = struct.unpack_from("<H", image, pos + 1)
            if size != words or pos + 12 > len(image):
                return None
            link, end = struct.unpack_from("<iI", image, pos + 4)
            if end != rp_boot.PICOBIN_BLOCK_MARKER_END:
                return None
            return {"offset": offset, "items_words": words, "link": link, "image_type": image_type,
                    "size": pos + 12 - offset}
        size = struct.unpack_from("<H", image, pos + 1)[0] if head & 0x80 else image[pos + 1]
        if size == 0:
            return None
        if head == rp_boot.PICOBIN_ITEM_IMAGE_TYPE and size == 1:
            (image_type,) = struct.unpack_from("<H", image, pos + 2)
        pos += 4 * size
        words += size
    return None


def _decode_image_type(flags: int) -> dict:
    return {
        "flags": flags,
        "image_type": flags & 0xF,
        "security": (flags >> rp_boot.IMAGE_TYPE_EXE_SECURITY_LSB) & 0x3,
        "cpu": (flags >> rp_boot.IMAGE_TYPE_EXE_CPU_LSB) & 0x7,
        "chip": (flags >> rp_boot.IMAGE_TYPE_EXE_CHIP_LSB) & 0x7,
    }


def check_uf2(data: bytes, family: str, flash_origin: int, flash_size: int) -> dict:
    """Checks a UF2 image is a bootable flash image for `family`; returns a summary, raises TinycError if not.

    Every block (bar the RP2350-E10 block) must have the family's ID, a 256-byte payload at a 256-aligned
    address inside [flash_origin, flash_origin + flash_size), distinct addresses, and numbering 0..n-1 of n.
    RP2040: the first block is at flash_origin and holds a boot2 whose CRC32 checks. RP2350: the first 4 KB of
    flash hold a block with an IMAGE_TYPE item (an IMAGE_DEF) for an RP2350 executable of the family's CPU.
    """
    family_id = _family_id(family)
    blocks = parse_uf2(data)
    flash_end = flash_origin + flash_size
    e10 = [b for b in blocks if b["e10"] and family in RP2350_FAMILIES]
    image = [b for b in blocks if not (b["e10"] and family in RP2350_FAMILIES)]
    if not image:
        raise TinycError("the UF2 has no image blocks: regenerate it")
    if e10 and (len(e10) > 1 or e10[0]["index"] != 0):
        raise TinycError(f"UF2 block {e10[-1]['index']} is an RP2350-E10 block, which only works as the one first "
                         f"block of the file: regenerate the UF2")
    seen: set[int] = set()
    for i, block in enumerate(image):
        where = f"UF2 block {block['index']} (0x{block['target_addr']:08x})"
        if not block["flags"] & FLAG_FAMILY_ID or block["family_id"] != family_id:
            got = _family_label(block["family_id"]) if block["flags"] & FLAG_FAMILY_ID else "no family ID"
            raise TinycError(f"{where} has family {got}, expected {_family_label(family_id)}: "
                             f"regenerate the UF2 for {family}")
        if block["flags"] & FLAG_NOT_MAIN_FLASH:
            raise TinycError(f"{where} is flagged not-main-flash, so the bootrom would skip it: regenerate the UF2")
        if block["payload_size"] != PAGE or block["target_addr"] % PAGE:
            raise TinycError(f"{where} carries {block['payload_size']} bytes at a non-page boundary; the bootrom "
                             f"takes 256-byte payloads at 256-aligned addresses: regenerate the UF2")
        if not (flash_origin <= block["target_addr"] and block["target_addr"] + PAGE <= flash_end):
            raise TinycError(f"{where} is outside flash 0x{flash_origin:08x}..0x{flash_end:08x}: link the firmware "
                             f"for this board's flash (origin and size)")
        if block["target_addr"] in seen:
            raise TinycError(f"{where} writes a page an earlier block already wrote: regenerate the UF2")
        seen.add(block["target_addr"])
        if block["block_no"] != i or block["num_blocks"] != len(image):
            raise TinycError(f"{where} is numbered {block['block_no']} of {block['num_blocks']}, expected {i} of "
                             f"{len(image)}: the UF2 holds more than one image or is out of order; regenerate it")
    summary = {
        "family": family, "family_id": family_id, "blocks": len(image), "e10_block": bool(e10),
        "start": min(seen), "end": max(seen) + PAGE, "bytes": PAGE * len(image),
    }
    if family == "rp2040":
        summary["boot2_crc"] = _check_boot2(image[0], flash_origin)
    elif family in RP2350_FAMILIES:
        summary["image_def"] = _check_image_def(image, family, flash_origin)
    return summary


def _check_boot2(first: dict, flash_origin: int) -> int:
    if first["target_addr"] != flash_origin:
        raise TinycError(f"the RP2040 UF2 starts at 0x{first['target_addr']:08x}, not at flash 0x{flash_origin:08x} "
                         f"where the bootrom reads boot2: link the boot2 block (.boot2) at the start of flash")
    code, stored = first["payload"][:rp_boot.BOOT2_CODE_SIZE], first["payload"][rp_boot.BOOT2_CODE_SIZE:PAGE]
    crc = rp_boot.crc32_mpeg2(code)
    if struct.pack("<I", crc) != stored:
        raise TinycError(f"the RP2040 boot2 block at 0x{flash_origin:08x} fails its CRC32 (stored "
                         f"0x{int.from_bytes(stored, 'little'):08x}, computed 0x{crc:08x}), so the bootrom would not "
                         f"boot it: link tinyc's boot2 (.boot2, 256 bytes) at the start of flash")
    return crc


def _check_image_def(image: list[dict], family: str, flash_origin: int) -> dict:
    found = find_image_def(_image_bytes(image, flash_origin, IMAGE_DEF_WINDOW))
    if found is None:
        raise TinycError(f"no RP2350 IMAGE_DEF block in the first 4 KB of flash (0x{flash_origin:08x}), so the "
                         f"bootrom would not boot the image: link the .image_def block after the vector table")
    decoded = _decode_image_type(found["image_type"])
    cpu = rp_boot.IMAGE_TYPE_CPU_RISCV if family == "rp2350-riscv" else rp_boot.IMAGE_TYPE_CPU_ARM
    if (decoded["image_type"], decoded["chip"], decoded["cpu"]) != (
            rp_boot.IMAGE_TYPE_EXE, rp_boot.IMAGE_TYPE_CHIP_RP2350, cpu):
        raise TinycError(f"the IMAGE_DEF at 0x{flash_origin + found['offset']:08x} has IMAGE_TYPE flags "
                         f"0x{found['image_type']:04x}, not an RP2350 executable for {family}: "
                         f"use tinyc's IMAGE_DEF block for this family")
    return {"address": flash_origin + found["offset"], **decoded}
