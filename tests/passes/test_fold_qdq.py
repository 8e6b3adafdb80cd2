"""fold_qdq: Dequantize -> float op -> Quantize groups become int8 ops; what cannot be int8 stays float.

The numpy interpreter has no Quantize / Dequantize, so `run_quantized` below gives graphs their ideal meaning:
every op computes on real values, and every int8 tensor holds its real value rounded onto its grid (as
onnxruntime runs a QDQ model). Before and after the pass must agree to within one LSB of each output."""
import numpy as np
import pytest

from tinyc import interp
from tinyc.ir import Graph, Quant
from tinyc.passes.fold_qdq import fold_qdq
from pass_checks import snapshot


# -- the ideal meaning of a quantized graph -------------------------------------------------------------------
def _scale_zp(q):
    return float(np.asarray(q.scale).reshape(-1)[0]), int(np.asarray(q.zero_point).reshape(-1)[0])


def _on_grid(real, q):
    """Real values rounded onto the int8 grid of `q` (round half to even, saturated), as real values."""
    s, zp = _scale_zp(q)
    return (np.clip(np.rint(np.asarray(real, np.float64) / s) + zp, -128, 127) - zp) * s


def _real_const(t):
    if t.quant is None:
        return t.data.astype(np.float64)
    shape = [1] * t.data.ndim
    if np.asarray(t.quant.scale).size > 1:
        shape[t.quant.axis] = -1
    return (t.data - np.asarray(t.quant.zero_point).reshape(shape)) * np.asarray(t.quant.scale).reshape(shape)


def run_quantized(g, x):
    real = g.copy()
    for t in real.tensors.values():
        if t.is_const:
            t.data = _real_const(t)
        t.dtype, t.quant = "float64", None
    env = {g.inputs[0]: np.asarray(x, np.float64)}
    for node in g.nodes:
        if node.op in ("Quantize", "Dequantize"):
            y = env[node.inputs[0]] if node.inputs[0] in env else real.tensors[node.inputs[0]].data
        else:
            y = interp.run_node(real, node, env)[0]
        out = g.tensors[node.outputs[0]]
        env[node.outputs[0]] = _on_grid(y, out.quant) if out.dtype == "int8" else y
    return [env[o] for o in g.outputs]


def assert_same_quantized_function(before, after):
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal(before.tensors[before.inputs[0]].shape)
        for name, a, b in zip(before.outputs, run_quantized(before, x), run_quantized(after, x)):
            lsb = producer_scale(before, name)
            assert np.max(np.abs(a - b)) <= lsb * 1.0001, (name, np.max(np.abs(a - b)), lsb)


def producer_scale(g, name):
    p = g.producer(name)
    return _scale_zp(g.tensors[p.inputs[0]].quant)[0] if p is not None and p.op == "Dequantize" else 1e-5


def folded(g):
    before = snapshot(g)
    out = fold_qdq(g)
    assert snapshot(g) == before, "the pass mutated its argument"
    out.validate()
    assert out.inputs == g.inputs and out.outputs == g.outputs
    assert_same_quantized_function(g, out)
    return out


# -- building QDQ graphs ------------------------------------------------------------------------------------------
def q(scale, zp=0):
    return Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))


class QDQ:
    """A float graph with Quantize / Dequantize written around it, as the ONNX frontend imports QDQ models."""

    def __init__(self, shape=(1, 6, 6, 3)):
        self.g, self.rng, self.k = Graph(), np.random.default_rng(1), 0
        self.g.add_tensor("x", shape)
        self.g.inputs = ["x"]

    def name(self, base):
        self.k += 1
        return f"{base}{self.k}"

    def op(self, op, inputs, shape, **attrs):
        out = self.name(op.lower())
        self.g.add_tensor(out, shape)
        self.g.add_node(op, inputs, [out], name=out, **attrs)
        return out

    def quantize(self, x, quant):
        out = self.name("q")
        self.g.add_tensor(out, self.g.tensors[x].shape, "int8", quant=quant)
        self.g.add_node("Quantize", [x], [out], name=out)
        return out

    def dequantize(self, x_q):
        return self.op("Dequantize", [x_q], self.g.tensors[x_q].shape)

    def qdq(self, x, quant):
        return self.dequantize(self.quantize(x, quant))

    def weights(self, shape, per_channel=True, zp=0, axis=0):
        values = self.rng.integers(-127, 128, shape).astype(np.int8)
        n = shape[axis] if per_channel else 1
        scale = np.full(n, 0.02, np.float32) * (1 + np.arange(n, dtype=np.float32) / 10)
        if per_channel:
            quant = Quant(scale, np.full(n, zp, np.int64), axis)
        else:
            quant = Quant(scale.reshape(()), np.asarray(zp, np.int64))
        w = self.name("w")
        self.g.add_tensor(w, shape, "int8", values, quant=quant)
        return self.dequantize(w)

    def bias(self, in_scale, w_scales, scale_factor=1.0):
        n = len(w_scales)
        scale = (np.float32(in_scale) * np.asarray(w_scales, np.float32) * np.float32(scale_factor)).astype(np.float32)
        b = self.name("b")
        self.g.add_tensor(b, (n,), "int32", self.rng.integers(-2000, 2000, n), quant=Quant(
            scale, np.zeros(n, np.int64), 0))
        return self.dequantize(b)

    def output(self, y):
        self.g.outputs = [y]
        return self.g


