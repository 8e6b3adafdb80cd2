"""ConvTranspose2D (tinyc/ops/conv_transpose.py): the C (ASan + UBSan) against the interpreter on groups, strides,
dilations, crops and extensions of the full output, odd sizes, two images and a fused activation; int8 C against
the interpreter's integer meaning; ONNX ConvTranspose (1-D and 2-D: pads, auto_pad, output_padding, output_shape,
groups, dilations, batch 2) against onnxruntime; Keras Conv1DTranspose / Conv2DTranspose against Keras; TFLite
TRANSPOSE_CONV float32 and int8 (converter-made, bit-exact against TFLite's reference kernel); corrupt weights
refused in one line; the fast int8 kernel (stride phases through the GEMM kernel) byte for byte against
the reference kernel on both code paths."""
import importlib.util
import os

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from c_runner import run_c
from test_fast_gemm import ACTIVATIONS, SETTINGS, _bias, _q, _weights, assert_twins_agree
from tinyc.codegen.int8_fast import transpose_phases
from tinyc.errors import TinycError
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.ops.conv_transpose import out_size
from tinyc.verify import verify

RNG = np.random.default_rng(18)
HAS_TF = importlib.util.find_spec("tensorflow") is not None

# (out channels, groups, kernel, strides, dilations, pads, bias, activation)
CONVS = [(4, 1, (3, 3), (2, 2), (1, 1), (1, 1, 0, 0), True, None),
         (6, 3, (2, 3), (1, 3), (2, 1), (0, 2, 1, 0), False, {"fn": "relu"}),
         (3, 1, (3, 2), (3, 2), (1, 2), (-1, 0, 2, -2), True, {"fn": "clip", "lo": -0.5, "hi": 0.5}),
         (2, 1, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), True, None)]


