"""Reductions (tinyc/ops/reduce.py, arg_min_max.py; LogSoftmax and Hardmax in softmax.py): the C against the
interpreter under ASan + UBSan on every kind, axis set and keepdims; the ONNX, TFLite and Keras rules against
onnxruntime, TFLite and Keras; int8 (REDUCE_MAX, REDUCE_MIN, REDUCE_PROD, LOG_SOFTMAX) bit-exact with TFLite's
reference kernels (SUM: with TFLite Micro, see docs/int8-numerics.md 4.20)."""
import importlib.util
import subprocess

import numpy as np
import pytest

from tinyc import interp
from tinyc.codegen.literals import C_TYPES
from tinyc.compiler import compile_graph, compile_model
from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.ops.reduce import KINDS
from tinyc.verify import build_host_runner, verify

HAS_TF = importlib.util.find_spec("tensorflow") is not None
INT64_TENSORS = "int64" in C_TYPES   # integer runtime tensors (ArgMax's output); refused in one line before


def _run_c(g, x, tmp_path):
    exe = build_host_runner(compile_graph(g, "red"), tmp_path, 1, False)
    x.astype(np.float32).tofile(tmp_path / "in.bin")
    outs = [tmp_path / f"o{k}.bin" for k in range(len(g.outputs))]
    subprocess.run([str(exe), str(tmp_path / "in.bin"), *map(str, outs), str(tmp_path / "t.bin")], check=True)
    return [np.fromfile(o, g.tensors[n].dtype).reshape(g.tensors[n].shape) for o, n in zip(outs, g.outputs)]


# (axes, keepdims): the empty set, one axis, several, all; a graph per kind keeps the scheduler's order search small
AXES = [((), True), ((0,), False), ((3,), True), ((1, 2), False), ((0, 2, 3), True), ((0, 1, 2, 3), False)]
SHAPE = (2, 3, 4, 5)


def _check_c(g, tmp_path):
    g.validate()
    x = np.random.default_rng(0).uniform(0.2, 1.5, SHAPE).astype(np.float32)   # logsum needs positive sums
    x[1, 2, 3] = x[1, 2, 3].max()   # a tie: Hardmax takes the first maximum
    ref = interp.run(g, [x])
    for name, ours in zip(g.outputs, _run_c(g, x, tmp_path)):
        want = ref[name]
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max()), err_msg=name)


def _graph():
    g = Graph("reductions")
    g.add_tensor("x", SHAPE)
    g.inputs = ["x"]
    return g


@pytest.mark.parametrize("kind", KINDS)
def test_reduce_c_matches_interpreter(tmp_path, kind):
    """Every kind on every axis set (the empty one too), keepdims either way."""
    g = _graph()
    for axes, keep in AXES:
        out = tuple(1 if i in axes else d for i, d in enumerate(SHAPE) if keep or i not in axes)
        name = f"{kind}_{''.join(map(str, axes))}_{int(keep)}"
        g.add_tensor(name, out)
        g.add_node("Reduce", ["x"], [name], name=name, kind=kind, axes=axes, keepdims=keep)
        g.outputs.append(name)
    _check_c(g, tmp_path)


def test_log_softmax_and_hardmax_c_match_interpreter_on_every_axis(tmp_path):
    g = _graph()
    for op in ("LogSoftmax", "Hardmax"):
        for axis in range(4):
            g.add_tensor(f"{op}{axis}", SHAPE)
            g.add_node(op, ["x"], [f"{op}{axis}"], name=f"{op}{axis}", axis=axis)
            g.outputs.append(f"{op}{axis}")
    _check_c(g, tmp_path)


def test_reduce_checks_its_attributes():
    g = Graph("bad")
    g.add_tensor("x", (2, 3))
    g.inputs = ["x"]
    g.add_tensor("y", (2,))
    g.add_node("Reduce", ["x"], ["y"], name="r", kind="median", axes=(1,), keepdims=False)
    g.outputs = ["y"]
    with pytest.raises(TinycError, match="kind 'median'"):
        g.validate()
    g.nodes[0].attrs.update(kind="sum", axes=(2,))
    with pytest.raises(TinycError, match="axes"):
        g.validate()


