"""Fused blocks (issue 21) compute exactly what their layers compute: the C of a graph in which a block of layers
runs row by row (schedule/fuse_block.py, codegen/fused_block.py) gives the same output bytes as the same layers
run layer by layer, on the host under ASan/UBSan, with the fast kernels (their plain and DSP-emulated paths) and
the reference kernels, float32 and int8 (TFLite-converted Keras models).

The fused graph is planned as it would be used: a block may write its output over its dying input (the overlap
contract of its row schedule); the default cases check that some do.
Random chains (tests/fused_chains.py): kernels 1-5, strides 1-3, dilations 1-2, same/valid padding, plain and
depthwise convolution (multiplier 1-2), 1-17 channels (odd row sizes: unaligned rows), inverted-residual blocks
with their Add, max/avg pooling. TINYC_FULL draws many more, and fuses the longest block of every int8 zoo model.

Patch mode (schedule/column_strips.py): the same chains, wider ones and random ones with each block in 2-4 column
strips where block_strips takes the count (a refused count is one "patch mode:" line): the same bytes as layer by
layer, and no block in strips written over its input.
"""
import os
import shutil

import numpy as np
import pytest
from fused_chains import (branch_nodes, chains, float_graph, fusable, keras_model, longest_block, longest_strip_block,
                          to_int8_tflite)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinyc.codegen.emit import generate
from tinyc.codegen.scratch_fit import schedule_with_scratch
from tinyc.compiler import Compiled
from tinyc.errors import TinycError
from tinyc.passes import optimize
from tinyc.schedule import schedule
from tinyc.schedule.column_strips import block_strips
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
    (6, 5, 3, [("conv", 3, 1, 1, True, 3), ("join",), ("dw", 3, 2, 1, False, 1)]),    # two external inputs
    (4, 5, 5, [("pool", "avg", 2, 2, True), ("scale",), ("pool", "max", 2, 2, True)]),  # horizontal pool pads
    # regression: the dilated conv reads only padding rows of its 1-row input: the layers before it never run (their
    # row kernels were emitted unused, the block's input parameter unread: -Werror)
    (3, 1, 1, [("conv", 1, 3, 1, False, 1), ("pool", "max", 1, 1), ("conv", 2, 1, 2, True, 1),
               ("conv", 1, 1, 1, False, 2)]),
]


def compile_with(g, kernels: str) -> Compiled:
    plan = schedule_with_scratch(g) if kernels == "fast" else schedule(g)
    return Compiled("fused", g, plan, generate(plan, "fused", "fused", kernels=kernels))


def run_all(compiled, inputs):
    runs = [run_generated(compiled, inputs)]
    if FULL and uses_simd(compiled):     # the DSP code paths, emulated (the build takes ~30 s)
        runs.append(run_generated(compiled, inputs, dsp=True))
    return runs


def fuse_all(g, blocks, slack_rows: int = 0, strips=None):
    """`g` with each block (lists of layer names) fused; `strips`: a strip count per block (1: row mode).
    `slack_rows`: of every other block (rows moved down less often)."""
    fused = g
    for i, names in enumerate(blocks):
        fused = fuse_block(fused, names, slack_rows=slack_rows * (i % 2), strips=strips[i] if strips else 1)
    assert sum(n.op == "FusedBlock" for n in fused.nodes) == len(blocks)
    return fused


_LAYER_BY_LAYER = {}


def layer_by_layer(g, kernels, inputs, key=None) -> list:
    """run_all of `g`'s C layer by layer; with a `key` (naming the graph: a fixed chain set), once per key, kernels
    and inputs in this module (the row-mode and the patch-mode tests compare with the same runs)."""
    if key is None:
        return run_all(compile_with(g, kernels), inputs)
    memo = (key, kernels, tuple(x.tobytes() for x in inputs))
    if memo not in _LAYER_BY_LAYER:
        _LAYER_BY_LAYER[memo] = run_all(compile_with(g, kernels), inputs)
    return _LAYER_BY_LAYER[memo]


