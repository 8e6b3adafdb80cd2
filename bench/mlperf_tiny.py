"""The four MLPerf Tiny reference architectures as Keras models (random weights, batch-norm statistics set from
random data so that int8 calibration sees realistic ranges), for the benchmarks. The layer structure follows
the MLPerf Tiny reference training scripts: what matters for memory and speed is the shapes, not the weights.

  vww_mobilenet_v1   Visual Wake Words: MobileNetV1 width 0.25, 96x96x3, 2 classes
  kws_ds_cnn         Keyword spotting: DS-CNN, 49x10x1 MFCCs, 64 channels, 12 classes
  ic_resnet8         Image classification: ResNet-8 (16/32/64), 32x32x3, 10 classes
  ad_autoencoder     Anomaly detection: FC autoencoder 640-128x4-8-128x4-640

and one more for the speed benchmark (bench/speed.py), kept out of BUILDERS so bench/memory.py does not repeat it:

  mobilenet_v2_035   MobileNetV2 width 0.35 at 144x144x3 (MCUNet's input size), 10 classes: Keras's builder with
                     inverted residual blocks, the architecture of tests/test_mobilenet.py and of the MobileNetV2
                     rows of bench/memory.py and bench/int8_models.py
  denoise_autoencoder  Speech denoising: a conv / FC autoencoder over 16x64 spectrogram patches (benchmarked in
                     int8 and 16x8)
  kws_lstm           Keyword spotting with an LSTM: 49x10 MFCCs, one LSTM of 64 units (its last step), 12 classes.
                     Built with tf_keras: TFLiteConverter turns only a tf_keras LSTM into the fused int8
                     UNIDIRECTIONAL_SEQUENCE_LSTM (a Keras 3 LSTM becomes a WHILE loop whose int8 conversion fails)
"""
import numpy as np

from tinyc.keras_runtime import import_keras


def _bn_relu(L, h):
    return L.ReLU()(L.BatchNormalization()(h))


def vww_mobilenet_v1(keras):
    return keras.applications.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None, classes=2)


def kws_ds_cnn(keras):
    L = keras.layers
    x = keras.Input((49, 10, 1))
    h = _bn_relu(L, L.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(x))
    for _ in range(4):
        h = _bn_relu(L, L.DepthwiseConv2D(3, padding="same")(h))
        h = _bn_relu(L, L.Conv2D(64, 1)(h))
    h = L.AveragePooling2D(pool_size=(25, 5))(h)
    return keras.Model(x, L.Dense(12, activation="softmax")(L.Flatten()(h)), name="kws_ds_cnn")


def ic_resnet8(keras):
    L = keras.layers
    x = keras.Input((32, 32, 3))
    h = _bn_relu(L, L.Conv2D(16, 3, padding="same")(x))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = _bn_relu(L, L.Conv2D(filters, 3, strides=stride, padding="same")(h))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        shortcut = h if stride == 1 else L.Conv2D(filters, 1, strides=stride)(h)
        h = L.ReLU()(L.Add()([shortcut, y]))
    h = L.AveragePooling2D(pool_size=8)(h)
    return keras.Model(x, L.Dense(10, activation="softmax")(L.Flatten()(h)), name="ic_resnet8")


def ad_autoencoder(keras):
    L = keras.layers
    x = keras.Input((640,))
    h = x
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        h = _bn_relu(L, L.Dense(units)(h))
    return keras.Model(x, L.Dense(640)(h), name="ad_autoencoder")


def mobilenet_v2_035(keras):
    return keras.applications.MobileNetV2(input_shape=(144, 144, 3), alpha=0.35, weights=None, classes=10)


def conv_autoencoder(keras):
    """A small convolutional autoencoder: two Conv2D stride 2 down, two Conv2DTranspose 3x3 stride 2 SAME up
    with relu (the converter writes TRANSPOSE_CONV and a RELU: the biases are zero), a 3x3 Conv2D head."""
    L = keras.layers
    x = keras.Input((32, 32, 1))
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    h = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    h = L.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)
    h = L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(h)
    return keras.Model(x, L.Conv2D(1, 3, padding="same")(h))



