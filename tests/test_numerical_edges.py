"""int8 numerical edge cases against TFLite's reference kernels (the IR written as .tflite by tinyc's writer, as
`verify --quantize` does): saturation at the int8 limits, all-zero and constant inputs, extreme zero points,
very small and very large scales, softmax over equal logits; and the cases TFLite cannot run, refused in one
line."""
from __future__ import annotations

import numpy as np
import pytest

from tinyc.compiler import compile_graph
from tinyc.errors import TinycError
from tinyc.ir import Graph, Quant


def _q(scale, zp):
    return Quant(np.float32(scale), np.int64(zp))


def softmax_graph(in_scale: float, in_zp: int = 0, n: int = 10) -> Graph:
    g = Graph("softmax")
    g.add_tensor("x", (1, n), "int8", quant=_q(in_scale, in_zp))
    g.add_tensor("y", (1, n), "int8", quant=_q(1 / 256, -128))
    g.add_node("Softmax", ["x"], ["y"], axis=1, beta=1.0, name="softmax")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def test_softmax_whose_logits_span_nothing_is_refused():
    """Input scale x beta below 2^-26: TFLite's interpreter aborts the process on such a softmax (seen with a
    MobileNetV2 calibrated on inputs that faded to zero); tinyc says so instead of compiling it."""
    with pytest.raises(TinycError, match="2\\^-26"):
        compile_graph(softmax_graph(7.8e-9), "m")
    compile_graph(softmax_graph(2e-8), "m")


def test_softmax_whose_input_scale_is_16_or_more_is_refused():
    """Input scale x beta >= 16: TFLite's QuantizeMultiplier gives a shift of 31 (its int `1 << 31` overflows);
    tinyc's multiplier saturates at 30, so the result would differ: refused in one line."""
    with pytest.raises(TinycError, match="16 or more"):
        compile_graph(softmax_graph(16.0), "m")
    compile_graph(softmax_graph(15.9), "m")


# -- int8 layers at the edges, against TFLite's reference kernels ---------------------------------------------
def _weights(g, name, shape, w_scale, rng):
    o = shape[0]
    w = rng.integers(-127, 128, shape).astype(np.int8)
    w[0] = 127                                    # a channel at the int8 limit
    scales = (w_scale * rng.uniform(0.5, 2.0, o)).astype(np.float32)
    return g.add_tensor(name, shape, "int8", w, quant=Quant(scales, np.zeros(o, np.int64), 0)).name, scales


def _bias(g, name, in_scale, w_scales, rng):
    o = len(w_scales)
    b = rng.integers(-3000, 3000, o).astype(np.int32)
    return g.add_tensor(name, (o,), "int32", b, quant=Quant((in_scale * w_scales).astype(np.float32),
                                                             np.zeros(o, np.int64), 0)).name


def conv_case(in_scale, in_zp, w_scale, out_scale, out_zp, act=None, depthwise=False):
    """A 3x3 conv 5x5x4 -> 5x5x6, or a stride-2 depthwise conv 6x6x8 -> 3x3x8."""
    rng = np.random.default_rng(2 if depthwise else 1)
    g = Graph("dw" if depthwise else "conv")
    x, y, w = ((1, 6, 6, 8), (1, 3, 3, 8), (8, 3, 3, 1)) if depthwise else ((1, 5, 5, 4), (1, 5, 5, 6), (6, 3, 3, 4))
    g.add_tensor("x", x, "int8", quant=_q(in_scale, in_zp))
    g.add_tensor("y", y, "int8", quant=_q(out_scale, out_zp))
    w, ws = _weights(g, "w", w, w_scale, rng)
    g.add_node("Conv2D", ["x", w, _bias(g, "b", in_scale, ws, rng)], ["y"], strides=(2, 2) if depthwise else (1, 1),
               dilations=(1, 1), pads=(0, 0, 1, 1) if depthwise else (1, 1, 1, 1), groups=8 if depthwise else 1,
               activation=act, name="conv")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def dense_case(in_scale, in_zp, w_scale, out_scale, out_zp):
    rng = np.random.default_rng(3)
    g = Graph("dense")
    g.add_tensor("x", (1, 40), "int8", quant=_q(in_scale, in_zp))
    g.add_tensor("y", (1, 10), "int8", quant=_q(out_scale, out_zp))
    w, ws = _weights(g, "w", (10, 40), w_scale, rng)
    g.add_node("Dense", ["x", w, _bias(g, "b", in_scale, ws, rng)], ["y"], activation=None, name="fc")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def add_case(a_scale, a_zp, b_scale, b_zp, out_scale, out_zp):
    g = Graph("add")
    g.add_tensor("a", (1, 4, 4, 8), "int8", quant=_q(a_scale, a_zp))
    g.add_tensor("b", (1, 4, 4, 8), "int8", quant=_q(b_scale, b_zp))
    g.add_tensor("y", (1, 4, 4, 8), "int8", quant=_q(out_scale, out_zp))
    g.add_node("Add", ["a", "b"], ["y"], activation={"fn": "relu"}, name="add")
    g.inputs, g.outputs = ["a", "b"], ["y"]
    return g


