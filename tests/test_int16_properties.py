"""Property tests of the 16x8 kernels (int16 activations, int8 weights, int64 biases) against TFLite's reference
kernels, over parameters the converter never produces: scales from 1e-6 to 1e2, per-channel multipliers whose
shifts take both signs, int64 biases up to 2^40, every stride/kernel/padding/dilation combination, depthwise
multipliers, transposed convolutions. Each example is an IR graph written as .tflite (`tinyc.quant.tflite_writer`),
compiled by tinyc from that file and compared by `tinyc verify` (fast and reference kernels, uniform int16
inputs over the whole range): zero differing values. Model: tests/test_int8_properties.py."""
import importlib.util
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs tensorflow", allow_module_level=True)

from tinyc.compiler import codegen_options  # noqa: E402
from tinyc.frontends.geometry import conv_geometry  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402
from tinyc.quant.tflite_writer import write_tflite  # noqa: E402
from tinyc.verify import verify  # noqa: E402

EXAMPLES = 40 if os.environ.get("TINYC_FULL") else 2
KERNEL_SETS = ["fast", "reference"] if os.environ.get("TINYC_FULL") else ["fast"]   # fast falls back to reference
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ACTS = [None, {"fn": "relu"}, {"fn": "clip", "lo": 0.0, "hi": 6.0}, {"fn": "clip", "lo": -1.0, "hi": 1.0}]

scales = st.floats(1e-6, 1e2).map(lambda v: float(np.float32(v)))


def _quant(scale):
    return Quant(np.asarray(scale, np.float32), np.asarray(0, np.int64))


def _check(tmp_path, g, kernels, samples=4):
    path = tmp_path / f"{g.name}.tflite"
    write_tflite(g, str(path))
    report = verify(str(path), samples=samples, seed=1, options=codegen_options(kernels=kernels))
    assert report["mismatched_bytes"] == 0, report["outputs"]
    assert report["ok"], report      # (with fast kernels: their DSP path, emulated, gives the same bytes)


def _weights(g, rng, name, shape, in_s, out_s, channels, per_channel=True):
    """int8 weights whose per-channel in_s * w_s / out_s spread over 2^-16 .. 2^2 (shifts of both signs)."""
    n = channels if per_channel else 1
    w_scales = np.clip((out_s / in_s) * np.exp2(rng.uniform(-16, 2, n)), 1e-9, 1e4).astype(np.float32)
    q = Quant(w_scales, np.zeros(n, np.int64), 0) if per_channel else _quant(w_scales[0])
    g.add_tensor(name, shape, "int8", rng.integers(-127, 128, shape).astype(np.int8), quant=q)
    return w_scales


def _bias(g, rng, name, channels, in_s, w_scales, per_channel=True):
    big = int(rng.choice([1 << 20, 1 << 32, 1 << 40]))
    bias_scale = (np.float32(in_s) * w_scales).astype(np.float32)
    q = Quant(bias_scale, np.zeros(bias_scale.size, np.int64), 0) if per_channel else _quant(bias_scale[0])
    g.add_tensor(name, (channels,), "int64", rng.integers(-big, big, channels).astype(np.int64), quant=q)


def _conv_graph(draw, rng, kind: str) -> Graph:
    k = (draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 3, 4])))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if kind != "transpose" else (1, 1)
    c = draw(st.integers(1, 5))
    mult = draw(st.integers(1, 3))
    o = c * mult if kind == "depthwise" else draw(st.integers(1, 6))
    eff = [(k[i] - 1) * d[i] + 1 for i in range(2)]
    h, w = draw(st.integers(eff[0], 10)), draw(st.integers(eff[1], 10))
    mode = draw(st.sampled_from(["same", "valid"]))
    in_s, out_s = draw(scales), draw(scales)
    g = Graph(f"{kind}16")
    g.add_tensor("x", (1, h, w, c), "int16", quant=_quant(in_s))
    wshape = (o, k[0], k[1], 1 if kind == "depthwise" else c)
    w_scales = _weights(g, rng, "w", wshape, in_s, out_s, o)
    inputs = ["x", "w"]
    if draw(st.booleans()) or kind != "transpose":
        _bias(g, rng, "b", o, in_s, w_scales)
        inputs.append("b")
    act = draw(st.sampled_from(ACTS))
    if kind == "transpose":
        (_, t, _), (_, left, _) = (conv_geometry(n * s[i], k[i], s[i], 1, mode) for i, n in enumerate((h, w)))
        oh, ow = h * s[0], w * s[1]
        ends = [(n - 1) * s[i] + k[i] - b - full for i, (n, b, full) in enumerate(((h, t, oh), (w, left, ow)))]
        g.add_tensor("y", (1, oh, ow, o), "int16", quant=_quant(out_s))
        g.add_node("ConvTranspose2D", inputs, ["y"], strides=s, dilations=(1, 1), pads=(t, left, *ends), groups=1,
                   activation=act)
    else:
        (oh, t, b), (ow, left, r) = (conv_geometry(n, k[i], s[i], d[i], mode) for i, n in enumerate((h, w)))
        g.add_tensor("y", (1, oh, ow, o), "int16", quant=_quant(out_s))
        g.add_node("Conv2D", inputs, ["y"], strides=s, dilations=d, pads=(t, left, b, r),
                   groups=c if kind == "depthwise" else 1, activation=act)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("kind", ["conv", "depthwise", "transpose"])
