"""drop_identity: Identity nodes vanish; an Identity writing a graph output becomes a Reshape."""
import numpy as np

from tinyc import interp
from tinyc.ir import Graph
from tinyc.passes.drop_identity import drop_identity


def snapshot(g):
    """Everything a pass could mutate: structure and attrs (summary), tensor metadata and constant bytes."""
    return g.summary(), [(k, t.shape, t.dtype, t.source_name, None if t.data is None else t.data.tobytes())
                         for k, t in g.tensors.items()]


def assert_same_function(before, after, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(3):
        xs = [rng.standard_normal(before.tensors[i].shape).astype(np.float32) for i in before.inputs]
        a, b = interp.run(before, xs), interp.run(after, xs)
        assert list(a) == list(b)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5 * (1 + np.abs(a[k]).max()))


def run_pass(g):
    before = snapshot(g)
    out = drop_identity(g)
    assert snapshot(g) == before, "the pass mutated its argument"
    out.validate()
    assert out.inputs == g.inputs and out.outputs == g.outputs
    assert_same_function(g, out)
    return out


def test_identity_in_the_middle_is_removed():
    g = Graph()
    g.add_tensor("x", (1, 4)); g.add_tensor("d", (1, 4)); g.add_tensor("y", (1, 4))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Identity", ["x"], ["d"])
    g.add_node("Activation", ["d"], ["y"], fn="relu")
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Activation"]
    assert out.nodes[0].inputs == ["x"]
    assert "d" not in out.tensors


def test_chain_of_identities_with_two_readers():
    g = Graph()
    for t in ("x", "a", "b", "y", "z"):
        g.add_tensor(t, (2, 3))
    g.inputs, g.outputs = ["x"], ["y", "z"]
    g.add_node("Activation", ["x"], ["a"], fn="tanh")
    g.add_node("Identity", ["a"], ["b"])
    g.add_node("Add", ["b", "b"], ["y"], activation=None)
    g.add_node("Mul", ["a", "b"], ["z"], activation=None)
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Activation", "Add", "Mul"]
    assert out.nodes[1].inputs == ["a", "a"] and out.nodes[2].inputs == ["a", "a"]


def test_identity_writing_a_graph_output_becomes_reshape():
    g = Graph()
    g.add_tensor("x", (1, 4)); g.add_tensor("t", (1, 4)); g.add_tensor("y", (1, 4))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Activation", ["x"], ["t"], fn="sigmoid")
    g.add_node("Identity", ["t"], ["y"])
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Activation", "Reshape"]
    assert out.nodes[1].inputs == ["t"] and out.nodes[1].outputs == ["y"]


def test_graph_input_straight_to_output_and_other_reader():
    g = Graph()
    g.add_tensor("x", (3,)); g.add_tensor("y", (3,)); g.add_tensor("z", (3,))
    g.inputs, g.outputs = ["x"], ["z", "y"]
    g.add_node("Identity", ["x"], ["y"])
    g.add_node("Activation", ["y"], ["z"], fn="relu")
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Reshape", "Activation"]
    assert out.outputs == ["z", "y"]
    assert out.nodes[1].inputs == ["y"]


def test_source_name_moves_to_the_input():
    g = Graph()
    g.add_tensor("x", (2,)); g.add_tensor("a", (2,)); g.add_tensor("d", (2,), source_name="dropout_1")
    g.add_tensor("y", (2,))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Activation", ["x"], ["a"], fn="relu")
    g.add_node("Identity", ["a"], ["d"])
    g.add_node("Activation", ["d"], ["y"], fn="tanh")
    out = run_pass(g)
    assert out.tensors["a"].source_name == "dropout_1"
    assert g.tensors["a"].source_name is None


def test_graph_without_identity_is_unchanged():
    g = Graph()
    g.add_tensor("x", (2,)); g.add_tensor("y", (2,))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Activation", ["x"], ["y"], fn="relu")
    assert run_pass(g).summary() == g.summary()
