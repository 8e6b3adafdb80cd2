"""tinyc's post-training quantization of the LSTM (tinyc/quant/lstm_ptq.py): `--quantize int8` makes TFLite's integer
LSTM (int8 x, h and weights, int16 cell state with a power-of-two scale, int32 biases), tinyc's TFLite writer writes
it as an int8 UNIDIRECTIONAL_SEQUENCE_LSTM with its intermediates and variable state tensors, and the C
(AddressSanitizer/UBSan) must equal TFLite's reference kernels running that file byte for byte on 20 random
sequences (TFLite's variables reset before each, as the stateless float model starts each sequence from zero; a
Keras stateful LSTM and a float .tflite LSTM, whose state is carried, as 20 frames of one stream). The int8
outputs' error against the float model is measured and bounded. Then tinyc's parameters against the ones
TFLite's converter writes for the same tf_keras model and calibration data: the weights, biases and cell-state
scales equal, the activations' and biases' scales within one float32 ulp (docs/int8-numerics.md 4.42). Refusals in
one line. The stacked Keras model (the ONNX one is stacked too), the float .tflite LSTM and the converter
comparison run with TINYC_FULL."""
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("PTQ tests need tensorflow (TFLite is the oracle)", allow_module_level=True)

from tinyc.compiler import compile_model  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.quant.tflite_writer import write_tflite  # noqa: E402
from tinyc.reference import run_tflite  # noqa: E402
from tinyc.verify import quantize_array, verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
T, F = 8, 5
SEQUENCES = 20


def _keras():
    from tinyc.keras_runtime import import_keras
    return import_keras()


def _data(shape, seed, n=SEQUENCES, spread=1.5):
    return (np.random.default_rng(seed).standard_normal((n, *shape)) * spread).astype(np.float32)


def _dequantized(values, t):
    return (values.astype(np.float64) - float(np.asarray(t.quant.zero_point).reshape(-1)[0])) * \
        float(np.asarray(t.quant.scale).reshape(-1)[0])


def _check(path, calib, x, float_outputs, frames=False):
    """C vs TFLite on tinyc's written int8 graph: 0 differing bytes on every output of every sequence (with
    `frames`, the sequences are frames of one stream, the LSTMs' state carried in both); then the int8 C's
    dequantized outputs vs the float model's: the worst error relative to each output's largest |float|."""
    report = verify(path, inputs=[x], quantize="int8", calib=[calib])
    assert report["oracle"] == "tflite" and report["samples"] == SEQUENCES, report
    assert report.get("frames") == (SEQUENCES if frames else None), report
    if frames:      # h starts at its zero point (TFLite resets variables to it), c at 0
        g = compile_model(path, quantize="int8", calib=[calib]).quantized
        for s, value in g.initial_state().items():
            assert np.all(value == int(np.asarray(g.tensors[s].quant.zero_point))), (s, value)
    for row in report["outputs"]:
        assert row["mismatched_bytes"] == 0, report
    assert report["ok"], report
    # the int8 result, equal to the C's byte for byte: TFLite on tinyc's file (no second C build)
    g = compile_model(path, quantize="int8", calib=[calib]).quantized
    assert sum(n.op == "LSTM" and g.tensors[n.inputs[5]].dtype == "int16" for n in g.nodes) >= 1
    written = str(Path(path).with_suffix(".int8.tflite"))
    write_tflite(g, written)
    x_q = quantize_array(x, g.tensors[g.inputs[0]].quant).reshape(-1, *g.tensors[g.inputs[0]].shape)
    ours = run_tflite(written, [[sample] for sample in x_q], carry_state=frames)[0]
    errors = []
    for k, (name, ref) in enumerate(zip(g.outputs, float_outputs)):
        got = _dequantized(np.stack([o[k] for o in ours]), g.tensors[name]).reshape(ref.shape)
        errors.append(float(np.abs(got - ref).max() / np.abs(ref).max()))
    print(f"{path}: 0 differing bytes over {SEQUENCES} sequences; int8 vs float max error / max |float| "
          f"{[round(e, 4) for e in errors]}")
    return errors


