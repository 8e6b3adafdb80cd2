"""MatMul of two computed tensors (issue 17): the C (ASan + UBSan) against the interpreter with broadcast batch
axes, and ONNX's 1-D / N-D forms against onnxruntime; ONNX Dropout's mask output (all true at inference)."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from c_runner import run_c
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.verify import verify

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("a,b", [((3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4, 3), (2, 3, 1)),
                                 ((1, 1), (1, 1))])
def test_matmul_kernel_matches_the_interpreter(tmp_path, a, b):
    g = Graph("mm")
    g.add_tensor("a", a)
    g.add_tensor("b", b)
    out = tuple(np.broadcast_shapes(a[:-2], b[:-2])) + (a[-2], b[-1])
    g.add_tensor("y", out)
    g.add_node("MatMul", ["a", "b"], ["y"])
    g.inputs, g.outputs = ["a", "b"], ["y"]
    g.validate()
    xa, xb = RNG.standard_normal(a).astype(np.float32), RNG.standard_normal(b).astype(np.float32)
    (y,) = run_c(g, [xa, xb], tmp_path)
    np.testing.assert_allclose(y, interp_run(g, [xa, xb])["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a,b", [([4], [4]), ([3], [2, 3, 5]), ([2, 3, 4], [4]), ([2, 1, 3, 4], [5, 4, 2]),
                                 ([1, 4], [4, 6])])
def test_onnx_matmul_of_computed_tensors(tmp_path, a, b):
    nodes = [helper.make_node("Relu", ["x"], ["rx"]), helper.make_node("MatMul", ["rx", "w"], ["y"]),
             helper.make_node("Dropout", ["y"], ["yd", "mask"])]
    g = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, a),
                                        helper.make_tensor_value_info("w", TensorProto.FLOAT, b)],
                          [helper.make_tensor_value_info("yd", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("mask", TensorProto.BOOL, None)])
    path = tmp_path / "mm.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]
