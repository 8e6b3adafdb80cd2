"""fold_affine: Mul/Div/Add/Sub by a per-channel constant folds into the preceding Conv2D/Dense."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyc.ir import Graph, Quant
from tinyc.passes import optimize
from tinyc.passes.fold_affine import fold_affine
from pass_checks import assert_same_function, checked, snapshot


def run_pass(g):
    return checked(fold_affine, g)


def ops(g):
    return [n.op for n in g.nodes]


def conv(h=5, w=5, c=3, o=4, k=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1,
         bias=True, seed=0, activation=None):
    """x -> Conv2D -> 'conv' (the graph output until a test appends ops)."""
    rng = np.random.default_rng(seed)
    oh = (h + pads[0] + pads[2] - (k[0] - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - (k[1] - 1) * dilations[1] - 1) // strides[1] + 1
    g = Graph()
    g.add_tensor("x", (1, h, w, c)); g.add_tensor("conv", (1, oh, ow, o))
    ins = ["x", g.add_const("w", rng.standard_normal((o, k[0], k[1], c // groups)))]
    if bias:
        ins.append(g.add_const("b", rng.standard_normal(o)))
    g.inputs, g.outputs = ["x"], ["conv"]
    g.add_node("Conv2D", ins, ["conv"], strides=strides, dilations=dilations, pads=pads, groups=groups,
               activation=activation)
    return g


def then(g, op, const, out, const_first=False, activation=None):
    """Append `out = op(last output, const)` (operands swapped when const_first); make `out` the output."""
    y = g.outputs[0]
    c = g.add_const(out + "_c", const)
    g.add_tensor(out, g.tensors[y].shape)
    g.add_node(op, [c, y] if const_first else [y, c], [out], activation=activation)
    g.outputs = [out]
    return c


# -- folds ----------------------------------------------------------------------------------------------------

def test_tf2onnx_batchnorm_pattern_folds_into_conv_without_bias():
    g = conv(bias=False)
    s = np.array([0.5, 2.0, -1.5, 3.0])
    t = np.array([1.0, -2.0, 0.25, 0.0])
    then(g, "Mul", s.reshape(1, 1, 1, 4), "mul")
    then(g, "Add", t, "add")
    assert ops(g) == ["Conv2D", "Mul", "Add"]
    out = run_pass(g)
    assert ops(out) == ["Conv2D"]
    (node,) = out.nodes
    assert node.inputs[:2] == ["x", "w"] and len(node.inputs) == 3 and node.outputs == ["add"]
    assert node.attrs["fused"] == ("Mul", "Add")
    np.testing.assert_allclose(out.tensors["w"].data, g.tensors["w"].data * s.reshape(4, 1, 1, 1), rtol=1e-6)
    np.testing.assert_allclose(out.tensors[node.inputs[2]].data, t, rtol=1e-6)
    assert out.tensors[node.inputs[2]].shape == (4,)
    assert not {"conv", "mul", "mul_c", "add_c"} & set(out.tensors)


def test_mul_and_div_scale_an_existing_bias_and_create_none():
    g = conv(bias=True)
    then(g, "Mul", np.array([1.0, 2.0, 3.0, 4.0]), "mul")
    out = run_pass(g)
    assert out.nodes[0].inputs == ["x", "w", "b"] and out.nodes[0].outputs == ["mul"]
    np.testing.assert_allclose(out.tensors["b"].data, g.tensors["b"].data * [1, 2, 3, 4], rtol=1e-6)

    g = conv(bias=False)
    then(g, "Div", np.array([1.0, 2.0, -4.0, 0.5]).reshape(1, 4), "div")
    out = run_pass(g)
    assert ops(out) == ["Conv2D"] and out.nodes[0].inputs == ["x", "w"] and out.nodes[0].outputs == ["div"]


def test_sub_then_div_on_bias():
    g = conv(bias=True)
    c1, c2 = np.array([1.0, -2.0, 3.0, 0.5]), np.array([2.0, 4.0, -0.5, 1.0])
    then(g, "Sub", c1.reshape(1, 1, 4), "sub")
    then(g, "Div", c2.reshape(1, 1, 1, 4), "div")
    out = run_pass(g)
    assert ops(out) == ["Conv2D"] and out.nodes[0].inputs == ["x", "w", "b"] and out.nodes[0].outputs == ["div"]
    np.testing.assert_allclose(out.tensors["b"].data, (g.tensors["b"].data - c1) / c2, rtol=1e-6)


@pytest.mark.parametrize("op", ["Mul", "Add"])
def test_constant_as_first_operand(op):
    g = conv()
    then(g, op, np.arange(1.0, 5.0), "y", const_first=True)
    out = run_pass(g)
    assert ops(out) == ["Conv2D"] and out.nodes[0].outputs == ["y"]


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (1, 1, 1, 1), (4,), (1, 4), (1, 1, 1, 4)])
@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
def test_every_channel_broadcast_shape(op, shape):
    g = conv()
    then(g, op, np.random.default_rng(1).uniform(0.5, 2.0, shape), "y")
    out = run_pass(g)
    assert ops(out) == ["Conv2D"] and out.nodes[0].outputs == ["y"]


def test_depthwise_with_multiplier():
    g = conv(c=3, o=6, groups=3, strides=(2, 2), bias=False)
    then(g, "Mul", np.linspace(-2, 2, 6), "mul")
    then(g, "Add", np.linspace(1, 3, 6).reshape(1, 1, 1, 6), "add")
    out = run_pass(g)
    assert ops(out) == ["Conv2D"] and out.nodes[0].attrs["groups"] == 3 and out.nodes[0].outputs == ["add"]


def test_dense():
    rng = np.random.default_rng(3)
    g = Graph()
    g.add_tensor("x", (1, 6)); g.add_tensor("d", (1, 4))
    g.inputs, g.outputs = ["x"], ["d"]
    g.add_node("Dense", ["x", g.add_const("w", rng.standard_normal((4, 6)))], ["d"], activation=None)
    then(g, "Mul", rng.uniform(0.5, 2, (1, 4)), "m")
    then(g, "Sub", rng.standard_normal(4), "s")
    out = run_pass(g)
    assert ops(out) == ["Dense"] and out.nodes[0].outputs == ["s"] and len(out.nodes[0].inputs) == 3


def test_activation_of_the_folded_op_moves_to_the_layer():
    g = conv()
    then(g, "Add", np.ones(4), "y", activation={"fn": "relu"})
    out = run_pass(g)
    assert ops(out) == ["Conv2D"] and out.nodes[0].attrs["activation"] == {"fn": "relu"}


def test_shared_weights_are_not_overwritten():
    g = conv()
    g.add_tensor("x2", (1, 5, 5, 3)); g.add_tensor("other", (1, 5, 5, 4))
    g.add_node("Conv2D", ["x2", "w", "b"], ["other"], strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1),
               groups=1, activation=None)
    g.inputs = ["x", "x2"]
    then(g, "Mul", np.array([2.0, 3.0, 4.0, 5.0]), "mul")
    then(g, "Add", np.array([1.0, 1.0, 1.0, 1.0]), "add")
    g.outputs = ["add", "other"]
    out = run_pass(g)
    assert ops(out) == ["Conv2D", "Conv2D"]
    assert out.nodes[0].outputs == ["add"] and out.nodes[1].outputs == ["other"]
    assert "w" not in out.nodes[0].inputs and "b" not in out.nodes[0].inputs
    assert out.nodes[1].inputs == ["x2", "w", "b"]
    np.testing.assert_array_equal(out.tensors["w"].data, g.tensors["w"].data)
    np.testing.assert_array_equal(out.tensors["b"].data, g.tensors["b"].data)


def test_constant_that_is_the_layer_bias():
    g = conv()
    g.add_tensor("y", g.tensors["conv"].shape)
    g.add_node("Add", ["conv", "b"], ["y"], activation=None)
    g.outputs = ["y"]
    out = run_pass(g)
    assert ops(out) == ["Conv2D"]
    np.testing.assert_allclose(out.tensors[out.nodes[0].inputs[2]].data, 2 * g.tensors["b"].data, rtol=1e-6)


def test_in_the_pipeline_then_activation_fuses():
    g = conv(bias=False)
    then(g, "Mul", np.array([0.5, 2.0, -1.0, 3.0]), "mul")
    then(g, "Add", np.array([1.0, -2.0, 0.0, 0.5]), "add")
    g.add_tensor("r", g.tensors["add"].shape)
    g.add_node("Activation", ["add"], ["r"], fn="relu")
    g.outputs = ["r"]
    out = optimize(g)
    assert ops(out) == ["Conv2D"] and out.nodes[0].attrs["activation"] == {"fn": "relu"}
    assert out.nodes[0].outputs == ["r"]
    assert_same_function(g, out)


# -- not folded -----------------------------------------------------------------------------------------------

def test_layer_with_fused_activation_is_not_folded():
    g = conv(activation={"fn": "relu"})
    then(g, "Mul", np.array([-1.0, 2.0, 3.0, 4.0]), "mul")
    out = run_pass(g)
    assert ops(out) == ["Conv2D", "Mul"]
    np.testing.assert_array_equal(out.tensors["w"].data, g.tensors["w"].data)


@pytest.mark.parametrize("shape", [(1, 5, 5, 4), (1, 5, 1, 1), (1, 1, 5, 4), (5, 1, 4), (1, 5, 5, 1)])
@pytest.mark.parametrize("op", ["Mul", "Add"])
def test_spatially_varying_constant_is_not_folded(op, shape):
    g = conv()
    then(g, op, np.random.default_rng(2).uniform(0.5, 2.0, shape), "y")
    assert ops(run_pass(g)) == ["Conv2D", op]


def test_constant_with_more_dims_than_the_output_is_not_folded():
    rng = np.random.default_rng(3)
    g = Graph()
    g.add_tensor("x", (1, 6)); g.add_tensor("d", (1, 4)); g.add_tensor("y", (1, 1, 4))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Dense", ["x", g.add_const("w", rng.standard_normal((4, 6)))], ["d"], activation=None)
    g.add_node("Mul", ["d", g.add_const("c", rng.standard_normal((1, 1, 4)))], ["y"], activation=None)
    assert ops(run_pass(g)) == ["Dense", "Mul"]


def test_layer_output_with_two_readers_or_graph_output_is_not_folded():
    g = conv()
    then(g, "Mul", np.array([1.0, 2.0, 3.0, 4.0]), "mul")
    g.add_tensor("z", g.tensors["conv"].shape)
    g.add_node("Activation", ["conv"], ["z"], fn="relu")
    g.outputs = ["mul", "z"]
    out = run_pass(g)
    assert ops(out) == ["Conv2D", "Mul", "Activation"] and out.nodes[0].outputs == ["conv"]
    np.testing.assert_array_equal(out.tensors["w"].data, g.tensors["w"].data)

    g = conv()
    then(g, "Add", np.ones(4), "add")
    g.outputs = ["conv", "add"]
    assert ops(run_pass(g)) == ["Conv2D", "Add"]


@pytest.mark.parametrize("op", ["Sub", "Div"])
def test_constant_minus_or_over_layer_is_not_folded(op):
    g = conv()
    then(g, op, np.array([1.0, 2.0, 3.0, 4.0]), "y", const_first=True)
    assert ops(run_pass(g)) == ["Conv2D", op]


def test_division_by_a_constant_with_a_zero_is_not_folded():
    g = conv()
    c = then(g, "Div", np.array([1.0, 0.0, 3.0, 4.0]), "y")
    out = fold_affine(g)  # no numeric check: the reference divides by zero
    assert ops(out) == ["Conv2D", "Div"] and out.nodes[1].inputs == ["conv", c]


def test_quantized_or_integer_constant_is_not_folded():
    g = conv()
    c = then(g, "Mul", np.array([1.0, 2.0, 3.0, 4.0]), "y")
    g.tensors[c].quant = Quant(np.array([0.1]), np.array([0]))
    assert ops(run_pass(g)) == ["Conv2D", "Mul"]

    g = conv()
    g.add_tensor("y", g.tensors["conv"].shape)
    g.add_node("Add", ["conv", g.add_const("k", np.array([1, 2, 3, 4]), dtype="int32")], ["y"], activation=None)
    g.outputs = ["y"]
    assert ops(run_pass(g)) == ["Conv2D", "Add"]


def test_folding_stops_at_the_first_op_that_cannot_fold():
    g = conv(bias=False)
    then(g, "Mul", np.array([1.0, 2.0, 3.0, 4.0]), "m")
    then(g, "Add", np.ones((1, 5, 5, 4)), "a")          # spatially varying: stays
    then(g, "Add", np.ones(4), "b")                     # its producer is an Add, not a layer: stays
    out = run_pass(g)
    assert ops(out) == ["Conv2D", "Add", "Add"] and out.nodes[0].outputs == ["m"]


def test_no_pattern_returns_an_equal_copy():
    g = conv()
    out = run_pass(g)
    assert out is not g and snapshot(out) == snapshot(g)


# -- property -------------------------------------------------------------------------------------------------

SHAPES = {  # constant shapes for a layer output (1, H, W, C): the first seven vary only along C
    "()": lambda h, w, c: (), "(1,)": lambda h, w, c: (1,), "(C,)": lambda h, w, c: (c,),
    "(1,C)": lambda h, w, c: (1, c), "(1,1,C)": lambda h, w, c: (1, 1, c),
    "(1,1,1,C)": lambda h, w, c: (1, 1, 1, c), "(1,1,1,1)": lambda h, w, c: (1, 1, 1, 1),
    "(1,H,W,C)": lambda h, w, c: (1, h, w, c), "(1,H,1,1)": lambda h, w, c: (1, h, 1, 1),
    "(1,1,W,C)": lambda h, w, c: (1, 1, w, c),
}
GOOD, BAD = list(SHAPES)[:7], list(SHAPES)[7:]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.tuples(*[st.integers(0, 2)] * 4), st.booleans(), st.booleans(),
       st.lists(st.tuples(st.sampled_from(["Mul", "Add", "Sub", "Div"]),
                          st.sampled_from(GOOD * 3 + BAD), st.booleans()), min_size=1, max_size=3),
       st.integers(0, 2**31 - 1))
def test_folding_preserves_function(cg, groups, mult, kh, kw, sh, pads, depthwise, bias, chain, seed):
    c = groups * cg
    if depthwise:
        groups = c
    o = groups * mult if depthwise else groups * mult * 2
    g = conv(h=6, w=5, c=c, o=o, k=(kh, kw), strides=(sh, 1), pads=pads, groups=groups, bias=bias, seed=seed)
    _, oh, ow, _ = g.tensors["conv"].shape
    rng = np.random.default_rng(seed)
    expected, folding = ["Conv2D"], True
    for i, (op, kind, swap) in enumerate(chain):
        shape = SHAPES[kind](oh, ow, o)
        if op in ("Mul", "Div"):
            value = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
        else:
            value = rng.standard_normal(shape)
        swap = swap and op != "Div"  # c / y can blow up near y == 0; Sub(c, y) covers the swapped case
        then(g, op, value, f"t{i}", const_first=swap)
        channel_only = all(d == 1 for d in np.shape(value)[:-1])
        folding = folding and channel_only and not (swap and op == "Sub")
        if not folding:
            expected.append(op)
    out = run_pass(g)
    assert ops(out) == expected
    assert out.nodes[-1].outputs == g.outputs
