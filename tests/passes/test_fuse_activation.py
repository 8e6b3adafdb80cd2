"""fuse_activation: Activation nodes merge into their producer; consecutive clamps compose."""
import itertools

import numpy as np
import pytest

from tinyc import activations
from tinyc.ir import Graph
from tinyc.passes.fuse_activation import compose, fuse_activation
from pass_checks import checked


def run_pass(g):
    return checked(fuse_activation, g)


def conv_then(*acts, outputs=None):
    """x -> Conv2D -> t0 -> Activation(acts[0]) -> t1 -> ... ; graph output is the last tensor."""
    rng = np.random.default_rng(0)
    g = Graph()
    g.add_tensor("x", (1, 4, 4, 2))
    names = [f"t{i}" for i in range(len(acts) + 1)]
    for n in names:
        g.add_tensor(n, (1, 4, 4, 3))
    g.add_node("Conv2D", ["x", g.add_const("w", rng.standard_normal((3, 3, 3, 2)))], ["t0"], strides=(1, 1),
               dilations=(1, 1), pads=(1, 1, 1, 1), groups=1, activation=None)
    for i, act in enumerate(acts):
        g.add_node("Activation", [names[i]], [names[i + 1]], **act)
    g.inputs, g.outputs = ["x"], outputs or [names[-1]]
    return g


def test_relu_fuses_into_conv():
    out = run_pass(conv_then({"fn": "relu"}))
    (conv,) = out.nodes
    assert conv.op == "Conv2D" and conv.attrs["activation"] == {"fn": "relu"} and conv.outputs == ["t1"]
    assert "t0" not in out.tensors


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Dense"])
def test_elementwise_and_dense(op):
    g = Graph()
    g.add_tensor("a", (2, 3)); g.add_tensor("s", (2, 3)); g.add_tensor("y", (2, 3))
    other = g.add_const("w", np.random.default_rng(1).uniform(1, 2, (3, 3)) if op == "Dense" else [1.5, 2, 3])
    g.inputs, g.outputs = ["a"], ["y"]
    g.add_node(op, ["a", other], ["s"], activation=None)
    g.add_node("Activation", ["s"], ["y"], fn="leaky_relu", alpha=0.2)
    (node,) = run_pass(g).nodes
    assert node.op == op and node.attrs["activation"] == {"fn": "leaky_relu", "alpha": 0.2}


def test_not_fused_when_producer_output_is_graph_output():
    out = run_pass(conv_then({"fn": "relu"}, outputs=["t0", "t1"]))
    assert [n.op for n in out.nodes] == ["Conv2D", "Activation"]
    assert out.nodes[0].attrs["activation"] is None


def test_not_fused_when_producer_output_has_two_readers():
    g = conv_then({"fn": "relu"})
    g.add_tensor("z", (1, 4, 4, 3))
    g.add_node("Activation", ["t0"], ["z"], fn="tanh")
    g.outputs = ["t1", "z"]
    assert [n.op for n in run_pass(g).nodes] == ["Conv2D", "Activation", "Activation"]


def test_not_fused_into_pool_or_after_non_clamp_activation():
    g = conv_then({"fn": "sigmoid"}, {"fn": "relu"})
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Conv2D", "Activation"]
    assert out.nodes[0].attrs["activation"] == {"fn": "sigmoid"}
    g = Graph()
    g.add_tensor("x", (1, 4, 4, 2)); g.add_tensor("p", (1, 2, 2, 2)); g.add_tensor("y", (1, 2, 2, 2))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("MaxPool2D", ["x"], ["p"], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0))
    g.add_node("Activation", ["p"], ["y"], fn="relu")
    assert [n.op for n in run_pass(g).nodes] == ["MaxPool2D", "Activation"]


def test_softmax_is_left_alone():
    g = Graph()
    g.add_tensor("x", (1, 5)); g.add_tensor("s", (1, 5)); g.add_tensor("y", (1, 5))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Add", ["x", g.add_const("k", np.ones(5))], ["s"], activation=None)
    g.add_node("Softmax", ["s"], ["y"], axis=-1)
    assert [n.op for n in run_pass(g).nodes] == ["Add", "Softmax"]


def test_relu_then_clip_composes_into_conv():
    out = run_pass(conv_then({"fn": "relu"}, {"fn": "clip", "lo": 0.0, "hi": 6.0}))
    (conv,) = out.nodes
    assert conv.attrs["activation"] == {"fn": "clip", "lo": 0.0, "hi": 6.0} and conv.outputs == ["t2"]
    assert conv.attrs["fused"] == ("relu", "clip")


def test_standalone_clips_compose():
    g = Graph()
    for t in ("x", "a", "b", "y"):
        g.add_tensor(t, (1, 4, 4, 2) if t == "x" else (1, 2, 2, 2))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("AvgPool2D", ["x"], ["a"], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0))
    g.add_node("Activation", ["a"], ["b"], fn="clip", lo=-1.0, hi=2.0)
    g.add_node("Activation", ["b"], ["y"], fn="clip", lo=0.0, hi=6.0)
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["AvgPool2D", "Activation"]
    assert out.nodes[1].attrs == {"fn": "clip", "lo": 0.0, "hi": 2.0} and out.nodes[1].outputs == ["y"]


CLAMPS = [{"fn": "relu"}] + [{"fn": "clip", "lo": lo, "hi": hi}
                             for lo, hi in [(0, 6), (-1, 1), (2, 3), (-3, -2), (0.5, 0.5), (-6, 0)]]


@pytest.mark.parametrize("first,second", list(itertools.product(CLAMPS, CLAMPS)))
def test_compose_matches_applying_both(first, second):
    x = np.linspace(-8, 8, 161)
    both = activations.apply(second, activations.apply(first, x))
    np.testing.assert_array_equal(activations.apply(compose(first, second), x), both)


def test_compose_refuses_non_clamps():
    assert compose({"fn": "relu"}, {"fn": "tanh"}) is None
    assert compose({"fn": "leaky_relu", "alpha": 0.1}, {"fn": "relu"}) is None


def test_unbounded_clip_after_relu_is_relu():
    big = float(np.finfo(np.float32).max)
    assert compose({"fn": "relu"}, {"fn": "clip", "lo": -big, "hi": big}) == {"fn": "relu"}
    assert compose({"fn": "clip", "lo": -big, "hi": 6.0}, {"fn": "relu"}) == {"fn": "clip", "lo": 0.0, "hi": 6.0}
