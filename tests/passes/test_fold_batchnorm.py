"""fold_batchnorm: BatchNorm folds into Conv2D/Dense weights, or becomes a ScaleShift."""
import numpy as np
from hypothesis import given, settings, strategies as st

from tinyc.ir import Graph
from tinyc.passes.fold_batchnorm import fold_batchnorm
from pass_checks import checked


def run_pass(g):
    return checked(fold_batchnorm, g)


def add_bn(g, rng, x, y, c):
    params = [g.add_const(f"{y}_gamma", rng.uniform(0.5, 2, c)), g.add_const(f"{y}_beta", rng.standard_normal(c)),
              g.add_const(f"{y}_mean", rng.standard_normal(c)), g.add_const(f"{y}_var", rng.uniform(0.1, 3, c))]
    g.add_node("BatchNorm", [x] + params, [y], epsilon=1e-3)


def conv_bn(h=5, w=5, c=3, o=4, k=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1,
            bias=True, seed=0):
    rng = np.random.default_rng(seed)
    oh = (h + pads[0] + pads[2] - (k[0] - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - (k[1] - 1) * dilations[1] - 1) // strides[1] + 1
    g = Graph()
    g.add_tensor("x", (1, h, w, c)); g.add_tensor("conv", (1, oh, ow, o)); g.add_tensor("bn", (1, oh, ow, o))
    ins = ["x", g.add_const("w", rng.standard_normal((o, k[0], k[1], c // groups)))]
    if bias:
        ins.append(g.add_const("b", rng.standard_normal(o)))
    g.inputs, g.outputs = ["x"], ["bn"]
    g.add_node("Conv2D", ins, ["conv"], strides=strides, dilations=dilations, pads=pads, groups=groups,
               activation=None)
    add_bn(g, rng, "conv", "bn", o)
    return g


def test_conv_without_bias_gets_one():
    g = conv_bn(bias=False)
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Conv2D"]
    conv = out.nodes[0]
    assert conv.outputs == ["bn"] and len(conv.inputs) == 3 and conv.inputs[1] == "w"
    assert conv.attrs["fused"] == ("BatchNorm",)      # for the reports
    assert out.tensors[conv.inputs[2]].shape == (4,)
    assert "conv" not in out.tensors and not any("gamma" in t for t in out.tensors)


def test_conv_with_bias_keeps_names():
    out = run_pass(conv_bn(bias=True))
    assert out.nodes[0].inputs == ["x", "w", "b"] and out.nodes[0].outputs == ["bn"]


def test_depthwise_with_multiplier():
    out = run_pass(conv_bn(c=3, o=6, groups=3, strides=(2, 2)))
    assert [n.op for n in out.nodes] == ["Conv2D"] and out.nodes[0].attrs["groups"] == 3


def test_dense():
    rng = np.random.default_rng(3)
    g = Graph()
    g.add_tensor("x", (1, 6)); g.add_tensor("d", (1, 4)); g.add_tensor("y", (1, 4))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Dense", ["x", g.add_const("w", rng.standard_normal((4, 6)))], ["d"], activation=None)
    add_bn(g, rng, "d", "y", 4)
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Dense"] and out.nodes[0].outputs == ["y"]


def test_conv_output_with_two_readers_gives_scaleshift():
    g = conv_bn()
    g.add_tensor("z", g.tensors["conv"].shape)
    g.add_node("Activation", ["conv"], ["z"], fn="relu")
    g.outputs = ["bn", "z"]
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Conv2D", "ScaleShift", "Activation"]
    assert out.nodes[0].outputs == ["conv"] and out.nodes[1].inputs[0] == "conv"
    np.testing.assert_array_equal(out.tensors["w"].data, g.tensors["w"].data)


def test_conv_output_is_graph_output_or_has_activation_gives_scaleshift():
    g = conv_bn()
    g.outputs = ["conv", "bn"]
    assert [n.op for n in run_pass(g).nodes] == ["Conv2D", "ScaleShift"]
    g = conv_bn()
    g.nodes[0].attrs["activation"] = {"fn": "relu"}
    assert [n.op for n in run_pass(g).nodes] == ["Conv2D", "ScaleShift"]


def test_lone_batchnorm_becomes_scaleshift():
    g = Graph()
    g.add_tensor("x", (1, 2, 2, 3)); g.add_tensor("y", (1, 2, 2, 3))
    g.inputs, g.outputs = ["x"], ["y"]
    add_bn(g, np.random.default_rng(0), "x", "y", 3)
    out = run_pass(g)
    (node,) = out.nodes
    assert node.op == "ScaleShift" and node.attrs == {} and node.outputs == ["y"]
    assert [out.tensors[i].shape for i in node.inputs[1:]] == [(3,), (3,)]


def test_shared_weights_are_not_overwritten():
    g = conv_bn()
    g.add_tensor("x2", (1, 5, 5, 3)); g.add_tensor("other", (1, 5, 5, 4))
    g.add_node("Conv2D", ["x2", "w", "b"], ["other"], strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1),
               groups=1, activation=None)
    g.inputs, g.outputs = ["x", "x2"], ["bn", "other"]
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Conv2D", "Conv2D"]
    assert out.nodes[0].inputs[1:] != ["w", "b"] and out.nodes[1].inputs[1:] == ["w", "b"]
    np.testing.assert_array_equal(out.tensors["w"].data, g.tensors["w"].data)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.integers(1, 2), st.tuples(*[st.integers(0, 2)] * 4), st.booleans(),
       st.booleans(), st.integers(0, 2**31 - 1))
def test_folding_preserves_function(cg, groups, mult, kh, kw, sh, dh, pads, depthwise, bias, seed):
    c = groups * cg
    if depthwise:
        groups, c = c, c
    o = groups * mult if depthwise else groups * mult * 2
    g = conv_bn(h=6, w=5, c=c, o=o, k=(kh, kw), strides=(sh, 1), dilations=(dh, 1), pads=pads, groups=groups,
                bias=bias, seed=seed)
    out = run_pass(g)
    assert [n.op for n in out.nodes] == ["Conv2D"] and out.nodes[0].outputs == ["bn"]
