"""Fused blocks (issue 21) compute exactly what their layers compute: the C of a graph in which a block of layers
runs row by row (schedule/fuse_block.py, codegen/fused_block.py) gives the same output bytes as the same layers
run layer by layer, on the host under ASan/UBSan, with the fast kernels (their plain and DSP-emulated paths) and
the reference kernels, float32 and int8 (TFLite-converted Keras models).

Both versions are compiled into one library: the graph keeps its layers and gets a twin of them (the same
constants, reading the same inputs, writing their own output) that is fused, so one build compares the two.
Random chains (tests/fused_chains.py): kernels 1-5, strides 1-3, dilations 1-2, same/valid padding, plain and
depthwise convolution (multiplier 1-2), 1-17 channels (odd row sizes: unaligned rows), inverted-residual blocks
with their Add, max/avg pooling. TINYC_FULL draws many more, and fuses the longest block of every int8 zoo model.
"""
import copy
import os

import numpy as np
import pytest
from fused_chains import branch_nodes, chains, float_graph, keras_model, longest_block, to_int8_tflite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyc.codegen.emit import generate
from tinyc.codegen.scratch_fit import schedule_with_scratch
from tinyc.compiler import Compiled
from tinyc.passes import optimize
from tinyc.schedule import schedule
from tinyc.schedule.fuse_block import fuse_block
from tinyc.verify import run_generated, uses_simd

FULL = bool(os.environ.get("TINYC_FULL"))
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))

# Covered by the default run: a residual block then a strided depthwise; a strided dilated conv, pooling and an
# activation on odd widths; a window taller than the image; rows no window reads (1x1 stride 2, a dilated
# depthwise with stride 3 and multiplier 2).
CHAINS = [
    (12, 5, 3, [("residual", 6, 3), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 5)]),
    (11, 7, 3, [("conv", 2, 1, 2, False, 7), ("pool", "max", 2, 2), ("act", "relu"), ("pool", "avg", 2, 1)]),
    (5, 3, 2, [("conv", 5, 1, 2, True, 3), ("conv", 3, 3, 1, True, 17)]),
    (12, 7, 3, [("conv", 1, 2, 1, False, 9), ("dw", 3, 3, 2, True, 2), ("act", "tanh")]),
]


def twin(g, names, suffix: str = "_fused"):
    """`g` plus a copy of the layers `names` (same constants, same inputs from outside them, their output a new
    graph output): (graph, the copy's layer names)."""
    h = g.copy()
    produced = {t for n in g.nodes if n.name in names for t in n.outputs}
    for n in [n for n in g.nodes if n.name in names]:
        m = copy.deepcopy(n)
        m.name = n.name + suffix
        m.inputs = [t + suffix if t in produced else t for t in n.inputs]
        m.outputs = [t + suffix for t in n.outputs]
        for t in n.outputs:
            v = copy.deepcopy(g.tensors[t])
            v.name = t + suffix
            h.tensors[v.name] = v
        h.nodes.append(m)
    out = [t for t in produced if t in g.outputs]
    assert len(out) == 1
    h.outputs.append(out[0] + suffix)
    return h, [n + suffix for n in names]


def compile_with(g, kernels: str) -> Compiled:
    plan = schedule_with_scratch(g) if kernels == "fast" else schedule(g)
    return Compiled("fused", g, plan, generate(plan, "fused", "fused", kernels=kernels))


def check_fused_equal(g, blocks, inputs, kernels):
    """Twin each block of `g` (lists of layer names), fuse the twins, and compare each twin's output bytes with
    its original's, in one library."""
    h, pairs = g, []
    for names in blocks:
        out = next(n for n in g.nodes if n.name == names[-1]).outputs[0]
        h, fused_names = twin(h, names)
        h = fuse_block(h, fused_names)
        pairs.append((h.outputs.index(out), len(h.outputs) - 1))
    assert sum(n.op == "FusedBlock" for n in h.nodes) == len(blocks)
    compiled = compile_with(h, kernels)
    runs = [run_generated(compiled, inputs)]
    if FULL and kernels == "fast" and uses_simd(compiled):     # (the emulated DSP build takes ~30 s)
        runs.append(run_generated(compiled, inputs, dsp=True))
    for outs in runs:
        for a, b in pairs:
            assert outs[a].tobytes() == outs[b].tobytes(), (h.outputs[a], kernels)


def float_inputs(g, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((2,) + g.tensors[i].shape).astype(np.float32) for i in g.inputs]


def whole_branches(g) -> list:
    """Each input's branch, which must fuse whole."""
    blocks = []
    for x in g.inputs:
        names = branch_nodes(g, x)
        block = longest_block(g, names)
        assert block == names, f"branch of {x}: only {block} of {names} fuse"
        blocks.append(block)
    return blocks


# -- float32 -------------------------------------------------------------------------------------------------

def check_float(chains_):
    g = optimize(float_graph(chains_))
    blocks = whole_branches(g)
    fused = g
    for names in blocks:
        fused = fuse_block(fused, names)
    # float32 has one kernel set: the fast and the reference C are the same text, so one build covers both
    assert compile_with(fused, "fast").library.files["fused.c"] == \
        compile_with(fused, "reference").library.files["fused.c"]
    check_fused_equal(g, blocks, float_inputs(g), "fast")


def test_float_chains():
    check_float(CHAINS)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: random float chains")
@settings(max_examples=25, **SETTINGS)
@given(st.lists(chains(max_layers=5), min_size=1, max_size=4))
def test_random_float_chains(chains_):
    check_float(chains_)


# -- int8 ----------------------------------------------------------------------------------------------------

def int8_graph(chains_, tmp):
    from tinyc.frontends import load_model
    path = to_int8_tflite(keras_model(chains_), tmp / "chains.tflite")
    return optimize(load_model(path))


def int8_inputs(g, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (2,) + g.tensors[i].shape).astype(np.int8) for i in g.inputs]


# (no dilations: TFLiteConverter makes a dilated convolution SpaceToBatchND, convolution, BatchToSpaceND)
KERAS_CHAINS = [
    (12, 5, 3, [("residual", 6, 3), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 5)]),
    (11, 7, 3, [("conv", 2, 1, 1, False, 7), ("pool", "max", 2, 2), ("act", "relu"), ("pool", "avg", 2, 1)]),
    (5, 3, 2, [("conv", 5, 1, 1, True, 3), ("conv", 3, 3, 1, True, 17), ("act", "tanh")]),
    (12, 7, 3, [("conv", 1, 2, 1, False, 9), ("dw", 3, 3, 1, True, 2), ("dw", 5, 1, 1, True, 1)]),
]


@pytest.fixture(scope="module")
def keras_chains(tmp_path_factory):
    return int8_graph(KERAS_CHAINS, tmp_path_factory.mktemp("chains"))


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_int8_chains(keras_chains, kernels):
    check_fused_equal(keras_chains, whole_branches(keras_chains), int8_inputs(keras_chains), kernels)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: random int8 chains")
@settings(max_examples=15, **SETTINGS)
@given(st.lists(chains(max_layers=5, keras=True), min_size=1, max_size=4))
def test_random_int8_chains(tmp_path_factory, chains_):
    g = int8_graph(chains_, tmp_path_factory.mktemp("chains"))
    blocks = whole_branches(g)
    for kernels in ("fast", "reference"):
        check_fused_equal(g, blocks, int8_inputs(g), kernels)
