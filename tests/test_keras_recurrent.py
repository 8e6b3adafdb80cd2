"""Keras recurrent layers (LSTM, GRU, SimpleRNN, RNN of one cell or stacked cells, Bidirectional) ->
tinyc/ops/recurrent.py.

Each model is checked twice against Keras: the imported graph in the IR interpreter, and the generated C under
AddressSanitizer/UBSan (`tinyc verify`). Stateful layers run 50 frames, each compared with Keras carrying its state.
With TINYC_FULL: the other variants (every activation, GRU grid, merge modes, 40 random stacks), and an LSTM, a GRU,
a Bidirectional and the stateful model under QEMU on the Cortex-M0+ (pico: mps2-an385) and the Cortex-M33 (pico2:
mps2-an505).
"""
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from model_zoo import randomize  # noqa: E402
from test_keras_import import sample_inputs  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.frontends.keras_import import load_keras  # noqa: E402
from tinyc.frontends.keras_layers import ACTIVATIONS  # noqa: E402
from tinyc.interp import run  # noqa: E402
from tinyc.verify import verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
STEPS, FEATURES = 6, 3


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("keras_recurrent")


def _save(model, tmp):
    path = str(tmp / f"{model.name}.keras")
    model.save(path)
    return path


def _matches_keras(model, g, xs):
    """The interpreter against Keras (called eagerly: tracing a graph of many recurrent layers takes seconds)."""
    ref = model(xs if len(xs) > 1 else xs[0], training=False)
    ref = [np.asarray(r) for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
    got = run(g, xs)
    assert len(ref) == len(g.outputs)
    for r, name in zip(ref, g.outputs):
        err = np.abs(got[name] - r).max()
        assert got[name].shape == r.shape and err <= 1e-4 * (1 + np.abs(r).max()), (name, err)


def _check(model, tmp):
    """The imported graph in the interpreter and the generated C against Keras; returns the graph."""
    path = _save(model, tmp)
    g = load_keras(path)
    _matches_keras(model, g, sample_inputs(model))
    report = verify(path, samples=2, seed=3)
    assert report["ok"], report["outputs"]
    return g


# -- models --------------------------------------------------------------------------------------------------
def variants_model(cls, seed, **extra):
    """`cls` with every combination of go_backwards, return_sequences and return_state, all outputs returned."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((STEPS, FEATURES), name="x")
    outs = []
    for backwards in (False, True):
        for sequences in (False, True):
            name = f"{cls.__name__.lower()}{'_back' if backwards else ''}{'_seq' if sequences else ''}"
            outs += cls(4, go_backwards=backwards, return_sequences=sequences, return_state=True, name=name,
                        **extra)(x)
    return randomize(keras.Model(x, outs, name=f"variants_{cls.__name__.lower()}"), seed)


def options_model():
    """use_bias=False, GRU reset_after False (with and without bias), other activations, RNNs of one cell and of
    stacked cells, dropout and unroll (no effect at inference)."""
    keras.utils.set_random_seed(11)
    x = keras.Input((STEPS, FEATURES), name="x")
    outs = [layers.LSTM(5, use_bias=False, return_sequences=True, name="lstm_nobias")(x),
            layers.LSTM(3, activation="relu", recurrent_activation="hard_sigmoid", name="lstm_relu")(x),
            layers.GRU(4, use_bias=False, return_sequences=True, name="gru_nobias")(x),
            layers.GRU(4, reset_after=False, go_backwards=True, name="gru_v1")(x),
            layers.GRU(4, reset_after=False, use_bias=False, return_sequences=True, name="gru_v1_nobias")(x),
            layers.GRU(3, activation="softsign", recurrent_activation="hard_silu", name="gru_softsign")(x),
            layers.SimpleRNN(4, use_bias=False, activation="linear", return_sequences=True, name="rnn_linear")(x),
            layers.RNN(layers.LSTMCell(3), return_sequences=True, go_backwards=True, name="rnn_of_lstm_cell")(x),
            layers.RNN(layers.GRUCell(3, reset_after=False), name="rnn_of_gru_cell")(x),
            layers.RNN([layers.LSTMCell(3), layers.GRUCell(2)], go_backwards=True, return_sequences=True,
                       name="rnn_of_stacked_cells")(x),
            layers.LSTM(4, dropout=0.5, recurrent_dropout=0.5, unroll=True, name="lstm_dropout")(x)]
    return randomize(keras.Model(x, outs, name="options"), 11)


def stacked_cells_model():
    """RNNs of stacked cells (StackedRNNCells): forwards and backwards, with sequences and every cell's states,
    initial states from model inputs; in a Bidirectional."""
    keras.utils.set_random_seed(21)
    x = keras.Input((STEPS, FEATURES), name="x")
    h0 = [keras.Input((n,), name=f"h0_{k}") for k, n in enumerate((4, 4, 3))]
    cells = [layers.LSTMCell(4), layers.GRUCell(3, reset_after=False), layers.SimpleRNNCell(2)]
    outs = keras.tree.flatten(layers.RNN(cells, return_sequences=True, return_state=True, go_backwards=True,
                                         name="cells_back")(
        x, initial_state=[[h0[0], h0[1]], [h0[2]], [layers.Dense(2, name="h0_rnn")(h0[2])]]))
    outs += keras.tree.flatten(layers.RNN([layers.GRUCell(3), layers.LSTMCell(2)], return_state=True,
                                          name="cells")(x))
    outs.append(layers.Bidirectional(layers.RNN([layers.SimpleRNNCell(3), layers.GRUCell(2)], return_sequences=True),
                                     merge_mode="sum", name="bi_cells")(x))
    return randomize(keras.Model([x, *h0], outs, name="stacked_cells"), 21)


def activations_model():
    """Every activation of the frontend's table, each in a SimpleRNN of a chain (each layer's sequence feeds the
    next, all returned), and a few as an LSTM's recurrent activation."""
    keras.utils.set_random_seed(12)
    x = keras.Input((3, FEATURES), name="x")
    outs, h = [], x
    for name in sorted(ACTIVATIONS):
        h = layers.SimpleRNN(3, activation=name, return_sequences=True, name=f"rnn_{name}")(h)
        h = layers.LayerNormalization(name=f"norm_{name}")(h)     # keeps exponential & co. in range
        outs.append(h)
    for act, recurrent in (("relu6", "hard_silu"), ("softsign", "relu"), ("linear", "softplus")):
        outs.append(layers.LSTM(2, activation=act, recurrent_activation=recurrent, name=f"lstm_{recurrent}")(h))
    return randomize(keras.Model(x, outs, name="activations"), 12)


