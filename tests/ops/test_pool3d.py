"""Pooling beyond the 2-D pool2d.c.j2 kernel: MaxPool3D / AvgPool3D (tinyc/ops/pool3d.py), dilated 2-D and 1-D
pooling and MaxPool on plain int8 / uint8 tensors (the shared window kernel), and MaxPool's Indices
(ops/max_pool_index.py). The C (ASan + UBSan) against the interpreter on padding corners (windows partly or
wholly outside the input), dilations, odd sizes and two images; ONNX's forms (ceil_mode, count_include_pad,
auto_pad, storage_order) against onnxruntime; dilated pooling stays float where int8 has no kernel."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from c_runner import run_c
from tinyc.compiler import compile_model
from tinyc.errors import TinycError
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.ops.pool3d import out_size
from tinyc.verify import verify

RNG = np.random.default_rng(5)


def _pool_graph(shape, dtype, specs) -> Graph:
    """One input, one output per (op, kernel, strides, dilations, pads, extra attributes)."""
    g = Graph("pools")
    g.add_tensor("x", shape, dtype)
    g.inputs = ["x"]
    nsp = len(shape) - 2
    for k, (op, kernel, strides, dilations, pads, extra) in enumerate(specs):
        sizes = [out_size(shape[1 + i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i])
                 for i in range(nsp)]
        name = f"{op.lower()}{k}"
        g.add_tensor(name, (shape[0], *sizes, shape[-1]), "int64" if op == "MaxPoolIndex" else dtype)
        attrs = dict(kernel=kernel, strides=strides, pads=pads, **extra)
        if nsp == 3 or dilations != (1,) * nsp or op == "MaxPoolIndex":
            attrs["dilations"] = dilations
        g.add_node(op, ["x"], [name], name=name, **attrs)
        g.outputs.append(name)
    g.validate()
    return g


def _check_c(g, x, tmp_path):
    ref = interp_run(g, [x])
    for name, ours in zip(g.outputs, run_c(g, [x], tmp_path)):
        want = ref[name]
        if want.dtype.kind == "f":
            np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max()), err_msg=name)
        else:
            np.testing.assert_array_equal(ours, want, err_msg=name)


# (kernel, strides, dilations, pads): clipped on every side, a window wholly in the padding (pads >= kernel),
# none clipped (a constant divisor)
WINDOWS_3D = [((2, 3, 2), (2, 1, 2), (1, 2, 1), (1, 1, 0, 0, 1, 1)),
              ((1, 2, 1), (1, 2, 3), (1, 1, 1), (1, 0, 2, 1, 1, 0)),
              ((2, 2, 3), (1, 2, 1), (2, 1, 2), (0, 0, 0, 0, 0, 0))]


def test_3d_pooling_c_matches_interpreter(tmp_path):
    specs = []
    for kernel, strides, dilations, pads in WINDOWS_3D:
        specs += [("MaxPool3D", kernel, strides, dilations, pads, {}),
                  ("AvgPool3D", kernel, strides, dilations, pads, dict(count_include_pad=False)),
                  ("AvgPool3D", kernel, strides, dilations, pads, dict(count_include_pad=True)),
                  ("MaxPoolIndex", kernel, strides, dilations, pads, dict(storage_order=len(specs) % 2))]
    g = _pool_graph((2, 5, 6, 7, 3), "float32", specs)
    x = RNG.standard_normal((2, 5, 6, 7, 3)).astype(np.float32)
    x[1, 2, 3, 4] = x[1, 2, 3, 5]     # ties: the first maximum's index
    _check_c(g, x, tmp_path)


WINDOWS_2D = [((3, 2), (2, 1), (2, 3), (2, 1, 1, 0)), ((2, 2), (1, 2), (3, 1), (0, 0, 0, 1)),
              ((1, 1), (1, 1), (1, 1), (1, 0, 0, 1))]


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int8"])
def test_2d_window_kernel_c_matches_interpreter(tmp_path, dtype):
    """Dilated 2-D pools (float), MaxPool on plain integers, their indices; two images (one call each)."""
    specs = []
    for kernel, strides, dilations, pads in WINDOWS_2D:
        specs += [("MaxPool2D", kernel, strides, dilations, pads, {}),
                  ("MaxPoolIndex", kernel, strides, dilations, pads, dict(storage_order=1))]
        if dtype == "float32":
            specs += [("AvgPool2D", kernel, strides, dilations, pads, dict(count_include_pad=c)) for c in (0, 1)]
    g = _pool_graph((2, 7, 6, 3), dtype, specs)
    if dtype == "float32":
        x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        x = RNG.integers(info.min, info.max, (2, 7, 6, 3), endpoint=True).astype(dtype)
    _check_c(g, x, tmp_path)


def _onnx(tmp_path, name, nodes, shape, elem=TensorProto.FLOAT, inits=()) -> str:
    """The outputs y* and i* (int64 indices) of the nodes are the model's."""
    outs = [o for n in nodes for o in n.output if o[0] in "yi"]
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", elem, shape)],
                          [helper.make_tensor_value_info(o, TensorProto.INT64 if o[0] == "i" else elem, None)
                           for o in outs], list(inits))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
                     .SerializeToString())
    return str(path)


def _verify(path):
    report = verify(path, samples=2)
    assert report["ok"], report["outputs"]


