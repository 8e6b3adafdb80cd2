"""tflite_writer: IR graphs written as .tflite run in TFLite's reference interpreter (BUILTIN_REF) with the shapes,
dtypes and quantization the IR declares and compute what the IR means: float graphs equal `tinyc.interp` within
1e-5 and read back through the TFLite frontend as the same graph; int8 graphs (including parameters the TFLite
converter never makes) stay within a few output steps of a fake-quantized float run. Unwritable graphs raise
TinycError."""
import importlib.util
import warnings

import numpy as np
import pytest

from tinyc import interp
from tinyc.errors import TinycError
from tinyc.frontends.geometry import conv_geometry
from tinyc.frontends.tflite_import import load_tflite
from tinyc.ir import Graph, Quant
from tinyc.quant.tflite_writer import graph_to_tflite, write_tflite

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("the TFLite writer tests need tensorflow", allow_module_level=True)

RELU6 = {"fn": "clip", "lo": 0.0, "hi": 6.0}


def _tf():
    from tinyc.keras_runtime import import_keras
    import_keras()
    import tensorflow as tf
    return tf


def run_tflite(data: bytes, inputs: list):
    """Outputs, output details and the interpreter of the reference kernels on `inputs` (graph input order)."""
    tf = _tf()
    with warnings.catch_warnings():   # "tf.lite.Interpreter is deprecated": it is still TF's reference
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=data,
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for detail, x in zip(it.get_input_details(), inputs):
        it.set_tensor(detail["index"], x)
    it.invoke()
    details = it.get_output_details()
    return [it.get_tensor(d["index"]) for d in details], details, it


def same_pads(h, w, k, s, d=(1, 1)):
    (_, t, b), (_, left, r) = (conv_geometry(n, k[i], s[i], d[i], "same") for i, n in enumerate((h, w)))
    return t, left, b, r


# -- int8 graphs ---------------------------------------------------------------------------------------------
def _q(scale, zp=0, axis=None):
    if axis is None:
        return Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))
    scale = np.asarray(scale, np.float32)
    return Quant(scale, np.zeros(scale.shape, np.int64), axis)


class Int8:
    """Builds an int8 test graph: activations with (scale, zero point), symmetric per-channel weights, biases at
    input_scale * weight_scale."""

    def __init__(self, name, seed=0):
        self.g = Graph(name)
        self.rng = np.random.default_rng(seed)

    def act(self, name, shape, scale, zp, dtype="int8"):
        self.g.add_tensor(name, shape, dtype, quant=None if dtype == "float32" else _q(scale, zp))
        return name

    def input(self, name, shape, scale=0.05, zp=0, dtype="int8"):
        self.g.inputs.append(self.act(name, shape, scale, zp, dtype))
        return name

    def weights(self, name, shape, scales, axis=0):
        data = self.rng.integers(-127, 128, shape).astype(np.int8)
        q = _q(scales, axis=axis) if np.ndim(scales) else _q(scales)
        self.g.add_tensor(name, shape, "int8", data, quant=q)
        return name

    def bias(self, name, x, w):
        scale = float(self.g.tensors[x].quant.scale) * np.asarray(self.g.tensors[w].quant.scale, np.float64)
        size = self.g.tensors[w].shape[0]
        data = self.rng.integers(-3000, 3000, size).astype(np.int32)
        q = _q(scale, axis=0) if scale.ndim else _q(scale)
        self.g.add_tensor(name, (size,), "int32", data, quant=q)
        return name

    def node(self, op, inputs, out, shape, scale, zp, dtype="int8", **attrs):
        self.act(out, shape, scale, zp, dtype)
        self.g.add_node(op, inputs, [out], **attrs)
        return out

    def done(self, *outputs):
        self.g.outputs = list(outputs)
        self.g.validate()
        return self.g


