"""Issue 18's deployment-style zoo (no tests here; tests/test_layer_zoo.py uses it): small nets of the kinds users
bring beyond plain CNNs, each trained for a few seeded steps on synthetic data so its weights are not an
initializer's.

Keras: a 1-D CNN activity classifier, a dilated causal temporal conv net with residuals and LayerNormalization, a
conv autoencoder (Conv2DTranspose, UpSampling2D), a small U-Net (bilinear UpSampling2D, skip Concatenate), a
MobileNetV3-small-style net (hard-swish, squeeze-excitation with a hard-sigmoid gate) and a one-block keyword
spotting transformer (MultiHeadAttention, LayerNormalization, GELU feed-forward on 49 x 10 MFCC-like frames), and a
keyword spotting LSTM on the same frames (its int8 form made by tinyc's quantizer: KERAS_INT8_BY_TINYC).
PyTorch (exported to ONNX with the TorchScript exporter at opset 20): the same kinds — ConvTranspose2d with
F.interpolate nearest, a U-Net with F.interpolate bilinear, a transformer block with nn.MultiheadAttention,
nn.LayerNorm and GELU, and a 1-D CNN.
"""
from __future__ import annotations

import numpy as np

TRAIN_STEPS = 3
BATCH = 16


def _keras():
    from tinyc.keras_runtime import import_keras
    return import_keras()


# -- Keras --------------------------------------------------------------------------------------------------------
def har_cnn1d(keras):
    """Human activity recognition: 128 samples of a 3-axis accelerometer -> 6 activities."""
    L = keras.layers
    x = keras.Input((128, 3), name="har_in")
    h = L.Conv1D(16, 5, padding="same", activation="relu", name="har_conv1")(x)
    h = L.MaxPooling1D(2, name="har_pool1")(h)
    h = L.Conv1D(24, 5, strides=2, padding="same", activation="relu", name="har_conv2")(h)
    h = L.AveragePooling1D(2, name="har_pool2")(h)
    h = L.Conv1D(32, 3, padding="valid", activation="relu", name="har_conv3")(h)
    h = L.GlobalAveragePooling1D(name="har_gap")(h)
    h = L.Dense(16, activation="relu", name="har_fc")(h)
    return keras.Model(x, L.Dense(6, activation="softmax", name="har_out")(h), name="har_cnn1d")


def tcn_layernorm(keras):
    """Temporal conv net: causal dilated Conv1D (dilations 1, 2, 4) in residual blocks, each ending in a
    LayerNormalization; the last step's features -> 4 classes through global average pooling."""
    L = keras.layers
    x = keras.Input((64, 6), name="tcn_in")
    h = L.Conv1D(16, 1, name="tcn_stem")(x)
    for d in (1, 2, 4):
        r = L.Conv1D(16, 3, padding="causal", dilation_rate=d, activation="relu", name=f"tcn_c{d}a")(h)
        r = L.Conv1D(16, 3, padding="causal", dilation_rate=d, name=f"tcn_c{d}b")(r)
        h = L.LayerNormalization(name=f"tcn_norm{d}")(L.Add(name=f"tcn_add{d}")([h, r]))
    h = L.GlobalAveragePooling1D(name="tcn_gap")(h)
    return keras.Model(x, L.Dense(4, name="tcn_out")(h), name="tcn_layernorm")


def conv_autoencoder(keras):
    """Denoising autoencoder on 32 x 32 images: two strided convs down, Conv2DTranspose and nearest UpSampling2D
    up, a 3x3 conv head."""
    L = keras.layers
    x = keras.Input((32, 32, 1), name="cae_in")
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="cae_down1")(x)
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="cae_down2")(h)
    h = L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu", name="cae_up1")(h)
    h = L.UpSampling2D(2, name="cae_up2")(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="cae_conv")(h)
    return keras.Model(x, L.Conv2D(1, 3, padding="same", name="cae_out")(h), name="conv_autoencoder")


