"""Integer and bool forms of float ops: Pow with an integer base or exponent (ONNX's mixed types, TFLite's int32
POW), Clip on plain integer tensors, ReduceMax / ReduceMin on integers and bool, and PRelu's per-channel slope of
opsets before 7. The C (ASan + UBSan: no signed overflow, no undefined conversion) against the definition on the
edges, and ONNX models against onnxruntime (opset-6 PRelu, which onnxruntime does not run, against NumPy)."""
import importlib.util
import os
import shutil

import numpy as np
import pytest
from onnx import TensorProto, helper

from c_runner import run_c
from tinyc.compiler import compile_graph, compile_model
from tinyc.errors import TinycError
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.ops.binary import INTEGER_TYPES, double_to_integer, integer_power
from tinyc.verify import run_generated, verify

ONNX_TYPES = {"float32": TensorProto.FLOAT, "int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
              "int16": TensorProto.INT16, "int32": TensorProto.INT32, "int64": TensorProto.INT64,
              "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64, "bool": TensorProto.BOOL}


def _edges(dtype, extra=()):
    info = np.iinfo(dtype)
    vals = {int(info.min), int(info.min) + 1, -3, -2, -1, 0, 1, 2, 3, 7, int(info.max) - 1, int(info.max), *extra}
    return np.array(sorted(v for v in vals if info.min <= v <= info.max), dtype)


def _model(tmp_path, name, nodes, inputs, outputs, opset, inits=()):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, ONNX_TYPES[t], s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, ONNX_TYPES[t], None) for n, t in outputs],
                          list(inits))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                                       ir_version=4 if opset < 7 else 8).SerializeToString())
    return str(path)


# -- Pow -------------------------------------------------------------------------------------------------------
# (base, exponent): every type as a base and as an exponent; a graph of at most 12 nodes keeps the scheduler's
# search for the best order short
POW_CASES = [("int8", "int8"), ("uint8", "uint64"), ("int16", "int64"), ("uint16", "uint8"), ("int32", "int32"),
             ("uint32", "int16"), ("int64", "uint32"), ("uint64", "uint16"), ("int32", "float32"),
             ("uint8", "float32"), ("int64", "float32"), ("float32", "int64")]


def test_pow_definition():
    i32, i64 = np.int32, np.int64
    # exact, wrapping modulo 2^bits; negative exponents: 1/x^-y toward zero (0 for x = 0, like x / 0)
    assert integer_power(np.array([3, 2, 2, -3], i32), np.array([19, 31, 32, 3], i32)).tolist() == \
        [1162261467, -(2 ** 31), 0, -27]
    assert integer_power(np.array([3, -3], i64), np.array([39, 39], i64)).tolist() == \
        [4052555153018976267, -4052555153018976267]
    assert integer_power(np.array([1, -1, -1, 2, 0, -2], i32), np.array([-5, -5, -4, -1, -1, -1], i32)).tolist() == \
        [1, -1, 1, 0, 0, 0]
    assert integer_power(np.array([255, 1], np.uint8), np.array([-1, -7], np.int8)).tolist() == [0, 1]
    # double -> integer: toward zero, NaN -> 0, out of range -> the nearest limit
    r = np.array([2.9, -2.9, np.nan, 1e300, -1e300, np.inf, 2.0 ** 31, -(2.0 ** 31)])
    assert double_to_integer(r, "int32").tolist() == [2, -2, 0, 2 ** 31 - 1, -(2 ** 31), 2 ** 31 - 1, 2 ** 31 - 1,
                                                       -(2 ** 31)]
    assert double_to_integer(np.array([-0.5, -3.0, 2.0 ** 64, 2.0 ** 63]), "uint64").tolist() == \
        [0, 0, 2 ** 64 - 1, 2 ** 63]


def _pow_graph():
    """Each base value with each exponent (broadcast); the float32 base with a fused activation; a constant
    exponent."""
    g = Graph("pow")
    inputs, values = [], []
    for k, (bt, et) in enumerate(POW_CASES):
        a = (np.array([-3.5, -2, -1, -0.5, 0, 0.5, 1, 1.5, 3, 1e10], np.float32) if bt == "float32"
             else _edges(bt, (5, 46341)))
        b = (np.array([-2.5, -1, 0, 0.5, 2, 3, 31, 40, 64, 1000], np.float32) if et == "float32"
             else _edges(et, (31, 32, 63, 64, 65)))
        a = a.reshape(-1, 1)
        g.add_tensor(f"a{k}", a.shape, bt)
        inputs.append(f"a{k}")
        values.append(a)
        if k == 1:      # a constant exponent
            exponent = g.add_const(f"e{k}", b, et)
        else:
            exponent = g.add_tensor(f"b{k}", b.shape, et).name
            inputs.append(exponent)
            values.append(b)
        g.add_tensor(f"y{k}", (a.shape[0], b.shape[0]), bt)
        g.add_node("Pow", [f"a{k}", exponent], [f"y{k}"], activation={"fn": "tanh"} if bt == "float32" else None)
    g.inputs, g.outputs = inputs, [f"y{k}" for k in range(len(POW_CASES))]
    g.validate()
    return g, values


