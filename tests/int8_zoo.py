"""Fully-integer TFLite models for the int8 test matrix (no tests here).

Each builder returns a seeded Keras model; `to_int8_tflite` converts it the way users do (TFLiteConverter,
representative dataset, TFLITE_BUILTINS_INT8, int8 input and output unless `float_io`). Together the models
cover every TFLite op tinyc accepts for int8 (see `OPS_COVERED` checked by the tests): residual Add,
Concatenate, depthwise with multiplier > 1, strides 1-2, kernels 1-7, same/valid padding, Flatten and Dense
heads, softmax/logistic/tanh heads.
"""
from __future__ import annotations

import numpy as np

from model_zoo import randomize


def _keras():
    from tinyc.keras_runtime import import_keras
    return import_keras()


def _conv_bn(L, h, filters, kernel, strides=1, padding="same", act="relu"):
    h = L.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False)(h)
    h = L.BatchNormalization()(h)
    return L.Activation(act)(h) if act else h


def residual_cnn():
    """Conv s2 relu, depthwise relu6, 1x1, residual Add, average and max pooling, Flatten, Dense."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu6")(h)
    h = L.Add()([h, L.Conv2D(8, 1)(h)])
    h = L.AveragePooling2D(2)(h)
    h = L.MaxPooling2D(2, padding="same")(h)
    return keras.Model(x, L.Dense(10)(L.Flatten()(h)), name="residual_cnn")


def depthwise_multiplier():
    """Depthwise 5x5 valid stride 2 with multiplier 2, conv 7x7 same stride 2, global average (MEAN), softmax."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((20, 20, 4))
    h = L.DepthwiseConv2D(5, strides=2, padding="valid", depth_multiplier=2, activation="relu")(x)
    h = L.Conv2D(12, 7, strides=2, padding="same", activation="relu6")(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(5, activation="softmax")(h), name="depthwise_multiplier")


def kernels_and_concat():
    """Branches with kernels 1, 3, 5 valid+pad and 7, concatenated on channels."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((12, 12, 6))
    a = L.Conv2D(4, 1, activation="relu")(x)
    b = L.Conv2D(4, 3, padding="same")(x)
    c = L.Conv2D(4, 5, padding="valid")(L.ZeroPadding2D(2)(x))
    d = L.Conv2D(4, 7, padding="same", activation="relu")(x)
    h = L.Concatenate()([a, b, c, d])
    h = L.Conv2D(8, 3, strides=2, padding="valid")(h)
    return keras.Model(x, L.Dense(3)(L.Flatten()(h)), name="kernels_and_concat")


def mlp_heads():
    """Dense trunk with tanh, logistic and softmax heads (three outputs)."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((24,))
    h = L.Dense(32, activation="relu")(x)
    h = L.Dense(16, activation="relu6")(h)
    # named heads: the converter orders outputs by name, and unnamed ones (dense_9, dense_10) would sort by how
    # many layers the process made before
    return keras.Model(x, [L.Dense(4, activation="tanh", name="head_1_tanh")(h),
                           L.Dense(1, activation="sigmoid", name="head_2_sigmoid")(h),
                           L.Dense(6, activation="softmax", name="head_3_softmax")(h)], name="mlp_heads")


def activations_cnn():
    """LeakyReLU and hard-swish as standalone ops, a standalone RELU after a concatenation."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((10, 10, 3))
    h = L.LeakyReLU(negative_slope=0.2)(L.Conv2D(6, 3, padding="same")(x))
    h = L.Activation("hard_swish")(L.Conv2D(6, 3, padding="same")(h))
    h = L.ReLU()(L.Concatenate()([h, L.Conv2D(2, 1)(x)]))
    h = L.Activation("tanh")(L.Conv2D(4, 3, strides=2)(h))
    h = L.Activation("sigmoid")(L.Conv2D(4, 1)(h))
    return keras.Model(x, L.GlobalAveragePooling2D()(h), name="activations_cnn")


def two_inputs_arith():
    """Two inputs: Subtract, Multiply, broadcast Add of a per-channel vector, Maximum pooling of the result."""
    keras = _keras()
    L = keras.layers
    # named: the converter orders inputs by name, and Keras' numbered names (keras_tensor_99, keras_tensor_100)
    # would make the order depend on how many models the process built before
    a, b = keras.Input((8, 8, 4), name="a"), keras.Input((8, 8, 4), name="b")
    d = L.Subtract()([L.Conv2D(4, 3, padding="same")(a), b])
    m = L.Multiply()([d, L.Conv2D(4, 1, activation="sigmoid")(b)])
    h = L.MaxPooling2D(2)(L.Add()([m, a]))
    return keras.Model([a, b], L.Dense(4)(L.Flatten()(h)), name="two_inputs_arith")


def reshape_squeeze():
    """Conv1D (RESHAPE/SQUEEZE around a 2-D conv), Reshape layers, relu1-style clip."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((32, 4))
    h = L.Conv1D(8, 5, strides=2, padding="same", activation="relu")(x)
    h = L.Conv1D(8, 3, padding="valid")(h)
    h = L.Reshape((14, 8, 1))(h)
    h = L.Conv2D(4, (3, 3), padding="same", activation="relu6")(h)
    h = L.Reshape((-1,))(L.AveragePooling2D((2, 2), padding="same")(h))
    return keras.Model(x, L.Dense(6, activation="softmax")(h), name="reshape_squeeze")