def small_unet(keras):
    """Two-level U-Net for 2-class segmentation of 32 x 32 RGB: max-pool down, bilinear UpSampling2D up, skip
    Concatenate at both levels."""
    L = keras.layers
    x = keras.Input((32, 32, 3), name="unet_in")
    e1 = L.Conv2D(8, 3, padding="same", activation="relu", name="unet_e1")(x)
    e2 = L.Conv2D(16, 3, padding="same", activation="relu", name="unet_e2")(L.MaxPooling2D(2, name="unet_p1")(e1))
    b = L.Conv2D(24, 3, padding="same", activation="relu", name="unet_mid")(L.MaxPooling2D(2, name="unet_p2")(e2))
    u2 = L.UpSampling2D(2, interpolation="bilinear", name="unet_u2")(b)
    d2 = L.Conv2D(16, 3, padding="same", activation="relu", name="unet_d2")(L.Concatenate(name="unet_cat2")([u2, e2]))
    u1 = L.UpSampling2D(2, interpolation="bilinear", name="unet_u1")(d2)
    d1 = L.Conv2D(8, 3, padding="same", activation="relu", name="unet_d1")(L.Concatenate(name="unet_cat1")([u1, e1]))
    return keras.Model(x, L.Conv2D(2, 1, name="unet_out")(d1), name="small_unet")


def _hard_sigmoid(keras, t, name):
    """MobileNetV3's gate relu6(x + 3) / 6, written as its paper writes it."""
    L = keras.layers
    return L.Rescaling(1.0 / 6.0, name=f"{name}_div")(L.ReLU(6.0, name=f"{name}_relu6")(
        L.Rescaling(1.0, offset=3.0, name=f"{name}_add")(t)))


