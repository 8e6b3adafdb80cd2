"""TFLite's recurrent operators in float32 -> tinyc/ops/recurrent.py (tinyc/frontends/tflite_recurrent.py,
tflite_rnn_loop.py), checked against TFLite's interpreter.

Converter-made models: a tf_keras LSTM (UNIDIRECTIONAL_SEQUENCE_LSTM), a tf_keras Bidirectional LSTM (REVERSE_V2 +
two of them), Keras 3 LSTM / GRU / SimpleRNN (a WHILE loop over the cell, recognised as one IR node). No converter
writes BIDIRECTIONAL_SEQUENCE_LSTM or UNIDIRECTIONAL_SEQUENCE_RNN, nor CIFG, peephole or time-major LSTMs: those
models are written here with TF's flatbuffer schema module. With TINYC_FULL: the LSTM and the Bidirectional model
under QEMU on the Cortex-M0+ (pico: mps2-an385) and the Cortex-M33 (pico2: mps2-an505).
"""
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
keras = pytest.importorskip("keras")

from tinyc.errors import TinycError  # noqa: E402
from tinyc.frontends.tflite_import import load_tflite  # noqa: E402
from tinyc.interp import run, run_frames  # noqa: E402
from tinyc.reference import run_tflite  # noqa: E402
from tinyc.verify import verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
STEPS, FEATURES, HIDDEN = 6, 3, 5
RECURRENT = ("LSTM", "GRU", "RNN")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("tflite_recurrent")


def _convert(model, path) -> str:
    """Random weights (biases too: zero biases would be folded away by the converter), then TFLite."""
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.8, 0.8, w.shape).astype(np.float32) for w in model.get_weights()])
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _model(K, body, tmp, name) -> str:
    x = K.Input((STEPS, FEATURES), batch_size=1)
    return _convert(K.Model(x, body(K.layers, x)), tmp / f"{name}.tflite")


def _ops(path):
    from tinyc.frontends.tflite_import import _op_name, _read, _schema
    S = _schema()
    _, model = _read(S, path)
    return [_op_name(S, model, op) for op in model.subgraphs[0].operators]


def _matches_tflite(path, seed=1, scale=2.0):
    """The imported graph in tinyc's interpreter against TFLite's interpreter on one random input."""
    g = load_tflite(path)
    xs = [np.random.default_rng(seed).standard_normal(g.tensors[n].shape).astype(np.float32) * scale
          for n in g.inputs]
    got = run(g, xs)
    ref, _ = run_tflite(path, [xs])
    for name, r in zip(g.outputs, ref[0]):
        err = np.abs(got[name] - r).max()
        assert got[name].shape == r.shape and err <= 1e-4 * (1 + np.abs(r).max()), (name, err)
    return g


def _recurrent_nodes(g, sequences_only=False):
    """The graph's recurrent nodes (only those giving a whole sequence, with or without the final c)."""
    return [n for n in g.nodes if n.op in RECURRENT and (n.attrs["output"] == "sequence" or not sequences_only)]


# -- converter-made models ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tf_keras_lstm(tmp):
    return _model(tf_keras, lambda L, x: L.LSTM(HIDDEN)(x), tmp, "tk_lstm")


@pytest.fixture(scope="module")
def tf_keras_bidirectional(tmp):
    return _model(tf_keras, lambda L, x: L.Bidirectional(L.LSTM(4, return_sequences=True))(x), tmp, "tk_bilstm")


def test_tf_keras_lstm_is_one_lstm_node_and_verifies(tf_keras_lstm):
    assert _ops(tf_keras_lstm) == ["UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE"]
    g = _matches_tflite(tf_keras_lstm)
    (node,) = _recurrent_nodes(g)           # one node: the sequence and the final c of the carried state
    assert node.op == "LSTM" and node.attrs["cell_clip"] == 10.0   # the converter's clip of every Keras LSTM
    assert node.attrs["output"] == "sequence" and node.attrs["cell_output"] and len(node.outputs) == 2
    assert g.state[node.inputs[5]] == node.outputs[1]     # the carried c: the node's second output
    report = verify(tf_keras_lstm, samples=3, seed=3)            # three frames, the state carried on both sides
    assert report["ok"] and report["frames"] == 3 and len(report["state"]) == 2, report


