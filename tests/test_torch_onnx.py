"""PyTorch modules exported with torch.onnx.export (TorchScript exporter and the default dynamo exporter),
compiled by tinyc and checked against onnxruntime with `verify`."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from torch import nn  # noqa: E402

from tinyc.verify import verify  # noqa: E402


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Seeded weights, non-trivial BatchNorm statistics and affine parameters; eval mode."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and m.bias is not None:
            with torch.no_grad():
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    return module.eval()


def conv_bn_relu6(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU6())


class ConvBnNet(nn.Module):
    """Conv2d + BatchNorm2d + ReLU6 blocks, Flatten -> Linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu6(3, 8), conv_bn_relu6(8, 16, stride=2), conv_bn_relu6(16, 8, 5, 2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10))

    def forward(self, x):
        return self.head(self.features(x))


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu6(3, 8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.proj = nn.Conv2d(8, 16, 1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        r = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn2(self.conv2(r)))
        x = torch.relu(self.down(x) + self.proj(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class DepthwiseNet(nn.Module):
    """Depthwise (groups=C) + pointwise convolutions, x.mean((2, 3)) head."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu6(3, 8, stride=2)
        self.dw = conv_bn_relu6(8, 8, groups=8)
        self.pw = conv_bn_relu6(8, 16, k=1)
        self.dw2 = conv_bn_relu6(16, 16, k=5, stride=2, groups=16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.dw2(self.pw(self.dw(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class PoolNet(nn.Module):
    """MaxPool2d / AvgPool2d with padding, ceil_mode and count_include_pad on odd sizes; torch.cat of branches."""

    def __init__(self, avg_ceil_include_pad=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.pools = nn.ModuleList([
            nn.MaxPool2d(3, 2, padding=1),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.AvgPool2d(3, 2, padding=1),                               # count_include_pad=True (torch default)
            nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
            nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=avg_ceil_include_pad),
        ])

    def forward(self, x):
        x = self.conv(x)          # 16x16 -> 14x14: every pool gives 7x7 (6x6 without padding or ceil_mode)
        return torch.cat([p(x) for p in self.pools], dim=1)


class ActivationNet(nn.Module):
    """Hardswish / Hardsigmoid / SiLU / LeakyReLU / Sigmoid / Tanh branches joined with torch.cat."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 12, 3, padding=1)
        self.acts = nn.ModuleList([nn.Hardswish(), nn.Hardsigmoid(), nn.SiLU(), nn.LeakyReLU(0.1), nn.Sigmoid(),
                                   nn.Tanh()])
        self.bn = nn.BatchNorm2d(12 * 6)     # after the activations: stays a BatchNormalization node
        self.mix = nn.Conv2d(12 * 6, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.conv(x) * 2.0     # spread the values over the interesting ranges of the activations
        x = torch.cat([a(x) for a in self.acts], dim=1)
        return self.fc(torch.flatten(self.pool(self.mix(self.bn(x))), 1))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 5, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.c2 = nn.Conv1d(8, 16, 3, stride=2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.c1(x)))
        x = torch.tanh(self.c2(x))
        return self.fc(x.mean(2))


class FeatureMapNet(nn.Module):
    """Image in, feature map out (for --io-layout nhwc): conv, pool, an image-shaped second output."""

    def __init__(self):
        super().__init__()
        self.block = conv_bn_relu6(3, 8, stride=2)
        self.conv = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        f = self.block(x)
        return self.conv(f), torch.flatten(nn.functional.max_pool2d(f, 2), 1)


class ViewHead(nn.Module):
    """x.view(x.size(0), -1): the TorchScript exporter emits a Shape->Gather->Unsqueeze->Concat->Reshape chain."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.fc = nn.Linear(6 * 7 * 7, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


MODELS = {
    "conv_bn_relu6": (ConvBnNet, (1, 3, 16, 16)),
    "residual": (ResidualNet, (1, 3, 16, 16)),
    "depthwise": (DepthwiseNet, (1, 3, 24, 24)),
    "pools": (PoolNet, (1, 3, 16, 16)),
    "activations": (ActivationNet, (1, 4, 10, 10)),
    "conv1d": (Conv1dNet, (1, 4, 32)),
    "feature_map": (FeatureMapNet, (1, 3, 16, 16)),
    "view_head": (ViewHead, (1, 3, 16, 16)),
}

# (model, dynamo) -> reason, for known tinyc bugs (strict: the test fails once the bug is fixed).
XFAIL = {}


def export(name: str, directory, dynamo: bool, opset: int = 17, dynamic_batch: bool = False, **kwargs) -> str:
    cls, shape = MODELS[name]
    model = randomize(cls(**kwargs), seed=sorted(MODELS).index(name))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    path = str(directory / f"{name}_{'dynamo' if dynamo else f'ts{opset}'}.onnx")
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(model, (x,), path, input_names=["input"], dynamo=True, verbose=False)
        else:
            torch.onnx.export(model, (x,), path, input_names=["input"], opset_version=opset, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None)
    return path


def _params(dynamo_models):
    out = []
    for name in MODELS:
        for dynamo in ((False, True) if name in dynamo_models else (False,)):
            key = (name, dynamo)
            marks = [pytest.mark.xfail(reason=XFAIL[key], strict=True)] if key in XFAIL else []
            out.append(pytest.param(name, dynamo, id=f"{name}-{'dynamo' if dynamo else 'torchscript'}",
                                    marks=marks))
    return out


def _summary(report) -> str:
    return "; ".join(f"output {o['index']}: max abs err {o['max_abs_err']:.3g} (tolerance {o['tolerance']:.3g})"
                     for o in report["outputs"])


@pytest.mark.parametrize("name,dynamo", _params({"residual", "activations"}))
def test_torch_model(tmp_path, name, dynamo):
    report = verify(export(name, tmp_path, dynamo))
    assert report["ok"], _summary(report)


def test_avgpool_ceil_mode_count_include_pad(tmp_path):
    """torch's default count_include_pad=True with ceil_mode=True and no padding: the flag changes nothing
    without padding (the ceil_mode overhang is never counted), so tinyc must compile and match it."""
    report = verify(export("pools", tmp_path, False, avg_ceil_include_pad=True))
    assert report["ok"], _summary(report)


@pytest.mark.parametrize("name", ["feature_map", "conv_bn_relu6"])
def test_nhwc_io_layout(tmp_path, name):
    report = verify(export(name, tmp_path, False), io_layout="nhwc")
    assert report["ok"], _summary(report)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_view_flatten_dynamic_batch(tmp_path, opset):
    """Exported with a dynamic batch axis, x.view(x.size(0), -1) stays a Shape->Gather->Unsqueeze->Concat->
    Reshape chain; at opsets 11 and 13 onnx's shape inference cannot see through it to the Reshape's output
    shape, and tinyc must still find it (batch fixed to 1)."""
    path = export("view_head", tmp_path, False, opset=opset, dynamic_batch=True)
    assert "Shape" in {n.op_type for n in onnx.load(path).graph.node}
    report = verify(path)
    assert report["ok"], _summary(report)


@pytest.mark.parametrize("io_layout", ["nchw", "nhwc"])
def test_quantized_nchw_model_is_bit_exact(tmp_path, io_layout):
    """--quantize int8 on an NCHW image model: TFLite runs the int8 graph tinyc made, which takes the C API's own
    arrays (NCHW, or NHWC with --io-layout nhwc); nothing may be transposed on the way to it (regression: the
    samples were transposed as if for onnxruntime, and TFLite failed on the wrong shape)."""
    path = export("view_head", tmp_path, False)
    calib = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    if io_layout == "nhwc":
        calib = calib.transpose(0, 2, 3, 1)
    report = verify(path, samples=4, quantize="int8", calib=[calib], io_layout=io_layout)
    assert report["ok"] and report["mismatched_bytes"] == 0, _summary(report)
