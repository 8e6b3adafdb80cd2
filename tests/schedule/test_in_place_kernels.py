"""The generated C honours the in-place and overlap contracts: each way of writing over a dying input (forced
one at a time) computes what the reference computes, float and int8, stride 1 and 2; and a plan that breaks
the contract on purpose (a lead one pixel too small) is caught by the comparison."""
import numpy as np
import pytest

from tinyc import interp
from tinyc.codegen.emit import generate
from tinyc.compiler import Compiled
from tinyc.ir import Graph, Quant
from tinyc.schedule import schedule
from tinyc.schedule import overlap
from tinyc.verify import run_generated


def _conv(g, x, y, w_shape, groups, stride, dtype="float32"):
    rng = np.random.default_rng(len(g.nodes))
    if dtype == "int8":
        o = w_shape[0]
        w = g.add_tensor(f"{y}_w", w_shape, "int8", rng.integers(-127, 128, w_shape).astype(np.int8),
                         quant=Quant(np.full(o, 0.02, np.float32), np.zeros(o, np.int64), 0)).name
    else:
        w = g.add_const(f"{y}_w", rng.standard_normal(w_shape))
    g.add_node("Conv2D", [x, w], [y], strides=(stride, stride), dilations=(1, 1), pads=(1, 1, 1, 1),
               groups=groups, activation=None, name=y)


def dw_graph(dtype: str, stride: int) -> Graph:
    """pointwise 4 -> 12 channels, depthwise 3x3 (stride 1 or 2), relu: every layer can write over its input."""
    g = Graph(f"dw_{dtype}_{stride}")
    q = (lambda s, z: dict(quant=Quant(np.float32(s), np.int64(z)))) if dtype == "int8" else (lambda s, z: {})
    oh = (9 + 2 - 3) // stride + 1
    g.add_tensor("x", (1, 9, 9, 4), dtype, **q(0.05, 3))
    g.add_tensor("p", (1, 9, 9, 12), dtype, **q(0.1, -5))
    g.add_tensor("d", (1, oh, oh, 12), dtype, **q(0.2, 7))
    g.add_tensor("y", (1, oh, oh, 12), dtype, **q(0.2, 7))
    _conv(g, "x", "p", (12, 1, 1, 4), 1, 1, dtype)
    g.nodes[-1].attrs["pads"] = (0, 0, 0, 0)
    _conv(g, "p", "d", (12, 3, 3, 1), 12, stride, dtype)
    g.add_node("Activation", ["d"], ["y"], fn="relu", name="relu")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def run_with(g, kinds, x):
    plan = schedule(g, variants=(("forced", kinds, False),))
    return plan, run_generated(Compiled("test", g, plan, generate(plan, "m", "test")), [x])[0]


def _input(g, n=3):
    rng = np.random.default_rng(5)
    shape = (n, *g.tensors["x"].shape[1:])
    if g.tensors["x"].dtype == "int8":
        return rng.integers(-128, 128, shape).astype(np.int8)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kinds", [("elementwise",), ("depthwise",), ("overlap",), overlap.KINDS])
def test_each_in_place_kind_matches_the_plain_plan(dtype, stride, kinds):
    g = dw_graph(dtype, stride)
    x = _input(g)
    _, plain = run_with(g, (), x)
    plan, ours = run_with(g, kinds, x)
    assert plan.in_place and {c.kind for c in plan.in_place.values()} <= set(kinds)
    np.testing.assert_array_equal(ours, plain)
    if dtype == "float32":
        ref = np.stack([interp.run(g, [x[i:i + 1]])["y"] for i in range(len(x))])
        np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_breaking_the_overlap_contract_is_caught(monkeypatch):
    """The pointwise layer's input placed one pixel lower than its kernel allows: its output overwrites input
    pixels the kernel still has to read, and the result differs."""
    g = dw_graph("float32", 1)
    x = _input(g)
    _, plain = run_with(g, (), x)
    honest = overlap._window_lead
    monkeypatch.setattr(overlap, "_window_lead", lambda *a: honest(*a) - 2 * 12 * 4)
    plan, broken = run_with(g, ("overlap",), x)
    assert plan.in_place[0].kind == "overlap"
    assert not np.allclose(broken, plain, atol=1e-4)
