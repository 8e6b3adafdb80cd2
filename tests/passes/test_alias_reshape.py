"""alias_reshape: Reshape chains merge, no-op Reshapes vanish, the rest are marked as aliases."""

from tinyc.ir import Graph
from tinyc.passes.alias_reshape import alias_reshape
from pass_checks import checked


def run_pass(g):
    return checked(alias_reshape, g)


def chain(*shapes, outputs=None):
    """x (shapes[0]) -> relu -> r0 -> Reshape -> r1 -> ... ; the last tensor goes through tanh to y."""
    g = Graph()
    g.add_tensor("x", shapes[0])
    names = [f"r{i}" for i in range(len(shapes))]
    for n, s in zip(names, shapes):
        g.add_tensor(n, s)
    g.add_tensor("y", shapes[-1])
    g.add_node("Activation", ["x"], ["r0"], fn="relu")
    for a, b in zip(names, names[1:]):
        g.add_node("Reshape", [a], [b])
    g.add_node("Activation", [names[-1]], ["y"], fn="tanh")
    g.inputs, g.outputs = ["x"], outputs or ["y"]
    return g


def test_chain_merges_into_one_alias():
    out = run_pass(chain((1, 2, 2, 3), (1, 12), (3, 4), (12,)))
    assert [n.op for n in out.nodes] == ["Activation", "Reshape", "Activation"]
    r = out.nodes[1]
    assert r.inputs == ["r0"] and r.outputs == ["r3"] and r.attrs == {"alias": True}
    assert "r1" not in out.tensors and "r2" not in out.tensors


def test_chain_back_to_the_same_shape_disappears():
    out = run_pass(chain((1, 2, 2, 3), (1, 12), (1, 2, 2, 3)))
    assert [n.op for n in out.nodes] == ["Activation", "Activation"]
    assert out.nodes[1].inputs == ["r0"]


def test_same_shape_reshape_writing_graph_output_is_kept():
    out = run_pass(chain((2, 3), (2, 3), outputs=["r1", "y"]))
    assert [n.op for n in out.nodes] == ["Activation", "Reshape", "Activation"]
    assert out.nodes[1].attrs["alias"] is True


def test_intermediate_graph_output_blocks_merge():
    out = run_pass(chain((1, 6), (2, 3), (6,), outputs=["y", "r1"]))
    assert [n.op for n in out.nodes] == ["Activation", "Reshape", "Reshape", "Activation"]
    assert out.nodes[2].inputs == ["r1"] and all(n.attrs.get("alias") for n in out.nodes[1:3])


def test_intermediate_with_two_readers_blocks_merge():
    g = chain((1, 6), (2, 3), (6,))
    g.add_tensor("z", (2, 3))
    g.add_node("Activation", ["r1"], ["z"], fn="sigmoid")
    g.outputs = ["y", "z"]
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Activation", "Reshape", "Reshape", "Activation", "Activation"]


def test_graph_input_to_graph_output_reshape_is_marked():
    g = Graph()
    g.add_tensor("x", (1, 1, 1, 4)); g.add_tensor("y", (1, 4))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Reshape", ["x"], ["y"])
    (r,) = run_pass(g).nodes
    assert r.op == "Reshape" and r.attrs == {"alias": True}
    assert "alias" not in g.nodes[0].attrs


def _transposed(shape, perm):
    g = Graph()
    g.add_tensor("x", shape)
    g.add_tensor("r", shape)
    g.add_tensor("t", tuple(shape[p] for p in perm))
    g.add_tensor("y", tuple(shape[p] for p in perm))
    g.add_node("Activation", ["x"], ["r"], fn="relu")
    g.add_node("Transpose", ["r"], ["t"], perm=perm)
    g.add_node("Activation", ["t"], ["y"], fn="tanh")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def test_a_transpose_moving_only_unit_axes_is_an_alias():
    """[T, 1, H] -> [1, T, H] (a batch-first recurrent layer of one sequence) keeps every byte in place."""
    out = run_pass(_transposed((10, 1, 8), (1, 0, 2)))
    assert [n.op for n in out.nodes] == ["Activation", "Reshape", "Activation"]
    assert out.nodes[1].attrs == {"alias": True}


def test_a_transpose_moving_data_stays():
    out = run_pass(_transposed((10, 2, 8), (1, 0, 2)))
    assert [n.op for n in out.nodes] == ["Activation", "Transpose", "Activation"]
