"""Property tests of the int8 kernels against TFLite's reference kernels, over parameters the TFLite converter
never produces: zero points at the int8 extremes, scales from 1e-6 to 1e2, per-channel multipliers whose shifts
take both signs, every stride/kernel/padding combination. Each example is an IR graph written as .tflite
(`tinyc.quant.tflite_writer`), compiled by tinyc from that file and compared by `tinyc verify`: zero
differing bytes."""
import importlib.util
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs tensorflow", allow_module_level=True)

from tinyc.frontends.geometry import conv_geometry  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402
from tinyc.quant.tflite_writer import write_tflite  # noqa: E402
from tinyc.verify import verify  # noqa: E402

EXAMPLES = 40 if os.environ.get("TINYC_FULL") else 6
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ACTS = [None, {"fn": "relu"}, {"fn": "clip", "lo": 0.0, "hi": 6.0}, {"fn": "clip", "lo": -1.0, "hi": 1.0}]

zero_points = st.sampled_from([-128, -127, -1, 0, 1, 64, 126, 127]) | st.integers(-128, 127)
scales = st.floats(1e-6, 1e2).map(lambda v: float(np.float32(v)))


def _quant(scale, zp=0):
    return Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))


def _check(tmp_path, g, samples=4):
    path = tmp_path / f"{g.name}.tflite"
    write_tflite(g, str(path))
    report = verify(str(path), samples=samples, seed=1)
    assert report["mismatched_bytes"] == 0, report["outputs"]


def _conv_graph(draw, depthwise: bool, rng) -> Graph:
    k = (draw(st.sampled_from([1, 2, 3, 5, 7])), draw(st.sampled_from([1, 3, 5])))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    c = draw(st.integers(1, 5))
    mult = draw(st.integers(1, 3))
    o = c * mult if depthwise else draw(st.integers(1, 6))
    h, w = draw(st.integers(k[0], 10)), draw(st.integers(k[1], 10))
    mode = draw(st.sampled_from(["same", "valid"]))
    (oh, t, b), (ow, left, r) = (conv_geometry(n, k[i], s[i], 1, mode) for i, n in enumerate((h, w)))
    in_s, out_s = draw(scales), draw(scales)
    # per-channel weight scales spread so that in_s * w_s / out_s straddles 1 (shifts of both signs)
    w_scales = (out_s / in_s) * np.exp2(rng.uniform(-12, 4, o))
    w_scales = np.clip(w_scales, 1e-9, 1e4).astype(np.float32)
    g = Graph("conv_dw" if depthwise else "conv")
    g.add_tensor("x", (1, h, w, c), "int8", quant=_quant(in_s, draw(zero_points)))
    wshape = (o, k[0], k[1], 1 if depthwise else c)
    g.add_tensor("w", wshape, "int8", rng.integers(-127, 128, wshape).astype(np.int8),
                 quant=Quant(w_scales, np.zeros(o, np.int64), 0))
    bias_scale = (np.float32(in_s) * w_scales).astype(np.float32)
    g.add_tensor("b", (o,), "int32", rng.integers(-20000, 20000, o).astype(np.int32),
                 quant=Quant(bias_scale, np.zeros(o, np.int64), 0))
    g.add_tensor("y", (1, oh, ow, o), "int8", quant=_quant(out_s, draw(zero_points)))
    g.add_node("Conv2D", ["x", "w", "b"], ["y"], strides=s, dilations=(1, 1), pads=(t, left, b, r),
               groups=c if depthwise else 1, activation=draw(st.sampled_from(ACTS)))
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@settings(**SETTINGS)
@given(data=st.data())
def test_conv_int8(tmp_path, data):
    g = _conv_graph(data.draw, False, np.random.default_rng(data.draw(st.integers(0, 2 ** 16))))
    _check(tmp_path, g)


@settings(**SETTINGS)
@given(data=st.data())
def test_depthwise_int8(tmp_path, data):
    g = _conv_graph(data.draw, True, np.random.default_rng(data.draw(st.integers(0, 2 ** 16))))
    _check(tmp_path, g)


