"""fuse_lp_normalize: F.normalize as PyTorch exports it (ReduceL2 / ReduceL1, Clip at eps, Expand, Div) becomes one
LpNormalize computing the same function; without the floor (0 / 0 would be NaN there, 0 in LpNormalize), over
several axes, dividing another tensor, or with an intermediate read elsewhere, it is left alone."""
import numpy as np
import pytest

from tinyc.ir import Graph
from tinyc.passes.fuse_lp_normalize import fuse_lp_normalize
from pass_checks import checked

SHAPE = (2, 3, 8)
FLT_MAX = float(np.finfo(np.float32).max)


def normalize(kind="l2", axes=(2,), floor="clip", eps=1e-12, broadcast=True, numerator="x", extra_output=None):
    g = Graph("f_normalize")
    g.add_tensor("x", SHAPE)
    g.add_tensor("other", SHAPE)
    g.inputs = ["x", "other"]
    stat = tuple(1 if i in axes else d for i, d in enumerate(SHAPE))
    g.add_tensor("n", stat)
    g.add_node("Reduce", ["x"], ["n"], name="n", kind=kind, axes=axes, keepdims=True)
    f = "n"
    if floor == "clip":
        g.add_tensor("f", stat)
        g.add_node("Activation", ["n"], ["f"], name="f", fn="clip", lo=eps, hi=FLT_MAX)
        f = "f"
    elif floor == "max":
        g.add_tensor("f", stat)
        g.add_node("Max", [g.add_const("eps", np.float32(eps)), "n"], ["f"], name="f", activation=None)
        f = "f"
    if broadcast:
        g.add_tensor("b", SHAPE)
        g.add_node("BroadcastTo", [f], ["b"], name="b", target=SHAPE)
        f = "b"
    g.add_tensor("y", SHAPE)
    g.add_node("Div", [numerator, f], ["y"], name="y", activation=None)
    g.outputs = ["y"] + ([extra_output] if extra_output else [])
    g.validate()
    return g


@pytest.mark.parametrize("kind, p", [("l2", 2), ("l1", 1)])
@pytest.mark.parametrize("floor", ["clip", "max"])
@pytest.mark.parametrize("broadcast", [True, False])
def test_f_normalize_fuses(kind, p, floor, broadcast):
    out = checked(fuse_lp_normalize, normalize(kind=kind, floor=floor, broadcast=broadcast, eps=1e-3))
    (node,) = out.nodes
    assert node.op == "LpNormalize" and node.inputs == ["x"] and node.outputs == ["y"]
    assert (node.attrs["axis"], node.attrs["p"]) == (2, p) and node.attrs["epsilon"] == pytest.approx(1e-3)


@pytest.mark.parametrize("near_miss", [
    dict(floor=None),                   # x / ||x||: NaN for a zero row, which LpNormalize would make 0
    dict(eps=0.0),                      # a floor of 0 is no floor
    dict(axes=(1, 2)),                  # a norm over two axes
    dict(kind="sumsquare"),             # not a norm
    dict(numerator="other"),            # another tensor divided by x's norm
    dict(extra_output="n"),             # an intermediate is a graph output
])
def test_near_misses_are_left_alone(near_miss):
    assert "LpNormalize" not in [n.op for n in checked(fuse_lp_normalize, normalize(**near_miss)).nodes]
