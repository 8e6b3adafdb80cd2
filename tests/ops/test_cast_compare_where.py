"""Cast, Compare, Logical and Where (issue 17 §3): the C (ASan + UBSan) against the numpy definition on the edges
C leaves undefined (float -> integer out of range and NaN, narrowing integer casts), and the ONNX frontend against
onnxruntime."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from c_runner import run_c
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.verify import verify

TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool", "float32")
ONNX_TYPES = {"float32": TensorProto.FLOAT, "int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
              "int16": TensorProto.INT16, "uint16": TensorProto.UINT16, "int32": TensorProto.INT32,
              "uint32": TensorProto.UINT32, "int64": TensorProto.INT64, "uint64": TensorProto.UINT64,
              "bool": TensorProto.BOOL}
EDGES = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 2.9e9, -2.9e9, 65535.7, -1.5, -0.5, 0.5, 1.99, 127.9,
                  128.0, 255.5, -129.0, 2147483520.0, -2147483648.0, 9.2e18, -9.3e18], np.float32)


def _cast_graph(src: str, n: int) -> Graph:
    """x (src) cast to every type, one output each (one build per source type)."""
    g = Graph("cast")
    g.add_tensor("x", (n,), src)
    for dst in TYPES:
        g.add_tensor(f"y_{dst}", (n,), dst)
        g.add_node("Cast", ["x"], [f"y_{dst}"], to=dst)
    g.inputs, g.outputs = ["x"], [f"y_{dst}" for dst in TYPES]
    g.validate()
    return g


def test_float_to_any_type_is_defined_on_every_value(tmp_path):
    """NaN -> 0, out of range -> the nearest limit, else truncation toward zero; bool: != 0."""
    g = _cast_graph("float32", EDGES.size)
    want = interp_run(g, [EDGES])
    for dst, y in zip(TYPES, run_c(g, [EDGES], tmp_path)):
        np.testing.assert_array_equal(y, want[f"y_{dst}"], err_msg=dst)
        if dst not in ("bool", "float32"):
            info = np.iinfo(dst)
            assert y[0] == 0 and y[1] >= info.max - 2 ** 40 and y[2] == info.min     # NaN, +inf, -inf
            assert list(y[8:11]) == [-1 if info.min < 0 else 0, 0, 0]                 # -1.5 -0.5 0.5 truncate


@pytest.mark.parametrize("src", [t for t in TYPES if t != "float32"])
def test_integers_wrap_into_narrower_types_as_numpy_does(tmp_path, src):
    info = np.iinfo(src) if src != "bool" else None
    x = (np.array([0, 1, info.max, info.min, info.max // 3, 200 % (int(info.max) + 1)], dtype=src)
         if info else np.array([True, False, True], bool))
    for dst, y in zip(TYPES, run_c(_cast_graph(src, x.size), [x], tmp_path)):
        np.testing.assert_array_equal(y, x.astype(dst) if dst != "bool" else x != 0, err_msg=f"{src} -> {dst}")


def _model(tmp_path, name, nodes, inputs, outputs):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, ONNX_TYPES[t], s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, ONNX_TYPES[t], None) for n, t in outputs])
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    return str(path)


@pytest.mark.parametrize("dtype", ["float32", "int32", "int64", "uint8"])
def test_compare_logical_where_against_onnxruntime(tmp_path, dtype):
    """a > b and a <= b (broadcast [2,3,4] with [4]), combined with Xor / Not / And, selecting with Where, and a
    Cast of the result: one model per operand type."""
    nodes = [helper.make_node("Greater", ["a", "b"], ["gt"]), helper.make_node("LessOrEqual", ["a", "b"], ["le"]),
             helper.make_node("Equal", ["a", "a"], ["eq"]), helper.make_node("Xor", ["gt", "le"], ["x"]),
             helper.make_node("Not", ["gt"], ["ng"]), helper.make_node("And", ["x", "eq"], ["both"]),
             helper.make_node("Where", ["ng", "a", "b"], ["sel"]),
             helper.make_node("Cast", ["both"], ["y"], to=ONNX_TYPES["int32"])]
    path = _model(tmp_path, f"logic_{dtype}", nodes, [("a", dtype, [2, 3, 4]), ("b", dtype, [4])],
                  [("sel", dtype), ("y", "int32"), ("ng", "bool")])
    report = verify(path, samples=4)
    assert report["ok"], report["outputs"]


def test_cast_against_onnxruntime_in_range(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT16),
             helper.make_node("Cast", ["i"], ["u"], to=TensorProto.UINT8),
             helper.make_node("Cast", ["u"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("CastLike", ["x", "like"], ["b"])]
    g = helper.make_graph(nodes, "casts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
                                           helper.make_tensor_value_info("like", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info(n, t, None) for n, t in
                           (("f", TensorProto.FLOAT), ("b", TensorProto.INT64), ("i", TensorProto.INT16))])
    path = tmp_path / "casts.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    x = np.linspace(-300, 300, 15, dtype=np.float32).reshape(1, 3, 5)
    report = verify(str(path), inputs=[x, np.zeros((1, 1), np.int64)])
    assert report["ok"], report["outputs"]
