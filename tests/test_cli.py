"""The command line as a user meets it: bad input gives one line and exit code 2, never a traceback."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tinyc.compiler import compile_model


def tinyc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def one_line_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def small_onnx(path, op="Relu", input_dims=(1, 4), names=("x", "y"), extra=None):
    x, y = names
    node = helper.make_node(op, [x], [y], name=extra or "the_node")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(x, TensorProto.FLOAT, list(input_dims))],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return path


def test_help_is_instant_and_imports_no_tensorflow():
    code = "import sys; from tinyc import cli; sys.argv=['tinyc','--help']\n" \
           "try:\n  cli.run()\nexcept SystemExit: pass\nassert 'tensorflow' not in sys.modules, 'tf imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "compile" in res.stdout and "verify" in res.stdout


def test_ops_lists_every_frontend():
    res = tinyc("ops")
    assert res.returncode == 0
    for op in ("Conv", "Gemm", "GlobalAveragePool", "DepthwiseConv2D", "SeparableConv2D"):
        assert op in res.stdout


def test_missing_file(tmp_path):
    one_line_error(tinyc("compile", tmp_path / "nope.onnx", "-o", tmp_path / "o"), "does not exist")


def test_unknown_extension(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"\x00" * 10)
    one_line_error(tinyc("compile", p, "-o", tmp_path / "o"), "extension", ".onnx")


@pytest.mark.parametrize("content", [b"", b"garbage" * 50, bytes(range(256)) * 4])
def test_corrupt_onnx(tmp_path, content):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    one_line_error(tinyc("compile", p, "-o", tmp_path / "o"))


def test_truncated_onnx(tmp_path):
    good = small_onnx(tmp_path / "good.onnx")
    data = good.read_bytes()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    one_line_error(tinyc("compile", bad, "-o", tmp_path / "o"))


def test_corrupt_keras(tmp_path):
    p = tmp_path / "bad.keras"
    p.write_bytes(b"PK\x03\x04 not really a zip")
    one_line_error(tinyc("compile", p, "-o", tmp_path / "o"))


def test_unsupported_op_names_op_and_node(tmp_path):
    p = small_onnx(tmp_path / "m.onnx", op="Trilu", input_dims=(4, 4), extra="my_trilu_node")
    msg = one_line_error(tinyc("compile", p, "-o", tmp_path / "o"), "Trilu", "my_trilu_node", "tinyc ops")
    assert "unsupported" in msg


def test_dynamic_shape_needs_input_shape(tmp_path):
    p = small_onnx(tmp_path / "dyn.onnx", input_dims=("N", "features"))
    one_line_error(tinyc("compile", p, "-o", tmp_path / "o"), "--input-shape")
    res = tinyc("compile", p, "-o", tmp_path / "o", "--input-shape", "1,6")
    assert res.returncode == 0, res.stderr
    assert "#define DYN_INPUT0_SHAPE { 1, 6 }" in (tmp_path / "o" / "dyn.h").read_text()


def test_output_dir_not_made_by_tinyc_is_refused(tmp_path):
    p = small_onnx(tmp_path / "m.onnx")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    one_line_error(tinyc("compile", p, "-o", out), "--force")
    assert tinyc("compile", p, "-o", out, "--force").returncode == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert tinyc("compile", p, "-o", out).returncode == 0   # now tinyc's own: recompiling is fine


def test_verify_json(tmp_path):
    p = small_onnx(tmp_path / "m.onnx", op="Sigmoid")
    x = np.linspace(-30, 30, 8, dtype=np.float32).reshape(2, 1, 4)     # two samples, with extreme values
    np.save(tmp_path / "x.npy", x)
    res = tinyc("verify", p, "--input", tmp_path / "x.npy", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] is True and report["samples"] == 2 and report["model"] == str(p)
    assert report["max_abs_err"] <= 1e-4


def test_verify_rejects_wrong_input_size(tmp_path):
    p = small_onnx(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros(5, np.float32))
    one_line_error(tinyc("verify", p, "--input", tmp_path / "x.npy"), "shape")


HOSTILE = ['q"uote', "star*/slash", "new\nline", "int", "back\\slash??/", "é✓", "x" * 3000]


def test_hostile_names_compile_to_valid_c(tmp_path, c_compile):
    for k, name in enumerate(HOSTILE):
        p = small_onnx(tmp_path / f"h{k}.onnx", op="Tanh", names=(name, name + "_out"), extra=name)
        lib = compile_model(str(p), name=name).library
        c = "".join(lib.files.values())
        if any(bad in name for bad in ("*/", "\n", "\\", "??")) or not name.isascii():
            assert name not in c, name           # only ever escaped, in comments
        assert "x" * 100 not in c                # long names are shortened in comments
        c_compile(lib, tmp_path / f"h{k}")


def test_model_names_become_identifiers():
    from tinyc.names import c_identifier
    assert c_identifier("int") == "int_m"
    assert c_identifier("9lives") == "m_9lives"
    assert c_identifier("") == "model"
    assert c_identifier("Key Word-Spotting!") == "key_word_spotting"
