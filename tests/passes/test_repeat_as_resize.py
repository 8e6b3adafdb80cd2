"""repeat_as_resize: Reshape / Tile / BroadcastTo chains that repeat elements per axis become one nearest Resize;
other chains stay. The interpreter gives the same values before and after; TFLiteConverter's lowering of Keras
UpSampling2D (nearest) compiles to one Resize, bit-exact with TFLite on int8."""
import importlib.util
import os
import sys

import numpy as np
import pytest

from tinyc import interp
from tinyc.ir import Graph, Quant
from tinyc.passes import repeat_as_resize

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ops"))
RNG = np.random.default_rng(3)


def _chain(steps, x_shape=(1, 5, 6, 4), dtype="float32", quant=None):
    """x -> each (op, output shape, attrs) in turn -> y."""
    g = Graph("chain")
    g.add_tensor("x", x_shape, dtype, quant=quant)
    g.inputs = ["x"]
    src = "x"
    for k, (op, shape, attrs) in enumerate(steps):
        name = "y" if k == len(steps) - 1 else f"t{k}"
        g.add_tensor(name, shape, dtype, quant=quant)
        g.add_node(op, [src], [name], name=f"n{k}", **attrs)
        src = name
    g.outputs = ["y"]
    g.validate()
    return g


def _same_values(g, out):
    x = RNG.standard_normal(g.tensors["x"].shape).astype(np.float32)
    np.testing.assert_array_equal(interp.run(out, [x])["y"], interp.run(g, [x])["y"])


UPSAMPLING_2D = [  # what TFLiteConverter writes for UpSampling2D((2, 3)) on [1, 5, 6, 4]
    ("Reshape", (1, 5, 1, 6, 4), {}),
    ("Tile", (1, 5, 2, 6, 4), dict(reps=(1, 1, 2, 1, 1))),
    ("Reshape", (1, 10, 6, 1, 4), {}),
    ("Tile", (1, 10, 6, 3, 4), dict(reps=(1, 1, 1, 3, 1))),
    ("Reshape", (1, 10, 18, 4), {}),
]


def test_upsampling_chain_becomes_one_resize():
    g = _chain(UPSAMPLING_2D)
    out = repeat_as_resize(g)
    assert [n.op for n in out.nodes] == ["Resize"]
    r = out.nodes[0]
    assert r.attrs["mode"] == "nearest" and r.attrs["coord"] == "asymmetric" and r.attrs["scales"] == (1, 2, 3, 1)
    assert set(out.tensors) == {"x", "y"}
    _same_values(g, out)


def test_broadcast_chain_and_a_trailing_flatten():
    """UpSampling1D's BroadcastTo form; a Reshape to 2-D after it stays a Reshape."""
    g = _chain([("Reshape", (1, 7, 1, 3), {}), ("BroadcastTo", (1, 7, 4, 3), dict(target=(1, 7, 4, 3))),
                ("Reshape", (1, 28, 3), {}), ("Reshape", (1, 84), {})], x_shape=(1, 7, 3))
    out = repeat_as_resize(g)
    assert [n.op for n in out.nodes] == ["Resize", "Reshape"]
    assert out.nodes[0].attrs["scales"] == (1, 4, 1)
    _same_values(g, out)


@pytest.mark.parametrize("steps", [
    [("Tile", (1, 10, 6, 4), dict(reps=(1, 2, 1, 1)))],                          # whole blocks, not elements
    [("Reshape", (1, 5, 6, 4, 1), {}), ("Tile", (1, 5, 6, 4, 2), dict(reps=(1, 1, 1, 1, 2)))],   # rank changes
    [("Reshape", (1, 1, 5, 6, 4), {}), ("Tile", (1, 2, 5, 6, 4), dict(reps=(1, 2, 1, 1, 1))),
     ("Reshape", (1, 10, 6, 4), {})],                                              # the copies land as blocks
], ids=["tile", "rank", "blocks"])
def test_other_chains_stay(steps):
    g = _chain(steps)
    out = repeat_as_resize(g)
    assert [n.op for n in out.nodes] == [n.op for n in g.nodes]


def test_int8_needs_one_quantization():
    q = Quant(np.float32(0.1), np.int64(3))
    out = repeat_as_resize(_chain(UPSAMPLING_2D, dtype="int8", quant=q))
    assert [n.op for n in out.nodes] == ["Resize"]


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_converter_upsampling2d_int8_is_one_resize_and_bit_exact(tmp_path):
    """TFLite's int8 TILE is version 3, which BUILTIN_REF lacks: the default resolver without delegates (one TILE
    kernel, a copy) is the oracle, as in tests/ops/test_data_movement.py."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import int8_zoo
    from c_runner import run_c
    from tensorflow.lite.python.interpreter import Interpreter, OpResolverType
    from tinyc.compiler import compile_model
    keras = int8_zoo._keras()
    L = keras.layers
    x = keras.Input((5, 6, 3))
    keras.utils.set_random_seed(0)
    # nothing but the resize: the default resolver's optimized kernels (a conv, say) differ from the reference
    path = int8_zoo.to_int8_tflite(keras.Model(x, L.UpSampling2D((2, 3))(x)), tmp_path / "up.tflite")
    from tinyc.frontends.tflite_import import _op_name, _read, _schema
    S = _schema()
    _, model = _read(S, path)
    assert "TILE" in {_op_name(S, model, op) for op in model.subgraphs[0].operators}
    g = compile_model(path).plan.graph
    assert [n.op for n in g.nodes] == ["Resize"]
    interpreter = Interpreter(model_path=path,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    for _ in range(3):
        sample = RNG.integers(-128, 128, g.tensors[g.inputs[0]].shape).astype(np.int8)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
        interpreter.invoke()
        theirs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_array_equal(run_c(g, [sample], tmp_path)[0].ravel(), theirs.ravel())