@settings(**SETTINGS)
@given(data=st.data())
def test_fully_connected_int8(tmp_path, data):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    k, o = draw(st.integers(1, 40)), draw(st.integers(1, 12))
    per_channel = draw(st.booleans())
    in_s, out_s = draw(scales), draw(scales)
    n = o if per_channel else 1
    w_scales = np.clip((out_s / in_s) * np.exp2(rng.uniform(-12, 4, n)), 1e-9, 1e4).astype(np.float32)
    g = Graph("fc")
    g.add_tensor("x", (1, k), "int8", quant=_quant(in_s, draw(zero_points)))
    wq = Quant(w_scales, np.zeros(n, np.int64), 0) if per_channel else _quant(w_scales[0])
    g.add_tensor("w", (o, k), "int8", rng.integers(-127, 128, (o, k)).astype(np.int8), quant=wq)
    bias_scale = (np.float32(in_s) * w_scales).astype(np.float32)
    bq = Quant(bias_scale, np.zeros(n, np.int64), 0) if per_channel else _quant(bias_scale[0])
    g.add_tensor("b", (o,), "int32", rng.integers(-20000, 20000, o).astype(np.int32), quant=bq)
    g.add_tensor("y", (1, o), "int8", quant=_quant(out_s, draw(zero_points)))
    g.add_node("Dense", ["x", "w", "b"], ["y"], activation=draw(st.sampled_from(ACTS)))
    g.inputs, g.outputs = ["x"], ["y"]
    _check(tmp_path, g)


@settings(**SETTINGS)
@given(data=st.data())
def test_pool_int8(tmp_path, data):
    draw = data.draw
    kind = draw(st.sampled_from(["AvgPool2D", "MaxPool2D"]))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h, w, c = draw(st.integers(k[0], 9)), draw(st.integers(k[1], 9)), draw(st.integers(1, 4))
    mode = draw(st.sampled_from(["same", "valid"]))
    (oh, t, b), (ow, left, r) = (conv_geometry(n, k[i], s[i], 1, mode) for i, n in enumerate((h, w)))
    q = _quant(draw(scales), draw(zero_points))
    g = Graph("pool")
    g.add_tensor("x", (1, h, w, c), "int8", quant=q)
    g.add_tensor("y", (1, oh, ow, c), "int8", quant=q)
    g.add_node(kind, ["x"], ["y"], kernel=k, strides=s, pads=(t, left, b, r), count_include_pad=False,
               activation=draw(st.sampled_from(ACTS)))
    g.inputs, g.outputs = ["x"], ["y"]
    _check(tmp_path, g)


@settings(**SETTINGS)
@given(data=st.data())
def test_add_sub_mul_int8(tmp_path, data):
    draw = data.draw
    op = draw(st.sampled_from(["Add", "Sub", "Mul"]))
    shape = (1, draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 5)))
    b_shape = draw(st.sampled_from([shape, (1, 1, 1, shape[-1]), (1, 1, shape[2], shape[3]), (1, shape[1], 1, 1)]))
    sa, sb, sy = draw(scales), draw(scales), draw(scales)
    if op != "Mul":   # TFLite aborts when the output rescale of ADD/SUB reaches 1 (tinyc refuses it)
        assume(2 * max(sa, sb) / (2 ** 20 * sy) < 1)
    g = Graph("binary")
    g.add_tensor("a", shape, "int8", quant=_quant(sa, draw(zero_points)))
    g.add_tensor("b", b_shape, "int8", quant=_quant(sb, draw(zero_points)))
    g.add_tensor("y", shape, "int8", quant=_quant(sy, draw(zero_points)))
    g.add_node(op, ["a", "b"], ["y"], activation=draw(st.sampled_from(ACTS)))
    g.inputs, g.outputs = ["a", "b"], ["y"]
    _check(tmp_path, g)
