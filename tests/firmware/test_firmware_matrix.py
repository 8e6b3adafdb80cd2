"""`make firmware`: every firmware test model (MLP, depthwise CNN, residual CNN; float and int8) compiled for every
board and built with arm-none-eabi-gcc into every image the board file lists; the images checked structurally."""
from __future__ import annotations

import struct

import pytest
from firmware_models import FIRMWARE_MODELS

from tinyc.boards import board_names, load_board
from tinyc.compiler import compile_model, write_library
from tinyc.firmware.build import build_firmware
from tinyc.firmware.project import write_firmware


def _intel_hex_records(text: str):
    """(address, data) per data record of an Intel HEX file; checksums and the end record checked."""
    base, records, ended = 0, [], False
    for line in text.split():
        assert line.startswith(":") and not ended
        raw = bytes.fromhex(line[1:])
        assert sum(raw) & 0xFF == 0, f"bad checksum in {line}"
        n, addr, kind, data = raw[0], int.from_bytes(raw[1:3], "big"), raw[3], raw[4:-1]
        assert len(data) == n
        if kind == 0:
            records.append((base + addr, data))
        elif kind == 4:
            base = int.from_bytes(data, "big") << 16
        elif kind == 1:
            ended = True
    assert ended
    return records


def _check_vectors(image: bytes, board):
    sp, reset = struct.unpack_from("<II", image)
    assert any(r.origin < sp <= r.end for r in board.sram_regions), f"initial SP {sp:#x} not in SRAM"
    assert reset & 1, "the reset vector must have the Thumb bit"
    assert board.flash_origin <= reset - 1 < board.flash_origin + board.flash_bytes


@pytest.mark.parametrize("board_name", board_names())
@pytest.mark.parametrize("model", sorted(FIRMWARE_MODELS))
def test_firmware_builds_for_every_board(firmware_models, tmp_path, model, board_name):
    board = load_board(board_name)
    c = compile_model(firmware_models.path(model), model)
    write_library(c.library, str(tmp_path))
    write_firmware(c, board, str(tmp_path))
    r = build_firmware(tmp_path)
    assert r["fits"] and r["board"] == board_name
    assert set(r["images"]) == set(board.image_formats)
    # Flash holds at least the weights and the model's code; SRAM at least the arena.
    assert r["flash_bytes"] > c.library.weight_bytes
    assert sum(s["used_bytes"] for s in r["sram"]) >= c.library.arena_bytes
    if "uf2" in r["images"]:
        # build_firmware ran check_uf2 (blocks, family, boot2 CRC or IMAGE_DEF, addresses inside flash)
        assert r["uf2"]["family"] == board.uf2_family
        assert r["uf2"]["end"] <= board.flash_origin + board.flash_bytes
        # The vector table: after the RP2040's 256-byte boot block, at the start of flash on the RP2350.
        vectors = board.flash_origin + (256 if board.uf2_family == "rp2040" else 0)
        _check_vectors(_page(open(r["images"]["uf2"], "rb").read(), vectors), board)
    if "bin" in r["images"]:
        data = open(r["images"]["bin"], "rb").read()
        assert len(data) == r["flash_bytes"]        # one contiguous image from the flash origin
        _check_vectors(data, board)
        records = _intel_hex_records(open(r["images"]["hex"]).read())
        flat = bytearray(len(data))
        for addr, chunk in records:
            assert board.flash_origin <= addr and addr + len(chunk) <= board.flash_origin + len(data)
            flat[addr - board.flash_origin:addr - board.flash_origin + len(chunk)] = chunk
        assert bytes(flat) == data                  # .hex and .bin hold the same image


def _page(uf2_image: bytes, address: int) -> bytes:
    for off in range(0, len(uf2_image), 512):
        target, size = struct.unpack_from("<II", uf2_image, off + 12)
        if target == address:
            return uf2_image[off + 32:off + 32 + size]
    raise AssertionError(f"no UF2 block for {address:#x}")
