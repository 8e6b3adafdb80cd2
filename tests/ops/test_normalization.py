"""Normalizations (tinyc/ops/normalize.py: Normalize, LpNormalize; BatchNorm -> ScaleShift): the C against the
interpreter under ASan + UBSan on every axis set, centred and RMS, broadcast scale and bias, L1 / L2 with and
without the epsilon floor and a zero row; the ONNX rules (LayerNormalization with its Mean / InvStdDev outputs,
RMSNormalization, InstanceNormalization, GroupNormalization in its opset 18 and 21 forms, LpNormalization,
standalone BatchNormalization, and the decomposed LayerNorm PyTorch writes below opset 17) against onnxruntime."""
import importlib.util

import numpy as np
import pytest

from c_runner import run_c
from tinyc import interp
from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.verify import verify

HAS_TF = importlib.util.find_spec("tensorflow") is not None
SHAPE = (2, 3, 4, 5)


def _close(ours, want, name=""):
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max()), err_msg=name)


def _check_c(g, x, tmp_path):
    g.validate()
    ref = interp.run(g, [x])
    for name, ours in zip(g.outputs, run_c(g, [x], tmp_path)):
        _close(ours, ref[name], name)


def _graph(shape=SHAPE):
    g = Graph("norm")
    g.add_tensor("x", shape)
    g.inputs = ["x"]
    return g


# (axes, scale shape, bias shape or None, center)
NORMALIZE_CASES = [((3,), (1, 1, 1, 5), (1, 1, 1, 5), True),          # layer norm over the last axis
                   ((2, 3), (1, 1, 4, 5), (1, 1, 1, 5), True),        # over the last two, bias broadcast
                   ((1, 2), (1, 1, 1, 5), (1, 1, 1, 5), True),        # instance norm of NHWC (strided rows)
                   ((1, 3), (1, 3, 1, 5), None, True),                # non-adjacent axes, no bias
                   ((0, 1, 2, 3), (1, 1, 1, 1), (1, 1, 1, 1), True),  # everything, scalar scale
                   ((3,), (1, 1, 1, 5), None, False),                 # RMS norm
                   ((0, 2), (2, 1, 4, 1), (1, 3, 1, 1), False)]       # RMS over non-adjacent axes, with a bias


def test_normalize_c_matches_interpreter(tmp_path):
    rng = np.random.default_rng(0)
    g = _graph()
    for k, (axes, s, b, center) in enumerate(NORMALIZE_CASES):
        ins = ["x", g.add_const(f"s{k}", rng.standard_normal(s).astype(np.float32))]
        if b is not None:
            ins.append(g.add_const(f"b{k}", rng.standard_normal(b).astype(np.float32)))
        g.add_tensor(f"y{k}", SHAPE)
        g.add_node("Normalize", ins, [f"y{k}"], name=f"n{k}", axes=axes, epsilon=1e-3 * (k + 1), center=center)
        g.outputs.append(f"y{k}")
    x = rng.standard_normal(SHAPE).astype(np.float32) * 3 + 1
    x[0, 1] = 2.0       # constant rows: variance 0, epsilon alone divides
    x[0, 1, 0, 0] = 2.5
    _check_c(g, x, tmp_path)


def test_lp_normalize_c_matches_interpreter(tmp_path):
    g = _graph()
    for axis in range(4):
        for p in (1, 2):
            for eps in (0.0, 1e-6):
                name = f"l{axis}{p}{int(eps > 0)}"
                g.add_tensor(name, SHAPE)
                g.add_node("LpNormalize", ["x"], [name], name=name, axis=axis, p=p, epsilon=eps)
                g.outputs.append(name)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    x[1, 2, 3, :] = 0.0     # a zero row along the last axis: 0 without the floor, 0 / 1e-6 = 0 with it
    x[0, :, 1, 1] = 0.0
    _check_c(g, x, tmp_path)