def bidirectional_model(mode):
    """Bidirectional with merge_mode `mode`: an LSTM with sequences and states, a GRU, a SimpleRNN forward
    layer with a GRU backward layer of its own."""
    keras.utils.set_random_seed(13)
    x = keras.Input((STEPS, FEATURES), name="x")
    outs = list(layers.Bidirectional(layers.LSTM(3, return_sequences=True, return_state=True), merge_mode=mode,
                                     name="bi_lstm")(x))
    y = layers.Bidirectional(layers.GRU(3), merge_mode=mode, name="bi_gru")(x)
    outs += list(y) if mode is None else [y]
    back = layers.GRU(3, go_backwards=True, return_sequences=True, reset_after=False)
    y = layers.Bidirectional(layers.SimpleRNN(3, return_sequences=True), merge_mode=mode, backward_layer=back,
                             name="bi_mixed")(x)
    outs += list(y) if mode is None else [y]
    return randomize(keras.Model(x, outs, name=f"bidirectional_{mode or 'none'}"), 13)


def stacked_model():
    """Stacked layers (sequences feeding the next layer), initial states from model inputs and from a Dense, a
    classifier head."""
    keras.utils.set_random_seed(14)
    x = keras.Input((STEPS, FEATURES), name="x")
    h0, c0 = keras.Input((6,), name="h0"), keras.Input((6,), name="c0")
    h = layers.LSTM(6, return_sequences=True, name="lstm1")(x, initial_state=[h0, c0])
    h, state = layers.GRU(5, return_sequences=True, return_state=True, go_backwards=True, name="gru2")(h)
    h = layers.Bidirectional(layers.LSTM(4, return_sequences=True), name="bi3")(h)
    h = layers.SimpleRNN(4, name="rnn4")(h, initial_state=layers.Dense(4, name="rnn4_h0")(state))
    y = layers.Dense(3, activation="softmax", name="head")(layers.Concatenate(name="features")([h, state]))
    return randomize(keras.Model([x, h0, c0], y, name="stacked"), 14)


# -- equivalence ---------------------------------------------------------------------------------------------
# The default run takes one model of each kind; TINYC_FULL the others.
def _full_only(*values):
    return [v if FULL else pytest.param(v, marks=pytest.mark.skip(reason="TINYC_FULL")) for v in values]


@pytest.mark.parametrize("cls", [layers.LSTM, layers.SimpleRNN, *_full_only(layers.GRU)],
                         ids=["lstm", "simple_rnn", "gru"])
