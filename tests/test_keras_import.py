"""Keras frontend: the IR (run by the numpy interpreter) must compute what Keras computes."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from tinyc.errors import TinycError  # noqa: E402
from tinyc.frontends.keras_import import SUPPORTED_LAYERS, load_keras  # noqa: E402
from model_zoo import randomize  # noqa: E402
from tinyc.interp import run  # noqa: E402

ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh", "softmax", "leaky_relu", "hard_sigmoid", "swish", "silu",
               "linear", "elu", "hard_swish", "hard_silu"]


def save_load(model, dirpath, suffix=".keras", **kw):
    path = str(dirpath / f"{model.name}{suffix}")
    model.save(path)
    return load_keras(path, **kw), path


def sample_inputs(model, seed=1, shapes=None):
    rng = np.random.default_rng(seed)
    shapes = shapes or [(1,) + tuple(t.shape[1:]) for t in model.inputs]
    return [rng.normal(0, 1.5, s).astype("float32") for s in shapes]


def assert_matches(model, graph, xs):
    ref = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    ref = ref if isinstance(ref, (list, tuple)) else [ref]
    got = run(graph, xs)
    assert len(ref) == len(graph.outputs)
    for r, name in zip(ref, graph.outputs):
        r = np.asarray(r)
        assert got[name].shape == r.shape, name
        err = np.abs(got[name] - r).max()
        assert err <= 1e-4 * (1 + np.abs(r).max()), f"{name}: max abs err {err}"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("keras")


# -- models --------------------------------------------------------------------------------------------------
def mlp_model():
    keras.utils.set_random_seed(1)
    x = keras.Input((6,), name="x")
    h = layers.Dense(8, name="hidden")(x)
    branches = [layers.Dense(4, activation=a, name=f"dense_{a}")(h) for a in ACTIVATIONS]
    branches += [layers.Activation(a, name=f"act_{a}")(h) for a in ACTIVATIONS]
    branches += [layers.ReLU(name="relu_plain")(h), layers.ReLU(max_value=2.5, name="relu_max")(h),
                 layers.ReLU(negative_slope=0.1, name="relu_slope")(h), layers.LeakyReLU(name="leaky")(h),
                 layers.LeakyReLU(negative_slope=0.05, name="leaky_05")(h),
                 layers.Softmax(axis=-1, name="softmax_layer")(h)]
    y = layers.Concatenate(name="all")(branches)
    y = layers.BatchNormalization(name="bn")(y)
    y = layers.Dropout(0.5, name="drop")(y)
    y = layers.Dense(5, activation="softmax", name="out", use_bias=False)(y)
    return randomize(keras.Model(x, y, name="mlp"))


def conv_grid_model():
    """Conv2D with kernels 1,3,5,7 x same/valid x strides 1,2 on an odd-sized input, plus dilation and groups."""
    keras.utils.set_random_seed(2)
    x = keras.Input((11, 11, 4), name="img")
    outs = [layers.Conv2D(3, k, strides=s, padding=p, name=f"c{k}_{p}_s{s}")(x)
            for k in (1, 3, 5, 7) for p in ("same", "valid") for s in (1, 2)]
    outs.append(layers.Conv2D(3, 3, dilation_rate=2, padding="same", activation="relu6", name="dilated")(x))
    outs.append(layers.Conv2D(6, (3, 2), groups=2, padding="same", use_bias=False, name="grouped")(x))
    return randomize(keras.Model(x, outs, name="conv_grid"))


def cnn_model():
    keras.utils.set_random_seed(3)
    x = keras.Input((9, 9, 3), name="image")
    h = layers.Rescaling(0.5, offset=-0.25, name="rescale")(x)
    h = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(h)
    h = layers.BatchNormalization(name="stem_bn")(h)
    h = layers.ReLU(6.0, name="stem_relu")(h)
    d = layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", activation="relu", name="dw")(h)
    d = layers.DepthwiseConv2D(3, padding="valid", activation="swish", name="dw_valid")(d)
    s = layers.SeparableConv2D(16, 3, padding="same", activation="hard_swish", name="sep")(d)
    r = layers.Add(name="residual")([s, d])
    p = layers.ZeroPadding2D(((1, 0), (2, 1)), name="pad")(r)
    m1 = layers.MaxPooling2D(3, strides=2, padding="same", name="max_same")(p)
    m2 = layers.AveragePooling2D(3, strides=2, padding="same", name="avg_same")(p)
    m3 = layers.MaxPooling2D(2, padding="valid", name="max_valid")(p)
    m4 = layers.AveragePooling2D((2, 4), strides=1, padding="valid", name="avg_valid")(p)
    pools = layers.Concatenate(axis=-1, name="cat_pools")([m1, m2])
    rows = layers.Concatenate(axis=1, name="cat_rows")([m3, layers.Conv2D(16, 1, name="proj")(m4)])
    g1 = layers.GlobalAveragePooling2D(name="gap")(rows)
    g2 = layers.GlobalAveragePooling2D(keepdims=True, name="gap_keep")(pools)
    g3 = layers.GlobalMaxPooling2D(name="gmp")(m2)
    f = layers.Flatten(name="flat")(layers.Permute((2, 1, 3), name="perm")(g2))
    y = layers.Concatenate(name="head_in")([g1, f, g3])
    y = layers.SpatialDropout1D(0.2, name="sdrop")(layers.Reshape((4, -1), name="to_seq")(y))
    y = layers.Dense(4, activation="softmax", name="head")(y)
    return randomize(keras.Model(x, y, name="cnn"))


def conv1d_model():
    keras.utils.set_random_seed(4)
    return randomize(keras.Sequential([
        keras.Input((20, 3), name="signal"),
        layers.Conv1D(6, 5, padding="same", activation="relu", name="c1"),
        layers.Conv1D(6, 3, strides=2, padding="valid", name="c2"),
        layers.ZeroPadding1D(2, name="pad1d"),
        layers.Conv1D(4, 3, dilation_rate=2, padding="causal", activation="softmax", name="c3"),
        layers.BatchNormalization(name="bn1d"),
        layers.Reshape((4, -1), name="reshape"),
        layers.Dense(3, activation="tanh", name="dense_rank3"),
        layers.Flatten(name="flat"),
        layers.Dense(2, name="out"),
    ], name="conv1d"))


def multi_io_model():
    """Two inputs, two outputs (declared in reverse creation order), a shared layer and a nested model."""
    keras.utils.set_random_seed(5)
    inner = keras.Sequential([keras.Input((8,)), layers.Dense(8, activation="elu", name="inner_dense"),
                              layers.BatchNormalization(name="inner_bn")], name="block")
    a = keras.Input((8,), name="a")
    b = keras.Input((8,), name="b")
    shared = layers.Dense(8, activation="leaky_relu", name="shared")
    sa, sb = shared(a), shared(b)
    merged = layers.Add(name="sum")([sa, sb, a])
    diff = layers.Subtract(name="diff")([sa, sb])
    prod = layers.Multiply(name="prod")([merged, diff])
    nested = inner(prod)
    out1 = layers.Dense(3, activation="sigmoid", name="out1")(nested)
    out2 = layers.Concatenate(name="out2")([merged, nested])
    return randomize(keras.Model([a, b], [out2, out1], name="multi_io"))


# -- numeric equivalence -------------------------------------------------------------------------------------
@pytest.mark.parametrize("build,suffix", [(mlp_model, ".h5"), (conv_grid_model, ".keras"), (cnn_model, ".keras"),
                                          (conv1d_model, ".keras"), (multi_io_model, ".keras")])
def test_matches_keras(build, suffix, tmp):
    model = build()
    graph, _ = save_load(model, tmp, suffix)
    assert graph.source_format == "keras"
    assert_matches(model, graph, sample_inputs(model))


def test_names_and_structure(tmp):
    model = multi_io_model()
    g, _ = save_load(model, tmp)
    assert g.inputs == ["a", "b"] and g.outputs == ["out2", "out1"]
    assert g.tensors["a"].shape == (1, 8)
    assert g.tensors["out1"].source_name == "out1" and g.tensors["out1"].source_perm is None
    # a shared layer's outputs get suffixes and no source name (the layer has no single output)
    assert {"shared", "shared_1"} <= set(g.tensors) and g.tensors["shared"].source_name is None
    uses = [n for n in g.nodes if n.outputs[0] in ("shared", "shared_1")]
    assert uses[0].inputs[1:] == uses[1].inputs[1:]      # its weights are stored once
    assert g.tensors["inner_bn"].source_name == "block"  # a nested model is flattened
    assert g.tensors["inner_dense"].source_name is None
    assert [n.op for n in g.nodes if n.outputs[0].startswith("sum")] == ["Add", "Add"]


def test_fused_activation_and_helpers(tmp):
    g, _ = save_load(conv1d_model(), tmp)
    ops = {n.outputs[0]: n for n in g.nodes}
    assert ops["c1_conv2d"].attrs["activation"] == {"fn": "relu"}
    assert ops["c1"].op == "Reshape" and ops["c1_as_2d"].op == "Reshape"
    softmax = ops[ops["c3"].inputs[0]]       # on the 2-D form's channels, then back to [N, L, C]
    assert ops["c3"].op == "Reshape" and softmax.op == "Softmax" and softmax.attrs["axis"] == 3
    assert g.tensors["c1_conv2d"].source_name is None and g.tensors["c1"].source_name == "c1"
    assert ops["c3_conv2d"].attrs["pads"] == (0, 4, 0, 0)


def test_same_padding_and_depthwise_layout(tmp):
    g, _ = save_load(cnn_model(), tmp)
    ops = {n.outputs[0]: n for n in g.nodes}
    assert ops["max_same"].attrs["pads"] == (0, 0, 1, 1)   # 4x6 input, k3 s2: total 1 each, extra at the end
    assert ops["avg_same"].attrs["count_include_pad"] is False
    dw = ops["dw"]
    assert dw.attrs["groups"] == 8 and g.tensors[dw.inputs[1]].shape == (16, 3, 3, 1)
    assert dw.attrs["pads"] == (1, 1, 1, 1)               # 9 -> 5 with k3 s2: total (5-1)*2+3-9 = 2
    assert ops["dw"].attrs["activation"] == {"fn": "relu"}
    assert [n.op for n in g.nodes if n.outputs[0] == "stem_bn"] == ["BatchNorm"]


def test_supported_layers_is_data():
    for name in ("InputLayer", "Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D",
                 "BatchNormalization", "ReLU", "LeakyReLU", "Activation", "MaxPooling2D", "AveragePooling2D",
                 "GlobalAveragePooling2D", "Flatten", "Reshape", "Add", "Concatenate", "ZeroPadding2D",
                 "Dropout", "Softmax"):
        assert callable(SUPPORTED_LAYERS[name])


# -- dynamic shapes ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dynamic(tmp):
    keras.utils.set_random_seed(6)
    model = randomize(keras.Sequential([
        keras.Input((None, 3), name="x"),
        layers.Conv1D(4, 3, padding="same", activation="relu", name="conv"),
        layers.GlobalAveragePooling1D(name="gap"),
        layers.Dense(2, name="out")], name="dynamic"))
    path = str(tmp / "dynamic.keras")
    model.save(path)
    return model, path


def test_dynamic_shape_needs_input_shapes(dynamic):
    with pytest.raises(TinycError, match=r"input 'x' has a dynamic shape \(None, None, 3\); pass --input-shape"):
        load_keras(dynamic[1])


def test_dynamic_shape_with_input_shapes(dynamic):
    model, path = dynamic
    g = load_keras(path, input_shapes=[(1, 16, 3)])
    assert g.tensors["x"].shape == (1, 16, 3) and g.tensors["conv"].shape == (1, 16, 4)
    assert_matches(model, g, sample_inputs(model, shapes=[(1, 16, 3)]))


@pytest.mark.parametrize("shapes,msg", [([(1, 16, 4)], "does not fit"), ([(4, 16, 3)], "batch size 4"),
                                        ([(1, 16, 3), (1, 2)], "1 input")])
def test_bad_input_shapes(dynamic, shapes, msg):
    with pytest.raises(TinycError, match=msg):
        load_keras(dynamic[1], input_shapes=shapes)


# -- rejected models -----------------------------------------------------------------------------------------
def _save(model, tmp, name):
    path = str(tmp / f"{name}.keras")
    model.save(path)
    return path


def test_unsupported_layer(tmp):
    x = keras.Input((5, 6, 3), name="seq")
    model = keras.Model(x, layers.Flatten()(layers.ConvLSTM1D(4, 3, name="my_conv_lstm")(x)))
    with pytest.raises(TinycError, match=r"'my_conv_lstm' of type ConvLSTM1D is not supported; run `tinyc ops`"):
        load_keras(_save(model, tmp, "conv_lstm"))


def test_lambda_layer(tmp):
    x = keras.Input((4,))
    model = keras.Model(x, layers.Lambda(lambda t: t * 2.0, name="double")(x))
    with pytest.raises(TinycError, match="Lambda"):
        load_keras(_save(model, tmp, "lambda"))


@pytest.mark.parametrize("make,msg", [
    (lambda: layers.BatchNormalization(axis=1, name="bn_axis1"), "only the last"),
    (lambda: layers.Activation("squareplus", name="squareplus_act"), "activation 'squareplus'"),
    (lambda: layers.Dense(3, activation="sparse_plus", name="sparse_plus_dense"), "sparse_plus_dense"),
])
def test_unsupported_configurations(make, msg, tmp):
    x = keras.Input((4, 4))
    model = keras.Model(x, make()(x))
    with pytest.raises(TinycError, match=msg):
        load_keras(_save(model, tmp, "bad"))


def test_missing_file(tmp):
    with pytest.raises(TinycError, match="not found"):
        load_keras(str(tmp / "nope.keras"))