def ds_cnn():
    """DS-CNN keyword spotting (MLPerf Tiny style, smaller): 10x4 conv s2, 4 depthwise-separable blocks with
    BatchNorm, global average pooling, softmax over 12 keywords. Input: 49x10 MFCC frames."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((49, 10, 1))
    h = _conv_bn(L, x, 32, (10, 4), strides=2)
    for _ in range(4):
        h = L.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
        h = L.Activation("relu")(L.BatchNormalization()(h))
        h = _conv_bn(L, h, 32, 1)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(12, activation="softmax")(h), name="ds_cnn")


def pad_pool_valid():
    """Explicit PAD (asymmetric), average pool same with a border, max pool valid stride 1, Dense head."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((9, 9, 5))
    h = L.ZeroPadding2D(((1, 2), (0, 1)))(x)
    h = L.Conv2D(6, 3, activation="relu")(h)
    h = L.AveragePooling2D(3, strides=2, padding="same")(h)
    h = L.MaxPooling2D(2, strides=1, padding="valid")(h)
    return keras.Model(x, L.Dense(7, activation="tanh")(L.Flatten()(h)), name="pad_pool_valid")


def mean_keepdims_head():
    """Squeeze-and-excite style: MEAN keepdims, 1x1 convs, hard sigmoid gate multiplied back (broadcast MUL)."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((8, 8, 8))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    s = L.GlobalAveragePooling2D(keepdims=True)(h)
    s = L.Conv2D(4, 1, activation="relu")(s)
    s = L.Conv2D(8, 1, activation="sigmoid")(s)
    h = L.Multiply()([h, s])
    return keras.Model(x, L.Conv2D(3, 1)(h), name="mean_keepdims_head")


def _gelu_tanh(t):
    import tensorflow as tf
    return tf.nn.gelu(t, approximate=True)    # keras.ops.gelu's tanh form is not fused into GELU


def _squared_difference(ab):
    import tensorflow as tf
    return tf.math.squared_difference(ab[0], ab[1])


def elementwise_cnn():
    """MAXIMUM, MINIMUM and SQUARED_DIFFERENCE of two branches, PRELU (slope shared over H and W), GELU, ABS,
    EXP, LOG, SQRT and RSQRT (the last three of positive values), concatenated into a 1x1 conv; tf.nn.gelu's
    tanh form, which the converter decomposes (its POW stays float between DEQUANTIZE and QUANTIZE). Every layer
    is named: the converter orders this model's operators by the names, which Keras would otherwise number per
    process."""
    keras = _keras()
    L = keras.layers
    ops = keras.ops
    x = keras.Input((6, 6, 3), name="ew_in")
    a = L.Conv2D(6, 3, padding="same", name="ew_a")(x)
    b = L.Conv2D(6, 1, name="ew_b")(x)
    branches = [L.Maximum(name="ew_max")([a, b]), L.Minimum(name="ew_min")([a, b]),
                L.Lambda(_squared_difference, name="ew_sqdiff")([a, b]),
                L.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.RandomUniform(-0.5, 1.5, seed=1),
                        name="ew_prelu")(a),
                L.Lambda(lambda t: 0.5 * t * (1.0 + ops.erf(t * 0.7071067811865476)), name="ew_gelu")(b),
                L.Lambda(_gelu_tanh, name="ew_gelu_tanh")(a),
                L.Lambda(ops.abs, name="ew_abs")(b), L.Lambda(lambda t: ops.exp(t * 0.5), name="ew_exp")(a),
                L.Lambda(lambda t: ops.log(ops.abs(t) + 0.25), name="ew_log")(b),
                L.Lambda(lambda t: ops.sqrt(ops.abs(t) + 0.1), name="ew_sqrt")(a),
                L.Lambda(lambda t: ops.rsqrt(ops.abs(t) + 0.5), name="ew_rsqrt")(b)]
    y = L.Conv2D(4, 1, name="ew_out")(L.Concatenate(name="ew_cat")(branches))
    return keras.Model(x, y, name="elementwise_cnn")


def _log_softmax(t):
    import tensorflow as tf
    return tf.nn.log_softmax(t, axis=-1)


def math_heads():
    """DIV of a Conv1D branch by divisors kept in [3, 5] (3 + relu6(|t|) / 3), one of the same shape and one
    broadcast along the last axis, then a LOG_SOFTMAX head and a clip(-1, 1) head; RELU6 and RELU_N1_TO_1 are
    standalone ops. The divisors' range matters: TF 2.21's int8 DIV stops on a divisor byte of 0, the middle of
    the calibrated range [0, max], which divisors of at least 3 never reach; and TFLite's DIV is undefined for
    some output scales (docs/int8-numerics.md 4.31), which tinyc refuses. Every layer is named (the converter
    orders operators by name)."""
    keras = _keras()
    L = keras.layers
    ops = keras.ops
    x = keras.Input((6, 8), name="mh_in")
    h = L.Conv1D(8, 3, padding="same", name="mh_conv")(x)
    d = L.Lambda(lambda t: 3.0 + ops.relu6(ops.abs(t)) / 3.0, name="mh_divisor")(x)
    row = L.Lambda(lambda t: 3.0 + ops.relu6(ops.abs(ops.mean(t, axis=-1, keepdims=True))), name="mh_row")(x)
    q = L.Lambda(lambda t: t[0] / t[1], name="mh_div")([h, d])
    r = L.Lambda(lambda t: t[0] / t[1], name="mh_div_row")([h, row])
    heads = L.Lambda(_log_softmax, name="mh_log_softmax")(L.Add(name="mh_sum")([q, r]))
    return keras.Model(x, [heads, L.Lambda(lambda t: ops.clip(t, -1.0, 1.0), name="mh_clip")(q)], name="math_heads")


def _heads(t, heads):
    """[B, T, H*D] -> [B, H, T, D]."""
    import tensorflow as tf
    b, n, hd = t.shape
    return tf.transpose(tf.reshape(t, (-1, n, heads, hd // heads)), (0, 2, 1, 3))


def _attend(qkv):
    """Two-head scaled dot-product attention: q @ k^T (BATCH_MATMUL adj_y), softmax, then (p @ v)^T as
    v^T @ p^T (adj_x and adj_y), back to [B, T, H*D]."""
    import tensorflow as tf
    q, k, v = (_heads(t, 2) for t in qkv)
    p = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * 0.5, axis=-1)
    o = tf.matmul(v, p, transpose_a=True, transpose_b=True)                 # [B, H, D, T]
    return tf.reshape(tf.transpose(o, (0, 3, 1, 2)), (-1, q.shape[2], q.shape[1] * q.shape[3]))


def attention_block():
    """One transformer attention block the converter makes fully integer: FULLY_CONNECTED q, k, v projections,
    two heads (RESHAPE, TRANSPOSE), BATCH_MATMUL of computed tensors (adj_x, adj_y, a batch of heads), SOFTMAX,
    the output projection and a residual ADD. Every layer is named (the converter orders operators by name)."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((6, 8), name="at_in")
    q, k, v = (L.Dense(8, name=f"at_{n}")(x) for n in "qkv")
    o = L.Lambda(_attend, name="at_attend")([q, k, v])
    return keras.Model(x, L.Add(name="at_residual")([x, L.Dense(8, name="at_out")(o)]), name="attention_block")



