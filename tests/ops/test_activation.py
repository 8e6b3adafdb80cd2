"""Activation (tinyc/activations.py): every function's C against its numpy meaning, under ASan + UBSan, on its
whole domain and at the extremes of float32, where the stable functions must stay finite (no overflow inside a
function whose value is finite: softplus, mish, sigmoid, swish, elu, selu, celu, gelu, log_sigmoid ...)."""
import numpy as np
import pytest

import c_runner
from tinyc import interp
from tinyc.activations import ACTIVATIONS
from tinyc.ir import Graph

F32_MAX = float(np.finfo(np.float32).max)
PARAMS = {
    "clip": dict(lo=-0.75, hi=2.5),
    "leaky_relu": dict(alpha=0.1),
    "hard_sigmoid": dict(alpha=0.2, beta=0.5),
    "elu": dict(alpha=0.7),
    "selu": dict(alpha=1.67326319217681884765625, gamma=1.05070102214813232421875),
    "celu": dict(alpha=1.7),
    "thresholded_relu": dict(alpha=0.4),
    "keras_relu": dict(threshold=0.5, hi=3.0, slope=0.2),
    "shrink": dict(lambd=0.5, bias=0.25),
    "affine": dict(alpha=0.5, beta=0.25),
    "scaled_tanh": dict(alpha=1.5, beta=0.5),
}
_EXTREMES = [-F32_MAX, -1e30, -1e4, -100.0, -89.0, -88.0, -20.0, 20.0, 88.0, 89.0, 100.0, 1e4, 1e30, F32_MAX]
_HALVES = [-2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 3.5, 1e7 + 1, -1e7 - 1]
WIDE = np.concatenate([np.linspace(-8, 8, 97), _EXTREMES, _HALVES]).astype(np.float32)
# Functions defined on part of the line are tested there; the trigonometric ones on a few periods.
_POSITIVE = np.geomspace(1e-30, 1e30, 61)
DOMAINS = {   # name: (inputs, functions)
    "non-negative": (np.concatenate([_POSITIVE, [F32_MAX, 0.0]]), ("log", "sqrt")),
    "positive": (_POSITIVE, ("rsqrt",)),
    "[-1, 1]": (np.linspace(-1, 1, 41), ("asin", "acos")),
    "(-1, 1)": (np.linspace(-0.999, 0.999, 41), ("atanh",)),
    "[1, inf)": (np.concatenate([np.linspace(1, 10, 37), [1e4, 1e30, F32_MAX]]), ("acosh",)),
    "periods": (np.linspace(-20, 20, 81), ("sin", "cos")),
    "(-pi/2, pi/2)": (np.linspace(-1.5, 1.5, 41), ("tan",)),
}
LIMITED = {f for _, fns in DOMAINS.values() for f in fns}
# Finite everywhere on the real line (their C must never produce inf or NaN from a finite input).
BOUNDED_OR_LINEAR = ("relu", "clip", "leaky_relu", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "swish", "elu",
                     "selu", "celu", "thresholded_relu", "keras_relu", "shrink", "softplus", "log_sigmoid",
                     "softsign", "mish", "tanh_shrink", "gelu", "gelu_tanh", "abs", "neg", "sign", "erf", "floor",
                     "ceil", "round", "atan", "asinh", "affine", "scaled_tanh")
# Finite on the real line but overflowing float32 for large |x|, as their float64 meaning does
OVERFLOWING = ("exp", "sinh", "cosh", "reciprocal", "square")


def run_c(g, inputs, tmp_path):
    """The C's outputs, flat (c_runner.run_c under ASan + UBSan)."""
    return [y.ravel() for y in c_runner.run_c(g, inputs, tmp_path, "acts")]


def _graph(fns, n):
    g = Graph("acts")
    g.add_tensor("x", (1, n))
    g.inputs = ["x"]
    for fn in fns:
        g.add_tensor(fn, (1, n))
        g.add_node("Activation", ["x"], [fn], name=fn, fn=fn, **PARAMS.get(fn, {}))
    g.outputs = list(fns)
    g.validate()
    return g


def test_every_function_is_tested_on_its_domain():
    """Each function is in exactly one domain; those on the whole line either stay finite or may overflow."""
    for fn in ACTIVATIONS:
        assert (fn in LIMITED) + (fn in BOUNDED_OR_LINEAR) + (fn in OVERFLOWING) == 1, fn


@pytest.mark.parametrize("domain", ["the real line", *DOMAINS])
def test_c_matches_numpy_meaning(tmp_path, domain):
    if domain == "the real line":
        x, fns = WIDE, [f for f in ACTIVATIONS if f not in LIMITED]
    else:
        x, fns = DOMAINS[domain]
    _check(tmp_path, list(fns), np.asarray(x, np.float32))


def _check(d, fns, x):
    g = _graph(fns, len(x))
    ours = run_c(g, [x], d)
    ref = interp.run(g, [x.reshape(1, -1)])
    for fn, got in zip(fns, ours):
        want = ref[fn].ravel()
        np.testing.assert_allclose(got, want, rtol=2e-6 if fn != "tan" else 1e-5, atol=2e-6, err_msg=fn)
        # no overflow where the value is finite (inf - inf, inf / inf would be NaN; assert_allclose lets
        # NaN match NaN and inf match inf)
        assert np.array_equal(np.isfinite(got), np.isfinite(want)), (fn, x[np.isfinite(got) != np.isfinite(want)])


def test_round_is_half_to_even(tmp_path):
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, 8388609.0], np.float32)
    (got,) = run_c(_graph(["round"], len(x)), [x], tmp_path)
    assert got.tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 0.0, 8388609.0]