def conv_int8():
    b = Int8("conv")
    x = b.input("x", (1, 9, 9, 3), 0.02, -128)
    w = b.weights("w", (8, 3, 3, 3), np.linspace(0.002, 0.02, 8))
    y = b.node("Conv2D", [x, w, b.bias("b", x, w)], "y", (1, 5, 5, 8), 0.03, -128, strides=(2, 2),
               dilations=(1, 1), pads=same_pads(9, 9, (3, 3), (2, 2)), groups=1, activation=RELU6)
    return b.done(y)


def conv_extreme_int8():
    """Zero point 127, weight scales 1e-6..1e2: per-channel multipliers from ~1e-7 to ~1e2 (shifts of both
    signs), saturating channels next to ones that round to the zero point."""
    b = Int8("conv_extreme", seed=1)
    x = b.input("x", (1, 6, 6, 2), 0.004, 127)
    w = b.weights("w", (9, 1, 1, 2), np.logspace(-6, 2, 9))
    y = b.node("Conv2D", [x, w, b.bias("b", x, w)], "y", (1, 6, 6, 9), 2.5, -100, strides=(1, 1),
               dilations=(1, 1), pads=(0, 0, 0, 0), groups=1, activation=None)
    return b.done(y)


def depthwise_int8():
    b = Int8("depthwise")
    x = b.input("x", (1, 7, 7, 3), 0.05, 5)
    w = b.weights("w", (6, 3, 3, 1), np.linspace(0.003, 0.01, 6))
    y = b.node("Conv2D", [x, w, b.bias("b", x, w)], "y", (1, 3, 3, 6), 0.1, 3, strides=(1, 1),
               dilations=(2, 2), pads=(0, 0, 0, 0), groups=3, activation={"fn": "relu"})
    return b.done(y)


def dense_per_tensor_int8():
    b = Int8("dense_pt")
    x = b.input("x", (1, 20), 0.1, -3)
    w = b.weights("w", (10, 20), 0.004)
    return b.done(b.node("Dense", [x, w, b.bias("b", x, w)], "y", (1, 10), 0.2, 7, activation=None))


def dense_per_channel_int8():
    b = Int8("dense_pc")
    x = b.input("x", (1, 4, 16), 0.1, 20)
    w = b.weights("w", (6, 16), np.logspace(-3, -1, 6))
    return b.done(b.node("Dense", [x, w, b.bias("b", x, w)], "y", (1, 4, 6), 0.5, -10, activation=None))


def binary_int8():
    b = Int8("binary")
    x = b.input("x", (1, 4, 4, 8), 0.05, 10)
    s = b.input("s", (1, 1, 1, 8), 0.02, -5)
    y = b.node("Add", [x, s], "sum", (1, 4, 4, 8), 0.06, -20, activation={"fn": "relu"})
    z = b.node("Mul", [y, s], "prod", (1, 4, 4, 8), 0.01, 0, activation=None)
    return b.done(b.node("Sub", [z, x], "diff", (1, 4, 4, 8), 0.08, 3, activation=RELU6))


def pools_int8():
    b = Int8("pools")
    x = b.input("x", (1, 7, 7, 4), 0.05, -30)
    avg = b.node("AvgPool2D", [x], "avg", (1, 4, 4, 4), 0.05, -30, kernel=(3, 3), strides=(2, 2),
                 pads=same_pads(7, 7, (3, 3), (2, 2)), count_include_pad=False)
    mx = b.node("MaxPool2D", [x], "max", (1, 3, 3, 4), 0.05, -30, kernel=(2, 2), strides=(2, 2),
                pads=(0, 0, 0, 0))
    return b.done(avg, mx)


def mean_softmax_int8():
    b = Int8("mean_softmax")
    x = b.input("x", (1, 5, 5, 10), 0.04, 2)
    m = b.node("Mean", [x], "m", (1, 1, 1, 10), 0.03, -1, axes=(1, 2), keepdims=True)
    r = b.node("Reshape", [m], "r", (1, 10), 0.03, -1)
    return b.done(b.node("Softmax", [r], "p", (1, 10), 1 / 256, -128, axis=1))