def check_fused_equal(g, blocks, inputs, kernels, slack_rows: int = 0, strips=None, want=None) -> Compiled:
    """Fuse each block of `g` (fuse_all) and compare the output bytes of the two graphs' C; the fused library.
    `want`: the layer-by-layer outputs (run_all), when already computed."""
    fused = fuse_all(g, blocks, slack_rows, strips)
    want = want or run_all(compile_with(g, kernels), inputs)
    compiled = compile_with(fused, kernels)
    for got in run_all(compiled, inputs):
        for name, a, b in zip(g.outputs, want[0], got):
            assert a.tobytes() == b.tobytes(), (name, kernels, strips)
    return compiled


NO_OVERLAP = ("the planner wrote no fused block over its dying input here: the overlap contract goes untested "
              "(a coverage guard: the outputs were equal; make a case where the planner overlaps)")


def overlapped_blocks(compiled) -> int:
    """Fused blocks that write their output over their dying input (the overlap contract)."""
    g = compiled.plan.graph
    return sum(g.nodes[i].op == "FusedBlock" and p.kind == "overlap" for i, p in compiled.plan.in_place.items())


def float_inputs(g, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((2,) + g.tensors[i].shape).astype(np.float32) for i in g.inputs]


def whole_branches(g) -> list:
    """The layers of each output, which must fuse whole."""
    blocks = []
    for y in g.outputs:
        names = branch_nodes(g, y)
        block = longest_block(g, names)
        assert block == names, f"branch of {y}: only {block} of {names} fuse"
        blocks.append(block)
    return blocks


# -- float32 -------------------------------------------------------------------------------------------------

def split(g, blocks, cuts) -> list:
    """Each block cut before the layers at positions `cuts[i]` (block i): the pieces that fuse, in order (a
    piece that does not, e.g. half a residual block, stays layer by layer). Consecutive blocks: one block's
    output is the next one's input."""
    out = []
    for block, at in zip(blocks, cuts):
        bounds = [0] + sorted({c for c in at if 0 < c < len(block)}) + [len(block)]
        out += [piece for piece in (block[a:b] for a, b in zip(bounds, bounds[1:])) if fusable(g, piece)]
    return out


def check_float(chains_, cuts=None, slack_rows: int = 0, key=None):
    g = optimize(float_graph(chains_))
    blocks = whole_branches(g)
    if cuts is not None:
        blocks = split(g, blocks, cuts)
    fused = g
    for names in blocks:
        fused = fuse_block(fused, names)
    # float32 has one kernel set: the fast and the reference C are the same text, so one build covers both
    assert compile_with(fused, "fast").library.files["fused.c"] == \
        compile_with(fused, "reference").library.files["fused.c"]
    inputs = float_inputs(g)
    return check_fused_equal(g, blocks, inputs, "fast", slack_rows, want=layer_by_layer(g, "fast", inputs, key))


def test_float_chains():
    """Each chain one block, but the first two: blocks back to back (the residual block, then the depthwise and the
    1x1 after it; a convolution, then each pooling and activation layer after it, one block each). Every other
    block holds 2 rows more per line buffer (slack_rows)."""
    compiled = check_float(CHAINS, cuts=[[4], [1, 2, 3]] + [[]] * (len(CHAINS) - 2), slack_rows=2, key="CHAINS")
    assert sum(n.op == "FusedBlock" for n in compiled.plan.graph.nodes) == 2 + 4 + len(CHAINS) - 2
    assert overlapped_blocks(compiled) >= 1, NO_OVERLAP


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: random float chains")
@settings(max_examples=25, **SETTINGS)
@given(st.lists(chains(max_layers=5), min_size=1, max_size=4), st.data())
def test_random_float_chains(chains_, data):
    cuts = [data.draw(st.lists(st.integers(0, 8), max_size=3)) for _ in chains_]
    check_float(chains_, cuts, data.draw(st.sampled_from((0, 1, 3))))


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
    (12, 7, 3, [("conv", 1, 2, 1, False, 9), ("dw", 3, 3, 1, True, 2), ("join",), ("dw", 5, 1, 1, True, 1)]),
    (4, 5, 5, [("pool", "avg", 2, 2, True), ("pool", "max", 2, 2, True)]),     # horizontal pool pads
    (3, 7, 1, [("conv", 1, 1, 1, False, 1), ("pool", "max", 3, 1)]),           # pooling windows over every row
    (3, 6, 3, [("conv", 3, 1, 1, True, 4), ("pool", "avg", 3, 2)]),
]


