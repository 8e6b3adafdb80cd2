"""16x8 kernels: every placement and every kernel set computes the same values. The depthwise layer written in
place (the planner's "depthwise" decision: channel by channel through a plane) equals the layer with its own
output buffer, which tests/test_int16_properties.py holds to TFLite's reference kernels."""
import numpy as np

from tinyc.codegen.emit import generate
from tinyc.compiler import Compiled
from tinyc.ir import Graph, Quant
from tinyc.schedule import schedule
from tinyc.verify import run_generated


def _quant(scale):
    return Quant(np.asarray(scale, np.float32), np.asarray(0, np.int64))


def _depthwise_graph(c=5, h=9, w=11, k=3, s=1, pads=(1, 1, 1, 1), seed=0) -> Graph:
    rng = np.random.default_rng(seed)
    oh, ow = (h + pads[0] + pads[2] - k) // s + 1, (w + pads[1] + pads[3] - k) // s + 1
    g = Graph("dw16")
    g.add_tensor("x0", (1, h, w, 1), "int16", quant=_quant(0.001))
    g.add_tensor("w0", (c, 1, 1, 1), "int8", rng.integers(-127, 128, (c, 1, 1, 1)).astype(np.int8),
                 quant=Quant(np.full(c, 0.004, np.float32), np.zeros(c, np.int64), 0))
    g.add_tensor("x", (1, h, w, c), "int16", quant=_quant(0.001))     # a graph input is never written over
    g.add_node("Conv2D", ["x0", "w0"], ["x"], strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1)
    g.add_tensor("w", (c, k, k, 1), "int8", rng.integers(-127, 128, (c, k, k, 1)).astype(np.int8),
                 quant=Quant(rng.uniform(0.002, 0.05, c).astype(np.float32), np.zeros(c, np.int64), 0))
    g.add_tensor("b", (c,), "int64", rng.integers(-1 << 20, 1 << 20, c).astype(np.int64),
                 quant=Quant(np.ones(c, np.float32), np.zeros(c, np.int64), 0))
    g.add_tensor("y", (1, oh, ow, c), "int16", quant=_quant(0.1))
    g.add_node("Conv2D", ["x", "w", "b"], ["y"], strides=(s, s), dilations=(1, 1), pads=pads, groups=c,
               activation={"fn": "relu"})
    g.inputs, g.outputs = ["x0"], ["y"]
    return g


def _build(g, kernels, kinds) -> Compiled:
    plan = schedule(g, variants=(("forced", kinds, False),))
    return Compiled("test", g, plan, generate(plan, "m", "test", kernels=kernels))


def test_depthwise_in_place_equals_its_own_buffer():
    g = _depthwise_graph()
    x = np.random.default_rng(1).integers(-32768, 32768, (4, 9, 11, 1)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    apart = _build(g, "reference", ())
    in_place = _build(g, "reference", ("depthwise",))
    assert {c.kind for c in in_place.plan.in_place.values()} == {"depthwise"}
    assert "int8/depthwise_in_place_16x8" in [layer["kernel"] for layer in in_place.library.layers]
    want, got = run_generated(apart, [x])[0], run_generated(in_place, [x])[0]
    assert want.dtype == np.int16 and np.array_equal(want, got)
    assert len(np.unique(want)) > 100       # not a saturated constant
