"""TFLite's integer LSTM (UNIDIRECTIONAL_SEQUENCE_LSTM with int8 input/output, int16 cell state and gates), bit for
bit: converter-made tf_keras LSTMs compiled by tinyc, their C (gcc, AddressSanitizer and UBSan) against TFLite's
reference kernels (BUILTIN_REF) on 20 random sequences each, run as consecutive invocations with h and c carried
from one to the next (TFLite's variable tensors, tinyc's streaming state): zero differing bytes
(docs/int8-numerics.md 4.40). Then the same model files with extreme scales, zero points and weights written into
them (hypothesis), and the variants tinyc refuses in one line."""
import importlib.util
import os
import shutil

import numpy as np
import pytest

if importlib.util.find_spec("tf_keras") is None:
    pytest.skip("needs tf_keras (the test extra)", allow_module_level=True)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tinyc.errors import TinycError  # noqa: E402
from tinyc.frontends.tflite_import import load_tflite  # noqa: E402
from tinyc.verify import verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
SEQUENCES = 20


def _tf():
    from tinyc.keras_runtime import import_keras
    import_keras()     # TensorFlow, quietly
    import tensorflow as tf
    import tf_keras
    return tf, tf_keras


def _convert(model, shape, path, seed=0):
    """int8 TFLite with a representative dataset and int8 input and output, as users convert."""
    tf, _ = _tf()
    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(40):
            yield [(rng.standard_normal((1, *shape)) * 1.5).astype(np.float32)]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return str(path)


def _lstm_model(T, I, units, sequences, seed):
    """tf_keras LSTM layers (each `sequences` flag one layer) on [T, I], seeded weights."""
    _, keras = _tf()
    keras.utils.set_random_seed(seed)
    x = keras.Input((T, I), batch_size=1)
    h = x
    for k, (H, seq) in enumerate(zip(units, sequences)):
        h = keras.layers.LSTM(H, return_sequences=seq, name=f"lstm{k}")(h)
    return keras.Model(x, h)


MODELS = {    # name: (T, I, units, return_sequences, seed)
    "sequence": (8, 5, (6,), (True,), 3),
    "last": (7, 3, (5,), (False,), 4),
    # seed 5: the converter gives the second LSTM's cell state the scale 2^-16, for which TFLite's integer tanh
    # of the cell state does nothing (h = o * i, docs/int8-numerics.md 4.39)
    "stacked": (6, 4, (8, 5), (True, False), 5),
    "kws": (49, 10, (64,), (True,), 6),
}


@pytest.fixture(scope="module")
def lstm_files(tmp_path_factory):
    directory, cache = tmp_path_factory.mktemp("int8_lstm"), {}

    def get(name):
        if name not in cache:
            T, I, units, seqs, seed = MODELS[name]
            cache[name] = _convert(_lstm_model(T, I, units, seqs, seed), (T, I), directory / f"{name}.tflite")
        return cache[name]
    return get


# "stacked" covers both outputs (its second LSTM returns the last step only) in the default run
@pytest.mark.parametrize("name", [n for n in MODELS if FULL or n in ("sequence", "stacked")])
def test_converter_lstm_bit_exact(lstm_files, name):
    path = lstm_files(name)
    g = load_tflite(path)
    lstms = [n for n in g.nodes if n.op == "LSTM"]     # per layer one node: its sequence, and its final c (the next
    assert [(n.attrs["output"], n.attrs.get("cell_output")) for n in lstms] == [("sequence", True)] * len(
        MODELS[name][2])                                # state) as a second output
    report = verify(path, samples=SEQUENCES, seed=7, per_layer=name == "stacked")
    assert report["oracle"] == "tflite" and report["samples"] == report["frames"] == SEQUENCES
    assert sorted(row["dtype"] for row in report["state"]) == sorted(["int16", "int8"] * len(MODELS[name][2]))
    assert report["mismatched_bytes"] == 0, report["outputs"]
    if name == "stacked":     # every layer, the first LSTM's whole sequence included
        assert report["first_divergence"] is None, report["layers"]
        cell_scales = [float(g.tensors[n.inputs[5]].quant.scale) for n in lstms]
        assert min(cell_scales) < 2.0 ** -15, cell_scales


