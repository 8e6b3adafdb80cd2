"""`tinyc verify` falls back to TFLite Micro's interpreter when TFLite's interpreter rejects a model at load or
allocation time, says so, and keeps bit-exactness as the bar.

The case from the field: TFLM's person_detect.tflite carries `quantized_dimension` 3 on single-scale tensors of
rank < 4; TFLite refuses it ("quantized_dimension must be in range [0, 1)"), TFLite Micro ignores it. That file
is not reachable offline, so the test makes the same defect: a small person_detect-like conv net (conv,
depthwise, 1x1 conv, average pool, 1x1 conv head, reshape, softmax) converted to int8 with a representative
dataset, then `quantized_dimension = 3` written on every single-scale tensor through TF's flatbuffer schema.
"""
import importlib.util
import json
import platform
import sys

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("the TFLite tests need tensorflow", allow_module_level=True)
if importlib.util.find_spec("tflite_micro") is None:
    if sys.platform == "linux" and platform.machine() == "x86_64":
        pytest.fail("tflite-micro is missing: pip install -e '.[test]' (pyproject.toml pins it)", pytrace=False)
    pytest.skip("tflite-micro publishes wheels for Linux x86_64 only", allow_module_level=True)

import int8_zoo  # noqa: E402
from model_zoo import randomize  # noqa: E402
from test_cli import tinyc  # noqa: E402

from tinyc import reference  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.verify import verify  # noqa: E402


def person_like():
    """person_detect's op mix at 24x24x1: conv s2, depthwise, 1x1 conv, depthwise s2, average pool, 1x1 conv
    head, reshape, softmax (no FULLY_CONNECTED, no LOGISTIC/TANH)."""
    keras = int8_zoo._keras()
    L = keras.layers
    x = keras.Input((24, 24, 1))
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu6")(h)
    h = L.Conv2D(16, 1, activation="relu6")(h)
    h = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6")(h)
    h = L.Conv2D(16, 1, activation="relu6")(h)
    h = L.AveragePooling2D(6)(h)
    h = L.Conv2D(2, 1)(h)
    h = L.Reshape((2,))(h)
    return keras.Model(x, L.Softmax()(h), name="person_like")


def set_quantized_dimension(src, dst, axis=3) -> int:
    """Write `axis` as quantized_dimension of every single-scale tensor (as in TFLM's person_detect.tflite)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(src.read_bytes(), 0))
    patched = 0
    for t in m.subgraphs[0].tensors:
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) == 1:
            q.quantizedDimension = axis
            patched += 1
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(bytes(b.Output()))
    return patched


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tflm")
    keras = int8_zoo._keras()
    keras.utils.set_random_seed(0)
    plain = d / "person_like.tflite"
    int8_zoo.to_int8_tflite(randomize(person_like(), 0), plain)
    patched = d / "person_like_qd3.tflite"
    assert set_quantized_dimension(plain, patched) >= 8
    # a model with FULLY_CONNECTED (TFLite Micro's requantization differs there: docs/int8-numerics.md 5)
    fc = d / "pad_pool_valid.tflite"
    int8_zoo.to_int8_tflite(int8_zoo.build("pad_pool_valid"), fc)
    fc_patched = d / "pad_pool_valid_qd3.tflite"
    set_quantized_dimension(fc, fc_patched)
    return dict(plain=plain, patched=patched, fc_patched=fc_patched)


def test_tflite_rejects_the_patched_model(models):
    import tensorflow as tf
    tf.lite.Interpreter(model_path=str(models["plain"])).allocate_tensors()
    with pytest.raises(ValueError, match="quantized_dimension must be in range"):
        tf.lite.Interpreter(model_path=str(models["patched"])).allocate_tensors()


def test_verify_falls_back_to_tflite_micro_bit_exact(models):
    res = tinyc("verify", models["patched"], "--samples", "20", "--seed", "7")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    oracle = next(line for line in lines if line.startswith("oracle: "))
    assert "TFLite Micro" in oracle and "rejected the model: quantized_dimension must be in range [0, 2)" in oracle
    assert "0 differing int8 value(s), max difference 0 LSB ok" in res.stdout
    assert lines[-1].endswith("ok on 20 sample(s)")

    res = tinyc("verify", models["patched"], "--samples", "20", "--seed", "7", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)         # TFLite Micro prints nothing on stdout that would spoil the JSON
    assert r["oracle"] == "tflite-micro" and r["oracle_version"] == reference.TFLM_PACKAGE.split("==")[1]
    assert r["oracle_reason"].startswith("TFLite's interpreter rejected the model: quantized_dimension")
    assert r["ok"] and r["mismatched_bytes"] == 0 and r["max_abs_diff"] == 0 and r["samples"] == 20


def test_unpatched_model_keeps_the_tflite_oracle(models):
    res = tinyc("verify", models["plain"], "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["oracle"] == "tflite" and "oracle_reason" not in r and r["mismatched_bytes"] == 0


def test_per_layer_through_tflite_micro(models):
    """TFLite Micro's interpreter keeps every tensor (kPreserveAllTensors), so every layer is compared."""
    r = verify(str(models["patched"]), samples=5, seed=3, per_layer=True)
    assert r["oracle"] == "tflite-micro" and r["ok"]
    assert all(row["ok"] and row["mismatched_bytes"] == 0 for row in r["layers"])
    # a fused block's row stands for its layers (their intermediates are never whole, so not traced)
    assert sum(len(row.get("block_layers", ())) or 1 for row in r["layers"]) >= 8
    assert r["first_divergence"] is None