def shapes_int8():
    b = Int8("shapes")
    x = b.input("x", (1, 3, 3, 4), 0.08, 1)      # int8 CONCATENATION: one scale and zero point for all
    y = b.input("y", (1, 3, 3, 2), 0.08, 1)
    c = b.node("Concat", [x, y], "cat", (1, 3, 3, 6), 0.08, 1, axis=-1)
    p = b.node("Pad", [c], "pad", (1, 5, 4, 6), 0.08, 1, pads=((0, 0), (1, 1), (0, 1), (0, 0)), value=1)
    a = b.node("Activation", [p], "relu6", (1, 5, 4, 6), 0.08, 1, **RELU6)
    return b.done(b.node("Reshape", [a], "flat", (1, 120), 0.08, 1))


def edges_int8():
    """float in -> QUANTIZE -> int8 conv -> QUANTIZE (requantize) -> DEQUANTIZE -> float out."""
    b = Int8("edges")
    x = b.input("x", (1, 6, 6, 3), dtype="float32")
    q = b.node("Quantize", [x], "xq", (1, 6, 6, 3), 0.02, 4)
    w = b.weights("w", (4, 3, 3, 3), np.linspace(0.005, 0.01, 4))
    c = b.node("Conv2D", [q, w, b.bias("b", q, w)], "c", (1, 6, 6, 4), 0.05, -2, strides=(1, 1),
               dilations=(1, 1), pads=(1, 1, 1, 1), groups=1, activation=None)
    r = b.node("Quantize", [c], "rq", (1, 6, 6, 4), 0.11, 50)
    return b.done(b.node("Dequantize", [r], "y", (1, 6, 6, 4), None, None, dtype="float32"))


INT8_GRAPHS = {f.__name__[:-5]: f for f in (conv_int8, conv_extreme_int8, depthwise_int8, dense_per_tensor_int8,
                                            dense_per_channel_int8, binary_int8, pools_int8, mean_softmax_int8,
                                            shapes_int8, edges_int8)}