@pytest.mark.skipif(not FULL, reason="the converter takes ~15 s on a tf_keras Bidirectional: TINYC_FULL=1 (the same "
                    "operators written by hand run by default)")
def test_tf_keras_bidirectional_lstm_verifies(tf_keras_bidirectional):
    assert _ops(tf_keras_bidirectional) == ["REVERSE_V2", "UNIDIRECTIONAL_SEQUENCE_LSTM", "REVERSE_V2",
                                            "UNIDIRECTIONAL_SEQUENCE_LSTM", "CONCATENATION"]
    g = _matches_tflite(tf_keras_bidirectional)
    nodes = _recurrent_nodes(g, sequences_only=True)
    assert [n.attrs["reverse"] for n in nodes] == [True, False]     # the two reversals folded into the node
    assert not [n for n in g.nodes if n.op == "Slice" and -1 in n.attrs["steps"]]
    report = verify(tf_keras_bidirectional, samples=2, seed=3)
    assert report["ok"], report["outputs"]


def test_lstm_state_is_carried_across_inferences_as_tflite_does(tf_keras_lstm):
    """TFLite's interpreter carries the converter's variable state tensors from one invoke() to the next (until
    reset_all_variables()): tinyc makes them streaming state, the final h and c their next values."""
    g = load_tflite(tf_keras_lstm)
    assert len(g.state) == 2 and all(v is not None for v in g.state.values())
    interp = tf.lite.Interpreter(model_path=tf_keras_lstm,
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    x = np.random.default_rng(0).standard_normal((1, STEPS, FEATURES)).astype(np.float32)
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    ref = []
    for _ in range(3):                 # the same input three times: three different outputs
        interp.set_tensor(inp, x)
        interp.invoke()
        ref.append(interp.get_tensor(out).copy())
    ours, _ = run_frames(g, [[x]] * 3)
    assert np.abs(ref[1] - ref[0]).max() > 1e-3
    for r, o in zip(ref, ours):
        assert np.abs(o[g.outputs[0]] - r).max() <= 1e-4 * (1 + np.abs(r).max())


KERAS3 = {
    "lstm": lambda L, x: L.LSTM(HIDDEN)(x),
    "lstm_backwards_state": lambda L, x: L.Concatenate()(L.LSTM(HIDDEN, go_backwards=True, return_state=True)(x)),
    "gru": lambda L, x: L.GRU(HIDDEN, return_sequences=True)(x),
    "gru_reset_before": lambda L, x: L.GRU(HIDDEN, reset_after=False, activation="relu")(x),
    "simple_rnn": lambda L, x: L.SimpleRNN(HIDDEN, return_sequences=True)(x),
    "bidirectional": lambda L, x: L.Bidirectional(L.LSTM(4, return_sequences=True))(x),
    "gru_hard_sigmoid": lambda L, x: L.GRU(HIDDEN, recurrent_activation="hard_sigmoid")(x),    # relu6(z + 3) / 6
}
KERAS3_CELL = {"lstm": "LSTM", "lstm_backwards_state": "LSTM", "gru": "GRU", "gru_reset_before": "GRU",
               "simple_rnn": "RNN", "bidirectional": "LSTM", "gru_hard_sigmoid": "GRU"}


@pytest.mark.parametrize("name", list(KERAS3))
def test_keras3_while_loop_is_one_recurrent_node(tmp, name):
    path = _model(keras, KERAS3[name], tmp, f"k3_{name}")
    assert "WHILE" in _ops(path)
    g = _matches_tflite(path)
    nodes = _recurrent_nodes(g)
    assert nodes and {n.op for n in nodes} == {KERAS3_CELL[name]}
    assert {n.attrs["output"] for n in nodes} == ({"last_h"} if name in ("lstm", "lstm_backwards_state",
                                                                         "gru_reset_before", "gru_hard_sigmoid")
                                                  else {"sequence"})
    assert all(len(n.outputs) == (2 if name == "lstm_backwards_state" else 1) for n in nodes)
    if name == "bidirectional":      # REVERSE_V2, WHILE, Reshapes, REVERSE_V2: folded into a backward node
        assert [n.attrs["reverse"] for n in nodes] == [True, False]
        assert not [n for n in g.nodes if n.op == "Slice" and -1 in n.attrs["steps"]]
    if name == "lstm_backwards_state":   # REVERSE_V2 then the loop, no sequence read: the node runs backwards
        assert all(n.attrs["reverse"] for n in nodes)
        assert not [n for n in g.nodes if n.op == "Slice" and -1 in n.attrs["steps"]]
    if name == "gru_hard_sigmoid":
        assert nodes[0].attrs["activations"][0]["fn"] == "hard_sigmoid"
    if name == "gru_reset_before":
        assert nodes[0].attrs["linear_before_reset"] is False and nodes[0].attrs["activations"][1] == {"fn": "relu"}
    if name in ("lstm", "gru_reset_before"):
        report = verify(path, samples=2, seed=3)
        assert report["ok"], report["outputs"]


def test_stateful_tf_keras_lstm_loop_carries_its_resource_variables(tmp):
    """A tf_keras LSTM with stateful=True converts to resource variables (VAR_HANDLE, READ_VARIABLE) feeding a WHILE
    loop's initial states and ASSIGN_VARIABLE of its final h and c: the loop's one LSTM node reads the state
    tensors, its final states are their next values; verified over 4 frames."""
    path = _model(tf_keras, lambda L, x: L.LSTM(HIDDEN, stateful=True)(x), tmp, "tk_stateful_lstm")
    assert {"WHILE", "VAR_HANDLE", "ASSIGN_VARIABLE"} <= set(_ops(path))
    g = load_tflite(path)
    assert len(_recurrent_nodes(g)) == 1 and len(g.state) == 2
    report = verify(path, samples=4, seed=3)
    assert report["ok"] and report["frames"] == 4, report


def test_unrecognised_while_body_is_refused_in_one_line(tmp):
    """The Keras 3 LSTM's body with its cell-state tanh made an EXP: not a cell tinyc knows."""
    path = _model(keras, KERAS3["lstm"], tmp, "k3_lstm_exp")
    S, model = _object_model(path)
    body = model.subgraphs[2]
    codes = [int(max(c.builtinCode, c.deprecatedBuiltinCode)) for c in model.operatorCodes]
    tanh = codes.index(S.BuiltinOperator.TANH)
    exp = S.OperatorCodeT()
    exp.builtinCode, exp.deprecatedBuiltinCode, exp.version = S.BuiltinOperator.EXP, S.BuiltinOperator.EXP, 1
    model.operatorCodes.append(exp)
    last_tanh = [op for op in body.operators if op.opcodeIndex == tanh][-1]
    last_tanh.opcodeIndex = len(model.operatorCodes) - 1
    bad = str(tmp / "k3_lstm_exp_edited.tflite")
    _write(S, model, bad)
    with pytest.raises(TinycError) as e:
        load_tflite(bad)
    msg = str(e.value)
    assert "\n" not in msg and "WHILE" in msg and "EXP" in msg


# -- models written with the flatbuffer schema ----------------------------------------------------------------
def _object_model(path):
    from tinyc.frontends.tflite_import import _read, _schema
    S = _schema()
    return S, _read(S, path)[1]


def _write(S, model, path):
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with open(path, "wb") as f:
        f.write(builder.Output())


def _sequence_input(b, time_major):
    """The model input x [1,T,I] (tinyc's inputs are batch-first) and what the op reads: x, or its TRANSPOSE to
    [T,1,I] for a time-major op."""
    x = b.tensor("x", (1, STEPS, FEATURES))
    if not time_major:
        return x, x
    xt = b.tensor("x_time_major", (STEPS, 1, FEATURES))
    perm = b.tensor("perm", (3,), np.array([1, 0, 2]), dtype="int32")
    b.op("TRANSPOSE", [x, perm], [xt], b.S.TransposeOptionsT())
    return x, xt


class _Builder:
    """One subgraph: float32 tensors (constants or not), operators with their options."""

    def __init__(self, S):
        self.S, self.tensors, self.buffers, self.operators, self.codes = S, [], [S.BufferT()], [], []

    def tensor(self, name, shape, data=None, variable=False, dtype="float32") -> int:
        S = self.S
        buf = S.BufferT()
        if data is not None:
            buf.data = np.ascontiguousarray(data, np.dtype(dtype).newbyteorder("<")).reshape(-1).view(np.uint8)
        t = S.TensorT()
        t.name, t.type, t.shape, t.isVariable = name, getattr(S.TensorType, dtype.upper()), list(shape), variable
        t.buffer = len(self.buffers)
        self.buffers.append(buf)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, builtin, inputs, outputs, options):
        S = self.S
        code = getattr(S.BuiltinOperator, builtin)
        if code not in self.codes:
            self.codes.append(code)
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes.index(code), list(inputs), list(outputs)
        o.builtinOptionsType = getattr(S.BuiltinOptions, type(options).__name__[:-1])
        o.builtinOptions = options
        self.operators.append(o)

    def save(self, path, inputs, outputs) -> str:
        S = self.S
        sg = S.SubGraphT()
        sg.tensors, sg.operators, sg.inputs, sg.outputs, sg.name = self.tensors, self.operators, inputs, outputs, "main"
        codes = []
        for c in self.codes:
            oc = S.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = c, min(c, 127), 1
            codes.append(oc)
        model = S.ModelT()
        model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [sg], self.buffers
        _write(S, model, path)
        return str(path)


