"""The row schedule of a fused block (schedule/row_schedule.py), checked by executing it: its actions run in numpy
on line buffers of exactly `capacity` rows (every slot tagged with the row it holds, so a window that reads a row
overwritten, never loaded or never filled is caught), each compute through the layer's own evaluate on its row
variant (codegen/fused_block.row_variant), equal the layer-by-layer interpreter. The capacities of chains are the
analysis model's (schedule/depth_first.line_rows) over the rows a layer reads, padding rows included (they are
stored rows here). `compress` expands back to its steps, and what cannot stream is refused in one line."""
import numpy as np
import pytest
from fused_chains import chains, float_graph
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tinyc.codegen.fused_block import compress, row_variant
from tinyc.errors import TinycError
from tinyc.interp import run, run_node
from tinyc.ir import Graph
from tinyc.schedule.depth_first import RowWindow, line_rows
from tinyc.schedule.fuse_block import fuse_block
from tinyc.schedule.overlap import lead_for
from tinyc.schedule.row_schedule import row_schedule

FULL = bool(__import__("os").environ.get("TINYC_FULL"))
EXAMPLES = 300 if FULL else 40


def execute(g, sched, values: dict, load=None, store=None, view=None) -> np.ndarray:
    """The block's output computed by its actions alone, on line buffers of exactly the scheduled rows. `load(name,
    row)` / `store(row, values)`: where external rows come from and output rows go (default: `values`, the
    returned array). `view(g, node, windows)`: what a layer reads of its input windows (default: them whole; a
    strip's layer reads its view's columns, test_column_strips.py)."""
    rows = {name: np.full((b.capacity,) + g.tensors[name].shape[2:], np.nan) for name, b in sched.buffers.items()}
    tags = {name: [None] * b.capacity for name, b in sched.buffers.items()}
    out_shape = g.tensors[sched.output].shape
    out, written = np.full(out_shape, np.nan), []
    # Line buffers may share bytes (RowSchedule.offsets, when it packs them): each byte of the block's line memory
    # records the (buffer, row) last written over it, so a row overwritten by another buffer's row is caught too.
    offsets = getattr(sched, "offsets", None) or dict(zip(sched.buffers, np.cumsum(
        [0] + [b.nbytes for b in sched.buffers.values()])))
    code = {name: (i + 1) << 20 for i, name in enumerate(sched.buffers)}
    owner = np.zeros(max([1] + [offsets[t] + b.nbytes for t, b in sched.buffers.items()]), np.int64)

    def span_of(name, slot, count=1):
        b = sched.buffers[name]
        return slice(offsets[name] + slot * b.row_bytes, offsets[name] + (slot + count) * b.row_bytes)

    def mark(name, slot, row):
        owner[span_of(name, slot)] = code[name] + row + 1000

    computed, read = set(), set()        # rows of intermediates
    accumulated = {}                     # running pool (layer index) -> the input rows it has taken

    def check_row(name, slot, row, node):
        assert tags[name][slot] == row, (node.name, name, row)
        read.add((name, row))
        assert set(owner[span_of(name, slot)]) == {code[name] + row + 1000}, \
            f"row {row} of '{name}' overwritten by another line buffer before layer {node.name} reads it"

    def slot_ok(name, slot, count=1):
        assert 0 <= slot and slot + count <= sched.buffers[name].capacity, (name, slot, count)

    def put(a, row, store=None):
        """Output row a.row of the layer: into the block output, or into its slot of a line buffer."""
        if a.tensor == sched.output:
            out[0, a.row] = row[0, 0]
            if store:
                store(a.row, row[0, 0])
            written.append(a.row)
        else:
            slot_ok(a.tensor, a.slot)
            rows[a.tensor][a.slot] = row[0, 0]
            tags[a.tensor][a.slot] = a.row
            mark(a.tensor, a.slot, a.row)
            computed.add((a.tensor, a.row))

    for a in sched.actions:
        if a.kind in ("load", "fill"):
            slot_ok(a.tensor, a.slot)
            inside = 0 <= a.row < g.tensors[a.tensor].shape[1]
            assert inside == (a.kind == "load"), a        # pad rows are filled, rows of the tensor loaded
            if inside:
                rows[a.tensor][a.slot] = load(a.tensor, a.row) if load else values[a.tensor][0, a.row]
            else:
                rows[a.tensor][a.slot] = 0.0
            tags[a.tensor][a.slot] = a.row
            mark(a.tensor, a.slot, a.row)
        elif a.kind == "move":
            slot_ok(a.tensor, a.src, a.rows)
            slot_ok(a.tensor, a.slot, a.rows)
            rows[a.tensor][a.slot:a.slot + a.rows] = rows[a.tensor][a.src:a.src + a.rows].copy()
            tags[a.tensor][a.slot:a.slot + a.rows] = tags[a.tensor][a.src:a.src + a.rows]
            owner[span_of(a.tensor, a.slot, a.rows)] = owner[span_of(a.tensor, a.src, a.rows)].copy()
        elif a.kind == "clear":
            accumulated[a.layer] = []
        elif a.kind == "accumulate":          # a running pool takes input row a.row from its slot
            node = sched.layers[a.layer]
            slot_ok(node.inputs[0], a.in_slots[0])
            check_row(node.inputs[0], a.in_slots[0], a.row, node)
            assert a.row == len(accumulated[a.layer]), "rows accumulated out of order"
            accumulated[a.layer].append(rows[node.inputs[0]][a.in_slots[0]].copy())
        elif getattr(sched.reads.get((a.layer, 0)), "running", False):
            node = sched.layers[a.layer]       # the pool over every row it accumulated
            x = g.tensors[node.inputs[0]]
            assert len(accumulated[a.layer]) == x.shape[1]
            whole = np.stack(accumulated[a.layer])[None].astype(x.dtype)
            put(a, run_node(g, node, {node.inputs[0]: whole})[0])
        else:
            node = sched.layers[a.layer]
            reads = [sched.reads.get((a.layer, pos)) for pos in range(len(node.inputs))]
            variant_graph, variant = row_variant(g, node, reads)
            ins, runtime = {}, iter(a.in_slots)
            for name, w in zip(node.inputs, reads):
                if w is None:
                    continue
                first = next(runtime)
                slot_ok(name, first, w.span)
                for tap in w.taps(a.row):         # the rows the layer reads are in place (between taps: unread)
                    check_row(name, first + tap - w.first(a.row), tap, node)
                window = rows[name][first:first + w.span][None]
                ins[name] = window.astype(g.tensors[name].dtype) if g.tensors[name].dtype != "float32" else window
            row = run_node(variant_graph, variant, view(g, node, ins) if view else ins)[0]
            assert row.shape[1] == 1
            put(a, row, store)
    assert written == list(range(out_shape[1]))        # each output row once, in order
    assert computed <= read, f"rows computed that nothing reads: {sorted(computed - read)}"
    return out