def _real(q: np.ndarray, quant: Quant) -> np.ndarray:
    scale, zp = np.asarray(quant.scale, np.float64), np.asarray(quant.zero_point, np.float64)
    if quant.axis is not None:
        shape = [1] * q.ndim
        shape[quant.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (q.astype(np.float64) - zp) * scale


def fake_quant_run(g: Graph, inputs: list) -> dict:
    """What the int8 graph means: every op in float on dequantized values, every int8 result rounded to its
    grid and saturated (as the int8 kernels store it)."""
    f = g.copy()
    for t in f.tensors.values():
        if t.dtype != "float32":
            if t.data is not None:
                t.data = _real(t.data, t.quant)
            t.dtype, t.quant = "float64", None
    for n in f.nodes:
        n.op = "Identity" if n.op in ("Quantize", "Dequantize") else n.op
        if n.op == "Pad":
            n.attrs["value"] = 0.0
    env = {n: (_real(x, g.tensors[n].quant) if g.tensors[n].quant else x) for n, x in zip(g.inputs, inputs)}
    for node in f.nodes:
        y = interp.run_node(f, node, env)[0]
        t = g.tensors[node.outputs[0]]
        if t.dtype == "int8":
            q = np.clip(np.round(y / float(t.quant.scale)) + int(t.quant.zero_point), -128, 127)
            y = _real(q, t.quant)
        env[node.outputs[0]] = y
    return env


def _random_inputs(g: Graph, rng) -> list:
    out = []
    for name in g.inputs:
        t = g.tensors[name]
        if t.dtype == "int8":
            out.append(rng.integers(-128, 128, t.shape).astype(np.int8))
        else:
            out.append(rng.normal(0, 1, t.shape).astype(np.float32))
    return out


@pytest.mark.parametrize("name", list(INT8_GRAPHS))
def test_int8_graph_runs_in_reference_interpreter(name):
    g = INT8_GRAPHS[name]()
    inputs = _random_inputs(g, np.random.default_rng(1))
    outs, details, _ = run_tflite(graph_to_tflite(g), inputs)
    want = fake_quant_run(g, inputs)
    for name_, got, detail in zip(g.outputs, outs, details):
        t = g.tensors[name_]
        assert detail["name"] == name_
        assert tuple(detail["shape"]) == t.shape and got.dtype == np.dtype(t.dtype)
        if t.quant is None:
            assert detail["quantization"] == (0.0, 0)
            step = 0.11          # the last int8 step before DEQUANTIZE
            np.testing.assert_allclose(got, want[name_], atol=2 * step)
            continue
        scale, zp = detail["quantization"]
        assert scale == pytest.approx(float(t.quant.scale), rel=1e-7) and zp == int(t.quant.zero_point)
        # one rounding per int8 op along the way: a couple of output steps at most
        np.testing.assert_allclose(_real(got, t.quant), want[name_], atol=2.01 * scale)


def test_weights_keep_per_channel_quantization_and_depthwise_layout():
    g = depthwise_int8()
    _, _, it = run_tflite(graph_to_tflite(g), _random_inputs(g, np.random.default_rng(0)))
    tensors = {d["name"]: d for d in it.get_tensor_details()}
    w, b = tensors["w"], tensors["b"]
    assert tuple(w["shape"]) == (1, 3, 3, 6) and w["quantization_parameters"]["quantized_dimension"] == 3
    np.testing.assert_array_equal(w["quantization_parameters"]["scales"], g.tensors["w"].quant.scale)
    np.testing.assert_array_equal(it.get_tensor(w["index"]), g.tensors["w"].data.transpose(3, 1, 2, 0))
    assert b["dtype"] == np.int32 and b["quantization_parameters"]["quantized_dimension"] == 0
    np.testing.assert_array_equal(it.get_tensor(b["index"]), g.tensors["b"].data)


def test_file_layout():
    """Buffer 0 is empty, every tensor has its own buffer, codes > 127 store 127 as the deprecated code."""
    from tensorflow.lite.python import schema_py_generated as S
    g = Graph("clamp01")
    g.add_tensor("x", (1, 8))
    g.add_tensor("y", (1, 8))
    g.add_node("Activation", ["x"], ["y"], fn="clip", lo=0.0, hi=1.0)
    g.inputs, g.outputs = ["x"], ["y"]
    data = graph_to_tflite(g)
    assert data[4:8] == b"TFL3"
    model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(data, 0))
    assert model.version == 3 and model.description
    assert not model.buffers[0].data and [t.buffer for t in model.subgraphs[0].tensors] == [1, 2]
    code = model.operatorCodes[0]
    assert (code.builtinCode, code.deprecatedBuiltinCode) == (S.BuiltinOperator.RELU_0_TO_1, 127)
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(1, 8)
    np.testing.assert_array_equal(run_tflite(data, [x])[0][0], np.clip(x, 0, 1))


# -- float graphs --------------------------------------------------------------------------------------------
class Float:
    def __init__(self, name, seed=0):
        self.g = Graph(name)
        self.rng = np.random.default_rng(seed)

    def input(self, name, shape):
        self.g.add_tensor(name, shape)
        self.g.inputs.append(name)
        return name

    def const(self, name, shape):
        self.g.add_tensor(name, shape, data=self.rng.normal(0, 0.5, shape))
        return name

    def node(self, op, inputs, out, shape, **attrs):
        self.g.add_tensor(out, shape)
        self.g.add_node(op, inputs, [out], **attrs)
        return out

    def done(self, *outputs):
        self.g.outputs = list(outputs)
        self.g.validate()
        return self.g


