"""ONNX QuantizeLinear / DequantizeLinear outside an int8 graph (issue 17): int8/uint8/int16/uint16 model inputs
and outputs, scales per tensor, per axis and per block, against onnxruntime; the C's edges (ties round to even,
saturation, NaN) against the numpy definition under ASan + UBSan."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from c_runner import run_c
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.verify import verify

ONNX = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16,
        "uint16": TensorProto.UINT16}


@pytest.mark.parametrize("dtype", sorted(ONNX))
def test_quantize_edges(tmp_path, dtype):
    """Ties go to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2), values beyond the type saturate, NaN is the zero
    point."""
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 1e9, -1e9, np.nan, np.inf, -np.inf, 3.49, -7.51], np.float32)
    zp = 3 if dtype.startswith("u") else -2
    g = Graph("q")
    g.add_tensor("x", x.shape)
    g.add_tensor("scale", (), data=np.float32(1.0))
    g.add_tensor("zp", (), dtype, data=np.array(zp, dtype))
    g.add_tensor("y", x.shape, dtype)
    g.add_node("LinearQuantize", ["x", "scale", "zp"], ["y"], to=dtype)
    g.inputs, g.outputs = ["x"], ["y"]
    g.validate()
    (y,) = run_c(g, [x], tmp_path)
    np.testing.assert_array_equal(y, interp_run(g, [x])["y"])
    info = np.iinfo(dtype)
    want = np.clip(np.array([0, 2, 2, 0, -2], np.int64) + zp, info.min, info.max)
    assert list(y[:5]) == list(want)
    assert y[5] == info.max and y[6] == info.min and y[7] == zp and y[8] == info.max and y[9] == info.min


def _model(tmp_path, name, nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
                     .SerializeToString())
    return str(path)


@pytest.mark.parametrize("dtype", sorted(ONNX))
def test_integers_in_and_out_against_onnxruntime(tmp_path, dtype):
    """int input -> DequantizeLinear per channel (axis 1 of NCHW) -> Relu -> QuantizeLinear per tensor -> int
    output, and a blocked DequantizeLinear of the same input."""
    rng = np.random.default_rng(2)
    c = 3
    zp_in = rng.integers(0, 5, c).astype(dtype)
    nodes = [helper.make_node("DequantizeLinear", ["x", "s_in", "z_in"], ["f"], axis=1),
             helper.make_node("Relu", ["f"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s_out", "z_out"], ["y"]),
             helper.make_node("DequantizeLinear", ["x", "s_blk", "z_blk"], ["fb"], axis=3, block_size=2)]
    inits = [numpy_helper.from_array(np.array([0.1, 0.02, 0.5], np.float32), "s_in"),
             numpy_helper.from_array(zp_in, "z_in"),
             numpy_helper.from_array(np.float32(0.05), "s_out"),
             numpy_helper.from_array(np.array(1, dtype), "z_out"),
             numpy_helper.from_array(rng.uniform(0.01, 0.2, (1, c, 4, 3)).astype(np.float32), "s_blk"),
             numpy_helper.from_array(rng.integers(0, 3, (1, c, 4, 3)).astype(dtype), "z_blk")]
    path = _model(tmp_path, f"qdq_{dtype}", nodes, [helper.make_tensor_value_info("x", ONNX[dtype], [1, c, 4, 5])],
                  [helper.make_tensor_value_info("y", ONNX[dtype], None),
                   helper.make_tensor_value_info("fb", TensorProto.FLOAT, None)], inits)
    info = np.iinfo(dtype)
    x = np.random.default_rng(3).integers(max(info.min, -300), min(info.max, 300), (4, 1, c, 4, 5)).astype(dtype)
    report = verify(path, inputs=[x])
    assert report["ok"], report["outputs"]