def padded_window(g, node) -> RowWindow:
    """The analysis model's window of a layer over its input with the padding rows stored, reading every row of
    its span (a row between two dilated taps that no window reads still has a slot: windows are contiguous)."""
    a, x, y = node.attrs, g.tensors[node.inputs[0]].shape, g.tensors[node.outputs[0]].shape
    if node.op == "Conv2D":
        k, s, d = g.tensors[node.inputs[1]].shape[1], a["strides"][0], a["dilations"][0]
    elif node.op in ("MaxPool2D", "AvgPool2D"):
        k, s, d = a["kernel"][0], a["strides"][0], 1
    else:
        k = s = d = 1
    pt, pb = (a["pads"][0], a["pads"][2]) if "pads" in a else (0, 0)
    return RowWindow((k - 1) * d + 1, s, 1, 0, x[1] + pt + pb, y[1])


def check_chain(chain, seed=0):
    g = float_graph([chain], seed)
    names = [n.name for n in g.nodes]
    sched = row_schedule(g, names)
    rng = np.random.default_rng(seed)
    x = {name: rng.standard_normal(g.tensors[name].shape).astype(np.float32) for name in g.inputs}
    want = run(g, x)[g.outputs[0]]
    got = execute(g, sched, x)
    np.testing.assert_array_equal(got, want)
    whole = all_rows_read(g, sched)
    for name, b in sched.buffers.items():
        readers = g.consumers(name)
        if len(readers) == 1:        # (a residual's input: read by two windows, the analysis model has one)
            rows = line_rows(padded_window(g, readers[0]))
            if readers[0].outputs[0] in whole:
                assert b.capacity == rows, (name, readers[0].name)
            else:                    # rows between taps nobody reads are never computed (nor their inputs)
                assert b.capacity <= rows, (name, readers[0].name)
    return sched