def _keras_case(tmp_path, model, bound):
    path = str(tmp_path / f"{model.name}.keras")
    model.save(path)
    calib, x = _data(model.input_shape[1:], 0, 40), _data(model.input_shape[1:], 7)
    errors = _check(path, calib, x, [np.asarray(model(x, training=False))])
    assert max(errors) < bound, errors


def test_keras3_lstm_classifier(tmp_path):
    """The last step only (return_sequences false: SLICE + RESHAPE of the kernel's sequence), softmax head."""
    keras = _keras()
    keras.utils.set_random_seed(1)
    L = keras.layers
    inp = keras.Input((T, F))
    model = keras.Model(inp, L.Dense(4, activation="softmax")(L.LSTM(12)(inp)), name="lstm_classifier")
    _keras_case(tmp_path, model, 0.05)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: a second Keras model (~10 s)")
def test_keras3_stacked_lstm(tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(2)
    L = keras.layers
    inp = keras.Input((T, F))
    h = L.LSTM(10, return_sequences=True)(inp)
    model = keras.Model(inp, L.Dense(3)(L.LSTM(6)(h)), name="stacked_lstm")
    # the LSTMs' h within 1.6 % and 1.3 % of their largest |h|; the head's outputs are small against its inputs
    _keras_case(tmp_path, model, 0.15)


def test_keras3_bidirectional_and_backwards_lstm(tmp_path):
    """Reverse nodes: a forward LSTM between Gathers along time (the second LSTM, last step only: one Gather)."""
    keras = _keras()
    keras.utils.set_random_seed(3)
    L = keras.layers
    inp = keras.Input((T, F))
    h = L.Bidirectional(L.LSTM(6, return_sequences=True))(inp)
    model = keras.Model(inp, L.LSTM(5, go_backwards=True)(h), name="bidirectional_lstm")
    # the Bidirectional's h within 1.7 % of its largest |h| (2 LSB); the last LSTM's small h (|h| <= 0.35) 9 %
    _keras_case(tmp_path, model, 0.15)


def test_onnx_pytorch_two_layer_lstm(tmp_path):
    import onnxruntime as ort
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(F, 10, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(10, 3)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.head(y[:, -1])
    torch.manual_seed(0)
    path = str(tmp_path / "torch_lstm.onnx")
    torch.onnx.export(Net().eval(), (torch.randn(1, T, F),), path, input_names=["x"], output_names=["y"],
                      dynamo=False)
    calib, x = _data((1, T, F), 0, 40), _data((1, T, F), 7)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = np.stack([sess.run(None, {"x": x[i]})[0] for i in range(SEQUENCES)])
    errors = _check(path, calib, x, [ref])
    assert max(errors) < 0.05, errors


def test_keras3_stateful_lstm_streamed(tmp_path):
    """stateful=True: h and c are streaming state; the written LSTM carries them in its variable tensors (TFLite
    writes the final h and c back), the C in its state region (c int16): 20 frames of one stream."""
    keras = _keras()
    keras.utils.set_random_seed(4)
    L = keras.layers
    inp = keras.Input((T, F), batch_size=1)
    model = keras.Model(inp, L.Dense(3)(L.LSTM(7, stateful=True)(inp)), name="stateful_lstm")
    path = str(tmp_path / "stateful_lstm.keras")
    model.save(path)
    calib, x = _data((T, F), 0, 40), _data((T, F), 7)
    model.layers[1].reset_state()
    ref = np.concatenate([np.asarray(model(x[i:i + 1], training=False)) for i in range(SEQUENCES)])
    errors = _check(path, calib, x, [ref], frames=True)
    assert max(errors) < 0.08, errors
    g = compile_model(path, quantize="int8", calib=[calib]).quantized   # one node, its final c its second output
    assert [(n.attrs["output"], n.attrs.get("cell_output")) for n in g.nodes if n.op == "LSTM"] == [("last_h", True)]


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None or not FULL,
                    reason="TINYC_FULL and tf_keras (the test extra): a converter-made float LSTM (~10 s)")
def test_float_tflite_lstm_streamed(tmp_path):
    """Stacked float .tflite LSTMs (the converter's, from tf_keras): their variable tensors are carried state,
    quantized (h starting at its zero point, c at 0) and written back as the int8 LSTMs' variable tensors; the float
    reference is TFLite carrying them too."""
    import tensorflow as tf
    import tf_keras
    _keras()
    tf_keras.utils.set_random_seed(6)
    inp = tf_keras.Input((T, F), batch_size=1)
    h = tf_keras.layers.LSTM(5, return_sequences=True)(inp)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(3)(tf_keras.layers.LSTM(4)(h)))
    path = tmp_path / "float_lstm.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    calib, x = _data((1, T, F), 0, 40), _data((1, T, F), 7)
    ref = np.stack([o[0] for o in run_tflite(str(path), [[sample] for sample in x], carry_state=True)[0]])
    errors = _check(str(path), calib, x, [ref], frames=True)
    assert max(errors) < 0.08, errors


