"""fuse_layer_norm: the decomposed layer / RMS normalization exporters write becomes one Normalize computing the same
function; near misses (other axes, another exponent, a reversed Sub, an intermediate read elsewhere, a vector
epsilon, a gamma that grows the shape) are left alone."""
import numpy as np
import pytest

from tinyc.ir import Graph
from tinyc.passes.fuse_layer_norm import fuse_layer_norm
from pass_checks import checked

SHAPE = (2, 3, 8)


def decomposed(center=True, square="pow", root="div", gamma=(8,), beta=(8,), axes=(2,), axes2=None, exponent=2.0,
               eps=(), reverse_sub=False, extra_output=None, one=1.0):
    """x -> [Mean, Sub] -> square -> Mean -> Add eps -> root -> [Mul gamma] -> [Add beta], as exporters write it."""
    rng = np.random.default_rng(0)
    g = Graph("ln")
    g.add_tensor("x", SHAPE)
    g.inputs = ["x"]
    stat = tuple(1 if i in axes else d for i, d in enumerate(SHAPE))

    def t(name, shape):
        g.add_tensor(name, shape)
        return name
    d = "x"
    if center:
        g.add_node("Mean", ["x"], [t("m", stat)], name="m", axes=axes, keepdims=True)
        g.add_node("Sub", ["m", "x"] if reverse_sub else ["x", "m"], [t("d", SHAPE)], name="d", activation=None)
        d = "d"
    if square == "pow":
        g.add_node("Pow", [d, g.add_const("two", np.float32(exponent))], [t("q", SHAPE)], name="q", activation=None)
    elif square == "mul":
        g.add_node("Mul", [d, d], [t("q", SHAPE)], name="q", activation=None)
    else:
        g.add_node("Activation", [d], [t("q", SHAPE)], name="q", fn="square")
    axes2 = axes if axes2 is None else axes2
    vstat = tuple(1 if i in axes2 else d for i, d in enumerate(SHAPE))
    g.add_node("Mean", ["q"], [t("v", vstat)], name="v", axes=axes2, keepdims=True)
    eps_value = np.full(eps, 1e-3, np.float32) if eps else np.float32(1e-3)
    g.add_node("Add", [g.add_const("eps", eps_value), "v"], [t("e", vstat)], name="e", activation=None)
    if root == "div":
        g.add_node("Activation", ["e"], [t("s", vstat)], name="s", fn="sqrt")
        g.add_node("Div", [d, "s"], [t("n", SHAPE)], name="n", activation=None)
    elif root == "rsqrt":
        g.add_node("Activation", ["e"], [t("r", vstat)], name="r", fn="rsqrt")
        g.add_node("Mul", ["r", d], [t("n", SHAPE)], name="n", activation=None)
    else:       # reciprocal: an Activation, or (as PyTorch exports torch.rsqrt) Div(1, sqrt)
        g.add_node("Activation", ["e"], [t("s", vstat)], name="s", fn="sqrt")
        if root == "reciprocal":
            g.add_node("Activation", ["s"], [t("r", vstat)], name="r", fn="reciprocal")
        else:
            g.add_node("Div", [g.add_const("one", np.float32(one)), "s"], [t("r", vstat)], name="r", activation=None)
        g.add_node("Mul", [d, "r"], [t("n", SHAPE)], name="n", activation=None)
    out = "n"
    if gamma is not None:
        out_shape = np.broadcast_shapes(SHAPE, gamma)
        g.add_node("Mul", [g.add_const("gamma", rng.standard_normal(gamma).astype(np.float32)), "n"],
                   [t("y", out_shape)], name="y", activation=None)
        out = "y"
        if beta is not None:
            g.add_node("Add", ["y", g.add_const("beta", rng.standard_normal(beta).astype(np.float32))],
                       [t("z", out_shape)], name="z", activation=None)
            out = "z"
    g.outputs = [out] + ([extra_output] if extra_output else [])
    g.validate()
    return g


def ops(g):
    return [n.op for n in g.nodes]


@pytest.mark.parametrize("square", ["pow", "mul", "square"])
@pytest.mark.parametrize("root", ["div", "rsqrt", "reciprocal", "one_over"])
def test_layer_norm_fuses(square, root):
    out = checked(fuse_layer_norm, decomposed(square=square, root=root))
    (node,) = out.nodes
    assert node.op == "Normalize" and node.attrs["center"] and node.attrs["axes"] == (2,)
    assert node.attrs["epsilon"] == pytest.approx(1e-3) and node.outputs == ["z"]
    assert out.tensors[node.inputs[1]].shape == (1, 1, 8) and len(node.inputs) == 3


@pytest.mark.parametrize("gamma, beta", [(None, None), ((8,), None), ((3, 1), (1, 8)), ((), ())])
def test_optional_and_broadcast_affine(gamma, beta):
    out = checked(fuse_layer_norm, decomposed(gamma=gamma, beta=beta))
    assert ops(out) == ["Normalize"] and len(out.nodes[0].inputs) == (3 if beta is not None else 2)


def test_rms_norm_and_several_axes():
    for root in ("rsqrt", "one_over"):      # T5 / LLaMA: x * rsqrt(mean(x^2) + eps) * w
        out = checked(fuse_layer_norm, decomposed(center=False, root=root))
        assert ops(out) == ["Normalize"] and not out.nodes[0].attrs["center"]
    out = checked(fuse_layer_norm, decomposed(axes=(1, 2), gamma=(3, 8), beta=(3, 1)))
    assert ops(out) == ["Normalize"] and out.nodes[0].attrs["axes"] == (1, 2)


