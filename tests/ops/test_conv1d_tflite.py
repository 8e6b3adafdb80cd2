"""The TFLite converter's forms of Keras' 1-D layers (issue 18), float32 against TFLite and int8 bit-exact with
TFLite's reference kernels on every layer; the C under AddressSanitizer and UBSan (tinyc.verify)."""
import pytest

from tinyc.verify import verify

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")
from model_zoo import randomize  # noqa: E402

L = keras.layers


def _ok(report):
    assert report["ok"], report["outputs"]
    bad = [row for row in report.get("layers", []) if not row["ok"]]
    assert not bad, bad


def converter_forms():
    """What TFLiteConverter makes of Keras' 1-D layers: dilated Conv1D (causal, and same on an odd length) and
    dilated DepthwiseConv1D as SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND (with paddings and crops, on 3-D and 4-D
    tensors) around CONV_2D and DEPTHWISE_CONV_2D; undilated ones, grouped Conv1D, SeparableConv1D and strided
    DepthwiseConv1D as EXPAND_DIMS + CONV_2D / DEPTHWISE_CONV_2D + RESHAPE; MaxPooling1D and AveragePooling1D
    (EXPAND_DIMS + MAX_POOL_2D / AVERAGE_POOL_2D); GlobalMaxPooling1D (REDUCE_MAX). Every layer is named (the
    converter orders operators by name)."""
    keras.utils.set_random_seed(6)
    x = keras.Input((21, 4), name="c1_in")
    a = L.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu", name="c1_causal")(x)
    b = L.Conv1D(8, 3, padding="same", dilation_rate=3, name="c1_same_dilated")(x)
    h = L.Add(name="c1_add")([a, b])
    h = L.Conv1D(8, 3, padding="same", groups=2, activation="relu6", name="c1_grouped")(h)
    h = L.SeparableConv1D(12, 3, padding="same", depth_multiplier=2, activation="relu", name="c1_separable")(h)
    h = L.DepthwiseConv1D(3, strides=2, padding="same", name="c1_depthwise")(h)
    h = L.DepthwiseConv1D(3, dilation_rate=2, padding="same", activation="relu", name="c1_dw_dilated")(h)
    m = L.MaxPooling1D(3, strides=2, padding="same", name="c1_max")(h)
    v = L.AveragePooling1D(2, name="c1_avg")(h)
    return keras.Model(x, [L.GlobalMaxPooling1D(name="c1_gmax")(m),
                           L.Dense(3, name="c1_head")(L.Flatten(name="c1_flat")(v))], name="conv1d_forms")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The converter-made float32 and fully-integer .tflite of `converter_forms`, and the ops in them."""
    import tensorflow as tf
    from int8_zoo import to_int8_tflite
    from test_int8_tflite import model_ops
    d = tmp_path_factory.mktemp("conv1d_tflite")
    model = randomize(converter_forms(), 6)
    fp = d / "conv1d_forms_float.tflite"
    fp.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    q = to_int8_tflite(model, d / "conv1d_forms_int8.tflite")
    for path in (str(fp), q):
        assert {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "EXPAND_DIMS", "CONV_2D", "DEPTHWISE_CONV_2D",
                "MAX_POOL_2D", "AVERAGE_POOL_2D", "REDUCE_MAX"} <= model_ops(path)
    return {"float": str(fp), "int8": q}


def test_tflite_1d_forms_float_match_tflite(converted):
    _ok(verify(converted["float"], samples=2, per_layer=True))


def test_tflite_1d_forms_int8_bit_exact_with_tflite(converted):
    """Zero differing bytes against TFLite's reference kernels, on every layer; the arena at its lower bound."""
    from tinyc.compiler import compile_model
    report = verify(converted["int8"], samples=10, seed=7, per_layer=True)
    assert report["mismatched_bytes"] == 0, report["outputs"]
    _ok(report)
    assert len(report["layers"]) >= 20
    plan = compile_model(converted["int8"]).plan
    assert plan.lower_bound <= plan.arena_bytes <= 1.02 * plan.lower_bound, plan.variants