def _converter_twin(tmp_path, calib):
    """A tf_keras stacked LSTM converted by TFLite's converter (calibrated on `calib`), and the Keras 3 model with
    the same weights: (the converter's .tflite path, the .keras path)."""
    import tensorflow as tf
    import tf_keras
    _keras()
    tf_keras.utils.set_random_seed(3)
    models = []
    for lib in (tf_keras, _keras()):
        inp = lib.Input((T, F), batch_size=1)
        h = lib.layers.LSTM(12, return_sequences=True, name="lstm0")(inp)
        models.append(lib.Model(inp, lib.layers.Dense(4, name="head")(lib.layers.LSTM(7, name="lstm1")(h))))
    for layer in ("lstm0", "lstm1", "head"):
        models[1].get_layer(layer).set_weights(models[0].get_layer(layer).get_weights())

    def representative():
        for sample in calib:
            yield [sample[None]]
    conv = tf.lite.TFLiteConverter.from_keras_model(models[0])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    converted, keras3 = tmp_path / "converter.tflite", str(tmp_path / "twin.keras")
    converted.write_bytes(conv.convert())
    models[1].save(keras3)
    return str(converted), keras3


def _ulps(a, b) -> int:
    bits = np.asarray([a, b], np.float32).view(np.int32)
    return abs(int(bits[0]) - int(bits[1]))


def _scale(details):
    q = details["quantization_parameters"]
    return float(q["scales"][0]), int(q["zero_points"][0])


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None or not FULL,
                    reason="TINYC_FULL and tf_keras (the test extra): TFLite's converter (~12 s)")
