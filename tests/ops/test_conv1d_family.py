"""The convolution family's 1-D forms in Keras (issue 18): Conv1D (valid/same/causal, strides, dilations,
groups), SeparableConv1D, DepthwiseConv1D, MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D/2D and
TimeDistributed against Keras on every layer, and in int8 (tinyc's quantizer) byte for byte against TFLite
running tinyc's int8 graph; the C under AddressSanitizer and UBSan (tinyc.verify). The ONNX
forms: tests/ops/test_lp_pool.py and test_pool3d.py; the TFLite converter's forms: test_conv1d_tflite.py."""
import os

import pytest

from tinyc.errors import TinycError
from tinyc.verify import verify

keras = pytest.importorskip("keras")
from model_zoo import randomize  # noqa: E402

L = keras.layers


def _save(model, tmp_path) -> str:
    path = str(tmp_path / f"{model.name}.keras")
    randomize(model, 3).save(path)
    return path


def _ok(report):
    assert report["ok"], report["outputs"]
    bad = [row for row in report.get("layers", []) if not row["ok"]]
    assert not bad, bad


def one_d_layers():
    """Every 1-D layer of the family, each on the same signal, with their options' corners."""
    keras.utils.set_random_seed(4)
    x = keras.Input((23, 4), name="signal")
    outs = [L.Conv1D(5, 3, padding="causal", dilation_rate=3, activation="relu", name="causal_dilated")(x),
            L.Conv1D(6, 4, strides=2, padding="same", name="same_s2")(x),
            L.Conv1D(6, 3, strides=3, padding="valid", groups=2, activation="tanh", name="grouped")(x),
            L.SeparableConv1D(5, 3, padding="same", depth_multiplier=2, activation="relu", name="separable")(x),
            L.SeparableConv1D(4, 2, strides=2, dilation_rate=1, use_bias=False, name="separable_s2")(x),
            L.DepthwiseConv1D(3, padding="same", dilation_rate=2, depth_multiplier=2, name="depthwise")(x),
            L.DepthwiseConv1D(4, strides=2, activation="relu6", name="depthwise_s2")(x),
            L.MaxPooling1D(3, strides=2, padding="same", name="max_same")(x),
            L.MaxPooling1D(2, name="max_valid")(x),
            L.AveragePooling1D(4, strides=3, padding="same", name="avg_same")(x),
            L.AveragePooling1D(3, strides=1, name="avg_valid")(x)]
    flat = [L.Flatten(name=f"flat{i}")(h) for i, h in enumerate(outs)]
    pooled = [L.GlobalMaxPooling1D(name="global_max")(x), L.GlobalMaxPooling1D(keepdims=True, name="gmax_keep")(x)]
    img = L.Reshape((23, 2, 2), name="as_image")(x)
    pooled += [L.GlobalMaxPooling2D(name="global_max_2d")(img),
               L.Flatten(name="gmax2d_flat")(L.GlobalMaxPooling2D(keepdims=True, name="gmax2d_keep")(img))]
    softmax = L.Conv1D(3, 5, padding="same", activation="softmax", name="softmax")(x)
    return keras.Model(x, [L.Concatenate(name="all")(flat), L.Concatenate(name="pools")(pooled[::2]),
                           L.Concatenate(name="pools_kept")([L.Flatten()(pooled[1]), pooled[3]]), softmax],
                       name="one_d_layers")


def _int8_bit_exact(path):
    """tinyc's own int8 (random calibration) byte for byte against TFLite running tinyc's int8 graph."""
    from tinyc.frontends.keras_import import load_keras
    from tinyc.quant.calibrate import random_calibration
    report = verify(path, samples=2, quantize="int8", calib=random_calibration(load_keras(path), 16),
                    per_layer=True)
    assert report["mismatched_bytes"] == 0, report["outputs"]
    _ok(report)


def test_keras_1d_layers_match_keras(tmp_path):
    _ok(verify(_save(one_d_layers(), tmp_path), samples=2, per_layer=True))


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="TINYC_FULL: int8 of every 1-D layer (slow)")
def test_keras_1d_layers_int8_is_bit_exact(tmp_path):
    _int8_bit_exact(_save(one_d_layers(), tmp_path))


def time_distributed():
    """TimeDistributed over Dense, Conv1D (causal), a 1-D pooling, Conv2D and Flatten: the inner layer on every
    step of a sequence."""
    keras.utils.set_random_seed(5)
    frames = keras.Input((5, 12, 3), name="frames")
    h = L.TimeDistributed(L.Conv1D(4, 3, padding="causal", activation="relu"), name="td_conv1d")(frames)
    h = L.TimeDistributed(L.MaxPooling1D(2), name="td_pool")(h)
    h = L.TimeDistributed(L.Flatten(), name="td_flatten")(h)
    h = L.TimeDistributed(L.Dense(6, activation="tanh"), name="td_dense")(h)
    images = keras.Input((3, 6, 6, 2), name="images")
    g = L.TimeDistributed(L.Conv2D(3, 3, strides=2, padding="same", activation="softmax"), name="td_conv2d")(images)
    g = L.TimeDistributed(L.GlobalAveragePooling2D(), name="td_gap")(g)
    return keras.Model([frames, images], [h, g], name="time_distributed")


def test_keras_time_distributed_matches_keras(tmp_path):
    path = _save(time_distributed(), tmp_path)
    _ok(verify(path, samples=2, per_layer=True))
    _int8_bit_exact(path)


def test_time_distributed_of_an_unsupported_layer_is_refused(tmp_path):
    x = keras.Input((4, 5, 6, 3))
    model = keras.Model(x, L.TimeDistributed(L.ConvLSTM1D(2, 3), name="td_rnn")(x), name="td_rnn")
    with pytest.raises(TinycError, match="TimeDistributed 'td_rnn' wraps a ConvLSTM1D"):
        verify(_save(model, tmp_path), samples=1)


def test_channels_first_1d_pooling_is_refused(tmp_path):
    x = keras.Input((4, 10))
    model = keras.Model(x, L.MaxPooling1D(2, data_format="channels_first", name="cf_pool")(x), name="cf_pool")
    with pytest.raises(TinycError, match="cf_pool.*channels_last"):
        verify(_save(model, tmp_path), samples=1)
