"""ONNX int8 models in QDQ form, as onnxruntime.quantization.quantize_static writes them: small PyTorch models
are exported, quantized (int8 and uint8 activations, per-tensor and per-channel weights), compiled to int8 C and
checked by `verify` against onnxruntime within one LSB of each output (docs/onnx-qdq.md)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
quantization = pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tinyc.codegen.emit import kernel_family  # noqa: E402
from tinyc.compiler import compile_model  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.schedule.fuse_block import inline_blocks  # noqa: E402
from tinyc.verify import verify  # noqa: E402
from test_cli import one_line_error, tinyc  # noqa: E402

SAMPLES = 20
OFF_BY_ONE = {}   # model id -> (values one LSB away from onnxruntime, values compared); printed at the end


class ConvNet(torch.nn.Module):
    """Conv + ReLU, depthwise conv, residual Add, MaxPool, AveragePool, Flatten, Linear (Gemm)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = torch.nn.Linear(8 * 2 * 2, 5)

    def forward(self, x):
        a = torch.relu(self.conv(x))
        b = self.depthwise(a) + a
        b = torch.nn.functional.avg_pool2d(torch.nn.functional.max_pool2d(b, 2), 2)
        return self.fc(torch.flatten(b, 1))


class BranchNet(torch.nn.Module):
    """Two convs and a sigmoid (stays float) concatenated at different scales, a global average pool, then a
    bias-free Linear on a 3-D value (MatMul).

    The sigmoid reads the input and the MatMul has no bias on purpose: a one-LSB difference coming into a sigmoid
    (quantized ~4x finer than its input) or into a bias Add (finer than the MatMul) grows to two LSBs at their
    output, so such models only agree with onnxruntime to within 2 LSBs (docs/onnx-qdq.md, "end to end")."""

    def __init__(self):
        super().__init__()
        self.wide = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.narrow = torch.nn.Conv2d(3, 4, 1)
        self.fc = torch.nn.Linear(15, 5, bias=False)

    def forward(self, x):
        a = torch.cat([torch.relu(self.wide(x)), self.narrow(x), torch.sigmoid(x)], 1)
        g = torch.nn.functional.adaptive_avg_pool2d(a, 1)
        return self.fc(g.reshape(1, 1, 15))


MODELS = {"convnet": ConvNet, "branchnet": BranchNet}
SHAPE = (1, 3, 8, 8)


