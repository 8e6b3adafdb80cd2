"""Parameter inputs: a model whose weights arrive as graph inputs compiles once their values are bound
(`load_model(..., bind=)`, `tinyc compile/verify/report --bind NAME=file.npy`); the other inputs stay runtime
inputs, and bad bindings are refused in one line."""
import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tinyc.compiler import compile_graph
from tinyc.errors import TinycError
from tinyc.frontends import load_model
from tinyc.verify import run_generated, tolerance


def tinyc(*args):
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], check=False,
                          capture_output=True, text=True, timeout=300)


def one_line_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    """Conv whose weights W and bias B are graph inputs (as ONNX's backend tests and some exporters write it),
    then a Relu; with the arrays to bind."""
    d = tmp_path_factory.mktemp("bind")
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
           helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3, 3, 3]),
           helper.make_tensor_value_info("B", TensorProto.FLOAT, [4])]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = d / "convw.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=10), str(path))
    rng = np.random.default_rng(3)
    arrays = {"W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "B": rng.standard_normal(4).astype(np.float32)}
    for k, v in arrays.items():
        np.save(d / f"{k}.npy", v)
    np.save(d / "W64.npy", arrays["W"].astype(np.float64))
    np.save(d / "W3d.npy", arrays["W"][0])
    (d / "junk.npy").write_text("not an array")
    return d, path, arrays


def test_bound_model_matches_onnxruntime_fed_the_same_values(conv_model):
    _, path, arrays = conv_model
    g = load_model(str(path), bind=arrays)
    assert [g.tensors[n].shape for n in g.inputs] == [(1, 3, 8, 8)]   # W and B are constants now, x stays
    compiled = compile_graph(g, "convw")
    x = np.random.default_rng(4).standard_normal((2, 1, 3, 8, 8)).astype(np.float32)
    ours = run_generated(compiled, [x])[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for s in range(2):
        ref = sess.run(None, {"x": x[s], **arrays})[0]
        assert ours[s].shape == ref.shape
        assert np.max(np.abs(ours[s] - ref)) <= tolerance(ref)
    assert np.any(ours != 0)


def test_without_bind_the_weights_input_is_refused(conv_model):
    _, path, _ = conv_model
    with pytest.raises(TinycError):
        load_model(str(path))


def test_cli_verify_and_compile_with_bind(conv_model, tmp_path):
    d, path, _ = conv_model
    res = tinyc("verify", path, "--bind", f"W={d / 'W.npy'}", "--bind", f"B={d / 'B.npy'}", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] and report["oracle"] == "onnxruntime" and report["model"] == str(path)
    res = tinyc("compile", path, "-o", tmp_path / "out", "--bind", f"W={d / 'W.npy'}", "--bind", f"B={d / 'B.npy'}")
    assert res.returncode == 0, res.stderr
    header = (tmp_path / "out" / "convw.h").read_text()
    assert "int convw_invoke(const float *input0, float *output0);" in header   # x only: W, B are constants
    res = tinyc("report", path, "--json", "--bind", f"W={d / 'W.npy'}", "--bind", f"B={d / 'B.npy'}")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["weights_bytes"] >= (4 * 27 + 4) * 4


@pytest.mark.parametrize("args, needles", [
    (["--bind", "Q=W.npy"], ["cannot bind 'Q'", "not a graph input", "x, W, B"]),
    (["--bind", "W=W64.npy", "--bind", "B=B.npy"], ["cannot bind 'W'", "float32", "float64"]),
    (["--bind", "W=W3d.npy", "--bind", "B=B.npy"], ["cannot bind 'W'", "[4, 3, 3, 3]", "[3, 3, 3]"]),
    (["--bind", "W=junk.npy"], ["cannot read", "junk.npy", "--bind W"]),
    (["--bind", "W=missing.npy"], ["cannot read", "missing.npy"]),
    (["--bind", "W"], ["is not NAME=file.npy"]),
    (["--bind", "W=W.npy", "--bind", "W=W.npy"], ["'W' twice"]),
])
def test_bad_bindings_are_one_line(conv_model, args, needles):
    d, path, _ = conv_model
    args = [a if "=" not in a else a.split("=")[0] + "=" + str(d / a.split("=")[1]) for a in args]
    one_line_error(tinyc("verify", path, *args), *needles)


def test_bind_is_for_onnx_models(conv_model, tmp_path):
    d, _, _ = conv_model
    other = tmp_path / "m.tflite"
    other.write_bytes(b"\x00" * 16)
    one_line_error(tinyc("compile", other, "-o", tmp_path / "o", "--bind", f"W={d / 'W.npy'}"), "ONNX")
    with pytest.raises(TinycError, match="applies to ONNX models"):
        load_model(str(other), bind={"W": np.zeros(1, np.float32)})


def test_binding_an_initializer_is_refused(conv_model):
    d, path, arrays = conv_model
    model = onnx.load(str(path))
    model.graph.initializer.append(onnx.numpy_helper.from_array(arrays["B"], "B"))
    p = d / "init_b.onnx"
    onnx.save(model, str(p))
    with pytest.raises(TinycError, match="'B': it is already a constant"):
        load_model(str(p), bind={"B": arrays["B"]})
