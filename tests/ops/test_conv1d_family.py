"""The convolution family's 1-D forms in every frontend (issue 18): Keras Conv1D (valid/same/causal, strides,
dilations, groups), SeparableConv1D, DepthwiseConv1D, MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D/2D and
TimeDistributed against Keras; ONNX GlobalMaxPool, LpPool and GlobalLpPool (p = 1, 2) against onnxruntime and
the C against the interpreter; TFLite's EXPAND_DIMS + CONV_2D / DEPTHWISE_CONV_2D / pooling + SQUEEZE forms the
converter makes from Keras 1-D layers, float32 against TFLite and int8 bit-exact with TFLite's reference
kernels on every layer. Every run of the C is under AddressSanitizer and UBSan (tinyc.verify, c_runner)."""
import numpy as np
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
            L.Conv1D(3, 5, padding="same", activation="softmax", name="softmax")(x),
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
    return keras.Model(x, [L.Concatenate(name="all")(flat), L.Concatenate(name="pools")(pooled[::2]),
                           L.Concatenate(name="pools_kept")([L.Flatten()(pooled[1]), pooled[3]])],
                       name="one_d_layers")


def test_keras_1d_layers_match_keras(tmp_path):
    _ok(verify(_save(one_d_layers(), tmp_path), samples=2, per_layer=True))


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
    _ok(verify(_save(time_distributed(), tmp_path), samples=2, per_layer=True))


def test_time_distributed_of_an_unsupported_layer_is_refused(tmp_path):
    x = keras.Input((4, 6, 3))
    model = keras.Model(x, L.TimeDistributed(L.SimpleRNN(2), name="td_rnn")(x), name="td_rnn")
    with pytest.raises(TinycError, match="TimeDistributed 'td_rnn' wraps a SimpleRNN"):
        verify(_save(model, tmp_path), samples=1)


def test_channels_first_1d_pooling_is_refused(tmp_path):
    x = keras.Input((4, 10))
    model = keras.Model(x, L.MaxPooling1D(2, data_format="channels_first", name="cf_pool")(x), name="cf_pool")
    with pytest.raises(TinycError, match="cf_pool.*channels_last"):
        verify(_save(model, tmp_path), samples=1)


# -- ONNX: GlobalMaxPool, LpPool, GlobalLpPool -----------------------------------------------------------------
def _onnx_model(tmp_path, name, nodes, shape, inits=()) -> str:
    from onnx import TensorProto, helper
    outs = [o for n in nodes for o in n.output if o.startswith("y")]
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], list(inits))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
                     .SerializeToString())
    return str(path)


def test_onnx_lp_pool_matches_onnxruntime(tmp_path):
    """p = 1, 2, 3 on 1-D, 2-D and 3-D inputs: explicit and SAME padding, strides, dilations, ceil_mode. (SAME is
    tested undilated: onnxruntime sizes it without the dilations, unlike the shape ONNX declares.)"""
    from onnx import helper, numpy_helper
    lp = helper.make_node
    nodes = [lp("LpPool", ["x"], ["y0"], p=1, kernel_shape=[3, 2], strides=[2, 1], pads=[2, 1, 1, 0]),
             lp("LpPool", ["x"], ["y1"], p=2, kernel_shape=[2, 2], dilations=[2, 3], pads=[1, 1, 1, 1]),
             lp("LpPool", ["x"], ["y2"], p=3, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
             lp("LpPool", ["x"], ["y3"], kernel_shape=[3, 2], strides=[3, 2], ceil_mode=1),
             lp("GlobalLpPool", ["x"], ["y4"], p=1), lp("GlobalLpPool", ["x"], ["y5"]),
             lp("GlobalMaxPool", ["x"], ["y6"]),
             lp("Reshape", ["x", "as_1d"], ["x1"]),
             lp("LpPool", ["x1"], ["y7"], p=2, kernel_shape=[4], strides=[3], pads=[3, 2]),
             lp("LpPool", ["x1"], ["y8"], p=1, kernel_shape=[4], strides=[3], auto_pad="SAME_LOWER"),
             lp("GlobalLpPool", ["x1"], ["y9"], p=3), lp("GlobalMaxPool", ["x1"], ["y10"]),
             lp("Reshape", ["x", "as_3d"], ["x3"]),
             lp("LpPool", ["x3"], ["y11"], p=2, kernel_shape=[2, 2, 2], strides=[1, 2, 1], pads=[1, 0, 0, 0, 1, 1]),
             lp("GlobalLpPool", ["x3"], ["y12"], p=2), lp("GlobalMaxPool", ["x3"], ["y13"])]
    inits = [numpy_helper.from_array(np.array([2, 3, 56], np.int64), "as_1d"),
             numpy_helper.from_array(np.array([2, 3, 2, 4, 7], np.int64), "as_3d")]
    _ok(verify(_onnx_model(tmp_path, "lp_pools", nodes, [2, 3, 8, 7], inits), samples=2))


def test_onnx_lp_pool_with_p_below_one_is_refused(tmp_path):
    from onnx import helper
    path = _onnx_model(tmp_path, "lp0", [helper.make_node("LpPool", ["x"], ["y"], name="lp", p=0,
                                                          kernel_shape=[2, 2])], [1, 2, 4, 4])
    with pytest.raises(TinycError, match="LpPool 'lp' has p = 0"):
        verify(path, samples=1)


def test_lp_pool_c_matches_interpreter(tmp_path):
    """The C of LpPool (ASan + UBSan) against the interpreter: 1 to 3 spatial axes, two images, windows clipped
    on every side and one wholly in the padding (0), p = 1, 2, 3, 4."""
    from c_runner import run_c
    from tinyc.interp import run as interp_run
    from tinyc.ir import Graph
    from tinyc.ops.pool3d import out_size
    specs = [((2, 9, 3), (3,), (2,), (1,), (4, 1), 1), ((2, 9, 3), (2,), (1,), (3,), (1, 2), 4),
             ((2, 5, 6, 3), (2, 3), (2, 1), (1, 2), (2, 1, 3, 2), 2),
             ((2, 5, 6, 3), (1, 1), (1, 1), (1, 1), (2, 0, 0, 0), 3),
             ((2, 3, 4, 5, 2), (2, 2, 3), (1, 2, 1), (2, 1, 1), (1, 0, 1, 1, 1, 0), 3)]
    rng = np.random.default_rng(8)
    for i, (shape, kernel, strides, dilations, pads, p) in enumerate(specs):
        nsp = len(kernel)
        g = Graph(f"lp{i}")
        g.add_tensor("x", shape)
        g.inputs = ["x"]
        sizes = [out_size(shape[1 + a], kernel[a], strides[a], dilations[a], pads[a], pads[nsp + a])
                 for a in range(nsp)]
        g.add_tensor("y", (shape[0], *sizes, shape[-1]))
        g.add_node("LpPool", ["x"], ["y"], name="lp", kernel=kernel, strides=strides, dilations=dilations, pads=pads,
                   p=p)
        g.outputs = ["y"]
        g.validate()
        x = rng.standard_normal(shape).astype(np.float32)
        want = interp_run(g, [x])["y"]
        (ours,) = run_c(g, [x], tmp_path)
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max()), err_msg=str(i))