def test_normalize_checks_its_operands():
    g = _graph()
    g.add_tensor("y", SHAPE)
    g.add_node("Normalize", ["x", g.add_const("s", np.ones((1, 1, 1, 4), np.float32))], ["y"], name="n",
               axes=(3,), epsilon=1e-5, center=True)
    g.outputs = ["y"]
    with pytest.raises(TinycError, match="scale of shape"):
        g.validate()
    g.tensors["s"].shape, g.tensors["s"].data = (1, 1, 1, 5), np.ones((1, 1, 1, 5), np.float32)
    g.nodes[0].attrs["axes"] = (3, 3)
    with pytest.raises(TinycError, match="axes"):
        g.validate()
    g.nodes[0].op, g.nodes[0].inputs, g.nodes[0].attrs = "LpNormalize", ["x"], dict(axis=3, p=3, epsilon=0.0)
    with pytest.raises(TinycError, match="p = 3"):
        g.validate()


# -- ONNX --------------------------------------------------------------------------------------------------------
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from test_onnx_helper_models import Builder, _summary  # noqa: E402


def _verify(tmp_path, model, name):
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    report = verify(path)
    assert report["ok"], _summary(report)
    return report


def test_onnx_layer_and_rms_normalization(tmp_path):
    """Every axis of a plain value and of a channels-last one (a Conv output), with and without bias; the Mean
    and InvStdDev outputs; RMSNormalization (opset 23) on both."""
    b = Builder()
    c = b.node("Conv", ["img", b.weights(4, 2, 3, 3)])
    outs = []
    for x, shape in (("x", (3, 4, 5)), (c, (1, 4, 3, 4))):
        for axis in range(-len(shape), len(shape)):
            bias = [b.weights(*shape[axis:])] if axis % 2 else []
            outs.append(b.node("LayerNormalization", [x, b.weights(*shape[axis:])] + bias, axis=axis,
                               epsilon=1e-3))
            outs.append(b.node("RMSNormalization", [x, b.weights(*shape[axis:])], axis=axis))
    y, mean, inv = "ln_y", "ln_mean", "ln_inv"
    b.node("LayerNormalization", [c, b.weights(3, 4), b.weights(4)], [y, mean, inv], axis=2)
    b.node("LayerNormalization", ["x", b.weights(5)], ["ln2_y", "", "ln2_inv"])     # InvStdDev without Mean
    outs += [y, mean, inv, "ln2_inv"]
    _verify(tmp_path, b.model({"x": [3, 4, 5], "img": [1, 2, 5, 6]}, outs, 23), "layer_norm")


def test_onnx_instance_group_lp_and_batch_normalization(tmp_path):
    """InstanceNormalization and GroupNormalization (opset 21: per channel) after a Conv (channels-last) and on a
    plain value; LpNormalization p = 1, 2 on a Conv output's channels and on the last axis; a standalone
    BatchNormalization (a ScaleShift)."""
    b = Builder()
    c = b.node("Conv", ["img", b.weights(6, 2, 3, 3)])
    outs = [b.node("InstanceNormalization", [c, b.weights(6), b.weights(6)], epsilon=1e-3),
            b.node("InstanceNormalization", ["x", b.weights(4), b.weights(4)]),
            b.node("GroupNormalization", [c, b.weights(6), b.weights(6)], num_groups=3),
            b.node("GroupNormalization", ["x", b.weights(4), b.weights(4)], num_groups=2, epsilon=1e-2),
            b.node("LpNormalization", [c], axis=1, p=1), b.node("LpNormalization", [c], p=2),
            b.node("LpNormalization", ["x"], axis=0, p=2),
            b.node("BatchNormalization", ["x", b.weights(4), b.weights(4), b.weights(4),
                                          b.const(np.abs(b.rng.normal(1, 0.2, 4)))])]
    _verify(tmp_path, b.model({"x": [3, 4, 5], "img": [1, 2, 5, 6]}, outs, 21), "instance_group_lp")


def test_onnx_group_normalization_opset18_scales_per_group(tmp_path):
    """Opset 18's GroupNormalization takes scale and bias per group (opset 21 made them per channel; onnx's checker
    calls the old form deprecated, so the model is written without it); onnxruntime runs it as its function."""
    b = Builder()
    c = b.node("Conv", ["img", b.weights(6, 2, 3, 3)])
    outs = [b.node("GroupNormalization", [c, b.weights(3), b.weights(3)], num_groups=3),
            b.node("GroupNormalization", ["x", b.weights(2), b.weights(2)], num_groups=2)]
    graph = helper.make_graph(b.nodes, "g18", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5]),
                                                helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 2, 5, 6])],
                              [helper.make_tensor_value_info(outs[0], TensorProto.FLOAT, [1, 6, 3, 4]),
                               helper.make_tensor_value_info(outs[1], TensorProto.FLOAT, [3, 4, 5])], b.inits)
    _verify(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8),
            "group_norm18")


