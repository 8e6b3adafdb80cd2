"""Kernel scratch within the arena budget (tinyc/codegen/scratch_fit.py): the fast kernels' scratch may grow the
arena only by the allowed slack or up to the board's budget; beyond it the layers at the peak take their
least-scratch variant or the reference kernel, and the outputs stay those of the reference kernels."""
from __future__ import annotations

import numpy as np

from tinyc.codegen import scratch_fit
from tinyc.compiler import codegen_options, compile_graph
from tinyc.ir import Graph
from tinyc.schedule import schedule
from tinyc.verify import run_generated

from test_fast_gemm import _bias, _q, _weights


def wide_1x1() -> Graph:
    """A 1x1 conv over 2 pixels of 512 channels: its kernel scratch (two pixels' inputs sign-extended, 4 KB)
    is larger than its input and output together."""
    rng = np.random.default_rng(3)
    g = Graph("wide")
    g.add_tensor("x", (1, 1, 2, 512), "int8", **_q(0.05, -3))
    g.add_tensor("y", (1, 1, 2, 8), "int8", **_q(0.1, 2))
    w = _weights(g, "w", (8, 1, 1, 512), rng, False)
    g.add_node("Conv2D", ["x", w, _bias(g, "b", 8, rng)], ["y"], strides=[1, 1], dilations=[1, 1],
               pads=[0, 0, 0, 0], groups=1, activation=None, name="pw")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def _kernel(c):
    return [layer["kernel"] for layer in c.library.layers if layer["kernel"]][0]


def test_scratch_within_the_slack_keeps_the_fastest_variant():
    g = wide_1x1()
    base = schedule(g).arena_bytes
    fast = compile_graph(g, "m")
    assert _kernel(fast) == "int8_fast/gemm/1x1"
    assert base < fast.plan.arena_bytes <= scratch_fit.allowed_arena(base)
    assert "two pixels" in fast.library.files["m.c"]


def test_an_arena_limit_trades_scratch_for_sram_and_outputs_stay_exact():
    g = wide_1x1()
    base = schedule(g).arena_bytes
    ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
    x = np.random.default_rng(0).integers(-128, 128, (1, 1, 2, 512)).astype(np.int8)
    want = run_generated(ref, [x])[0]
    # a budget between the byte path's scratch and the two-pixel path's: the single-pixel variant
    small = compile_graph(g, "m", options=codegen_options(arena_limit=base + 600))
    assert _kernel(small) == "int8_fast/gemm/1x1" and small.plan.arena_bytes <= base + 600
    assert "two pixels" not in small.library.files["m.c"]
    # no room at all: the reference kernel, and exactly the reference kernels' arena
    none = compile_graph(g, "m", options=codegen_options(arena_limit=base))
    assert _kernel(none) == "int8/conv2d" and none.plan.arena_bytes == base
    for c in (small, none):
        for dsp in (False, True):
            np.testing.assert_array_equal(run_generated(c, [x], dsp=dsp)[0], want)
