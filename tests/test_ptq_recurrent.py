"""tinyc's post-training quantization of GRU and SimpleRNN layers (tinyc/ops/gru_rnn_int8.py): `--quantize int8`
gives each node int8 parameters shared by all steps and one looping kernel; tinyc's TFLite writer unrolls the node
into TFLite's int8 ops (SLICE, FULLY_CONNECTED, ADD, SUB, MUL, LOGISTIC, TANH, CONCATENATION, RESHAPE), and the C
(AddressSanitizer/UBSan) must equal TFLite's reference kernels running that file byte for byte on every output for
20 random sequences. The int8 outputs' error against the float model is measured and bounded (docs/int8-numerics.md
4.41 lists the figures). A Keras GRU (reset_after) under two SimpleRNNs (tanh, relu), a Bidirectional GRU with
reset_after=False returning both last states (one direction backwards), an ONNX GRU (batch 2, a constant initial
state, Y and Y_h; also with saturating inputs, fast and reference kernels); the writer's Slice rule; refusals in one
line. With TINYC_FULL: a stateful GRU streamed over 20 frames, and a KWS-sized int8 GRU/RNN model under QEMU on the
Cortex-M0+, M33 and M4 (its recurrent layers' products on SMLAD on the DSP cores)."""
import importlib.util
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("PTQ tests need tensorflow (TFLite is the oracle)", allow_module_level=True)

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tinyc.compiler import codegen_options, compile_model  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.verify import run_generated, verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
T, F = 6, 3
SEQUENCES = 20
CALIBRATION = 100


def _keras():
    from tinyc.keras_runtime import import_keras
    return import_keras()


def _randomized(model, seed=1, scale=0.8):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.uniform(-scale, scale, w.shape).astype(np.float32))
    return model


def _data(shape, seed, n=SEQUENCES):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _dequantized(values, t):
    return (values.astype(np.float64) - float(np.asarray(t.quant.zero_point).reshape(-1)[0])) * \
        float(np.asarray(t.quant.scale).reshape(-1)[0])


def _check(path, calib, x, float_outputs, frames=False):
    """C (fast kernels) vs TFLite on tinyc's written int8 graph: 0 differing bytes on every output of every sequence
    (the fast kernel's DSP path too: verify's dsp_path_matches); then the int8 C's dequantized outputs vs the float
    model's, per output: (max error / max |float|, mean error in output LSBs). (The worst case is a test value whose
    intermediates leave their calibrated range, and saturate.)"""
    report = verify(path, inputs=[x], quantize="int8", calib=[calib])
    assert report["oracle"] == "tflite" and report["samples"] == SEQUENCES and report.get("dsp_path_matches", True)
    for row in report["outputs"]:
        assert row["mismatched_bytes"] == 0, report
    assert report["ok"] and (not frames or report["frames"] == SEQUENCES), report
    compiled = compile_model(path, quantize="int8", calib=[calib])
    g = compiled.plan.graph
    ours = run_generated(compiled, [x])
    errors = []
    for got, name, ref in zip(ours, g.outputs, float_outputs):
        got = _dequantized(got, g.tensors[name]).reshape(ref.shape)
        lsb = float(np.asarray(g.tensors[name].quant.scale).reshape(-1)[0])
        errors.append((float(np.abs(got - ref).max() / np.abs(ref).max()), float(np.abs(got - ref).mean() / lsb)))
    print(f"{path}: 0 differing bytes over {SEQUENCES} sequences; int8 vs float per output (max error / max |float|, "
          f"mean error in LSBs): {[(round(a, 4), round(b, 2)) for a, b in errors]}")
    return errors


def _bounded(errors, worst=0.1, mean_lsbs=1.5):
    for relative, lsbs in errors:
        assert relative < worst and lsbs < mean_lsbs, errors


def _keras_case(tmp_path, model, frames=False, **bounds):
    path = str(tmp_path / f"{model.name}.keras")
    model.save(path)
    calib, x = _data(model.input_shape[1:], 0, CALIBRATION), _data(model.input_shape[1:], 7)
    if frames:      # a stateful model (not called before): one stream from zeros, frame after frame, as verify runs it
        ref = [np.concatenate([np.asarray(model(x[i:i + 1], training=False)) for i in range(SEQUENCES)])]
    else:
        ref = [np.asarray(model(x, training=False))]
    _bounded(_check(path, calib, x, ref, frames), **bounds)


def test_gru_reset_after_then_simple_rnns_tanh_and_relu(tmp_path):
    keras = _keras()
    L = keras.layers
    inp = keras.Input((T, F))
    h = L.GRU(5, return_sequences=True)(inp)
    h = L.SimpleRNN(4, return_sequences=True)(h)
    model = _randomized(keras.Model(inp, L.SimpleRNN(3, activation="relu", return_sequences=True)(h),
                                    name="gru_rnns"), scale=0.6)
    _keras_case(tmp_path, model)


