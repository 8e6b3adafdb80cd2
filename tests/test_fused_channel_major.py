"""Channel-major rows between a GEMM row kernel and a depthwise one (codegen/fused_block.channel_major_pairs): on
the DSP path the conv's row kernel stores its output row channel by channel and the depthwise planar kernel copies
each channel's run in words (int8_fast.PLANAR_ROWS_OUT, int8_depthwise.PLANAR_ROWS_IN); the byte path keeps the
rows pixel-major (and the raster kernel where that one is the cheaper: depthwise_split.c.j2). The fused C equals
the unfused C byte for byte on both paths; the reference kernels, which read pixel-major rows only, never get the
marks."""
import re

import numpy as np
import pytest

from tinyc.codegen.emit import generate
from tinyc.codegen.scratch_fit import schedule_with_scratch
from tinyc.compiler import Compiled
from tinyc.ir import Graph, Quant
from tinyc.schedule import schedule
from tinyc.schedule.fuse_block import fuse_block
from tinyc.verify import run_generated

MARK = "channel-major rows"
# (kind, k, stride, output channels): an im2col conv then a depthwise (stride 1, width 15: 3 words + 3 bytes per
# run), a 1x1 conv then a strided depthwise of 12 channels, a depthwise after a depthwise (pixel-major rows: the
# producer is no GEMM)
LAYERS = [("conv", 3, 2, 8), ("dw", 3, 1, 8), ("conv", 1, 1, 12), ("dw", 3, 2, 12), ("dw", 3, 1, 12),
          ("conv", 1, 1, 4)]


def _graph() -> Graph:
    rng = np.random.default_rng(5)
    g = Graph("cm")
    x = g.add_tensor("x", (1, 9, 30, 3), "int8", quant=Quant(np.float32(0.03), np.int64(-5))).name
    g.inputs = [x]
    for i, (kind, k, s, oc) in enumerate(LAYERS):
        _, h, w, c = g.tensors[x].shape
        oh, ow = -(-h // s), -(-w // s)
        ph, pw = max((oh - 1) * s + k - h, 0), max((ow - 1) * s + k - w, 0)
        wshape = (c, k, k, 1) if kind == "dw" else (oc, k, k, c)
        wq = rng.integers(-127, 128, wshape).astype(np.int8)
        scales = rng.uniform(0.002, 0.05, wshape[0]).astype(np.float32)
        wt = g.add_tensor(f"w{i}", wshape, "int8", wq, quant=Quant(scales, np.zeros(wshape[0], np.int64), 0)).name
        b = g.add_tensor(f"b{i}", (wshape[0],), "int32", rng.integers(-2000, 2000, wshape[0]).astype(np.int32),
                         quant=Quant(np.ones(wshape[0], np.float32), np.zeros(wshape[0], np.int64), 0)).name
        y = g.add_tensor(f"y{i}", (1, oh, ow, wshape[0]), "int8", quant=Quant(np.float32(0.05), np.int64(3))).name
        g.add_node("Conv2D", [x, wt, b], [y], strides=(s, s), dilations=(1, 1),
                   pads=(ph // 2, pw // 2, ph - ph // 2, pw - pw // 2), groups=c if kind == "dw" else 1,
                   activation={"fn": "relu"}, name=f"l{i}")
        x = y
    g.outputs = [x]
    return g


def _compile(g, kernels):
    plan = schedule_with_scratch(g) if kernels == "fast" else schedule(g)
    return Compiled("cm", g, plan, generate(plan, "cm", "cm", kernels=kernels))


@pytest.fixture(scope="module")
def chain():
    g = _graph()
    rng = np.random.default_rng(3)
    xs = [rng.integers(-128, 128, (2,) + g.tensors[i].shape).astype(np.int8) for i in g.inputs]
    return g, xs, run_generated(_compile(g, "fast"), xs)


def test_channel_major_rows_equal_the_unfused_c_on_both_paths(chain):
    g, xs, want = chain
    fused = _compile(fuse_block(g, [n.name for n in g.nodes]), "fast")
    code = fused.library.files["cm.c"]
    assert code.count(MARK) == 2        # the two depthwise row kernels after a GEMM one, their DSP path only
    assert "[(q) * 15] = " in code      # a GEMM row kernel storing its 15-pixel row channel-major
    kernels = dict(re.findall(r"row kernel of layer '(\w+)' \(([^)]*)\)", code))
    # the planar kernel on both paths; planar on DSP cores and raster on the others (the byte path's rows are
    # pixel-major); pixel-major rows after a depthwise layer
    assert (kernels["l1"], kernels["l3"], kernels["l4"]) == (
        "int8_fast/depthwise/planar", "int8_fast/depthwise_split/planar+raster", "int8_fast/depthwise_raster/raster")
    for dsp in (False, True):
        got = run_generated(fused, xs, dsp=dsp)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(want, got)), dsp


def test_reference_kernels_keep_pixel_major_rows(chain):
    g, xs, want = chain
    fused = _compile(fuse_block(g, [n.name for n in g.nodes]), "reference")
    assert MARK not in fused.library.files["cm.c"]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(want, run_generated(fused, xs)))