IN_Q, MID_Q, OUT_Q = q(0.03, 5), q(0.05, -128), q(0.04, 3)
W_SCALES = np.float32(0.02) * (1 + np.arange(4, dtype=np.float32) / 10)


def conv_graph(act="relu", bias_factor=1.0, weights=None):
    b = QDQ()
    x = b.qdq("x", IN_Q)
    w = weights(b) if weights else b.weights((4, 3, 3, 3))
    bias = b.bias(0.03, W_SCALES, bias_factor)
    y = b.op("Conv2D", [x, w, bias], (1, 6, 6, 4), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1,
             activation=None)
    if act:
        y = b.op("Activation", [y], (1, 6, 6, 4), fn=act)
    return b.output(b.qdq(y, MID_Q))


def ops(g):
    return [n.op for n in g.nodes]


# -- tests -----------------------------------------------------------------------------------------------------------
def test_conv_relu_quantize_becomes_one_int8_conv_with_the_relu_as_clamp():
    out = folded(conv_graph())
    assert ops(out) == ["Quantize", "Conv2D", "Dequantize"]
    conv = out.nodes[1]
    assert conv.attrs["activation"] == {"fn": "relu"}
    x, w, bias = (out.tensors[i] for i in conv.inputs)
    assert (x.dtype, w.dtype, bias.dtype) == ("int8", "int8", "int32") and w.is_const and bias.is_const
    assert out.tensors[conv.outputs[0]].dtype == "int8"
    np.testing.assert_allclose(bias.quant.scale, np.float32(0.03) * W_SCALES, rtol=1e-7)


def test_clamps_compose_with_the_ops_own_activation():
    g = conv_graph(act=None)
    conv = next(n for n in g.nodes if n.op == "Conv2D")
    conv.attrs["activation"] = {"fn": "relu"}
    y = conv.outputs[0]
    g.add_tensor("relu6", g.tensors[y].shape)
    g.add_node("Activation", [y], ["relu6"], fn="clip", lo=0.0, hi=6.0)
    quantize = g.consumers(y)[0]
    quantize.inputs = ["relu6"]
    g.nodes.insert(g.nodes.index(quantize), g.nodes.pop())
    out = folded(g)
    assert ops(out) == ["Quantize", "Conv2D", "Dequantize"]
    assert out.nodes[1].attrs["activation"] == {"fn": "clip", "lo": 0.0, "hi": 6.0}


def test_bias_of_another_scale_is_requantized_to_in_scale_times_w_scale():
    g = conv_graph(act=None, bias_factor=2.0)
    stored = next(t for t in g.tensors.values() if t.dtype == "int32").data
    out = folded(g)
    bias = out.tensors[out.nodes[1].inputs[2]]
    np.testing.assert_array_equal(bias.data, stored * 2)


def test_asymmetric_weights_stay_float_with_float_weights():
    out = folded(conv_graph(weights=lambda b: b.weights((4, 3, 3, 3), zp=3)))
    assert ops(out) == ["Quantize", "Dequantize", "Conv2D", "Activation", "Quantize", "Dequantize"]
    conv = out.nodes[2]
    assert all(out.tensors[i].dtype == "float32" for i in conv.inputs)
    assert out.tensors[conv.inputs[1]].is_const and out.tensors[conv.inputs[2]].is_const


def test_weights_quantized_along_another_axis_stay_float():
    out = folded(conv_graph(weights=lambda b: b.weights((4, 3, 3, 3), axis=3)))
    assert "Conv2D" in ops(out) and out.tensors[out.nodes[ops(out).index("Conv2D")].inputs[1]].dtype == "float32"


def test_non_clamp_activation_keeps_the_group_float():
    out = folded(conv_graph(act="sigmoid"))
    assert ops(out) == ["Quantize", "Dequantize", "Conv2D", "Activation", "Quantize", "Dequantize"]


def test_dequantize_sinks_below_a_transpose_which_becomes_int8():
    b = QDQ((1, 3, 6, 6))
    x = b.qdq("x", IN_Q)
    t = b.op("Transpose", [x], (1, 6, 6, 3), perm=(0, 2, 3, 1))
    y = b.op("MaxPool2D", [t], (1, 3, 3, 3), kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0))
    out = folded(b.output(b.qdq(y, IN_Q)))
    assert ops(out) == ["Quantize", "Transpose", "MaxPool2D", "Dequantize"]
    assert all(out.tensors[n.outputs[0]].dtype == "int8" for n in out.nodes[:3])


def test_quantize_rises_above_a_reshape():
    b = QDQ()
    x = b.qdq("x", IN_Q)
    y = b.op("Reshape", [b.op("Add", [x, x], (1, 6, 6, 3), activation=None)], (1, 108))
    out = folded(b.output(b.qdq(y, MID_Q)))
    assert ops(out) == ["Quantize", "Add", "Reshape", "Dequantize"]
    assert out.tensors[out.nodes[2].inputs[0]].dtype == "int8"