@pytest.fixture(scope="module")
def keras_chains(tmp_path_factory):
    return int8_graph(KERAS_CHAINS, tmp_path_factory.mktemp("chains"))


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_int8_chains(keras_chains, kernels):
    inputs = int8_inputs(keras_chains)
    compiled = check_fused_equal(keras_chains, whole_branches(keras_chains), inputs, kernels,
                                 want=layer_by_layer(keras_chains, kernels, inputs, "KERAS_CHAINS"))
    assert overlapped_blocks(compiled) >= 1, NO_OVERLAP


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: 16x8 chains")
def test_int16_chains(tmp_path):
    """16x8 (int16 activations, int8 weights): int16 line buffers, their padding rows zero (the zero point)."""
    from tinyc.frontends import load_model
    g = optimize(load_model(to_int8_tflite(keras_model(KERAS_CHAINS), tmp_path / "chains.tflite", int16=True)))
    rng = np.random.default_rng(0)
    xs = [rng.integers(-32768, 32768, (2,) + g.tensors[i].shape).astype(np.int16) for i in g.inputs]
    blocks = whole_branches(g)
    for kernels in ("fast", "reference"):
        assert overlapped_blocks(check_fused_equal(g, blocks, xs, kernels)) >= 1, NO_OVERLAP
    if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
        for board in ("nucleo-f412zg", "pico"):     # int16 rows of any length on the M4's DSP path and the M0+
            check_under_qemu(g, xs, board, tmp_path / board)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: random int8 chains")
@settings(max_examples=15, **SETTINGS)
@given(st.lists(chains(max_layers=5, keras=True), min_size=1, max_size=4))
def test_random_int8_chains(tmp_path_factory, chains_):
    g = int8_graph(chains_, tmp_path_factory.mktemp("chains"))
    blocks = whole_branches(g)
    for kernels in ("fast", "reference"):
        check_fused_equal(g, blocks, int8_inputs(g), kernels)


def test_block_of_float_and_int8_layers():
    """Regression: a block from a float layer through Quantize to int8 layers (as the converter leaves GELU's POW)
    was refused at generation ("computes on ['float32', 'int8'] tensors"): the block's scratch was typed by one
    kernel family for all its layers."""
    from tinyc.ir import Quant
    g = float_graph([(7, 5, 3, [("conv", 3, 1, 1, True, 5)])])
    q = Quant(np.array(0.05), np.array(3))
    g.add_tensor("q", g.tensors["b0_l0"].shape, "int8", quant=q)
    g.add_node("Quantize", ["b0_l0"], ["q"], name="quantize")
    g.add_tensor("pooled", (1, 3, 2, 5), "int8", quant=q)
    g.add_node("MaxPool2D", ["q"], ["pooled"], name="pool", kernel=(3, 3), strides=(2, 2), dilations=(1, 1),
               pads=(0, 0, 0, 0))
    g.outputs = ["pooled"]
    for kernels in ("fast", "reference"):
        check_fused_equal(g, [["b0_l0", "quantize", "pool"]], float_inputs(g), kernels)


# -- patch mode: a block's output in column strips (schedule/column_strips.py) --------------------------------------

STRIP_COUNTS = (2, 3, 4)