class RandomCalibration(quantization.CalibrationDataReader):
    def __init__(self, n=32, seed=0):
        rng = np.random.default_rng(seed)
        self.samples = iter([{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(n)])

    def get_next(self):
        return next(self.samples, None)


@pytest.fixture(scope="module")
def float_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("qdq_float")
    paths = {}
    for name, cls in MODELS.items():
        torch.manual_seed(0)
        paths[name] = str(root / f"{name}.onnx")
        torch.onnx.export(cls().eval(), torch.randn(SHAPE), paths[name], dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    return paths


def quantize(src, dst, activations=quantization.QuantType.QInt8, weights=quantization.QuantType.QInt8,
             per_channel=False):
    quantization.quantize_static(src, str(dst), RandomCalibration(), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=activations, weight_type=weights, per_channel=per_channel)
    return str(dst)


def float_nodes(g):
    """Nodes that compute in float (Quantize reads float, Dequantize writes it: they are the edges)."""
    return [n for n in g.nodes if n.op not in ("Quantize", "Dequantize") and kernel_family(g, n) == "float"]


ACTIVATIONS = {"s8": quantization.QuantType.QInt8, "u8": quantization.QuantType.QUInt8}


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("act", ["s8", "u8"])
@pytest.mark.parametrize("model", list(MODELS))
def test_quantize_static_model_compiles_to_int8_and_matches_onnxruntime(float_models, tmp_path, model, act,
                                                                        per_channel):
    path = quantize(float_models[model], tmp_path / "q.onnx", ACTIVATIONS[act], per_channel=per_channel)
    g = inline_blocks(compile_model(path).graph)      # (fused blocks' layers too)
    int8_ops = [n.op for n in g.nodes if n.op in ("Conv2D", "Dense") and kernel_family(g, n) == "int8"]
    if model == "convnet":
        # conv, depthwise conv (+ the Add, pools and flatten between them) and the Linear all run int8
        assert int8_ops == ["Conv2D", "Conv2D", "Dense"]
        assert float_nodes(g) == []
    else:
        # two convs, the global average pool (a depthwise conv of ones) and the MatMul; only the sigmoid is float
        assert int8_ops == ["Conv2D", "Conv2D", "Conv2D", "Dense"]
        assert [(n.op, n.attrs.get("fn")) for n in float_nodes(g)] == [("Activation", "sigmoid")]
    assert [g.producer(o).op for o in g.outputs] == ["Dequantize"]

    report = verify(path, samples=SAMPLES)
    row = report["outputs"][0]
    lsb = float(np.asarray(g.tensors[g.producer(g.outputs[0]).inputs[0]].quant.scale))
    assert row["tolerance"] == pytest.approx(lsb + 1e-6)
    assert report["ok"], report
    total = SAMPLES * g.tensors[g.outputs[0]].size
    OFF_BY_ONE[f"{model}-{act}-{'pc' if per_channel else 'pt'}"] = (row["off_by_lsb"], total)
    # Differences come from rounding (ties, double rounding), not a bias: never most of the values.
    assert row["off_by_lsb"] <= total // 2


def test_report_one_lsb_statistics():
    """Not a check: prints how often our output is one LSB away from onnxruntime (run with -s to see it)."""
    for key, (off, total) in sorted(OFF_BY_ONE.items()):
        print(f"{key:28s} {off:3d} of {total} output values one LSB from onnxruntime")


def test_int16_activations_are_refused_in_one_line(float_models, tmp_path):
    path = quantize(float_models["convnet"], tmp_path / "q16.onnx", quantization.QuantType.QInt16,
                    quantization.QuantType.QInt16)
    one_line_error(tinyc("compile", path, "-o", tmp_path / "out"), "int16", "int8 and uint8 QDQ models only")


def test_asymmetric_uint8_weights_are_refused_in_one_line(float_models, tmp_path):
    path = quantize(float_models["convnet"], tmp_path / "qw.onnx", quantization.QuantType.QUInt8,
                    quantization.QuantType.QUInt8)
    one_line_error(tinyc("compile", path, "-o", tmp_path / "out"), "asymmetrically", "symmetric")


# -- hand-written QDQ corners (onnx.helper) ------------------------------------------------------------------------
def qdq_model(path, nodes, inits, out_type=TensorProto.FLOAT, opset=17):
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", out_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10   # onnxruntime 1.31 reads IR versions up to 13
    onnx.save(model, str(path))
    return str(path)


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def quant(x, y, scale="s", zp="zp"):
    return helper.make_node("QuantizeLinear", [x, scale] + ([zp] if zp else []), [y], name=y)


def dequant(x, y, scale="s", zp="zp", **attrs):
    return helper.make_node("DequantizeLinear", [x, scale] + ([zp] if zp else []), [y], name=y, **attrs)


X_PARAMS = [const("s", 0.05), const("zp", 3, np.int8)]


def test_uint8_without_zero_point_means_zero_point_0_that_is_int8_minus_128(tmp_path):
    path = qdq_model(tmp_path / "u8.onnx", [quant("x", "xq", zp=None), dequant("xq", "y", zp=None)], [const("s", 0.05)])
    g = compile_model(path).graph
    assert int(g.tensors[g.nodes[0].outputs[0]].quant.zero_point) == -128
    assert verify(path, samples=SAMPLES)["ok"]


def test_gemm_weights_per_channel_along_b_columns_with_alpha_become_int8(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [quant("x", "xq"), dequant("xq", "xd"), dequant("wq", "wd", "ws", "wz", axis=1),
             helper.make_node("Gemm", ["xd", "wd"], ["g"], alpha=0.5), quant("g", "gq", "s2", "z2"),
             dequant("gq", "y", "s2", "z2")]
    inits = X_PARAMS + [const("wq", rng.integers(-127, 128, (4, 3)), np.int8), const("ws", [0.01, 0.02, 0.03]),
                        const("wz", [0, 0, 0], np.int8), const("s2", 0.02), const("z2", -5, np.int8)]
    path = qdq_model(tmp_path / "gemm.onnx", nodes, inits)
    g = compile_model(path).graph
    dense = next(n for n in g.nodes if n.op == "Dense")
    w = g.tensors[dense.inputs[1]]
    assert w.dtype == "int8" and w.shape == (3, 4) and w.quant.axis == 0
    np.testing.assert_allclose(w.quant.scale, [0.005, 0.01, 0.015], rtol=1e-6)   # alpha went into the scales
    assert verify(path, samples=SAMPLES)["ok"]


@pytest.mark.parametrize("case", ["per_axis_activation", "uint8_output"])
def test_qdq_forms_outside_an_int8_graph_compute_in_integers(tmp_path, case):
    """A per-axis QuantizeLinear of an activation and a uint8 model output are not int8-graph forms: they become
    LinearQuantize / LinearDequantize on plain integer tensors and match onnxruntime exactly."""
    out_type, inits = TensorProto.FLOAT, list(X_PARAMS)
    if case == "per_axis_activation":
        nodes = [quant("x", "xq", "sv", "zv"), dequant("xq", "y", "sv", "zv")]
        inits += [const("sv", [.1, .1, .2, .2]), const("zv", [0, 0, 0, 0], np.int8)]
    else:
        nodes, out_type = [quant("x", "y", "s", "zu")], TensorProto.UINT8
        inits.append(const("zu", 128, np.uint8))
    path = qdq_model(tmp_path / f"{case}.onnx", nodes, inits, out_type, 17)
    assert {n.op for n in compile_model(path).graph.nodes} & {"LinearQuantize", "LinearDequantize"}
    report = verify(path, samples=SAMPLES)
    assert report["ok"], report["outputs"]


@pytest.mark.parametrize("case, needle", [
    ("float_op_reads_int8", "'neg' on int8 -> int8; on integer tensors tinyc computes clip and relu"),
    ("dequantize_with_other_parameters", "another scale or zero point")])
def test_unrepresentable_qdq_forms_are_refused_naming_the_tensor(tmp_path, case, needle):
    out_type, opset = TensorProto.FLOAT, 17
    inits = list(X_PARAMS)
    if case == "float_op_reads_int8":
        nodes, out_type = [quant("x", "xq"), helper.make_node("Neg", ["xq"], ["y"])], TensorProto.INT8
    else:
        nodes, inits = [quant("x", "xq"), dequant("xq", "y", "s2")], inits + [const("s2", 0.1)]
    path = qdq_model(tmp_path / f"{case}.onnx", nodes, inits, out_type, opset)
    with pytest.raises(TinycError, match=needle):
        compile_model(path)


def test_int4_weights_dequantize_to_exact_float_constants(tmp_path):
    """DequantizeLinear of an int4 constant is folded into the float weights it means (exact: 4-bit values times
    a float scale); the MatMul then runs in float and matches onnxruntime."""
    nodes = [quant("x", "xq"), dequant("xq", "xd"), dequant("w4", "wd", "s4", "z4"),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    inits = list(X_PARAMS) + [helper.make_tensor("w4", TensorProto.INT4, [4, 3], [1, -2, 3, -8, 7, 0] * 2),
                              const("s4", 0.1), helper.make_tensor("z4", TensorProto.INT4, [], [1])]
    path = qdq_model(tmp_path / "int4_weights.onnx", nodes, inits, TensorProto.FLOAT, 21)
    g = compile_model(path).graph
    assert not [t for t in g.tensors.values() if t.dtype == "int4"]
    report = verify(path, samples=SAMPLES)
    assert report["ok"], report["outputs"]
