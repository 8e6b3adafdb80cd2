"""dequantize_hybrid (--hybrid float): hybrid layers become float layers on their dequantized weights; the graph
then computes the float arithmetic on those weights (not the hybrid one), and other nodes stay as they are."""
import numpy as np
import pytest

from tinyc import interp
from tinyc.errors import TinycError
from tinyc.ir import Graph, Quant
from tinyc.ops import hybrid
from tinyc.passes.dequantize_hybrid import apply_hybrid_choice, dequantize_hybrid


def _hybrid_graph(inputs="asymmetric"):
    rng = np.random.default_rng(0)
    g = Graph("h")
    g.add_tensor("x", (1, 6, 6, 3), "float32")
    g.inputs.append("x")
    w1 = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    s1 = np.array([0.01, 0.02, 0.005, 0.04], np.float32)
    g.add_const("w1", w1, "int8")
    g.tensors["w1"].quant = Quant(s1, np.zeros(4, np.int64), 0)
    g.add_const("b1", rng.standard_normal(4).astype(np.float32), "float32")
    g.add_tensor("c", (1, 6, 6, 4), "float32")
    g.add_node("Conv2D", ["x", "w1", "b1"], ["c"], name="conv", strides=(1, 1), dilations=(1, 1),
               pads=(1, 1, 1, 1), groups=1, activation={"fn": "relu"}, hybrid=hybrid.attrs(inputs, s1, "separate"))
    g.add_tensor("r", (1, 144), "float32")
    g.add_node("Reshape", ["c"], ["r"], name="flat")
    w2 = rng.integers(-127, 128, (5, 144)).astype(np.int8)
    g.add_const("w2", w2, "int8")
    g.tensors["w2"].quant = Quant(np.float32(0.003), np.int64(0), None)
    g.add_tensor("y", (1, 5), "float32")
    g.add_node("Dense", ["r", "w2"], ["y"], name="fc", hybrid=hybrid.attrs(inputs, np.full(5, 0.003), "combined"))
    g.outputs.append("y")
    g.validate()
    return g


def test_weights_dequantized_and_float_arithmetic():
    g = _hybrid_graph()
    f = dequantize_hybrid(g)
    assert not any(n.attrs.get("hybrid") for n in f.nodes)
    conv, fc = f.nodes[0], f.nodes[2]
    w1 = f.tensors[conv.inputs[1]]
    assert w1.dtype == "float32" and w1.quant is None
    np.testing.assert_array_equal(w1.data, g.tensors["w1"].data.astype(np.float32) *
                                  np.float32([0.01, 0.02, 0.005, 0.04]).reshape(4, 1, 1, 1))
    assert f.tensors[fc.inputs[1]].dtype == "float32"
    assert "w1" not in f.tensors and "w2" not in f.tensors     # the int8 copies are gone (flash)
    assert any(n.attrs.get("hybrid") for n in g.nodes)         # the input graph is unchanged
    x = np.random.default_rng(1).standard_normal((1, 6, 6, 3)).astype(np.float32)
    ours = interp.run(f, [x])["y"]
    w1f = w1.data.astype(np.float64)
    c = np.zeros((1, 6, 6, 4))
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    for i in range(6):
        for j in range(6):
            c[0, i, j] = np.tensordot(w1f, xp[0, i:i + 3, j:j + 3], axes=([1, 2, 3], [0, 1, 2]))
    c = np.maximum(c + g.tensors["b1"].data, 0)
    expected = c.reshape(1, 144) @ f.tensors[fc.inputs[1]].data.astype(np.float64).T
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    hybrid_out = interp.run(g, [x])["y"]
    assert not np.allclose(hybrid_out, ours, rtol=0, atol=1e-6)   # the hybrid arithmetic differs


def test_choice():
    g = _hybrid_graph("symmetric")
    assert apply_hybrid_choice(g, "tflite") is g
    assert not any(n.attrs.get("hybrid") for n in apply_hybrid_choice(g, "float").nodes)
    with pytest.raises(TinycError, match="--hybrid int8 is not supported"):
        apply_hybrid_choice(g, "int8")
    with pytest.raises(TinycError, match="hybrid layer"):
        apply_hybrid_choice(g, "tflite", quantize="int8")