def test_variants_match_keras(cls, tmp):
    _check(variants_model(cls, seed=10), tmp)


def test_options_match_keras(tmp):
    _check(options_model(), tmp)


@pytest.mark.skipif(not FULL, reason="every activation of the table: TINYC_FULL")
def test_activations_match_keras(tmp):
    _check(activations_model(), tmp)


@pytest.mark.parametrize("mode", ["concat", None, *_full_only("sum", "ave", "mul")])
def test_bidirectional_matches_keras(mode, tmp):
    _check(bidirectional_model(mode), tmp)


def test_stacked_matches_keras(tmp):
    _check(stacked_model(), tmp)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL (the default run has stacked cells in the options model)")
def test_stacked_cells_match_keras(tmp):
    _check(stacked_cells_model(), tmp)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL")
def test_time_distributed_matches_keras(tmp):
    """TimeDistributed recurrent layers: one node over a batch of N*T sequences."""
    keras.utils.set_random_seed(20)
    x = keras.Input((3, 5, 2), name="x")
    y = layers.TimeDistributed(layers.LSTM(4, go_backwards=True, return_sequences=True), name="td_lstm")(x)
    z = layers.TimeDistributed(layers.Bidirectional(layers.GRU(3)), name="td_bi")(x)
    _check(randomize(keras.Model(x, [y, z], name="time_distributed"), 20), tmp)