def test_onnx_group_normalization_refuses_what_it_cannot(tmp_path):
    b = Builder()
    y = b.node("GroupNormalization", ["x", b.weights(4), b.weights(4)], num_groups=3)
    model = helper.make_model(helper.make_graph(
        b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [3, 4, 5])], b.inits),
        opset_imports=[helper.make_opsetid("", 21)], ir_version=8)
    path = str(tmp_path / "bad.onnx")
    onnx.save(model, path)
    from tinyc.compiler import compile_model
    with pytest.raises(TinycError, match="do not split into 3 groups"):
        compile_model(path)


def torch_style_layer_norm(b, x, width, eps=1e-5):
    """nn.LayerNorm as PyTorch's exporter writes it below opset 17."""
    m = b.node("ReduceMean", [x], axes=[-1])
    d = b.node("Sub", [x, m])
    v = b.node("ReduceMean", [b.node("Pow", [d, b.const(2.0)])], axes=[-1])
    n = b.node("Div", [d, b.node("Sqrt", [b.node("Add", [v, b.const(eps)])])])
    return b.node("Add", [b.node("Mul", [n, b.weights(width)]), b.weights(width)])


def test_onnx_decomposed_layer_norm_fuses_into_one_kernel(tmp_path):
    """PyTorch's opset-13 LayerNorm after a Linear (MatMul + Add), twice: compiled to Dense + one Normalize each."""
    from tinyc.compiler import compile_model
    b = Builder()
    h = b.node("Add", [b.node("MatMul", ["x", b.weights(8, 16)]), b.weights(16)])
    h = torch_style_layer_norm(b, h, 16)
    h = torch_style_layer_norm(b, b.node("Relu", [h]), 16, eps=1e-3)
    model = b.model({"x": [2, 5, 8]}, [h], 13)
    _verify(tmp_path, model, "torch_ln")
    ops = [n.op for n in compile_model(str(tmp_path / "torch_ln.onnx")).plan.graph.nodes]
    assert ops.count("Normalize") == 2 and not {"Mean", "Pow", "Div", "Sub"} & set(ops), ops


# -- Keras -------------------------------------------------------------------------------------------------------
def _keras_model(build):
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    return keras, build(keras)


def _verify_keras(tmp_path, model, name="m"):
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    report = verify(path, samples=3)
    assert report["ok"], report["outputs"]


