"""Streaming state (docs/streaming-state.md): the IR's state tensors, the interpreter carrying them frame by frame,
and the graph passes keeping what the state update needs."""
import numpy as np
import pytest

from tinyc import interp
from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.passes import optimize


def accumulator(shape=(1, 4), initial=None):
    """y = relu(s + x); the state s takes s + x (before the relu): a running sum."""
    g = Graph("acc")
    g.add_tensor("x", shape)
    g.add_state("s", shape, initial=initial)
    g.add_tensor("sum", shape)
    g.add_tensor("y", shape)
    g.add_node("Add", ["s", "x"], ["sum"], activation=None)
    g.add_node("Activation", ["sum"], ["y"], fn="relu")
    g.inputs, g.outputs = ["x"], ["y"]
    g.state["s"] = "sum"
    return g


def frames(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def test_interpreter_carries_the_state_across_frames():
    g = accumulator(initial=np.full((1, 4), 0.5))
    g.validate()
    xs = frames((1, 4), 6)
    outs, last = interp.run_frames(g, xs)
    running = 0.5 + np.cumsum([f["x"] for f in xs], axis=0)
    for out, want in zip(outs, running):
        np.testing.assert_allclose(out["y"], np.maximum(want, 0), rtol=1e-6)
    np.testing.assert_allclose(last["s"], running[-1], rtol=1e-6)
    # one step from a given state; `run` alone does not advance anything
    y, after = interp.step(g, xs[0], {"s": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(after["s"], 1 + xs[0]["x"])
    np.testing.assert_allclose(interp.run(g, xs[0])["y"], np.maximum(0.5 + xs[0]["x"], 0))


def test_the_update_is_simultaneous():
    """a takes b's value and b takes a's: each reads the value from before the inference."""
    g = Graph("swap")
    g.add_tensor("x", (3,))
    g.add_state("a", (3,), initial=[1, 2, 3])
    g.add_state("b", (3,), initial=[10, 20, 30])
    g.add_tensor("y", (3,))
    g.add_node("Add", ["a", "x"], ["y"], activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    g.state.update(a="b", b="a")
    g.validate()
    zero = {"x": np.zeros(3, np.float32)}
    outs, last = interp.run_frames(g, [zero] * 3)
    assert [list(o["y"]) for o in outs] == [[1, 2, 3], [10, 20, 30], [1, 2, 3]]
    assert list(last["a"]) == [10, 20, 30] and list(last["b"]) == [1, 2, 3]


def test_a_state_nothing_updates_keeps_its_initial_value():
    g = accumulator()
    g.state["s"] = "s"
    g.validate()
    outs, last = interp.run_frames(g, frames((1, 4), 2))
    assert not last["s"].any()


@pytest.mark.parametrize("spoil, message", [
    (lambda g: g.inputs.append("s"), "state tensor 's' is a model input"),
    (lambda g: g.state.update(s=None), "state tensor 's' has no next value"),
    (lambda g: g.state.update(s="nowhere"), "takes its next value from 'nowhere', which does not exist"),
    (lambda g: g.state.update(s="x5"), "must have the same shape, type and quantization"),
    (lambda g: g.state.update(x="sum"), "state tensor 'x' is a model input"),
    (lambda g: g.state.update(y="sum"), "state tensor 'y' is written by a node"),
    (lambda g: g.state_init.update(s=np.zeros(3, np.float32)), "its initial value is float32 (3,)"),
])
def test_bad_state_is_refused_in_one_line(spoil, message):
    g = accumulator()
    g.add_tensor("x5", (1, 5))
    spoil(g)
    with pytest.raises(TinycError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        g.validate()
    assert "\n" not in str(e.value)


def test_passes_keep_the_next_value():
    """`sum` is read once, by the relu: without the state, fuse_activation would merge the two and drop `sum`."""
    g = accumulator()
    out = optimize(g)
    assert out.state == {"s": "sum"} and "sum" in out.tensors
    assert [n.op for n in out.nodes] == ["Add", "Activation"]
    xs = frames((1, 4), 5)
    for a, b in zip(interp.run_frames(g, xs)[0], interp.run_frames(out, xs)[0]):
        np.testing.assert_array_equal(a["y"], b["y"])


def test_identity_next_value_and_unread_state_survive_the_passes():
    g = accumulator()
    g.add_tensor("copy", (1, 4))
    g.add_node("Identity", ["sum"], ["copy"])
    g.state["s"] = "copy"
    g.add_state("idle", (2,), initial=[7, 8])
    g.state["idle"] = "idle"
    out = optimize(g)
    assert out.state == {"s": "sum", "idle": "idle"}
    assert list(out.initial_state()["idle"]) == [7, 8]


def test_a_constant_next_value_folds_and_still_updates():
    g = accumulator()
    g.add_tensor("k", (1, 4))
    g.add_node("Activation", [g.add_const("c", np.full((1, 4), -2.0))], ["k"], fn="relu")
    g.state["s"] = "k"
    out = optimize(g)
    assert out.tensors[out.state["s"]].is_const
    _, last = interp.run_frames(out, frames((1, 4), 2))
    assert not last["s"].any()