def cnn_float():
    b = Float("cnn")
    x = b.input("x", (1, 8, 8, 3))
    p = b.node("Pad", [x], "pad", (1, 10, 9, 3), pads=((0, 0), (1, 1), (0, 1), (0, 0)), value=0.0)
    c = b.node("Conv2D", [p, b.const("w1", (6, 3, 3, 3)), b.const("b1", (6,))], "conv", (1, 8, 7, 6),
               strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1, activation={"fn": "relu"})
    d = b.node("Conv2D", [c, b.const("w2", (12, 3, 3, 1)), b.const("b2", (12,))], "dw", (1, 4, 4, 12),
               strides=(2, 2), dilations=(1, 1), pads=same_pads(8, 7, (3, 3), (2, 2)), groups=6,
               activation=RELU6)
    mx = b.node("MaxPool2D", [d], "max", (1, 2, 2, 12), kernel=(3, 3), strides=(2, 2),
                pads=same_pads(4, 4, (3, 3), (2, 2)))
    avg = b.node("AvgPool2D", [d], "avg", (1, 2, 2, 12), kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0),
                 count_include_pad=False)
    cat = b.node("Concat", [mx, avg], "cat", (1, 2, 2, 24), axis=3)
    s = b.node("Add", [cat, b.const("shift", (24,))], "shifted", (1, 2, 2, 24), activation=None)
    m = b.node("Mean", [s], "mean", (1, 24), axes=(1, 2), keepdims=False)
    y = b.node("Dense", [m, b.const("fc", (5, 24)), b.const("fc_b", (5,))], "logits", (1, 5), activation=None)
    return b.done(b.node("Softmax", [y], "probs", (1, 5), axis=1))


def mlp_float():
    b = Float("mlp", seed=1)
    x = b.input("x", (1, 3, 8))
    h = b.node("Dense", [x, b.const("w", (6, 8)), b.const("b", (6,))], "h", (1, 3, 6), activation=RELU6)
    lr = b.node("Activation", [h], "leaky", (1, 3, 6), fn="leaky_relu", alpha=0.25)
    hs = b.node("Activation", [lr], "hswish", (1, 3, 6), fn="hard_swish")
    sg = b.node("Activation", [hs], "sig", (1, 3, 6), fn="sigmoid")
    th = b.node("Activation", [h], "tanh", (1, 3, 6), fn="tanh")
    mul = b.node("Mul", [sg, th], "mul", (1, 3, 6), activation=None)
    sub = b.node("Sub", [mul, b.const("c", (1, 1, 6))], "sub", (1, 3, 6), activation={"fn": "relu"})
    r6 = b.node("Activation", [sub], "r6", (1, 3, 6), **RELU6)
    pad = b.node("Pad", [r6], "pad", (1, 4, 8), pads=((0, 0), (1, 0), (0, 2)), value=1.5)   # PADV2
    return b.done(b.node("Reshape", [pad], "flat", (1, 32)), th)


FLOAT_GRAPHS = {"cnn": cnn_float, "mlp": mlp_float}


@pytest.mark.parametrize("name", list(FLOAT_GRAPHS))
def test_float_graph_matches_interp_and_reads_back(name, tmp_path):
    g = FLOAT_GRAPHS[name]()
    path = tmp_path / f"{name}.tflite"
    write_tflite(g, str(path))
    inputs = _random_inputs(g, np.random.default_rng(2))
    outs, details, _ = run_tflite(path.read_bytes(), inputs)
    want = interp.run(g, inputs)
    for out, got, detail in zip(g.outputs, outs, details):
        assert detail["name"] == out and tuple(detail["shape"]) == g.tensors[out].shape
        np.testing.assert_allclose(got, want[out], rtol=1e-5, atol=1e-5)

    back = load_tflite(str(path))
    assert (back.inputs, back.outputs) == (g.inputs, g.outputs)
    assert len(back.nodes) == len(g.nodes)
    for ours, theirs in zip(g.nodes, back.nodes):
        assert (theirs.op, theirs.outputs, theirs.attrs) == (ours.op, ours.outputs, ours.attrs)
        assert back.tensors[theirs.outputs[0]].shape == g.tensors[ours.outputs[0]].shape
        consts = [(g.const(a), back.const(b)) for a, b in zip(ours.inputs, theirs.inputs) if g.const(a) is not None]
        for a, b in consts:
            np.testing.assert_array_equal(a.astype(np.float32), b)