def test_tflite_micro_differences_are_reported_not_hidden(models):
    """TFLite Micro's FULLY_CONNECTED (fixed-point requantization) differs from TFLite's reference kernels, which
    tinyc follows: against TFLite Micro the result says MISMATCH, and why, and per layer the Dense comes first
    (the TANH after it may then differ by 2 LSB)."""
    r = verify(str(models["fc_patched"]), samples=20, seed=7, per_layer=True)
    assert r["oracle"] == "tflite-micro"
    assert r["mismatched_bytes"] > 0 and not r["ok"]
    assert 1 <= r["max_abs_diff"] <= 2
    assert "FULLY_CONNECTED" in r["oracle_note"]
    first = next(row for row in r["layers"] if not row["ok"])
    assert first["op"] == "Dense" and r["first_divergence"] == first["layer"]
    res = tinyc("verify", models["fc_patched"], "--samples", "20", "--seed", "7")
    assert res.returncode == 1 and "MISMATCH" in res.stdout.splitlines()[-1]
    assert any(line.startswith("note: TFLite Micro's FULLY_CONNECTED") for line in res.stdout.splitlines())


def test_only_loading_errors_fall_back(models, monkeypatch):
    """A failure while TFLite runs the model is an error, not a reason to switch oracles; without `fallback`
    (e.g. `tinyc run --emulate`) a rejected model is a one-line error; both rejections are named together."""
    x = [[np.zeros((1, 24, 24, 1), np.int8)]]
    called = []
    monkeypatch.setattr(reference, "run_tflite_micro", lambda *a: called.append(a) or ([], []))

    def fails_while_running(*a):
        raise RuntimeError("Node number 3 (CONV_2D) failed to invoke.")
    with monkeypatch.context() as m:
        m.setattr(reference, "run_tflite", fails_while_running)
        with pytest.raises(TinycError, match="reference runtime failed.*failed to invoke"):
            reference.run_reference(str(models["plain"]), x, fallback=True)
    assert not called
    with pytest.raises(TinycError, match="TFLite's interpreter rejected .*quantized_dimension"):
        reference.run_reference(str(models["patched"]), x)
    assert not called

    def tflm_rejects(*a):
        raise TinycError("TFLite Micro's interpreter rejected it as well: Didn't find op for builtin opcode")
    monkeypatch.setattr(reference, "run_tflite_micro", tflm_rejects)
    with pytest.raises(TinycError, match="quantized_dimension.*TFLite Micro's interpreter rejected it as well"):
        reference.run_reference(str(models["patched"]), x, fallback=True)


def test_tflite_error_text_is_split_and_shortened():
    e = ValueError("quantized_dimension must be in range [0, 2). Was 3.Tensor 26 has invalid quantization "
                   "parameters.quantized_dimension must be in range [0, 1). Was 3.Tensor 3 has invalid quantization "
                   "parameters.")
    assert reference._tf_message(e) == ("quantized_dimension must be in range [0, 2). Was 3. Tensor 26 has invalid "
                                        "quantization parameters. ...")


def test_emulated_run_checks_against_tflite_micro_too(models, tmp_path):
    """`tinyc run --emulate` shares verify's oracle: the patched model runs on the emulated M0+ and its outputs are
    checked against TFLite Micro, which the text and the JSON name."""
    res = tinyc("run", models["patched"], "--board", "pico", "--emulate", "--no-profile", "--json")
    assert res.returncode == 0, res.stdout[-800:] + res.stderr[-800:]
    r = json.loads(res.stdout)
    assert r["oracle"] == "tflite-micro" and r["outputs_match"]
    assert all(o["matches_reference"] and o["max_abs_err_reference"] == 0 for o in r["outputs"])
    res = tinyc("run", models["patched"], "--board", "pico", "--emulate", "--no-profile")
    assert res.returncode == 0 and "reference (TFLite Micro) match" in res.stdout
    assert "oracle: TFLite Micro" in res.stdout