def test_onnx_3d_pooling_matches_onnxruntime(tmp_path):
    """ceil_mode with and without counting the explicit padding (onnxruntime counts it but not the overhang),
    auto_pad, dilations, and the Indices output. (onnxruntime's pooling sizes SAME padding without the
    dilations and then disagrees with the ONNX shape it declares, so SAME is tested undilated.)"""
    common = dict(kernel_shape=[2, 3, 2], strides=[2, 1, 2])
    dilated = dict(common, dilations=[1, 2, 1])
    nodes = [helper.make_node("MaxPool", ["x"], ["y0", "i0"], pads=[1, 1, 0, 0, 1, 1], ceil_mode=1, **dilated),
             helper.make_node("MaxPool", ["x"], ["y1", "i1"], auto_pad="SAME_LOWER", storage_order=1, **common),
             helper.make_node("AveragePool", ["x"], ["y2"], pads=[1, 1, 0, 0, 1, 1], ceil_mode=1,
                              count_include_pad=1, **dilated),
             helper.make_node("AveragePool", ["x"], ["y3"], pads=[1, 1, 0, 0, 1, 1], ceil_mode=1, **dilated),
             helper.make_node("AveragePool", ["x"], ["y4"], auto_pad="SAME_UPPER", count_include_pad=1, **common),
             helper.make_node("AveragePool", ["x"], ["y5"], auto_pad="VALID", kernel_shape=[3, 2, 2])]
    _verify(_onnx(tmp_path, "pool3d", nodes, [2, 3, 5, 6, 7]))


def test_onnx_dilated_1d_and_2d_pooling_matches_onnxruntime(tmp_path):
    nodes = [helper.make_node("MaxPool", ["x"], ["y0", "i0"], kernel_shape=[3, 2], strides=[2, 1], dilations=[2, 3],
                              pads=[2, 1, 1, 0], ceil_mode=1),
             helper.make_node("AveragePool", ["x"], ["y1"], kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1, count_include_pad=1),
             helper.make_node("AveragePool", ["x"], ["y2"], kernel_shape=[3, 2], strides=[1, 2], dilations=[2, 1],
                              pads=[2, 0, 1, 1]),
             helper.make_node("Reshape", ["x", "flat"], ["x3"]),
             helper.make_node("MaxPool", ["x3"], ["y3", "i3"], kernel_shape=[3], strides=[2], dilations=[2],
                              pads=[2, 1], storage_order=1),
             helper.make_node("AveragePool", ["x3"], ["y4"], kernel_shape=[3], strides=[2], pads=[1, 1],
                              ceil_mode=1, count_include_pad=1)]
    flat = numpy_helper.from_array(np.array([2, 3, 72], np.int64), "flat")
    _verify(_onnx(tmp_path, "dilated", nodes, [2, 3, 9, 8], inits=[flat]))


@pytest.mark.parametrize("elem", [TensorProto.UINT8, TensorProto.INT8])
def test_onnx_integer_max_pool_matches_onnxruntime(tmp_path, elem):
    nodes = [helper.make_node("MaxPool", ["x"], ["y0", "i0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1),
             helper.make_node("MaxPool", ["x"], ["y1"], kernel_shape=[2, 2], dilations=[2, 1])]
    _verify(_onnx(tmp_path, "int_pool", nodes, [2, 3, 6, 5], elem))


def test_dilated_pooling_stays_float_in_a_qdq_model(tmp_path):
    """TFLite has no dilated pooling: the QDQ group keeps a float MaxPool (correct, only not int8); tinyc's own
    quantizer refuses it in one line."""
    scale, zp = (numpy_helper.from_array(np.array(v, t), n) for v, t, n in ((0.05, np.float32, "s"),
                                                                            (3, np.int8, "z")))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("MaxPool", ["xd"], ["p"], kernel_shape=[2, 2], dilations=[2, 2]),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scale, zp])
    path = tmp_path / "qdq.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
                     .SerializeToString())
    _verify(str(path))
    g = compile_model(str(path)).plan.graph
    assert [g.tensors[n.outputs[0]].dtype for n in g.nodes if n.op == "MaxPool2D"] == ["float32"]
    float_model = _onnx(tmp_path, "float_pool", [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2],
                                                                  dilations=[2, 2])], [1, 2, 6, 6])
    with pytest.raises(TinycError, match="int8 pooling with dilations"):
        compile_model(float_model, quantize="int8", calib=[RNG.standard_normal((4, 1, 2, 6, 6)).astype(np.float32)])


def test_3d_pooling_checks_its_attributes():
    g = _pool_graph((1, 4, 4, 4, 2), "float32", [("MaxPool3D", (2, 2, 2), (1, 1, 1), (1, 1, 1), (0,) * 6, {})])
    g.tensors["maxpool3d0"].shape = (1, 2, 3, 3, 2)
    with pytest.raises(TinycError, match="MaxPool3D 'maxpool3d0'.*do not take input"):
        g.validate()


@pytest.mark.parametrize("op,shape,kernel", [("MaxPool", [1, 2, 4, 4], [9, 2]),
                                             ("AveragePool", [1, 2, 4, 4, 4], [2, 9, 2])])
def test_window_larger_than_its_input_is_refused(tmp_path, op, shape, kernel):
    path = _onnx(tmp_path, "big", [helper.make_node(op, ["x"], ["y"], kernel_shape=kernel)], shape)
    with pytest.raises(TinycError, match="window .* is larger than its padded input"):
        compile_model(path)