def test_pool_needs_equal_parameters_else_stays_float():
    b = QDQ()
    y = b.op("MaxPool2D", [b.qdq("x", IN_Q)], (1, 3, 3, 3), kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0))
    out = folded(b.output(b.qdq(y, OUT_Q)))
    assert "MaxPool2D" in ops(out) and ops(out).count("Quantize") == 2


@pytest.mark.parametrize("out_q, op", [(IN_Q, "AvgPool2D"), (OUT_Q, "Conv2D")])
def test_global_average_is_an_int8_pool_or_a_depthwise_conv_of_one_over_area(out_q, op):
    b = QDQ()
    y = b.op("Mean", [b.qdq("x", IN_Q)], (1, 1, 1, 3), axes=(1, 2), keepdims=True)
    out = folded(b.output(b.qdq(y, out_q)))
    assert ops(out) == ["Quantize", op, "Dequantize"]
    if op == "Conv2D":
        conv = out.nodes[1]
        w = out.tensors[conv.inputs[1]]
        assert conv.attrs["groups"] == 3 and w.shape == (3, 6, 6, 1) and np.all(w.data == 127)
        assert np.float32(w.quant.scale) == np.float32(1 / (127 * 36))


def test_mean_without_keepdims_becomes_int8_then_a_reshape():
    b = QDQ()
    y = b.op("Mean", [b.qdq("x", IN_Q)], (1, 3), axes=(1, 2), keepdims=False)
    out = folded(b.output(b.qdq(y, IN_Q)))
    assert ops(out) == ["Quantize", "AvgPool2D", "Reshape", "Dequantize"]
    assert out.tensors[out.nodes[2].inputs[0]].dtype == "int8"


def test_concat_requantizes_inputs_of_other_parameters():
    b = QDQ()
    x = b.qdq("x", IN_Q)
    r = b.qdq(b.op("Activation", [x], (1, 6, 6, 3), fn="relu"), MID_Q)
    y = b.op("Concat", [x, r], (1, 6, 6, 6), axis=3)
    out = folded(b.output(b.qdq(y, IN_Q)))
    # relu to MID_Q (a requantizing Add with the clamp, see below), then back to IN_Q for the Concat
    assert ops(out) == ["Quantize", "Add", "Add", "Concat", "Dequantize"]
    concat = out.nodes[3]
    assert concat.inputs[0] == out.nodes[0].outputs[0]
    requant = out.producer(concat.inputs[1])
    assert requant.op == "Add" and requant.attrs["activation"] is None
    zero, src = out.tensors[requant.inputs[1]], out.tensors[requant.inputs[0]]
    assert zero.data.ravel().tolist() == [0] and zero.is_const
    assert np.float32(zero.quant.scale) == np.float32(src.quant.scale)   # equal scales: an exact first rescale


def test_standalone_relu_with_new_parameters_is_a_requantizing_add_with_the_clamp():
    b = QDQ()
    y = b.op("Activation", [b.qdq("x", IN_Q)], (1, 6, 6, 3), fn="relu")
    out = folded(b.output(b.qdq(y, MID_Q)))
    assert ops(out) == ["Quantize", "Add", "Dequantize"] and out.nodes[1].attrs["activation"] == {"fn": "relu"}


def test_standalone_relu_with_the_same_parameters_is_an_int8_activation():
    b = QDQ()
    y = b.op("Activation", [b.qdq("x", MID_Q)], (1, 6, 6, 3), fn="relu")
    out = folded(b.output(b.qdq(y, MID_Q)))
    assert ops(out) == ["Quantize", "Activation", "Dequantize"] and out.nodes[1].attrs == {"fn": "relu"}


def test_requantize_pairs_cancel_or_rescale():
    b = QDQ()
    x = b.quantize("x", IN_Q)
    same = b.quantize(b.dequantize(x), IN_Q)
    other = b.quantize(b.dequantize(same), OUT_Q)
    out = folded(b.output(b.dequantize(other)))
    assert ops(out) == ["Quantize", "Add", "Dequantize"] and out.nodes[1].inputs[0] == x


def test_dense_with_per_tensor_weights_and_no_bias():
    b = QDQ((1, 8))
    y = b.op("Dense", [b.qdq("x", IN_Q), b.weights((5, 8), per_channel=False)], (1, 5), activation=None)
    out = folded(b.output(b.qdq(y, OUT_Q)))
    assert ops(out) == ["Quantize", "Dense", "Dequantize"] and len(out.nodes[1].inputs) == 2


def test_graph_without_quantization_is_unchanged():
    g = Graph()
    g.add_tensor("x", (1, 4))
    g.add_tensor("y", (1, 4))
    g.add_node("Activation", ["x"], ["y"], fn="relu")
    g.inputs, g.outputs = ["x"], ["y"]
    assert fold_qdq(g).summary() == g.summary()
