"""End-to-end matrix: every model of tests/model_zoo.py, as .keras and as .onnx (and .h5 where listed), compiled
to C, built with sanitizers, run, and compared with its reference runtime (Keras / onnxruntime) by `verify`."""
import importlib.util

import pytest

if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tf2onnx") is None:
    pytest.skip("the model matrix needs keras and tf2onnx", allow_module_level=True)

import model_zoo  # noqa: E402

from tinyc.verify import verify  # noqa: E402

# (model, format) -> reason, for known tinyc bugs (strict: the test fails once the bug is fixed).
XFAIL = {}

CASES = [pytest.param(name, fmt, id=f"{name}-{fmt}",
                      marks=[pytest.mark.xfail(reason=XFAIL[name, fmt], strict=True)] if (name, fmt) in XFAIL else [])
         for name in model_zoo.ZOO for fmt in model_zoo.formats(name)]


def _summary(report) -> str:
    outs = ", ".join(f"output {o['index']}: err {o['max_abs_err']:.3g} (tol {o['tolerance']:.3g})"
                     for o in report["outputs"])
    return f"{report['model']}: max_abs_err {report['max_abs_err']:.3g}; {outs}"


def test_zoo_size():
    assert len(model_zoo.ZOO) >= 16


@pytest.mark.parametrize("name,fmt", CASES)
def test_model_matches_reference(zoo, name, fmt):
    report = verify(zoo.path(name, fmt))
    assert report["outputs"], "no outputs were compared"
    assert report["ok"], _summary(report)


@pytest.mark.parametrize("fmt", model_zoo.FORMATS)
def test_residual_per_layer(zoo, fmt):
    report = verify(zoo.path("cnn_residual", fmt), per_layer=True)
    assert report["ok"], _summary(report)
    bad = [row for row in report["layers"] if not row["ok"]]
    assert report["first_divergence"] is None, f"first divergence at {report['first_divergence']}: {bad}"
    assert len(report["layers"]) >= 4, f"only {len(report['layers'])} layer(s) compared: {report['layers']}"


@pytest.mark.parametrize("name,fmt", CASES)
def test_arena_within_two_percent_of_its_lower_bound(zoo, name, fmt):
    from tinyc.compiler import compile_model
    plan = compile_model(zoo.path(name, fmt), options=dict(fusion="none")).plan     # layer by layer
    assert plan.lower_bound <= plan.arena_bytes <= 1.02 * plan.lower_bound, plan.variants
    assert plan.arena_bytes <= min(v["arena_bytes"] for v in plan.variants.values())
    # the default plan (fused blocks where they lower the arena) is never larger
    assert compile_model(zoo.path(name, fmt)).plan.arena_bytes <= plan.arena_bytes
