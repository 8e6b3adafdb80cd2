"""Keras model builders for the end-to-end test matrix (no tests here).

Every builder is seeded, returns a small Keras 3 model (inputs <= 32x32, channels <= 16) with non-trivial
biases and BatchNorm statistics, and is registered in `ZOO` (name -> builder). `export(name, directory)` writes
the model as .keras, as .onnx (tf2onnx, opset 17) and, for the models in `EXTRA_FORMATS`, in more formats, and
returns {format: path}. TensorFlow/Keras are imported lazily so collecting the tests stays cheap.
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FORMATS = ("keras", "onnx")
ONNX_OPSET = 17

# Hidden activations of the MLP family: Keras activation names, plus "relu6" (a ReLU(max_value=6) layer) and
# "leaky_relu_layer" (a LeakyReLU layer).
MLP_ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "softmax", "leaky_relu", "leaky_relu_layer",
                   "hard_sigmoid", "swish", "linear", "elu")


def _keras():
    import keras
    return keras


def randomize(model, seed=0):
    """Random biases, BatchNorm gamma/beta and moving statistics, so no BatchNorm is an identity."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        leaf = v.path.split("/")[-1]
        if leaf in ("bias", "beta", "moving_mean"):
            v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
        elif leaf == "gamma":
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        elif leaf == "moving_variance":
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
    return model


# -- MLPs ----------------------------------------------------------------------------------------------------
def _mlp(act: str, seed: int):
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(seed)
    x = keras.Input((12,), name="features")
    if act == "relu6":
        h = layers.ReLU(max_value=6.0, name="hidden_relu6")(layers.Dense(16, name="hidden")(x))
    elif act == "leaky_relu_layer":
        h = layers.LeakyReLU(negative_slope=0.1, name="hidden_leaky")(layers.Dense(16, name="hidden")(x))
    else:
        h = layers.Dense(16, activation=act, name="hidden")(x)
    h = layers.Dense(8, activation=act if act not in ("relu6", "leaky_relu_layer") else "linear", name="hidden2")(h)
    y = layers.Dense(4, name="logits")(h)
    return randomize(keras.Model(x, y, name=f"mlp_{act}"), seed)


def mlp_builder(act: str, seed: int):
    def build():
        return _mlp(act, seed)
    build.__name__ = f"mlp_{act}"
    return build