def pool_case(op, scale, zp):
    g = Graph("pool")
    g.add_tensor("x", (1, 6, 6, 5), "int8", quant=_q(scale, zp))
    g.add_tensor("y", (1, 3, 3, 5), "int8", quant=_q(scale, zp))
    g.add_node(op, ["x"], ["y"], kernel=(3, 3), strides=(2, 2), pads=(0, 0, 1, 1), count_include_pad=False,
               name="pool")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def unary_case(fn, in_scale, in_zp):
    out = {"sigmoid": (1 / 256, -128), "tanh": (1 / 128, 0)}[fn]
    g = Graph(fn)
    g.add_tensor("x", (1, 64), "int8", quant=_q(in_scale, in_zp))
    g.add_tensor("y", (1, 64), "int8", quant=_q(*out))
    g.add_node("Activation", ["x"], ["y"], fn=fn, name=fn)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


RELU6 = {"fn": "clip", "lo": 0.0, "hi": 6.0}
CASES = {
    "conv/zero-points-at-the-limits": conv_case(0.05, -128, 0.01, 0.1, 127),
    "conv/zero-points-at-the-other-limits": conv_case(0.05, 127, 0.01, 0.1, -128, {"fn": "relu"}),
    "conv/tiny-scales": conv_case(1e-6, 3, 1e-5, 1e-9, -5),
    "conv/tiny-multiplier": conv_case(1e-4, 0, 1e-4, 2e1, 0),            # 5e-10: a shift near the limit
    "conv/huge-scales-saturate": conv_case(100.0, 0, 10.0, 1.0, 0),      # multiplier 1000: left shifts
    "depthwise/zero-point-limits": conv_case(0.02, -128, 0.02, 0.05, -128, RELU6, depthwise=True),
    "depthwise/huge-multiplier": conv_case(2.0, 10, 0.5, 0.01, 0, RELU6, depthwise=True),
    "dense/zero-point-limits": dense_case(0.02, 127, 0.01, 0.2, -128),
    "dense/tiny-scales": dense_case(3e-7, -20, 2e-6, 1e-10, 7),
    "dense/huge-multiplier": dense_case(5.0, 0, 1.0, 0.01, 3),
    "add/scales-far-apart": add_case(1e-3, -128, 1.0, 127, 0.5, -128),
    "add/equal-scales": add_case(0.1, 0, 0.1, 0, 0.1, 0),
    "add/tiny-output-scale": add_case(0.5, 5, 0.25, -5, 1e-4, 0),
    "maxpool/limits": pool_case("MaxPool2D", 0.1, -128),
    "avgpool/limits": pool_case("AvgPool2D", 0.1, 127),
    "softmax/equal-logits-small-scale": softmax_graph(1e-3, 0),
    "softmax/equal-logits-large-scale": softmax_graph(10.0, -128),
    "sigmoid/saturating": unary_case("sigmoid", 1.0, 0),
    "sigmoid/near-zero": unary_case("sigmoid", 1e-3, -128),
    "tanh/saturating": unary_case("tanh", 0.5, 127),
}


def edge_inputs(g) -> list:
    """Per input, six samples: all -128, all 127, all at the zero point (real 0), one constant, random, and
    alternating limits."""
    out = []
    for k, name in enumerate(g.inputs):
        t = g.tensors[name]
        zp = int(t.quant.zero_point)
        rng = np.random.default_rng(10 + k)
        rows = [np.full(t.shape, v, np.int8) for v in (-128, 127, zp, 37 - 50 * k)]
        rows.append(rng.integers(-128, 128, t.shape).astype(np.int8))
        rows.append(np.where(np.arange(t.size).reshape(t.shape) % 2, 127, -128).astype(np.int8))
        out.append(np.stack(rows))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_int8_edges_are_bit_exact_with_tflite(tmp_path, case):
    """The fast kernels (plain and DSP paths) and the reference kernels give TFLite's bytes, or tinyc refuses
    the layer in one line."""
    from tinyc.compiler import codegen_options
    from tinyc.quant.tflite_writer import write_tflite
    from tinyc.reference import run_reference
    from tinyc.verify import run_generated
    g = CASES[case]
    xs = edge_inputs(g)
    try:
        fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
        ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
    except TinycError as e:
        assert "\n" not in str(e)
        pytest.skip(f"refused in one line: {e}")
    path = str(tmp_path / "m.tflite")
    write_tflite(g, path)
    samples = [[x[s][None] if x[s].shape[0] != 1 else x[s] for x in xs] for s in range(xs[0].shape[0])]
    want = np.stack([outs[0].reshape(g.tensors["y"].shape) for outs in run_reference(path, samples)[0]])
    for compiled, dsp in ((fast, False), (fast, True), (ref, False)):
        got = run_generated(compiled, xs, dsp=dsp)[0]
        diff = np.abs(got.astype(int) - want.astype(int))
        assert not diff.any(), (case, "fast" if compiled is fast else "reference", dsp, int(diff.max()),
                                np.argwhere(diff)[:5].tolist())