# Most CHAINS end 1-3 columns wide, too narrow for most strip counts; these end 5-8 wide, so 2-4 strips of unequal
# widths run, each narrower than some window of its block (neighbouring strips read shared columns): a residual
# block (its input read by a 1x1 and the Add: views) then a strided depthwise and a 1x1; a dilated valid
# convolution, pooling and an activation, then a 3x3; a 5x5 window wider than a strip, then a stride-3
# convolution; a 1x1 of stride 2 then a dilated depthwise of multiplier 2; a second external input (read by every
# strip), then a valid strided depthwise; horizontal pool pads (the right one only in the last strip).
STRIP_CHAINS = [
    (8, 16, 3, [("residual", 6, 3), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 5)]),
    (9, 15, 3, [("conv", 3, 1, 2, False, 4), ("pool", "max", 2, 2), ("act", "relu"), ("conv", 3, 1, 1, True, 5)]),
    (6, 13, 2, [("conv", 5, 1, 1, True, 3), ("conv", 3, 3, 1, True, 7)]),
    (7, 14, 3, [("conv", 1, 2, 1, False, 6), ("dw", 3, 1, 2, True, 2), ("act", "tanh")]),
    (6, 12, 3, [("conv", 3, 1, 1, True, 3), ("join",), ("dw", 3, 2, 1, False, 1)]),
    (4, 14, 5, [("pool", "avg", 2, 2, True), ("scale",), ("pool", "max", 2, 2, True)]),
]
# (as KERAS_CHAINS: no dilations; pools that slide over rows: one covering every row would be running, and a
# block with a running pool is refused in strips)
KERAS_STRIP_CHAINS = [
    (8, 16, 3, [("residual", 6, 3), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 5)]),
    (9, 15, 3, [("conv", 3, 1, 1, False, 4), ("pool", "max", 2, 2), ("act", "relu"), ("conv", 3, 1, 1, True, 5)]),
    (6, 13, 2, [("conv", 5, 1, 1, True, 3), ("conv", 3, 3, 1, True, 7), ("act", "tanh")]),
    (7, 14, 3, [("conv", 1, 2, 1, False, 6), ("dw", 3, 1, 1, True, 2), ("join",), ("dw", 5, 1, 1, True, 1)]),
    (8, 14, 5, [("pool", "avg", 2, 2, True), ("pool", "max", 2, 2, True)]),
    (8, 12, 3, [("conv", 3, 2, 1, True, 4), ("pool", "avg", 3, 1)]),
]


def strip_counts(g, names) -> list:
    """The counts of STRIP_COUNTS the block of layers `names` runs in; each other count is refused in one
    "patch mode:" line."""
    fits = []
    for count in STRIP_COUNTS:
        try:
            block_strips(g, names, count)
        except TinycError as e:
            assert str(e).startswith("patch mode: ") and "\n" not in str(e), (names[0], count, str(e))
            continue
        fits.append(count)
    return fits


def strip_plans(counts: list, rounds: int) -> list:
    """A strip count per block (1: row mode, for a block that runs in none) for each of `rounds` compilations:
    block i runs in its (i + r)-th count in round r, so len(STRIP_COUNTS) rounds run every block in every count it
    takes, and one round already runs blocks in different counts."""
    return [[c[(i + r) % len(c)] if c else 1 for i, c in enumerate(counts)] for r in range(rounds)]


def blocks_in_strips(compiled) -> int:
    """The fused blocks of the plan in strips; none writes its output over its input (each strip loads the
    input's rows again: schedule/overlap.py gives such a block no lead), and the plan gives each the line buffers
    of its widest strip (they overflow the block's scratch otherwise, which the outputs show only where the bytes
    after it are live)."""
    from tinyc.ops.fused_block import strips_of
    g = compiled.plan.graph
    in_strips = {i for i, n in enumerate(g.nodes) if n.op == "FusedBlock" and n.attrs.get("strips", 1) > 1}
    overlapped = [g.nodes[i].name for i, p in compiled.plan.in_place.items() if i in in_strips and p.kind == "overlap"]
    assert not overlapped, f"blocks in strips written over their input: {overlapped}"
    for i in in_strips:
        widest = max(strip.sched.line_bytes for strip in strips_of(g.nodes[i]))
        assert compiled.plan.work[i].size >= widest, (g.nodes[i].name, compiled.plan.work[i].size, widest)
    return len(in_strips)