def all_rows_read(g, sched) -> set:
    """The block's tensors of which every row is computed: the output, and the inputs of layers of which every
    output row is read, when their windows read every input row."""
    read = {sched.output: set(range(g.tensors[sched.output].shape[1]))}
    for li in reversed(range(len(sched.layers))):
        node = sched.layers[li]
        for pos, name in enumerate(node.inputs):
            w = sched.reads.get((li, pos))
            if w is not None:
                height = g.tensors[node.outputs[0]].shape[1]
                read.setdefault(name, set()).update(y for r in read.get(node.outputs[0], ()) if 0 <= r < height
                                                    for y in w.taps(r))
    return {t for t, rows in read.items() if rows >= set(range(g.tensors[t].shape[1]))}


@settings(max_examples=EXAMPLES, deadline=None)
@given(chains(max_layers=5))
@example((9, 6, 3, [("conv", 3, 1, 1, True, 4), ("conv", 3, 2, 1, True, 4), ("conv", 1, 1, 1, True, 5)]))
@example((12, 5, 2, [("residual", 6, 3), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 4)]))
@example((11, 7, 3, [("conv", 2, 3, 2, False, 4), ("pool", "max", 2, 2), ("act", "relu")]))
@example((5, 3, 2, [("conv", 5, 1, 2, True, 3), ("pool", "avg", 3, 1)]))        # windows taller than the image
@example((12, 7, 3, [("conv", 1, 2, 1, False, 3), ("dw", 3, 3, 2, True, 2)]))      # skipped rows
@example((3, 1, 1, [("conv", 1, 3, 1, False, 1), ("conv", 2, 1, 2, True, 1)]))      # no input row is read
@example((3, 1, 1, [("conv", 1, 3, 1, False, 1), ("conv", 2, 1, 2, True, 1), ("conv", 2, 1, 1, True, 1)]))
@example((6, 5, 3, [("conv", 3, 1, 1, True, 3), ("join",), ("dw", 3, 2, 1, False, 1)]))   # two external inputs
@example((4, 5, 5, [("pool", "avg", 2, 2, True), ("scale",), ("pool", "max", 2, 2, True)]))  # horizontal pads
# regression: rows of b0_l0 and b0_l1 were computed for rows of the Add that the dilated conv never reads
@example((3, 1, 1, [("conv", 2, 1, 1, True, 2), ("dw", 2, 2, 1, True, 1), ("join",), ("conv", 3, 2, 2, True, 1)]))
def test_schedule_executes_layer_by_layer_values(chain):
    check_chain(chain)


@settings(max_examples=EXAMPLES, deadline=None)
@given(chains(max_layers=4))
@example((12, 5, 3, [("residual", 6, 3), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 5)]))
@example((9, 4, 2, [("conv", 3, 1, 1, True, 8), ("conv", 3, 1, 1, True, 8)]))         # output rows wider
def test_output_over_its_dying_input(chain):
    """The overlap contract (RowSchedule.output_rows_min_read, schedule/overlap.lead_for): with the output at the
    smallest lead below its input in one memory, every input row is loaded before an output row is written over
    it, and the output is right."""
    g = float_graph([chain])
    names = [n.name for n in g.nodes]
    block = fuse_block(g, names)
    node = next(n for n in block.nodes if n.op == "FusedBlock")
    found = lead_for(block, node, 0)
    if found is None:
        return
    lead = found[1]
    x, y = g.tensors["x0"], g.tensors[g.outputs[0]]
    x_row, y_row = x.shape[2] * x.shape[3], y.shape[2] * y.shape[3]     # float32 values per row
    assert lead % 4 == 0
    lead //= 4
    base = max(0, -lead)                   # the output's first value in one flat memory, the input's at base + lead
    memory = np.full(max(base + y.size, base + lead + x.size), np.nan, np.float32)
    rng = np.random.default_rng(0)
    values = {name: rng.standard_normal(g.tensors[name].shape).astype(np.float32) for name in g.inputs}
    memory[base + lead:base + lead + x.size] = values["x0"].reshape(-1)

    def load(name, row):
        if name != "x0":
            return values[name][0, row]
        got = memory[base + lead + row * x_row:base + lead + (row + 1) * x_row]
        assert np.array_equal(got, values["x0"][0, row].reshape(-1)), f"input row {row} overwritten before loaded"
        return got.reshape(x.shape[2:])

    def store(row, value):
        memory[base + row * y_row:base + (row + 1) * y_row] = value.reshape(-1)

    sched = row_schedule(g, names)
    execute(g, sched, values, load, store)
    np.testing.assert_array_equal(memory[base:base + y.size].reshape(y.shape), run(g, values)[g.outputs[0]])