def test_ops_the_frontend_does_not_read():
    """TRANSPOSE and DIV: checked against tinyc.interp only."""
    b = Float("transpose_div")
    x = b.input("x", (1, 2, 3, 4))
    t = b.node("Transpose", [x], "t", (1, 4, 2, 3), perm=(0, 3, 1, 2))
    y = b.done(b.node("Div", [t, b.const("d", (3,))], "y", (1, 4, 2, 3), activation=None))
    inputs = _random_inputs(y, np.random.default_rng(3))
    got = run_tflite(graph_to_tflite(y), inputs)[0][0]
    np.testing.assert_allclose(got, interp.run(y, inputs)["y"], rtol=1e-5, atol=1e-5)


# -- refusals ------------------------------------------------------------------------------------------------
def _conv_graph(pads=(1, 1, 1, 1), groups=1, channels=4, activation=None):
    b = Float("bad")
    x = b.input("x", (1, 6, 6, channels))
    w = b.const("w", (4, 3, 3, channels // groups))
    return b.done(b.node("Conv2D", [x, w], "y", (1, 6, 6, 4), strides=(1, 1), dilations=(1, 1), pads=pads,
                         groups=groups, activation=activation))


@pytest.mark.parametrize("graph, message", [
    (lambda: _conv_graph(activation={"fn": "sigmoid"}), "fused activation"),
])
def test_unwritable_graphs_raise(graph, message):
    with pytest.raises(TinycError, match=message):
        graph_to_tflite(graph())


def test_grouped_conv_is_a_conv_2d():
    """CONV_2D takes its groups from the filter's input depth (C / groups), as the converter writes Keras' grouped
    Conv1D / Conv2D."""
    g = _conv_graph(groups=2)
    inputs = _random_inputs(g, np.random.default_rng(5))
    got, _, interpreter = run_tflite(graph_to_tflite(g), inputs)
    assert {d["op_name"] for d in interpreter._get_ops_details()} == {"CONV_2D"}
    np.testing.assert_allclose(got[0], interp.run(g, inputs)["y"], rtol=1e-5, atol=1e-5)


def test_conv_with_asymmetric_pads_gets_an_explicit_pad():
    g = _conv_graph(pads=(1, 2, 1, 0))
    inputs = _random_inputs(g, np.random.default_rng(4))
    got, _, interpreter = run_tflite(graph_to_tflite(g), inputs)
    assert "PAD" in {d["op_name"] for d in interpreter._get_ops_details()}
    np.testing.assert_allclose(got[0], interp.run(g, inputs)["y"], rtol=1e-5, atol=1e-5)


def test_unwritable_pool_and_pad_raise():
    b = Float("max")
    x = b.input("x", (1, 4, 4, 2))
    y = b.node("MaxPool2D", [x], "y", (1, 4, 4, 2), kernel=(2, 2), strides=(1, 1), pads=(1, 1, 0, 0))
    with pytest.raises(TinycError, match="neither SAME nor VALID"):
        graph_to_tflite(b.done(y))
    b = Float("avg")
    x = b.input("x", (1, 4, 4, 2))
    y = b.node("AvgPool2D", [x], "y", (1, 4, 4, 2), kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1),
               count_include_pad=True)
    with pytest.raises(TinycError, match="never counts padded cells"):
        graph_to_tflite(b.done(y))
    b = Int8("pad")
    x = b.input("x", (1, 4), 0.1, 3)
    y = b.node("Pad", [x], "y", (1, 6), 0.1, 3, pads=((0, 0), (1, 1)), value=0)
    with pytest.raises(TinycError, match="zero point 3"):
        graph_to_tflite(b.done(y))


def test_unsupported_op_raises():
    b = Float("scale_shift")
    x = b.input("x", (1, 4))
    y = b.node("ScaleShift", [x, b.const("s", (4,)), b.const("t", (4,))], "y", (1, 4))
    with pytest.raises(TinycError, match="ScaleShift cannot be written"):
        graph_to_tflite(b.done(y))