def _bneck(keras, h, expand, out, kernel, stride, se, act, name):
    """MobileNetV3 bottleneck: 1x1 expansion, depthwise, optional squeeze-excitation, 1x1 projection; residual
    when the shape allows."""
    L = keras.layers
    inp, cin = h, h.shape[-1]
    if expand != cin:
        h = L.Conv2D(expand, 1, use_bias=False, name=f"{name}_expand")(h)
        h = L.Activation(act, name=f"{name}_expand_act")(L.BatchNormalization(name=f"{name}_expand_bn")(h))
    h = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(h)
    h = L.Activation(act, name=f"{name}_dw_act")(L.BatchNormalization(name=f"{name}_dw_bn")(h))
    if se:
        s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(h)
        s = L.Conv2D(max(8, expand // 4), 1, activation="relu", name=f"{name}_se_reduce")(s)
        s = _hard_sigmoid(keras, L.Conv2D(expand, 1, name=f"{name}_se_expand")(s), f"{name}_se_gate")
        h = L.Multiply(name=f"{name}_se_scale")([h, s])
    h = L.BatchNormalization(name=f"{name}_project_bn")(L.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(h))
    return L.Add(name=f"{name}_residual")([inp, h]) if stride == 1 and cin == out else h


def mobilenet_v3_small(keras):
    """MobileNetV3-small-style at 48 x 48 RGB, 10 classes: hard-swish stem, four bottlenecks (relu / hard-swish,
    3x3 and 5x5 depthwise, squeeze-excitation, a residual), 1x1 head with hard-swish, pooled Dense classifier."""
    L = keras.layers
    x = keras.Input((48, 48, 3), name="mnv3_in")
    h = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="mnv3_stem")(x)
    h = L.Activation("hard_swish", name="mnv3_stem_act")(L.BatchNormalization(name="mnv3_stem_bn")(h))
    h = _bneck(keras, h, 16, 16, 3, 2, True, "relu", "mnv3_b1")
    h = _bneck(keras, h, 48, 24, 3, 2, False, "relu", "mnv3_b2")
    h = _bneck(keras, h, 64, 24, 5, 1, True, "hard_swish", "mnv3_b3")
    h = _bneck(keras, h, 64, 32, 5, 2, True, "hard_swish", "mnv3_b4")
    h = L.Conv2D(96, 1, use_bias=False, name="mnv3_head")(h)
    h = L.Activation("hard_swish", name="mnv3_head_act")(L.BatchNormalization(name="mnv3_head_bn")(h))
    h = L.GlobalAveragePooling2D(name="mnv3_gap")(h)
    h = L.Dense(64, activation="hard_swish", name="mnv3_fc")(h)
    return keras.Model(x, L.Dense(10, name="mnv3_out")(h), name="mobilenet_v3_small")


def kws_transformer(keras):
    """Keyword spotting on 49 frames of 10 MFCCs: a per-frame Dense embedding, one post-norm transformer block
    (two-head MultiHeadAttention, LayerNormalization, GELU feed-forward), mean over frames, 12 keywords."""
    L = keras.layers
    x = keras.Input((49, 10), name="kwt_in")
    h = L.Dense(32, name="kwt_embed")(x)
    a = L.MultiHeadAttention(num_heads=2, key_dim=16, name="kwt_mha")(h, h)
    h = L.LayerNormalization(name="kwt_norm1")(L.Add(name="kwt_add1")([h, a]))
    f = L.Dense(32, name="kwt_ffn2")(L.Dense(64, activation="gelu", name="kwt_ffn1")(h))
    h = L.LayerNormalization(name="kwt_norm2")(L.Add(name="kwt_add2")([h, f]))
    h = L.GlobalAveragePooling1D(name="kwt_gap")(h)
    return keras.Model(x, L.Dense(12, name="kwt_out")(h), name="kws_transformer")


def kws_lstm(keras):
    """Keyword spotting on 49 frames of 10 MFCCs with an LSTM (32 units) read at its last step, 12 keywords."""
    L = keras.layers
    x = keras.Input((49, 10), name="kwl_in")
    h = L.LSTM(32, name="kwl_lstm")(x)
    return keras.Model(x, L.Dense(12, name="kwl_out")(h), name="kws_lstm")


# model name -> builder(keras)
KERAS = {f.__name__: f for f in (har_cnn1d, tcn_layernorm, conv_autoencoder, small_unet, mobilenet_v3_small,
                                 kws_transformer, kws_lstm)}
# int8 by tinyc's quantizer (tinyc/quant/lstm_ptq.py: TFLite's integer LSTM), not the converter: TFLiteConverter's
# int8 conversion of a Keras 3 LSTM (a WHILE loop) crashes.
KERAS_INT8_BY_TINYC = {"kws_lstm"}
AUTOENCODERS = {"conv_autoencoder"}
SEGMENTERS = {"small_unet"}


def _targets(name, model, x):
    """Synthetic targets a net of this kind learns: the class of the input's strongest channel (classifiers), the
    clean input (the autoencoder gets noise added to its input), per pixel whether the first channel exceeds the
    second (the U-Net)."""
    if name in AUTOENCODERS:
        return x
    if name in SEGMENTERS:
        return (x[..., 0] > x[..., 1]).astype(np.int32)
    classes = model.output_shape[-1]
    energy = np.abs(x).reshape(len(x), -1, x.shape[-1]).mean(axis=1)
    return (np.argmax(energy, axis=-1) + np.arange(len(x))) % classes


def build_keras(name: str, seed: int = 0):
    """The model, trained TRAIN_STEPS steps of Adam on seeded synthetic data."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model = KERAS[name](keras)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((TRAIN_STEPS * BATCH, *model.input_shape[1:])).astype(np.float32)
    y = _targets(name, model, x)
    if name in AUTOENCODERS:
        x = x + 0.3 * rng.standard_normal(x.shape).astype(np.float32)
        loss = "mse"
    elif name in SEGMENTERS:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        softmax_head = model.layers[-1].get_config().get("activation") == "softmax"
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax_head)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def calibration(shape, samples: int = 32, seed: int = 1) -> np.ndarray:
    """Standard normal inputs (what the synthetic training data is), N x shape."""
    return np.random.default_rng(seed).standard_normal((samples, *shape)).astype(np.float32)


# -- PyTorch ------------------------------------------------------------------------------------------------------
def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TorchAutoencoder(nn.Module):
        """Conv stride 2 down twice, ConvTranspose2d (k3 s2 p1 output_padding 1) and F.interpolate nearest up,
        GELU activations."""

        def __init__(self):
            super().__init__()
            self.down1 = nn.Conv2d(1, 8, 3, 2, 1)
            self.down2 = nn.Conv2d(8, 16, 3, 2, 1)
            self.up1 = nn.ConvTranspose2d(16, 16, 3, 2, 1, output_padding=1)
            self.conv = nn.Conv2d(16, 8, 3, 1, 1)
            self.out = nn.Conv2d(8, 1, 3, 1, 1)

        def forward(self, x):
            h = F.gelu(self.down2(F.gelu(self.down1(x))))
            h = F.gelu(self.up1(h))
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            return self.out(F.relu(self.conv(h)))

    class TorchUNet(nn.Module):
        """Two-level U-Net: max-pool down, F.interpolate bilinear (align_corners=False) up, torch.cat skips."""

        def __init__(self):
            super().__init__()
            self.e1, self.e2 = nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 16, 3, 1, 1)
            self.mid = nn.Conv2d(16, 24, 3, 1, 1)
            self.d2, self.d1 = nn.Conv2d(40, 16, 3, 1, 1), nn.Conv2d(24, 8, 3, 1, 1)
            self.out = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            e1 = F.relu(self.e1(x))
            e2 = F.relu(self.e2(F.max_pool2d(e1, 2)))
            b = F.relu(self.mid(F.max_pool2d(e2, 2)))
            up = F.interpolate(b, scale_factor=2, mode="bilinear", align_corners=False)
            d2 = F.relu(self.d2(torch.cat([up, e2], 1)))
            up = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
            return self.out(F.relu(self.d1(torch.cat([up, e1], 1))))

    class TorchKwsTransformer(nn.Module):
        """49 x 10 MFCC frames: Linear embedding, nn.MultiheadAttention (2 heads, batch_first), residual +
        nn.LayerNorm, GELU feed-forward, residual + nn.LayerNorm, mean over frames, Linear to 12 keywords."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(10, 32)
            self.attn = nn.MultiheadAttention(32, 2, batch_first=True)
            self.norm1, self.norm2 = nn.LayerNorm(32), nn.LayerNorm(32)
            self.ffn = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
            self.out = nn.Linear(32, 12)

        def forward(self, x):
            h = self.embed(x)
            h = self.norm1(h + self.attn(h, h, h, need_weights=False)[0])
            h = self.norm2(h + self.ffn(h))
            return self.out(h.mean(dim=1))

    class TorchHarCnn1d(nn.Module):
        """Activity classifier on [N, 3, 128]: Conv1d, MaxPool1d, strided Conv1d, AvgPool1d, global average
        (AdaptiveAvgPool1d), Linear."""

        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv1d(3, 16, 5, padding=2), nn.Conv1d(16, 24, 5, stride=2, padding=2)
            self.c3 = nn.Conv1d(24, 32, 3)
            self.fc, self.out = nn.Linear(32, 16), nn.Linear(16, 6)

        def forward(self, x):
            h = F.max_pool1d(F.relu(self.c1(x)), 2)
            h = F.avg_pool1d(F.relu(self.c2(h)), 2)
            h = F.adaptive_avg_pool1d(F.relu(self.c3(h)), 1).flatten(1)
            return self.out(F.relu(self.fc(h)))

    return {"torch_autoencoder": (TorchAutoencoder, (1, 1, 32, 32), "mse"),
            "torch_unet": (TorchUNet, (1, 3, 32, 32), "segment"),
            "torch_kws_transformer": (TorchKwsTransformer, (1, 49, 10), "classify"),
            "torch_har_cnn1d": (TorchHarCnn1d, (1, 3, 128), "classify")}


TORCH = ("torch_autoencoder", "torch_unet", "torch_kws_transformer", "torch_har_cnn1d")


def torch_input_shape(name: str) -> tuple:
    return _torch_modules()[name][1]


def export_torch(name: str, path, seed: int = 0) -> str:
    """The module trained TRAIN_STEPS steps of Adam on seeded synthetic data, exported with the TorchScript
    exporter at opset 20 (eval mode), where GELU is one Gelu node (at 17 it is Div, Erf, Add, Mul, Mul, which
    tinyc's quantizer does not take)."""
    import torch
    cls, shape, task = _torch_modules()[name]
    torch.manual_seed(seed)
    model = cls()
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(TRAIN_STEPS):
        x = torch.from_numpy(rng.standard_normal((BATCH, *shape[1:])).astype(np.float32))
        out = model(x)
        if task == "mse":
            loss = torch.nn.functional.mse_loss(out, x)
        elif task == "segment":
            loss = torch.nn.functional.cross_entropy(out, (x[:, 0] > x[:, 1]).long())
        else:
            loss = torch.nn.functional.cross_entropy(out, (x.abs().mean(dim=-1 if name.endswith("cnn1d") else 1)
                                                           .argmax(-1) % out.shape[-1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"], opset_version=20,
                      dynamo=False)
    return str(path)
