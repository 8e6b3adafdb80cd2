"""Hybrid (dynamic-range) TFLite models: float activations, int8 weights, the input quantized on the fly as TFLite's
hybrid kernels do (tinyc/ops/hybrid.py, docs/hybrid-numerics.md). The models come from TF's converter with
`optimizations = [tf.lite.Optimize.DEFAULT]` and no representative dataset; the symmetric FULLY_CONNECTED variant
(the converter writes `asymmetric_quantize_inputs` true) is the converter's model with that option cleared. The
oracle is TFLite's interpreter with its reference kernels (BUILTIN_REF), float tolerance 1e-4 (1 + max |ref|); the
C runs on the host under ASan/UBSan (tinyc.verify). With TINYC_FULL: the MLPerf Tiny KWS DS-CNN and FC autoencoder
as hybrid models, and QEMU runs on the Cortex-M0+ and M4.
"""
import importlib.util
import os
import shutil

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("the TFLite tests need tensorflow", allow_module_level=True)

from tinyc import interp  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.frontends.tflite_import import load_tflite  # noqa: E402
from tinyc.verify import verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
SAMPLES = 12 if FULL else 4


def _tf():
    from tinyc.keras_runtime import import_keras
    import_keras()     # TensorFlow, quietly
    import tensorflow as tf
    import tf_keras
    return tf, tf_keras


def _convert(model, path, per_tensor=False, symmetric_fc=()) -> str:
    """The converter's dynamic-range model; `symmetric_fc`: FULLY_CONNECTED operators (by their order) whose
    asymmetric_quantize_inputs is cleared."""
    tf, _ = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if per_tensor:
        conv._experimental_disable_per_channel = True
    data = conv.convert()
    if symmetric_fc:
        data = _edit(data, lambda S, m: [setattr(op.builtinOptions, "asymmetricQuantizeInputs", False)
                                         for k, op in enumerate(_ops(S, m, "FULLY_CONNECTED")) if k in symmetric_fc])
    path.write_bytes(data)
    return str(path)


def _ops(S, m, kind):
    code = getattr(S.BuiltinOperator, kind)
    return [op for op in m.subgraphs[0].operators if m.operatorCodes[op.opcodeIndex].builtinCode == code]


def _edit(data: bytes, change) -> bytes:
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(data, 0))
    change(S, m)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _randomized(model, seed):
    """Random weights and biases (the converter drops all-zero biases; Keras initializes them to zero)."""
    rng = np.random.default_rng(seed)
    model.set_weights([(rng.standard_normal(w.shape) * (0.2 if w.ndim > 1 else 0.5)).astype(np.float32)
                       for w in model.get_weights()])
    return model


def per_channel_cnn():
    """CONV_2D stride 2 relu6 (per-channel weights: asymmetric inputs), DEPTHWISE_CONV_2D with multiplier 2 (128
    channels), two FULLY_CONNECTED (relu, then none), each weight tensor of at least 1,024 values (the converter
    leaves smaller ones float)."""
    _, K = _tf()
    L = K.layers
    x = K.Input((9, 8, 16))
    h = L.Conv2D(64, 3, strides=2, padding="same", activation="relu6")(x)
    h = L.DepthwiseConv2D(3, padding="valid", depth_multiplier=2)(h)
    h = L.Dense(40, activation="relu")(L.Flatten()(h))
    return _randomized(K.Model(x, L.Dense(32)(h)), 1)


def per_tensor_mlp():
    """CONV_2D (one weight scale: symmetric inputs) and two FULLY_CONNECTED, per-tensor weights."""
    _, K = _tf()
    L = K.layers
    x = K.Input((6, 6, 16))
    h = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    h = L.Dense(48, activation="tanh")(L.Flatten()(h))
    return _randomized(K.Model(x, L.Dense(32)(h)), 2)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid")
    per_channel = _convert(per_channel_cnn(), d / "pc.tflite")
    symmetric = d / "pcs.tflite"
    symmetric.write_bytes(_edit(open(per_channel, "rb").read(), lambda S, m: setattr(
        _ops(S, m, "FULLY_CONNECTED")[0].builtinOptions, "asymmetricQuantizeInputs", False)))
    return {"per_channel": per_channel, "per_channel_symmetric_fc": str(symmetric),
            "per_tensor": _convert(per_tensor_mlp(), d / "pt.tflite", per_tensor=True, symmetric_fc=(1,))}