def check_strips_equal(g, blocks, inputs, kernels, plans, slack_rows: int = 0, key=None) -> None:
    """check_fused_equal for each plan (a strip count per block), against one layer-by-layer run (layer_by_layer:
    `key`)."""
    want = layer_by_layer(g, kernels, inputs, key)
    for strips in plans:
        compiled = check_fused_equal(g, blocks, inputs, kernels, slack_rows, strips, want)
        assert blocks_in_strips(compiled) == sum(count > 1 for count in strips)


def strip_coverage(counts: list, wide: int) -> None:
    """Most fixed blocks run in strips (so the test cannot pass by running none), at least `wide` of them (the
    wide chains') in every count."""
    assert sum(map(bool, counts)) > len(counts) / 2, f"only {sum(map(bool, counts))} of {len(counts)} blocks " \
        "run in strips"
    every = sum(c == list(STRIP_COUNTS) for c in counts)
    assert every >= wide, f"{every} blocks run in every strip count, not {wide}: {counts}"


@pytest.mark.parametrize("fixed", ["CHAINS", "STRIP_CHAINS"])
def test_float_chains_in_strips(fixed):
    """CHAINS (most of their blocks take 2 strips; a refused block runs in row mode), STRIP_CHAINS (the first cut
    in two: blocks back to back, each strip of the second reading the first's output), each block in 2-4 strips
    where it takes them (one round of strip_plans: the counts differ between blocks), every other block with 2
    slack rows: the C equals layer by layer. Two graphs: one of all 13 branches takes the memory planner ~10 s.
    TINYC_FULL: every block in every count it takes."""
    chains_ = dict(CHAINS=CHAINS, STRIP_CHAINS=STRIP_CHAINS)[fixed]
    g = optimize(float_graph(chains_))
    blocks = split(g, whole_branches(g), [[4] if fixed == "STRIP_CHAINS" else []] + [[]] * (len(chains_) - 1))
    counts = [strip_counts(g, names) for names in blocks]
    strip_coverage(counts, len(blocks) if fixed == "STRIP_CHAINS" else 0)
    plans = strip_plans(counts, len(STRIP_COUNTS) if FULL else 1)
    fused = fuse_all(g, blocks, strips=plans[0])
    assert compile_with(fused, "fast").library.files["fused.c"] == \
        compile_with(fused, "reference").library.files["fused.c"]
    check_strips_equal(g, blocks, float_inputs(g), "fast", plans, slack_rows=2, key=fixed)


@settings(max_examples=25 if FULL else 1, **SETTINGS)
@given(st.lists(chains(max_layers=5, max_size=16), min_size=1, max_size=3), st.data())
def test_random_float_chains_in_strips(chains_, data):
    """Random chains (cut at random into blocks back to back), each block in a drawn count of strips it takes."""
    g = optimize(float_graph(chains_))
    blocks = split(g, whole_branches(g), [data.draw(st.lists(st.integers(0, 8), max_size=2)) for _ in chains_])
    strips = [data.draw(st.sampled_from(c)) if c else 1 for c in (strip_counts(g, names) for names in blocks)]
    assume(any(count > 1 for count in strips))
    check_strips_equal(g, blocks, float_inputs(g), "fast", [strips], data.draw(st.sampled_from((0, 1, 3))))


@pytest.fixture(scope="module")
def keras_strip_chains(tmp_path_factory):
    return int8_graph(KERAS_STRIP_CHAINS, tmp_path_factory.mktemp("strip_chains"))