@pytest.mark.parametrize("near_miss", [
    dict(axes2=(1,)),                   # the variance over other axes than the mean
    dict(exponent=4.0),                 # not a square
    dict(reverse_sub=True),             # m - x: the output would change sign
    dict(eps=(2, 1, 1)),                # a vector added to the variance
    dict(root="one_over", one=2.0),     # 2 / sqrt: not the reciprocal
    dict(extra_output="d"),             # an intermediate is a graph output
    dict(extra_output="v"),
])
def test_near_misses_are_left_alone(near_miss):
    """No centred Normalize; where d = x - m (or m - x) is itself normalized by its own root mean square, that
    part alone may become an RMS Normalize of d, which is the same function (checked)."""
    out = checked(fuse_layer_norm, decomposed(**near_miss))
    assert not any(n.op == "Normalize" and n.attrs["center"] for n in out.nodes)
    if near_miss.get("axes2") or near_miss.get("reverse_sub"):
        assert ops(out) == ["Mean", "Sub", "Normalize"]
    else:
        assert "Normalize" not in ops(out)


def test_gamma_that_grows_the_shape_stays_a_mul():
    out = checked(fuse_layer_norm, decomposed(gamma=(4, 1, 1, 8), beta=None))
    assert ops(out) == ["Normalize", "Mul"]


def test_intermediate_with_another_reader_is_left_alone():
    g = decomposed()
    g.add_tensor("side", SHAPE)
    g.add_node("Activation", ["d"], ["side"], name="side", fn="relu")
    g.outputs.append("side")
    assert "Normalize" not in ops(checked(fuse_layer_norm, g))


def moments_form(gamma=(8,), beta=(8,), negate=True, axes2=None, extra_output=None, squares="difference"):
    """TensorFlow's spelling (Keras LayerNormalization through the TFLite converter): x * inv + (-mean * inv + beta),
    inv = rsqrt(mean(SquaredDifference(x, mean)) + eps) * gamma."""
    rng = np.random.default_rng(1)
    g = Graph("tf_ln")
    g.add_tensor("x", SHAPE)
    g.inputs = ["x"]
    stat = (2, 3, 1)

    def t(name, shape):
        g.add_tensor(name, shape)
        return name
    g.add_node("Mean", ["x"], [t("m", stat)], name="m", axes=(2,), keepdims=True)
    g.add_node("Activation", ["m"], [t("nm", stat)], name="nm", fn="neg" if negate else "abs")
    if squares == "difference":
        g.add_node("SquaredDifference", ["x", "m"], [t("sq", SHAPE)], name="sq", activation=None)
    else:       # Keras GroupNormalization's spelling: (m - x), then square
        g.add_node("Sub", ["m", "x"], [t("dm", SHAPE)], name="dm", activation=None)
        g.add_node("Activation", ["dm"], [t("sq", SHAPE)], name="sq", fn="square")
    axes2 = axes2 or (2,)
    vstat = tuple(1 if i in axes2 else d for i, d in enumerate(SHAPE))
    g.add_node("Mean", ["sq"], [t("v", vstat)], name="v", axes=axes2, keepdims=True)
    g.add_node("Add", ["v", g.add_const("eps", np.float32(1e-3))], [t("e", vstat)], name="e", activation=None)
    g.add_node("Activation", ["e"], [t("r", vstat)], name="r", fn="rsqrt")
    inv = "r"
    if gamma is not None:
        g.add_node("Mul", ["r", g.add_const("gamma", rng.standard_normal(gamma).astype(np.float32))],
                   [t("inv", np.broadcast_shapes(vstat, gamma))], name="inv", activation=None)
        inv = "inv"
    inv_shape = g.tensors[inv].shape
    g.add_node("Mul", ["nm", inv], [t("b", np.broadcast_shapes(stat, inv_shape))], name="b", activation=None)
    res = "b"
    if beta is not None:
        g.add_node("Add", ["b", g.add_const("beta", rng.standard_normal(beta).astype(np.float32))],
                   [t("c", SHAPE)], name="c", activation=None)
        res = "c"
    g.add_node("Mul", ["x", inv], [t("a", SHAPE)], name="a", activation=None)
    g.add_node("Add", ["a", res], [t("y", SHAPE)], name="y", activation=None)
    g.outputs = ["y"] + ([extra_output] if extra_output else [])
    g.validate()
    return g


@pytest.mark.parametrize("gamma, beta", [((8,), (8,)), (None, (8,)), ((8,), None), (None, None)])
@pytest.mark.parametrize("squares", ["difference", "sub_square"])
def test_tensorflow_moments_form_fuses(gamma, beta, squares):
    out = checked(fuse_layer_norm, moments_form(gamma, beta, squares=squares))
    (node,) = out.nodes
    assert node.op == "Normalize" and node.attrs["center"] and len(node.inputs) == (3 if beta else 2)


@pytest.mark.parametrize("near_miss", [dict(negate=False), dict(axes2=(1, 2)), dict(extra_output="b"),
                                       dict(extra_output="inv"), dict(squares="sub_square", extra_output="dm")])
def test_tensorflow_moments_near_misses_are_left_alone(near_miss):
    assert "Normalize" not in ops(checked(fuse_layer_norm, moments_form(**near_miss)))
