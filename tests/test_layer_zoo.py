"""Issue 18's zoo (tests/layer_zoo.py): deployment-style nets beyond plain CNNs, each trained a few seeded steps.

Every model: `tinyc verify` in float32 against its framework (Keras, or onnxruntime for the PyTorch exports), and
in int8 bit-exact against TFLite's reference kernels on every layer — the Keras models as TFLiteConverter makes
them integer (LayerNormalization keeps float islands), the PyTorch exports and the Keras LSTM (whose int8
conversion crashes TFLiteConverter) through tinyc's quantizer (verify --quantize int8, whose oracle is TFLite
running the int8 graph tinyc made); the arena within 2% of its lower
bound. With TINYC_FULL: each runs under QEMU on the Cortex-M0+ (pico) and the Cortex-M33 (pico2), float32 and
int8, outputs equal to the host build and the reference runtime.
"""
import importlib.util
import os
import threading

import pytest

if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("onnxruntime") is None:
    pytest.skip("the layer zoo needs tensorflow and onnxruntime", allow_module_level=True)

import layer_zoo  # noqa: E402
from tinyc.compiler import compile_model  # noqa: E402
from tinyc.verify import verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
HAVE_TORCH = importlib.util.find_spec("torch") is not None
TORCH = layer_zoo.TORCH if HAVE_TORCH else ()
# TFLiteConverter does not read ONNX, and crashes on a Keras 3 LSTM's int8 conversion: their int8 form is tinyc's
# quantizer's.
INT8_BY_TINYC = {*TORCH, *layer_zoo.KERAS_INT8_BY_TINYC}
# tinyc's quantizer takes no Normalize (LayerNorm) yet, and TFLiteConverter does not read ONNX: float only.
FLOAT_ONLY = {"torch_kws_transformer"}
SAMPLES_INT8 = 10 if FULL else 3


class _Zoo:
    """Builds each model once per session (Keras: .keras and the converter's int8 .tflite; PyTorch: .onnx)."""

    def __init__(self, directory):
        self.directory, self.paths, self.lock = directory, {}, threading.Lock()

    def path(self, name, fmt):
        with self.lock:
            if (name, fmt) not in self.paths:
                if name in layer_zoo.KERAS:
                    import int8_zoo
                    model = layer_zoo.build_keras(name)
                    keras_path = self.directory / f"{name}.keras"
                    model.save(keras_path)
                    self.paths[(name, "keras")] = str(keras_path)
                    if name not in INT8_BY_TINYC and name not in FLOAT_ONLY:
                        self.paths[(name, "tflite")] = int8_zoo.to_int8_tflite(model,
                                                                               self.directory / f"{name}.tflite")
                else:
                    self.paths[(name, "onnx")] = layer_zoo.export_torch(name, self.directory / f"{name}.onnx")
            return self.paths[(name, fmt)]


@pytest.fixture(scope="session")
def layer_models(tmp_path_factory):
    return _Zoo(tmp_path_factory.mktemp("layer_zoo"))


def float_path(zoo, name):
    return zoo.path(name, "keras" if name in layer_zoo.KERAS else "onnx")


def calibration(zoo, name):
    from tinyc.frontends import load_model
    g = load_model(float_path(zoo, name))
    return layer_zoo.calibration(g.tensors[g.inputs[0]].shape)


def int8_compile_args(zoo, name):
    """(model path, compile_model / verify keyword arguments) of the model's int8 form."""
    if name in INT8_BY_TINYC:
        return float_path(zoo, name), dict(quantize="int8", calib=calibration(zoo, name))
    return zoo.path(name, "tflite"), {}


def check_arena(compiled):
    plan = compiled.plan
    assert plan.lower_bound <= plan.arena_bytes <= 1.02 * plan.lower_bound, (plan.arena_bytes, plan.lower_bound,
                                                                             plan.variants)