def int8_strip_plans(g, wide: bool, rounds: int) -> tuple[list, list]:
    """(blocks, `rounds` strip plans) of the int8 chains `g`; `wide`: KERAS_STRIP_CHAINS, every block in every
    count."""
    blocks = whole_branches(g)
    counts = [strip_counts(g, names) for names in blocks]
    strip_coverage(counts, len(blocks) if wide else 0)
    return blocks, strip_plans(counts, rounds)


@pytest.mark.parametrize("kernels", ["fast", "reference"])
@pytest.mark.parametrize("fixed", ["KERAS_CHAINS", "KERAS_STRIP_CHAINS"])
def test_int8_chains_in_strips(request, fixed, kernels):
    """KERAS_CHAINS and KERAS_STRIP_CHAINS in strips, int8 (the fast kernels' plain path; TINYC_FULL: also the DSP
    path, and every block in every count). By default the two kernel sets run different rounds of counts, and
    KERAS_STRIP_CHAINS only the fast kernels (KERAS_CHAINS shares its layer-by-layer runs with test_int8_chains)."""
    if not FULL and (fixed, kernels) == ("KERAS_STRIP_CHAINS", "reference"):
        pytest.skip("TINYC_FULL: the wide int8 chains with the reference kernels")
    g = request.getfixturevalue(fixed.lower())
    blocks, plans = int8_strip_plans(g, fixed == "KERAS_STRIP_CHAINS", len(STRIP_COUNTS))
    check_strips_equal(g, blocks, int8_inputs(g), kernels, plans if FULL else [plans[kernels == "reference"]],
                       key=fixed)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: random int8 chains in strips")
@settings(max_examples=15, **SETTINGS)
@given(st.lists(chains(max_layers=5, max_size=16, keras=True), min_size=1, max_size=3), st.data())
def test_random_int8_chains_in_strips(tmp_path_factory, chains_, data):
    """Random int8 chains, each block in a drawn count of strips it takes, fast and reference kernels. (Chains
    whose float twin runs no block in strips are not converted.)"""
    twin = optimize(float_graph(chains_))
    assume(any(strip_counts(twin, names) for names in whole_branches(twin)))
    g = int8_graph(chains_, tmp_path_factory.mktemp("chains"))
    blocks = whole_branches(g)
    strips = [data.draw(st.sampled_from(c)) if c else 1 for c in (strip_counts(g, names) for names in blocks)]
    for kernels in ("fast", "reference"):
        check_strips_equal(g, blocks, int8_inputs(g), kernels, [strips])


# Regressions (found here, fixed in 758213d): a pool over every row padding a column is not running
# (row_schedule._running_pool), but in the strips away from that pad it pads none and is running. Two such strips of
# different widths emitted accumulate functions of one name (gcc: redefinition); a running pool only after strip 0
# had no accumulators (KeyError at generation); pads on both sides: the middle one of 3 strips.
POOL_PADS = [(7, (0, 0, 0, 1)), (7, (0, 1, 0, 0)), (6, (0, 1, 0, 1))]


def test_pool_over_every_row_in_strips():
    """Branch i: int8 2 x width x 3 -> relu -> 2x2 max pool of stride 2 over both rows, horizontal pads (POOL_PADS[i];
    1x4x3 output), in 2 and 3 strips: the C equals layer by layer."""
    from tinyc.ir import Graph, Quant
    q = Quant(np.array(0.05, np.float32), np.array(3))
    g = Graph("pools")
    for i, (width, pads) in enumerate(POOL_PADS):
        g.add_tensor(f"x{i}", (1, 2, width, 3), "int8", quant=q)
        g.add_tensor(f"a{i}", (1, 2, width, 3), "int8", quant=q)
        g.add_node("Activation", [f"x{i}"], [f"a{i}"], name=f"relu{i}", fn="relu")
        g.add_tensor(f"y{i}", (1, 1, 4, 3), "int8", quant=q)
        g.add_node("MaxPool2D", [f"a{i}"], [f"y{i}"], name=f"pool{i}", kernel=(2, 2), strides=(2, 2),
                   dilations=(1, 1), pads=pads)
        g.inputs.append(f"x{i}")
        g.outputs.append(f"y{i}")
    blocks = [[f"relu{i}", f"pool{i}"] for i in range(len(POOL_PADS))]
    assert all({2, 3} <= set(strip_counts(g, names)) for names in blocks)
    for kernels in ("fast", "reference"):
        check_strips_equal(g, blocks, int8_inputs(g), kernels, [[2] * len(blocks), [3] * len(blocks)])