def test_fast_kernel_taken_and_reference_twin_bit_exact(lstm_files):
    """The fast kernel (gate products on SMLAD; verify runs its DSP path emulated in C and its plain path) is what
    the default build takes; the plain reference kernel gives the same bytes as TFLite too."""
    from tinyc.compiler import compile_model
    path = lstm_files("sequence")     # 5 inputs, 6 units: both products have a tail past four columns
    kernels = [layer["kernel"] for layer in compile_model(path).library.layers if layer["op"] == "LSTM"]
    assert kernels == ["int8_fast/lstm"], kernels
    report = verify(path, samples=SEQUENCES, seed=11, options=dict(kernels="reference"))
    assert report["mismatched_bytes"] == 0 and "dsp_path_matches" not in report, report


def _gemmlowp_exp_quarter(a: int) -> int:
    """gemmlowp's exp_on_interval_between_negative_one_quarter_and_0_excl on an int16 Q0.15 value, written
    straight from fixedpoint.h: SRDHM with its nudge and truncating division, int16 wrapping sums."""
    def wrap(v):
        return ((v + 32768) & 0xFFFF) - 32768

    def srdhm(x, y):
        if x == y == -32768:
            return 32767
        p = x * y
        q = p + (1 << 14 if p >= 0 else 1 - (1 << 14))
        return wrap(abs(q) // 32768 * (1 if q >= 0 else -1))

    def rdbpot(x, e):
        mask = (1 << e) - 1
        return (x >> e) + ((x & mask) > (mask >> 1) + (x < 0))

    def const(c32):
        return rdbpot(c32, 16)
    x = wrap(a + (1 << 12))
    x2 = srdhm(x, x)
    x3, x4 = srdhm(x2, x), srdhm(x2, x2)
    poly = rdbpot(wrap(srdhm(wrap(rdbpot(x4, 2) + x3), const(715827883)) + x2), 1)
    c = const(1895147668)
    return max(-32768, min(32767, c + srdhm(c, wrap(x + poly))))


@pytest.mark.parametrize("integer_bits", range(1, 8))
def test_exp_tables_equal_gemmlowps_series(integer_bits):
    """The fast kernel's tables of e^x on [-1/4, 0) equal gemmlowp's series at every entry, for every input format
    an LSTM's exp reads (the gates' sigmoid 3 integer bits, their tanh 4, the cell state's tanh 1 .. 7)."""
    from tinyc.ops.lstm_int8 import exp_quarter_table
    quarter = 1 << (13 - integer_bits)
    table = exp_quarter_table(integer_bits)
    assert len(table) == quarter
    assert table == [_gemmlowp_exp_quarter((m - quarter) << integer_bits) for m in range(quarter)]


@pytest.mark.skipif(not FULL or not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="TINYC_FULL=1 with arm-none-eabi-gcc and qemu-system-arm")
def test_gate_products_per_mac_on_the_m4(tmp_path):
    """KWS-sized LSTMs (49 frames, 64 units) of 10 and 42 inputs under QEMU on the Cortex-M4 (mps2-an386): the
    extra gate-product MACs of the wider one cost at most 2.0 instructions each (the DSP loop; the gate
    activations, the same in both, cancel out); outputs equal the host build on the M4 and the M0+."""
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model, write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.verify import run_generated
    counts = {}
    for I in (10, 42):
        T, _, units, seqs, seed = MODELS["kws"]
        path = _convert(_lstm_model(T, I, units, seqs, seed), (T, I), tmp_path / f"kws{I}.tflite")
        compiled = compile_model(path)
        x = np.random.default_rng(I).integers(-128, 128, (2, 1, T, I)).astype(np.int8)
        host = run_generated(compiled, [x])[0]
        for board in ("nucleo-f412zg", "pico"):
            out = tmp_path / f"kws{I}-{board}"
            write_library(compiled.library, str(out), force=True)
            write_firmware(compiled, load_board(board), str(out), [x])
            run = emulate(compiled, load_board(board), out, profile=False)
            np.testing.assert_array_equal(run["outputs"][0], host, err_msg=f"{I} inputs on {board}")
            counts[I, board] = (run["instructions"], run["macs"])
    (n10, m10), (n42, m42) = counts[10, "nucleo-f412zg"], counts[42, "nucleo-f412zg"]
    per_mac = (n42 - n10) / (m42 - m10)
    print(f"M4: {n10:,} instructions for {m10:,} MACs ({n10 / m10:.2f}/MAC), {n42:,} for {m42:,}; "
          f"gate products {per_mac:.3f} instructions per MAC; M0+: {counts[10, 'pico'][0]:,}")
    assert per_mac <= 2.0


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("cpu", ["cortex-m0plus", "cortex-m4"])
def test_arm_gcc_warning_set(lstm_files, tmp_path, c_compile, cpu):
    from tinyc.compiler import compile_model
    lib = compile_model(lstm_files("stacked")).library
    c_compile(lib, tmp_path, "arm-none-eabi-gcc", (f"-mcpu={cpu}", "-mthumb", "-O2"))


def test_bidirectional_as_the_converter_writes_it(tmp_path):
    """tf_keras Bidirectional(LSTM) in int8: REVERSE_V2, two UNIDIRECTIONAL_SEQUENCE_LSTM (the backward one over
    the reversed input, its output relabelled by the REVERSE_V2 after it) and a CONCATENATION; tinyc runs the
    backward node in reverse. 10 frames with the states carried against BUILTIN_REF (its REVERSE_V2 loaded as
    version 2, reference.REF_MAX_VERSION) and against TFLite's builtin resolver: 0 differing bytes."""
    tf, keras = _tf()
    from tinyc.compiler import compile_model
    from tinyc.verify import run_generated
    keras.utils.set_random_seed(9)
    x = keras.Input((6, 4), batch_size=1)
    model = keras.Model(x, keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))(x))
    path = _convert(model, (6, 4), tmp_path / "bidirectional.tflite")
    report = verify(path, samples=10, seed=4)
    assert report["oracle"] == "tflite" and report["frames"] == 10 and report["mismatched_bytes"] == 0, report
    compiled = compile_model(path)
    assert {n.attrs["reverse"] for n in compiled.plan.graph.nodes if n.op == "LSTM"} == {False, True}
    frames = np.random.default_rng(0).integers(-128, 128, (10, 1, 6, 4)).astype(np.int8)
    ours = run_generated(compiled, [frames])[0]
    it = tf.lite.Interpreter(path, experimental_op_resolver_type=tf.lite.experimental.OpResolverType
                             .BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    theirs = []
    for frame in frames:
        it.set_tensor(it.get_input_details()[0]["index"], frame)
        it.invoke()
        theirs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    np.testing.assert_array_equal(ours, np.stack(theirs).reshape(ours.shape))


def test_tflite_carries_state_across_invocations(lstm_files):
    """TFLite keeps an LSTM's h and c in variable tensors from one invoke() to the next: the second run of the
    same sequence differs unless reset_all_variables() runs between (verify resets before every sequence)."""
    tf, _ = _tf()
    it = tf.lite.Interpreter(lstm_files("sequence"),
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    x = np.random.default_rng(0).integers(-128, 128, it.get_input_details()[0]["shape"]).astype(np.int8)
    outs = []
    for reset in (False, False, True):
        if reset:
            it.reset_all_variables()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    assert not np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


# -- the converter's file with other parameters written into it ------------------------------------------------
def _schema():
    _tf()
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S
    return S, flatbuffers


def _read(path):
    S, _ = _schema()
    with open(path, "rb") as f:
        return S.ModelT.InitFromObj(S.Model.GetRootAsModel(f.read(), 0))


def _write(model, path):
    S, flatbuffers = _schema()
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return str(path)


def _lstm_op(model):
    sg = model.subgraphs[0]
    S, _ = _schema()
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == S.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM:
            return sg, op
    raise AssertionError("no LSTM in the model")


def _set_quant(t, scale, zp):
    t.quantization.scale = np.asarray([scale], np.float32)
    t.quantization.zeroPoint = np.asarray([zp], np.int64)


def _set_data(model, t, values):
    model.buffers[t.buffer].data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)


zero_points = st.sampled_from([-128, -127, -1, 0, 1, 127]) | st.integers(-128, 127)


@settings(max_examples=30 if FULL else 2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_extreme_parameters_bit_exact(lstm_files, tmp_path, data):
    """Scales from 1e-4 to 10, zero points at the int8 extremes, cell scales 2^-17 .. 2^-7 (beyond 2^-15 .. 2^-9
    TFLite's tanh of the cell leaves the input gate in its place), full-range weights and large biases, a cell clip
    or none: every gate saturates somewhere in 4 random sequences."""
    model = _read(lstm_files("sequence"))
    sg, op = _lstm_op(model)
    ins, t = [int(i) for i in op.inputs], sg.tensors
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    scale = st.floats(-4, 1).map(lambda e: float(np.float32(10.0 ** e)))
    _set_quant(t[ins[0]], data.draw(scale), data.draw(zero_points))
    out_q = (data.draw(scale), data.draw(zero_points))
    for i in (int(op.outputs[0]), ins[18], int(op.intermediates[4])):     # output, h state, effective hidden
        _set_quant(t[i], *out_q)
    _set_quant(t[ins[19]], 2.0 ** data.draw(st.integers(-17, -7)), 0)
    for i in ins[1:9]:
        _set_quant(t[i], float(np.float32(10.0 ** rng.uniform(-4, -1))), 0)
        _set_data(model, t[i], rng.integers(-127, 128, tuple(t[i].shape)).astype(np.int8))
    bias = data.draw(st.sampled_from([10, 1000, 100000]))
    for i in ins[12:16]:
        _set_data(model, t[i], rng.integers(-bias, bias + 1, tuple(t[i].shape)).astype(np.int32))
    op.builtinOptions.cellClip = data.draw(st.sampled_from([0.0, 0.5, 3.0, 10.0]))
    path = _write(model, tmp_path / "extreme.tflite")
    report = verify(path, samples=4, seed=data.draw(st.integers(0, 100)))
    assert report["mismatched_bytes"] == 0, report["outputs"]


def test_output_labelled_apart_from_the_state(lstm_files, tmp_path):
    """An output whose quantization differs from the hidden state's (the converter does it when a Concatenation
    reads the LSTM): TFLite computes the bytes with the effective-hidden parameters, labels them with the output's
    and carries them into the state as they are; tinyc's next h is then its own `last_h` node."""
    model = _read(lstm_files("sequence"))
    sg, op = _lstm_op(model)
    _set_quant(sg.tensors[op.outputs[0]], 0.011, 7)
    path = _write(model, tmp_path / "relabelled.tflite")
    g = load_tflite(path)
    assert sorted(n.attrs["output"] for n in g.nodes if n.op == "LSTM") == ["last_h", "sequence"]
    report = verify(path, samples=6, seed=2)
    assert report["frames"] == 6 and report["mismatched_bytes"] == 0, report["outputs"]


def _variant(lstm_files, tmp_path, change):
    model = _read(lstm_files("sequence"))
    sg, op = _lstm_op(model)
    change(model, sg, op)
    return _write(model, tmp_path / "variant.tflite")


def _use_input(k, source):
    """Operator input `k` reads what input `source` reads (-1: absent)."""
    def change(model, sg, op):
        inputs = [int(i) for i in op.inputs]
        inputs[k] = inputs[source] if source >= 0 else -1
        op.inputs = inputs
    return change


@pytest.mark.parametrize("change, words", [
    (_use_input(16, 5), "projection_weights"),
    (_use_input(21, 13), "layer normalization"),
    (_use_input(10, 13), "peepholes"),
    (_use_input(1, -1), "CIFG"),
    (lambda m, sg, op: setattr(op.builtinOptions, "timeMajor", True), "time_major"),
    (lambda m, sg, op: setattr(op.builtinOptions, "fusedActivationFunction", 1), "fused activation 1"),
])
def test_unsupported_variants_refused_in_one_line(lstm_files, tmp_path, change, words):
    path = _variant(lstm_files, tmp_path, change)
    with pytest.raises(TinycError) as e:
        load_tflite(path)
    msg = str(e.value)
    assert words in msg and "UNIDIRECTIONAL_SEQUENCE_LSTM" in msg and "\n" not in msg


@pytest.mark.parametrize("change, words", [
    (lambda n, g: n.attrs.update(clip=3.0), "clip"),
    (lambda n, g: n.attrs.update(input_forget=True), "input_forget"),
    (lambda n, g: n.attrs.update(activations=({"fn": "sigmoid"}, {"fn": "relu"}, {"fn": "tanh"})), "activations"),
    (lambda n, g: g.tensors[n.inputs[6]].data.__setitem__(0, 1), "peepholes"),
])
def test_int8_node_variants_refused_in_one_line(lstm_files, change, words):
    """IR int8 LSTM nodes that TFLite's integer kernel does not compute (no frontend writes them) are refused when
    the C is made, naming the node and the attribute."""
    from tinyc.compiler import compile_graph
    g = load_tflite(lstm_files("sequence"))
    node = next(n for n in g.nodes if n.op == "LSTM")
    g.tensors[node.inputs[6]].data = g.tensors[node.inputs[6]].data.copy()
    change(node, g)
    with pytest.raises(TinycError) as e:
        compile_graph(g, "m")
    assert words in str(e.value) and node.name in str(e.value) and "\n" not in str(e.value)


def test_non_power_of_two_cell_scale_refused(lstm_files, tmp_path):
    def change(model, sg, op):
        _set_quant(sg.tensors[op.inputs[19]], 3e-4, 0)
    path = _variant(lstm_files, tmp_path, change)
    with pytest.raises(TinycError, match="cell state scale .* power of two"):
        verify(path, samples=1)