@pytest.mark.parametrize("name", [*layer_zoo.KERAS, *TORCH])
def test_float_verifies_against_its_framework(layer_models, name):
    path = float_path(layer_models, name)
    report = verify(path, samples=3, seed=5)
    assert report["ok"], report["outputs"]
    assert report["oracle"] == ("keras" if name in layer_zoo.KERAS else "onnxruntime")
    check_arena(compile_model(path))


@pytest.mark.parametrize("name", [n for n in (*layer_zoo.KERAS, *TORCH) if n not in FLOAT_ONLY])
def test_int8_bit_exact_with_tflite_on_every_layer(layer_models, name):
    path, kwargs = int8_compile_args(layer_models, name)
    report = verify(path, samples=SAMPLES_INT8, seed=7, per_layer=True, **kwargs)
    assert report["mismatched_bytes"] == 0, report["outputs"]
    bad = [row for row in report["layers"] if not row["ok"]]
    assert not bad, bad
    compiled = compile_model(path, **kwargs)
    g = compiled.plan.graph
    # every node's output checked (the KWS LSTM is two: the integer LSTM read at its last step, the Dense head)
    assert report["ok"] and len(report["layers"]) >= min(5, len(g.nodes))
    if any(n.op == "LSTM" for n in g.nodes):    # TFLite's integer LSTM: int16 cell state, its h checked on its own
        assert any(row["op"] == "LSTM" for row in report["layers"]), report["layers"]
        assert {compiled.quantized.tensors[n.inputs[5]].dtype for n in compiled.quantized.nodes
                if n.op == "LSTM"} == {"int16"}
    assert {g.tensors[t].dtype for t in (*g.inputs, *g.outputs)} == {"int8"}
    check_arena(compiled)


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_torch_layernorm_is_refused_by_tinycs_quantizer_in_one_line(layer_models):
    from tinyc.errors import TinycError
    path = float_path(layer_models, "torch_kws_transformer")
    with pytest.raises(TinycError, match="does not quantize op Normalize"):
        compile_model(path, quantize="int8", calib=calibration(layer_models, "torch_kws_transformer"))


@pytest.mark.skipif(not FULL, reason="QEMU runs of the layer zoo: TINYC_FULL=1")
@pytest.mark.parametrize("kind", ["float", "int8"])
@pytest.mark.parametrize("board_name", ["pico", "pico2"])     # Cortex-M0+, Cortex-M33
@pytest.mark.parametrize("name", [*layer_zoo.KERAS, *TORCH])
def test_emulated_runs_match(layer_models, tmp_path, name, board_name, kind):
    from tinyc.boards import load_board
    from tinyc.firmware.run import run_emulated
    if kind == "int8" and name in FLOAT_ONLY:
        pytest.skip("no int8 form (see FLOAT_ONLY)")
    path, kwargs = (float_path(layer_models, name), {}) if kind == "float" else int8_compile_args(layer_models, name)
    compiled = compile_model(path, name, **kwargs)
    r = run_emulated(compiled, load_board(board_name), path, str(tmp_path))
    assert r["outputs_match"], r["outputs"]
    assert r["macs"] == compiled.library.macs and r["instructions"] > r["macs"] // 4


def test_converter_int8_upsampling_tile_v3_runs_on_the_reference_kernels(layer_models):
    """The converter writes the autoencoder's int8 UpSampling2D nearest as TILE version 3, which BUILTIN_REF
    registers only up to version 2 (the same kernel as the default resolver's): the oracle loads it as version 2,
    so verify checks the converter's model itself (test_int8_bit_exact_... above)."""
    from tinyc.frontends.tflite_import import _read, _schema
    from tinyc.reference import _ref_loadable
    S = _schema()
    path = layer_models.path("conv_autoencoder", "tflite")
    _, model = _read(S, path)

    def tile_versions(m):
        return [c.version for c in m.operatorCodes
                if max(c.builtinCode, c.deprecatedBuiltinCode) == S.BuiltinOperator.TILE]
    assert tile_versions(model) == [3]
    patched = S.ModelT.InitFromObj(S.Model.GetRootAs(_ref_loadable(path), 0))
    assert tile_versions(patched) == [2] and len(patched.operatorCodes) == len(model.operatorCodes)
