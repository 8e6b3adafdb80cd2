"""Arena planning: buffers that are live at the same step never overlap, aliases share bytes, caller memory is
never in the arena, and the arena is never below the lower bound. Random DAGs check validity."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyc.ir import Graph
from tinyc.schedule import schedule
from tinyc.schedule.plan_arena import ALIGN


def chain_graph():
    g = Graph("chain")
    g.add_tensor("x", (1, 100))
    g.inputs = ["x"]
    prev = "x"
    for k, size in enumerate([400, 50, 300, 20, 10]):
        g.add_tensor(f"t{k}", (1, size))
        g.add_node("Dense", [prev, g.add_const(f"w{k}", np.zeros((size, g.tensors[prev].shape[1])))],
                   [f"t{k}"], activation=None)
        prev = f"t{k}"
    g.outputs = [prev]
    return g


def assert_valid(plan):
    arena = [b for b in plan.buffers if b.pinned is None]
    for b in arena:
        assert b.offset % ALIGN == 0 and b.offset + b.nbytes <= plan.arena_bytes
    for i, a in enumerate(arena):
        for b in arena[i + 1:]:
            if a.start <= b.end and b.start <= a.end:     # live together
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset, (a, b)
    assert plan.arena_bytes >= plan.lower_bound


def test_chain_reuses_memory():
    plan = schedule(chain_graph())
    assert_valid(plan)
    # t0 (1600 B) and t1 (200 B) are live together, then t1 and t2 (1200 B): 1800 B at most, not the sum.
    assert plan.lower_bound == 1600 + 200
    assert plan.arena_bytes <= 1600 + 200 + ALIGN
    assert {b.pinned for b in plan.buffers if b.pinned} == {("input", 0), ("output", 0)}


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


@st.composite
def random_dag(draw):
    rng = np.random.default_rng(draw(st.integers(0, 10_000)))
    n = draw(st.integers(2, 14))
    g = Graph("dag")
    g.add_tensor("in", (1, int(rng.integers(1, 64))))
    g.inputs = ["in"]
    names = ["in"]
    for k in range(n):
        a, b = rng.choice(names, 2)
        size = int(rng.integers(1, 200))
        ws = [g.add_const(f"w{k}{j}", np.zeros((size, g.tensors[s].shape[1]))) for j, s in enumerate((a, b))]
        g.add_tensor(f"d{k}a", (1, size))
        g.add_tensor(f"d{k}b", (1, size))
        g.add_tensor(f"t{k}", (1, size))
        g.add_node("Dense", [a, ws[0]], [f"d{k}a"], activation=None)
        g.add_node("Dense", [b, ws[1]], [f"d{k}b"], activation=None)
        g.add_node("Add", [f"d{k}a", f"d{k}b"], [f"t{k}"], activation=None)
        names.append(f"t{k}")
    g.outputs = [names[-1]] + ([names[len(names) // 2]] if rng.random() < 0.5 else [])
    g.validate()
    return g


@settings(max_examples=60, deadline=None)
@given(random_dag())
def test_random_dags_get_valid_plans(g):
    assert_valid(schedule(g))
