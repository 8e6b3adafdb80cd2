"""The elementwise ops through the TensorFlow frontends, float32: TFLite models made by TF's converter from
tf.functions (and a Keras PReLU) checked against the TFLite interpreter, and Keras models (merge layers,
activation layers, Activation('name')) checked against Keras, all with `tinyc verify`."""
import importlib.util
import math

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("the TensorFlow frontends need tensorflow", allow_module_level=True)

from tinyc.frontends import load_model  # noqa: E402
from tinyc.verify import verify  # noqa: E402


def _tf():
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    import tensorflow as tf
    return keras, tf


def _ops(content: bytes) -> set:
    _, tf = _tf()
    return {d["op_name"] for d in tf.lite.Interpreter(model_content=content)._get_ops_details()}


def _tflite(tmp_path, fn, shapes, name) -> tuple[str, set]:
    _, tf = _tf()
    f = tf.function(fn, input_signature=[tf.TensorSpec(s, tf.float32) for s in shapes])
    content = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(content)
    return str(path), _ops(content)


def _assert_ok(report):
    assert report["ok"], [(o["max_abs_err"], o["tolerance"]) for o in report["outputs"]]


def _line(x, y, v):
    _, tf = _tf()
    return [tf.maximum(x, y), tf.minimum(x, v), tf.math.squared_difference(x, v), tf.nn.relu(x / (tf.abs(y) + 0.5)),
            tf.abs(x), tf.negative(x), tf.exp(x), tf.sin(x), tf.cos(x), tf.floor(x), tf.square(x)]


def _gelu(x):
    """The converter fuses GELU only from a tensor no other op reads."""
    _, tf = _tf()
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


def _positive(x, y):
    _, tf = _tf()
    x = tf.abs(x) + 0.1
    return [tf.math.log(x), tf.sqrt(x), tf.math.rsqrt(x), tf.pow(x, y)]


TFLITE_LINE_OPS = {"MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "DIV", "ABS", "NEG", "EXP", "SIN", "COS", "FLOOR",
                   "SQUARE"}


def test_tflite_elementwise_ops_match_the_interpreter(tmp_path):
    """The float TFLite ops of the family, broadcasting [1, 3, 4] with [1, 4] (MINIMUM, SQUARED_DIFFERENCE), DIV
    with a fused RELU; against TFLite's reference kernels."""
    path, ops = _tflite(tmp_path, _line, [(1, 3, 4), (1, 3, 4), (1, 4)], "line")
    assert TFLITE_LINE_OPS <= ops, TFLITE_LINE_OPS - ops
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (1, 3, 4))
    report = verify(path, inputs=[x.astype(np.float32), rng.normal(0, 2, (1, 3, 4)).astype(np.float32),
                                  rng.normal(0, 2, (1, 4)).astype(np.float32)])
    assert report["oracle"] == "tflite"
    _assert_ok(report)


def test_tflite_ops_without_a_reference_kernel(tmp_path):
    """ELU, CEIL and ROUND (on halves: half to even): TFLite's reference resolver has no kernel for them, so
    `verify` runs TFLite Micro's."""
    _, tf = _tf()
    path, ops = _tflite(tmp_path, lambda x: [tf.nn.elu(x), tf.math.ceil(x), tf.round(x * 2.0)], [(1, 4, 6)], "noref")
    assert ops == {"ELU", "CEIL", "ROUND", "MUL"}, ops
    x = np.round(np.random.default_rng(2).normal(0, 2, (1, 4, 6)) * 2) / 4    # x * 2 lands on halves
    report = verify(path, inputs=[x.astype(np.float32)])
    assert report["oracle"] == "tflite-micro", report.get("oracle_reason")
    _assert_ok(report)


@pytest.mark.parametrize("approximate", [False, True])
def test_tflite_gelu(tmp_path, approximate):
    _, tf = _tf()
    path, ops = _tflite(tmp_path, (lambda x: tf.nn.gelu(x, approximate=True)) if approximate else _gelu,
                        [(1, 4, 6)], "gelu")
    assert ops == {"GELU"}, ops
    report = verify(path)
    assert report["oracle"] == "tflite"
    _assert_ok(report)