def _lstm_direction(b, rng, prefix, n_input, H, cifg=False, peephole=False, diagonal=False) -> list:
    """The 17 weight inputs of one LSTM direction (LSTM_INPUTS[1:18]); -1 where absent. `diagonal`: recurrent
    weights as vectors (diagonal_recurrent_tensors)."""
    def w(name, shape):
        return b.tensor(f"{prefix}_{name}", shape, rng.uniform(-0.7, 0.7, shape).astype(np.float32))
    gates = ("input", "forget", "cell", "output")
    ins = [-1 if cifg and g == "input" else w(f"x_{g}", (H, n_input)) for g in gates]
    ins += [-1 if cifg and g == "input" else w(f"h_{g}", (H,) if diagonal else (H, H)) for g in gates]
    ins += [w(f"p_{g}", (H,)) if peephole and not (cifg and g == "input") else -1
            for g in ("input", "forget", "output")]
    ins += [-1 if cifg and g == "input" else w(f"b_{g}", (H,)) for g in gates]
    return ins + [-1, -1]


def _unidirectional_lstm(S, path, time_major=False, cifg=False, peephole=False, cell_clip=0.0, activation=4,
                         diagonal=False, extra=None) -> str:
    rng = np.random.default_rng(7)
    b = _Builder(S)
    x, seq = _sequence_input(b, time_major)
    ins = [seq] + _lstm_direction(b, rng, "lstm", FEATURES, HIDDEN, cifg, peephole, diagonal)
    ins += [b.tensor("h", (1, HIDDEN), variable=True), b.tensor("c", (1, HIDDEN), variable=True)]
    ins += [-1] * 4
    for k, shape_k in (extra or {}).items():     # inputs to set (refusal tests)
        ins[k] = b.tensor(f"extra{k}", shape_k, rng.uniform(-1, 1, shape_k).astype(np.float32))
    y = b.tensor("y", (STEPS, 1, HIDDEN) if time_major else (1, STEPS, HIDDEN))
    opts = S.UnidirectionalSequenceLSTMOptionsT()
    opts.fusedActivationFunction, opts.cellClip, opts.timeMajor = activation, cell_clip, time_major
    opts.diagonalRecurrentTensors = diagonal
    b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [y], opts)
    return b.save(path, [x], [y])


