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


# -- DIV, LOG_SOFTMAX, NEG, ELU (docs/int8-numerics.md 4.23, 4.31-4.33) -------------------------------------
def _check_inputs(tmp_path, g, inputs, oracle="tflite"):
    path = tmp_path / f"{g.name}.tflite"
    write_tflite(g, str(path))
    report = verify(str(path), inputs=inputs)
    assert report["oracle"] == oracle, report.get("oracle_reason")
    assert report["mismatched_bytes"] == 0, report["outputs"]


def _unary_graph(name, fn, q_in, q_out, **attrs) -> Graph:
    g = Graph(name)
    g.add_tensor("x", (1, 256), "int8", quant=q_in)
    g.add_tensor("y", (1, 256), "int8", quant=q_out)
    g.add_node("Activation", ["x"], ["y"], fn=fn, **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


EVERY_BYTE = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)


@settings(**SETTINGS)
@given(data=st.data())
def test_div_int8(tmp_path, data):
    """Any scales whose multiplier shift TFLite's DIV is defined for (7..23, drawn), broadcasting and a fused clamp;
    the inputs avoid a divisor byte of 0 (TF 2.21 stops the inference on it) and the divisor's zero point (TFLite's
    result is undefined there) and include the dividend's extremes and zero point."""
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    shape = (1, 4, 64)
    b_shape = draw(st.sampled_from([shape, (1, 1, 64), (1, 4, 1)]))
    sa, sb, za, zb = draw(scales), draw(scales), draw(zero_points), draw(zero_points)
    shift = draw(st.integers(7, 23))
    sy = float(np.float32(sa / (sb * 2.0 ** (shift - 0.5))))     # the multiplier is about 2^(shift - 0.5)
    g = Graph("div")
    g.add_tensor("a", shape, "int8", quant=_quant(sa, za))
    g.add_tensor("b", b_shape, "int8", quant=_quant(sb, zb))
    g.add_tensor("y", shape, "int8", quant=_quant(sy, draw(zero_points)))
    act = draw(st.sampled_from(ACTS))
    assume(act is None or 6.0 / sy < 2.0 ** 31)   # TFLite refuses a fused clamp whose bound overflows int32
    g.add_node("Div", ["a", "b"], ["y"], activation=act)
    g.inputs, g.outputs = ["a", "b"], ["y"]
    a = rng.integers(-128, 128, shape)
    a.flat[:4] = [-128, 127, za, min(za + 1, 127)]
    b = rng.choice([v for v in range(-128, 128) if v not in (0, zb)], b_shape)
    _check_inputs(tmp_path, g, [a.astype(np.int8), b.astype(np.int8)])


def test_div_int8_refuses_undefined_shifts(tmp_path):
    """Equal input scales and a coarser output (multiplier 20, shift 5): TFLite's kernel would shift a quotient of 0
    by 32 bits, which its x86 build turns into z_out + 1 and an ARM core into something else."""
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    g = Graph("div_undefined")
    for name in ("a", "b"):
        g.add_tensor(name, (1, 8), "int8", quant=_quant(0.02))
    g.add_tensor("y", (1, 8), "int8", quant=_quant(0.05))
    g.add_node("Div", ["a", "b"], ["y"], activation=None)
    g.inputs, g.outputs = ["a", "b"], ["y"]
    path = tmp_path / "div.tflite"
    write_tflite(g, str(path))
    with pytest.raises(TinycError, match="DIV .* undefined") as e:
        compile_model(str(path))
    assert "\n" not in str(e.value)


@settings(**SETTINGS)
@given(data=st.data())
def test_log_softmax_int8(tmp_path, data):
    """Input scales from 1e-6 to 8 (beyond 8 TFLite's multiplier shift reaches 30, which tinyc refuses), rows of 1
    to 300 values; the output is fixed at 16/256 with zero point 127, as TFLite requires."""
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    rows, n = draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 5, 10, 33, 300]))
    g = Graph("log_softmax")
    g.add_tensor("x", (1, rows, n), "int8", quant=_quant(draw(scales.filter(lambda s: s < 8)), draw(zero_points)))
    g.add_tensor("y", (1, rows, n), "int8", quant=_quant(16 / 256, 127))
    g.add_node("LogSoftmax", ["x"], ["y"], axis=2)
    g.inputs, g.outputs = ["x"], ["y"]
    spread = draw(st.sampled_from([1, 4, 32, 256]))       # rows close together and rows of far-apart values
    x = rng.integers(-128, 128, (1, rows, n)) // spread
    _check_inputs(tmp_path, g, [x.astype(np.int8)])


@settings(**SETTINGS)
@given(data=st.data())
def test_neg_int8(tmp_path, data):
    """Every input byte; TFLite negates the stored integers (-128 stays -128), which tinyc accepts only with the
    output quantized as the negated input. TFLite Micro has no int8 NEG and TFLiteConverter never makes one, so the
    .tflite is written directly and BUILTIN_REF is the oracle."""
    s, z = data.draw(scales), data.draw(st.integers(-127, 127))
    g = _unary_graph("neg", "neg", _quant(s, z), _quant(s, -z))
    _check_inputs(tmp_path, g, [EVERY_BYTE])


def test_neg_int8_refuses_other_parameters(tmp_path):
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    path = tmp_path / "neg.tflite"
    write_tflite(_unary_graph("neg", "neg", _quant(0.1, 3), _quant(0.05, -7)), str(path))
    with pytest.raises(TinycError, match="int8 NEG") as e:
        compile_model(str(path))
    assert "\n" not in str(e.value)


@settings(**SETTINGS)
@given(data=st.data())
def test_elu_int8(tmp_path, data):
    """Every input byte, scales from 1e-7 (where TFLite Micro's expf(x) - 1 and TFLite's expm1f differ) to 1e2.
    BUILTIN_REF has no ELU and TFLiteConverter keeps ELU float, so the .tflite is written directly and the oracle is
    TFLite Micro (docs/int8-numerics.md 4.33)."""
    tiny_or_any = st.floats(1e-7, 1e-2).map(lambda v: float(np.float32(v))) | scales
    s_in, s_out = data.draw(tiny_or_any), data.draw(tiny_or_any)
    assume(128 * s_in / s_out < 2.0 ** 30)    # beyond int32 output steps TFLite's table is undefined: tinyc refuses
    g = _unary_graph("elu", "elu", _quant(s_in, data.draw(zero_points)), _quant(s_out, data.draw(zero_points)),
                     alpha=1.0)
    _check_inputs(tmp_path, g, [EVERY_BYTE], oracle="tflite-micro")


def test_table_beyond_int32_is_refused(tmp_path):
    """An ELU whose largest output is 2^31 output steps: C++'s float -> int conversion is undefined there (TFLite's
    x86 build stores -128, an ARM core 127); tinyc refuses it in one line."""
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    path = tmp_path / "elu.tflite"
    write_tflite(_unary_graph("elu", "elu", _quant(85.0, -128), _quant(1e-5, -128), alpha=1.0), str(path))
    with pytest.raises(TinycError, match="beyond int32") as e:
        compile_model(str(path))
    assert "\n" not in str(e.value)