# -- the int8 test zoo -----------------------------------------------------------------------------------------

def zoo_names():
    import int8_zoo
    return sorted(int8_zoo.BUILDERS)


def any_inputs(g, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (2,) + g.tensors[i].shape).astype(np.int8) if g.tensors[i].dtype == "int8"
            else rng.standard_normal((2,) + g.tensors[i].shape).astype(np.float32) for i in g.inputs]


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: every int8 zoo model")
@pytest.mark.parametrize("name", zoo_names())
def test_int8_zoo_longest_block(int8_models, name):
    from tinyc.frontends import load_model
    g = optimize(load_model(int8_models(name)))
    block = longest_block(g, [n.name for n in g.nodes])
    if len(block) < 2:
        pytest.skip(f"{name}: no two layers fuse")
    out = next(n for n in g.nodes if n.name == block[-1]).outputs[0]
    if out not in g.outputs:            # compared directly, not only through the layers after it
        g.outputs.append(out)
    for kernels in ("fast", "reference"):
        check_fused_equal(g, [block], any_inputs(g), kernels)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: every int8 zoo model in strips")
@pytest.mark.parametrize("name", zoo_names())
def test_int8_zoo_longest_block_in_strips(int8_models, name):
    """The longest block of each int8 zoo model that runs in strips, in every count of 2-4 it takes, compared
    directly and through the layers after it: fast kernels (plain and DSP paths) and reference kernels."""
    from tinyc.frontends import load_model
    g = optimize(load_model(int8_models(name)))
    block = longest_strip_block(g, [n.name for n in g.nodes])
    if len(block) < 2:
        pytest.skip(f"{name}: no two layers run in strips")
    out = next(n for n in g.nodes if n.name == block[-1]).outputs[0]
    if out not in g.outputs:
        g.outputs.append(out)
    plans = [[count] for count in strip_counts(g, block)]
    for kernels in ("fast", "reference"):
        check_strips_equal(g, [block], any_inputs(g), kernels, plans)


# -- on target ----------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not FULL or not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="TINYC_FULL, with arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("board", ["nucleo-f412zg", "pico", "pico2"])
def test_int8_chains_under_qemu(keras_chains, tmp_path, board):
    """The fused chains on the emulated Cortex-M4 and M33 (the DSP code paths, for real) and M0+ (its assembly
    GEMM) give the unfused library's bytes on the host."""
    check_under_qemu(keras_chains, int8_inputs(keras_chains), board, tmp_path)