def _hybrid_nodes(path):
    g = load_tflite(path)
    return [(n.op, n.attrs["groups"] > 1 if n.op == "Conv2D" else None, n.attrs["hybrid"]["inputs"])
            for n in g.nodes if n.attrs.get("hybrid")]


def test_the_converter_makes_them_hybrid(models):
    assert _hybrid_nodes(models["per_channel"]) == [
        ("Conv2D", False, "asymmetric"), ("Conv2D", True, "asymmetric"), ("Dense", None, "asymmetric"),
        ("Dense", None, "asymmetric")]
    assert [n[2] for n in _hybrid_nodes(models["per_channel_symmetric_fc"])][2:] == ["symmetric", "asymmetric"]
    assert _hybrid_nodes(models["per_tensor"]) == [("Conv2D", False, "symmetric"), ("Dense", None, "asymmetric"),
                                                   ("Dense", None, "symmetric")]


def _near_tie(node, x) -> bool:
    """Whether asymmetric quantization of the layer input `x` puts some value within 1e-4 of a half (zp + v / scale
    = k + 0.5), where TF 2.21's rounding is not a function of the value (docs/hybrid-numerics.md)."""
    from tinyc.ops.hybrid import quantize_asymmetric
    if node.attrs["hybrid"]["inputs"] != "asymmetric":
        return False
    rows = x.reshape(-1, x.shape[-1]) if node.op == "Dense" else x.reshape(x.shape[0], -1)
    for row in rows:
        _, s, zp = quantize_asymmetric(row)
        u = zp + row.astype(np.float64) * (1.0 / float(s))
        if np.any(np.abs(np.abs(u - np.round(u)) - 0.5) < 1e-4):
            return True
    return False


def _hybrid_layers_equal(path, samples, whole_output=True) -> int:
    """Every hybrid layer, run by the interpreter on TFLite's own input of that layer, gives TFLite's output exactly,
    except where its input has a value next to a rounding tie; `whole_output`: the C's outputs equal TFLite's too
    on every sample without such a tie (a model of hybrid layers only). Returns how many layer runs met a tie."""
    from tinyc.compiler import compile_model
    from tinyc.reference import run_tflite
    from tinyc.verify import run_generated
    g = load_tflite(path)
    hybrid_nodes = [n for n in g.nodes if n.attrs.get("hybrid")]
    names = [g.tensors[t].source_name for n in hybrid_nodes for t in (n.inputs[0], n.outputs[0])]
    refs, inters = run_tflite(path, [[s] for s in samples], intermediates=[t for t in names if t])
    ours = run_generated(compile_model(path), [samples])[0] if whole_output else None
    ties = 0
    for k, ref in enumerate(refs):
        tied = False
        for node in hybrid_nodes:
            x = inters[k][g.tensors[node.inputs[0]].source_name]
            y = interp.run_node(g, node, {node.inputs[0]: x.reshape(g.tensors[node.inputs[0]].shape)})[0]
            if not np.array_equal(y, inters[k][g.tensors[node.outputs[0]].source_name].reshape(y.shape)):
                assert _near_tie(node, x), f"sample {k}: node {node.name} differs from TFLite without a tie"
                ties, tied = ties + 1, True
        if whole_output and not tied:
            np.testing.assert_array_equal(ours[k], ref[0].reshape(ours[k].shape), err_msg=f"sample {k}")
    return ties


@pytest.mark.parametrize("name", ["per_channel", "per_channel_symmetric_fc", "per_tensor"])
def test_c_matches_tflite_hybrid_kernels(models, name):
    """Every layer is hybrid (or a reshape): the C gives TFLite's float32 values exactly, not merely within the float
    tolerance (TFLite's operations in its order), except at an exact rounding tie of the input quantization, where
    TF 2.21's x86 build does not round the same way each time (with TINYC_FULL: more inputs, ties counted)."""
    report = verify(models[name], samples=4, seed=3)
    assert report["oracle"] == "tflite" and report["ok"] and report["max_abs_err"] == 0.0, report
    if FULL:
        shape = load_tflite(models[name]).tensors[load_tflite(models[name]).inputs[0]].shape
        rng = np.random.default_rng(11)
        xs = (rng.standard_normal((40, *shape)) * rng.uniform(0.1, 4, (40,) + (1,) * len(shape))).astype(np.float32)
        print(f"{name}: 40 inputs, {_hybrid_layers_equal(models[name], xs)} layer runs with a rounding tie, the rest "
              "exact")


