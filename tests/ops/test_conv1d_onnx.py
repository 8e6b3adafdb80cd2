"""ONNX's 1-D convolution and pooling (rank-3 Conv / MaxPool / AveragePool: dilated, strided, depthwise and grouped)
from a PyTorch export, in float32 against onnxruntime and as onnxruntime's QDQ int8 model (every layer int8,
within one LSB of onnxruntime, docs/onnx-qdq.md); the C under AddressSanitizer and UBSan (tinyc.verify)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
quantization = pytest.importorskip("onnxruntime.quantization")

from tinyc.codegen.emit import kernel_family  # noqa: E402
from tinyc.compiler import compile_model  # noqa: E402
from tinyc.verify import verify  # noqa: E402

SHAPE = (1, 4, 32)


class Net1d(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dilated = torch.nn.Conv1d(4, 8, 3, padding=2, dilation=2)
        self.depthwise = torch.nn.Conv1d(8, 8, 5, stride=2, padding=2, groups=8)
        self.grouped = torch.nn.Conv1d(8, 8, 3, groups=2)

    def forward(self, x):
        h = self.depthwise(torch.relu(self.dilated(x)))
        h = torch.relu(self.grouped(torch.nn.functional.max_pool1d(h, 2)))
        return torch.nn.functional.avg_pool1d(h, 2)


class Calibration(quantization.CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.samples = iter([{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(32)])

    def get_next(self):
        return next(self.samples, None)


def test_onnx_1d_float_and_qdq_int8_match_onnxruntime(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / "net1d.onnx")
    torch.onnx.export(Net1d().eval(), torch.randn(SHAPE), path, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"])
    assert verify(path, samples=2)["ok"]
    q = str(tmp_path / "net1d_qdq.onnx")
    quantization.quantize_static(path, q, Calibration(), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8, per_channel=True)
    g = compile_model(q).graph
    assert [n.op for n in g.nodes if n.op.endswith(("Conv2D", "Pool2D"))] == \
        ["Conv2D", "Conv2D", "MaxPool2D", "Conv2D", "AvgPool2D"]
    assert all(kernel_family(g, n) == "int8" for n in g.nodes)
    report = verify(q, samples=10)
    assert report["ok"], report["outputs"]
