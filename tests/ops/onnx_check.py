"""ONNX models in op tests: the graph builder of tests/test_onnx_helper_models.py, and `verify` against
onnxruntime (skipped where onnxruntime is not installed)."""
import pytest


def onnx_tools():
    """(onnx, Builder, summary) — the test skips without onnxruntime."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from test_onnx_helper_models import Builder, _summary
    return onnx, Builder, _summary


def verify_onnx(tmp_path, model, name):
    """Save `model` and check tinyc's C against onnxruntime on two random samples."""
    from tinyc.verify import verify
    onnx, _, summary = onnx_tools()
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    report = verify(path, samples=2)
    assert report["ok"], summary(report)