def test_interpreter_is_tflites_arithmetic(models):
    """The definition (ops/hybrid.py, run by tinyc's interpreter) equals TFLite, on inputs of every sign mix, an
    all-zero input and one of a single sign (the asymmetric range then ends at 0)."""
    from tinyc.reference import run_tflite
    rng = np.random.default_rng(5)
    for path in models.values():
        g = load_tflite(path)
        shape = g.tensors[g.inputs[0]].shape
        xs = [np.zeros(shape, np.float32), np.abs(rng.standard_normal(shape)).astype(np.float32),
              -np.abs(rng.standard_normal(shape)).astype(np.float32) * 40,
              (rng.standard_normal(shape) * 3 + 1).astype(np.float32)]
        refs = run_tflite(path, [[x] for x in xs])[0]
        for x, ref in zip(xs, refs):
            ours = interp.run(g, [x])[g.outputs[0]]
            np.testing.assert_array_equal(ours, ref[0].reshape(ours.shape), err_msg=path)


def test_fast_kernels_equal_reference_kernels(models):
    """The fast kernels (SMLAD products; codegen/hybrid_fast.py) are taken for FULLY_CONNECTED and CONV_2D and give
    the reference kernels' bytes, on the DSP path (emulated in C) and the plain path; depthwise stays reference."""
    from tinyc.compiler import codegen_options, compile_model
    from tinyc.verify import run_generated
    x = np.random.default_rng(6).standard_normal((3, 1, 9, 8, 16)).astype(np.float32) * 2 + 0.5
    for name in ("per_channel", "per_tensor") if FULL else ("per_channel",):
        path = models[name]
        shape = load_tflite(path).tensors[load_tflite(path).inputs[0]].shape
        xs = x[..., :shape[1], :shape[2], :shape[3]].copy()
        fast = compile_model(path)
        kernels = [layer["kernel"] for layer in fast.library.layers if layer["op"] in ("Dense", "Conv2D")]
        assert "hybrid_fast/dense" in kernels and "hybrid_fast/conv2d" in kernels, kernels
        reference = compile_model(path, options=codegen_options(kernels="reference"))
        assert all(layer["kernel"] is None or not layer["kernel"].startswith("hybrid_fast")
                   for layer in reference.library.layers)
        ref = run_generated(reference, [xs])[0]
        np.testing.assert_array_equal(run_generated(fast, [xs])[0], ref)
        np.testing.assert_array_equal(run_generated(fast, [xs], dsp=True)[0], ref)


def _refusal(models, tmp_path, change, name):
    data = _edit(open(models["per_channel"], "rb").read(), change)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(data)
    with pytest.raises(TinycError) as e:
        load_tflite(str(path))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_refusals(models, tmp_path):
    def depthwise_per_tensor(S, m):
        t = m.subgraphs[0].tensors[_ops(S, m, "DEPTHWISE_CONV_2D")[0].inputs[1]]
        t.quantization.scale = t.quantization.scale[:1]
        t.quantization.zeroPoint = t.quantization.zeroPoint[:1]
    assert "one weight scale per tensor" in _refusal(models, tmp_path, depthwise_per_tensor, "dw_pt")

    def dilated(S, m):
        _ops(S, m, "CONV_2D")[0].builtinOptions.dilationHFactor = 2
    assert "dilation (2, 1)" in _refusal(models, tmp_path, dilated, "dilated")

    def asymmetric_weights(S, m):
        t = m.subgraphs[0].tensors[_ops(S, m, "FULLY_CONNECTED")[0].inputs[1]]
        t.quantization.zeroPoint = np.full(len(t.quantization.scale), 3, np.int64)
    assert "nonzero zero point" in _refusal(models, tmp_path, asymmetric_weights, "zp")


def test_hybrid_transpose_conv_refused(tmp_path):
    _, K = _tf()
    x = K.Input((8, 8, 32))
    model = _randomized(K.Model(x, K.layers.Conv2DTranspose(32, 3, strides=2, padding="same")(x)), 3)
    path = _convert(model, tmp_path / "tconv.tflite")
    with pytest.raises(TinycError, match="hybrid TRANSPOSE_CONV .* not supported"):
        load_tflite(path)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL=1: the MLPerf Tiny models as hybrid models")