def mlp_bn():
    """MLP with a BatchNormalization and Dropout between Dense layers (also saved as .h5)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(40)
    x = keras.Input((10,), name="x")
    h = layers.Dense(16, activation="relu", name="d1")(x)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Dropout(0.3, name="drop")(h)
    h = layers.Dense(8, activation="tanh", name="d2")(h)
    y = layers.Dense(3, activation="softmax", name="probs")(h)
    return randomize(keras.Model(x, y, name="mlp_bn"), 40)


# -- CNNs ----------------------------------------------------------------------------------------------------
def cnn_plain():
    """Conv2D + MaxPooling2D + AveragePooling2D + Flatten + Dense."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(50)
    x = keras.Input((16, 16, 3), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    h = layers.MaxPooling2D(2, name="maxpool")(h)
    h = layers.Conv2D(12, 5, padding="valid", activation="relu", name="conv2")(h)
    h = layers.AveragePooling2D(2, name="avgpool")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(16, activation="relu", name="fc1")(h)
    y = layers.Dense(10, activation="softmax", name="fc2")(h)
    return randomize(keras.Model(x, y, name="cnn_plain"), 50)


def cnn_pool_same():
    """Pooling with 'same' padding and strides != pool size (partial windows at the borders)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(51)
    x = keras.Input((15, 13, 4), name="image")
    h = layers.Conv2D(8, 3, padding="same", name="conv")(x)
    a = layers.MaxPooling2D(3, strides=2, padding="same", name="max_same")(h)
    b = layers.AveragePooling2D(3, strides=2, padding="same", name="avg_same")(h)
    h = layers.Concatenate(name="cat")([a, b])
    h = layers.AveragePooling2D((2, 3), strides=(1, 2), padding="valid", name="avg_valid")(h)
    y = layers.Flatten(name="flatten")(h)
    y = layers.Dense(5, name="fc")(y)
    return randomize(keras.Model(x, y, name="cnn_pool_same"), 51)


def _conv_bn_relu6(layers, h, filters, kernel, strides, name):
    h = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(h)
    h = layers.BatchNormalization(name=f"{name}_bn")(h)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(h)


def cnn_depthwise():
    """MobileNet-style: DepthwiseConv2D + BN + ReLU6 + 1x1 Conv2D + BN, GlobalAveragePooling2D head."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(52)
    x = keras.Input((24, 24, 3), name="image")
    h = _conv_bn_relu6(layers, x, 8, 3, 2, "stem")
    for i, (filters, stride) in enumerate([(16, 1), (16, 2)]):
        h = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dw{i}")(h)
        h = layers.BatchNormalization(name=f"dw{i}_bn")(h)
        h = layers.ReLU(max_value=6.0, name=f"dw{i}_relu6")(h)
        h = layers.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(h)
        h = layers.BatchNormalization(name=f"pw{i}_bn")(h)
        h = layers.ReLU(max_value=6.0, name=f"pw{i}_relu6")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    y = layers.Dense(6, activation="softmax", name="classifier")(h)
    return randomize(keras.Model(x, y, name="cnn_depthwise"), 52)


def cnn_residual():
    """ResNet-style blocks: identity shortcut and a strided 1x1 projection shortcut, joined with Add."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(53)
    x = keras.Input((16, 16, 3), name="image")
    h = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    h = layers.BatchNormalization(name="stem_bn")(h)
    h = layers.Activation("relu", name="stem_relu")(h)
    r = layers.Conv2D(8, 3, padding="same", activation="relu", name="b1_conv1")(h)
    r = layers.Conv2D(8, 3, padding="same", name="b1_conv2")(r)
    r = layers.BatchNormalization(name="b1_bn")(r)
    h = layers.Activation("relu", name="b1_out")(layers.Add(name="b1_add")([h, r]))
    r = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="b2_conv1")(h)
    r = layers.Conv2D(16, 3, padding="same", name="b2_conv2")(r)
    s = layers.Conv2D(16, 1, strides=2, name="b2_proj")(h)
    h = layers.Activation("relu", name="b2_out")(layers.Add(name="b2_add")([r, s]))
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    y = layers.Dense(4, name="logits")(h)
    return randomize(keras.Model(x, y, name="cnn_residual"), 53)


def cnn_branches():
    """Inception-style branches (1x1, 3x3, 5x5, max pool) joined by Concatenate on channels."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(54)
    x = keras.Input((12, 12, 4), name="image")
    b1 = layers.Conv2D(4, 1, activation="relu", name="br_1x1")(x)
    b2 = layers.Conv2D(4, 3, padding="same", activation="relu", name="br_3x3")(x)
    b3 = layers.Conv2D(4, 5, padding="same", activation="relu", name="br_5x5")(x)
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name="br_pool")(x)
    h = layers.Concatenate(name="merge")([b1, b2, b3, b4])
    h = layers.Conv2D(8, 3, strides=2, padding="valid", name="reduce")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    y = layers.Dense(3, activation="sigmoid", name="out")(h)
    return randomize(keras.Model(x, y, name="cnn_branches"), 54)


def cnn_separable():
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(55)
    x = keras.Input((16, 16, 3), name="image")
    h = layers.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep1")(x)
    h = layers.SeparableConv2D(16, 5, strides=2, padding="valid", name="sep2")(h)
    h = layers.BatchNormalization(name="sep2_bn")(h)
    h = layers.Activation("swish", name="sep2_swish")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    y = layers.Dense(5, name="logits")(h)
    return randomize(keras.Model(x, y, name="cnn_separable"), 55)


def conv1d_net():
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(56)
    x = keras.Input((32, 4), name="signal")
    h = layers.Conv1D(8, 5, padding="same", activation="relu", name="c1")(x)
    h = layers.Conv1D(16, 3, strides=2, padding="valid", name="c2")(h)
    h = layers.BatchNormalization(name="c2_bn")(h)
    h = layers.Activation("tanh", name="c2_tanh")(h)
    h = layers.Conv1D(8, 1, activation="relu", name="c3")(h)
    h = layers.GlobalAveragePooling1D(name="gap")(h)
    y = layers.Dense(3, activation="softmax", name="out")(h)
    return randomize(keras.Model(x, y, name="conv1d_net"), 56)


