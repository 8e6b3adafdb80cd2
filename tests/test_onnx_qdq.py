"""ONNX int8 models in QDQ form, as onnxruntime.quantization.quantize_static writes them: small PyTorch models
are exported, quantized (int8 and uint8 activations, per-tensor and per-channel weights), compiled to int8 C and
checked by `verify` against onnxruntime within one LSB of each output (docs/onnx-qdq.md)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
quantization = pytest.importorskip("onnxruntime.quantization")

from tinyc.codegen.emit import kernel_family  # noqa: E402
from tinyc.compiler import compile_model  # noqa: E402
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
    """Two convs concatenated (different scales), a sigmoid (stays float), global average pool, then a Linear on
    a 3-D value (MatMul + Add with a quantized constant)."""

    def __init__(self):
        super().__init__()
        self.wide = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.narrow = torch.nn.Conv2d(3, 4, 1)
        self.gate = torch.nn.Conv2d(3, 4, 1)
        self.fc = torch.nn.Linear(16, 5)

    def forward(self, x):
        a = torch.cat([torch.relu(self.wide(x)), self.narrow(x), torch.sigmoid(self.gate(x))], 1)
        g = torch.nn.functional.adaptive_avg_pool2d(a, 1)
        return self.fc(g.reshape(1, 1, 16))


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
    g = compile_model(path).graph
    int8_ops = [n.op for n in g.nodes if n.op in ("Conv2D", "Dense") and kernel_family(g, n) == "int8"]
    if model == "convnet":
        # conv, depthwise conv (+ the Add, pools and flatten between them) and the Linear all run int8
        assert int8_ops == ["Conv2D", "Conv2D", "Dense"]
        assert float_nodes(g) == []
    else:
        # three convs, the global average pool (a depthwise conv of ones) and the MatMul; only the sigmoid is float
        assert int8_ops == ["Conv2D", "Conv2D", "Conv2D", "Conv2D", "Dense"]
        assert [(n.op, n.attrs.get("fn")) for n in float_nodes(g)] == [("Activation", "sigmoid")]
    assert [g.producer(o).op for o in g.outputs] == ["Dequantize"]

    report = verify(path, samples=SAMPLES)
    row = report["outputs"][0]
    lsb = float(np.asarray(g.tensors[g.producer(g.outputs[0]).inputs[0]].quant.scale))
    assert row["tolerance"] == pytest.approx(lsb + 1e-6)
    assert report["ok"], report
    total = SAMPLES * g.tensors[g.outputs[0]].size
    OFF_BY_ONE[f"{model}-{act}-{'pc' if per_channel else 'pt'}"] = (row["off_by_lsb"], total)
    # Differences are rounding ties, not a bias: a handful of values, never most of them.
    assert row["off_by_lsb"] <= total // 3


def test_report_one_lsb_statistics():
    """Not a check: prints how often our output is one LSB away from onnxruntime (run with -s to see it)."""
    for key, (off, total) in sorted(OFF_BY_ONE.items()):
        print(f"{key:28s} {off:3d} of {total} output values one LSB from onnxruntime")


def test_int16_activations_are_refused_in_one_line(float_models, tmp_path):
    path = quantize(float_models["convnet"], tmp_path / "q16.onnx", quantization.QuantType.QInt16,
                    quantization.QuantType.QInt16)
    one_line_error(tinyc("compile", path, "-o", tmp_path / "out"), "int16", "int8 and uint8 QDQ models only")


def test_asymmetric_uint8_weights_are_refused_in_one_line(float_models, tmp_path):
    path = quantize(float_models["convnet"], tmp_path / "qw.onnx", weights=quantization.QuantType.QUInt8)
    one_line_error(tinyc("compile", path, "-o", tmp_path / "out"), "asymmetrically", "symmetric")