def _bidirectional_lstm(S, path, merge, time_major) -> str:
    rng = np.random.default_rng(11)
    b = _Builder(S)
    x, seq = _sequence_input(b, time_major)
    ins = [seq] + _lstm_direction(b, rng, "fw", FEATURES, HIDDEN, peephole=True)
    ins += _lstm_direction(b, rng, "bw", FEATURES, HIDDEN)        # (TFLite wants both directions' sizes equal)
    ins += [b.tensor(n, (1, HIDDEN), variable=True) for n in ("fw_h", "fw_c", "bw_h", "bw_c")]
    ins += [-1] * 9
    lead = (STEPS, 1) if time_major else (1, STEPS)
    outs = [b.tensor("y", lead + (2 * HIDDEN,))] if merge else [b.tensor("fw", lead + (HIDDEN,)),
                                                                b.tensor("bw", lead + (HIDDEN,))]
    opts = S.BidirectionalSequenceLSTMOptionsT()
    opts.fusedActivationFunction, opts.cellClip, opts.mergeOutputs, opts.timeMajor = 4, 0.0, merge, time_major
    b.op("BIDIRECTIONAL_SEQUENCE_LSTM", ins, outs, opts)
    return b.save(path, [x], outs)


def _unidirectional_rnn(S, path, time_major, activation) -> str:
    rng = np.random.default_rng(5)
    b = _Builder(S)
    x, seq = _sequence_input(b, time_major)
    ins = [seq, b.tensor("w", (HIDDEN, FEATURES), rng.uniform(-0.8, 0.8, (HIDDEN, FEATURES)).astype(np.float32)),
           b.tensor("r", (HIDDEN, HIDDEN), rng.uniform(-0.6, 0.6, (HIDDEN, HIDDEN)).astype(np.float32)),
           b.tensor("b", (HIDDEN,), rng.uniform(-0.5, 0.5, HIDDEN).astype(np.float32)),
           b.tensor("h", (1, HIDDEN), variable=True)]
    y = b.tensor("y", (STEPS, 1, HIDDEN) if time_major else (1, STEPS, HIDDEN))
    opts = S.SequenceRNNOptionsT()
    opts.timeMajor, opts.fusedActivationFunction = time_major, activation
    b.op("UNIDIRECTIONAL_SEQUENCE_RNN", ins, [y], opts)
    return b.save(path, [x], [y])