def _f32(values):
    return np.float32(values).tolist()


def test_large_arguments_give_the_limits(tmp_path):
    """The functions that saturate reach their limits exactly instead of inf/inf or inf - inf."""
    fns = ["sigmoid", "softplus", "mish", "swish", "gelu", "gelu_tanh", "log_sigmoid", "softsign", "elu", "selu"]
    x = np.array([-F32_MAX, -1e30, 1e30, F32_MAX], np.float32)
    got = dict(zip(fns, run_c(_graph(fns, len(x)), [x], tmp_path)))
    assert got["sigmoid"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert got["softplus"].tolist() == _f32([0.0, 0.0, 1e30, F32_MAX])
    assert got["softsign"].tolist() == [-1.0, -1.0, 1.0, 1.0]
    for fn in ("mish", "swish", "gelu", "gelu_tanh"):
        assert got[fn].tolist() == _f32([0.0, 0.0, 1e30, F32_MAX]), fn
    assert got["log_sigmoid"].tolist() == _f32([-F32_MAX, -1e30, 0.0, 0.0])
    assert np.allclose(got["elu"][:2], -0.7) and np.allclose(got["selu"][:2], -1.7580993)


# -- frontends -----------------------------------------------------------------------------------------------
# ONNX unary op: (attributes, input domain); every op is checked against onnxruntime on a general [2, 3, 5] tensor.
_RNG = np.random.default_rng(17)
ONNX_DOMAINS = {
    "line": _RNG.normal(0, 3, (2, 3, 5)),
    "positive": np.abs(_RNG.normal(0, 3, (2, 3, 5))) + 0.05,
    "unit": _RNG.uniform(-0.98, 0.98, (2, 3, 5)),
    "from 1": 1 + np.abs(_RNG.normal(0, 3, (2, 3, 5))),
    "tan": _RNG.uniform(-1.4, 1.4, (2, 3, 5)),
    "halves": _RNG.integers(-8, 8, (2, 3, 5)) / 2,
}
ONNX_UNARY = [
    ("Abs", {}, "line"), ("Neg", {}, "line"), ("Exp", {}, "line"), ("Log", {}, "positive"), ("Sqrt", {}, "positive"),
    ("Reciprocal", {}, "positive"), ("Floor", {}, "line"), ("Ceil", {}, "line"), ("Round", {}, "halves"),
    ("Sign", {}, "halves"), ("Erf", {}, "line"), ("Sin", {}, "line"), ("Cos", {}, "line"), ("Tan", {}, "tan"),
    ("Asin", {}, "unit"), ("Acos", {}, "unit"), ("Atan", {}, "line"), ("Sinh", {}, "line"), ("Cosh", {}, "line"),
    ("Asinh", {}, "line"), ("Acosh", {}, "from 1"), ("Atanh", {}, "unit"), ("Softplus", {}, "line"),
    ("Softsign", {}, "line"), ("Elu", {"alpha": 0.6}, "line"), ("Selu", {}, "line"),
    ("Selu", {"alpha": 1.2, "gamma": 0.8}, "line"), ("Celu", {"alpha": 1.5}, "line"), ("Gelu", {}, "line"),
    ("Gelu", {"approximate": "tanh"}, "line"), ("Mish", {}, "line"), ("ThresholdedRelu", {"alpha": 0.7}, "line"),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, "line"), ("HardSwish", {}, "line"), ("Relu", {}, "line"),
    ("LeakyRelu", {"alpha": 0.2}, "line"), ("Sigmoid", {}, "line"), ("Tanh", {}, "line"),
    ("Shrink", {"lambd": 0.8, "bias": 0.3}, "line"),
]


@pytest.mark.parametrize("domain", sorted({d for _, _, d in ONNX_UNARY}))
def test_onnx_unary_ops_match_onnxruntime(tmp_path, domain):
    """All the ONNX unary ops of a domain in one model (opset 20: Gelu), each an output, against onnxruntime."""
    pytest.importorskip("onnxruntime")
    import onnx
    from test_onnx_helper_models import Builder, _summary

    from tinyc.verify import verify
    b = Builder()
    outs = [b.node(op, ["x"], **attrs) for op, attrs, d in ONNX_UNARY if d == domain]
    path = str(tmp_path / "unary.onnx")
    onnx.save(b.model({"x": [2, 3, 5]}, outs, 20), path)
    report = verify(path, inputs=[ONNX_DOMAINS[domain].astype(np.float32)])
    assert report["ok"], _summary(report)


def test_onnx_prelu_and_clip(tmp_path):
    """PRelu with a slope broadcast per channel (a binary IR op) and one slope (a LeakyRelu), fused after a
    conv; Clip with constant bounds."""
    pytest.importorskip("onnxruntime")
    import onnx
    from test_onnx_helper_models import Builder, _summary

    from tinyc.verify import verify
    b = Builder()
    c = b.node("Conv", ["x", b.weights(4, 3, 3, 3)])
    p = b.node("PRelu", [c, b.const(np.array([0.1, -0.2, 0.3, 2.0]).reshape(4, 1, 1))])
    q = b.node("PRelu", [c, b.const([0.25])])
    r = b.node("PRelu", ["v", b.const(_RNG.normal(0, 1, (3, 1)))])
    s = b.node("Clip", [r, b.const(-0.5), b.const(0.25)])
    path = str(tmp_path / "prelu.onnx")
    onnx.save(b.model({"x": [1, 3, 6, 6], "v": [2, 3, 4]}, [p, q, s], 17), path)
    report = verify(path)
    assert report["ok"], _summary(report)
