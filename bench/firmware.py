"""Firmware figures per core: flash (text + data), SRAM, and emulated instructions per inference / per MAC for the
firmware test models (MLP, depthwise CNN, residual CNN; float and int8). Instruction counts are QEMU's
(-icount shift=0), not cycles. Usage: python bench/firmware.py [--boards pico,pico2] [--models a,b]"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "firmware"))

BOARDS = ["pico", "nucleo-f412zg", "stm32f746g-disco", "pico2"]   # one per core: M0+, M4, M7, M33


def model_paths(directory: Path, names) -> dict:
    import int8_zoo
    import model_zoo
    from firmware_models import FIRMWARE_MODELS
    out = {}
    for name in names:
        kind, builder = FIRMWARE_MODELS[name]
        if kind == "float":
            out[name] = model_zoo.export(builder, directory)["keras"]
        else:
            out[name] = int8_zoo.to_int8_tflite(int8_zoo.build(builder), directory / f"{name}.tflite")
    return out


def main():
    from firmware_models import FIRMWARE_MODELS

    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.build import build_firmware
    from tinyc.firmware.run import run_emulated
    ap = argparse.ArgumentParser()
    ap.add_argument("--boards", default=",".join(BOARDS))
    ap.add_argument("--models", default=",".join(FIRMWARE_MODELS))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = model_paths(Path(tmp), a.models.split(","))
        for name, path in paths.items():
            c = compile_model(path, name)
            for board_name in a.boards.split(","):
                board = load_board(board_name)
                out = Path(tmp) / f"{name}-{board_name}"
                r = run_emulated(c, board, path, str(out), profile=False)
                size = build_firmware(out)
                rows.append((name, board_name, board.core, c.library.macs, size["flash_bytes"],
                             sum(s["used_bytes"] for s in size["sram"]), r["instructions"],
                             r["instructions_per_mac"], r["outputs_match"]))
    print("| model | board (core) | MACs | flash B | SRAM B | instructions | per MAC | outputs match |")
    print("|---|---|---|---|---|---|---|---|")
    for n, b, core, macs, flash, sram, ins, per, ok in rows:
        print(f"| {n} | {b} ({core}) | {macs:,} | {flash:,} | {sram:,} | {ins:,} | {per} | "
              f"{'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