def test_pow_c_matches_the_definition_on_the_edges(tmp_path):
    g, values = _pow_graph()
    want = interp_run(g, values)
    for name, got in zip(g.outputs, run_c(g, values, tmp_path, "pow")):
        if got.dtype == np.float32:
            np.testing.assert_allclose(got, want[name], rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want[name], err_msg=name)


def test_pow_refuses_an_output_of_another_type():
    g = Graph("pow")
    g.add_tensor("a", (3,), "int32")
    g.add_tensor("b", (3,), "float32")
    g.add_tensor("y", (3,), "float32")
    g.add_node("Pow", ["a", "b"], ["y"], activation=None)
    g.inputs, g.outputs = ["a", "b"], ["y"]
    with pytest.raises(TinycError, match=r"\(Pow\): int32 \*\* float32 -> float32"):
        g.validate()


def test_onnx_pow_of_mixed_types_against_onnxruntime(tmp_path):
    """onnxruntime's types (base int32, int64, float32; exponent int32, int64, float32), on values where its
    double arithmetic is exact and defined: results within range and below 2^53, no 0 ** negative."""
    pairs = [("int32", "int32"), ("int32", "int64"), ("int32", "float32"), ("int64", "int64"), ("int64", "float32"),
             ("float32", "int32"), ("float32", "int64")]
    nodes, ins, outs, feeds = [], [], [], []
    rng = np.random.default_rng(7)
    for k, (bt, et) in enumerate(pairs):
        nodes.append(helper.make_node("Pow", [f"x{k}", f"e{k}"], [f"y{k}"]))
        ins += [(f"x{k}", bt, [2, 6]), (f"e{k}", et, [6])]
        outs.append((f"y{k}", bt))
        base = rng.integers(-6, 7, (3, 2, 6))
        base = np.where(base == 0, 1, base) if bt != "float32" else base + rng.uniform(-0.5, 0.5, base.shape)
        expo = np.array([[-3, -1, 0, 1, 5, 11]] * 3)
        feeds += [base.astype(bt), (expo + (0.5 * (et == "float32") * (expo > 0) * (bt != "float32"))).astype(et)]
        if et == "float32" and bt != "float32":    # a fractional power of a negative base is NaN: positive bases
            feeds[-2] = np.abs(feeds[-2])
    report = verify(_model(tmp_path, "pow_types", nodes, ins, outs, 15), inputs=feeds)
    assert report["ok"], report["outputs"]


@pytest.mark.skipif(not os.environ.get("TINYC_FULL") or importlib.util.find_spec("tensorflow") is None,
                    reason="slow (TensorFlow's converter): TINYC_FULL=1, with tensorflow")
