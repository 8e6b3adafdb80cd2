"""Acceptance model of the compiler core: MobileNetV2, width 0.35, 144x144, built with Keras, as .keras and as
its ONNX export. BatchNorm statistics are set from data (like a trained network's) so every layer carries a
signal of order 1: with Keras's default statistics a random MobileNetV2's activations vanish and any
comparison would pass vacuously."""
import numpy as np
import pytest

from tinyc.verify import verify

SHAPE = (1, 144, 144, 3)


def calibrate_batchnorm(keras, model, rng):
    x = rng.standard_normal((4,) + SHAPE[1:]).astype(np.float32)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(model.inputs[0], [bn.input for bn in bns])
    for k, bn in enumerate(bns):    # in order: each layer's statistics change what the next ones see
        feats = np.asarray(probe(x, training=False)[k])
        mean, var = feats.mean(axis=(0, 1, 2)), feats.var(axis=(0, 1, 2)) + 1e-3
        c = mean.shape[0]
        bn.set_weights([rng.uniform(0.6, 1.4, c), rng.uniform(-0.3, 0.3, c), mean, var])


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory):
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    import tensorflow as tf
    import tf2onnx
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=SHAPE[1:], alpha=0.35, weights=None, classes=10)
    calibrate_batchnorm(keras, model, np.random.default_rng(0))
    d = tmp_path_factory.mktemp("mobilenet")
    model.save(d / "mobilenetv2.keras")
    spec = [tf.TensorSpec(SHAPE, tf.float32, name="image")]
    fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    (d / "mobilenetv2.onnx").write_bytes(proto.SerializeToString())
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.max() - probs.min() > 0.05, "the test model's output must not be uniform"
    # The same network as a fully-integer TFLite model (int8 in and out), as users convert it.
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(2)
    conv.representative_dataset = lambda: ([rng.standard_normal(SHAPE).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    (d / "mobilenetv2_int8.tflite").write_bytes(conv.convert())
    return d, x


@pytest.mark.parametrize("fmt", ["keras", "onnx"])
def test_mobilenetv2_035_144(mobilenet, fmt):
    d, x = mobilenet
    report = verify(str(d / f"mobilenetv2.{fmt}"), inputs=[x], per_layer=True)
    assert report["ok"], report["outputs"]
    assert report["first_divergence"] is None
    assert len(report["layers"]) >= 40, "per-layer comparison must cover the network"
    assert all(row["ok"] for row in report["layers"])


def test_mobilenetv2_035_144_int8_bit_exact(mobilenet):
    """The acceptance model of the int8 path: zero differing bytes on every layer and the output."""
    d, _ = mobilenet
    report = verify(str(d / "mobilenetv2_int8.tflite"), samples=4, seed=5, per_layer=True)
    assert report["mismatched_bytes"] == 0, report["outputs"]
    assert all(row["ok"] for row in report["layers"])
    # the default plan fuses the early layers: a block's row stands for its layers, compared at its output
    assert sum(len(row.get("block_layers", ())) or 1 for row in report["layers"]) >= 60