def _graph(shape, convs):
    g = Graph("conv_transpose")
    g.add_tensor("x", shape)
    g.inputs = ["x"]
    for k, (o, groups, kernel, strides, dilations, pads, bias, act) in enumerate(convs):
        w = g.add_const(f"w{k}", RNG.standard_normal((o, *kernel, shape[-1] // groups)).astype(np.float32))
        ins = ["x", w] + ([g.add_const(f"b{k}", RNG.standard_normal(o).astype(np.float32))] if bias else [])
        sizes = [out_size(shape[1 + i], kernel[i], strides[i], dilations[i], pads[i], pads[2 + i]) for i in range(2)]
        g.add_tensor(f"y{k}", (shape[0], *sizes, o))
        g.add_node("ConvTranspose2D", ins, [f"y{k}"], name=f"y{k}", strides=strides, dilations=dilations, pads=pads,
                   groups=groups, activation=act)
        g.outputs.append(f"y{k}")
    g.validate()
    return g


def test_conv_transpose_c_matches_interpreter(tmp_path):
    shape = (2, 4, 5, 3)
    g = _graph(shape, CONVS)
    x = RNG.standard_normal(shape).astype(np.float32)
    ref = interp_run(g, [x])
    for name, ours in zip(g.outputs, run_c(g, [x], tmp_path)):
        np.testing.assert_allclose(ours, ref[name], rtol=1e-5, atol=1e-5 * (1 + np.abs(ref[name]).max()),
                                   err_msg=name)


def test_conv_transpose_scatter_meaning():
    """The definition against a direct scatter: every input pixel and tap adds into the full output."""
    x = RNG.standard_normal((1, 3, 4, 2))
    w = RNG.standard_normal((3, 2, 3, 2))
    sh, sw, dh, dw, top, left = 2, 3, 2, 1, 1, 2
    full = np.zeros((1, (3 - 1) * sh + (2 - 1) * dh + 1, (4 - 1) * sw + (3 - 1) * dw + 1, 3))
    for iy in range(3):
        for ix in range(4):
            for ky in range(2):
                for kx in range(3):
                    full[0, iy * sh + ky * dh, ix * sw + kx * dw] += w[:, ky, kx, :] @ x[0, iy, ix]
    from tinyc.ops.conv_transpose import evaluate
    a = dict(strides=(sh, sw), dilations=(dh, dw), pads=(top, left, 0, -1), groups=1)
    y = evaluate(a, [x, w])
    np.testing.assert_allclose(y[:, :, :-1], full[:, top:, left:])
    assert y.shape == (1, full.shape[1] - top, full.shape[2] - left + 1, 3)
    np.testing.assert_array_equal(y[:, :, -1], 0)


@pytest.mark.parametrize("w_shape,b_shape", [((4, 2, 2, 2), (4,)), ((4, 2, 2, 3), (3,))])
def test_conv_transpose_refuses_weights_that_do_not_fit(w_shape, b_shape):
    g = Graph("bad")
    g.add_tensor("x", (1, 4, 4, 3))
    g.inputs = ["x"]
    w = g.add_const("w", np.zeros(w_shape, np.float32))
    b = g.add_const("b", np.zeros(b_shape, np.float32))
    g.add_tensor("y", (1, 5, 5, 4))
    g.add_node("ConvTranspose2D", ["x", w, b], ["y"], name="c", strides=(1, 1), dilations=(1, 1), pads=(0,) * 4,
               groups=1, activation=None)
    g.outputs = ["y"]
    with pytest.raises(TinycError, match="ConvTranspose2D 'c'"):
        g.validate()


# (input shape, weights shape, attributes): ONNX ConvTranspose corners
ONNX_CASES = [
    ((2, 3, 4, 5), (3, 2, 3, 3), dict(strides=[2, 2], pads=[1, 0, 0, 1])),
    ((1, 4, 4, 5), (4, 3, 3, 2), dict(strides=[2, 1], group=2, dilations=[1, 2])),
    ((1, 2, 4, 5), (2, 3, 3, 3), dict(strides=[2, 3], output_padding=[1, 2])),
    ((1, 2, 4, 5), (2, 3, 2, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER", output_shape=[8, 9])),
    ((1, 2, 4, 5), (2, 3, 2, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 2, 4, 5), (2, 3, 3, 3), dict(strides=[3, 2], output_shape=[10, 10])),    # NOTSET: odd crop before
    ((1, 2, 4, 5), (2, 3, 3, 3), dict(strides=[3, 2], output_shape=[13, 12])),    # longer than the full output
    ((2, 3, 7), (3, 2, 3), dict(strides=[2], pads=[1, 0], output_padding=[1])),
]


@pytest.mark.parametrize("case", range(len(ONNX_CASES)))
def test_onnx_conv_transpose_matches_onnxruntime(tmp_path, case):
    xs, ws, attrs = ONNX_CASES[case]
    groups = attrs.get("group", 1)
    w = numpy_helper.from_array(RNG.standard_normal(ws).astype(np.float32), "w")
    b = numpy_helper.from_array(RNG.standard_normal(ws[1] * groups).astype(np.float32), "b")
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], **attrs), helper.make_node("Relu", ["t"], ["y"])]
    g = helper.make_graph(nodes, "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xs))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    path = tmp_path / "ct.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
                     .SerializeToString())
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]


def test_onnx_conv_transpose_3d_refused_in_one_line(tmp_path):
    w = numpy_helper.from_array(np.zeros((2, 2, 2, 2, 2), np.float32), "w")
    g = helper.make_graph([helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up3d")], "ct",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    path = tmp_path / "ct3.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
                     .SerializeToString())
    from tinyc.compiler import compile_model
    with pytest.raises(TinycError, match="ConvTranspose 'up3d'.*1-D and 2-D"):
        compile_model(str(path))


# -- Keras and TFLite ----------------------------------------------------------------------------------------------
def _keras_model(kind):
    """Conv2DTranspose: same stride 2 relu; valid strides (2, 3) with output_padding; valid stride 1 tanh; same
    with output_padding; Conv1DTranspose same stride 2 and valid with output_padding. (TensorFlow's CPU kernel
    has no dilated transposed convolution, so Keras cannot run one: ONNX's tests cover dilations.)"""
    from tinyc.keras_runtime import import_keras
    from model_zoo import randomize
    keras = import_keras()
    keras.utils.set_random_seed(3)
    L = keras.layers
    if kind == "2d":
        x = keras.Input((5, 6, 3))
        h = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(x)
        a = L.Conv2DTranspose(3, (2, 3), strides=(2, 3), padding="valid", output_padding=(1, 2))(h)
        b = L.Conv2DTranspose(2, 3, padding="valid", activation="tanh")(h)
        c = L.Conv2DTranspose(2, (3, 4), strides=(3, 2), padding="same", output_padding=(2, 1), use_bias=False)(h)
        return randomize(keras.Model(x, [a, b, c]))
    x = keras.Input((7, 3))
    h = L.Conv1DTranspose(4, 3, strides=2, padding="same", activation="relu")(x)
    return randomize(keras.Model(x, L.Conv1DTranspose(2, 4, strides=3, padding="valid", output_padding=1)(h)))


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("kind", ["2d", "1d"])
def test_keras_conv_transpose_matches_keras(tmp_path, kind):
    path = tmp_path / f"ct_{kind}.keras"
    _keras_model(kind).save(path)
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]


def autoencoder():
    """A small conv autoencoder: Conv2D stride 2 down twice, Conv2DTranspose stride 2 up twice (same padding,
    relu), a 3x3 Conv2D head; named layers (the converter orders operators by name)."""
    from tinyc.keras_runtime import import_keras
    from model_zoo import randomize
    keras = import_keras()
    keras.utils.set_random_seed(5)
    L = keras.layers
    x = keras.Input((16, 16, 1), name="ae_in")
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="ae_down1")(x)
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="ae_down2")(h)
    h = L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu", name="ae_up1")(h)
    h = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu", name="ae_up2")(h)
    return randomize(keras.Model(x, L.Conv2D(1, 3, padding="same", name="ae_out")(h), name="autoencoder"))


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
def test_tflite_float_transpose_conv_matches_tflite(tmp_path):
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(_keras_model("2d"))
    path = tmp_path / "ct.tflite"
    path.write_bytes(conv.convert())
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("kind", ["autoencoder"] + (["2d"] if os.environ.get("TINYC_FULL") else []))
def test_tflite_int8_transpose_conv_bit_exact(tmp_path, kind):
    """Converter-made int8 TRANSPOSE_CONV (per-channel weights, bias, fused relu where the converter fuses it;
    with TINYC_FULL also VALID, output padding, no bias) against TFLite's reference kernels: zero differing bytes
    on every layer, fast kernels included."""
    from int8_zoo import to_int8_tflite
    model = autoencoder() if kind == "autoencoder" else _keras_model("2d")
    path = to_int8_tflite(model, tmp_path / f"{kind}.tflite")
    report = verify(path, samples=20 if os.environ.get("TINYC_FULL") else 6, seed=7, per_layer=True)
    assert report["mismatched_bytes"] == 0 and report["ok"], report["outputs"]
    assert all(row["ok"] for row in report["layers"]), report["layers"]
    from tinyc.compiler import compile_model
    plan = compile_model(path).plan       # as the int8 zoo's models: within 2% of the arena's lower bound
    assert plan.lower_bound <= plan.arena_bytes <= 1.02 * plan.lower_bound, plan.variants


