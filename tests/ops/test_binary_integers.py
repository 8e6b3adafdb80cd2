"""Add, Sub, Mul, Div, Max, Min, Mod on integer tensors (issue 17 §3): the C (ASan + UBSan: no signed overflow, no
division by zero) against the NumPy definition on the edges — wrap-around, INT_MIN / -1, x / 0 and x % 0 (0),
truncated division, both Mod conventions — and ONNX models against onnxruntime."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from c_runner import run_c
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.ops.binary import INTEGER_TYPES, integer_values
from tinyc.compiler import compile_model
from tinyc.verify import run_generated, verify

OPS = [("Add", 1), ("Sub", 1), ("Mul", 1), ("Div", 1), ("Max", 1), ("Min", 1), ("Mod", 1), ("Mod", 0)]


def _edges(dtype):
    info = np.iinfo(dtype)
    vals = sorted(v for v in {info.min, info.min + 1, -7, -1, 0, 1, 2, 7, info.max - 1, info.max}
                  if info.min <= v <= info.max)
    a, b = np.meshgrid(np.array(vals, dtype), np.array(vals, dtype), indexing="ij")
    return a.ravel(), b.ravel()


@pytest.mark.parametrize("dtype", INTEGER_TYPES)
def test_integer_ops_on_the_edges(tmp_path, dtype):
    a, b = _edges(dtype)
    g = Graph("ints")
    g.add_tensor("a", a.shape, dtype)
    g.add_tensor("b", b.shape, dtype)
    outs = []
    for op, fmod in OPS:
        name = f"{op.lower()}{fmod}"
        g.add_tensor(name, a.shape, dtype)
        g.add_node(op, ["a", "b"], [name], activation=None, **({"fmod": fmod} if op == "Mod" else {}))
        outs.append(name)
    g.inputs, g.outputs = ["a", "b"], outs
    g.validate()
    want = interp_run(g, [a, b])
    for (op, fmod), name, y in zip(OPS, outs, run_c(g, [a, b], tmp_path)):
        np.testing.assert_array_equal(y, want[name], err_msg=f"{op} fmod={fmod}")
    # the definition itself, on a few values NumPy's own operators get right
    assert list(integer_values("Div", np.array([-7, 7, -7], np.int32), np.array([2, -2, 0], np.int32), 1)) == [-3, -3, 0]
    assert list(integer_values("Mod", np.array([-7, 7], np.int32), np.array([2, -2], np.int32), 0)) == [1, -1]
    assert list(integer_values("Mod", np.array([-7, 7], np.int32), np.array([2, -2], np.int32), 1)) == [-1, 1]


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8"])   # (onnxruntime has no int16 Max)
def test_integer_arithmetic_against_onnxruntime(tmp_path, dtype):
    t = {"int32": TensorProto.INT32, "int64": TensorProto.INT64, "uint8": TensorProto.UINT8,
         "int16": TensorProto.INT16}[dtype]
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["s", "b"], ["m"]),
             helper.make_node("Div", ["m", "b"], ["d"]), helper.make_node("Mod", ["a", "b"], ["r0"], fmod=0),
             helper.make_node("Mod", ["a", "b"], ["r1"], fmod=1), helper.make_node("Max", ["d", "a"], ["hi"]),
             helper.make_node("Sub", ["hi", "r0"], ["y"])]
    g = helper.make_graph(nodes, "ints", [helper.make_tensor_value_info("a", t, [2, 3, 4]),
                                          helper.make_tensor_value_info("b", t, [4])],
                          [helper.make_tensor_value_info(n, t, None) for n in ("y", "r1")])
    path = tmp_path / f"ints_{dtype}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    rng = np.random.default_rng(4)
    lo = 0 if dtype == "uint8" else -20
    a = rng.integers(lo, 20, (3, 2, 3, 4)).astype(dtype)
    b = np.array([[3, 5, 7, 2]] * 3, dtype) * (1 if dtype == "uint8" else np.array([1, -1, 1, -1], dtype))
    report = verify(str(path), inputs=[a, b])
    assert report["ok"], report["outputs"]


def test_float_mod_with_the_divisors_sign(tmp_path):
    """ONNX Mod with fmod=0 on floats (the node tests' np.mod; onnxruntime refuses it, so NumPy is the oracle)."""
    nodes = [helper.make_node("Mod", ["a", "b"], ["y"], fmod=0)]
    g = helper.make_graph(nodes, "fmod0", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [6]),
                                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "fmod0.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    a = np.array([[-4.3, 7.2, 5.0, 4.3, -7.2, 8.0]], np.float32)
    b = np.array([[2.1, -3.4, 8.0, -2.1, 3.4, 5.0]], np.float32)
    (y,) = run_generated(compile_model(str(path)), [a, b])
    np.testing.assert_allclose(y, np.mod(a, b), rtol=1e-6, atol=1e-6)