# -- ONNX --------------------------------------------------------------------------------------------------------
onnx = pytest.importorskip("onnx")
from onnx import AttributeProto, helper  # noqa: E402
from test_onnx_helper_models import Builder, _summary  # noqa: E402

ONNX_REDUCE = ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
               "ReduceLogSumExp", "ReduceSumSquare", "ReduceMean"]


def _reduce(b, op, x, opset, axes, **attrs):
    """`axes` an attribute before the opset that made it an input (13 for ReduceSum, 18 for the rest)."""
    if opset >= (13 if op == "ReduceSum" else 18):
        return b.node(op, [x] if axes is None else [x, b.const(axes, np.int64)], **attrs)
    y = b.node(op, [x], **attrs)
    if axes is not None:
        b.nodes[-1].attribute.append(helper.make_attribute("axes", list(axes), attr_type=AttributeProto.INTS))
    return y


def _verify(tmp_path, model, name):
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    report = verify(path)
    assert report["ok"], _summary(report)


@pytest.mark.parametrize("op", ONNX_REDUCE)
@pytest.mark.parametrize("opset", [11, 18])
def test_onnx_reductions_against_onnxruntime(tmp_path, op, opset):
    """Positive, negative, absent and (opset 18) noop-empty axes, keepdims 0/1, axes as an attribute (11) or an
    input (18), on a plain value with a leading dimension above 1 and on a channels-last one (a Conv output)."""
    b = Builder()
    x = b.node("Sigmoid", ["x"])                                          # positive: ReduceLogSum is defined
    c = b.node("Sigmoid", [b.node("Conv", ["img", b.weights(4, 2, 3, 3)])])
    outs = [_reduce(b, op, x, opset, [1, -1], keepdims=0),
            _reduce(b, op, c, opset, [1], keepdims=0),                   # channels
            _reduce(b, op, c, opset, [-2, 3], keepdims=1),               # H and W
            _reduce(b, op, c, opset, None, keepdims=0)]                  # every axis
    if opset >= 18:
        outs.append(_reduce(b, op, x, opset, [], keepdims=1, noop_with_empty_axes=1))
    _verify(tmp_path, b.model({"x": [3, 4, 5], "img": [1, 2, 5, 6]}, outs, opset), f"{op}_{opset}")


def test_onnx_reduce_sum_takes_axes_as_an_input_from_opset_13(tmp_path):
    b = Builder()
    outs = [_reduce(b, "ReduceSum", "x", 13, [0, -1], keepdims=1),
            _reduce(b, "ReduceSum", "x", 13, [], keepdims=0, noop_with_empty_axes=1)]
    _verify(tmp_path, b.model({"x": [3, 4, 5]}, outs, 13), "sum13")


@pytest.mark.parametrize("opset", [11, 13])
def test_onnx_softmax_family_on_every_axis(tmp_path, opset):
    """Softmax, LogSoftmax, Hardmax on each axis: one axis from opset 13, the input flattened to 2-D at `axis`
    before; on a plain value and on a channels-last one."""
    b = Builder()
    c = b.node("Conv", ["img", b.weights(3, 2, 3, 3)])
    outs = [b.node(op, [v], axis=axis) for op in ("Softmax", "LogSoftmax", "Hardmax")
            for v, axis in (("x", 0), ("x", 1), (c, -1), (c, 1))]
    _verify(tmp_path, b.model({"x": [2, 3, 4], "img": [1, 2, 5, 6]}, outs, opset), f"softmax_{opset}")


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_onnx_arg_min_max(tmp_path, op):
    """int64 indices along any axis, keepdims 0/1, the first or the last of equal values."""
    b = Builder()
    x = b.node("Relu", ["x"])                                             # ties at 0
    outs = [b.node(op, [x], axis=axis, keepdims=keep, select_last_index=last)
            for axis, keep, last in ((0, 0, 0), (2, 1, 1), (-1, 0, 1), (1, 1, 0))]
    graph = helper.make_graph(b.nodes, "arg", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 4, 5])],
                              [helper.make_tensor_value_info(o, onnx.TensorProto.INT64, None) for o in outs], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    path = str(tmp_path / f"{op}.onnx")
    onnx.save(model, path)
    if not INT64_TENSORS:
        with pytest.raises(TinycError, match="int64"):
            compile_model(path)
        return
    report = verify(path)
    assert report["ok"], report["outputs"]