def random_stack(seed):
    """One or two recurrent layers of random kind, size and options (a Bidirectional at times), T and I down to 1;
    every output of every layer returned."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    x = keras.Input((int(rng.choice([1, 2, 5])), int(rng.choice([1, 3]))), name="x")
    outs, h, depth = [], x, int(rng.integers(1, 3))
    for k in range(depth):
        units, wrap = int(rng.integers(1, 4)), rng.random() < 0.4
        kw = dict(return_sequences=k < depth - 1 or rng.random() < 0.5, return_state=rng.random() < 0.5,
                  go_backwards=not wrap and rng.random() < 0.5)   # Bidirectional makes its own backward layer
        kind = rng.choice(["lstm", "gru", "gru_v1", "rnn", "cells"])
        if kind == "cells":
            layer = layers.RNN([layers.LSTMCell(units), layers.SimpleRNNCell(units)], **kw)
        else:
            cls = {"lstm": layers.LSTM, "gru": layers.GRU, "gru_v1": layers.GRU, "rnn": layers.SimpleRNN}[kind]
            layer = cls(units, use_bias=rng.random() < 0.7, **kw, **({"reset_after": False} if kind == "gru_v1"
                                                                      else {}))
        if wrap:
            layer = layers.Bidirectional(layer, merge_mode=rng.choice(["concat", "sum", "ave", "mul", None]))
        flat = keras.tree.flatten(layer(h))
        h, outs = flat[0], outs + flat[1:]
    return randomize(keras.Model(x, [h, *outs], name=f"random_stack_{seed}"), seed)


@pytest.mark.skipif(not FULL, reason="40 random models: TINYC_FULL")
def test_random_stacks_match_keras(tmp):
    """The interpreter on 40 random stacks, the C (verify) on every fourth, against Keras."""
    for seed in range(40):
        model = random_stack(seed)
        path = _save(model, tmp)
        _matches_keras(model, load_keras(path), sample_inputs(model))
        if seed % 4 == 0:
            report = verify(path, samples=2, seed=seed)
            assert report["ok"], (seed, report["outputs"])


# -- structure -----------------------------------------------------------------------------------------------
def _ops(g, prefix):
    return sorted(n.op for n in g.nodes if n.name.startswith(prefix))


def test_only_read_outputs_are_built(tmp):
    """A node per read output; the final h of a layer whose sequence is built is its last step (Slice, Reshape);
    an LSTM whose final c is read is one node giving it as its second output (cell_output); a backwards sequence is a Slice stepping back; a second output of the same value is an
    Identity copy."""
    keras.utils.set_random_seed(15)
    x = keras.Input((STEPS, FEATURES), name="x")
    _, h_only, _ = layers.LSTM(4, return_state=True, name="h_only")(x)
    _, _, c_only = layers.LSTM(4, return_state=True, name="c_only")(x)
    seq, seq_h, seq_c = layers.LSTM(4, return_sequences=True, return_state=True, go_backwards=True, name="all")(x)
    last, last_h = layers.GRU(4, return_state=True, name="twice")(x)
    model = randomize(keras.Model(x, [h_only, c_only, seq, seq_h, seq_c, last, last_h], name="structure"), 15)
    g = load_keras(_save(model, tmp))
    nodes = {n.name: n for n in g.nodes}
    assert _ops(g, "h_only") == ["LSTM"] and nodes["h_only_last_h"].attrs["output"] == "last_h"
    assert _ops(g, "c_only") == ["LSTM"]
    c_node = nodes["c_only_last_h"]
    assert c_node.attrs["cell_output"] and len(c_node.outputs) == 2 and c_node.outputs[1] in g.outputs
    assert _ops(g, "all") == ["LSTM", "Reshape", "Slice", "Slice"]
    joint = nodes["all_sequence"]
    assert joint.attrs["output"] == "sequence" and joint.attrs["reverse"] and joint.attrs["cell_output"]
    assert [g.tensors[o].shape for o in joint.outputs] == [(1, STEPS, 4), (1, 4)]
    assert nodes["all"].attrs["starts"] == (0, STEPS - 1, 0) and nodes["all"].attrs["steps"] == (1, -1, 1)
    assert nodes["all_last_h_step"].attrs["starts"] == (0, 0, 0)    # a reverse layer ends at step 0
    assert joint.outputs[1] in g.outputs
    assert _ops(g, "twice") == ["GRU", "Identity"]
    _matches_keras(model, g, sample_inputs(model))


# -- stateful ------------------------------------------------------------------------------------------------
FRAMES = 50


def stateful_model(full=True):
    """A streaming model: one frame of 2 steps per call, stateful LSTM -> stateful backwards GRU; `full`: also a
    stateful Bidirectional SimpleRNN and a stateful RNN of two stacked cells."""
    keras.utils.set_random_seed(16)
    x = keras.Input((2, FEATURES), batch_size=1, name="frame")
    h = layers.LSTM(5, stateful=True, return_sequences=True, name="lstm")(x)
    outs = [layers.GRU(4, stateful=True, go_backwards=True, name="gru")(h)]
    if full:
        outs.append(layers.Bidirectional(layers.SimpleRNN(3, stateful=True), merge_mode="sum", name="bi")(h))
        outs.append(layers.RNN([layers.GRUCell(2), layers.SimpleRNNCell(2)], stateful=True, name="cells")(x))
    return randomize(keras.Model(x, outs, name="stateful" if full else "stateful_small"), 16)


@pytest.mark.parametrize("full", [False, *_full_only(True)], ids=["lstm_gru", "all"])
def test_stateful_carries_state_frame_by_frame(full, tmp):
    """The C (host, sanitizers) against Keras on 50 consecutive frames, both carrying the layers' states."""
    path = _save(stateful_model(full), tmp)
    g = load_keras(path)
    states = {"gru_state_h": 4, "lstm_state_c": 5, "lstm_state_h": 5}
    if full:
        states.update(bi_backward_state_h=3, bi_forward_state_h=3, cells_cell0_state_h=2, cells_cell1_state_h=2)
    assert sorted(g.state) == sorted(states)
    assert g.state["gru_state_h"] == "gru" and all(not v.any() for v in g.initial_state().values())
    report = verify(path, samples=FRAMES, seed=2)
    assert report["ok"] and report["frames"] == FRAMES, report["outputs"]
    assert sum(row["bytes"] for row in report["state"]) == 4 * sum(states.values())


# -- refused -------------------------------------------------------------------------------------------------
def _refused(model, tmp, match):
    with pytest.raises(TinycError, match=match):
        load_keras(_save(model, tmp))


def test_mask_is_refused(tmp):
    ids = keras.Input((5,), dtype="int32", name="ids")
    h = layers.Embedding(10, 4, mask_zero=True, name="embed")(ids)
    _refused(keras.Model(ids, layers.LSTM(3, name="masked_lstm")(h), name="masked"), tmp,
             r"layer 'masked_lstm' \(LSTM\) is called with a mask .*mask_zero=True or a Masking layer")
    x = keras.Input((5, 2), name="x")
    h = layers.Masking(name="masking")(x)
    _refused(keras.Model(x, layers.Bidirectional(layers.GRU(3), name="masked_bi")(h), name="masked2"), tmp,
             r"layer 'masked_bi' \(Bidirectional\) is called with a mask")


def test_softmax_in_a_cell_is_refused(tmp):
    x = keras.Input((5, 2), name="x")
    _refused(keras.Model(x, layers.SimpleRNN(3, activation="softmax", name="soft")(x), name="soft"), tmp,
             r"SimpleRNN 'soft' uses softmax inside its cell")
    _refused(keras.Model(x, layers.GRU(3, recurrent_activation="squareplus", name="sq")(x), name="sq"), tmp,
             r"activation 'squareplus' of layer 'sq' \(GRU\) is not supported")