@pytest.fixture(scope="module")
def S():
    from tinyc.frontends.tflite_import import _schema
    return _schema()


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("merge", [False, True])
def test_bidirectional_sequence_lstm(S, tmp, merge, time_major):
    path = _bidirectional_lstm(S, tmp / f"bidi_{merge}_{time_major}.tflite", merge, time_major)
    g = _matches_tflite(path)
    nodes = _recurrent_nodes(g, sequences_only=True)
    assert [n.attrs["reverse"] for n in nodes] == [False, True]
    if merge and not time_major:
        report = verify(path, samples=2, seed=3)
        assert report["ok"], report["outputs"]


def _converter_bidirectional(S, path) -> str:
    """What the converter writes for a tf_keras Bidirectional(LSTM(return_sequences=True)): REVERSE_V2(x) ->
    UNIDIRECTIONAL_SEQUENCE_LSTM -> REVERSE_V2, beside the forward one, CONCATENATION [forward, backward]."""
    rng = np.random.default_rng(13)
    b = _Builder(S)
    x = b.tensor("x", (1, STEPS, FEATURES))
    axis = b.tensor("axis", (1,), np.array([1]), dtype="int32")
    xr = b.tensor("x_reversed", (1, STEPS, FEATURES))
    b.op("REVERSE_V2", [x, axis], [xr], S.ReverseV2OptionsT())
    seqs = []
    for name, src in (("backward", xr), ("forward", x)):
        ins = [src] + _lstm_direction(b, rng, name, FEATURES, HIDDEN)
        ins += [b.tensor(f"{name}_h", (1, HIDDEN), variable=True), b.tensor(f"{name}_c", (1, HIDDEN), variable=True)]
        seqs.append(b.tensor(f"{name}_sequence", (1, STEPS, HIDDEN)))
        opts = S.UnidirectionalSequenceLSTMOptionsT()
        opts.fusedActivationFunction, opts.cellClip = 4, 10.0
        b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins + [-1] * 4, [seqs[-1]], opts)
    back = b.tensor("backward_in_order", (1, STEPS, HIDDEN))
    b.op("REVERSE_V2", [seqs[0], axis], [back], S.ReverseV2OptionsT())
    y = b.tensor("y", (1, STEPS, 2 * HIDDEN))
    opts = S.ConcatenationOptionsT()
    opts.axis = 2
    b.op("CONCATENATION", [seqs[1], back], [y], opts)
    return b.save(path, [x], [y])


def test_converter_form_of_bidirectional_folds_and_verifies(S, tmp):
    path = _converter_bidirectional(S, tmp / "bidirectional_converter_form.tflite")
    g = _matches_tflite(path)
    assert [n.attrs["reverse"] for n in _recurrent_nodes(g, sequences_only=True)] == [True, False]
    assert not [n for n in g.nodes if n.op == "Slice" and -1 in n.attrs["steps"]]
    report = verify(path, samples=3, seed=3)                     # three frames, four carried states
    assert report["ok"] and len(report["state"]) == 4, report


