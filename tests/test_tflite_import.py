"""TFLite frontend: Keras models converted with tf.lite.TFLiteConverter (float32, no optimizations) compile and
match TFLite's reference kernels layer by layer; bad files and int8 models give one clear line."""
import importlib.util
import re

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("the TFLite frontend needs tensorflow", allow_module_level=True)

import model_zoo  # noqa: E402
from test_cli import one_line_error, tinyc  # noqa: E402

from tinyc.verify import verify  # noqa: E402


def _tf():
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    import tensorflow as tf
    return keras, tf


def to_tflite(model, path, optimize=None, representative=None):
    _, tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if optimize == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif optimize == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
    path.write_bytes(conv.convert())
    return str(path)


def heads():
    """One trunk, five heads: tanh (fused into nothing: TANH), LeakyReLU, hard_swish, softmax, sigmoid."""
    keras, _ = _tf()
    layers = keras.layers
    keras.utils.set_random_seed(3)
    x = keras.Input((10,), name="x")
    h = layers.Dense(12, name="trunk")(x)
    outs = [layers.Dense(4, activation="tanh", name="t")(h),
            layers.LeakyReLU(negative_slope=0.1, name="lr")(layers.Dense(4, name="d_lr")(h)),
            layers.Activation("hard_swish", name="hs")(layers.Dense(4, name="d_hs")(h)),
            layers.Dense(4, activation="softmax", name="sm")(h),
            layers.Dense(4, activation="sigmoid", name="sg")(h)]
    return model_zoo.randomize(keras.Model(x, outs, name="heads"), 3)


BUILDERS = {"heads": heads, **model_zoo.ZOO}


@pytest.fixture(scope="module")
def tfl(tmp_path_factory):
    """name -> .tflite path, each converted once per module."""
    directory, cache = tmp_path_factory.mktemp("tflite"), {}

    def get(name, optimize=None):
        key = (name, optimize)
        if key not in cache:
            cache[key] = to_tflite(BUILDERS[name](), directory / f"{name}_{optimize or 'f32'}.tflite", optimize)
        return cache[key]
    return get


# mlp: FULLY_CONNECTED; cnn_plain: pools + the SHAPE/STRIDED_SLICE/PACK -> RESHAPE Flatten sub-graph;
# cnn_depthwise: DEPTHWISE_CONV_2D, fused RELU6, MEAN, SOFTMAX; cnn_residual: ADD; cnn_branches: CONCATENATION,
# LOGISTIC; cnn_zeropad: PAD; cnn_pool_same: SAME pooling; heads: TANH, LEAKY_RELU, HARD_SWISH, SOFTMAX.
MODELS = ["mlp_relu", "cnn_plain", "cnn_depthwise", "cnn_residual", "cnn_branches", "cnn_zeropad",
          "cnn_pool_same", "heads"]


@pytest.mark.parametrize("name", MODELS)
def test_tflite_matches_reference_per_layer(tfl, name):
    report = verify(tfl(name), per_layer=True)
    bad = [row for row in report["layers"] if not row["ok"]]
    assert report["ok"], (report["max_abs_err"], report["outputs"])
    assert report["first_divergence"] is None, bad
    assert len(report["layers"]) >= 3, report["layers"]


def test_flatten_subgraph_is_folded(tfl):
    from tinyc.frontends.tflite_import import load_tflite
    g = load_tflite(tfl("cnn_plain"))
    assert g.source_format == "tflite"
    ops = [n.op for n in g.nodes]
    assert ops == ["Conv2D", "MaxPool2D", "Conv2D", "AvgPool2D", "Reshape", "Dense", "Dense", "Softmax"], ops
    assert g.tensors[g.nodes[4].outputs[0]].shape == (1, 48)
    assert all(t.source_perm is None for t in g.tensors.values())
    assert g.tensors[g.outputs[0]].source_name   # the TFLite tensor name, for per-layer verification