@pytest.mark.skipif(not FULL or not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="TINYC_FULL, with arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("board", ["nucleo-f412zg", "pico", "pico2"])
def test_int8_chains_in_strips_under_qemu(keras_strip_chains, tmp_path, board):
    """KERAS_STRIP_CHAINS in 2-4 strips (one round of strip_plans) on the emulated M4, M0+ and M33 give the
    unfused library's bytes on the host."""
    g = keras_strip_chains
    _, plans = int8_strip_plans(g, True, 1)
    check_under_qemu(g, int8_inputs(g), board, tmp_path, strips=plans[0])


def check_under_qemu(g, xs, board, out, strips=None):
    """`strips`: a strip count per output's branch (whole_branches; default: row mode)."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    want = run_generated(compile_with(g, "fast"), xs)
    compiled = compile_with(fuse_all(g, whole_branches(g), strips=strips), "fast")
    assert blocks_in_strips(compiled) == sum(count > 1 for count in strips or [])
    write_library(compiled.library, str(out), force=True)
    write_firmware(compiled, load_board(board), str(out), xs)
    got = emulate(compiled, load_board(board), out, profile=False)["outputs"]
    for name, a, b in zip(g.outputs, want, got):
        assert a.tobytes() == b.tobytes(), (name, board)


def float_zoo_cases():
    from model_zoo import ZOO, formats
    return [(name, fmt) for name in sorted(ZOO) if not name.startswith("mlp") for fmt in formats(name)]


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: every float zoo model")
@pytest.mark.parametrize("name,fmt", float_zoo_cases())
def test_float_zoo_longest_block(zoo, name, fmt):
    """The float32 test zoo (tests/model_zoo.py) as Keras and ONNX (NCHW, its layout Transposes outside the
    blocks): the longest block fused, compared directly and through the layers after it."""
    from tinyc.frontends import load_model
    g = optimize(load_model(zoo.path(name, fmt)))
    block = longest_block(g, [n.name for n in g.nodes])
    if len(block) < 2:
        pytest.skip(f"{name}.{fmt}: no two layers fuse")
    out = next(n for n in g.nodes if n.name == block[-1]).outputs[0]
    if out not in g.outputs:
        g.outputs.append(out)
    check_fused_equal(g, [block], any_inputs(g), "fast")


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: every int8 zoo model through the fusion planner")
@pytest.mark.parametrize("name", zoo_names())
def test_int8_zoo_planned_fusion(int8_models, name):
    """`--fusion auto` (the planner's blocks: by default within its instruction budget; with an arena budget just
    below the layer-by-layer arena, whatever gets under it, where a plan does) gives the bytes of `--fusion none`,
    fast kernels (plain and DSP paths) and reference kernels."""
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    path = int8_models(name)
    for kernels in ("fast", "reference"):
        plain = compile_model(path, "fused", options=dict(kernels=kernels, fusion="none"))
        xs = any_inputs(plain.plan.graph)
        want = run_all(plain, xs)
        for budget in (None, plain.plan.arena_bytes - 4):
            try:
                fused = compile_model(path, "fused", options=dict(kernels=kernels, fusion="auto", arena_budget=budget))
            except TinycError as e:
                assert budget is not None and "no plan fits it" in str(e), e
                continue
            for got, ref in zip(run_all(fused, xs), want):
                for a, b in zip(got, ref):
                    assert a.tobytes() == b.tobytes(), (name, kernels, budget)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: int4 weights")
@pytest.mark.parametrize("name", ["cnn_residual", "cnn_depthwise", "cnn_plain"])
def test_int4_weights_longest_block(zoo, name):
    """tinyc's own int8 quantization with int4 weights (--weights int4: the int4 GEMM and depthwise kernels, their
    unpacking scratch inside the block's): the longest block fused equals unfused."""
    from tinyc.compiler import compile_model
    from tinyc.frontends import load_model
    from tinyc.quant.calibrate import random_calibration
    path = zoo.path(name, "keras")
    plain = compile_model(path, "fused", quantize="int8", calib=random_calibration(load_model(path)),
                          options=dict(kernels="fast", weights="int4", fusion="none"))
    assert any("int4" in (layer["kernel"] or "") for layer in plain.library.layers)
    g = optimize(plain.quantized)
    block = longest_block(g, [n.name for n in g.nodes])
    assert len(block) >= 2
    out = next(n for n in g.nodes if n.name == block[-1]).outputs[0]
    if out not in g.outputs:
        g.outputs.append(out)
    for kernels in ("fast", "reference"):
        check_fused_equal(g, [block], any_inputs(g), kernels)