# -- the fast kernel (stride phases through the GEMM kernel) against its reference twin ---------------------------
@st.composite
def transpose_case(draw):
    kh, kw = draw(st.sampled_from([(3, 3), (2, 2), (1, 1), (4, 3), (5, 2), (3, 1)]))
    return dict(kh=kh, kw=kw, sh=draw(st.sampled_from([1, 2, 2, 3])), sw=draw(st.sampled_from([1, 2, 3])),
                dh=draw(st.sampled_from([1, 1, 2])), dw=draw(st.sampled_from([1, 2])),
                ic=draw(st.sampled_from([1, 3, 4, 8, 13])), oc=draw(st.sampled_from([1, 2, 3, 5, 8, 17])),
                h=draw(st.integers(1, 5)), w=draw(st.integers(1, 5)),
                pads=draw(st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 1, 0), (2, -1, -2, 1)])),
                seed=draw(st.integers(0, 10 ** 6)), in_zp=draw(st.sampled_from([-128, -7, 0, 127])),
                out_zp=draw(st.sampled_from([-128, 0, 9])), out_scale=draw(st.sampled_from([0.05, 0.5, 0.0004])),
                act=draw(st.sampled_from(ACTIVATIONS)), extreme=draw(st.booleans()), bias=draw(st.booleans()))


def _sizes(c) -> list:
    axes = [(c["h"], c["kh"], c["sh"], c["dh"]), (c["w"], c["kw"], c["sw"], c["dw"])]
    return [out_size(n, k, s, d, c["pads"][i], c["pads"][2 + i]) for i, (n, k, s, d) in enumerate(axes)]


def transpose_graph(c) -> Graph:
    rng = np.random.default_rng(c["seed"])
    g = Graph("ct")
    sizes = _sizes(c)
    g.add_tensor("x", (1, c["h"], c["w"], c["ic"]), "int8", **_q(0.03, c["in_zp"]))
    g.add_tensor("y", (1, *sizes, c["oc"]), "int8", **_q(c["out_scale"], c["out_zp"]))
    ins = ["x", _weights(g, "w", (c["oc"], c["kh"], c["kw"], c["ic"]), rng, c["extreme"])]
    if c["bias"]:
        ins.append(_bias(g, "b", c["oc"], rng))
    g.add_node("ConvTranspose2D", ins, ["y"], strides=(c["sh"], c["sw"]), dilations=(c["dh"], c["dw"]),
               pads=c["pads"], groups=1, activation=c["act"], name="ct")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@settings(**dict(SETTINGS, max_examples=60 if os.environ.get("TINYC_FULL") else 1))
