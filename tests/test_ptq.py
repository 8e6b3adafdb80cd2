"""tinyc's post-training quantization (`--quantize int8 --calib`): classifiers trained here on scikit-learn's
bundled iris and digits data keep their accuracy in int8 (the generated C, run on the host, is what is
measured), the C is bit-exact with TFLite running tinyc's int8 graph, and bad requests fail in one line.
TFLite's own post-training quantization of the same models is reported beside tinyc's."""
import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("sklearn") is None or importlib.util.find_spec("tensorflow") is None:
    pytest.skip("PTQ tests need scikit-learn and tensorflow", allow_module_level=True)

from test_cli import one_line_error, tinyc  # noqa: E402

from tinyc.compiler import compile_model  # noqa: E402
from tinyc.verify import run_generated, verify  # noqa: E402


def _keras():
    from tinyc.keras_runtime import import_keras
    return import_keras()


def _split(x, y, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    """Versicolor vs virginica (the hard pair), standardized features, a 4-4-2 MLP. (On this 20-sample split
    even logistic regression scores 0.80.)"""
    from sklearn.datasets import load_iris
    keras = _keras()
    data = load_iris()
    keep = data.target > 0
    x = data.data[keep].astype(np.float32)
    y = (data.target[keep] - 1).astype(np.int64)
    x = (x - x.mean(0)) / x.std(0)
    xtr, ytr, xte, yte = _split(x, y)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=100, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("iris") / "iris.keras"
    model.save(path)
    return dict(path=str(path), model=model, xtr=xtr, ytr=ytr, xte=xte, yte=yte)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """8x8 digits, a Conv+BN+ReLU / pool / Dense CNN."""
    from sklearn.datasets import load_digits
    keras = _keras()
    L = keras.layers
    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[..., None]
    y = data.target.astype(np.int64)
    xtr, ytr, xte, yte = _split(x, y)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(12, 3, padding="same", use_bias=False)(inp)))
    h = L.MaxPooling2D(2)(h)
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(h)))
    h = L.Flatten()(L.MaxPooling2D(2)(h))
    model = keras.Model(inp, L.Dense(10, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=12, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("digits") / "digits.keras"
    model.save(path)
    return dict(path=str(path), model=model, xtr=xtr, ytr=ytr, xte=xte, yte=yte)


def _accuracy_float(d):
    return float(np.mean(np.asarray(d["model"](d["xte"], training=False)).argmax(-1) == d["yte"]))


def _accuracy_tinyc(d, path=None):
    c = compile_model(path or d["path"], quantize="int8", calib=[d["xtr"]])
    (out,) = run_generated(c, [d["xte"]])
    assert out.dtype == np.int8
    return float(np.mean(out.reshape(len(d["yte"]), -1).argmax(-1) == d["yte"]))


def _accuracy_tflite_ptq(d, tmp_path):
    keras = _keras()
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(d["model"])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in d["xtr"])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path = tmp_path / "tflite_ptq.tflite"
    path.write_bytes(conv.convert())
    del keras
    c = compile_model(str(path))   # tinyc runs TFLite's int8 model too (bit-exact with TFLite)
    (out,) = run_generated(c, [d["xte"]])
    return float(np.mean(out.reshape(len(d["yte"]), -1).argmax(-1) == d["yte"]))


def test_iris_int8_within_one_sample(iris, tmp_path):
    fl, q8, tfl = _accuracy_float(iris), _accuracy_tinyc(iris), _accuracy_tflite_ptq(iris, tmp_path)
    n = len(iris["yte"])
    print(f"\niris ({n} held-out): float {fl:.3f}, tinyc int8 {q8:.3f}, TFLite PTQ int8 {tfl:.3f}")
    assert abs(fl - q8) * n <= 1 + 1e-9
    assert fl >= 0.75


def test_digits_int8_within_one_point(digits, tmp_path):
    fl, q8, tfl = _accuracy_float(digits), _accuracy_tinyc(digits), _accuracy_tflite_ptq(digits, tmp_path)
    print(f"\ndigits ({len(digits['yte'])} held-out): float {fl:.4f}, tinyc int8 {q8:.4f}, TFLite PTQ int8 {tfl:.4f}")
    assert fl - q8 <= 0.01
    assert fl >= 0.9


def test_ptq_c_is_bit_exact_with_tflite_on_tinycs_int8_graph(digits):
    report = verify(digits["path"], inputs=[digits["xte"][:20]], quantize="int8", calib=[digits["xtr"][:200]],
                    per_layer=True)
    assert report["ok"] and report["mismatched_bytes"] == 0
    assert all(row["ok"] for row in report["layers"]) and len(report["layers"]) >= 5


def test_onnx_model_quantizes_too(digits, tmp_path):
    import tensorflow as tf
    import tf2onnx
    spec = [tf.TensorSpec((1, 8, 8, 1), tf.float32, name="image")]
    fn = tf.function(lambda x: digits["model"](x, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    path = tmp_path / "digits.onnx"
    path.write_bytes(proto.SerializeToString())
    assert abs(_accuracy_tinyc(digits, str(path)) - _accuracy_float(digits)) <= 0.01
    report = verify(str(path), samples=10, quantize="int8", calib=[digits["xtr"][:200]])
    assert report["ok"] and report["mismatched_bytes"] == 0


def test_cli_quantize(iris, tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, iris["xtr"])
    res = tinyc("compile", iris["path"], "-o", tmp_path / "o", "--quantize", "int8", "--calib", calib)
    assert res.returncode == 0, res.stderr
    assert "calibrating" in res.stderr and "int8 vs float on the 80 calibration sample(s)" in res.stdout
    assert "int iris_invoke(const int8_t *input0, int8_t *output0);" in (tmp_path / "o" / "iris.h").read_text()
    res = tinyc("compile", iris["path"], "-o", tmp_path / "r", "--quantize", "int8", "--calib", "random")
    assert res.returncode == 0 and "WARNING: calibrating on random data" in res.stderr
    res = tinyc("verify", iris["path"], "--quantize", "int8", "--calib", calib, "--json")
    assert res.returncode == 0 and '"mismatched_bytes": 0' in res.stdout


def test_cli_quantize_errors(iris, tmp_path):
    one_line_error(tinyc("compile", iris["path"], "-o", tmp_path / "a", "--quantize", "int8"), "--calib")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 3), np.float32))
    one_line_error(tinyc("compile", iris["path"], "-o", tmp_path / "b", "--quantize", "int8", "--calib", wrong),
                   "whole samples")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    one_line_error(tinyc("compile", iris["path"], "-o", tmp_path / "c", "--quantize", "int8", "--calib", bad),
                   "calibration")
    keras = _keras()
    x = keras.Input((4,))
    elu = keras.Model(x, keras.layers.Dense(3, activation="elu")(x))
    p = tmp_path / "elu.keras"
    elu.save(p)
    calib = tmp_path / "calib.npy"
    np.save(calib, iris["xtr"])
    one_line_error(tinyc("compile", p, "-o", tmp_path / "d", "--quantize", "int8", "--calib", calib), "elu")