@settings(**SETTINGS)
@given(data=st.data())
def test_conv_16x8(tmp_path, data, kind, kernels):
    g = _conv_graph(data.draw, np.random.default_rng(data.draw(st.integers(0, 2 ** 16))), kind)
    _check(tmp_path, g, kernels)


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@settings(**SETTINGS)
@given(data=st.data())
def test_fully_connected_16x8(tmp_path, data, kernels):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    k, o, rows = draw(st.integers(1, 80)), draw(st.integers(1, 12)), draw(st.integers(1, 3))
    per_channel = draw(st.booleans())
    in_s, out_s = draw(scales), draw(scales)
    g = Graph("fc16")
    g.add_tensor("x", (1, rows, k), "int16", quant=_quant(in_s))
    w_scales = _weights(g, rng, "w", (o, k), in_s, out_s, o, per_channel)
    inputs = ["x", "w"]
    if draw(st.booleans()):
        _bias(g, rng, "b", o, in_s, w_scales, per_channel)
        inputs.append("b")
    g.add_tensor("y", (1, rows, o), "int16", quant=_quant(out_s))
    g.add_node("Dense", inputs, ["y"], activation=draw(st.sampled_from(ACTS)))
    g.inputs, g.outputs = ["x"], ["y"]
    _check(tmp_path, g, kernels)


@pytest.mark.parametrize("op", ["Dense", "Conv2D"])
@settings(**SETTINGS)
@given(data=st.data())
def test_long_reductions_16x8(tmp_path, data, op):
    """FC and 1x1 conv with 600-1100 inputs of weights near +-127: int32 runs cannot hold a whole row, so the
    fast kernel sums several runs (int16_fast.segments) into int64; a 1x1 conv of several pixels pairs rows."""
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    k, o, rows = draw(st.integers(600, 1100)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    in_s, out_s = 1e-4, float(np.float32(draw(st.floats(0.05, 50.0))))
    g = Graph("long16")
    shape = (1, rows, k) if op == "Dense" else (1, rows, 1, k)
    g.add_tensor("x", shape, "int16", quant=_quant(in_s))
    wshape = (o, k) if op == "Dense" else (o, 1, 1, k)
    w = rng.choice([-127, -126, 125, 127], wshape).astype(np.int8)
    w_scales = np.full(o, 0.01, np.float32)
    g.add_tensor("w", wshape, "int8", w, quant=Quant(w_scales, np.zeros(o, np.int64), 0))
    _bias(g, rng, "b", o, in_s, w_scales)
    g.add_tensor("y", shape[:-1] + (o,), "int16", quant=_quant(out_s))
    if op == "Dense":
        g.add_node("Dense", ["x", "w", "b"], ["y"], activation=None)
    else:
        g.add_node("Conv2D", ["x", "w", "b"], ["y"], strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1)
    g.inputs, g.outputs = ["x"], ["y"]
    from tinyc.codegen.int16_fast import segments
    assert len(segments(w.reshape(o, -1)[:, :k - k % 4])) >= 2
    _check(tmp_path, g, "fast")


@pytest.mark.parametrize("op", ["Dense", "Conv2D"])
def test_activation_bound_beyond_int32_is_refused(tmp_path, op):
    """RELU6 fused at an output scale of 1e-9 is 6e9 output steps: TFLite's clamp bound leaves int32 (its cast is
    undefined), so tinyc refuses the layer in one line instead of clamping somewhere."""
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    rng = np.random.default_rng(0)
    g = Graph(f"{op.lower()}_bound")
    shape, wshape = ((1, 4), (3, 4)) if op == "Dense" else ((1, 2, 2, 4), (3, 1, 1, 4))
    g.add_tensor("x", shape, "int16", quant=_quant(0.01))
    _weights(g, rng, "w", wshape, 0.01, 1e-9, 3)
    g.add_tensor("y", shape[:-1] + (3,), "int16", quant=_quant(1e-9))
    attrs = {} if op == "Dense" else dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1)
    g.add_node(op, ["x", "w"], ["y"], activation=ACTS[2], **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    path = tmp_path / f"{g.name}.tflite"
    write_tflite(g, str(path))
    with pytest.raises(TinycError, match="beyond int32"):
        compile_model(str(path))