def test_running_pools():
    """An integer pooling window over every row (e.g. a global average pool) accumulates each row as it arrives
    (row_schedule's running pool): its input needs one row; the accumulated rows are the input's, in order."""
    from tinyc.ir import Quant
    q = Quant(np.array(0.05), np.array(-3))
    for op, kernel, strides, out_w in (("MaxPool2D", (7, 2), (1, 2), 2), ("AvgPool2D", (7, 5), (1, 1), 1)):
        g = Graph("running")
        g.add_tensor("x", (1, 7, 5, 3), "int8", quant=q)
        g.inputs = ["x"]
        g.add_tensor("r", (1, 7, 5, 3), "int8", quant=q)
        g.add_node("Activation", ["x"], ["r"], name="relu", fn="relu")
        g.add_tensor("p", (1, 1, out_w, 3), "int8", quant=q)
        g.add_node(op, ["r"], ["p"], name="pool", kernel=kernel, strides=strides, dilations=(1, 1),
                   pads=(0, 0, 0, 0))
        g.add_tensor("y", (1, 1, out_w, 3), "int8", quant=q)
        g.add_node("Activation", ["p"], ["y"], name="relu2", fn="relu")
        g.outputs = ["y"]
        sched = row_schedule(g, ["relu", "pool", "relu2"])
        assert [a.row for a in sched.actions if a.kind == "accumulate"] == list(range(7))
        assert sched.buffers["r"].capacity == 1
        x = {"x": np.random.default_rng(2).integers(-128, 128, (1, 7, 5, 3)).astype(np.int8)}
        np.testing.assert_array_equal(execute(g, sched, x), run(g, x)["y"])


def test_slack_rows_move_less_and_compute_the_same():
    chain = (16, 5, 3, [("conv", 3, 1, 1, True, 4), ("dw", 3, 2, 1, True, 1), ("conv", 1, 1, 1, True, 3)])
    g = float_graph([chain])
    names = [n.name for n in g.nodes]
    tight, slack = row_schedule(g, names), row_schedule(g, names, slack_rows=3)
    x = np.random.default_rng(1).standard_normal(g.tensors["x0"].shape).astype(np.float32)
    np.testing.assert_array_equal(execute(g, slack, {"x0": x}), execute(g, tight, {"x0": x}))
    moves = [sum(a.kind == "move" for a in s.actions) for s in (tight, slack)]
    assert moves[1] < moves[0]
    assert all(slack.buffers[t].capacity == b.capacity + 3 for t, b in tight.buffers.items())


# -- compress --------------------------------------------------------------------------------------------------

def expand(items) -> list:
    steps = []
    for item in items:
        if item[0] == "loop":
            _, count, body = item
            assert count >= 2
            for n in range(count):
                steps.extend((key, tuple(b + n * d for b, d in zip(base, delta)), None) for key, base, delta in body)
        else:
            steps.append((item[1], item[2], None))
    return steps


@st.composite
def step_lists(draw):
    """Runs of a few step patterns, each repeated with arguments advancing by a fixed stride (or not), mixed
    with single steps: what row schedules look like."""
    arity = {("compute", "f", None, ("s", "y")): 2, ("compute", "g", 8, ("s", "s", "s")): 3,
             ("copy", 8, "x0", "s"): 2, ("fill", 8, 0): 1, ("copy", 4, "s", "s"): 2}    # (as a key says)
    steps = []
    for _ in range(draw(st.integers(0, 6))):
        period = draw(st.integers(1, 4))
        keys = [draw(st.sampled_from(sorted(arity, key=str))) for _ in range(period)]
        body = [(key, tuple(draw(st.integers(0, 50)) for _ in range(arity[key]))) for key in keys]
        strides = [tuple(draw(st.sampled_from((0, 1, 4, -2))) for _ in args) for _, args in body]
        for n in range(draw(st.integers(1, 5))):
            for (key, args), stride in zip(body, strides):
                jitter = draw(st.sampled_from((0,) * 6 + (1,)))          # now and then breaks the pattern
                steps.append((key, tuple(a + n * s + jitter for a, s in zip(args, stride)), None))
    return steps


