"""Patch mode's column strips (schedule/column_strips.py), checked by what they compute: each strip's graph, run by
the interpreter on its strip columns of the block's inputs (a layer reading a view: on the view's columns), gives
output columns that, put side by side, equal the whole block (int8: equal; float: within 1e-4 * (1 + max
|reference|)). Each strip's row schedule, executed on line buffers of exactly its rows with every byte tagged with
the row it holds, computes the same. The strips together compute every column the output depends on, recomputing
the columns their windows share (their MACs are at least those columns'; a chain of 1x1 layers recomputes
nothing), and what cannot run in strips is refused in one line starting "patch mode:". Blocks: random chains
(tests/fused_chains.py), random blocks of one tensor read by several windows, ResNet stages and inverted residuals
built as IR (int8 and float; TINYC_FULL: int8 zoo models through TFLiteConverter).

(The interpreter evaluates an int8 layer in float on the stored integers, without requantization: the int8 cases
check which columns each strip reads, computes and pads, not TFLite's arithmetic, which a strip does not change.)"""
import os

import numpy as np
import pytest
from fused_chains import chains, float_graph, longest_block
from test_row_schedule import execute
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tinyc.errors import TinycError
from tinyc.interp import run_node
from tinyc.ir import Graph, Quant
from tinyc.schedule.column_strips import MAX_STRIPS, VIEW_ATTR, block_strips, view_width
from tinyc.schedule.depth_first_search import layer_macs
from tinyc.schedule.row_schedule import block_nodes, row_schedule, running_layers

FULL = bool(os.environ.get("TINYC_FULL"))
EXAMPLES = 400 if FULL else 40
# Why a block may not run in strips (column_strips.py): a layer pooling over whole rows, an output too narrow for
# the strips, a layer spanning rows that cannot read the columns the other readers of its input need (in the
# middle of the block, or as its last layer, which cannot widen its strip).
REASONS = ("pools over whole rows", "strips of an output", "cannot read the columns",
           "would compute columns outside its strip")


# -- the strips in numpy ---------------------------------------------------------------------------------------

def viewed(graph, node, values: dict) -> dict:
    """The values layer `node` of a strip graph reads: of an input it reads a view of, the view's columns."""
    views = node.attrs.get(VIEW_ATTR) or (None,) * len(node.inputs)
    ins = {t: values[t] for t in node.inputs if t in values}
    for i, t in enumerate(node.inputs):
        if views[i] is not None:
            ins[t] = values[t][:, :, views[i]:views[i] + view_width(graph, node, i)]
    return ins


def run_strip(strip, inputs: dict) -> np.ndarray:
    """The strip's output columns: its graph run layer by layer on its columns of the block's inputs."""
    values = {t: inputs[t][:, :, slice(*strip.ranges[t])] for t in strip.graph.inputs}
    for n in strip.graph.nodes:
        values[n.outputs[0]] = run_node(strip.graph, n, viewed(strip.graph, n, values))[0]
    return values[strip.graph.outputs[0]]


def assembled(g, strips, inputs: dict, run_one=run_strip) -> np.ndarray:
    """The block's output from its strips, each writing its output columns `cols` (every column once)."""
    y = g.tensors[strips[0].graph.outputs[0]]
    out, written = np.zeros(y.shape, y.dtype), []
    for s in strips:
        out[:, :, s.cols[0]:s.cols[1]] = run_one(s, inputs)
        written += range(*s.cols)
    assert written == list(range(y.shape[2]))
    return out


def whole_block(g, names, inputs: dict) -> np.ndarray:
    """The block's output, layer by layer on whole tensors."""
    nodes, _, output = block_nodes(g, names)
    values = dict(inputs)
    for n in nodes:
        values[n.outputs[0]] = run_node(g, n, values)[0]
    return values[output]


def block_inputs(g, names, seed: int = 0) -> dict:
    _, inputs, _ = block_nodes(g, names)
    rng = np.random.default_rng(seed)
    return {t: rng.integers(-128, 128, g.tensors[t].shape).astype(np.int8) if g.tensors[t].dtype == "int8"
            else rng.standard_normal(g.tensors[t].shape).astype(np.float32) for t in inputs}


def assert_same(got, want):
    if want.dtype == np.float32:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * (1 + float(np.abs(want).max(initial=0))))
    else:
        np.testing.assert_array_equal(got, want)


