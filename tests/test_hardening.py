"""Hardening beyond the fuzz corpus: reproducible output, the output directory, hostile names.

- Compiling the same model twice (other Python hash seeds, other output directories, some time apart) gives
  byte-identical files: no timestamps, absolute paths or dict-order dependence.
- `-o` never writes outside the given directory and refuses a non-empty directory tinyc did not make.
- Any model, node or tensor name becomes a valid, collision-free C identifier or an escaped comment.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_cli import one_line_error, small_onnx, tinyc
from tinyc.compiler import compile_model
from tinyc.names import C_KEYWORDS, c_identifier, comment_text

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _compile(model, out, seed, *extra):
    res = subprocess.run([sys.executable, "-m", "tinyc.cli", "compile", str(model), "-o", str(out), *map(str, extra)],
                         capture_output=True, text=True, timeout=600, env={**_env(), "PYTHONHASHSEED": str(seed)})
    assert res.returncode == 0, res.stderr
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _env():
    import os
    return dict(os.environ)


@pytest.mark.parametrize("model", ["float_keras", "int8_tflite", "onnx_ptq"])
def test_compiling_twice_gives_identical_files(firmware_models, tmp_path, model):
    """With a firmware project (`--board`), and for tinyc's own quantization too."""
    path = {"float_keras": lambda: firmware_models.path("residual_float"),
            "int8_tflite": lambda: firmware_models.path("depthwise_int8"),
            "onnx_ptq": lambda: small_onnx(tmp_path / "m.onnx", op="Sigmoid", input_dims=(1, 8))}[model]()
    extra = ["--board", "pico2"] + (["--quantize", "int8", "--calib", "random"] if model == "onnx_ptq" else [])
    first = _compile(path, tmp_path / "a", 1, *extra)
    second = _compile(path, tmp_path / "deeper" / "b", 2, *extra)
    assert first.keys() == second.keys() and "firmware/main.c" in first
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, differing
    text = b"".join(first.values())
    for leak in (str(tmp_path).encode(), str(Path.home()).encode(), b"/tmp/"):
        assert leak not in text


def test_output_directory_is_respected(tmp_path):
    model = small_onnx(tmp_path / "m.onnx")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    one_line_error(tinyc("compile", model, "-o", foreign), "not empty", "--force")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_line_error(tinyc("compile", model, "-o", a_file), "is a file")
    # a hostile --name never leads outside -o: it only becomes an identifier
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    res = tinyc("compile", model, "-o", out, "--name", "../../escape/../x", "--board", "pico")
    assert res.returncode == 0, res.stderr
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(out in p.parents or p == out for p in written)
    assert (out / "x.h").exists() or any(p.name.endswith(".h") for p in out.iterdir())


NAME_CHARS = st.characters(blacklist_categories=("Cs",))      # any unicode ONNX can store (no lone surrogates)
HOSTILE_PARTS = st.sampled_from(['"', "'", "\\", "*/", "/*", "\n", "\r", "??=", "??/", "int", "main", "%s", "\t",
                                 "\u202e", "\x00", "é", "✓", "x" * 10_000, "-", " ", "."])


@st.composite
def hostile_name(draw):
    parts = draw(st.lists(st.one_of(HOSTILE_PARTS, st.text(NAME_CHARS, max_size=12)), min_size=1, max_size=4))
    return "".join(parts)


@settings(max_examples=200, deadline=None)
@given(hostile_name())
def test_identifiers_and_comments_are_safe_for_any_name(name):
    ident = c_identifier(name)
    assert IDENT.fullmatch(ident) and ident not in C_KEYWORDS and not ident.startswith("__") and len(ident) <= 40
    assert c_identifier(name) == ident                        # deterministic
    text = comment_text(name)
    assert "*/" not in text and "/*" not in text and "??" not in text and "\\" not in text
    assert all(32 <= ord(ch) < 127 for ch in text) and len(text) <= 60


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(hostile_name(), min_size=4, max_size=4))
def test_hostile_names_in_a_model_compile_and_compute_right(tmp_path, c_compile, names):
    """Node and tensor names from `names` (colliding ones too: tinyc's identifiers come from indices) in a
    two-layer ONNX model: the C compiles with the warning set and equals onnxruntime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tinyc.verify import verify
    x, h, y = names[0] or "x", names[1] + "-h", names[2] + "-y"
    if len({x, h, y}) < 3:
        h, y = h + "1", y + "2"
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 7, names[3] + "_w")
    # the two node names differ only where sanitizing maps both to '_'
    nodes = [helper.make_node("Gemm", [x, w.name], [h], name=names[3] + "-", transB=1),
             helper.make_node("Tanh", [h], [y], name=names[3] + "+")]
    g = helper.make_graph(nodes, names[0], [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 3])], [w])
    path = tmp_path / "hostile.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    try:
        lib = compile_model(str(path), name=names[1]).library
    except Exception as e:                       # only a one-line refusal is acceptable
        from tinyc.errors import TinycError
        assert isinstance(e, TinycError) and "\n" not in str(e)
        return
    c_compile(lib, tmp_path / "c")
    assert verify(str(path), samples=2, name=names[1])["ok"]
