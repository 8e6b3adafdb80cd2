"""Gather with runtime int32/int64 indices (an embedding lookup, tinyc/ops/gather.py) and int8 ARG_MAX / ARG_MIN
(int8 values in, plain integer indices out: OpDef.int8_plain_dtypes). The C against the interpreter under
AddressSanitizer/UBSan, out-of-range indices clamped (never read outside the table); ONNX Gather against
onnxruntime, TFLite GATHER float32 and int8 (bit-exact with BUILTIN_REF), Keras Embedding against Keras; int8
ARG_MAX / ARG_MIN converter-made models bit-exact with TFLite's reference kernels."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from c_runner import run_c  # noqa: E402

from tinyc import interp  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402

HAS_TF = importlib.util.find_spec("tensorflow") is not None
RNG = np.random.default_rng(11)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("itype", ["int32", "int64"])
def test_runtime_indices_wrap_and_clamp(tmp_path, dtype, itype):
    """A constant table and a computed one, axes 0 and 1; indices in range, negative, and out of range both ways
    (clamped to the first / last slice, as evaluate says)."""
    q = Quant(np.float32(0.1), np.int64(3)) if dtype == "int8" else None
    g = Graph(f"gather_rt_{dtype}_{itype}")
    table = RNG.integers(-128, 128, (7, 3)) if dtype == "int8" else RNG.standard_normal((7, 3))
    g.add_tensor("table", (7, 3), dtype, np.asarray(table, dtype), quant=q)
    g.add_tensor("x", (2, 5, 4), dtype, quant=q)
    g.add_tensor("ids", (2, 4), itype)
    g.add_tensor("e", (2, 4, 3), dtype, quant=q)
    g.add_tensor("z", (2, 2, 4, 4), dtype, quant=q)
    g.add_node("Gather", ["table", "ids"], ["e"], axis=0)
    g.add_node("Gather", ["x", "ids"], ["z"], axis=1)
    g.inputs, g.outputs = ["x", "ids"], ["e", "z"]
    g.validate()
    ids = np.array([[0, 6, -1, -7], [7, -8, 1000, -1000]], itype)
    x = (RNG.integers(-128, 128, (2, 5, 4)) if dtype == "int8" else RNG.standard_normal((2, 5, 4))).astype(dtype)
    ref = interp.run(g, [x, ids])
    np.testing.assert_array_equal(ref["e"][1], np.asarray(table, dtype)[[6, 0, 6, 0]])     # clamped
    for name, ours in zip(g.outputs, run_c(g, [x, ids], tmp_path, options={"kernels": "reference"})):
        np.testing.assert_array_equal(ours, ref[name], err_msg=name)


def test_runtime_indices_must_be_int32_or_int64():
    g = Graph("bad")
    g.add_tensor("x", (4, 2))
    g.add_tensor("ids", (3,), "int16")
    g.add_tensor("y", (3, 2))
    g.add_node("Gather", ["x", "ids"], ["y"], axis=0)
    g.inputs, g.outputs = ["x", "ids"], ["y"]
    with pytest.raises(TinycError, match="runtime int32 or int64") as e:
        g.validate()
    assert "\n" not in str(e.value)


def test_onnx_gather_with_runtime_indices(tmp_path):
    """An embedding table (initializer) read by int64 model-input indices, and a computed tensor read on axis 1
    by int32 indices; negative indices in range (ONNX's own meaning) against onnxruntime."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from tinyc.verify import verify
    tab = RNG.standard_normal((10, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0), helper.make_node("Relu", ["e"], ["y"]),
             helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Gather", ["s", "ids2"], ["z"], axis=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5]),
                     helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 3]),
                     helper.make_tensor_value_info("ids2", TensorProto.INT32, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4, 3])], [numpy_helper.from_array(tab, "table")])
    path = str(tmp_path / "gather.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    report = verify(path, inputs=[np.array([[0, 3, -1, 9, -10]]), RNG.standard_normal((2, 6, 3)).astype(np.float32),
                                  np.array([5, -6, 0, 2], np.int32)])
    assert report["ok"], report["outputs"]


def _tflite_gather(path, int8):
    import tensorflow as tf
    tab = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    f = tf.function(lambda x, ids: tf.nn.relu(tf.gather(tf.constant(tab), ids) + x),
                    input_signature=[tf.TensorSpec((1, 5, 4), tf.float32), tf.TensorSpec((1, 5), tf.int32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if int8:
        def gen():
            rng = np.random.default_rng(1)
            for _ in range(32):
                yield [rng.standard_normal((1, 5, 4)).astype(np.float32), rng.integers(0, 10, (1, 5)).astype(np.int32)]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return str(path)


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("int8", [False, True])
def test_tflite_gather_with_runtime_indices(tmp_path, int8):
    from tinyc.verify import verify
    path = _tflite_gather(tmp_path / "gather.tflite", int8)
    x = np.random.default_rng(2).standard_normal((1, 5, 4)).astype(np.float32)
    report = verify(path, inputs=[x, np.array([[0, 3, 9, 9, 2]], np.int32)], per_layer=True)
    assert report["ok"], report["outputs"]
    assert all(row["ok"] for row in report["layers"]), report["layers"]
    if int8:
        assert report["mismatched_bytes"] == 0


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
def test_keras_embedding(tmp_path):
    from tinyc.keras_runtime import import_keras
    from tinyc.verify import verify
    keras = import_keras()
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(3)(keras.layers.Embedding(12, 5)(ids)))
    path = str(tmp_path / "emb.keras")
    model.save(path)
    report = verify(path, inputs=[np.array([[0, 11, 3, 3, 7, 1]], np.int32)])
    assert report["ok"], report["outputs"]


# -- int8 ARG_MAX / ARG_MIN ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("case", ["argmax_int64", "argmin_int32"])
def test_tflite_int8_arg_min_max_bit_exact(tmp_path, case):
    """Converter-made int8 models (int8 input, ARG_MAX after quantized layers; ARG_MIN of the input): the indices
    equal TFLite's reference kernels' on every layer."""
    import tensorflow as tf
    from test_reduce import _tflite
    from tinyc.verify import verify
    fn = {"argmax_int64": lambda x: tf.argmax(tf.nn.relu(x) * 3.0, axis=2),
          "argmin_int32": lambda x: tf.argmin(x, axis=-1, output_type=tf.int32)}[case]
    path = _tflite(fn, (1, 3, 4, 5), tmp_path / f"{case}.tflite", int8=True)
    report = verify(path, samples=20, seed=7, per_layer=True)
    assert report["mismatched_bytes"] == 0 and report["ok"], report["outputs"]
    assert any(row["op"] == "ArgMinMax" for row in report["layers"])
    assert all(row["ok"] for row in report["layers"]), report["layers"]