def keras_attention():
    """Keras MultiHeadAttention (two heads of 8) in a post-norm residual block with LayerNormalization, then
    global average pooling and a Dense head: the converter makes the attention FULLY_CONNECTED, TRANSPOSE,
    BATCH_MATMUL, MUL, SOFTMAX (and keeps the layer norm's NEG float). Every layer is named (the converter orders
    operators by name)."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((8, 16), name="ka_in")
    y = L.MultiHeadAttention(num_heads=2, key_dim=8, name="ka_mha")(x, x)
    h = L.LayerNormalization(name="ka_norm")(L.Add(name="ka_residual")([x, y]))
    return keras.Model(x, L.Dense(4, name="ka_head")(L.GlobalAveragePooling1D(name="ka_pool")(h)),
                       name="keras_attention")

BUILDERS = {f.__name__: f for f in (residual_cnn, depthwise_multiplier, kernels_and_concat, mlp_heads,
                                    activations_cnn, two_inputs_arith, reshape_squeeze, ds_cnn, pad_pool_valid,
                                    mean_keepdims_head, elementwise_cnn, math_heads, attention_block,
                                    keras_attention)}


def build(name: str, seed: int = 0):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return randomize(BUILDERS[name](), seed)


def representative(model, samples: int = 64, seed: int = 1):
    shapes = [tuple(i.shape[1:]) for i in model.inputs]

    def gen():
        rng = np.random.default_rng(seed)
        for _ in range(samples):
            yield [rng.standard_normal((1, *s)).astype(np.float32) for s in shapes]
    return gen


def to_int8_tflite(model, path, float_io: bool = False) -> str:
    _keras()
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return str(path)