def test_tflite_int32_pow_against_tflite(tmp_path):
    import tensorflow as tf
    f = tf.function(lambda a, b: tf.math.pow(a, b),
                    input_signature=[tf.TensorSpec((1, 2, 4), tf.int32), tf.TensorSpec((1, 4), tf.int32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    path = tmp_path / "pow_int32.tflite"
    path.write_bytes(conv.convert())
    a = np.array([[[2, 3, -2, 7], [0, 1, -1, 5]]], np.int32)
    b = np.array([[3, 0, 5, 11]], np.int32)
    report = verify(str(path), inputs=[a[None], b[None]])
    assert report["ok"], report["outputs"]


# -- Clip on integers -------------------------------------------------------------------------------------------
def _clip_graph():
    """Each integer type with one pair of bounds: inside, at the type's limits (left out of the C), min > max
    (every output is max); relu; an integer Add before a clip keeps its own node (no float activation fused)."""
    g = Graph("clip")
    values, outs = [], []
    for k, t in enumerate(INTEGER_TYPES):
        info = np.iinfo(t)
        x = _edges(t, (100,))
        g.add_tensor(f"x{k}", x.shape, t)
        values.append(x)
        mid = -2 if info.min < 0 else 2
        lo, hi = [(mid, 7), (int(info.min), int(info.max)), (int(info.min), 3), (mid, int(info.max)), (7, 2)][k % 5]
        g.add_tensor(f"c{k}", x.shape, t)
        g.add_node("Activation", [f"x{k}"], [f"c{k}"], fn="clip", lo=lo, hi=hi)
        outs.append(f"c{k}")
    for k in (0, 3):        # int8, uint16
        g.add_tensor(f"r{k}", values[k].shape, INTEGER_TYPES[k])
        g.add_node("Activation", [f"x{k}"], [f"r{k}"], fn="relu")
        outs.append(f"r{k}")
    g.add_tensor("s", values[4].shape, "int32")
    g.add_node("Add", ["x4", g.add_const("one", np.array([1], np.int32), "int32")], ["s"], activation=None)
    g.add_tensor("sc", values[4].shape, "int32")
    g.add_node("Activation", ["s"], ["sc"], fn="clip", lo=-2, hi=5)
    g.inputs, g.outputs = [f"x{k}" for k in range(len(INTEGER_TYPES))], outs + ["sc"]
    g.validate()
    return g, values


def test_integer_clip_c_matches_the_definition(tmp_path):
    g, values = _clip_graph()
    want = interp_run(g, values)
    assert want["c4"].tolist() == [2] * len(values[4])       # int32, min 7 > max 2
    for name, got in zip(g.outputs, run_c(g, values, tmp_path, "clip")):
        np.testing.assert_array_equal(got, want[name], err_msg=name)


def test_integer_activation_other_than_a_clamp_is_refused():
    g = Graph("act")
    g.add_tensor("x", (3,), "int32")
    g.add_tensor("y", (3,), "int32")
    g.add_node("Activation", ["x"], ["y"], fn="sigmoid")
    g.inputs, g.outputs = ["x"], ["y"]
    with pytest.raises(TinycError, match="'sigmoid' on int32"):
        g.validate()
    g.nodes[0].attrs = {"fn": "clip", "lo": 0.5, "hi": 3}
    with pytest.raises(TinycError, match="integer bounds"):
        g.validate()


# -- ReduceMax / ReduceMin on integers and bool ---------------------------------------------------------------
def _reduce_graph():
    g = Graph("red")
    rng = np.random.default_rng(3)
    values = []
    axes_cases = [((1,), True, (3, 1, 5)), ((0, 2), False, (4,)), ((0, 1, 2), False, ())]
    for k, t in enumerate(INTEGER_TYPES + ("bool",)):
        x = (rng.integers(0, 2, (3, 4, 5)).astype(bool) if t == "bool"
             else np.resize(_edges(t), (3, 4, 5)).astype(t))
        g.add_tensor(f"x{k}", x.shape, t)
        values.append(x)
        for kind in (("max", "min") if t == "bool" else ("max" if k % 2 else "min",)):
            axes, keep, shape = axes_cases[(k + len(kind)) % 3]
            g.add_tensor(f"{kind}{k}", shape, t)
            g.add_node("Reduce", [f"x{k}"], [f"{kind}{k}"], kind=kind, axes=axes, keepdims=keep)
            g.outputs.append(f"{kind}{k}")
    g.inputs = [f"x{k}" for k in range(len(values))]
    g.validate()
    return g, values


def test_integer_and_bool_max_min_c_match_the_definition(tmp_path):
    g, values = _reduce_graph()
    want = interp_run(g, values)
    b = values[-1]      # max is any, min is all
    np.testing.assert_array_equal(want["max8"], b.any(axis=(0, 1, 2)))
    np.testing.assert_array_equal(want["min8"], b.all(axis=(0, 1, 2)))
    for name, got in zip(g.outputs, run_c(g, values, tmp_path, "red")):
        np.testing.assert_array_equal(got, want[name], err_msg=name)


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("cpu, extra", [("cortex-m0plus", []), ("cortex-m4", ["-mfloat-abi=hard",
                                                                              "-mfpu=fpv4-sp-d16"])])
def test_arm_gcc_warning_set(tmp_path, c_compile, cpu, extra):
    """The project's warning set under arm-none-eabi-gcc (int32_t is long there), for all three graphs."""
    for name, build in (("pow", _pow_graph), ("clip", _clip_graph), ("red", _reduce_graph)):
        c_compile(compile_graph(build()[0], name).library, tmp_path / name, "arm-none-eabi-gcc",
                  (f"-mcpu={cpu}", "-mthumb", "-O2", *extra))


def test_integer_sum_is_refused():
    g = Graph("red")
    g.add_tensor("x", (3, 4), "bool")
    g.add_tensor("y", (3,), "bool")
    g.add_node("Reduce", ["x"], ["y"], kind="sum", axes=(1,), keepdims=False)
    g.inputs, g.outputs = ["x"], ["y"]
    with pytest.raises(TinycError, match="Reduce 'sum' of bool"):
        g.validate()


def test_onnx_integer_clip_and_reductions_against_onnxruntime(tmp_path):
    """Clip with both, one or no bounds and min > max, and ReduceMax / ReduceMin of bool and integers."""
    nodes, ins, outs, feeds, inits = [], [], [], [], []
    rng = np.random.default_rng(5)
    clips = {"int8": ("x", "lo", "hi"), "uint8": ("x", "", "hi"), "int32": ("x", "hi", "lo"), "int64": ("x", "lo")}
    for t, names in clips.items():
        info = np.iinfo(t)
        nodes.append(helper.make_node("Clip", [f"{n}_{t}" if n else "" for n in names], [f"clip_{t}"]))
        ins.append((f"x_{t}", t, [3, 7]))
        outs.append((f"clip_{t}", t))
        inits += [helper.make_tensor(f"lo_{t}", ONNX_TYPES[t], [], [-5 if info.min < 0 else 3]),
                  helper.make_tensor(f"hi_{t}", ONNX_TYPES[t], [], [9])]
        feeds.append(np.resize(_edges(t, (4, 8, 9, 10, -5, -6)), (2, 3, 7)).astype(t))
    for t, op in (("bool", "ReduceMax"), ("bool", "ReduceMin"), ("int32", "ReduceMax"), ("uint8", "ReduceMin")):
        nodes.append(helper.make_node(op, [f"r_{t}", "axes"], [f"{op}_{t}"], keepdims=0))
        outs.append((f"{op}_{t}", t))
    for t in ("bool", "int32", "uint8"):
        ins.append((f"r_{t}", t, [3, 4, 5]))
        feeds.append(rng.integers(0, 2, (2, 3, 4, 5)).astype(bool) if t == "bool" else
                     rng.integers(np.iinfo(t).min, int(np.iinfo(t).max) + 1, (2, 3, 4, 5), dtype=t))
    inits.append(helper.make_tensor("axes", TensorProto.INT64, [2], [0, -1]))
    report = verify(_model(tmp_path, "int_clip_reduce", nodes, ins, outs, 20, inits), inputs=feeds)
    assert report["ok"], report["outputs"]


# -- PRelu of opsets before 7: one slope per channel (axis 1) ---------------------------------------------------
def _prelu_model(tmp_path, name, x_shapes, slope, one=None):
    """Opset 6: PRelu of each x (shapes `x_shapes`) by `slope`, and of the first by the one-value slope `one`."""
    nodes = [helper.make_node("PRelu", [f"x{k}", "slope"], [f"y{k}"]) for k in range(len(x_shapes))]
    inits = [helper.make_tensor("slope", TensorProto.FLOAT, list(slope.shape), slope.ravel().tolist())]
    outs = [(f"y{k}", "float32") for k in range(len(x_shapes))]
    if one is not None:
        nodes.append(helper.make_node("PRelu", ["x0", "one"], ["z"]))
        inits.append(helper.make_tensor("one", TensorProto.FLOAT, [1], [one]))
        outs.append(("z", "float32"))
    return _model(tmp_path, name, nodes, [(f"x{k}", "float32", s) for k, s in enumerate(x_shapes)], outs, 6, inits)


def test_opset6_prelu_slope_is_per_channel(tmp_path):
    """x of C = 3 channels, also where the last axis is 3 too (opset 7's broadcasting would apply the slope there)."""
    shapes = [[1, 3], [1, 3, 3], [1, 3, 2, 3], [2, 3, 1, 2, 3]]
    slope = np.array([0.25, -0.5, 2.0], np.float32)
    path = _prelu_model(tmp_path, "prelu6", shapes, slope, one=0.5)
    rng = np.random.default_rng(2)
    xs = [rng.normal(0, 1, [1] + s).astype(np.float32) for s in shapes]
    ys = run_generated(compile_model(path), xs)
    for x, y in zip(xs, ys):
        per_channel = slope.reshape([1, 1, 3] + [1] * (x.ndim - 3))
        np.testing.assert_allclose(y, np.where(x < 0, x * per_channel, x), rtol=1e-6)
    np.testing.assert_allclose(ys[-1], np.where(xs[0] < 0, 0.5 * xs[0], xs[0]), rtol=1e-6)


@pytest.mark.parametrize("x_shape, slope_shape", [([1, 3, 4], [4]), ([1, 3, 4], [3, 1]), ([3], [3])])
def test_opset6_prelu_slope_of_another_shape_is_refused(tmp_path, x_shape, slope_shape):
    path = _prelu_model(tmp_path, "prelu6_bad", [x_shape], np.full(slope_shape, 0.5, np.float32))
    with pytest.raises(TinycError, match=r"opset 6\) has a slope of shape .* one per channel \(axis 1\)"):
        compile_model(path)