def test_bidirectional_gru_reset_before_last_states(tmp_path):
    """reset_after=False (the reset gate before the recurrent product), both directions' last h concatenated."""
    keras = _keras()
    L = keras.layers
    inp = keras.Input((T, F))
    model = _randomized(keras.Model(inp, L.Bidirectional(L.GRU(6, reset_after=False))(inp), name="bi_gru"))
    _keras_case(tmp_path, model)


def onnx_gru(clip=None, H=4, I=3, B=2, seed=0):
    """One forward ONNX GRU (linear_before_reset 0, ONNX's default), X [T,B,I], a constant initial state, Y and Y_h."""
    rng = np.random.default_rng(seed)

    def const(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.6).astype(np.float32), name)
    attrs = dict(hidden_size=H) if clip is None else dict(hidden_size=H, clip=clip)
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "h0"], ["Y", "Y_h"], name="gru", **attrs)
    graph = helper.make_graph(
        [node], "gru", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("Y", "Y_h")],
        [const("W", (1, 3 * H, I)), const("R", (1, 3 * H, H)), const("B", (1, 6 * H)), const("h0", (1, B, H))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def test_onnx_gru_batch_two_initial_state(tmp_path):
    import onnx
    import onnxruntime as ort
    model = onnx_gru()
    path = str(tmp_path / "gru.onnx")
    onnx.save(model, path)
    calib, x = _data((T, 2, 3), 0, CALIBRATION), _data((T, 2, 3), 7)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = [np.stack([sess.run(None, {"X": x[i]})[k] for i in range(SEQUENCES)]) for k in range(2)]
    _bounded(_check(path, calib, x, ref))
    # inputs 4x the calibrated ones (many at the ends of the int8 range, intermediates beyond their calibrated ranges,
    # saturating): the fast kernel and its plain-C twin still equal TFLite
    for kernels in ("fast", "reference"):
        report = verify(path, inputs=[4 * x], quantize="int8", calib=[calib], options=codegen_options(kernels=kernels))
        assert report["ok"] and report["mismatched_bytes"] == 0, (kernels, report)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL: a stateful GRU streamed over 20 frames")
def test_stateful_gru_streamed(tmp_path):
    """A stateful GRU: the hidden state is streaming state (one scale with the layer's h), 20 frames of one stream."""
    keras = _keras()
    L = keras.layers
    inp = keras.Input((T, F), batch_size=1)
    model = _randomized(keras.Model(inp, L.GRU(4, stateful=True)(inp), name="stateful_gru"))
    _keras_case(tmp_path, model, frames=True)


def test_refusals_are_one_line(tmp_path):
    import onnx
    path = str(tmp_path / "clip.onnx")
    onnx.save(onnx_gru(clip=0.9), path)
    with pytest.raises(TinycError, match=r"^cannot quantize GRU '.*': attribute clip 0\.9") as e:
        compile_model(path, quantize="int8", calib=[_data((T, 2, 3), 0)])
    assert "\n" not in str(e.value)
    keras = _keras()
    inp = keras.Input((T, F))
    model = keras.Model(inp, keras.layers.GRU(3, activation="elu")(inp), name="gru_elu")
    path = str(tmp_path / "gru_elu.keras")
    model.save(path)
    with pytest.raises(TinycError, match=r"^cannot quantize GRU '.*': activation \{'fn': 'elu'.*takes sigmoid, tanh"):
        compile_model(path, quantize="int8", calib=[_data((T, F), 0)])


def onnx_slice(starts, ends, steps):
    """Relu then Slice of axes 1 and 2 of X [1,6,5] (the Relu keeps the Slice a node of its own)."""
    consts = [numpy_helper.from_array(np.array(v, np.int64), n)
              for v, n in ((starts, "s"), (ends, "e"), ([1, 2], "a"), (steps, "st"))]
    nodes = [helper.make_node("Relu", ["X"], ["R"]), helper.make_node("Slice", ["R", "s", "e", "a", "st"], ["Y"])]
    g = helper.make_graph(nodes, "slice", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 6, 5])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], consts)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


@pytest.mark.parametrize("starts,ends,steps", [([0, 1], [6, 4], [1, 1]), ([5, 4], [-100, -100], [-1, -2]),
                                               ([4, 0], [0, 5], [-2, 2])], ids=["slice", "backwards_to_0", "strided"])
