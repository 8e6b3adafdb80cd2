"""Emulated runs under QEMU on every core (M0+, M4, M7, M33): int8 outputs equal the host build byte for byte and
TFLite's; float outputs equal Keras's within the tolerance; instruction counts are consistent; and the board
image and the emulation image contain the same model object code."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from elftools.elf.elffile import ELFFile

from tinyc.boards import load_board
from tinyc.cli import main
from tinyc.compiler import compile_model
from tinyc.firmware.emulate import make
from tinyc.firmware.run import run_emulated
from tinyc.verify import run_generated

CORE_BOARDS = ["pico", "nucleo-f412zg", "stm32f746g-disco", "pico2"]   # M0+, M4, M7, M33


@pytest.mark.parametrize("board_name", CORE_BOARDS)
@pytest.mark.parametrize("model", ["depthwise_int8", "residual_float"])
def test_emulated_outputs_match_host_and_reference(firmware_models, tmp_path, model, board_name):
    path = firmware_models.path(model)
    c = compile_model(path, model)
    r = run_emulated(c, load_board(board_name), path, str(tmp_path))
    assert r["outputs_match"], r["outputs"]
    for o in r["outputs"]:
        if o["dtype"] == "int8":
            assert o["max_abs_diff_host"] == 0 and o["max_abs_err_reference"] == 0
    assert r["macs"] == c.library.macs and r["instructions"] > r["macs"] // 2
    # Every layer with code is profiled; the layers add up to the total within the hooks' own cost.
    coded = [row for row in c.library.layers if not row["alias"]]
    assert [row["index"] for row in r["layers"]] == [row["index"] for row in coded]
    assert all(row["instructions"] > 0 for row in r["layers"])
    assert abs(r["profiled_instructions"] - r["instructions"]) <= 0.02 * r["instructions"] + 60 * len(coded)


@pytest.mark.parametrize("model", ["residual_int8", "depthwise_int8"])
def test_m0plus_at_os_runs_the_c_gemm_and_matches(firmware_models, tmp_path, model):
    """-Os on the M0+: the Thumb-1 GEMM asm needs high registers gcc does not hand out at -Os, so the same sums run
    in C there; outputs still equal the host build and TFLite byte for byte, and the build says -Os."""
    path = firmware_models.path(model)
    c = compile_model(path, model)
    r = run_emulated(c, load_board("pico"), path, str(tmp_path), profile=False, opt="-Os")
    assert r["outputs_match"] and all(o["max_abs_diff_host"] == 0 for o in r["outputs"])
    assert "OPT     ?= -Os" in (tmp_path / "firmware" / "Makefile").read_text()


def test_multi_output_int8_model_on_m0plus_runs_every_sample(firmware_models, tmp_path):
    """A stack of 5 samples: the emulation image runs each and its outputs equal the host build's, sample by
    sample; one sample differing from the rest shows the rows are not copies of the first."""
    path = firmware_models.path("mlp_int8")
    c = compile_model(path, "mlp_int8")
    t = c.plan.graph.tensors[c.plan.graph.inputs[0]]
    x = np.random.default_rng(5).integers(-128, 128, (5, *t.shape)).astype(np.int8)
    r = run_emulated(c, load_board("pico"), path, str(tmp_path), inputs=[x], profile=False)
    assert r["outputs_match"] and len(r["outputs"]) == 3 and "layers" not in r and r["samples"] == 5
    host = run_generated(c, [x])
    for k, o in enumerate(r["outputs"]):
        emulated = np.array(o["data"], np.int8)
        assert emulated.shape == host[k].shape and np.array_equal(emulated, host[k])
    assert any(not np.array_equal(host[0][0], host[0][s]) for s in range(1, 5))


def _model_functions(obj_path):
    """name -> (size, byte offsets relocated by the linker) for every function in the model's object file."""
    with open(obj_path, "rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        funcs = {s.name: (s["st_size"], elf.get_section(s["st_shndx"]).name) for s in symtab.iter_symbols()
                 if s["st_info"]["type"] == "STT_FUNC" and s["st_size"]}
        relocated = {}
        for sec in elf.iter_sections():
            if sec.header["sh_type"] == "SHT_REL":
                target = elf.get_section(sec["sh_info"]).name
                relocated[target] = {r["r_offset"] for r in sec.iter_relocations()}
    return {name: (size, relocated.get(section, set())) for name, (size, section) in funcs.items()}


def _function_bytes(elf_path, names):
    with open(elf_path, "rb") as fh:
        elf = ELFFile(fh)
        symbols = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name in names}
        out = {}
        for name, s in symbols.items():
            addr, size = s["st_value"] & ~1, s["st_size"]
            sec = next(x for x in elf.iter_sections() if x["sh_addr"] <= addr < x["sh_addr"] + x["sh_size"]
                       and x["sh_type"] == "SHT_PROGBITS")
            out[name] = sec.data()[addr - sec["sh_addr"]:addr - sec["sh_addr"] + size]
    return out


@pytest.mark.parametrize("board_name", ["pico", "pico2"])
def test_board_and_emulation_images_share_the_model_object(firmware_models, tmp_path, board_name):
    path = firmware_models.path("residual_int8")
    assert CliRunner().invoke(main, ["compile", path, "--board", board_name, "-o", str(tmp_path)]).exit_code == 0
    fw = tmp_path / "firmware"
    make(fw, "all")
    make(fw, "emulate")
    funcs = _model_functions(fw / "build" / "model.o")
    # Static layer functions may be inlined into the run function; what is left as a function is compared.
    board = _function_bytes(fw / "build" / "firmware.elf", funcs)
    emul = _function_bytes(fw / "build" / "emulate.elf", funcs)
    assert board and set(board) == set(emul)
    for name, code in board.items():
        size, relocated = funcs[name]
        assert len(code) == len(emul[name]) == size
        # Identical except where the linker wrote an address (weights, calls): same object, two memory maps.
        masked = {i for off in relocated for i in range(off, off + 4)}
        same = [i for i in range(size) if i not in masked]
        assert all(code[i] == emul[name][i] for i in same), name


def test_run_cli_json_has_the_documented_keys(firmware_models, tmp_path):
    path = firmware_models.path("residual_int8")
    res = CliRunner().invoke(main, ["run", path, "--board", "pico", "--emulate", "--json", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output[res.output.index("{"):])
    assert {"instructions", "macs", "layers", "outputs_match", "instructions_per_mac"} <= set(r)
    assert r["outputs_match"] is True and r["board"] == "pico" and r["machine"] == "mps2-an385"
    assert all({"name", "op", "instructions"} <= set(row) for row in r["layers"])
    text = CliRunner().invoke(main, ["run", path, "--board", "pico", "--emulate"])
    assert text.exit_code == 0 and "instructions per inference" in text.output and "outputs match: yes" in text.output


def test_run_needs_emulate(firmware_models):
    res = CliRunner().invoke(main, ["run", firmware_models.path("mlp_int8"), "--board", "pico"],
                             standalone_mode=False)
    assert "--emulate" in str(res.exception)