def test_stateful_batch_above_one_is_refused(tmp):
    x = keras.Input((1, 2), batch_size=2, name="x")
    _refused(keras.Model(x, layers.LSTM(3, stateful=True, name="batched")(x), name="batched"), tmp,
             r"LSTM 'batched' is stateful with batch size 2; .*batch_size=1")


def test_other_multi_output_layers_are_refused(tmp):
    """Only the recurrent rules give several outputs; another layer's second output is refused in one line."""
    q = keras.Input((4, 8), name="q")
    out, scores = layers.MultiHeadAttention(2, 4, name="mha")(q, q, return_attention_scores=True)
    _refused(keras.Model(q, [out, scores], name="mha_scores"), tmp,
             r"layer 'mha' \(MultiHeadAttention\) has 2 outputs; tinyc converts it with one output only")


def test_keras2_recurrent_h5_is_refused(tmp):
    tf_keras = pytest.importorskip("tf_keras")
    x = tf_keras.Input((5, 2))
    path = str(tmp / "keras2_lstm.h5")
    tf_keras.Model(x, tf_keras.layers.LSTM(3)(x)).save(path)
    with pytest.raises(TinycError, match=r"a Keras 2 \(tf_keras\) model with recurrent layers \(time_major\)"):
        load_keras(path)


def test_shared_stateful_layer_is_refused(tmp):
    a, b = keras.Input((1, 2), batch_size=1, name="a"), keras.Input((1, 2), batch_size=1, name="b")
    shared = layers.GRU(3, stateful=True, name="shared")
    _refused(keras.Model([a, b], [shared(a), shared(b)], name="shared"), tmp,
             r"GRU 'shared' is stateful and called 2 times")


# -- on target -----------------------------------------------------------------------------------------------
def kws_lstm():
    keras.utils.set_random_seed(17)
    x = keras.Input((12, 10), name="mfcc")
    h = layers.LSTM(16, return_sequences=True, name="lstm1")(x)
    h = layers.LSTM(12, go_backwards=True, name="lstm2")(h)
    return randomize(keras.Model(x, layers.Dense(4, activation="softmax", name="out")(h), name="qemu_lstm"), 17)


def kws_gru():
    keras.utils.set_random_seed(18)
    x = keras.Input((12, 10), name="mfcc")
    h = layers.GRU(16, return_sequences=True, name="gru1")(x)
    h = layers.GRU(12, reset_after=False, name="gru2")(h)
    return randomize(keras.Model(x, layers.Dense(4, activation="softmax", name="out")(h), name="qemu_gru"), 18)


def kws_bidirectional():
    keras.utils.set_random_seed(19)
    x = keras.Input((12, 10), name="mfcc")
    h = layers.Bidirectional(layers.LSTM(8, return_sequences=True), name="bi1")(x)
    h = layers.Bidirectional(layers.GRU(6), merge_mode="ave", name="bi2")(h)
    h = layers.Concatenate(name="features")([h, layers.SimpleRNN(4, name="rnn")(x)])
    return randomize(keras.Model(x, layers.Dense(4, activation="softmax", name="out")(h), name="qemu_bi"), 19)


@pytest.mark.skipif(not FULL, reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2"])     # Cortex-M0+ (mps2-an385), Cortex-M33 (mps2-an505)
@pytest.mark.parametrize("build", [kws_lstm, kws_gru, kws_bidirectional], ids=["lstm", "gru", "bidirectional"])
def test_emulated_runs_match(build, board_name, tmp, tmp_path):
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    path = _save(build(), tmp)
    assert verify(path, samples=3, seed=4)["ok"]
    compiled = compile_model(path)
    r = run_emulated(compiled, load_board(board_name), path, str(tmp_path))
    assert r["outputs_match"], r["outputs"]
    assert r["macs"] == compiled.library.macs and r["instructions"] > r["macs"]


@pytest.mark.skipif(not FULL, reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2"])
def test_emulated_stateful_frames_match(board_name, tmp, tmp_path):
    """The firmware runs 50 frames in order on one state; each frame's outputs equal Keras' carrying its state."""
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    path = _save(stateful_model(), tmp)
    frames = np.random.default_rng(5).normal(0, 1.5, (FRAMES, 1, 2, FEATURES)).astype(np.float32)
    r = run_emulated(compile_model(path), load_board(board_name), path, str(tmp_path), inputs=[frames])
    assert r["samples"] == FRAMES and r["outputs_match"], r["outputs"]