def test_slice_is_written_as_slice_or_strided_slice(tmp_path, starts, ends, steps):
    """The writer's Slice rule (an ONNX GRU's Y_h is one): SLICE, or STRIDED_SLICE with end_mask for an axis read
    backwards down to index 0; TFLite on the file equals the C."""
    import onnx
    path = str(tmp_path / "slice.onnx")
    onnx.save(onnx_slice(starts, ends, steps), path)
    report = verify(path, quantize="int8", calib=[_data((1, 6, 5), 0)], samples=5)
    assert report["ok"] and report["mismatched_bytes"] == 0, report


@pytest.mark.skipif(not FULL, reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2", "nucleo-f412zg"])   # Cortex-M0+, M33, M4 (mps2-an385/505/386)
def test_emulated_int8_gru_rnn_match(board_name, tmp_path):
    """A keyword-spotting-sized int8 model (GRU 16 over 12 MFCC frames, GRU 12 reset_after=False, SimpleRNN 8, softmax)
    under QEMU: every output byte equal to the host build and to TFLite running tinyc's file, 20 sequences. The
    recurrent layers take the fast kernel's SMLAD products, and on the DSP cores (M33, M4) the firmware's code of
    each of them holds SMLAD instructions (the TINYC_DSP path was built), on the M0+ none."""
    import subprocess

    from tinyc.boards import load_board
    from tinyc.firmware.emulate import firmware_dir
    from tinyc.firmware.run import run_emulated
    keras = _keras()
    L = keras.layers
    inp = keras.Input((12, 10), name="mfcc")
    h = L.GRU(16, return_sequences=True, name="gru1")(inp)
    h = L.GRU(12, reset_after=False, return_sequences=True, name="gru2")(h)
    h = L.SimpleRNN(8, name="rnn")(h)
    model = _randomized(keras.Model(inp, L.Dense(4, activation="softmax", name="out")(h), name="kws_gru_int8"),
                        scale=0.5)
    path = str(tmp_path / "kws_gru_int8.keras")
    model.save(path)
    compiled = compile_model(path, quantize="int8", calib=[_data((12, 10), 0, CALIBRATION)])
    recurrent = [layer for layer in compiled.library.layers if layer["op"] in ("GRU", "RNN")]
    assert [layer["kernel"] for layer in recurrent] == ["int8_fast/recurrent_chain/smlad"] * 3, recurrent
    firmware = tmp_path / "firmware"
    r = run_emulated(compiled, load_board(board_name), path, str(firmware), inputs=[_data((12, 10), 7)])
    assert r["samples"] == SEQUENCES and r["outputs_match"], r["outputs"]
    listing = subprocess.run(["arm-none-eabi-objdump", "-d", str(firmware_dir(firmware) / "build" / "emulate.elf")],
                             capture_output=True, text=True, check=True).stdout
    for layer in recurrent:
        symbol = re.escape(f"{compiled.library.prefix}_l{layer['index']}_{layer['op'].lower()}")
        body = re.search(rf"<{symbol}(\.[\w.]+)?>:\n(.*?)\n\n", listing, re.S).group(2)   # GCC's .constprop.0
        assert ("smlad" in body) == (board_name != "pico"), (board_name, layer["name"])
    print(f"{board_name}: {r['instructions']:,} instructions per inference, {r['macs']:,} MACs")


# -- parameters tinyc's quantizer does not pick: extreme scales and zero points of every role -------------------
def _int8_chain_graph(draw, rng):
    """An int8 GRU or RNN node with random shapes and attributes, in the form --quantize makes, whose roles' scales
    are the ranges a float run of its chain gives times 1/4 .. 4 and whose zero points are moved by up to 48 from
    those ranges' (so that values neither all saturate nor sit on a few steps), h0 random."""
    from hypothesis import strategies as st

    from tinyc.ir import Graph, Node, Quant
    from tinyc.ops import gru_rnn_int8
    from tinyc.quant.ptq import activation_params
    op = draw(st.sampled_from(["GRU", "RNN"]))
    B, T, I, H = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    G = 3 if op == "GRU" else 1
    fns = st.sampled_from(["sigmoid", "tanh", "relu"])
    attrs = dict(activations=tuple({"fn": draw(fns)} for _ in range(2 if op == "GRU" else 1)), clip=None,
                 reverse=draw(st.booleans()), output=draw(st.sampled_from(["sequence", "last_h"])))
    if op == "GRU":
        attrs["linear_before_reset"] = draw(st.booleans())
    node = Node(op, [], ["y"], attrs, "cell")
    steps = gru_rnn_int8.chain(node)

    def varied(lo, hi):
        s, z = activation_params(lo, hi)
        s = float(np.float32(s * np.exp(draw(st.floats(np.log(0.25), np.log(4.0))))))
        return s, int(np.clip(z + draw(st.integers(-48, 48)), -128, 127))
    x_quant = varied(-3.0, 3.0)
    w_scale = np.exp(rng.uniform(np.log(1e-3), np.log(0.02), G * H)).astype(np.float32)
    r_scale = np.exp(rng.uniform(np.log(1e-3), np.log(0.02), G * H)).astype(np.float32)
    w_q, r_q = rng.integers(-127, 128, (G * H, I)), rng.integers(-127, 128, (G * H, H))
    bx, bh = rng.uniform(-0.5, 0.5, G * H), np.zeros(G * H)
    if op == "GRU":
        bh[2 * H:] = rng.uniform(-0.5, 0.5, H)
    h_quant = gru_rnn_int8.fixed_quant(steps[-1]) or varied(-1.5, 1.5)
    h0_q = rng.integers(-128, 128, (B, H))
    x = (rng.integers(-128, 128, (16, B, T, I)) - x_quant[1]) * x_quant[0]
    floats = [w_q * w_scale[:, None], r_q * r_scale[:, None], bx] + ([bh] if op == "GRU" else [])
    ranges = {}
    for sample in x:
        h0 = (h0_q - h_quant[1]) * h_quant[0]
        for role, (lo, hi) in gru_rnn_int8.float_ranges(node, [sample] + floats + [h0]).items():
            old = ranges.get(role, (lo, hi))
            ranges[role] = (min(old[0], lo), max(old[1], hi))
    attrs["step_quant"] = {s.out: gru_rnn_int8.fixed_quant(s) or varied(*ranges[s.out]) for s in steps if s.out != "h"}

    def q(sz):
        return Quant(np.asarray(sz[0], np.float32), np.asarray(sz[1], np.int64))

    zeros = np.zeros(G * H, np.int64)

    def bias(values, s_in, w_s):
        scale = (np.float32(s_in) * w_s).astype(np.float32)
        return np.round(values / scale).astype(np.int32), Quant(scale, zeros, 0)
    g = Graph(f"{op.lower()}_int8")
    g.add_tensor("x", (B, T, I), "int8", quant=q(x_quant))
    g.add_tensor("w", (G * H, I), "int8", w_q, quant=Quant(w_scale, zeros, 0))
    g.add_tensor("r", (G * H, H), "int8", r_q, quant=Quant(r_scale, zeros, 0))
    data, quant = bias(bx, x_quant[0], w_scale)
    g.add_tensor("b", (G * H,), "int32", data, quant=quant)
    node.inputs = ["x", "w", "r", "b"]
    if op == "GRU":
        hn_input = next(s.ins[0] for s in steps if s.out == "hn")
        data, quant = bias(bh, attrs["step_quant"][hn_input][0] if hn_input != "h" else h_quant[0], r_scale)
        g.add_tensor("rb", (G * H,), "int32", data, quant=quant)
        node.inputs.append("rb")
    g.add_tensor("h0", (B, H), "int8", h0_q, quant=q(h_quant))
    node.inputs.append("h0")
    g.add_tensor("y", (B, T, H) if attrs["output"] == "sequence" else (B, H), "int8", quant=q(h_quant))
    g.nodes, g.inputs, g.outputs = [node], ["x"], ["y"]
    return g


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_extreme_parameters_match_tflite(tmp_path, kernels):
    """Random int8 GRU / RNN nodes (shapes, attributes, every role's scale and zero point moved off what calibration
    would pick, nonzero h0) compiled by tinyc and written unrolled by its writer: 0 differing bytes on 8 random input
    sequences (hypothesis: 6 examples per kernel set, 40 with TINYC_FULL). Parameters TFLite's ADD cannot represent
    are refused by its Prepare and by tinyc alike (skipped)."""
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st

    from tinyc.compiler import compile_graph
    from tinyc.verify import reference_outputs

    @settings(max_examples=40 if FULL else 6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def check(data):
        rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 31)))
        g = _int8_chain_graph(data.draw, rng)
        try:
            compiled = compile_graph(g, "cell", options=codegen_options(kernels=kernels))
        except TinycError as e:
            assume("cannot be computed by TFLite's scheme" not in str(e))
            raise
        compiled.quantized = g
        x = [rng.integers(-128, 128, (8, *g.tensors["x"].shape)).astype(np.int8)]
        ours = run_generated(compiled, x)[0]
        with tempfile.TemporaryDirectory(dir=tmp_path) as build:
            ref = reference_outputs(compiled, "", x, "api", Path(build))[0][0]
        assert np.array_equal(ours, ref.reshape(ours.shape)), (g.nodes[0].attrs, np.abs(
            ours.astype(int) - ref.reshape(ours.shape).astype(int)).max())
    check()
