"""The memory model of row-streamed fused blocks (schedule/depth_first.py): a hand-computed chain, and an exact
check by simulation: the chain executed row by row in numpy through rings of exactly the modelled rows (rolling,
each row computed once) equals the layer-by-layer result, and a ring one row smaller overwrites a row before its
last read."""
import numpy as np
import pytest

from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.ops import REGISTRY
from tinyc.schedule import VARIANTS, schedule
from tinyc.schedule.depth_first import RowWindow, first_live_row, fused_block, line_rows, row_window


def conv(g, x, name, out_c, k, s=1, d=1, pads=(0, 0, 0, 0), groups=1, rng=None):
    n, h, w, c = g.tensors[x].shape
    rng = rng or np.random.default_rng(0)
    weights = g.add_const(f"{name}_w", rng.standard_normal((out_c, k, k, c // groups)))
    bias = g.add_const(f"{name}_b", rng.standard_normal(out_c))
    t, left, b, r = pads
    keff = (k - 1) * d + 1
    g.add_tensor(name, (1, (h + t + b - keff) // s + 1, (w + left + r - keff) // s + 1, out_c))
    g.add_node("Conv2D", [x, weights, bias], [name], name=name, strides=(s, s), dilations=(d, d), pads=pads,
               groups=groups, activation=None)
    return name


def pool(g, x, name, op, k, s, pads=(0, 0, 0, 0)):
    n, h, w, c = g.tensors[x].shape
    t, left, b, r = pads
    g.add_tensor(name, (1, (h + t + b - k) // s + 1, (w + left + r - k) // s + 1, c))
    g.add_node(op, [x], [name], name=name, kernel=(k, k), strides=(s, s), dilations=(1, 1), pads=pads)
    return name


def pad(g, x, name, t, b):
    n, h, w, c = g.tensors[x].shape
    g.add_tensor(name, (1, h + t + b, w + 2, c))
    g.add_node("Pad", [x], [name], name=name, pads=[(0, 0), (t, b), (1, 1), (0, 0)], value=0.5)
    return name


def activation(g, x, name):
    g.add_tensor(name, g.tensors[x].shape)
    g.add_node("Activation", [x], [name], name=name, fn="tanh")
    return name


def hand_chain():
    """8x8x2 -> 3x3 s1 pad 1 -> 8x8x4 -> 3x3 s2 pad 1 -> 4x4x4 -> 1x1 -> 4x4x8, float32."""
    g = Graph("hand")
    g.add_tensor("x", (1, 8, 8, 2))
    g.inputs = ["x"]
    a = conv(g, "x", "a", 4, 3, pads=(1, 1, 1, 1))
    b = conv(g, a, "b", 4, 3, s=2, pads=(1, 1, 1, 1))
    g.outputs = [conv(g, b, "y", 8, 1)]
    return g


def test_hand_computed_chain():
    plan = schedule(hand_chain(), variants=VARIANTS[:1])     # no in-place writes: every bound by hand
    block = fused_block(plan, ["a", "b", "y"])
    assert block.rows == [3, 3, 1]
    # a: 3 rows x 8 x 4 x 4 B = 384; b: 1 row x 4 x 4 x 4 B = 64; x whole 512, y whole 512
    assert block.line_bytes == [384, 64]
    assert (block.input_bytes, block.output_bytes, block.crossing_bytes) == (512, 512, 0)
    assert block.block_bytes == 512 + 384 + 64 + 512 == block.peak_bytes
    assert block.peak_before == 512 + 1024            # x and a at the first layer
    # y over x's dead rows: y row r (128 B) is computed once x rows below 0, 0, 2, 4 are dead (64 B each):
    # 512 + 128, 512 + 256, 384 + 384, 256 + 512 -> 768, plus the line buffers
    assert block.overlapped_bytes == 768 + 384 + 64 == block.peak_overlapped
    streamed = fused_block(plan, ["a", "b", "y"], stream_input=True)
    assert streamed.input_bytes == 3 * 8 * 2 * 4
    assert streamed.peak_bytes == 192 + 384 + 64 + 512
    assert streamed.overlapped_bytes == streamed.block_bytes       # a streamed input has no whole rows to reuse
    # the block may also end early: the rest planned as today
    head = fused_block(plan, ["a", "b"])
    assert head.line_bytes == [384] and head.peak_bytes == max(512 + 384 + 256, 256 + 512)


def test_line_rows_closed_forms():
    assert line_rows(RowWindow(3, 1, 1, 1, 10, 10)) == 3
    assert line_rows(RowWindow(3, 2, 1, 1, 10, 5)) == 3         # no (s - 1) extra rows in one thread
    assert line_rows(RowWindow(3, 1, 2, 2, 10, 10)) == 5        # dilation: k_eff = (k - 1) d + 1
    assert line_rows(RowWindow(1, 2, 1, 0, 10, 5)) == 1         # 1x1 stride 2: skipped rows are never computed
    assert line_rows(RowWindow(5, 1, 1, 2, 3, 3)) == 3          # shorter than the window: the whole height
    assert line_rows(RowWindow(3, 5, 2, 0, 20, 4)) == 3         # stride beyond the span: only the taps


def test_refuses_what_it_does_not_model():
    g = hand_chain()
    g.add_tensor("z", (1, 4, 4, 8))
    g.add_node("Add", ["y", "b"], ["z"], name="skip")
    g.outputs = ["z"]
    plan = schedule(g)
    with pytest.raises(TinycError, match="read outside the block"):
        fused_block(plan, ["a", "b", "y"])
    with pytest.raises(TinycError, match="not a single-input spatial layer"):
        fused_block(plan, ["y", "skip"])
    with pytest.raises(TinycError, match="not consecutive"):
        fused_block(plan, ["a", "y"])
    with pytest.raises(TinycError, match="only the graph input"):
        fused_block(plan, ["b"], stream_input=True)


class Clobbered(Exception):
    pass


class Ring:
    """A line buffer of `slots` rows; a row sits at (its rank among the rows ever stored) mod slots."""

    def __init__(self, slots, needed):
        self.rank = {y: i for i, y in enumerate(sorted(needed))}
        self.slots, self.data, self.tag = slots, [None] * slots, [None] * slots

    def put(self, y, row):
        i = self.rank[y] % self.slots
        self.data[i], self.tag[i] = row, y

    def get(self, y):
        i = self.rank[y] % self.slots
        if self.tag[i] != y:
            raise Clobbered(y)
        return self.data[i]


def one_row(g, node, w, r, rows_of):
    """Output row r of the layer from its input rows (a dict row -> array), padded rows given as pads."""
    x = g.tensors[node.inputs[0]]
    a, consts = dict(node.attrs), [g.const(t) for t in node.inputs[1:]]
    if node.op == "Activation":
        return REGISTRY[node.op].evaluate(a, [rows_of[r][None]])[0]
    if node.op == "Pad":
        width = [(0, 0)] + [tuple(p) for p in a["pads"][2:]]
        src = rows_of[r - w.pad_top] if 0 <= r - w.pad_top < w.in_rows else np.zeros(x.shape[2:])
        out = np.pad(src, width[1:], constant_values=a["value"])
        return out if 0 <= r - w.pad_top < w.in_rows else np.full(out.shape, a["value"])
    begin = r * w.stride - w.pad_top
    end = begin + (w.kernel - 1) * w.dilation           # inclusive
    lo, hi = max(begin, 0), min(end, w.in_rows - 1)
    span = np.full((hi - lo + 1,) + tuple(x.shape[2:]), np.nan)
    for y in w.reads(r):
        span[y - lo] = rows_of[y]
    t, left, b, right = a["pads"]
    a.update(pads=(lo - begin, left, end - hi, right), strides=(1, a["strides"][1]))
    out = REGISTRY[node.op].evaluate(a, [span[None]] + consts)
    assert out.shape[1] == 1
    return out[0, 0]


def run_rows(g, names, slots, input_reads=None):
    """The chain row by row: each layer computes a row when its consumer asks for it, into a ring of `slots[i]`
    rows for its input i; returns the chain's output, whole."""
    nodes = [next(n for n in g.nodes if n.name == m) for m in names]
    windows = [row_window(g, n) for n in nodes]
    x = g.const("x_value")
    needed_out = [set(range(windows[-1].out_rows))]
    for w in reversed(windows):                 # rows each tensor must deliver (only those read)
        needed_out.insert(0, {y for r in needed_out[0] for y in w.reads(r)})
    rings = [Ring(s, needed_out[i]) for i, s in enumerate(slots)]
    done = [0] * (len(nodes) + 1)               # rows delivered so far per tensor (input = tensor 0)
    order = [sorted(n) for n in needed_out]

    def deliver(i, upto):                       # tensor i's needed rows up to row `upto`, in order
        while done[i] < len(order[i]) and order[i][done[i]] <= upto:
            y = order[i][done[i]]
            row = x[0, y] if i == 0 else compute(i - 1, y)
            if i < len(nodes):
                rings[i].put(y, row)
            done[i] += 1
            if i == len(nodes):
                out[y] = row

    def compute(k, r):
        w = windows[k]
        reads = w.reads(r)
        if reads:
            deliver(k, max(reads))
        if k == 0 and input_reads is not None:
            input_reads.extend((len(out), y) for y in reads)
        return one_row(g, nodes[k], w, r, {y: rings[k].get(y) for y in reads})

    out = {}
    deliver(len(nodes), windows[-1].out_rows - 1)
    return np.stack([out[r] for r in range(windows[-1].out_rows)])[None]


def layer_by_layer(g, names):
    values = {"x": g.const("x_value")}
    for name in names:
        node = next(n for n in g.nodes if n.name == name)
        values[node.outputs[0]] = REGISTRY[node.op].evaluate(node.attrs, [values[node.inputs[0]]] +
                                                             [g.const(t) for t in node.inputs[1:]])
    return values[node.outputs[0]]


def chains():
    """(graph, names) pairs covering every modelled layer kind, strides, dilations, pads and shorter heights."""
    rng = np.random.default_rng(7)
    out = []
    for case in range(6):
        g = Graph(f"chain{case}")
        h = [9, 12, 7, 16, 5, 11][case]
        g.add_tensor("x", (1, h, 6, 3))
        g.add_const("x_value", rng.standard_normal((1, h, 6, 3)))
        g.inputs = ["x"]
        t = "x"
        if case == 0:
            t = conv(g, t, "c0", 4, 3, pads=(1, 1, 1, 1), rng=rng)
            t = conv(g, t, "c1", 4, 3, s=2, pads=(1, 1, 1, 1), rng=rng)
            t = conv(g, t, "c2", 5, 1, rng=rng)
        elif case == 1:                         # inverted residual: expand, depthwise s2, project
            t = conv(g, t, "e", 12, 1, rng=rng)
            t = activation(g, t, "e_act")
            t = conv(g, t, "dw", 12, 3, s=2, pads=(0, 0, 1, 1), groups=12, rng=rng)
            t = conv(g, t, "p", 4, 1, rng=rng)
        elif case == 2:                         # dilation, pad, pools
            t = pad(g, t, "pad", 2, 1)
            t = conv(g, t, "dil", 4, 3, d=2, pads=(2, 2, 2, 2), rng=rng)
            t = pool(g, t, "max", "MaxPool2D", 3, 1, pads=(1, 1, 1, 1))
            t = pool(g, t, "avg", "AvgPool2D", 2, 2)
        elif case == 3:                         # 5x5 s2, a 3x3 s3, a 3x3 dilated 2
            t = conv(g, t, "k5", 4, 5, s=2, pads=(2, 2, 2, 2), rng=rng)
            t = conv(g, t, "k3s3", 4, 3, s=3, pads=(1, 1, 1, 1), rng=rng)
            t = conv(g, t, "last", 3, 1, rng=rng)
        elif case == 4:                         # a window taller than the image
            t = conv(g, t, "tall", 4, 7, pads=(3, 3, 3, 3), rng=rng)
            t = pool(g, t, "avgpad", "AvgPool2D", 3, 2, pads=(1, 1, 1, 1))
        else:
            t = conv(g, t, "s2", 6, 3, s=2, rng=rng)
            t = conv(g, t, "d2", 6, 3, d=2, pads=(2, 2, 1, 2), groups=6, rng=rng)
            t = activation(g, t, "act")
        g.outputs = [t]
        out.append((g, [n.name for n in g.nodes]))
    return out


@pytest.mark.parametrize("case", range(6))
def test_rows_suffice_and_one_fewer_does_not(case):
    g, names = chains()[case]
    block = fused_block(schedule(g), names, stream_input=True)
    windows = [row_window(g, n) for n in g.nodes]
    want = layer_by_layer(g, names)
    reads = []
    got = run_rows(g, names, block.rows, reads)
    for r in range(want.shape[1]):         # no input row below first_live_row is read again
        assert min([y for q, y in reads if q >= r], default=1 << 30) >= first_live_row(windows, r)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for i, rows in enumerate(block.rows):
        if rows > 1:
            fewer = list(block.rows)
            fewer[i] -= 1
            with pytest.raises(Clobbered):
                run_rows(g, names, fewer)
