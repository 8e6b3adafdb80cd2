"""The worked examples in examples/ run end to end and keep their promises (README "Examples"): the emulated
outputs equal the reference runtimes', and the figures they print are computed from those runs."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

needs_arm = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                               reason="needs arm-none-eabi-gcc and qemu-system-arm")


def test_binary_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

    from common import binary_metrics
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    m = binary_metrics(truth, pred)
    tn, fp, fn, tp = confusion_matrix(truth, pred).ravel()
    assert m["confusion"] == [[tp, fn], [fp, tn]]
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert m["precision"] == pytest.approx(precision_score(truth, pred))
    assert m["recall"] == pytest.approx(recall_score(truth, pred))
    assert m["f1"] == pytest.approx(f1_score(truth, pred))


def test_iris_networks_have_the_papers_layers():
    import iris
    x_train, x_test, y_train, y_test = iris.iris_data()
    assert (len(x_train), len(x_test)) == (80, 20) and y_test.sum() == 10
    model = iris.train("8 neurons", x_train, y_train, epochs=1)
    assert [(layer.units, layer.activation.__name__) for layer in model.layers[1:]] == iris.NETWORKS["8 neurons"]


@needs_arm
def test_iris_example(tmp_path):
    """Both networks: the emulated float predictions equal Keras's on every test flower, both int8 variants are
    bit-exact with TFLite (the example stops otherwise), and training worked."""
    import iris
    results = iris.main(["--out", str(tmp_path)])
    assert [r["network"] for r in results] == ["8 neurons", "6 neurons"]
    for res in results:
        keras_row, float_row, tflite_row, ptq_row = res["rows"]
        assert np.array_equal(float_row["pred"], keras_row["pred"])
        assert np.max(np.abs(float_row["p"] - res["keras_p"])) <= 1e-4 * 2
        assert keras_row["accuracy"] >= 0.85 and float_row["accuracy"] == keras_row["accuracy"]
        for row in (tflite_row, ptq_row):
            assert row["accuracy"] >= 0.8 and 0 < row["instructions"] < float_row["instructions"]
        assert sum(sum(r) for r in float_row["confusion"]) == 20


@needs_arm
def test_demo(tmp_path, monkeypatch, capfd):
    import demo
    monkeypatch.setattr(demo, "OUT", tmp_path)
    res = demo.main()
    assert res["same_as_keras"] and res["run"]["outputs_match"] and res["run"]["samples"] == 20
    assert res["run"]["board"] == "pico" and res["run"]["instructions"] > 0
    assert (tmp_path / "iris" / "firmware" / "build" / "firmware.uf2").stat().st_size % 512 == 0
    out = capfd.readouterr().out
    assert "accuracy" in out and "demo finished" in out and "fits" in out


@needs_arm
def test_digits_cnn_example(tmp_path):
    """The int8 CNN fits 10 KB of flash with its code, constants and library helpers on the M0+ and the M4, its
    emulated outputs are bit-exact with TFLite (the example stops otherwise), it lost no more than a point of
    accuracy, and the report shows the BatchNorm and ReLU fused into the convolutions."""
    import digits_cnn
    res = digits_cnn.main(["--out", str(tmp_path)])
    assert res["float_accuracy"] >= 0.9 and res["float_accuracy"] - res["int8_accuracy"] <= 0.01
    assert res["run"]["samples"] == 360 and res["run"]["outputs_match"]
    for size in res["sizes"]:
        assert size["total"] == size["code_bytes"] + size["constant_bytes"] + size["helper_bytes"]
        assert size["total"] <= digits_cnn.FLASH_GOAL and size["constant_bytes"] >= 1900   # the weights are in
    convs = [row for row in res["report"]["layers"] if row["op"] == "Conv2D"]
    assert [row["fused"] for row in convs[:2]] == [["BatchNorm", "relu"]] * 2


@needs_arm
def test_mnist_cnn_torch_example(tmp_path):
    import mnist_cnn_torch
    res = mnist_cnn_torch.main(["--out", str(tmp_path), "--samples", "20", "--epochs", "1"])
    for kind in ("float32", "int8"):
        d = res[kind]
        assert d["run"]["outputs_match"] and d["run"]["samples"] == 20 and d["run"]["core"] == "cortex-m7"
        assert d["size"]["fits"] and d["size"]["flash_bytes"] > d["compiled"].library.weight_bytes
        # the NCHW input of one channel needs no Transpose (alias_reshape: it moves only an axis of size 1)
        assert [row["op"] for row in d["run"]["layers"]] == ["Conv2D", "MaxPool2D", "Conv2D", "MaxPool2D",
                                                             "Dense", "Dense"]
    assert res["int8"]["size"]["flash_bytes"] < res["float32"]["size"]["flash_bytes"] / 3


@needs_arm
def test_mobilenetv2_pico2_example(tmp_path):
    import mobilenetv2_pico2
    res = mobilenetv2_pico2.main(["--out", str(tmp_path)])
    r = res["report"]
    assert r["fits"] and r["arena_bytes"] <= 1.02 * r["arena_lower_bound_bytes"]
    assert r["arena_bytes"] < r["variants"]["plain"]["arena_bytes"]
    assert r["layers"][r["peak_step"]]["in_place"]            # the peak layer writes over its input
    assert res["svg"].read_text().startswith("<svg") and "<html" in res["html"].read_text().lower()
    assert res["run"]["outputs_match"] and res["run"]["core"] == "cortex-m33" and len(res["run"]["layers"]) == 65


@needs_arm
@pytest.mark.skipif(not __import__("os").environ.get("TINYC_FULL"), reason="trains two CNNs, 8 QEMU runs: TINYC_FULL=1")
def test_int4_weights_example(tmp_path):
    import int4_weights
    rows = int4_weights.main(["--out", str(tmp_path)])
    by = {(r["model"], r["scheme"]): r for r in rows}
    for model in ("digits CNN", "MNIST CNN"):
        i8, i4 = by[(model, "int8")], by[(model, "int4")]
        assert i4["weight_bytes"] < 0.65 * i8["weight_bytes"] and i4["macs"] == i8["macs"]
        assert abs(i4["accuracy"] - i8["accuracy"]) <= 0.03
        for board in int4_weights.BOARDS:
            assert i4[board]["flash"] < i8[board]["flash"]
