"""Firmware projects build where tinyc is not: with arm-none-eabi-gcc, GNU make and a stock python3 only.

Two ways users meet this: a CI job that builds the generated `firmware/` folder with nothing else installed, and
tinyc installed in a virtual environment (or by pipx) that is not activated, whose `python3` on PATH cannot import
tinyc. Both run here with PATH=/usr/bin:/bin and nothing else in the environment.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tinyc.boards import load_board
from tinyc.cli import main
from tinyc.firmware import elf2uf2, uf2

CLEAN_ENV = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}


def _compile(model: str, board: str, out: Path) -> None:
    from click.testing import CliRunner
    res = CliRunner().invoke(main, ["compile", model, "--board", board, "-o", str(out)], standalone_mode=False)
    assert res.exit_code == 0 and res.exception is None, (res.output, res.exception)


def test_clean_environment_cannot_import_tinyc(tmp_path):
    """The premise of the tests below: python3 on the clean PATH does not see tinyc (a stock Debian python3)."""
    assert shutil.which("python3", path=CLEAN_ENV["PATH"]), "no python3 in /usr/bin: install python3"
    res = subprocess.run(["python3", "-c", "import tinyc"], env=CLEAN_ENV, cwd=tmp_path, capture_output=True,
                         text=True)
    assert res.returncode != 0 and "No module named 'tinyc'" in res.stderr


@pytest.mark.parametrize("board, model", [("pico", "residual_int8"), ("pico2", "residual_int8"),
                                          ("nucleo-f412zg", "mlp_float")])
def test_firmware_folder_builds_every_image_without_tinyc(firmware_models, tmp_path, board, model):
    out = tmp_path / "out"
    _compile(firmware_models.path(model), board, out)
    fw = out / "firmware"
    res = subprocess.run(["make", "-s", "-C", str(fw)], env=CLEAN_ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    b = load_board(board)
    build = fw / "build"
    assert (build / "firmware.elf").is_file()
    for fmt in b.image_formats:
        assert (build / f"firmware.{fmt}").stat().st_size > 0, fmt
    if "uf2" in b.image_formats:
        data = (build / "firmware.uf2").read_bytes()
        summary = uf2.check_uf2(data, b.uf2_family, b.flash_origin, b.flash_bytes)
        assert summary["blocks"] > 0
        # the same bytes tinyc's own writer makes from the ELF
        assert data == uf2.elf_to_uf2(build / "firmware.elf", b.uf2_family, b.flash_origin, b.flash_bytes)


def test_tinyc_from_an_unactivated_environment_builds_the_uf2(firmware_models, tmp_path):
    """`<venv>/bin/tinyc compile --build` with the venv not on PATH: make's python3 is the system's."""
    tinyc = Path(sys.executable).parent / "tinyc"
    assert tinyc.is_file(), f"no tinyc script beside {sys.executable}: install tinyc (pip install -e .)"
    out = tmp_path / "out"
    res = subprocess.run([str(tinyc), "compile", firmware_models.path("residual_int8"), "--board", "pico", "-o",
                          str(out), "--build"], env=CLEAN_ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
    assert "family rp2040" in res.stdout and (out / "firmware" / "build" / "firmware.uf2").is_file()


def test_elf_reader_agrees_with_pyelftools(firmware_models, tmp_path):
    """The standard-library ELF reader of elf2uf2.py against pyelftools, on a real firmware ELF."""
    out = tmp_path / "out"
    _compile(firmware_models.path("residual_int8"), "pico2", out)
    subprocess.run(["make", "-s", "-C", str(out / "firmware"), "build/firmware.elf"], check=True,
                   capture_output=True)
    elf = out / "firmware" / "build" / "firmware.elf"
    machine, segments = elf2uf2.elf_load_segments(elf.read_bytes())
    with open(elf, "rb") as f:
        ref = [(s["p_paddr"], s.data()[:s["p_filesz"]]) for s in ELFFile(f).iter_segments()
               if s["p_type"] == "PT_LOAD" and s["p_filesz"]]
    assert machine == "EM_ARM" and segments == ref and ref


def test_elf2uf2_command_line_errors_are_one_line(tmp_path):
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"\x7fELF" + bytes(10))
    script = Path(elf2uf2.__file__)
    res = subprocess.run(["python3", str(script), str(junk), str(tmp_path / "x.uf2"), "--family", "rp2040",
                          "--flash", "0x10000000:2097152"], env=CLEAN_ENV, capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a valid ELF" in res.stderr
    truncated = tmp_path / "t.elf"
    header = bytearray(52)
    header[:6] = b"\x7fELF\x01\x01"
    header[28:32] = (40).to_bytes(4, "little")          # e_phoff
    header[42:44] = (32).to_bytes(2, "little")          # e_phentsize
    header[44:46] = (3).to_bytes(2, "little")           # e_phnum: past the end of the file
    truncated.write_bytes(bytes(header))
    with pytest.raises(elf2uf2.UF2Error, match="program headers outside the file"):
        elf2uf2.elf_flash_segments(truncated, "rp2040", 0x10000000, 2 << 20)
