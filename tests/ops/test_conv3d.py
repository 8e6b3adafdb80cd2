"""Conv3D (tinyc/ops/conv3d.py): the C (ASan + UBSan) against the interpreter on groups, strides, dilations,
padding corners, odd sizes, two images and a fused activation; ONNX Conv on 5-D inputs (explicit pads and every
auto_pad) against onnxruntime; TFLite's CONV_3D from a converted Keras model against TFLite; corrupt weights
refused in one line."""
import importlib.util

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from c_runner import run_c
from tinyc.errors import TinycError
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.ops.pool3d import out_size
from tinyc.verify import verify

RNG = np.random.default_rng(3)
HAS_TF = importlib.util.find_spec("tensorflow") is not None

# (out channels, groups, kernel, strides, dilations, pads, bias, activation)
CONVS = [(4, 1, (2, 3, 2), (1, 2, 1), (2, 1, 1), (1, 0, 1, 0, 2, 1), True, None),
         (6, 3, (3, 1, 2), (2, 1, 3), (1, 1, 2), (0, 0, 0, 0, 0, 0), False, {"fn": "relu"}),
         (3, 3, (1, 2, 3), (1, 1, 1), (1, 2, 1), (2, 1, 0, 0, 3, 2), True, {"fn": "clip", "lo": -0.5, "hi": 0.5})]


def test_conv3d_c_matches_interpreter(tmp_path):
    shape = (2, 5, 6, 7, 3)
    g = Graph("conv3d")
    g.add_tensor("x", shape)
    g.inputs = ["x"]
    for k, (o, groups, kernel, strides, dilations, pads, bias, act) in enumerate(CONVS):
        w = g.add_const(f"w{k}", RNG.standard_normal((o, *kernel, shape[-1] // groups)).astype(np.float32))
        ins = ["x", w] + ([g.add_const(f"b{k}", RNG.standard_normal(o).astype(np.float32))] if bias else [])
        sizes = [out_size(shape[1 + i], kernel[i], strides[i], dilations[i], pads[i], pads[3 + i]) for i in range(3)]
        g.add_tensor(f"y{k}", (shape[0], *sizes, o))
        g.add_node("Conv3D", ins, [f"y{k}"], name=f"y{k}", strides=strides, dilations=dilations, pads=pads,
                   groups=groups, activation=act)
        g.outputs.append(f"y{k}")
    g.validate()
    x = RNG.standard_normal(shape).astype(np.float32)
    ref = interp_run(g, [x])
    for name, ours in zip(g.outputs, run_c(g, [x], tmp_path)):
        np.testing.assert_allclose(ours, ref[name], rtol=1e-5, atol=1e-5 * (1 + np.abs(ref[name]).max()),
                                   err_msg=name)


def test_onnx_conv3d_matches_onnxruntime(tmp_path):
    """Explicit pads, SAME_UPPER / SAME_LOWER (undilated: onnxruntime refuses dilated SAME), VALID, groups, no
    bias, and a Relu fused into it."""
    w1 = numpy_helper.from_array(RNG.standard_normal((4, 1, 2, 3, 2)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(RNG.standard_normal((2, 4, 3, 2, 2)).astype(np.float32), "w2")
    b1 = numpy_helper.from_array(RNG.standard_normal(4).astype(np.float32), "b1")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["y0"], group=4, strides=[1, 2, 1], dilations=[2, 1, 1],
                              pads=[1, 0, 2, 0, 2, 1]),
             helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], group=4, strides=[2, 1, 2], auto_pad="SAME_UPPER"),
             helper.make_node("Relu", ["c1"], ["y1"]),
             helper.make_node("Conv", ["x", "w2"], ["y2"], strides=[1, 3, 2], auto_pad="SAME_LOWER"),
             helper.make_node("Conv", ["x", "w2"], ["y3"], dilations=[1, 2, 2], auto_pad="VALID")]
    outs = ["y0", "y1", "y2", "y3"]
    g = helper.make_graph(nodes, "conv3d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 6, 7])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], [w1, w2, b1])
    path = tmp_path / "conv3d.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
                     .SerializeToString())
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
def test_tflite_conv3d_from_keras_matches_tflite(tmp_path):
    """A Keras Conv3D (SAME, strided; the converter keeps its bias and relu as an ADD) and a dilated VALID
    tf.nn.conv3d (Keras itself dilates through SpaceToBatchND, which TFLite lacks)."""
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    import tensorflow as tf
    w2 = RNG.standard_normal((2, 1, 2, 4, 3)).astype(np.float32)
    x = keras.Input((5, 6, 7, 3), batch_size=1)
    conv = keras.layers.Conv3D(4, (2, 3, 2), strides=(1, 2, 1), padding="same", activation="relu")
    y = keras.layers.Lambda(lambda v: tf.nn.conv3d(v, w2, strides=[1, 1, 1, 2, 1], padding="VALID",
                                                   dilations=[1, 2, 1, 3, 1]))(conv(x))
    conv.set_weights([RNG.standard_normal(w.shape).astype(np.float32) for w in conv.get_weights()])
    path = tmp_path / "conv3d.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y)).convert())
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]


@pytest.mark.parametrize("w_shape,b_shape", [((4, 2, 2, 2, 2), (4,)), ((4, 2, 2, 2, 3), (3,))])
def test_conv3d_refuses_weights_that_do_not_fit(w_shape, b_shape):
    g = Graph("bad")
    g.add_tensor("x", (1, 4, 4, 4, 3))
    g.inputs = ["x"]
    w = g.add_const("w", np.zeros(w_shape, np.float32))
    b = g.add_const("b", np.zeros(b_shape, np.float32))
    g.add_tensor("y", (1, 3, 3, 3, 4))
    g.add_node("Conv3D", ["x", w, b], ["y"], name="c", strides=(1, 1, 1), dilations=(1, 1, 1), pads=(0,) * 6,
               groups=1, activation=None)
    g.outputs = ["y"]
    with pytest.raises(TinycError, match="Conv3D 'c'"):
        g.validate()