def equal_bounds(width: int, count: int) -> list:
    """`count` column ranges of `width` columns, as equal as can be, the wider ones first."""
    sizes = [width // count + (j < width % count) for j in range(count)]
    edges = np.cumsum([0] + sizes)
    return [(int(a), int(b)) for a, b in zip(edges, edges[1:])]


def check_columns(g, names, strips):
    """Each strip computes its output columns `cols`; every runtime tensor of its graph is its strip columns wide
    (the block's tensor otherwise, constants whole); each view lies inside the tensor it reads; no pad is
    negative (a view may be 0 columns wide: output columns reading padding only); the layers are the block's, in
    order."""
    nodes, inputs, output = block_nodes(g, names)
    for s in strips:
        assert s.ranges[output] == tuple(s.cols)
        assert s.offset(output) == s.cols[0]
        assert [n.name for n in s.graph.nodes] == [n.name for n in nodes]
        assert s.graph.inputs == inputs and s.graph.outputs == [output]
        for t, v in s.graph.tensors.items():
            whole = g.tensors[t]
            assert v.dtype == whole.dtype and v.quant is whole.quant, t
            if v.is_const:
                assert v.shape == whole.shape, t
                continue
            x0, x1 = s.ranges[t]
            assert 0 <= x0 < x1 <= whole.shape[2], (t, x0, x1)
            assert v.shape == (whole.shape[0], whole.shape[1], x1 - x0, whole.shape[3]), (t, v.shape, (x0, x1))
        for n in s.graph.nodes:
            assert min(n.attrs.get("pads", (0,))) >= 0, (n.name, n.attrs["pads"])
            for i, at in enumerate(n.attrs.get(VIEW_ATTR) or ()):
                if at is not None:
                    width = view_width(s.graph, n, i)
                    assert 0 <= at and 0 <= width and at + width <= s.graph.tensors[n.inputs[i]].shape[2], \
                        (n.name, i, at, width)


def snapshot(g) -> tuple:
    return ([(n.name, n.op, list(n.inputs), list(n.outputs), repr(sorted(n.attrs.items()))) for n in g.nodes],
            {t: (v.shape, v.dtype) for t, v in g.tensors.items()}, list(g.inputs), list(g.outputs))


def check_strips(g, names, count: int, seed: int = 0, schedules: bool = False) -> list:
    """The block of layers `names` in `count` strips: their columns, and their output equals the whole block's
    (`schedules`: also computed by each strip's row schedule)."""
    before = snapshot(g)
    strips = block_strips(g, names, count)
    assert snapshot(g) == before, "block_strips changed the graph"
    width = g.tensors[block_nodes(g, names)[2]].shape[2]
    assert [s.cols for s in strips] == equal_bounds(width, count)
    check_columns(g, names, strips)
    x = block_inputs(g, names, seed)
    want = whole_block(g, names, x)
    assert_same(assembled(g, strips, x), want)
    if schedules:
        assert_same(assembled(g, strips, x, execute_strip), want)
    return strips


def outcome(g, names, count: int, **kw):
    """check_strips, or the refusal's reason (it must be one line starting "patch mode:", for a reason given)."""
    try:
        check_strips(g, names, count, **kw)
    except TinycError as e:
        message = str(e)
        assert message.startswith("patch mode: ") and "\n" not in message, message
        reason = [r for r in REASONS if r in message]
        assert reason, f"refused for no reason given: {message}"
        return reason[0]
    return "strips"


# -- a strip's row schedule, executed --------------------------------------------------------------------------

def execute_strip(strip, inputs: dict) -> np.ndarray:
    """The strip's output columns computed by its row schedule's actions alone (test_row_schedule.execute: line
    buffers of exactly the scheduled rows, every byte tagged with the row last written over it), its external
    rows the strip's columns of `inputs`, each layer reading its view of its input rows."""
    def load(t, row):
        return inputs[t][0, row, slice(*strip.ranges[t])]
    y = strip.graph.tensors[strip.sched.output]
    return execute(strip.graph, strip.sched, {}, load=load, view=viewed).astype(y.dtype)


# -- random chains ---------------------------------------------------------------------------------------------

def chain_block(chain, seed: int = 0):
    g = float_graph([chain], seed)
    return g, longest_block(g, [n.name for n in g.nodes])


@settings(max_examples=EXAMPLES, deadline=None)
@given(chains(max_layers=5))
@example((9, 11, 3, [("conv", 3, 1, 1, True, 4), ("conv", 3, 2, 1, True, 4), ("conv", 1, 1, 1, True, 5)]))
@example((12, 9, 2, [("residual", 6, 3), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 4)]))
@example((11, 12, 3, [("conv", 2, 3, 2, False, 4), ("pool", "max", 2, 2), ("act", "relu")]))
@example((5, 9, 2, [("conv", 5, 1, 2, True, 3), ("pool", "avg", 3, 1)]))          # dilated, wider than a strip
@example((12, 10, 3, [("conv", 1, 2, 1, False, 3), ("dw", 3, 3, 2, True, 2)]))     # strided 1x1: a strided view
@example((6, 8, 3, [("conv", 3, 1, 1, True, 3), ("join",), ("dw", 3, 2, 1, False, 1)]))   # two external inputs
@example((4, 9, 5, [("pool", "avg", 2, 2, True), ("scale",), ("pool", "max", 2, 2, True)]))  # horizontal pads
@example((7, 12, 2, [("residual", 4, 3), ("residual", 3, 3), ("conv", 3, 1, 1, True, 2)]))     # views of views
@example((3, 5, 1, [("conv", 5, 1, 1, True, 2), ("conv", 5, 1, 1, True, 1)]))       # windows wider than strips
def test_random_chains_in_strips(chain):
    """2 to 4 strips of the longest block of a random chain: refused for a reason given, or equal to the block."""
    g, names = chain_block(chain)
    if not names:
        return
    width = g.tensors[block_nodes(g, names)[2]].shape[2]
    for count in range(2, min(4, width) + 1):
        outcome(g, names, count)


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(chains(max_layers=4, max_size=10))
@example((12, 9, 2, [("residual", 6, 3), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 4)]))
@example((8, 11, 3, [("conv", 3, 2, 2, True, 3), ("join",), ("conv", 1, 2, 1, False, 2), ("act", "tanh")]))
def test_random_chains_strip_schedules_execute(chain):
    """Each strip's row schedule computes the strip's columns (and only with the rows it holds)."""
    g, names = chain_block(chain)
    if names:
        width = g.tensors[block_nodes(g, names)[2]].shape[2]
        for count in sorted({2, min(3, width)} - {1}):
            outcome(g, names, count, schedules=True)