def test_float16_weights_are_dequantized_at_compile_time(tfl):
    report = verify(tfl("cnn_residual", "float16"))
    assert report["ok"], report["outputs"]


def test_hybrid_layer_without_hybrid_kernel_is_refused(tmp_path):
    """Dynamic-range (hybrid) FC / conv / depthwise compile (tests/test_hybrid.py); a hybrid TRANSPOSE_CONV has no
    kernel in tinyc: one clear line."""
    keras, tf = _tf()
    x = keras.Input((6, 6, 16))
    model = keras.Model(x, keras.layers.Conv2DTranspose(16, 3, strides=2)(x))   # >= 1024 weights: quantized
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    path = tmp_path / "hybrid.tflite"
    path.write_bytes(conv.convert())
    one_line_error(tinyc("compile", path, "-o", tmp_path / "o"), "hybrid")


def test_quantization_parameters_are_read(tmp_path):
    model = BUILDERS["mlp_relu"]()
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.standard_normal((1, 12)).astype(np.float32)]
    path = to_tflite(model, tmp_path / "int8.tflite", "int8", representative)
    from tinyc.frontends import tflite_import as ti
    g = ti.load_tflite(path)
    assert g.tensors[g.inputs[0]].dtype == "float32"          # float API, QUANTIZE inside
    assert [n.op for n in g.nodes][0] == "Quantize" and g.nodes[-1].op == "Dequantize"
    weights = [t for t in g.tensors.values() if t.is_const and t.dtype == "int8"]
    assert weights and all(t.quant is not None and t.quant.axis == 0 for t in weights)
    acts = [t for t in g.tensors.values() if not t.is_const and t.dtype == "int8"]
    assert acts and all(t.quant.scale.shape == () and t.quant.scale > 0 for t in acts)
    assert verify(path, samples=10)["ok"]


@pytest.mark.parametrize("content", [b"", b"garbage" * 50, b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 2])
def test_corrupt_tflite(tmp_path, content):
    p = tmp_path / "bad.tflite"
    p.write_bytes(content)
    one_line_error(tinyc("compile", p, "-o", tmp_path / "o"))


def test_truncated_tflite(tfl, tmp_path):
    with open(tfl("mlp_relu"), "rb") as f:
        data = f.read()
    p = tmp_path / "trunc.tflite"
    p.write_bytes(data[: len(data) // 2])
    one_line_error(tinyc("compile", p, "-o", tmp_path / "o"))


def test_unsupported_op_names_op_and_tensor(tmp_path):
    keras, _ = _tf()
    x = keras.Input((4, 4, 2), name="img")
    y = keras.layers.Lambda(lambda t: keras.ops.cumsum(t, axis=1), name="running")(keras.layers.Conv2D(2, 1)(x))
    path = to_tflite(keras.Model(x, y), tmp_path / "cumsum.tflite")
    msg = one_line_error(tinyc("compile", path, "-o", tmp_path / "o"), "tinyc ops")
    assert re.search(r"unsupported TFLite op CUMSUM \(operator #\d+, output '[^']+'\)", msg), msg


def test_upsampling2d_as_the_converter_lowers_it(tmp_path):
    """Keras UpSampling2D (nearest) reaches TFLite as data movement (TILE / BROADCAST_TO / RESHAPE, depending on
    the converter's version), which tinyc compiles: verified against TFLite."""
    keras, _ = _tf()
    x = keras.Input((4, 4, 2), name="img")
    y = keras.layers.UpSampling2D(2, name="up")(keras.layers.Conv2D(2, 1, name="c")(x))
    path = to_tflite(keras.Model(x, y), tmp_path / "up.tflite")
    report = verify(path)
    assert report["ok"], report["outputs"]


def test_ops_lists_tflite():
    res = tinyc("ops")
    assert res.returncode == 0
    assert "tflite:" in res.stdout and "DEPTHWISE_CONV_2D" in res.stdout and "STRIDED_SLICE" in res.stdout
