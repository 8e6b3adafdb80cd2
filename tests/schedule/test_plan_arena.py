"""The memory plan: hand-built graphs whose optimum is known (reordering must win, in place must win), the
lower bound's definition, and random DAGs where no two buffers live at the same step share bytes except a
dying input and the output written over it, at the lead its kernel allows."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyc.ir import Graph
from tinyc.schedule import schedule
from tinyc.schedule.buffers import ALIGN
from tinyc.schedule.overlap import lead_for


def dense(g, x, name, units):
    g.add_tensor(name, (1, units))
    w = g.add_const(f"{name}_w", np.ones((units, g.tensors[x].shape[-1])))
    g.add_node("Dense", [x, w], [name], name=name, activation=None)
    return name


def chain_graph():
    g = Graph("chain")
    g.add_tensor("x", (1, 100))
    g.inputs = ["x"]
    prev = "x"
    for k, size in enumerate([400, 50, 300, 20, 10]):
        prev = dense(g, prev, f"t{k}", size)
    g.outputs = [prev]
    return g


def assert_valid(plan):
    """Disjoint while live together, except an anchored pair at its shared step, at exactly its lead."""
    bufs = plan.buffers
    for b in bufs:
        assert b.offset % ALIGN == 0 and 0 <= b.offset and b.offset + b.size <= plan.arena_bytes
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if not (a.start <= b.end and b.start <= a.end):
                continue
            if a.offset + a.size <= b.offset or b.offset + b.size <= a.offset:
                continue
            x, y = (a, b) if a.anchor and a.anchor[0] is b else (b, a)
            assert x.anchor and x.anchor[0] is y, (a.label, b.label)
            assert x.end == y.start and x.offset == y.offset + x.anchor[1]
    assert plan.arena_bytes >= plan.lower_bound == max(plan.live)
    produced = set(plan.graph.inputs) | {n for n, t in plan.graph.tensors.items() if t.is_const}
    for node in plan.graph.nodes:                  # the order is topological
        assert all(t in produced for t in node.inputs)
        produced.update(node.outputs)


def test_chain_reuses_memory():
    plan = schedule(chain_graph())
    assert_valid(plan)
    # x (400 B) and t0 (1600 B) are live at step 0, the largest pair; inputs and outputs are in the arena.
    assert plan.lower_bound == 400 + 1600 == plan.arena_bytes


def test_reshape_is_an_alias_and_output_identity_is_a_copy():
    g = Graph("alias")
    g.add_tensor("x", (1, 2, 2, 3))
    g.add_tensor("r", (1, 12))
    g.add_tensor("y", (1, 12))
    g.add_tensor("a", (1, 2, 2, 3))
    g.add_node("Activation", ["x"], ["a"], fn="relu")
    g.add_node("Reshape", ["a"], ["r"], alias=True)
    g.add_node("Activation", ["r"], ["y"], fn="tanh")
    g.inputs, g.outputs = ["x"], ["y", "x"]
    plan = schedule(g)
    assert plan.buffer_of["a"] is plan.buffer_of["r"]
    assert plan.graph.outputs[1] != "x"            # an input returned as output gets its own copy
    assert_valid(plan)


def two_branches():
    """x -> (a1 big -> a2 small), (b1 big -> b2 small) -> a2 + b2, listed breadth first: the model's order keeps
    a1 and b1 live together; running one branch to its end first does not."""
    g = Graph("branches")
    g.add_tensor("x", (1, 16))
    g.inputs = ["x"]
    a1, b1 = dense(g, "x", "a1", 1000), dense(g, "x", "b1", 1000)
    a2, b2 = dense(g, a1, "a2", 4), dense(g, b1, "b2", 4)
    g.add_tensor("y", (1, 4))
    g.add_node("Add", [a2, b2], ["y"], name="add", activation=None)
    g.outputs = ["y"]
    return g


def test_reordering_must_win():
    plan = schedule(two_branches())
    assert_valid(plan)
    assert plan.chosen == "reordered" and plan.exact_order
    assert plan.variants["overlap"]["lower_bound"] == 64 + 4000 + 4000
    assert plan.lower_bound == 64 + 4000 + 16 == plan.arena_bytes
    names = [n.name for n in plan.graph.nodes]
    assert names.index("a2") < names.index("b1") or names.index("b2") < names.index("a1")


def test_elementwise_in_place_must_win():
    g = Graph("act")
    g.add_tensor("x", (1, 8, 8, 16))
    g.add_tensor("h", (1, 8, 8, 16))
    g.add_tensor("y", (1, 8, 8, 16))
    g.add_node("Activation", ["x"], ["h"], fn="tanh")
    g.add_node("Activation", ["h"], ["y"], fn="sigmoid")
    g.inputs, g.outputs = ["x"], ["y"]
    plan = schedule(g)
    assert_valid(plan)
    assert plan.variants["plain"]["arena_bytes"] == 2 * 4096
    assert plan.arena_bytes == plan.lower_bound == 4096
    assert {c.kind for c in plan.in_place.values()} == {"elementwise"}


def test_pointwise_expansion_overlaps_as_the_issue_says():
    """1x1 conv from 8 to 16 channels: the input sits in the top half of the output, 16*N bytes (+ one input
    pixel, since the kernel writes an output pixel's channels while still reading its input pixel), not 24*N."""
    g = Graph("pw")
    g.add_tensor("x", (1, 10, 10, 8))
    g.add_tensor("y", (1, 10, 10, 16))
    w = g.add_const("w", np.ones((16, 1, 1, 8)))
    g.add_node("Conv2D", ["x", w], ["y"], strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1,
               activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    _, lead = lead_for(g, g.nodes[0], 0)
    assert lead == 100 * 16 * 4 - 99 * 8 * 4      # the last input pixel starts where the output ends
    plan = schedule(g)
    assert_valid(plan)
    assert plan.arena_bytes == plan.lower_bound == 100 * 16 * 4 + 8 * 4


def test_depthwise_in_place_costs_one_channel_plane():
    g = Graph("dw")
    g.add_tensor("x", (1, 6, 6, 64), "float32")
    g.add_tensor("y", (1, 6, 6, 64), "float32")
    w = g.add_const("w", np.ones((64, 3, 3, 1)))
    g.add_node("Conv2D", ["x", w], ["y"], strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=64,
               activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    plan = schedule(g)
    assert_valid(plan)
    # overlap would need (W + 1) pixels of 64 channels above the input; one 6x6 plane is much less
    assert plan.in_place[0].kind == "depthwise"
    assert plan.lower_bound == plan.arena_bytes == 6 * 6 * 64 * 4 + 6 * 6 * 4


@st.composite
def random_dag(draw):
    g = Graph("dag")
    g.add_tensor("x0", (1, draw(st.integers(1, 64))))
    g.inputs = ["x0"]
    live = ["x0"]
    for k in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["dense", "act", "add", "concat"]))
        name = f"t{k}"
        a = draw(st.sampled_from(live))
        n = g.tensors[a].shape[-1]
        if kind == "dense":
            dense(g, a, name, draw(st.integers(1, 300)))
        elif kind == "act":
            g.add_tensor(name, (1, n))
            g.add_node("Activation", [a], [name], name=name, fn="relu")
        else:
            same = [t for t in live if g.tensors[t].shape[-1] == n]
            b = draw(st.sampled_from(same if kind == "add" else live))
            if kind == "add":
                g.add_tensor(name, (1, n))
                g.add_node("Add", [a, b], [name], name=name, activation=None)
            else:
                g.add_tensor(name, (1, n + g.tensors[b].shape[-1]))
                g.add_node("Concat", [a, b], [name], name=name, axis=1)
        live.append(name)
    g.outputs = [live[-1]] + ([live[1]] if len(live) > 2 and draw(st.booleans()) else [])
    return g


@settings(max_examples=60, deadline=None)
@given(random_dag())
def test_random_dags_plan_validly(g):
    plan = schedule(g)
    assert_valid(plan)
    assert plan.arena_bytes <= min(v["arena_bytes"] for v in plan.variants.values())


def test_kernel_scratch_goes_under_a_chain_that_drifts_down():
    """The int8 1-D activity classifier of tests/layer_zoo.py: conv 1 (input 384 B written over by its 2,048 B
    output, lead 1,676, with 96 B of im2col scratch), max pool and conv 2 overlapping down by 16 and 32 bytes.
    Placed first at 0, the chain's conv-1 output sits 48 bytes up and the scratch lands above its top (2,204 B);
    with the peak's small buffers placed first (small_first, which the planner tries when the usual orders stay
    more than 2% above the bound) the scratch takes [0, 96) and the arena meets its bound, 2,156 B."""
    from tinyc.schedule.buffers import Buffer
    from tinyc.schedule.lifetimes import step_bytes
    from tinyc.schedule.plan_arena import plan_arena
    x = Buffer(nbytes=384, start=0, end=1, label="input")
    c1 = Buffer(nbytes=2048, start=1, end=2, label="conv 1")
    pool = Buffer(nbytes=1024, start=2, end=3, label="max pool")
    c2 = Buffer(nbytes=768, start=3, end=4, label="conv 2")
    x.anchor, c1.anchor, pool.anchor = (c1, 1676), (pool, 16), (c2, 32)
    scratch1 = Buffer(nbytes=96, kind="scratch", start=1, end=1)
    scratch3 = Buffer(nbytes=480, kind="scratch", start=3, end=3)
    buffers = [x, c1, scratch1, pool, c2, scratch3]
    bound = max(step_bytes(buffers, 5))
    assert bound == 2156
    assert plan_arena(buffers, 5) == 2204                       # the usual orders
    assert plan_arena(buffers, 5, small_first=True) == bound
    assert c1.offset == x.offset - 1676 == pool.offset + 16 == c2.offset + 48
    for scratch, beside in ((scratch1, (x, c1)), (scratch3, (pool, c2))):
        for b in beside:
            assert scratch.offset + scratch.size <= b.offset or b.offset + b.size <= scratch.offset