def denoise_autoencoder(keras):
    """Speech denoising autoencoder, the kind TensorFlow points to 16x8 for (a regression whose output int8 steps
    would be audible): a noisy log-magnitude spectrogram patch (16 frames x 64 bands) in, the clean patch's
    estimate out. Encoder: two 3x3 stride-2 Conv2D + BatchNorm + ReLU (16x64 -> 4x16x32); a Dense bottleneck of
    32 and a Dense back to 4x16x32; decoder: two 3x3 stride-2 Conv2DTranspose with relu (-> 16x64x8) and a 3x3
    Conv2D to one channel."""
    L = keras.layers
    x = keras.Input((16, 64, 1))
    h = _bn_relu(L, L.Conv2D(16, 3, strides=2, padding="same")(x))
    h = _bn_relu(L, L.Conv2D(32, 3, strides=2, padding="same")(h))
    h = L.Dense(32, activation="relu")(L.Flatten()(h))
    h = L.Reshape((4, 16, 32))(L.Dense(4 * 16 * 32, activation="relu")(h))
    h = L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(h)
    h = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(h)
    return keras.Model(x, L.Conv2D(1, 3, padding="same")(h), name="denoise_autoencoder")


def _attend(qkv, heads=2):
    """Scaled dot-product attention over [B, T, H*D] projections: q @ k^T, softmax, @ v, heads merged."""
    import tensorflow as tf
    t, e = qkv[0].shape[1], qkv[0].shape[2]
    q, k, v = (tf.transpose(tf.reshape(x, (-1, t, heads, e // heads)), (0, 2, 1, 3)) for x in qkv)
    p = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * (1.0 / (e // heads) ** 0.5), axis=-1)
    return tf.reshape(tf.transpose(tf.matmul(p, v), (0, 2, 1, 3)), (-1, t, e))


def attention_block(keras):
    """One transformer attention block, 32 steps of 32 features, two heads of 16: Dense q, k, v projections,
    q @ k^T and p @ v (BATCH_MATMUL of computed tensors), softmax, the output projection and a residual Add."""
    L = keras.layers
    x = keras.Input((32, 32), name="attn_in")
    q, k, v = (L.Dense(32, name=f"attn_{n}")(x) for n in "qkv")
    o = L.Lambda(_attend, name="attn_heads")([q, k, v])
    return keras.Model(x, L.Add(name="attn_residual")([x, L.Dense(32, name="attn_out")(o)]))

def kws_lstm(keras):
    x = keras.Input((49, 10), batch_size=1, name="mfcc")
    h = keras.layers.LSTM(64, name="lstm")(x)
    return keras.Model(x, keras.layers.Dense(12, activation="softmax", name="fc")(h))


BUILDERS = {f.__name__: f for f in (vww_mobilenet_v1, kws_ds_cnn, ic_resnet8, ad_autoencoder)}   # MLPerf Tiny
EXTRA_BUILDERS = {f.__name__: f for f in (mobilenet_v2_035, conv_autoencoder, attention_block, kws_lstm,
                                           denoise_autoencoder)}
TF_KERAS_BUILDERS = ("kws_lstm",)     # built with tf_keras (see kws_lstm above)


def build(name: str, seed: int = 0):
    """The model with random weights and batch-norm statistics measured on random inputs."""
    keras = import_keras()
    if name in TF_KERAS_BUILDERS:
        import tf_keras as keras
    keras.utils.set_random_seed(seed)
    model = {**BUILDERS, **EXTRA_BUILDERS}[name](keras)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            probe = keras.Model(model.inputs, layer.input)
            act = np.asarray(probe(rng.standard_normal((8, *model.input_shape[1:])).astype(np.float32)))
            axes = tuple(range(act.ndim - 1))
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, act.mean(axis=axes), act.var(axis=axes) + 1e-3])
    return model