def block_macs(g, nodes) -> int:
    return sum(layer_macs(g, n) for n in nodes)


def read_columns(g, nodes, output: str) -> dict:
    """{tensor: the columns of it the block's output depends on}: from every output column back through the
    taps of each layer's window (a strided layer skips columns; padding is no column)."""
    read = {output: set(range(g.tensors[output].shape[2]))}
    for n in reversed(nodes):
        a = n.attrs
        if n.op == "Conv2D":
            kw, stride, dilation = g.tensors[n.inputs[1]].shape[2], a["strides"][1], a["dilations"][1]
        elif n.op in ("MaxPool2D", "AvgPool2D"):
            kw, stride, dilation = a["kernel"][1], a["strides"][1], a.get("dilations", (1, 1))[1]
        else:
            kw, stride, dilation = 1, 1, 1
        left = a["pads"][1] if "pads" in a else 0
        taps = {c * stride - left + k * dilation for c in read.get(n.outputs[0], ()) for k in range(kw)}
        for t in n.inputs:
            if not g.tensors[t].is_const:
                read.setdefault(t, set()).update(x for x in taps if 0 <= x < g.tensors[t].shape[2])
    return read


@settings(max_examples=EXAMPLES, deadline=None)
@given(chains(max_layers=5))
@example((9, 11, 3, [("conv", 3, 1, 1, True, 4), ("conv", 3, 2, 1, True, 4), ("conv", 1, 1, 1, True, 5)]))
@example((3, 3, 1, [("conv", 1, 1, 1, False, 1), ("conv", 1, 2, 1, False, 1)]))   # a column nothing reads
def test_strips_compute_every_column_read(chain):
    """The strips together compute every column of each tensor that the output depends on, so their MACs are at
    least those of these columns (the recompute factor, strips' MACs / block's MACs, may be below 1 only when
    the block computes columns nothing reads: a strided 1x1 layer's)."""
    g, names = chain_block(chain)
    if not names:
        return
    nodes, _, output = block_nodes(g, names)
    read = read_columns(g, nodes, output)
    needed = sum(layer_macs(g, n) * len(read[n.outputs[0]]) // g.tensors[n.outputs[0]].shape[2] for n in nodes)
    for count in range(2, min(4, g.tensors[output].shape[2]) + 1):
        try:
            strips = block_strips(g, names, count)
        except TinycError:
            continue            # (the reasons: test_random_chains_in_strips)
        for t, columns in read.items():
            assert columns <= {x for s in strips for x in range(*s.ranges[t])}, t
        macs = sum(block_macs(s.graph, s.graph.nodes) for s in strips)
        assert macs >= needed
        if all(len(read[n.outputs[0]]) == g.tensors[n.outputs[0]].shape[2] for n in nodes):
            assert macs >= block_macs(g, nodes)


def test_pointwise_chain_recomputes_nothing():
    """1x1 layers (and elementwise ones) read only their own columns: the strips compute each column once, no
    column is read outside its strip, and no layer reads a view."""
    chain = (6, 13, 3, [("conv", 1, 1, 1, True, 8), ("act", "relu"), ("conv", 1, 1, 1, True, 5), ("scale",),
                        ("conv", 1, 1, 1, False, 4)])
    g, names = chain_block(chain)
    assert names == [n.name for n in g.nodes]
    nodes, _, _ = block_nodes(g, names)
    for count in range(2, MAX_STRIPS + 1):
        strips = check_strips(g, names, count)
        assert sum(block_macs(s.graph, s.graph.nodes) for s in strips) == block_macs(g, nodes)
        assert all(s.ranges[t] == s.cols for s in strips for t in s.ranges)
        assert not any(VIEW_ATTR in n.attrs for s in strips for n in s.graph.nodes)


def test_recompute_of_a_3x3_pair():
    """Two 3x3 same convolutions, 2 strips of 10 columns: the first layer computes one column beyond each strip's
    edge (11 of 20 columns per strip), the second none: (22 * first + 20 * second) / (20 * both)."""
    g, names = chain_block((6, 20, 4, [("conv", 3, 1, 1, True, 4), ("conv", 3, 1, 1, True, 4)]))
    nodes, _, _ = block_nodes(g, names)
    strips = check_strips(g, names, 2)
    first, second = (layer_macs(g, n) for n in nodes)
    assert [s.ranges[nodes[0].outputs[0]] for s in strips] == [(0, 11), (9, 20)]
    assert [s.ranges["x0"] for s in strips] == [(0, 12), (8, 20)]
    assert sum(block_macs(s.graph, s.graph.nodes) for s in strips) == (22 * first + 20 * second) // 20


# -- models ----------------------------------------------------------------------------------------------------

class Builder:
    """IR layers, float32 or int8 (per-channel symmetric weights, int32 bias, one quantization per tensor)."""

    def __init__(self, name: str, dtype: str, seed: int = 0):
        self.g, self.dtype = Graph(name), dtype
        self.rng = np.random.default_rng(seed)

    def tensor(self, name: str, shape):
        q = Quant(np.float32(self.rng.uniform(0.02, 0.1)), np.int64(self.rng.integers(-20, 20)))
        self.g.add_tensor(name, shape, self.dtype, quant=q if self.dtype == "int8" else None)
        return name

    def input(self, name: str, shape):
        self.g.inputs.append(self.tensor(name, shape))
        return name

    def conv(self, x, name, out_channels, kernel, stride=1, pads=None, depthwise=False, relu=False, dilation=1):
        """A convolution (`kernel`: (kh, kw) or k; `pads`: (top, left, bottom, right), default SAME-like)."""
        _, h, w, c = self.g.tensors[x].shape
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        pads = pads if pads is not None else (kh // 2, kw // 2, (kh - 1) // 2, (kw - 1) // 2)
        groups = c if depthwise else 1
        o = c if depthwise else out_channels
        shape = (o, kh, kw, c // groups)
        if self.dtype == "int8":
            wq = Quant(self.rng.uniform(0.005, 0.02, o).astype(np.float32), np.zeros(o, np.int64), 0)
            wt = self.g.add_tensor(f"{name}_w", shape, "int8", self.rng.integers(-127, 128, shape), quant=wq).name
            b = self.g.add_const(f"{name}_b", self.rng.integers(-500, 500, o), "int32")
        else:
            wt = self.g.add_const(f"{name}_w", self.rng.standard_normal(shape) / np.sqrt(kh * kw * c / groups))
            b = self.g.add_const(f"{name}_b", self.rng.standard_normal(o) * 0.1)
        oh = (h + pads[0] + pads[2] - (kh - 1) * dilation - 1) // sh + 1
        ow = (w + pads[1] + pads[3] - (kw - 1) * dilation - 1) // sw + 1
        self.tensor(name, (1, oh, ow, o))
        self.g.add_node("Conv2D", [x, wt, b], [name], name=name, strides=(sh, sw), dilations=(dilation, dilation),
                        pads=pads, groups=groups, activation={"fn": "relu"} if relu else None)
        return name

    def pool(self, x, name, op, kernel, stride, pads):
        """Max or average pooling, `kernel` (kh, kw), `stride` (sh, sw), horizontal `pads` (left, right) only."""
        _, h, w, c = self.g.tensors[x].shape
        self.tensor(name, (1, (h - kernel[0]) // stride[0] + 1, (w + sum(pads) - kernel[1]) // stride[1] + 1, c))
        self.g.add_node(op, [x], [name], name=name, kernel=kernel, strides=stride, dilations=(1, 1),
                        pads=(0, pads[0], 0, pads[1]))
        return name

    def binary(self, op, a, b, name):
        self.tensor(name, self.g.tensors[a].shape)
        self.g.add_node(op, [a, b], [name], name=name)
        return name

    def add(self, a, b, name, relu=False):
        self.tensor(name, self.g.tensors[a].shape)
        self.g.add_node("Add", [a, b], [name], name=name, activation={"fn": "relu"} if relu else None)
        return name

    def block(self, output: str) -> tuple[Graph, list]:
        self.g.outputs = [output]
        return self.g, [n.name for n in self.g.nodes]


def resnet_stages(dtype: str) -> tuple[Graph, list]:
    """Two ResNet-8 stages: conv3x3 -> conv3x3 -> + the stage input; then the downsampling one, conv3x3 stride 2
    -> conv3x3, + a 1x1 stride-2 convolution of the stage input (its stride-2 view)."""
    m = Builder(f"resnet_{dtype}", dtype)
    x = m.input("x", (1, 12, 16, 8))
    a = m.conv(x, "s1_a", 8, 3, relu=True)
    b = m.conv(a, "s1_b", 8, 3)
    s1 = m.add(x, b, "s1", relu=True)
    c = m.conv(s1, "s2_a", 12, 3, stride=2, pads=(0, 0, 1, 1), relu=True)
    d = m.conv(c, "s2_b", 12, 3)
    skip = m.conv(s1, "s2_skip", 12, 1, stride=2, pads=(0, 0, 0, 0))
    return m.block(m.add(skip, d, "s2", relu=True))


def inverted_residuals(dtype: str) -> tuple[Graph, list]:
    """MobileNetV2's blocks: expand 1x1 -> depthwise 3x3 stride 2 -> project 1x1; then expand -> depthwise 3x3 ->
    project, + its input."""
    m = Builder(f"mbv2_{dtype}", dtype)
    x = m.input("x", (1, 14, 17, 4))
    e = m.conv(x, "b1_expand", 12, 1, relu=True)
    dw = m.conv(e, "b1_dw", 12, 3, stride=2, pads=(0, 0, 1, 1), depthwise=True, relu=True)
    p = m.conv(dw, "b1_project", 6, 1)
    e2 = m.conv(p, "b2_expand", 18, 1, relu=True)
    dw2 = m.conv(e2, "b2_dw", 18, 3, depthwise=True, relu=True)
    p2 = m.conv(dw2, "b2_project", 6, 1)
    return m.block(m.add(p, p2, "b2"))


def shared_readers(dtype: str) -> tuple[Graph, list]:
    """One tensor read by three layers spanning rows, with different widths, strides and alignments (3x3 stride 2
    padded left, 3x3 stride 2 padded right, 5x1 stride 2 with a 5-row window), the sum of their outputs: each of
    them must widen its columns until its window starts at the tensor's first strip column."""
    m = Builder(f"readers_{dtype}", dtype)
    x = m.input("x", (1, 9, 16, 3))
    t = m.conv(x, "t", 4, 3, relu=True)
    a = m.conv(t, "a", 4, 3, stride=2, pads=(1, 1, 1, 0))
    b = m.conv(t, "b", 4, 3, stride=2, pads=(1, 0, 1, 1))
    c = m.conv(t, "c", 4, (5, 1), stride=2, pads=(2, 0, 2, 0))
    return m.block(m.add(m.add(a, b, "ab"), c, "abc", relu=True))


def one_row_windows(dtype: str) -> tuple[Graph, list]:
    """Layers one row high reading views with horizontal windows and pads, beside readers spanning rows of the
    same tensor: 1x3 convolutions (stride 1, and 2 beside a 3x3 stride 2), a 1x3 max pool, the tensor times
    itself, a dilated 3x3."""
    m = Builder(f"one_row_{dtype}", dtype)
    x = m.input("x", (1, 8, 15, 4))
    t = m.conv(x, "t", 4, 3, relu=True)
    a = m.conv(t, "a", 4, (1, 3), pads=(0, 1, 0, 1))
    b = m.conv(t, "b", 4, 3, dilation=2, pads=(2, 2, 2, 2))
    p = m.pool(t, "p", "MaxPool2D", (1, 3), (1, 1), (1, 1))
    sq = m.binary("Mul", t, t, "sq")
    s = m.add(m.add(a, b, "ab"), m.add(p, sq, "psq"), "s", relu=True)
    c = m.conv(s, "c", 4, (1, 3), stride=2, pads=(0, 1, 0, 1))
    d = m.conv(s, "d", 4, 3, stride=2, pads=(1, 1, 1, 1))
    return m.block(m.add(c, d, "cd"))


MODELS = {"resnet": resnet_stages, "inverted_residuals": inverted_residuals, "readers": shared_readers,
          "one_row": one_row_windows}


@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_models_in_strips(model, dtype):
    """ResNet stages, inverted residuals with a stride-2 depthwise, a tensor read by several windows: every
    block of consecutive layers that fuses, in 2 to 4 strips, by the interpreter and by its row schedules."""
    g, names = MODELS[model](dtype)
    tested = 0
    for i in range(len(names)):
        for j in range(i + 1, len(names) + 1):
            try:
                block_nodes(g, names[i:j])
            except TinycError:
                continue
            for count in (2, 3, 4):
                assert outcome(g, names[i:j], count, schedules=j - i == len(names)) == "strips"
                tested += 1
    assert tested >= 3 * len(names)


@st.composite
def shared_tensors(draw):
    """A block where one tensor is read by 2 to 4 layers of random windows (kernel 1..5 wide and 1..3 high,
    horizontal stride and dilation, the horizontal pads split at random), all as wide as each other, summed,
    then maybe a spanning layer after the sum: the readers of the tensor widen their columns to agree."""
    dtype = draw(st.sampled_from(("float32", "int8")))
    width, stride = draw(st.integers(4, 16)), draw(st.integers(1, 3))
    m = Builder("shared", dtype, seed=draw(st.integers(0, 9)))
    t = m.conv(m.input("x", (1, 5, width, 3)), "t", 3, (1, draw(st.integers(1, 3))), relu=True)
    width, out = m.g.tensors[t].shape[2], -(-m.g.tensors[t].shape[2] // stride)
    readers = []
    for i in range(draw(st.integers(2, 4))):
        kh, kw, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 2))
        least = (out - 1) * stride + (kw - 1) * dilation + 1 - width        # the horizontal pads needed
        total = draw(st.integers(max(0, least), max(0, least) + stride - 1))
        if (width + total - (kw - 1) * dilation - 1) // stride + 1 != out:
            continue                # (the pads cannot give `out` columns)
        left = draw(st.integers(0, total))
        span = (kw - 1) * dilation + 1
        if left >= span or (out - 1) * stride - left >= width:
            continue                # (a column of padding only: test_column_of_padding_only)
        readers.append(m.conv(t, f"r{i}", 3, (kh, kw), stride=(1, stride), dilation=dilation,
                              pads=((kh - 1) * dilation // 2, left, (kh - 1) * dilation - (kh - 1) * dilation // 2,
                                    total - left)))
    total = readers[0] if readers else t
    for i, r in enumerate(readers[1:]):
        total = m.add(total, r, f"sum{i}")
    if draw(st.booleans()):
        total = m.conv(total, "after", 2, 3, stride=draw(st.integers(1, 2)))
    return m.block(total)


@settings(max_examples=EXAMPLES, deadline=None)
@given(shared_tensors())
def test_shared_tensors_in_strips(block):
    g, names = block
    width = g.tensors[g.outputs[0]].shape[2]
    for count in range(2, min(4, width) + 1):
        outcome(g, names, count, schedules=count == 2)


def test_views_and_widening_happen():
    """What the models exercise: the ResNet stage's skip reads a view of the stage input; the readers of one
    tensor widen their columns (and the sum reads views of them); 1x3 layers read views with their right pad in
    the last strip."""
    g, names = resnet_stages("float32")
    viewers = {n.name for s in block_strips(g, names, 3) for n in s.graph.nodes if VIEW_ATTR in n.attrs}
    assert {"s1", "s2_skip"} <= viewers
    g, names = shared_readers("float32")
    strips = block_strips(g, names, 2)
    need = {"a": strips[1].ranges["a"][0], "b": strips[1].ranges["b"][0], "c": strips[1].ranges["c"][0]}
    assert min(need.values()) < strips[1].cols[0], need           # some reader computes columns of strip 0
    assert any(VIEW_ATTR in n.attrs for n in strips[1].graph.nodes if n.name in ("ab", "abc"))
    g, names = one_row_windows("float32")
    last = block_strips(g, names, 3)[-1]
    views = {n.name: (n.attrs.get(VIEW_ATTR), n.attrs.get("pads")) for n in last.graph.nodes}
    assert views["a"] == ((1, None, None), (0, 0, 0, 1)) and views["p"] == ((1,), (0, 0, 0, 1))   # the right pad
    assert views["sq"][0] == (2, 2)                 # both inputs: the same view


def test_slack_rows_compute_the_same():
    g, names = inverted_residuals("int8")
    x = block_inputs(g, names)
    for s, slack in zip(block_strips(g, names, 3), block_strips(g, names, 3, slack_rows=2)):
        np.testing.assert_array_equal(execute_strip(slack, x), execute_strip(s, x))
        assert all(slack.sched.buffers[t].capacity == b.capacity + 2 for t, b in s.sched.buffers.items()
                   if b.capacity)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: int8 zoo models converted by TFLiteConverter")
@pytest.mark.parametrize("name", ["residual_cnn", "depthwise_multiplier", "ds_cnn"])
def test_int8_zoo_longest_block_in_strips(int8_models, name):
    from tinyc.frontends import load_model
    from tinyc.passes import optimize
    g = optimize(load_model(int8_models(name)))
    names = longest_block(g, [n.name for n in g.nodes])
    if len(names) < 2:
        pytest.skip(f"{name}: no two layers fuse")
    width = g.tensors[block_nodes(g, names)[2]].shape[2]
    for count in range(2, min(4, width) + 1):
        assert outcome(g, names, count, schedules=True) == "strips"


# -- refusals --------------------------------------------------------------------------------------------------

def refused(g, names, count: int, match: str):
    with pytest.raises(TinycError, match=match) as e:
        block_strips(g, names, count)
    assert str(e.value).startswith("patch mode: ") and "\n" not in str(e.value)


def test_strip_counts_are_refused():
    g, names = chain_block((6, 5, 3, [("conv", 3, 1, 1, True, 4), ("conv", 3, 1, 1, True, 4)]))
    for count in (1, 0, 6):
        refused(g, names, count, f"{count} strips of an output 5 columns wide; use 2 to 5 strips")
    g, names = chain_block((6, 13, 3, [("conv", 3, 1, 1, True, 4)]))
    refused(g, names, MAX_STRIPS + 1, f"use 2 to {MAX_STRIPS} strips")


def test_running_pool_is_refused():
    """An int8 global average pool in the block accumulates whole rows: no strip can compute it."""
    m = Builder("pooled", "int8")
    x = m.input("x", (1, 7, 9, 3))
    c = m.conv(x, "conv", 4, 3, relu=True)
    m.tensor("pool", (1, 1, 1, 4))
    m.g.add_node("AvgPool2D", [c], ["pool"], name="pool", kernel=(7, 9), strides=(1, 1), dilations=(1, 1),
                 pads=(0, 0, 0, 0))
    g, names = m.block("pool")
    for count in (2, 3):     # (an output 1 column wide: the strip count would be refused first)
        with pytest.raises(TinycError, match="patch mode") as e:
            block_strips(g, names, count)
        assert "\n" not in str(e.value)
    m.g.nodes[-1].attrs["kernel"], m.g.nodes[-1].attrs["strides"] = (7, 3), (1, 3)
    m.g.tensors["pool"].shape = (1, 1, 3, 4)
    refused(g, names, 2, "layer 'pool' pools over whole rows; run the block in row mode")
    refused(g, names, 3, "layer 'pool' pools over whole rows")


def test_layer_that_cannot_stream_is_refused():
    """What row mode refuses, patch mode refuses too (its one-line refusal), before it looks at the output's
    width (here a 2-D output)."""
    g, _ = chain_block((6, 5, 3, [("conv", 3, 1, 1, True, 4)]))
    g.add_tensor("flat", (1, 6 * 5 * 4))
    g.add_node("Reshape", ["b0_l0"], ["flat"], name="flatten", shape=(1, 120))
    g.outputs = ["flat"]
    with pytest.raises(TinycError, match="'flatten'") as e:
        block_strips(g, ["b0_l0", "flatten"], 2)
    assert "\n" not in str(e.value)


def scaled(shape: tuple):
    """A 3x3 convolution times a constant of `shape` (broadcast over the rows)."""
    m = Builder("scaled", "float32")
    c = m.conv(m.input("x", (1, 6, 8, 3)), "conv", 3, 3)
    bias = m.g.add_const("scale", m.rng.standard_normal(shape))
    m.tensor("y", (1, 6, 8, 3))
    m.g.add_node("Mul", [c, bias], ["y"], name="mul")
    return m.block("y")


def test_constant_with_a_value_per_column_is_refused():
    """A strip graph keeps constants whole, so a constant with one value per column (which row mode streams) is
    refused; one per channel runs in strips."""
    for shape in ((1, 1, 8, 3), (8, 1), (8, 3)):
        g, names = scaled(shape)
        row_schedule(g, names)
        refused(g, names, 2, "layer 'mul' \\(Mul\\) reads constant 'scale' with a value per column; run the block in "
                "row mode")
    for shape in ((1, 1, 1, 3), (3,), (1, 3)):
        g, names = scaled(shape)
        check_strips(g, names, 3)


def normalized(op: str, attrs: dict):
    m = Builder("normalized", "float32")
    c = m.conv(m.input("x", (1, 6, 8, 3)), "conv", 3, 3)
    m.tensor("y", (1, 6, 8, 3))
    scale = [m.g.add_const("scale", m.rng.standard_normal((1, 1, 1, 3)))] if op == "Normalize" else []
    m.g.add_node(op, [c] + scale, ["y"], name="norm", **attrs)
    return m.block("y")


def test_normalization_over_the_columns_is_refused():
    """Keras LayerNormalization(axis=[2, 3]), an L2 normalization along the width: row mode computes them (a row
    is whole), strips cannot (each sees a part of the row). Over the channels, each column is apart: strips."""
    for op, attrs in (("Normalize", dict(axes=(2, 3), center=True, epsilon=1e-5)),
                      ("Normalize", dict(axes=(2,), center=False, epsilon=1e-5)),
                      ("LpNormalize", dict(axis=2, p=2, epsilon=0.0))):
        g, names = normalized(op, attrs)
        row_schedule(g, names)
        refused(g, names, 2, f"layer 'norm' \\({op}\\) normalizes over the columns; run the block in row mode")
    for op, attrs in (("Normalize", dict(axes=(3,), center=True, epsilon=1e-5)),
                      ("LpNormalize", dict(axis=3, p=2, epsilon=0.0))):
        g, names = normalized(op, attrs)
        check_strips(g, names, 3)


def strips_or_refusal(g, names, count: int, layer: str):
    """The strips equal the whole block, or patch mode refuses in one line naming `layer`."""
    try:
        check_strips(g, names, count)
    except TinycError as e:
        assert str(e).startswith("patch mode: ") and "\n" not in str(e) and f"'{layer}'" in str(e), str(e)


def padding_only(case: str):
    """A 1xk convolution with a pad of at least its window (ONNX allows it): its first or last output column reads
    only padding (`case` "1x1 right": 1x1 padded right, "1x2 left", "1x3 right"); "beside": such a 1x1 stride 3
    and another reader of the same tensor, so the strip's view of it is 0 columns wide (the tensor is not)."""
    m = Builder("padding_only", "float32")
    x = m.input("x", (1, 5, 4, 3))
    if case == "beside":
        t = m.conv(x, "t", 3, 3)
        r0 = m.conv(t, "r0", 3, 1, stride=(1, 3), pads=(0, 1, 0, 0))
        r1 = m.conv(t, "r1", 3, 1, stride=(1, 3), pads=(0, 0, 0, 0))
        return m.block(m.add(r0, r1, "r")), "r0"
    kernel, pads = {"1x1 right": (1, (0, 0, 0, 1)), "1x2 left": (2, (0, 2, 0, 0)), "1x3 right": (3, (0, 0, 0, 3))}[case]
    return m.block(m.conv(x, "r", 3, (1, kernel), pads=pads)), "r"


@pytest.mark.parametrize("case", ["1x1 right", "1x2 left", "1x3 right"])
def test_columns_of_padding_only(case):
    (g, names), layer = padding_only(case)
    for count in range(2, g.tensors[g.outputs[0]].shape[2] + 1):
        strips_or_refusal(g, names, count, layer)


def test_view_of_padding_only():
    """Beside another reader of its input, a layer whose strip reads padding only reads a view 0 columns wide."""
    (g, names), _ = padding_only("beside")
    first = check_strips(g, names, 2, schedules=True)[0].graph
    r0 = next(n for n in first.nodes if n.name == "r0")
    assert r0.attrs[VIEW_ATTR] == (0, None, None) and view_width(first, r0, 0) == 0 and r0.attrs["pads"][1] == 1


def test_pool_running_in_some_strips():
    """int8 2x7x3 -> relu -> 2x2 max pool of stride 2 padded right: the whole layer pads, so it is not running,
    but in strips away from the right edge it pads nothing and pools over every row (running, its input one row);
    each strip's schedule computes its columns either way."""
    q = Quant(np.array(0.05, np.float32), np.array(3))
    g = Graph("pool")
    for name, shape in (("x", (1, 2, 7, 3)), ("a", (1, 2, 7, 3)), ("y", (1, 1, 4, 3))):
        g.add_tensor(name, shape, "int8", quant=q)
    g.add_node("Activation", ["x"], ["a"], name="relu", fn="relu")
    g.add_node("MaxPool2D", ["a"], ["y"], name="pool", kernel=(2, 2), strides=(2, 2), dilations=(1, 1),
               pads=(0, 0, 0, 1))
    g.inputs, g.outputs = ["x"], ["y"]
    names = ["relu", "pool"]
    running = []
    for count in (2, 3, 4):
        strips = check_strips(g, names, count, schedules=True)
        running.append([bool(running_layers(s.sched)) for s in strips])
    assert running == [[True, False], [True, True, False], [True, True, True, False]]
