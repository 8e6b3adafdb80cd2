"""Property tests: random conv / depthwise / pooling parameters, the generated C against onnxruntime."""
import os

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tinyc.verify import verify

EXAMPLES = 40 if os.environ.get("TINYC_FULL") else 8
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def save(tmp_path, nodes, x_shape, inits, name):
    g = helper.make_graph(nodes, "prop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return str(path)


@st.composite
def conv_params(draw, depthwise=False):
    k = draw(st.sampled_from([1, 2, 3, 5, 7]))
    kw = draw(st.sampled_from([k, 1, 3]))
    s = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    c = draw(st.integers(1, 6))
    groups = c if depthwise else draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
    mult = draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 3))
    o = groups * mult if depthwise else groups * draw(st.integers(1, 4))
    pads = [draw(st.integers(0, k // 2 + 1)) for _ in range(4)]
    h = draw(st.integers((k - 1) * d + 1, max((k - 1) * d + 1, 12)))
    w = draw(st.integers((kw - 1) * d + 1, max((kw - 1) * d + 1, 12)))
    return dict(k=(k, kw), s=s, d=d, c=c, groups=groups, o=o, pads=pads, h=h, w=w)


def _check_conv(tmp_path, p, seed):
    rng = np.random.default_rng(seed)
    wt = rng.standard_normal((p["o"], p["c"] // p["groups"], *p["k"])).astype(np.float32)
    b = rng.standard_normal(p["o"]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(p["k"]), strides=[p["s"]] * 2,
                            dilations=[p["d"]] * 2, pads=p["pads"], group=p["groups"])
    path = save(tmp_path, [node], (1, p["c"], p["h"], p["w"]), {"w": wt, "b": b}, f"conv{seed}")
    report = verify(path, samples=1, seed=seed)
    assert report["ok"], (p, report["outputs"])


@settings(**SETTINGS)
@given(conv_params(), st.integers(0, 1000))
def test_conv_matches_onnxruntime(tmp_path, p, seed):
    _check_conv(tmp_path, p, seed)


@settings(**SETTINGS)
@given(conv_params(depthwise=True), st.integers(0, 1000))
def test_depthwise_matches_onnxruntime(tmp_path, p, seed):
    _check_conv(tmp_path, p, seed)


@settings(**SETTINGS)
@given(st.sampled_from(["MaxPool", "AveragePool"]), st.integers(1, 4), st.integers(1, 3), st.integers(0, 1),
       st.booleans(), st.booleans(), st.integers(4, 11), st.integers(0, 1000))
def test_pool_matches_onnxruntime(tmp_path, op, k, s, pad, ceil, include_pad, h, seed):
    pad = min(pad, k - 1) if k > 1 else 0      # ONNX requires pads smaller than the window
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4, ceil_mode=int(ceil))
    if op == "AveragePool":
        attrs["count_include_pad"] = int(include_pad and not ceil)
    path = save(tmp_path, [helper.make_node(op, ["x"], ["y"], **attrs)], (1, 3, h, h + 1), {}, f"pool{seed}")
    report = verify(path, samples=1, seed=seed)
    assert report["ok"], (op, attrs, h, report["outputs"])
