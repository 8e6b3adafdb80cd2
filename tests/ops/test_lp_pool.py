"""LpPool (tinyc/ops/lp_pool.py): ONNX LpPool, GlobalLpPool and GlobalMaxPool on 1-D, 2-D and 3-D inputs against
onnxruntime, and LpPool's C (AddressSanitizer + UBSan) against the interpreter."""
import numpy as np
import pytest

from tinyc.errors import TinycError
from tinyc.verify import verify


def _ok(report):
    assert report["ok"], report["outputs"]


def _onnx_model(tmp_path, name, nodes, shape, inits=()) -> str:
    from onnx import TensorProto, helper
    outs = [o for n in nodes for o in n.output if o.startswith("y")]
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], list(inits))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
                     .SerializeToString())
    return str(path)


def test_onnx_lp_pool_matches_onnxruntime(tmp_path):
    """p = 1, 2, 3 on 1-D, 2-D and 3-D inputs: explicit and SAME padding, strides, dilations, ceil_mode. (SAME is
    tested undilated: onnxruntime sizes it without the dilations, unlike the shape ONNX declares.)"""
    from onnx import helper, numpy_helper
    lp = helper.make_node
    nodes = [lp("LpPool", ["x"], ["y0"], p=1, kernel_shape=[3, 2], strides=[2, 1], pads=[2, 1, 1, 0]),
             lp("LpPool", ["x"], ["y1"], p=2, kernel_shape=[2, 2], dilations=[2, 3], pads=[1, 1, 1, 1]),
             lp("LpPool", ["x"], ["y2"], p=3, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
             lp("LpPool", ["x"], ["y3"], kernel_shape=[3, 2], strides=[3, 2], ceil_mode=1),
             lp("GlobalLpPool", ["x"], ["y4"], p=1), lp("GlobalLpPool", ["x"], ["y5"]),
             lp("GlobalMaxPool", ["x"], ["y6"]),
             lp("Reshape", ["x", "as_1d"], ["x1"]),
             lp("LpPool", ["x1"], ["y7"], p=2, kernel_shape=[4], strides=[3], pads=[3, 2]),
             lp("LpPool", ["x1"], ["y8"], p=1, kernel_shape=[4], strides=[3], auto_pad="SAME_LOWER"),
             lp("GlobalLpPool", ["x1"], ["y9"], p=3), lp("GlobalMaxPool", ["x1"], ["y10"]),
             lp("Reshape", ["x", "as_3d"], ["x3"]),
             lp("LpPool", ["x3"], ["y11"], p=2, kernel_shape=[2, 2, 2], strides=[1, 2, 1], pads=[1, 0, 0, 0, 1, 1]),
             lp("GlobalLpPool", ["x3"], ["y12"], p=2), lp("GlobalMaxPool", ["x3"], ["y13"])]
    inits = [numpy_helper.from_array(np.array([2, 3, 56], np.int64), "as_1d"),
             numpy_helper.from_array(np.array([2, 3, 2, 4, 7], np.int64), "as_3d")]
    _ok(verify(_onnx_model(tmp_path, "lp_pools", nodes, [2, 3, 8, 7], inits), samples=2))


def test_onnx_lp_pool_with_p_below_one_is_refused(tmp_path):
    from onnx import helper
    path = _onnx_model(tmp_path, "lp0", [helper.make_node("LpPool", ["x"], ["y"], name="lp", p=0,
                                                          kernel_shape=[2, 2])], [1, 2, 4, 4])
    with pytest.raises(TinycError, match="LpPool 'lp' has p = 0"):
        verify(path, samples=1)


def test_lp_pool_c_matches_interpreter(tmp_path):
    """The C of LpPool (ASan + UBSan) against the interpreter: 1 to 3 spatial axes, two images, windows clipped
    on every side and one wholly in the padding (0), p = 1, 2, 3, 4."""
    from c_runner import run_c
    from tinyc.interp import run as interp_run
    from tinyc.ir import Graph
    from tinyc.ops.pool3d import out_size
    specs = [((2, 9, 3), (3,), (2,), (1,), (4, 1), 1), ((2, 9, 3), (2,), (1,), (3,), (1, 2), 4),
             ((2, 5, 6, 3), (2, 3), (2, 1), (1, 2), (2, 1, 3, 2), 2),
             ((2, 5, 6, 3), (1, 1), (1, 1), (1, 1), (2, 0, 0, 0), 3),
             ((2, 3, 4, 5, 2), (2, 2, 3), (1, 2, 1), (2, 1, 1), (1, 0, 1, 1, 1, 0), 3)]
    rng = np.random.default_rng(8)
    for i, (shape, kernel, strides, dilations, pads, p) in enumerate(specs):
        nsp = len(kernel)
        g = Graph(f"lp{i}")
        g.add_tensor("x", shape)
        g.inputs = ["x"]
        sizes = [out_size(shape[1 + a], kernel[a], strides[a], dilations[a], pads[a], pads[nsp + a])
                 for a in range(nsp)]
        g.add_tensor("y", (shape[0], *sizes, shape[-1]))
        g.add_node("LpPool", ["x"], ["y"], name="lp", kernel=kernel, strides=strides, dilations=dilations, pads=pads,
                   p=p)
        g.outputs = ["y"]
        g.validate()
        x = rng.standard_normal(shape).astype(np.float32)
        want = interp_run(g, [x])["y"]
        (ours,) = run_c(g, [x], tmp_path)
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max()), err_msg=str(i))
