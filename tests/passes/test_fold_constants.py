"""fold_constants: constant subgraphs become constant tensors of the same name."""
import numpy as np

from tinyc.ir import Graph, Quant
from tinyc.passes.fold_constants import fold_constants
from pass_checks import checked, snapshot


def run_pass(g):
    return checked(fold_constants, g)


def test_transposed_weights_fold_and_keep_their_name():
    rng = np.random.default_rng(1)
    g = Graph()
    g.add_tensor("x", (1, 5)); g.add_tensor("w", (3, 5)); g.add_tensor("y", (1, 3))
    g.add_const("w_kxo", rng.standard_normal((5, 3)))
    g.add_const("b", rng.standard_normal(3))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Transpose", ["w_kxo"], ["w"], perm=(1, 0))
    g.add_node("Dense", ["x", "w", "b"], ["y"], activation=None)
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Dense"]
    assert out.nodes[0].inputs == ["x", "w", "b"]
    np.testing.assert_array_equal(out.tensors["w"].data, g.tensors["w_kxo"].data.T)
    assert "w_kxo" not in out.tensors and g.tensors["w"].data is None


def test_chains_fold_in_order():
    g = Graph()
    g.add_tensor("x", (2, 2)); g.add_tensor("c", (2, 2)); g.add_tensor("d", (2, 2)); g.add_tensor("y", (2, 2))
    g.add_const("a", [[1, 2], [3, 4]]); g.add_const("b", [[0.5, 0.5], [1, 1]]); g.add_const("k", 3.0)
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Add", ["a", "b"], ["c"], activation={"fn": "relu"})
    g.add_node("Mul", ["c", "k"], ["d"], activation=None)
    g.add_node("Add", ["x", "d"], ["y"], activation=None)
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Add"]
    np.testing.assert_allclose(out.tensors["d"].data, [[4.5, 7.5], [12, 15]])


def test_node_writing_a_graph_output_is_not_folded():
    g = Graph()
    g.add_tensor("x", (2,)); g.add_tensor("y", (2,)); g.add_tensor("z", (2,))
    g.add_const("a", [1.0, -2.0])
    g.inputs, g.outputs = ["x"], ["y", "z"]
    g.add_node("Activation", ["x"], ["y"], fn="relu")
    g.add_node("Activation", ["a"], ["z"], fn="relu")
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Activation", "Activation"]
    assert out.tensors["z"].data is None


def test_quantized_arithmetic_is_not_folded_but_reshape_is():
    q = Quant(np.array(0.1), np.array(3))
    g = Graph()
    g.add_tensor("x", (4,), "int8", quant=q)
    g.add_tensor("a", (2, 2), "int8", data=[[1, 2], [3, 4]], quant=q)
    g.add_tensor("b", (4,), "int8", quant=q)
    g.add_tensor("c", (4,), "int8", data=[1, 1, 1, 1], quant=q)
    g.add_tensor("s", (4,), "int8", quant=q)
    g.add_tensor("y", (4,), "int8", quant=q)
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Reshape", ["a"], ["b"])
    g.add_node("Add", ["b", "c"], ["s"], activation=None)
    g.add_node("Add", ["x", "s"], ["y"], activation=None)
    before = snapshot(g)
    out = fold_constants(g)
    assert snapshot(g) == before
    out.validate()
    assert [n.op for n in out.nodes] == ["Add", "Add"]
    np.testing.assert_array_equal(out.tensors["b"].data, [1, 2, 3, 4])
    assert out.tensors["b"].dtype == "int8" and out.tensors["s"].data is None


def test_nothing_to_fold():
    g = Graph()
    g.add_tensor("x", (1, 3)); g.add_tensor("y", (1, 3))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Softmax", ["x"], ["y"], axis=-1)
    assert run_pass(g).summary() == g.summary()
