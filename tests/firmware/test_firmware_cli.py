"""`tinyc compile --board --build` and `tinyc build`: sizes against the board's limits, JSON for CI, and one-line
refusals (model too big for the board as firmware, bad flags, no project)."""
from __future__ import annotations

import json

import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper

from tinyc.cli import main


def _relu_model(path, values: int) -> str:
    """A float Relu over `values` floats: its arena is 4 * values bytes (output written over the input)."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, values])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, values])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return str(path)


def _invoke(args):
    from tinyc.errors import TinycError
    res = CliRunner().invoke(main, args, standalone_mode=False)
    err = res.exception if isinstance(res.exception, TinycError) else None
    return res, (str(err) if err else None)


def test_compile_build_reports_sizes_and_checks_the_uf2(firmware_models, tmp_path):
    res, err = _invoke(["compile", firmware_models.path("residual_int8"), "--board", "pico2", "-o", str(tmp_path),
                        "--build"])
    assert err is None and res.exit_code == 0, res.output
    assert "built for pico2" in res.output and "family rp2350-arm-s" in res.output and "checked" in res.output
    assert (tmp_path / "firmware" / "build" / "firmware.uf2").is_file()
    res, err = _invoke(["build", str(tmp_path), "--json"])
    assert err is None, err
    r = json.loads(res.output)
    assert {"text_bytes", "data_bytes", "bss_bytes", "flash_bytes", "flash_size_bytes", "sram", "fits",
            "images", "uf2"} <= set(r)
    assert r["fits"] and r["flash_size_bytes"] == 4 * 1024 * 1024 and r["uf2"]["family"] == "rp2350-arm-s"


def test_opt_reaches_the_build(firmware_models, tmp_path):
    path = firmware_models.path("mlp_float")
    sizes = {}
    for opt in ("-O2", "-Os"):
        out = tmp_path / opt
        res, err = _invoke(["compile", path, "--board", "nucleo-f412zg", "-o", str(out), "--opt", opt, "--build"])
        assert err is None, err
        assert f"OPT     ?= {opt}" in (out / "firmware" / "Makefile").read_text()
        sizes[opt] = json.loads(_invoke(["build", str(out), "--json"])[0].output)["text_bytes"]
    assert sizes["-Os"] < sizes["-O2"]


def test_model_too_big_for_the_board_is_one_line_at_compile_time(tmp_path):
    # 70,000 floats: 280,000 B of arena > the Pico's 262,144 B region.
    _, err = _invoke(["compile", _relu_model(tmp_path / "big.onnx", 70_000), "--board", "pico", "-o",
                      str(tmp_path / "o1")])
    assert err and "does not fit pico" in err and "\n" not in err
    # 64,000 floats fit the region, but not beside the firmware's stack: still refused before any linker runs.
    _, err = _invoke(["compile", _relu_model(tmp_path / "edge.onnx", 64_000), "--board", "pico", "-o",
                      str(tmp_path / "o2")])
    assert err and "as firmware" in err and "stack" in err and "\n" not in err
    assert not (tmp_path / "o2").exists()


def test_firmware_flags_need_a_board_and_a_valid_level(firmware_models, tmp_path):
    path = firmware_models.path("mlp_float")
    _, err = _invoke(["compile", path, "-o", str(tmp_path / "a"), "--build"])
    assert err and "--board" in err
    _, err = _invoke(["compile", path, "--board", "pico", "-o", str(tmp_path / "b"), "--opt", "-O9"])
    assert err and "-O9" in err
    _, err = _invoke(["build", str(tmp_path)])
    assert err and "no firmware project" in err