@pytest.mark.parametrize("time_major,activation", [(False, 1), (True, 4)])   # relu, tanh
def test_unidirectional_sequence_rnn(S, tmp, time_major, activation):
    path = _unidirectional_rnn(S, tmp / f"rnn_{time_major}.tflite", time_major, activation)
    (node,) = _recurrent_nodes(_matches_tflite(path))      # (its state's next value: the sequence's last step)
    assert node.op == "RNN"
    if time_major:
        report = verify(path, samples=2, seed=3)
        assert report["ok"], report["outputs"]


LSTM_VARIANTS = {"cifg": dict(cifg=True), "peephole_cell_clip": dict(peephole=True, cell_clip=0.6),
                 "cifg_peephole_time_major": dict(cifg=True, peephole=True, time_major=True),
                 "relu6": dict(activation=3), "diagonal": dict(diagonal=True)}


@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_unidirectional_sequence_lstm_variants(S, tmp, variant):
    path = _unidirectional_lstm(S, tmp / f"lstm_{variant}.tflite", **LSTM_VARIANTS[variant])
    (node,) = _recurrent_nodes(_matches_tflite(path), sequences_only=True)
    assert node.attrs["input_forget"] is LSTM_VARIANTS[variant].get("cifg", False)
    if variant == "cifg_peephole_time_major":
        report = verify(path, samples=2, seed=3)
        assert report["ok"], report["outputs"]


@pytest.mark.parametrize("inputs,word", [({16: (HIDDEN, HIDDEN)}, "projection"),
                                         ({20: (HIDDEN,), 21: (HIDDEN,), 22: (HIDDEN,), 23: (HIDDEN,)},
                                          "layer normalization")])
def test_unsupported_lstm_variants_are_refused_in_one_line(S, tmp, inputs, word):
    path = _unidirectional_lstm(S, tmp / f"lstm_refused_{word[:4]}.tflite", extra=inputs)
    with pytest.raises(TinycError) as e:
        load_tflite(path)
    msg = str(e.value)
    assert "\n" not in msg and "UNIDIRECTIONAL_SEQUENCE_LSTM" in msg and word in msg


@pytest.mark.skipif(not FULL, reason="the converter takes ~15 s on a tf_keras Bidirectional: TINYC_FULL=1")
def test_int8_bidirectional_lstm_is_bit_exact_with_the_reference_kernels(tmp):
    """The converter writes an int8 Bidirectional's REVERSE_V2 as version 3, which BUILTIN_REF registers up to
    version 2 with the same kernel (reference.REF_MAX_VERSION): the oracle is TFLite's reference kernels, not TFLite
    Micro's. The reversals fold into the backward node in int8 too."""
    rng = np.random.default_rng(0)
    x = tf_keras.Input((STEPS, FEATURES), batch_size=1)
    model = tf_keras.Model(x, tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(4, return_sequences=True))(x))
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.standard_normal((1, STEPS, FEATURES)).astype(np.float32)]
                                           for _ in range(50))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path = tmp / "bidirectional_int8.tflite"
    path.write_bytes(conv.convert())
    g = load_tflite(str(path))
    assert [n.attrs["reverse"] for n in g.nodes if n.op == "LSTM" and n.attrs["output"] == "sequence"] == [True, False]
    report = verify(str(path), samples=5, seed=1)
    assert report["oracle"] == "tflite" and report["ok"], report
    assert all(o["mismatched_bytes"] == 0 for o in report["outputs"])


# -- on the targets -------------------------------------------------------------------------------------------
@pytest.mark.skipif(not FULL, reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2"])     # Cortex-M0+ (mps2-an385), Cortex-M33 (mps2-an505)
@pytest.mark.parametrize("which", ["lstm", "bidirectional"])
def test_emulated_runs_match(tf_keras_lstm, tf_keras_bidirectional, tmp_path, which, board_name):
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    path = tf_keras_lstm if which == "lstm" else tf_keras_bidirectional
    compiled = compile_model(path, which)
    frames = np.random.default_rng(2).standard_normal((3, 1, STEPS, FEATURES)).astype(np.float32)
    r = run_emulated(compiled, load_board(board_name), path, str(tmp_path), inputs=[frames])
    assert r["samples"] == 3 and r["outputs_match"], r["outputs"]    # three frames, the state carried
    print(f"{which} on {board_name}: {r['instructions']} instructions per inference, {r['macs']} MACs")