@pytest.mark.skipif(not HAS_TF, reason="needs Keras")
def test_keras_normalization_layers(tmp_path):
    """LayerNormalization (last axis, two axes, without scale or center), RMSNormalization, GroupNormalization
    (channels last, with and without scale and center), UnitNormalization, and an adapted Normalization
    (per channel: a ScaleShift; over two axes: Mul and Add; invert) on a conv net, with non-trivial weights."""
    def build(keras):
        L = keras.layers
        x = keras.Input((6, 5, 4))
        h = L.Conv2D(8, 3, padding="same")(x)
        outs = [L.LayerNormalization()(h), L.LayerNormalization(axis=(1, 3), epsilon=1e-2)(h),
                L.LayerNormalization(scale=False)(h), L.LayerNormalization(center=False, axis=2)(h),
                L.RMSNormalization()(h), L.GroupNormalization(groups=4)(h),
                L.GroupNormalization(groups=2, scale=False, center=False)(h), L.UnitNormalization()(h),
                L.UnitNormalization(axis=1)(h)]
        rng = np.random.default_rng(0)
        data = rng.normal(2, 3, (16, 6, 5, 4)).astype(np.float32)
        for layer in (L.Normalization(), L.Normalization(axis=(2, 3)), L.Normalization(invert=True)):
            layer.adapt(data)
            outs.append(layer(x))
        model = keras.Model(x, outs)
        for layer in model.layers:      # gamma / beta away from 1 / 0
            if type(layer).__name__ in ("LayerNormalization", "RMSNormalization", "GroupNormalization"):
                layer.set_weights([rng.normal(1, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
        return model
    _, model = _keras_model(build)
    _verify_keras(tmp_path, model)


@pytest.mark.skipif(not HAS_TF, reason="needs Keras")
def test_keras_layer_norm_rms_scaling_is_refused(tmp_path):
    from tinyc.compiler import compile_model
    keras, model = _keras_model(lambda k: k.Sequential([k.Input((4,)), k.layers.LayerNormalization(
        rms_scaling=True)]))
    path = str(tmp_path / "m.keras")
    model.save(path)
    with pytest.raises(TinycError, match="rms_scaling"):
        compile_model(path)


# -- TFLite: L2_NORMALIZATION (float, int8), Keras LayerNormalization as the converter decomposes it -------------
def _convert(keras_model, int8: bool, data) -> bytes:
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([d[None]] for d in data)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def _verify_tflite(tmp_path, buf, name, samples=5):
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(buf)
    report = verify(str(path), samples=samples, per_layer=True)
    assert report["ok"] and report["oracle"] == "tflite", report["outputs"]
    return report


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow")
@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_tflite_l2_normalization_and_keras_layer_norm(tmp_path, int8):
    """tf.math.l2_normalize (L2_NORMALIZATION) and Keras LayerNormalization (MEAN, SQUARED_DIFFERENCE, RSQRT,
    MUL, ADD, with a float NEG inside the int8 model) after Dense layers, converted in float32 (the decomposition
    fused back into one Normalize) and to int8 (every layer byte for byte as TFLite's reference kernels)."""
    keras, _ = _keras_model(lambda k: None)
    import tensorflow as tf

    class L2(keras.layers.Layer):
        def call(self, t):
            return tf.math.l2_normalize(t, axis=-1)
    x = keras.Input((6, 8))
    h = keras.layers.Dense(12)(x)
    model = keras.Model(x, [L2()(h), keras.layers.LayerNormalization()(keras.layers.Dense(8)(h))])
    data = np.random.default_rng(0).normal(0.3, 1, (32, 6, 8)).astype(np.float32)
    report = _verify_tflite(tmp_path, _convert(model, int8, data), "l2_ln" + "_int8" * int8)
    from tinyc.compiler import compile_model
    ops = [n.op for n in compile_model(str(tmp_path / f"l2_ln{'_int8' * int8}.tflite")).plan.graph.nodes]
    if int8:        # no int8 Normalize: the int8 layers stay as TFLite computes them
        assert report["mismatched_bytes"] == 0 and "SquaredDifference" in ops
    else:           # fuse_layer_norm's moments form: the nine layers are one Normalize
        assert "Normalize" in ops and "SquaredDifference" not in ops, ops
    assert "LpNormalize" in ops


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow")
@pytest.mark.parametrize("depth, zp, spread", [(1, 0, 1), (7, -128, 1), (33, 5, 64), (200, 127, 2),
                                               (9000, -128, 1)])
def test_int8_l2_normalization_against_tflite(tmp_path, depth, zp, spread):
    """The .tflite written directly: input zero points at the extremes, rows whose sum of squares is 0 or 1
    (TFLite's special case), small, and (9000 values of up to 255^2) past 2^29, where the inverse square root
    first divides by 4; every byte as TFLite's reference L2_NORMALIZATION."""
    from tinyc.ir import Quant
    from tinyc.quant.tflite_writer import write_tflite
    rows = 4
    g = Graph("l2")
    g.add_tensor("x", (1, rows, depth), "int8", quant=Quant(np.asarray(0.02, np.float32), np.asarray(zp, np.int64)))
    g.add_tensor("y", (1, rows, depth), "int8", quant=Quant(np.asarray(1 / 128, np.float32), np.asarray(0, np.int64)))
    g.add_node("LpNormalize", ["x"], ["y"], axis=2, p=2, epsilon=1e-6)
    g.inputs, g.outputs = ["x"], ["y"]
    rng = np.random.default_rng(depth)
    x = np.clip(zp + rng.integers(-255, 256, (1, rows, depth)) // spread, -128, 127)
    x[0, 0] = zp                                   # sum of squares 0
    x[0, 1] = zp
    x[0, 1, depth // 2] = zp + (1 if zp < 127 else -1)   # sum of squares 1
    if depth > 1000:
        x[0, 2] = -128 if zp > 0 else 127           # 9000 x 255^2 >= 2^29: the scaling loop runs
    path = tmp_path / "l2.tflite"
    write_tflite(g, str(path))
    report = verify(str(path), inputs=[x.astype(np.int8)])
    assert report["oracle"] == "tflite" and report["mismatched_bytes"] == 0, report["outputs"]


def test_int8_l2_normalization_refusals():
    """Outputs other than 1/128 and 0, and L1 or non-last-axis normalizations, are refused in one line."""
    from tinyc.codegen.emit import KernelContext
    from tinyc.ir import Quant
    from tinyc.ops.normalize import lp_int8_prepare
    g = Graph("l2")
    g.add_tensor("x", (1, 3, 4), "int8", quant=Quant(np.asarray(0.02, np.float32), np.asarray(0, np.int64)))
    g.add_tensor("y", (1, 3, 4), "int8", quant=Quant(np.asarray(1 / 64, np.float32), np.asarray(0, np.int64)))
    node = g.add_node("LpNormalize", ["x"], ["y"], name="l2", axis=2, p=2, epsilon=0.0)

    class Plan:
        graph = g
    k = KernelContext(node, Plan(), ["x0"])
    with pytest.raises(TinycError, match="scale 1/128"):
        lp_int8_prepare(k)
    node.attrs["axis"] = 1
    with pytest.raises(TinycError, match="last axis"):
        lp_int8_prepare(k)


def test_pytorch_normalizations_export(tmp_path):
    """A PyTorch net exported at opset 13 (nn.LayerNorm decomposed), 18 (LayerNormalization): GroupNorm (as
    PyTorch writes it: Reshape, InstanceNormalization, Reshape, Mul, Add), InstanceNorm2d, a standalone BatchNorm1d,
    F.normalize, and a T5-style RMS norm (x * rsqrt(mean(x^2) + eps) * w, the reciprocal as Div(1, Sqrt)), against
    onnxruntime; every layer and RMS norm one Normalize, F.normalize one LpNormalize."""
    torch = pytest.importorskip("torch")
    from tinyc.compiler import compile_model

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.group = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(4, 8)
            self.inst, self.bn = torch.nn.InstanceNorm2d(8, affine=True), torch.nn.BatchNorm1d(8)
            self.ln, self.w = torch.nn.LayerNorm(8), torch.nn.Parameter(torch.ones(8))

        def forward(self, x):
            t = self.inst(self.group(self.conv(x))).mean((2, 3))
            u = self.ln(torch.relu(torch.nn.functional.normalize(self.bn(t), dim=1)))
            return u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + 1e-6) * self.w

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        net.bn.running_mean.add_(0.5)
        net.bn.running_var.mul_(2)
    for opset in (13, 18):
        path = str(tmp_path / f"net{opset}.onnx")
        torch.onnx.export(net, (torch.randn(1, 3, 6, 6),), path, opset_version=opset, dynamo=False)
        report = verify(path)
        assert report["ok"] and report["oracle"] == "onnxruntime", _summary(report)
        ops = [n.op for n in compile_model(path).plan.graph.nodes]
        assert ops.count("Normalize") == 4 and "ScaleShift" in ops and "LpNormalize" in ops, ops
        assert not {"Pow", "Sub", "BroadcastTo", "Reduce"} & set(ops), ops


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow")
def test_own_quantizer_gives_l2_normalization_its_fixed_output(tmp_path):
    """--quantize int8 on an ONNX LpNormalization (p = 2, last axis): the output gets TFLite's 1/128 and 0 and the
    int8 model matches TFLite's reference kernels; a LayerNormalization is refused in one line (no int8 kernel)."""
    from tinyc.compiler import compile_model
    b = Builder()
    h = b.node("Gemm", ["x", b.weights(16, 8), b.weights(16)], transB=1)
    model = b.model({"x": [2, 8]}, [b.node("LpNormalization", [h], axis=-1, p=2)], 18)
    path = str(tmp_path / "lp.onnx")
    onnx.save(model, path)
    calib = [np.random.default_rng(0).standard_normal((32, 2, 8)).astype(np.float32)]
    report = verify(path, quantize="int8", calib=calib)
    assert report["ok"] and report["oracle"] == "tflite" and report["mismatched_bytes"] == 0, report["outputs"]
    b = Builder()
    h = b.node("Gemm", ["x", b.weights(16, 8), b.weights(16)], transB=1)
    model = b.model({"x": [2, 8]}, [b.node("LayerNormalization", [h, b.weights(16)])], 18)
    onnx.save(model, path)
    with pytest.raises(TinycError, match="does not quantize op Normalize"):
        compile_model(path, quantize="int8", calib=calib)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_in_place_where_rows_are_contiguous(dtype):
    """Forced to write over their dying inputs: Normalize over the trailing axes and LpNormalize over the last one
    do (the elementwise contract), a Normalize over strided rows (H and W of NHWC) does not; the C is the same as
    with separate buffers."""
    from tinyc.codegen.emit import generate
    from tinyc.compiler import Compiled
    from tinyc.ir import Quant
    from tinyc.schedule import schedule
    from tinyc.verify import run_generated
    shape = (1, 4, 5, 6)
    g = Graph(f"in_place_{dtype}")
    rng = np.random.default_rng(3)

    def q(scale, zp):
        return dict(quant=Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))) if dtype == "int8" else {}
    g.add_tensor("x", shape, dtype, **q(0.05, 3))
    g.add_tensor("h", shape, dtype, **q(0.05, 3))
    g.add_node("Activation", ["x"], ["h"], name="relu", fn="relu")
    if dtype == "float32":
        s = g.add_const("s", rng.standard_normal((1, 1, 5, 6)).astype(np.float32))
        g.add_tensor("n", shape)
        g.add_node("Normalize", ["h", s], ["n"], name="rows", axes=(2, 3), epsilon=1e-3, center=True)
        g.add_tensor("l", shape)
        g.add_node("LpNormalize", ["n"], ["l"], name="l2", axis=3, p=2, epsilon=0.0)
        g.add_tensor("y", shape)
        g.add_node("Normalize", ["l", g.add_const("s2", np.ones((1, 1, 1, 6), np.float32))], ["y"], name="strided",
                   axes=(1, 2), epsilon=1e-3, center=True)
        in_place = {0, 1, 2}     # (the relu writes over the model input too)
    else:
        g.add_tensor("y", shape, "int8", **q(1 / 128, 0))
        g.add_node("LpNormalize", ["h"], ["y"], name="l2", axis=3, p=2, epsilon=1e-6)
        in_place = {0, 1}
    g.inputs, g.outputs = ["x"], ["y"]
    g.validate()
    x = (rng.integers(-128, 128, (2, *shape[1:])).astype(np.int8) if dtype == "int8"
         else rng.standard_normal((2, *shape[1:])).astype(np.float32))
    outs = {}
    for kinds in ((), ("elementwise",)):
        plan = schedule(g, variants=(("forced", kinds, False),))
        outs[kinds] = run_generated(Compiled("test", g, plan, generate(plan, "m", "test")), [x])[0]
        if kinds:
            assert {i for i, c in plan.in_place.items() if c.kind == "elementwise"} == in_place, plan.in_place
    np.testing.assert_array_equal(outs[()], outs[("elementwise",)])
    if dtype == "float32":
        _close(outs[()], np.stack([interp.run(g, [x[i:i + 1]])["y"] for i in range(2)]))


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow")
@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_tflite_keras_group_and_rms_normalization(tmp_path, int8):
    """Keras GroupNormalization (Reshape, MEAN, SUB, SQUARE, RSQRT, ...) and RMSNormalization through the converter:
    in float32 each is one Normalize (fuse_layer_norm), in int8 every layer is byte for byte TFLite's."""
    keras, _ = _keras_model(lambda k: None)
    L = keras.layers
    x = keras.Input((6, 5, 4))
    h = L.Conv2D(8, 3, padding="same")(x)
    group, rms = L.GroupNormalization(groups=2), L.RMSNormalization()
    model = keras.Model(x, [group(h), rms(h)])
    rng = np.random.default_rng(0)
    for layer in (group, rms):
        layer.set_weights([rng.normal(1, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    data = rng.normal(0.3, 1, (32, 6, 5, 4)).astype(np.float32)
    name = "group_rms" + "_int8" * int8
    report = _verify_tflite(tmp_path, _convert(model, int8, data), name)
    from tinyc.compiler import compile_model
    ops = [n.op for n in compile_model(str(tmp_path / f"{name}.tflite")).plan.graph.nodes]
    if int8:
        assert report["mismatched_bytes"] == 0
    else:
        assert ops.count("Normalize") == 2 and "Mean" not in ops, ops
