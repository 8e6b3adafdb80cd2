"""fuse_pad: a zero Pad over H/W feeding only a Conv2D folds into the conv's pads."""
import numpy as np
import pytest

from tinyc.ir import Graph
from tinyc.passes.fuse_pad import fuse_pad
from pass_checks import checked, snapshot


def run_pass(g):
    return checked(fuse_pad, g)


def pad_then(op, pads=((0, 0), (1, 2), (0, 1), (0, 0)), value=0.0, conv_pads=(1, 1, 1, 1), outputs=None):
    rng = np.random.default_rng(0)
    g = Graph()
    g.add_tensor("x", (1, 5, 4, 2))
    padded = tuple(d + b + e for d, (b, e) in zip((1, 5, 4, 2), pads))
    g.add_tensor("p", padded)
    g.add_node("Pad", ["x"], ["p"], pads=pads, value=value)
    if op == "Conv2D":
        t, l, b, r = conv_pads
        g.add_tensor("y", (1, padded[1] + t + b - 2, padded[2] + l + r - 2, 3))
        g.add_node("Conv2D", ["p", g.add_const("w", rng.standard_normal((3, 3, 3, padded[3])))], ["y"],
                   strides=(1, 1), dilations=(1, 1), pads=conv_pads, groups=1, activation=None)
    else:
        g.add_tensor("y", (1, padded[1] - 1, padded[2] - 1, padded[3]))
        g.add_node(op, ["p"], ["y"], kernel=(2, 2), strides=(1, 1), pads=(0, 0, 0, 0))
    g.inputs, g.outputs = ["x"], outputs or ["y"]
    return g


def test_pad_folds_into_conv_pads():
    out = run_pass(pad_then("Conv2D"))
    (conv,) = out.nodes
    assert conv.op == "Conv2D" and conv.inputs[0] == "x"
    assert tuple(conv.attrs["pads"]) == (2, 1, 3, 2) and conv.attrs["fused"] == ("Pad",)
    assert "p" not in out.tensors


def test_pad_folds_into_unpadded_conv():
    out = run_pass(pad_then("Conv2D", pads=((0, 0), (1, 1), (1, 1), (0, 0)), conv_pads=(0, 0, 0, 0)))
    assert [n.op for n in out.nodes] == ["Conv2D"] and tuple(out.nodes[0].attrs["pads"]) == (1, 1, 1, 1)


@pytest.mark.parametrize("op", ["MaxPool2D", "AvgPool2D"])
def test_pad_before_pool_is_not_fused(op):
    assert [n.op for n in run_pass(pad_then(op)).nodes] == ["Pad", op]


def test_nonzero_value_is_not_fused():
    assert [n.op for n in run_pass(pad_then("Conv2D", value=1.0)).nodes] == ["Pad", "Conv2D"]


def test_channel_pad_is_not_fused():
    g = pad_then("Conv2D", pads=((0, 0), (1, 1), (0, 0), (0, 1)))
    assert [n.op for n in run_pass(g).nodes] == ["Pad", "Conv2D"]


def test_pad_output_is_graph_output_is_not_fused():
    assert [n.op for n in run_pass(pad_then("Conv2D", outputs=["p", "y"])).nodes] == ["Pad", "Conv2D"]


def test_pad_with_two_readers_is_not_fused():
    g = pad_then("Conv2D")
    g.add_tensor("z", g.tensors["p"].shape)
    g.add_node("Activation", ["p"], ["z"], fn="relu")
    g.outputs = ["y", "z"]
    assert [n.op for n in run_pass(g).nodes] == ["Pad", "Conv2D", "Activation"]


def test_negative_pad_is_not_fused():
    g = pad_then("Conv2D")
    g.nodes[0].attrs["pads"] = ((0, 0), (-1, 0), (0, 0), (0, 0))
    before = snapshot(g)
    out = fuse_pad(g)
    assert snapshot(g) == before
    assert [n.op for n in out.nodes] == ["Pad", "Conv2D"]
