"""`tinyc build OUT`: build the firmware project's board image(s) and check them against the board's limits."""
from __future__ import annotations

import json
from pathlib import Path

from ..boards import load_board
from ..errors import TinycError
from .emulate import firmware_dir, make
from .images import check_size, size_report
from .model_size import model_flash
from .project import STACK_BYTES
from .stack_usage import stack_report, with_budget


def project_info(fw: Path) -> dict:
    try:
        return json.loads((fw / "tinyc.json").read_text())
    except (OSError, ValueError):
        raise TinycError(f"'{fw}' has no readable tinyc.json; recreate the project with `tinyc compile --board`")


def build_firmware(out_dir: str | Path, opt: str | None = None) -> dict:
    """Run the project's Makefile (ELF and the board's image formats), then report and check sizes; UF2 images
    are checked structurally (blocks, family ID, boot block)."""
    fw = firmware_dir(out_dir)
    board = load_board(project_info(fw)["board"])
    make(fw, "all", [f"OPT={opt}"] if opt else [])
    elf = fw / "build" / "firmware.elf"
    report = size_report(elf, board)
    name = project_info(fw)["name"]
    report["model"] = model_flash(elf, name, fw / "build" / "model.o")
    ci = fw / "build" / "model.ci"       # absent from projects made before tinyc measured the stack
    report["stack"] = with_budget(stack_report(ci.read_text(), name), STACK_BYTES) if ci.is_file() else None
    images = {"elf": str(elf)}
    for fmt in board.image_formats:
        if fmt != "elf":
            path = fw / "build" / f"firmware.{fmt}"
            if not path.is_file():
                raise TinycError(f"the build did not produce {path}")
            images[fmt] = str(path)
    if "uf2" in images:
        from .uf2 import check_uf2
        report["uf2"] = check_uf2(Path(images["uf2"]).read_bytes(), board.uf2_family, board.flash_origin,
                                  board.flash_bytes)
    report.update(board=board.name, images=images)
    check_size(report, board)
    return report
