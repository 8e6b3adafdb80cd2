"""16x8 TFLite models for the int16 test matrix (no tests here): TFLiteConverter with a representative dataset
and EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 (int16 activations, int8 weights, int64 biases),
int16 input and output unless `float_io`. Each builder returns a seeded Keras model (random biases). Other
engineers' ops add their builders to BUILDERS (docs/int16-numerics.md)."""
from __future__ import annotations

import numpy as np

from int8_zoo import representative
from model_zoo import randomize


def _keras():
    from tinyc.keras_runtime import import_keras
    return import_keras()


def mlp_reshape():
    """RESHAPE in, FULLY_CONNECTED with relu, relu6 and none (per-channel weights, int64 biases), RESHAPE out."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((4, 6))
    h = L.Dense(32, activation="relu")(L.Reshape((24,))(x))
    h = L.Dense(32, activation="relu6")(h)
    return keras.Model(x, L.Reshape((2, 8))(L.Dense(16)(h)), name="mlp_reshape")


def conv_block():
    """CONV_2D 3x3 stride 2 (relu), DEPTHWISE 3x3 same (relu6), DEPTHWISE 3x3 valid with multiplier 2, 1x1 CONV_2D,
    TRANSPOSE_CONV 3x3 stride 2 (relu). (A dilated CONV_2D is written with SPACE_TO_BATCH_ND, PAD and ADD: the
    property tests cover dilation.)"""
    keras = _keras()
    L = keras.layers
    x = keras.Input((10, 10, 3))
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu6")(h)
    h = L.DepthwiseConv2D(3, padding="valid", depth_multiplier=2)(h)
    h = L.Conv2D(6, 1)(h)
    return keras.Model(x, L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(h),
                       name="conv_block")


def activation_heads():
    """FULLY_CONNECTED trunk into TANH, LOGISTIC and SOFTMAX heads, and a SOFTMAX over the last axis of a rank-3
    tensor (docs/int16-numerics.md 5)."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((24,))
    h = L.Dense(32, activation="relu")(x)
    rows = L.Dense(5)(L.Reshape((4, 8))(h))
    return keras.Model(x, [L.Dense(4, activation="tanh")(h), L.Dense(1, activation="sigmoid")(h),
                           L.Dense(6, activation="softmax")(h), L.Softmax()(rows)], name="activation_heads")


def residual_pool_cnn():
    """16x8 elementwise and data movement around convolutions (docs/int16-numerics.md 3-4): LEAKY_RELU, a residual
    ADD, MUL by a gate, SUB, MAX_POOL_2D, PAD (ZeroPadding2D) and AVERAGE_POOL_2D, CONCATENATION of branches with
    their own ranges (int16 QUANTIZE before it), TRANSPOSE (Permute), STRIDED_SLICE (Cropping), MEAN (global
    average pooling), a Dense head. Every layer is named (the converter orders operators by name)."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((12, 12, 4), name="rp_in")
    h = L.LeakyReLU(negative_slope=0.1, name="rp_leaky")(L.Conv2D(8, 3, padding="same", name="rp_conv")(x))
    h = L.Add(name="rp_residual")([h, L.Conv2D(8, 1, name="rp_skip")(x)])
    gate = L.Conv2D(8, 1, activation="relu6", name="rp_gate")(h)
    h = L.Subtract(name="rp_sub")([L.Multiply(name="rp_mul")([h, gate]), h])
    h = L.MaxPooling2D(2, name="rp_max")(h)
    a = L.AveragePooling2D(3, strides=1, name="rp_avg")(L.ZeroPadding2D(1, name="rp_pad")(h))
    b = L.Conv2D(4, 1, name="rp_branch")(h)
    h = L.Concatenate(name="rp_concat")([a, b])
    h = L.Cropping2D(((1, 0), (0, 1)), name="rp_crop")(L.Permute((2, 1, 3), name="rp_permute")(h))
    return keras.Model(x, L.Dense(5, name="rp_head")(L.GlobalAveragePooling2D(name="rp_mean")(h)),
                       name="residual_pool_cnn")


def unrolled_lstm():
    """A Keras LSTM with unroll=True: the converter writes its steps as FULLY_CONNECTED, SPLIT, LOGISTIC, TANH,
    MUL and ADD in 16x8 (TF 2.21 makes no 16x8 UNIDIRECTIONAL_SEQUENCE_LSTM: docs/int16-numerics.md 5.3)."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((3, 4), batch_size=1)
    return keras.Model(x, L.LSTM(6, unroll=True)(x), name="unrolled_lstm")


BUILDERS = {f.__name__: f for f in (mlp_reshape, conv_block, activation_heads, residual_pool_cnn, unrolled_lstm)}


def build(name: str, seed: int = 0):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return randomize(BUILDERS[name](), seed)


def to_int16_tflite(model, path, float_io: bool = False) -> str:
    _keras()
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if not float_io:
        conv.inference_input_type = tf.int16
        conv.inference_output_type = tf.int16
    path.write_bytes(conv.convert())
    return str(path)


def sample_inputs(path: str, samples: int, seed: int = 0) -> list:
    """Float inputs of the model's shape (standard normal), for the float-I/O variants."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    shapes = [tuple(d["shape"][1:]) for d in tf.lite.Interpreter(path).get_input_details()]
    return [rng.standard_normal((samples, 1, *s)).astype(np.float32) for s in shapes]