@pytest.mark.parametrize("name", ["kws_ds_cnn", "ad_autoencoder"])
def test_mlperf_tiny_hybrid(tmp_path, name):
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import mlperf_tiny
    path = _convert(mlperf_tiny.build(name), tmp_path / f"{name}.tflite")
    assert any(n.attrs.get("hybrid") for n in load_tflite(path).nodes)
    report = verify(path, samples=50, seed=1)
    row = report["outputs"][0]
    xs = np.random.default_rng(2).standard_normal((20, *load_tflite(path).tensors[load_tflite(path).inputs[0]].shape))
    ties = _hybrid_layers_equal(path, xs.astype(np.float32), whole_output=False)
    print(f"{name}: max abs error {row['max_abs_err']:.3g} over 50 inputs (tolerance {row['tolerance']:.3g}); every "
          f"hybrid layer on TFLite's input equals TFLite's output on 20 inputs ({ties} layer runs with a tie)")
    assert report["ok"], report


def _embedding():
    """Keras 3 Embedding: the converter makes GATHER of an int8 table and a run-time DEQUANTIZE (no hybrid layer)
    and a hybrid FULLY_CONNECTED head."""
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    x = keras.Input((8,), dtype="int32")
    h = keras.layers.Embedding(1000, 32)(x)
    return keras.Model(x, keras.layers.Dense(4)(keras.layers.Flatten()(h)))


def _conv1d():
    """Keras 3 Conv1D (EXPAND_DIMS + hybrid CONV_2D) and a hybrid FULLY_CONNECTED."""
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    x = keras.Input((64, 8))
    h = keras.layers.Conv1D(32, 5, activation="relu")(x)
    return keras.Model(x, keras.layers.Dense(4)(keras.layers.Flatten()(h)))


@pytest.mark.skipif(not FULL, reason="TINYC_FULL=1: more converter-made dynamic-range models")
@pytest.mark.parametrize("name", ["embedding", "conv1d", "attention_block"])
def test_more_converter_models(tmp_path, name):
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import mlperf_tiny
    model = {"embedding": _embedding, "conv1d": _conv1d}.get(name, lambda: mlperf_tiny.build(name))()
    path = _convert(model, tmp_path / f"{name}.tflite")
    report = verify(path, samples=10, seed=2)
    print(f"{name}: max abs error {report['max_abs_err']:.3g} (tolerance {report['outputs'][0]['tolerance']:.3g})")
    assert report["ok"], report


@pytest.mark.skipif(not FULL or not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="TINYC_FULL=1 with arm-none-eabi-gcc and qemu-system-arm")
def test_on_the_m0plus_and_m4(models, tmp_path):
    """The per-channel model under QEMU on the Cortex-M0+ (pico) and M4 (nucleo-f412zg, hard float): outputs within
    the float tolerance of TFLite's."""
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model, write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.reference import run_tflite
    from tinyc.verify import tolerance
    path = models["per_channel"]
    compiled = compile_model(path)
    x = np.random.default_rng(4).standard_normal((3, 1, 9, 8, 16)).astype(np.float32)
    refs = np.stack([r[0] for r in run_tflite(path, [[s] for s in x])[0]])
    for board in ("pico", "nucleo-f412zg"):
        out = tmp_path / board
        write_library(compiled.library, str(out), force=True)
        write_firmware(compiled, load_board(board), str(out), [x])
        run = emulate(compiled, load_board(board), out, profile=False)
        got = np.asarray(run["outputs"][0]).reshape(refs.shape)
        assert np.abs(got - refs).max() <= tolerance(refs), board
        print(f"{board}: {run['instructions']:,} instructions, max abs error {np.abs(got - refs).max():.3g}")


def test_hybrid_float_option(models):
    """--hybrid float: the weights dequantized at compile time (float32 in flash), checked against the float model
    (TFLite on the .tflite with those weights dequantized); the hybrid arithmetic gives other numbers."""
    from click.testing import CliRunner

    from tinyc.cli import main
    from tinyc.compiler import compile_model
    path = models["per_channel"]
    report = verify(path, samples=3, hybrid="float")
    assert report["ok"] and "dequantized" in report["oracle_weights"], report
    hybrid, dequantized = compile_model(path), compile_model(path, hybrid="float")
    assert "tinyc_hybrid.h" in hybrid.library.files and "tinyc_hybrid.h" not in dequantized.library.files
    assert dequantized.library.weight_bytes > 3 * hybrid.library.weight_bytes
    result = CliRunner().invoke(main, ["report", path, "--hybrid", "float", "--json"])
    assert result.exit_code == 0 and '"hybrid' not in result.output, result.output     # float kernels only
    result = CliRunner().invoke(main, ["verify", path, "--hybrid", "float", "--samples", "2", "--json"])
    assert result.exit_code == 0 and "the oracle runs the float model" in result.output, result.output