@settings(max_examples=200 if not FULL else 2000, deadline=None)
@given(step_lists())
def test_compress_expands_to_its_steps(steps):
    assert expand(compress(steps)) == steps


def test_compress_finds_the_loop():
    steps = [(("fill", 8, 0), (0,), None)] + [(("copy", 8, "x0", "s"), (8 * n, 16), None) for n in range(5)]
    items = compress(steps)
    assert [i[0] for i in items] == ["one", "loop"] and items[1][1] == 5


# -- refusals --------------------------------------------------------------------------------------------------

def base_graph():
    g = Graph("refusals")
    g.add_tensor("x", (1, 8, 6, 3))
    g.inputs = ["x"]
    return g


def one_line_refusal(g, names, match):
    with pytest.raises(TinycError, match=match) as e:
        row_schedule(g, names)
    assert "\n" not in str(e.value)


def test_pooling_with_vertical_pads_is_refused():
    g = base_graph()
    g.add_tensor("p", (1, 8, 6, 3))
    g.add_node("MaxPool2D", ["x"], ["p"], name="pool", kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
               pads=(1, 1, 1, 1))
    g.outputs = ["p"]
    one_line_refusal(g, ["pool"], "'pool' .*pads rows")


def test_broadcast_input_is_refused():
    g = base_graph()
    g.add_tensor("bias_row", (1, 1, 6, 3))
    g.inputs.append("bias_row")
    g.add_tensor("y", (1, 8, 6, 3))
    g.add_node("Add", ["x", "bias_row"], ["y"], name="add")
    g.outputs = ["y"]
    one_line_refusal(g, ["add"], "'add' .*broadcasts 'bias_row'")
    h = base_graph()
    c = h.add_const("tall", np.ones((1, 8, 1, 1)))
    h.add_tensor("y", (1, 8, 6, 3))
    h.add_node("Mul", ["x", c], ["y"], name="mul")
    h.outputs = ["y"]
    one_line_refusal(h, ["mul"], "'mul' .*reads constant 'tall'")


@pytest.mark.parametrize("op, attrs", [("Normalize", dict(axes=(1, 2, 3), center=True, epsilon=1e-5)),
                                       ("LpNormalize", dict(axis=1, p=2, epsilon=0.0))])
def test_normalization_over_the_rows_is_refused(op, attrs):
    """Row by row, a normalization over the rows would normalize each row alone: refused (over the channels, or
    the columns and channels of each row, it streams)."""
    g = base_graph()
    g.add_tensor("y", (1, 8, 6, 3))
    scale = [g.add_const("scale", np.ones((1, 1, 1, 3)))] if op == "Normalize" else []
    g.add_node(op, ["x"] + scale, ["y"], name="norm", **attrs)
    g.outputs = ["y"]
    one_line_refusal(g, ["norm"], "'norm' .*normalizes over the rows")
    g.nodes[0].attrs.update(dict(axes=(2, 3)) if op == "Normalize" else dict(axis=3))
    assert row_schedule(g, ["norm"]).buffers["x"].capacity == 1


def chain3():
    return float_graph([(8, 6, 3, [("conv", 3, 1, 1, True, 4), ("act", "relu"), ("conv", 1, 1, 1, True, 2)])])


def test_intermediate_read_outside_is_refused():
    g = chain3()
    g.outputs.append("b0_l0")
    one_line_refusal(g, ["b0_l0", "b0_l1", "b0_l2"], "2 of its tensors are read after it")


def test_two_outputs_are_refused():
    g = chain3()
    g.add_tensor("other", g.tensors["b0_l1"].shape)
    g.add_node("Activation", ["b0_l1"], ["other"], name="other", fn="relu")
    g.outputs.append("other")
    one_line_refusal(g, ["b0_l0", "b0_l1", "b0_l2"], r"2 of its tensors are read after it \(\['b0_l1', 'b0_l2'\]\)")
    one_line_refusal(g, ["b0_l0", "b0_l2"], "is not its last layer's|read after it")


def test_layer_that_cannot_stream_is_refused():
    g = chain3()
    g.add_tensor("flat", (1, 8 * 6 * 2))
    g.add_node("Reshape", ["b0_l2"], ["flat"], name="flatten", shape=(1, 96))
    g.outputs = ["flat"]
    one_line_refusal(g, ["b0_l2", "flatten"], "'flatten' .*output shape")