def test_parameters_equal_the_converters(tmp_path):
    """Same model, same calibration data: tinyc's int8 LSTMs against the converter's UNIDIRECTIONAL_SEQUENCE_LSTMs.
    The converter calibrates with the LSTM's variables carried from sample to sample; so does tinyc."""
    import tensorflow as tf
    calib = _data((T, F), 0, 30)
    converted, keras3 = _converter_twin(tmp_path, calib)
    it = tf.lite.Interpreter(converted)
    details = {d["index"]: d for d in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details() if op["op_name"] == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    q = compile_model(keras3, quantize="int8", calib=[calib]).quantized
    nodes = [n for n in q.nodes if n.op == "LSTM"]
    assert len(ops) == len(nodes) == 2
    ulp, bias_lsb = [], 0
    for op, node in zip(ops, nodes):
        ins, H = op["inputs"], q.tensors[node.inputs[2]].shape[1]
        for k, first in ((1, 1), (2, 5)):       # the weights per gate: equal
            t = q.tensors[node.inputs[k]]
            for gate in range(4):
                theirs = details[ins[first + gate]]
                assert np.float32(_scale(theirs)[0]) == np.asarray(t.quant.scale, np.float32)[gate * H]
                np.testing.assert_array_equal(it.get_tensor(ins[first + gate]), t.data[gate * H:(gate + 1) * H])
        b = q.tensors[node.inputs[3]]
        for gate in range(4):       # the int32 biases: s_x * s_w, so within the ulps of s_x
            theirs = details[ins[12 + gate]]
            ulp.append(_ulps(_scale(theirs)[0], np.asarray(b.quant.scale).reshape(-1)[gate * H]))
            step = np.abs(it.get_tensor(ins[12 + gate]).astype(np.int64) - b.data[gate * H:(gate + 1) * H])
            bias_lsb = max(bias_lsb, int(step.max()))
        cell = q.tensors[node.inputs[5]].quant
        assert _scale(details[ins[19]]) == (float(np.asarray(cell.scale)), 0)
        x, y = q.tensors[node.inputs[0]].quant, q.tensors[node.outputs[0]].quant
        for theirs, ours in ((details[ins[0]], x), (details[ins[18]], y), (details[op["outputs"][0]], y)):
            scale, zp = _scale(theirs)
            assert zp == int(np.asarray(ours.zero_point)), (theirs["name"], zp, ours)
            ulp.append(_ulps(scale, np.asarray(ours.scale).reshape(-1)[0]))
        assert tuple(node.attrs["hidden_quant"]) == (float(np.asarray(y.scale)), int(np.asarray(y.zero_point)))
    assert max(ulp) <= 1 and bias_lsb <= 1, (ulp, bias_lsb)
    print(f"tinyc vs converter: weights and cell scales equal; activation and bias scales within {max(ulp)} ulp, "
          f"biases within {bias_lsb} LSB")


def test_refusals_are_one_line(tmp_path):
    keras = _keras()
    inp = keras.Input((T, F))
    model = keras.Model(inp, keras.layers.LSTM(3, activation="relu")(inp), name="lstm_relu")
    path = str(tmp_path / "lstm_relu.keras")
    model.save(path)
    with pytest.raises(TinycError, match=r"^cannot quantize LSTM '.*': attribute activations \('sigmoid', 'relu'"
                       ) as e:
        compile_model(path, quantize="int8", calib=[_data((T, F), 0)])
    assert "\n" not in str(e.value)
    _, _, c = keras.layers.LSTM(3, return_state=True)(inp)      # the final c as a model output: int16, refused
    model = keras.Model(inp, c, name="lstm_cell_out")
    path = str(tmp_path / "lstm_cell_out.keras")
    model.save(path)
    with pytest.raises(TinycError, match=r"^cannot quantize LSTM '.*': output .*the cell state is read"):
        compile_model(path, quantize="int8", calib=[_data((T, F), 0)])


@pytest.mark.skipif(not FULL or not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="TINYC_FULL=1 with arm-none-eabi-gcc and qemu-system-arm")
def test_on_target_m0plus_and_m33(tmp_path):
    """tinyc's int8 LSTMs as firmware under QEMU on the Cortex-M0+ (pico) and M33 (pico2): a Bidirectional +
    backwards model (Gathers, reference and DSP fast kernels) and a stateful one (state carried over 6 frames);
    every output byte equal to the host build, which equals TFLite (the tests above)."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.verify import run_generated
    keras = _keras()
    L = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((T, F), batch_size=1)
    h = L.Bidirectional(L.LSTM(6, return_sequences=True))(inp)
    models = [keras.Model(inp, L.LSTM(5, go_backwards=True)(h), name="bidirectional_lstm")]
    keras.utils.set_random_seed(4)
    inp = keras.Input((T, F), batch_size=1)
    models.append(keras.Model(inp, L.Dense(3)(L.LSTM(7, stateful=True)(inp)), name="stateful_lstm"))
    for model in models:
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        compiled = compile_model(path, quantize="int8", calib=[_data((T, F), 0, 40)])
        g = compiled.plan.graph
        x = quantize_array(_data((T, F), 7, 6), g.tensors[g.inputs[0]].quant).reshape(6, 1, T, F)
        host = run_generated(compiled, [x])[0]
        for board in ("pico", "pico2"):
            out = tmp_path / f"{model.name}-{board}"
            write_library(compiled.library, str(out), force=True)
            write_firmware(compiled, load_board(board), str(out), [x])
            run = emulate(compiled, load_board(board), out, profile=False)
            np.testing.assert_array_equal(run["outputs"][0], host, err_msg=f"{model.name} on {board}")
            print(f"{model.name} on {board}: {run['instructions']:,} instructions per inference, {x.shape[0]} "
                  "frames equal to the host build")