# -- TFLite ------------------------------------------------------------------------------------------------------
def _tflite(fn, shape, path, int8):
    import tensorflow as tf
    f = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if int8:
        def gen():
            rng = np.random.default_rng(1)
            for _ in range(32):
                yield [rng.standard_normal(shape).astype(np.float32)]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return str(path)


def _tf_cases():
    import tensorflow as tf
    return {
        "sum": lambda x: tf.reduce_sum(x, axis=[1, 2]),
        "max": lambda x: tf.reduce_max(x, axis=2, keepdims=True),
        "min": lambda x: tf.reduce_min(x, axis=[-1, 0]),
        "prod": lambda x: tf.reduce_prod(x * 0.25 + 1.0, axis=1),
        "log_softmax": lambda x: tf.nn.log_softmax(x, axis=-1),
    }


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("case", ["sum", "max", "min", "prod", "log_softmax"])
def test_tflite_float_reductions(tmp_path, case):
    path = _tflite(_tf_cases()[case], (1, 3, 4, 5), tmp_path / f"{case}.tflite", int8=False)
    report = verify(path, samples=5)
    assert report["ok"], report["outputs"]


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("case", ["max", "min", "prod", "log_softmax"])
def test_tflite_int8_reductions_bit_exact(tmp_path, case):
    path = _tflite(_tf_cases()[case], (1, 3, 4, 5), tmp_path / f"{case}.tflite", int8=True)
    report = verify(path, samples=20, seed=7, per_layer=True)
    assert report["mismatched_bytes"] == 0 and report["ok"], report["outputs"]
    assert all(row["ok"] for row in report["layers"]), report["layers"]


@pytest.mark.skipif(not HAS_TF or importlib.util.find_spec("tflite_micro") is None,
                    reason="needs tensorflow and tflite-micro")
def test_tflite_int8_sum_bit_exact_with_tflite_micro(tmp_path):
    """int8 SUM is QuantizedMeanOrSum without the division. TF 2.21's BUILTIN_REF reads the int8 input as uint8
    there (docs/int8-numerics.md 4.20), so TFLite Micro, which computes the documented arithmetic, is the oracle."""
    from tflite_micro.python.tflite_micro import runtime
    path = _tflite(_tf_cases()["sum"], (1, 3, 4, 5), tmp_path / "sum.tflite", int8=True)
    compiled = compile_model(path)
    exe = build_host_runner(compiled, tmp_path / "b", 1, False)
    tflm = runtime.Interpreter.from_bytes(open(path, "rb").read())
    rng = np.random.default_rng(3)
    for s in range(20):
        x = rng.integers(-128, 128, (1, 3, 4, 5)).astype(np.int8)
        if s % 2:
            x //= 8                                  # sums inside the output range, not only saturated
        x.tofile(tmp_path / "in.bin")
        subprocess.run([str(exe), str(tmp_path / "in.bin"), str(tmp_path / "o.bin"), str(tmp_path / "t.bin")],
                       check=True)
        tflm.set_input(x, 0)
        tflm.invoke()
        np.testing.assert_array_equal(np.fromfile(tmp_path / "o.bin", np.int8), tflm.get_output(0).ravel())



# -- Keras -------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("layer,shape", [("GlobalMaxPooling1D", (7, 3)), ("GlobalMaxPooling3D", (3, 4, 2, 5)),
                                         ("GlobalAveragePooling3D", (3, 4, 2, 5))])
@pytest.mark.parametrize("keepdims", [False, True])
def test_keras_global_pooling(tmp_path, layer, shape, keepdims):
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    x = keras.Input(shape)
    model = keras.Model(x, getattr(keras.layers, layer)(keepdims=keepdims)(keras.layers.Dense(4)(x)))
    path = str(tmp_path / "m.keras")
    model.save(path)
    report = verify(path, samples=3)
    assert report["ok"], report["outputs"]
