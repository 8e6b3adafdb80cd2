"""Firmware images and sizes: what `tinyc build` reports, read from the ELF with pyelftools.

Sizes follow binutils' `size` (Berkeley format): text = allocated read-only sections with contents (code,
vectors, boot block, constants incl. weights), data = initialised writable sections (in SRAM, their initial
values in flash), bss = zero-initialised and NOLOAD sections (incl. the arena and the stack).
"""
from __future__ import annotations

from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from ..boards import Board
from ..errors import TinycError


def elf_sections(elf_path) -> list[dict]:
    """Allocated sections: name, address, size, kind (text/data/bss)."""
    out = []
    try:
        with open(elf_path, "rb") as fh:
            for s in ELFFile(fh).iter_sections():
                flags = s["sh_flags"]
                if not flags & SH_FLAGS.SHF_ALLOC or s["sh_size"] == 0:
                    continue
                kind = "bss" if s["sh_type"] == "SHT_NOBITS" else "data" if flags & SH_FLAGS.SHF_WRITE else "text"
                out.append(dict(name=s.name, address=s["sh_addr"], size=s["sh_size"], kind=kind))
    except Exception as e:   # OSError, or pyelftools' own ELFError on a corrupt file
        raise TinycError(f"cannot read '{elf_path}' as an ELF file ({type(e).__name__}: {e})")
    return out


def size_report(elf_path, board: Board) -> dict:
    """text/data/bss and flash/SRAM use against the board's limits."""
    sections = elf_sections(elf_path)
    total = {k: sum(s["size"] for s in sections if s["kind"] == k) for k in ("text", "data", "bss")}
    flash = total["text"] + total["data"]
    regions = []
    for r in board.sram_regions:
        used = sum(s["size"] for s in sections if s["kind"] != "text" and r.origin <= s["address"] < r.end)
        if used:
            regions.append(dict(region=r.name, used_bytes=used, size_bytes=r.size,
                                used_percent=round(100 * used / r.size, 1), fits=used <= r.size))
    return dict(elf=str(elf_path), **{f"{k}_bytes": v for k, v in total.items()},
                flash_bytes=flash, flash_size_bytes=board.flash_bytes,
                flash_percent=round(100 * flash / board.flash_bytes, 1), sram=regions,
                fits=flash <= board.flash_bytes and all(r["fits"] for r in regions))


def check_size(report: dict, board: Board) -> None:
    if report["flash_bytes"] > board.flash_bytes:
        raise TinycError(f"firmware does not fit {board.name}: {report['flash_bytes']:,} B of flash needed, "
                         f"{board.flash_bytes:,} B available; quantize the model (--quantize int8) or build with "
                         "--opt -Os")
    for r in report["sram"]:
        if not r["fits"]:
            raise TinycError(f"firmware does not fit {board.name}: {r['used_bytes']:,} B in {r['region']}, which "
                             f"has {r['size_bytes']:,} B; use a smaller model or a board with more SRAM")
    s = report.get("stack")
    if s is not None and not s["fits"]:
        depth = "unbounded" if s["bytes"] is None else f"{s['bytes']:,} B"
        raise TinycError(f"the model's stack depth ({depth}, from {s['entry']}) exceeds the {s['budget_bytes']:,} B "
                         f"the firmware's stack leaves it on {board.name}; report this model")


def format_size_report(r: dict) -> list[str]:
    lines = [f"{Path(r['elf']).name}: text {r['text_bytes']:,}  data {r['data_bytes']:,}  bss {r['bss_bytes']:,}",
             f"  flash {r['flash_bytes']:,} of {r['flash_size_bytes']:,} B ({r['flash_percent']}%)"]
    for s in r["sram"]:
        lines.append(f"  {s['region']}: {s['used_bytes']:,} of {s['size_bytes']:,} B ({s['used_percent']}%)")
    return lines