def test_tflite_ops_on_positive_values(tmp_path):
    path, ops = _tflite(tmp_path, _positive, [(1, 2, 5), (1, 2, 5)], "positive")
    assert {"LOG", "SQRT", "RSQRT", "POW"} <= ops, ops
    report = verify(path)
    assert report["oracle"] == "tflite"
    _assert_ok(report)


def test_tflite_prelu_from_keras(tmp_path):
    keras, tf = _tf()
    x = keras.Input((3, 4), batch_size=1)
    layer = keras.layers.PReLU(shared_axes=[1])
    model = keras.Model(x, layer(x))
    layer.set_weights([np.array([[0.1, -0.5, 2.0, 0.3]], np.float32)])
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    assert "PRELU" in _ops(content)
    path = tmp_path / "prelu.tflite"
    path.write_bytes(content)
    report = verify(str(path))
    assert report["oracle"] == "tflite"
    _assert_ok(report)


# -- Keras -----------------------------------------------------------------------------------------------------
KERAS_ACTIVATIONS = ["swish", "silu", "gelu", "softplus", "softsign", "selu", "exponential", "mish", "elu", "celu",
                     "hard_tanh", "log_sigmoid", "tanh_shrink", "hard_shrink", "soft_shrink", "relu6", "hard_silu"]


def test_keras_activation_names(tmp_path):
    """Activation('name') layers and the same functions fused into Dense."""
    keras, _ = _tf()
    keras.utils.set_random_seed(4)
    x = keras.Input((6,))
    h = keras.layers.Dense(8, name="trunk")(x)
    outs = [keras.layers.Activation(a, name=f"act_{a}")(h) for a in KERAS_ACTIVATIONS]
    outs += [keras.layers.Dense(3, activation=a, name=f"dense_{a}")(h) for a in ("gelu", "mish", "exponential")]
    model = keras.Model(x, outs)
    path = str(tmp_path / "acts.keras")
    model.save(path)
    g = load_model(path)
    assert {n.attrs["fn"] for n in g.nodes if n.op == "Activation"} >= {"gelu", "mish", "softplus", "shrink"}
    _assert_ok(verify(path, samples=4))


@pytest.mark.parametrize("cfg", [dict(max_value=6.0), dict(negative_slope=0.2), dict(threshold=0.5),
                                 dict(threshold=1.5, max_value=1.0), dict(negative_slope=0.1, max_value=3.0),
                                 dict(negative_slope=0.3, threshold=0.4, max_value=2.0), dict(max_value=0.0)])
def test_keras_relu_layer(tmp_path, cfg):
    keras, _ = _tf()
    x = keras.Input((4, 5))
    model = keras.Model(x, keras.layers.ReLU(**cfg)(keras.layers.Dense(5)(x)))
    path = str(tmp_path / "relu.keras")
    model.save(path)
    rng = np.random.default_rng(0)
    _assert_ok(verify(path, inputs=[rng.normal(0, 2, (3, 1, 4, 5)).astype(np.float32)]))


def test_keras_merge_and_parametric_layers(tmp_path):
    """Maximum, Minimum, Average (3 inputs), Subtract, Multiply, PReLU (per channel, and shared over H and W after
    a conv), ELU with alpha."""
    keras, _ = _tf()
    keras.utils.set_random_seed(5)
    a, b, c = keras.Input((4, 6)), keras.Input((4, 6)), keras.Input((4, 6))
    img = keras.Input((5, 5, 3))
    L = keras.layers
    conv = L.Conv2D(4, 3)(img)
    outs = [L.Maximum()([a, b, c]), L.Minimum()([a, b]), L.Average()([a, b, c]), L.Subtract()([a, c]),
            L.Multiply()([a, b, c]), L.PReLU(alpha_initializer=keras.initializers.RandomNormal(0, 1))(a),
            L.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.RandomNormal(0, 1))(conv),
            L.ELU(alpha=0.4)(a)]
    model = keras.Model([a, b, c, img], outs)
    path = str(tmp_path / "merge.keras")
    model.save(path)
    g = load_model(path)
    assert {"Max", "Min", "Div", "PRelu", "Sub", "Mul"} <= {n.op for n in g.nodes}
    _assert_ok(verify(path))


