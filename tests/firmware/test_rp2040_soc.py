"""The Pico's board image (the UF2 that ships) on rp2040js, an emulated RP2040 SoC (`tinyc run --emulate --soc`):
outputs equal the host build's byte for byte, cycles per inference are consistent with QEMU's instruction count
and with the firmware's own SysTick count, the clocks the firmware brings up are the board file's, and broken
images, hangs and a missing Node.js or rp2040js are one line each."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from elftools.elf.elffile import ELFFile

from tinyc.boards import load_board
from tinyc.cli import main
from tinyc.compiler import compile_model
from tinyc.errors import TinycError
from tinyc.firmware import soc
from tinyc.firmware.emulate import emulate
from tinyc.firmware.run import format_soc_run, run_soc
from tinyc.verify import run_generated

PICO = load_board("pico")
VECTORS = 0x10000100


@pytest.fixture(scope="module")
def int8_run(firmware_models, tmp_path_factory):
    """The small int8 depthwise CNN's pico board image on rp2040js, once for the module (its project is kept).
    No skip without Node.js or rp2040js: the tests fail with the line saying how to install them."""
    path = firmware_models.path("depthwise_int8")
    compiled = compile_model(path, "depthwise_int8")
    out = tmp_path_factory.mktemp("soc_int8")
    return compiled, path, out, run_soc(compiled, PICO, path, str(out))


def test_int8_outputs_equal_the_host_build_byte_for_byte(int8_run):
    compiled, path, out, r = int8_run
    assert r["outputs_match"] and r["samples"] == 1 and r["image_format"] == "uf2"
    assert r["image"].endswith("firmware.uf2")
    # independently of the run's own check: the host build on the same baked-in sample
    from tinyc.firmware.project import sample_inputs
    host = run_generated(compiled, sample_inputs(compiled, None, 0))
    for k, o in enumerate(r["outputs"]):
        assert o["dtype"] == "int8" and o["max_abs_diff_host"] == 0 and o["max_abs_err_reference"] == 0
        emulated = np.array(o["data"], np.int8)
        assert emulated.shape == host[k].shape and emulated.tobytes() == host[k].tobytes()


def test_cycles_are_consistent_with_qemu_and_the_firmwares_systick(int8_run):
    compiled, path, out, r = int8_run
    instructions = emulate(compiled, PICO, out, profile=False)["instructions"]
    # Every M0+ instruction takes at least a cycle; loads, stores and taken branches take two, BL three.
    assert instructions <= r["cycles"] < 3 * instructions, (r["cycles"], instructions)
    assert r["macs"] == compiled.library.macs and r["cycles_per_mac"] == round(r["cycles"] / r["macs"], 3)
    assert 0 < r["mark_cycles"] < 20
    # SysTick runs from clk_sys: the firmware's count brackets ours by its counter reads and the marks only.
    assert r["cycles"] <= r["firmware_cycles"] <= r["cycles"] + 200, (r["cycles"], r["firmware_cycles"])
    assert r["ms"] == round(1000 * r["cycles"] / PICO.console.cpu_clock_hz, 3)
    assert r["emulator_cycles_per_s"] > 1e6 and r["emulated_cycles"] > r["cycles"]


def test_emulated_clocks_are_the_board_files(int8_run):
    """rp2040js computes clk_sys and clk_peri from the XOSC, PLL and CLOCKS registers the firmware writes; they
    must come out as the board file's [console] says. Its defaults before any write are not the answer: the
    history shows the firmware's own changes."""
    r = int8_run[3]
    assert (r["clk_sys"], r["clk_peri"]) == (PICO.console.cpu_clock_hz, PICO.console.uart_clock_hz)
    assert r["clocks_match"] is True
    changes = r["clock_changes"]
    assert len(changes) >= 2 and all(c["cycles"] > 0 for c in changes[1:])
    assert (changes[-1]["clk_sys"], changes[-1]["clk_peri"]) == (r["clk_sys"], r["clk_peri"])
    assert not r["warnings"], r["warnings"]      # every register the firmware touches is modelled


def test_float_outputs_come_from_the_exact_bytes_line(firmware_models, tmp_path):
    path = firmware_models.path("mlp_float")
    r = run_soc(compile_model(path, "mlp_float"), PICO, path, str(tmp_path))
    assert r["outputs_match"] and all(o["dtype"] == "float32" for o in r["outputs"])
    assert r["cycles"] > r["macs"]          # soft float
    text = "\n".join(format_soc_run(r))
    assert "cycles per inference" in text and "lower bounds" in text and "outputs match: yes" in text


