"""drop_identity: Identity nodes vanish; an Identity writing a graph output becomes a Reshape."""

from tinyc.ir import Graph
from tinyc.passes.drop_identity import drop_identity
from pass_checks import checked


def run_pass(g):
    return checked(drop_identity, g)


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