# -- int8: every table entry against TFLite's reference kernels ------------------------------------------------
def _int8_tflite(tmp_path, fn, lo, hi, name):
    _, tf = _tf()
    f = tf.function(fn, input_signature=[tf.TensorSpec((1, 16, 16), tf.float32)])

    def rep():
        rng = np.random.default_rng(0)
        for _ in range(32):
            yield [rng.uniform(lo, hi, (1, 16, 16)).astype(np.float32)]
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    content = conv.convert()
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(content)
    return str(path), _ops(content)


INT8_UNARY = {   # TFLite op: (function, calibration range)
    "ABS": (lambda x: __import__("tensorflow").abs(x), -3.0, 2.0),
    "EXP": (lambda x: __import__("tensorflow").exp(x), -3.0, 1.5),
    "LOG": (lambda x: __import__("tensorflow").math.log(x), 0.05, 6.0),
    "SQRT": (lambda x: __import__("tensorflow").sqrt(x), 0.0, 6.0),
    "RSQRT": (lambda x: __import__("tensorflow").math.rsqrt(x), 0.05, 6.0),
    "GELU": (lambda x: 0.5 * x * (1.0 + __import__("tensorflow").math.erf(x / math.sqrt(2.0))), -4.0, 3.0),
    "GELU_TANH": (lambda x: __import__("tensorflow").nn.gelu(x, approximate=True), -4.0, 3.0),
}


@pytest.mark.parametrize("op", sorted(INT8_UNARY))
def test_int8_unary_tables_are_bit_exact_on_every_input(tmp_path, op):
    """All 256 int8 inputs (those TFLite accepts: SQRT and RSQRT stop on inputs below the zero point)."""
    fn, lo, hi = INT8_UNARY[op]
    path, ops = _int8_tflite(tmp_path, fn, lo, hi, op.lower())
    assert op.split("_")[0] in ops, ops
    from tinyc.compiler import compile_model
    g = compile_model(path).plan.graph
    zp = int(np.asarray(g.tensors[g.inputs[0]].quant.zero_point).reshape(-1)[0])
    x = np.arange(-128, 128, dtype=np.int64)
    if op in ("SQRT", "RSQRT"):
        x = np.maximum(x, zp)
    report = verify(path, inputs=[x.astype(np.int8).reshape(1, 16, 16)])
    assert report["oracle"] == "tflite" and report["mismatched_bytes"] == 0, report["outputs"]


def test_tinycs_quantizer_writes_the_table_ops_as_tflite_computes_them(tmp_path):
    """tinyc's own int8 (--quantize int8) of GELU and EXP heads: the .tflite tinyc writes runs bit-exact on TFLite's
    reference kernels. (ELU stays float: BUILTIN_REF has no ELU kernel, and the converter keeps ELU float.)"""
    keras, _ = _tf()
    keras.utils.set_random_seed(6)
    x = keras.Input((12,))
    h = keras.layers.Dense(16)(x)
    outs = [keras.layers.Activation(a)(keras.layers.Dense(8)(h)) for a in ("gelu", "exponential")]
    path = str(tmp_path / "heads.keras")
    keras.Model(x, outs).save(path)
    calib = [np.random.default_rng(0).normal(0, 1, (64, 1, 12)).astype(np.float32)]
    report = verify(path, samples=10, quantize="int8", calib=calib)
    assert report["oracle"] == "tflite" and report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]


def test_tinycs_quantizer_refuses_maximum_in_one_line(tmp_path):
    """MAXIMUM's int8 kernel needs inputs and output quantized alike, which TFLiteConverter arranges and tinyc's
    own quantizer does not: it refuses and says so."""
    keras, _ = _tf()
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    x = keras.Input((6,))
    y = keras.layers.Maximum(name="mx")([keras.layers.Dense(4)(x), keras.layers.Dense(4)(x)])
    path = str(tmp_path / "mx.keras")
    keras.Model(x, y).save(path)
    calib = [np.random.default_rng(0).normal(size=(16, 1, 6)).astype(np.float32)]
    with pytest.raises(TinycError, match="node 'mx': tinyc's quantizer does not quantize op Max .*TFLiteConverter"):
        compile_model(path, quantize="int8", calib=calib)
