"""The binary elementwise family (tinyc/ops/binary.py): every op's C against its numpy meaning with numpy
broadcasting between ranks 0 and 5, under ASan + UBSan; the ONNX ops (binary and variadic) against onnxruntime
on tensors of several ranks."""
import numpy as np
import pytest

from c_runner import run_c
from tinyc import interp
from tinyc.ir import Graph
from tinyc.ops.binary import BINARY

# (shape a, shape b): equal, scalar either side, trailing alignment, both sides broadcasting, rank 5
SHAPES = [((2, 3, 4), (2, 3, 4)), ((), (3, 4)), ((2, 3, 4), ()), ((4,), (2, 3, 4)), ((2, 1, 4), (3, 1)),
          ((1, 3, 1, 5), (2, 1, 4, 1)), ((2, 1, 3, 1, 2), (3, 4, 1)), ((1,), (1,))]


def _operands(op, rng, sa, sb):
    a = rng.normal(0, 2, sa).astype(np.float32)
    b = rng.normal(0, 2, sb).astype(np.float32)
    if op == "Pow":          # a real power: a positive base, or an integer exponent
        a = np.abs(a) + np.float32(0.1)
    if op in ("Div", "Mod"):
        b = np.where(np.abs(b) < 0.1, np.float32(0.5), b).astype(np.float32)
    return a, b


def _run_c(g, inputs, tmp_path):
    return run_c(g, inputs, tmp_path, "bin")


@pytest.mark.parametrize("op", sorted(BINARY))
def test_c_matches_numpy_with_broadcasting(tmp_path, op):
    """One graph per op: each shape pair twice, both operands runtime inputs and b a constant."""
    rng = np.random.default_rng(len(op))
    g = Graph("bin")
    inputs, values = [], []
    for k, (sa, sb) in enumerate(SHAPES):
        a, b = _operands(op, rng, sa, sb)
        out = np.broadcast_shapes(sa, sb)
        for name, x in ((f"a{k}", a), (f"b{k}", b)):
            g.add_tensor(name, x.shape)
            inputs.append(name)
            values.append(x)
        g.add_tensor(f"y{k}", out)
        g.add_node(op, [f"a{k}", f"b{k}"], [f"y{k}"], activation=None)
        g.add_tensor(f"z{k}", out)
        act = {"fn": "tanh"} if k % 2 else None
        g.add_node(op, [f"a{k}", g.add_const(f"c{k}", b)], [f"z{k}"], activation=act)
    g.inputs, g.outputs = inputs, [f"{p}{k}" for k in range(len(SHAPES)) for p in "yz"]
    g.validate()
    ours = _run_c(g, values, tmp_path)
    ref = interp.run(g, values)
    for name, got in zip(g.outputs, ours):
        np.testing.assert_allclose(got, ref[name], rtol=2e-6, atol=1e-6, err_msg=name)


def test_max_min_propagate_nan_and_prelu_is_per_slope(tmp_path):
    g = Graph("bin")
    for n in ("a", "b"):
        g.add_tensor(n, (4,))
    for op in ("Max", "Min", "PRelu"):
        g.add_tensor(op, (4,))
        g.add_node(op, ["a", "b"], [op], activation=None)
    g.inputs, g.outputs = ["a", "b"], ["Max", "Min", "PRelu"]
    a = np.array([np.nan, 1.0, -2.0, -3.0], np.float32)
    b = np.array([1.0, np.nan, 0.5, -1.0], np.float32)
    mx, mn, pr = _run_c(g, [a, b], tmp_path)
    np.testing.assert_array_equal(mx, [np.nan, np.nan, 0.5, -1.0])
    np.testing.assert_array_equal(mn, [np.nan, np.nan, -2.0, -3.0])
    np.testing.assert_array_equal(pr, [np.nan, 1.0, -1.0, 3.0])


# -- ONNX ------------------------------------------------------------------------------------------------------
def _onnx_check(tmp_path, build, inputs: dict, opset=17, feeds=None):
    pytest.importorskip("onnxruntime")
    import onnx
    from test_onnx_helper_models import Builder, _summary

    from tinyc.verify import verify
    b = Builder()
    outs = build(b)
    path = str(tmp_path / "m.onnx")
    onnx.save(b.model(inputs, outs, opset), path)
    report = verify(path, inputs=feeds)
    assert report["ok"], _summary(report)


RANKS = {"a": [2, 3, 4, 5], "b": [3, 1, 5], "c": [5], "d": [1, 4, 1]}


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "PRelu"])
def test_onnx_binary_ops_broadcast_across_ranks(tmp_path, op):
    """Runtime operands of ranks 4, 3, 1 and 3, both orders, and constant operands of lower rank."""
    rng = np.random.default_rng(5)
    feeds = [rng.normal(0, 2, s).astype(np.float32) for s in RANKS.values()]
    if op == "Pow":
        feeds = [np.abs(f) + np.float32(0.2) for f in feeds]
    if op in ("Div", "Mod"):
        feeds = [np.where(np.abs(f) < 0.2, np.float32(0.7), f).astype(np.float32) for f in feeds]
    attrs = {"fmod": 1} if op == "Mod" else {}
    pairs = [("a", "b"), ("b", "a"), ("a", "c"), ("d", "b"), ("c", "d")] if op != "PRelu" else \
        [("a", "b"), ("a", "c"), ("a", "d")]   # PRelu's slope broadcasts to x only

    def build(b):
        outs = [b.node(op, [x, y], **attrs) for x, y in pairs]
        k = b.const(rng.uniform(0.5, 1.5, (4, 1)))
        outs.append(b.node(op, ["a", k], **attrs))
        if op != "PRelu":
            outs.append(b.node(op, [b.const(np.float32(1.5)), "b"], **attrs))
        return outs
    _onnx_check(tmp_path, build, RANKS, feeds=feeds)


@pytest.mark.parametrize("op", ["Sum", "Max", "Min", "Mean"])
def test_onnx_variadic_ops(tmp_path, op):
    """One, two and four inputs of different ranks, a constant among them; after a conv (channels-last)."""
    def build(b):
        one = b.node(op, ["b"])
        two = b.node(op, ["a", "c"])
        four = b.node(op, ["b", "a", b.const(np.linspace(-1, 1, 20).reshape(4, 5)), "d"])
        conv = b.node("Conv", ["x", b.weights(4, 3, 3, 3)])
        mixed = b.node(op, [conv, b.const(np.array([0.5, -1, 2, 0]).reshape(4, 1, 1)), conv])
        return [one, two, four, mixed]
    _onnx_check(tmp_path, build, {**RANKS, "x": [1, 3, 5, 5]})


def test_operands_that_do_not_broadcast_to_the_output_are_refused():
    """Once: an ONNX PRelu with a slope [3] on x [2, 3, 4] (PyTorch's channel slope, valid only before opset 7)
    read past the slope in C."""
    from tinyc.errors import TinycError
    g = Graph("bad")
    g.add_tensor("x", (2, 3, 4))
    g.add_tensor("y", (2, 3, 4))
    g.add_node("PRelu", ["x", g.add_const("slope", np.ones(3, np.float32))], ["y"], name="prelu", activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    with pytest.raises(TinycError, match=r"node 'prelu' \(PRelu\): operand 'slope' of shape \[3\] does not broadcast"):
        g.validate()