@given(transpose_case())
# the autoencoder's layer (3x3 stride 2 SAME: phases of 2x2, 2x1, 1x2 and 1x1 taps); a stride above the kernel
# (phases no tap reaches: the bias alone)
@example(dict(kh=3, kw=3, sh=2, sw=2, dh=1, dw=1, ic=8, oc=5, h=4, w=4, pads=(0, 0, 1, 1), seed=1, in_zp=-7,
              out_zp=0, out_scale=0.05, act={"fn": "relu"}, extreme=False, bias=True))
@example(dict(kh=1, kw=1, sh=3, sw=2, dh=1, dw=1, ic=4, oc=3, h=3, w=2, pads=(0, 0, -1, -2), seed=2, in_zp=5,
              out_zp=9, out_scale=0.5, act=None, extreme=True, bias=True))
@example(dict(kh=1, kw=1, sh=1, sw=2, dh=1, dw=1, ic=1, oc=1, h=1, w=1, pads=(2, -1, -2, 1), seed=0, in_zp=-128,
              out_zp=-128, out_scale=0.05, act=None, extreme=False, bias=False))     # no tap reaches any output
def test_fast_conv_transpose_equals_reference(c):
    assume(min(_sizes(c)) >= 1)
    g = transpose_graph(c)
    g.validate()
    kernels = assert_twins_agree(g, c["seed"], "int8_fast/conv_transpose")
    if transpose_phases(g, g.nodes[0]) is not None:
        assert kernels[0].startswith("int8_fast/conv_transpose"), kernels


def test_tinyc_quantizer_makes_bit_exact_int8_conv_transpose(tmp_path):
    """`--quantize int8` of an ONNX (PyTorch-style) decoder: per-channel symmetric weights, an int32 bias, TFLite's
    TRANSPOSE_CONV written for the check, zero differing bytes on every layer (fast kernels included)."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 6, 3, 3)).astype(np.float32) * 0.3, "w1"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((6, 2, 4, 4)).astype(np.float32) * 0.3, "w2")]
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["t"], strides=[2, 2], pads=[1, 1, 1, 1],
                              output_padding=[1, 1]),
             helper.make_node("Relu", ["t"], ["u"]),
             helper.make_node("ConvTranspose", ["u", "w2"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "dec", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "dec.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
                     .SerializeToString())
    calib = [rng.standard_normal((64, 1, 4, 3, 3)).astype(np.float32)]
    report = verify(str(path), samples=4, quantize="int8", calib=calib, per_layer=True)
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]
    assert all(row["ok"] for row in report["layers"]), report["layers"]


@pytest.mark.parametrize("dynamo", [False] + ([True] if os.environ.get("TINYC_FULL") else []))
def test_pytorch_conv_transpose_against_onnxruntime(tmp_path, dynamo):
    """nn.ConvTranspose2d (k4 s2 p1; k3 s2 p1 output_padding 1, groups 2; dilation 2) and nn.ConvTranspose1d
    as PyTorch's exporters write them (the dynamo one under TINYC_FULL: it is slow)."""
    torch = pytest.importorskip("torch")

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up1 = torch.nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1)
            self.up2 = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
            self.up3 = torch.nn.ConvTranspose2d(4, 2, 3, dilation=2, bias=False)
            self.seq = torch.nn.ConvTranspose1d(3, 5, 5, stride=3, padding=2, output_padding=1)

        def forward(self, x, s):
            return self.up3(torch.relu(self.up2(torch.relu(self.up1(x))))), self.seq(s)

    torch.manual_seed(0)
    path = str(tmp_path / "decoder.onnx")
    args = (torch.randn(1, 4, 3, 5), torch.randn(1, 3, 7))
    if dynamo:
        torch.onnx.export(Decoder().eval(), args, path, input_names=["x", "s"], dynamo=True, verbose=False)
    else:
        torch.onnx.export(Decoder().eval(), args, path, input_names=["x", "s"], opset_version=17, dynamo=False)
    report = verify(path, samples=2)
    assert report["ok"], report["outputs"]