def _patched(elf_path, dest, patches: dict):
    """A copy of the board ELF with bytes replaced at flash addresses (through the PT_LOAD segments)."""
    data = bytearray(elf_path.read_bytes())
    with open(elf_path, "rb") as fh:
        segs = [(s["p_paddr"], s["p_offset"], s["p_filesz"]) for s in ELFFile(fh).iter_segments()
                if s["p_type"] == "PT_LOAD" and s["p_filesz"]]
    for addr, new in patches.items():
        paddr, off, size = next(s for s in segs if s[0] <= addr and addr + len(new) <= s[0] + s[2])
        data[off + addr - paddr: off + addr - paddr + len(new)] = new
    dest.write_bytes(bytes(data))
    return dest


def _reset_handler(elf_path) -> int:
    with open(elf_path, "rb") as fh:
        for seg in ELFFile(fh).iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_paddr"] <= VECTORS + 4 < seg["p_paddr"] + seg["p_filesz"]:
                raw = seg.data()[VECTORS + 4 - seg["p_paddr"]:][:4]
                return struct.unpack("<I", raw)[0] & ~1
    raise AssertionError("no vector table")


def _one_line_error(fn) -> str:
    with pytest.raises(TinycError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg and len(msg) < 600, msg
    return msg


def test_reset_vector_to_an_undefined_instruction_is_one_line_with_the_pc(int8_run, tmp_path):
    elf = int8_run[2] / "firmware" / "build" / "firmware.elf"
    # UDF #0 over the start of boot2 (never run), the reset vector pointing there
    bad = _patched(elf, tmp_path / "udf.elf", {0x10000000: struct.pack("<H", 0xDE00),
                                               VECTORS + 4: struct.pack("<I", 0x10000001)})
    msg = _one_line_error(lambda: soc.run_board_image(bad, PICO))
    assert "faulted" in msg and "invalid instruction" in msg and "UDF" in msg and "PC 0x10000000" in msg, msg


def test_reset_vector_to_a_bad_address_is_one_line_with_the_pc(int8_run, tmp_path):
    elf = int8_run[2] / "firmware" / "build" / "firmware.elf"
    bad = _patched(elf, tmp_path / "bad.elf", {VECTORS + 4: struct.pack("<I", 0x30000001)})
    msg = _one_line_error(lambda: soc.run_board_image(bad, PICO))
    assert "bad memory access" in msg and "PC 0x30000000" in msg, msg


def test_a_hanging_image_is_one_line_with_the_pc(int8_run, tmp_path):
    elf = int8_run[2] / "firmware" / "build" / "firmware.elf"
    reset = _reset_handler(elf)
    hang = _patched(elf, tmp_path / "hang.elf", {reset: struct.pack("<H", 0xE7FE)})    # b . at the reset handler
    msg = _one_line_error(lambda: soc.run_board_image(hang, PICO, max_cycles=2_000_000))
    assert "hung" in msg and f"PC 0x{reset:08x}" in msg and "budget of 2,000,000 cycles" in msg, msg


def _raw_image(code, sp=0x20001000, reset=0x10000141) -> bytes:
    """A raw flash image: 256 bytes where boot2 goes, the vector table, Thumb code at 0x10000140."""
    return bytes(0x100) + struct.pack("<2I", sp, reset) + bytes(56) + b"".join(struct.pack("<H", h) for h in code)


@pytest.mark.parametrize("code,sp,reset,kind,pc,detail", [
    ([0xBE01], 0x20001000, 0x10000141, "invalid instruction", 0x10000140, "BKPT"),
    ([0x2001, 0x0740, 0x3001, 0x6801], 0x20001000, 0x10000141, "unaligned access", 0x10000146, "0x20000001"),
    ([0x2003, 0x0700, 0x6801], 0x20001000, 0x10000141, "bad memory access", 0x10000144, "0x30000000"),
    ([0x2000, 0x4700], 0x20001000, 0x10000141, "invalid state", 0x10000142, "Thumb bit"),
    ([0xB500], 0x30000000, 0x10000141, "lockup", 0x10000140, "SP 0x2ffffffc leaves no room"),
    ([0xDF00, 0xE7FE], 0x20001000, 0x10000141, "unexpected exception", 0x10000142, "SVCall"),
    ([0xE7FE], 0x20001000, 0x10000140, "invalid state", 0x10000140, "Thumb bit"),
], ids=["bkpt", "unaligned", "unmapped", "bx-even", "lockup", "svc", "reset-even"])
def test_faults_a_cortex_m0plus_takes_are_reported(tmp_path, code, sp, reset, kind, pc, detail):
    """ldr from 0x20000001, ldr from 0x30000000, bx to 0, push with SP outside SRAM, svc: rp2040js itself logs or
    ignores these; the runner stops where a real M0+ would fault."""
    image = tmp_path / "t.bin"
    image.write_bytes(_raw_image(code, sp, reset))
    msg = _one_line_error(lambda: soc.run_image(image, max_cycles=100_000))
    assert f"faulted under rp2040js: {kind} at PC 0x{pc:08x}" in msg and detail in msg, msg


def test_wfi_with_nothing_to_wake_the_core_is_a_hang(tmp_path):
    image = tmp_path / "wfi.bin"
    image.write_bytes(_raw_image([0xBF30, 0xE7FD]))
    msg = _one_line_error(lambda: soc.run_image(image))
    assert "hung" in msg and "WFI" in msg and "PC 0x10000140" in msg, msg


def test_the_runner_prints_one_json_line_for_a_broken_file(tmp_path):
    bad = tmp_path / "x.uf2"
    bad.write_bytes(struct.pack("<2I", 0x0A324655, 0x9E5D5157) + bytes(504))
    res = subprocess.run(["node", str(soc.RUNNER), str(bad)], capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr == "" and len(res.stdout.splitlines()) == 1
    r = json.loads(res.stdout)
    assert r["ok"] is False and r["kind"] == "image" and "bad magic" in r["message"]
    msg = _one_line_error(lambda: soc.run_image(bad))
    assert msg.startswith("rp2040js cannot load the board image: x.uf2")


def _cli_error(args, env) -> str:
    res = subprocess.run([sys.executable, "-m", "tinyc.cli", *args], capture_output=True, text=True, env=env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and res.stdout == "", (res.stdout, res.stderr)
    return lines[0]


def test_missing_node_says_how_to_install(firmware_models, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))      # no node on PATH
    line = _cli_error(["run", firmware_models.path("mlp_int8"), "--board", "pico", "--emulate", "--soc"], env)
    assert line.startswith("error: node not found") and "make setup" in line and "npm ci --prefix" in line, line


def test_missing_rp2040js_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(soc.ENV_DIR, str(tmp_path))
    msg = _one_line_error(soc.check_rp2040js)
    assert f"rp2040js is not installed in {tmp_path}" in msg and f"npm ci --prefix {tmp_path}" in msg, msg
    monkeypatch.delenv(soc.ENV_DIR)
    monkeypatch.setattr(soc, "PACKAGE_DIR", tmp_path)
    msg = _one_line_error(lambda: soc.check_rp2040js(tmp_path))
    assert "make setup" in msg and f"npm ci --prefix {tmp_path}" in msg, msg


def test_soc_is_refused_for_boards_other_than_the_pico(firmware_models):
    for name, machine in [("pico2", "mps2-an505"), ("nucleo-f412zg", "mps2-an386")]:
        res = CliRunner().invoke(main, ["run", firmware_models.path("mlp_int8"), "--board", name, "--emulate",
                                        "--soc"], standalone_mode=False)
        msg = str(res.exception)
        assert isinstance(res.exception, TinycError) and "\n" not in msg
        assert msg.startswith(f"no SoC emulator for {name}") and f"use --emulate without --soc (QEMU {machine})" in msg


def test_run_cli_soc_json_and_text(firmware_models, tmp_path):
    path = firmware_models.path("mlp_int8")
    res = CliRunner().invoke(main, ["run", path, "--board", "pico", "--emulate", "--soc", "--json", "-o",
                                    str(tmp_path)])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output[res.output.index("{"):])
    assert {"cycles", "cycles_per_mac", "ms", "clk_sys", "clk_peri", "board_cpu_clock_hz", "board_uart_clock_hz",
            "outputs_match", "emulator_cycles_per_s", "note"} <= set(r)
    assert r["outputs_match"] and len(r["outputs"]) == 3 and r["cycles"] > 0
    assert "lower bounds" in r["note"] and "no wait states" in r["note"]
    text = CliRunner().invoke(main, ["run", path, "--board", "pico", "--emulate", "--soc", "-o", str(tmp_path)])
    assert text.exit_code == 0 and "cycles per inference" in text.output
    assert f"clk_sys {PICO.console.cpu_clock_hz:,} Hz" in text.output