def cnn_zeropad():
    """ZeroPadding2D (symmetric and asymmetric) before 'valid' convolutions, kernel 7 stride 2."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(57)
    x = keras.Input((20, 20, 3), name="image")
    h = layers.ZeroPadding2D(((3, 2), (2, 3)), name="pad1")(x)
    h = layers.Conv2D(8, 7, strides=2, padding="valid", activation="relu", name="conv7")(h)
    h = layers.ZeroPadding2D(1, name="pad2")(h)
    h = layers.Conv2D(8, 3, padding="valid", name="conv3")(h)
    h = layers.BatchNormalization(name="conv3_bn")(h)
    h = layers.Flatten(name="flatten")(h)
    y = layers.Dense(4, name="logits")(h)
    return randomize(keras.Model(x, y, name="cnn_zeropad"), 57)


def cnn_kernels_strides():
    """Kernels 1, 3, 5, 7 x padding same/valid x strides 1, 2 on an odd-sized input, each to its own head."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(58)
    x = keras.Input((13, 13, 3), name="image")
    feats = []
    for k, p, s in [(1, "valid", 2), (3, "same", 1), (3, "valid", 2), (5, "same", 2), (5, "valid", 1),
                    (7, "same", 1), (7, "valid", 2)]:
        c = layers.Conv2D(4, k, strides=s, padding=p, name=f"conv_k{k}_{p}_s{s}")(x)
        feats.append(layers.GlobalAveragePooling2D(name=f"gap_k{k}_{p}_s{s}")(c))
    h = layers.Concatenate(name="feats")(feats)
    y = layers.Dense(6, activation="elu", name="out")(h)
    return randomize(keras.Model(x, y, name="cnn_kernels_strides"), 58)


def cnn_gap_head():
    """A small CNN whose head is GlobalAveragePooling2D (keepdims) -> Flatten -> Dense, with hard_sigmoid."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(59)
    x = keras.Input((32, 32, 1), name="image")
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(x)
    h = layers.Conv2D(16, 3, strides=2, padding="same", activation="hard_sigmoid", name="c2")(h)
    h = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(h)
    h = layers.Flatten(name="flatten")(h)
    y = layers.Dense(2, name="out")(h)
    return randomize(keras.Model(x, y, name="cnn_gap_head"), 59)


def multi_io():
    """Two inputs (an image and a feature vector), two outputs."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(60)
    img = keras.Input((12, 12, 3), name="image")
    vec = keras.Input((6,), name="meta")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(img)
    h = layers.MaxPooling2D(2, name="pool")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    v = layers.Dense(8, activation="tanh", name="meta_dense")(vec)
    h = layers.Concatenate(name="joined")([h, v])
    h = layers.Dense(16, activation="relu", name="trunk")(h)
    cls = layers.Dense(4, activation="softmax", name="cls")(h)
    reg = layers.Dense(2, name="reg")(h)
    return randomize(keras.Model([img, vec], [cls, reg], name="multi_io"), 60)


ZOO = {f"mlp_{a}": mlp_builder(a, 10 + i) for i, a in enumerate(MLP_ACTIVATIONS)}
ZOO.update({f.__name__: f for f in (mlp_bn, cnn_plain, cnn_pool_same, cnn_depthwise, cnn_residual, cnn_branches,
                                     cnn_separable, conv1d_net, cnn_zeropad, cnn_kernels_strides, cnn_gap_head,
                                     multi_io)})

# name -> formats beyond FORMATS
EXTRA_FORMATS = {"mlp_bn": ("h5",)}


def formats(name: str) -> tuple:
    return FORMATS + EXTRA_FORMATS.get(name, ())


def to_onnx(model, path: str, opset: int = ONNX_OPSET) -> str:
    """tf2onnx.convert.from_keras does not work with Keras 3; trace a tf.function instead (batch 1)."""
    import tensorflow as tf
    import tf2onnx
    sig = [tf.TensorSpec((1,) + tuple(t.shape[1:]), tf.float32, name=t.name.split(":")[0]) for t in model.inputs]
    if len(sig) == 1:
        fn = tf.function(lambda x: model(x, training=False), input_signature=sig)
    else:
        fn = tf.function(lambda *xs: model(list(xs), training=False), input_signature=sig)
    tf2onnx.convert.from_function(fn, input_signature=sig, opset=opset, output_path=path)
    return path


def export(name: str, directory) -> dict:
    """Build model `name` and write it in every format it is tested in; {format: path}."""
    model = ZOO[name]()
    paths = {}
    for fmt in formats(name):
        path = os.path.join(str(directory), f"{name}.{fmt}")
        if fmt == "onnx":
            to_onnx(model, path)
        else:
            model.save(path)
        paths[fmt] = path
    return paths
