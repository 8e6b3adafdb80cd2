"""TFLite's recurrent operators -> the IR's LSTM / RNN nodes (tinyc/ops/recurrent.py), float32.

UNIDIRECTIONAL_SEQUENCE_LSTM reads 24 inputs (lite/kernels/lstm_shared.h): x, the input weights of gates i, f,
g (TFLite's "cell"), o [H,I], the recurrent weights [H,H], the peepholes (cell-to-gate vectors of i, f, o), the
four gate biases, projection weights and bias, the output (h) and cell (c) state, and four layer-norm vectors. The
IR node stacks the four gates' weights ([4H,I], [4H,H], [4H]) in the same order, i, f, g, o. Gates use sigmoid; the
fused activation is the cell gate's and the output's; `cell_clip` > 0 clamps the cell state (TFLite's converter
writes 10 for every Keras LSTM); `time_major` puts time first, a Transpose on each side here.

CIFG (no input-gate weights; TFLite's input gate is 1 - forget gate) is the IR's `input_forget` (f = 1 - i) with
the input slot computing 1 - f: sigmoid(-z) = 1 - sigmoid(z), so the input slot gets the negated forget-gate
weights, bias and peephole; the forget slot is then unused and holds the forget weights.

The states are TFLite variable tensors: the kernel reads them as the initial h and c and writes the final h and c
back, so TFLite's interpreter carries them from one invoke() to the next (until reset_all_variables()). Here they
are streaming state tensors (docs/streaming-state.md), zeros at first (or the tensor's buffer), whose next values
are the final h and c: the node gives its sequence and, as its second output, its final c (cell_output), so
the C computes what TFLite computes invoke after invoke. Diagonal recurrent weights (vectors) become diagonal
matrices.

BIDIRECTIONAL_SEQUENCE_LSTM is two such nodes (the backward one `reverse`) and, with merge_outputs, a Concat;
UNIDIRECTIONAL_SEQUENCE_RNN (x, w [H,I], r [H,H], b, h) is one RNN node; REVERSE_V2 is a Slice with step -1 on
its axes, except the converter's pair around a backward layer (REVERSE_V2, the layer, Reshapes, REVERSE_V2),
which folds into the node run backwards. Projection (LSTMP), layer normalization, auxiliary inputs and hybrid
(int8-weight) models are refused. An int8 UNIDIRECTIONAL_SEQUENCE_LSTM is TFLite's integer LSTM
(tflite_lstm_int8.py).
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from .tflite_lstm_int8 import int8_lstm
from .tflite_rnn_loop import private_to, time_flip, while_loop

# ActivationFunctionType (schema.fbs) -> IR activation; NONE and SIGN_BIT have no IR activation
ACTIVATIONS = {1: {"fn": "relu"}, 2: {"fn": "clip", "lo": -1.0, "hi": 1.0}, 3: {"fn": "clip", "lo": 0.0, "hi": 6.0},
               4: {"fn": "tanh"}}
SIGMOID = {"fn": "sigmoid"}

# UNIDIRECTIONAL_SEQUENCE_LSTM's inputs (lstm_shared.h), in order
LSTM_INPUTS = ("input",
               "input_to_input_weights", "input_to_forget_weights", "input_to_cell_weights", "input_to_output_weights",
               "recurrent_to_input_weights", "recurrent_to_forget_weights", "recurrent_to_cell_weights",
               "recurrent_to_output_weights",
               "cell_to_input_weights", "cell_to_forget_weights", "cell_to_output_weights",
               "input_gate_bias", "forget_gate_bias", "cell_gate_bias", "output_gate_bias",
               "projection_weights", "projection_bias", "output_state", "cell_state",
               "input_layer_norm_coefficients", "forget_layer_norm_coefficients", "cell_layer_norm_coefficients",
               "output_layer_norm_coefficients")
GATES = ("input", "forget", "cell", "output")
# one direction's 17 weight inputs in BIDIRECTIONAL_SEQUENCE_LSTM: LSTM_INPUTS[1:18]; then the states
BIDI_FW, BIDI_BW, BIDI_STATES, BIDI_AUX = 1, 18, 35, 39


def _present(ins, k) -> bool:
    return k < len(ins) and ins[k] >= 0


def _activation(cv, code) -> dict:
    act = ACTIVATIONS.get(int(code or 0))
    if act is None:
        raise TinycError(f"{cv.where()}: fused activation {int(code or 0)} (NONE or SIGN_BIT) of a recurrent op is "
                         "not supported; use tanh, relu or relu6")
    return dict(act)


def _float_weights(cv, i, what) -> np.ndarray:
    v = cv.value(i, what)
    if v.dtype != np.float32:
        raise TinycError(f"{cv.where()}: {what} '{cv.tname(i)}' is {cv.dtype_name(i)} with a float32 input: hybrid "
                         "recurrent models are not supported; convert without quantization or fully to int8")
    return v


def _state(cv, i, shape, what) -> str:
    """A state input: a model input or computed tensor as it is; a variable tensor (the converter's) a streaming
    state tensor (docs/streaming-state.md) starting at zeros, or at its buffer when it has one, whose next value
    the rule sets with `_carry`; an absent one zeros."""
    if i >= 0 and i in cv.names:
        if cv.names[i] in cv.g.state:
            raise TinycError(f"{cv.where()}: {what} '{cv.tname(i)}' is the state of an earlier recurrent operator "
                             "too; tinyc carries a variable tensor for one operator")
        return cv.names[i]
    value = cv.values.get(i) if i >= 0 else None
    declared = tuple(int(d) for d in cv.tensor(i).shape) if i >= 0 and cv.tensor(i).shape is not None else None
    if value is not None and tuple(value.shape) != tuple(shape) or declared not in (None, (), tuple(shape)):
        raise TinycError(f"{cv.where()}: {what} '{cv.tname(i)}' has shape {declared}, expected {shape}")
    if i >= 0 and cv.tensor(i).isVariable:
        name = cv.g.unique_name(f"{cv.tname(cv.out).split(';')[0]}_{what}")   # (the converter's: arith.constantN)
        cv.g.add_state(name, shape, "float32", initial=value, source_name=None)
        cv.names[i] = name
        return name
    if value is None:
        value = np.zeros(shape, np.float32)
    base = cv.tname(i).split(";")[0] if i >= 0 else f"{cv.tname(cv.out)}_{what}"
    return cv.g.add_const(base or what, np.asarray(value, np.float32))


def _carry(cv, state: str, next_value) -> None:
    """Set the next value of `state` if it is a state tensor (a variable input); `next_value()` makes it."""
    if state in cv.g.state and cv.g.state[state] is None:
        cv.g.state[state] = next_value()


def _last_step(cv, seq: str, reverse: bool) -> str:
    """The final hidden state [B,H] of a batch-major sequence [B,T,H]: its last step in processing order."""
    B, T, H = cv.g.tensors[seq].shape
    step = cv.emit("Slice", [seq], (B, 1, H), final=False, tag="final_step", like=seq,
                   starts=(0, 0 if reverse else T - 1, 0), steps=(1, 1, 1), sizes=(B, 1, H))
    return cv.emit("Reshape", [step], (B, H), final=False, tag="final_h", like=seq)


def _to_batch_major(cv, x: str, time_major: bool) -> str:
    """x[T,B,I] -> [B,T,I] when time-major (one IR tensor: the node reads batch-major)."""
    if not time_major:
        return x
    t, b, i = cv.g.tensors[x].shape
    return cv.emit("Transpose", [x], (b, t, i), final=False, tag="batch_major", like=x, perm=(1, 0, 2))


def _from_batch_major(cv, y: str, time_major: bool, final: bool = True) -> str:
    if not time_major:
        return y
    b, t, h = cv.g.tensors[y].shape
    return cv.emit("Transpose", [y], (t, b, h), final=final, tag="time_major", perm=(1, 0, 2))


def _input_shape(cv, i, time_major) -> tuple:
    shape = cv.shape(i)
    if len(shape) != 3:
        raise TinycError(f"{cv.where()}: input '{cv.tname(i)}' has shape {shape}; a 3-D sequence "
                         f"({'[time, batch, features]' if time_major else '[batch, time, features]'}) is needed")
    return shape


def lstm_parameters(cv, ins, first: int, n_input: int) -> dict:
    """One direction's IR weights from its 17 TFLite inputs starting at `first` (the input-to-input weights):
    w [4H,I], r [4H,H], b [4H], p [3H] in gate order i, f, g, o, and `cifg`. Refuses projection and layer norm."""
    k = {name: first + j for j, name in enumerate(LSTM_INPUTS[1:18])}
    if _present(ins, k["projection_weights"]) or _present(ins, k["projection_bias"]):
        raise TinycError(f"{cv.where()}: projection (LSTMP: projection_weights / projection_bias) is not supported")
    cifg = not _present(ins, k["input_to_input_weights"])
    if cifg and (_present(ins, k["recurrent_to_input_weights"]) or _present(ins, k["input_gate_bias"])):
        raise TinycError(f"{cv.where()}: input-gate weights absent but its recurrent weights or bias present; the "
                         ".tflite file is corrupt")
    wx, wh, bias = {}, {}, {}
    for gate in GATES[1:] if cifg else GATES:
        wx[gate] = _float_weights(cv, ins[k[f"input_to_{gate}_weights"]], f"input_to_{gate}_weights")
        wh[gate] = _float_weights(cv, ins[k[f"recurrent_to_{gate}_weights"]], f"recurrent_to_{gate}_weights")
        bias[gate] = _float_weights(cv, ins[k[f"{gate}_gate_bias"]], f"{gate}_gate_bias")
    H = wx["forget"].shape[0]
    if wh["forget"].ndim == 1:            # diagonal_recurrent_tensors: each recurrent weight is a diagonal
        wh = {gate: np.diag(v) for gate, v in wh.items()}
    peep = {}
    for gate in ("input", "forget", "output"):
        j = k[f"cell_to_{gate}_weights"]
        peep[gate] = _float_weights(cv, ins[j], f"cell_to_{gate}_weights") if _present(ins, j) else None
    if (peep["forget"] is None) != (peep["output"] is None) or (not cifg and (peep["input"] is None)
                                                                 != (peep["forget"] is None)):
        raise TinycError(f"{cv.where()}: peepholes (cell_to_*_weights) must be all present or all absent")
    peep = {gate: np.zeros(H, np.float32) if v is None else v for gate, v in peep.items()}
    if cifg:   # the input slot computes sigmoid(-(z_f + p_f c)) = 1 - f; the forget slot is unused
        wx["input"], wh["input"], bias["input"], peep["input"] = (-wx["forget"], -wh["forget"], -bias["forget"],
                                                                  -peep["forget"])
    want = dict(wx=(H, n_input), wh=(H, H), bias=(H,), peep=(H,))
    for what, values in (("wx", wx), ("wh", wh), ("bias", bias), ("peep", peep)):
        for gate, v in values.items():
            if tuple(v.shape) != want[what]:
                raise TinycError(f"{cv.where()}: {gate} gate {what} has shape {tuple(v.shape)}, expected "
                                 f"{want[what]} (input size {n_input}, {H} cells)")
    return dict(w=np.concatenate([wx[gate] for gate in GATES]), r=np.concatenate([wh[gate] for gate in GATES]),
                b=np.concatenate([bias[gate] for gate in GATES]),
                p=np.concatenate([peep[gate] for gate in ("input", "forget", "output")]), cifg=cifg, hidden=H)


def lstm_node(cv, x: str, params: dict, h0: str, c0: str, activation: dict, cell_clip: float, reverse: bool,
              final: bool, tag: str = "lstm") -> str:
    """The IR LSTM node of one direction over batch-major x, its whole output sequence [B,T,H]; when h0 / c0 are
    state tensors (TFLite variables), their next values: the sequence's last step, and the final cell state, the
    same node's second output (cell_output)."""
    B, T, _ = cv.g.tensors[x].shape
    H = params["hidden"]
    base = cv.tname(cv.out).split(";")[0] or "lstm"
    consts = [cv.g.add_const(f"{base}_{k}", params[k].astype(np.float32)) for k in ("w", "r", "b")]
    p = cv.g.add_const(f"{base}_p", params["p"].astype(np.float32))
    attrs = dict(activations=(dict(SIGMOID), activation, activation), clip=None,
                 cell_clip=float(cell_clip) if cell_clip and cell_clip > 0 else None, input_forget=params["cifg"],
                 reverse=reverse)
    inputs = [x, *consts, h0, c0, p]
    carries_c = c0 in cv.g.state and cv.g.state[c0] is None
    y = cv.emit("LSTM", inputs, (B, T, H), final=final, tag=tag, output="sequence", **attrs,
                **({"cell_output": True} if carries_c else {}))
    _carry(cv, h0, lambda: _last_step(cv, y, reverse))
    if carries_c:
        c = cv.g.add_tensor(cv.g.unique_name(f"{y}_final_c"), (B, H)).name
        cv.g.producer(y).outputs.append(c)
        cv.g.state[c0] = c
    return y


def _refuse_int8(cv, ins):
    if cv.dtype_name(ins[0]) != "FLOAT32":
        raise TinycError(f"{cv.where()}: a {cv.dtype_name(ins[0])} {cv.op_name} is not supported yet; tinyc compiles "
                         "float32 recurrent ops")


def unidirectional_sequence_lstm(cv, opts, ins):
    if cv.dtype_name(ins[0]) == "INT8":
        return int8_lstm(cv, opts, ins)
    _refuse_int8(cv, ins)
    for j in range(20, 24):
        if _present(ins, j):
            raise TinycError(f"{cv.where()}: layer normalization ({LSTM_INPUTS[j]}) is not supported")
    time_major = bool(opts.timeMajor) if opts is not None else False
    shape = _input_shape(cv, ins[0], time_major)
    B = shape[1] if time_major else shape[0]
    params = lstm_parameters(cv, ins, 1, shape[2])
    H = params["hidden"]
    h0 = _state(cv, ins[18], (B, H), "output_state")
    c0 = _state(cv, ins[19], (B, H), "cell_state")
    x = _to_batch_major(cv, cv.x(ins[0]), time_major)
    y = lstm_node(cv, x, params, h0, c0, _activation(cv, opts.fusedActivationFunction if opts else 0),
                  opts.cellClip if opts is not None else 0.0, False, final=not time_major)
    return _from_batch_major(cv, y, time_major)


def bidirectional_sequence_lstm(cv, opts, ins):
    """Two LSTM nodes (the backward one reversed, its outputs in input order as TFLite's) and, with
    merge_outputs, a Concat of [forward, backward] on the feature axis."""
    _refuse_int8(cv, ins)
    if any(_present(ins, j) for j in range(BIDI_AUX, 48)):
        raise TinycError(f"{cv.where()}: auxiliary inputs (aux_input and its weights) are not supported")
    time_major = bool(opts.timeMajor) if opts is not None else True
    merge = bool(opts.mergeOutputs) if opts is not None else False
    if len(cv.outs) != (1 if merge else 2):
        raise TinycError(f"{cv.where()}: {len(cv.outs)} outputs with merge_outputs={merge}; expected "
                         f"{1 if merge else 2}")
    shape = _input_shape(cv, ins[0], time_major)
    B = shape[1] if time_major else shape[0]
    act = _activation(cv, opts.fusedActivationFunction if opts else 0)
    clip = opts.cellClip if opts is not None else 0.0
    x = _to_batch_major(cv, cv.x(ins[0]), time_major)
    ys = []
    for k, (first, reverse) in enumerate(((BIDI_FW, False), (BIDI_BW, True))):
        if not merge:
            cv.out = cv.outs[k]
        params = lstm_parameters(cv, ins, first, shape[2])
        H = params["hidden"]
        h0 = _state(cv, ins[BIDI_STATES + 2 * k], (B, H), "output_state")
        c0 = _state(cv, ins[BIDI_STATES + 2 * k + 1], (B, H), "cell_state")
        y = lstm_node(cv, x, params, h0, c0, act, clip, reverse, final=not (merge or time_major),
                      tag="bw" if reverse else "fw")
        ys.append(y if merge else _from_batch_major(cv, y, time_major))
    if not merge:
        return ys[-1]
    cv.out = cv.outs[0]
    b, t, _ = cv.g.tensors[ys[0]].shape
    width = sum(cv.g.tensors[y].shape[2] for y in ys)
    y = cv.emit("Concat", ys, (b, t, width), final=not time_major, tag="merged", axis=2)
    return _from_batch_major(cv, y, time_major)


def unidirectional_sequence_rnn(cv, opts, ins):
    """UNIDIRECTIONAL_SEQUENCE_RNN(x, w [H,I], r [H,H], b [H], h [B,H]): h = act(x w^T + h r^T + b)."""
    _refuse_int8(cv, ins)
    time_major = bool(opts.timeMajor) if opts is not None else False
    shape = _input_shape(cv, ins[0], time_major)
    B = shape[1] if time_major else shape[0]
    w = _float_weights(cv, ins[1], "input_weights")
    r = _float_weights(cv, ins[2], "recurrent_weights")
    b = _float_weights(cv, ins[3], "bias")
    H = w.shape[0] if w.ndim == 2 else -1
    if w.shape != (H, shape[2]) or r.shape != (H, H) or b.shape != (H,):
        raise TinycError(f"{cv.where()}: weights {w.shape}, recurrent weights {r.shape} and bias {b.shape} do not fit "
                         f"input {shape}")
    h0 = _state(cv, ins[4], (B, H), "hidden_state")
    x = _to_batch_major(cv, cv.x(ins[0]), time_major)
    consts = [cv.const(i) for i in ins[1:4]]
    act = _activation(cv, opts.fusedActivationFunction if opts else 0)
    y = cv.emit("RNN", [x, *consts, h0], (B, shape[0] if time_major else shape[1], H), final=not time_major,
                tag="rnn", activations=(act,), clip=None, reverse=False, output="sequence")
    _carry(cv, h0, lambda: _last_step(cv, y, False))
    return _from_batch_major(cv, y, time_major)


def reverse_v2(cv, opts, ins):
    """REVERSE_V2: a Slice walking its axes backwards."""
    shape = cv.shape(ins[0])
    axes = {int(a) for a in cv.value(ins[1], "axis").reshape(-1)}
    if any(not -len(shape) <= a < len(shape) for a in axes):
        raise TinycError(f"{cv.where()}: axes {sorted(axes)} are out of range for rank {len(shape)}")
    axes = {a % len(shape) for a in axes}
    starts = tuple(d - 1 if a in axes else 0 for a, d in enumerate(shape))
    steps = tuple(-1 if a in axes else 1 for a in range(len(shape)))
    if not any(shape[a] > 1 for a in axes):
        return cv.emit("Identity", [cv.x(ins[0])], shape)
    if len(axes) == 1 and len(shape) == 3 and _runs_backwards(cv, cv.x(ins[0]), min(axes)):
        return cv.emit("Identity", [cv.x(ins[0])], shape)
    return cv.emit("Slice", [cv.x(ins[0])], shape, starts=starts, steps=steps, sizes=tuple(shape))


def _reshape_chain(cv, name: str, readers: list):
    """Up from `name` through the Reshapes that make it: (the tensors they make, bottom first, each read by nothing
    else: `readers` for `name`, the next Reshape for the others; None if one is read elsewhere) and the first
    tensor no Reshape makes."""
    chain = []
    while True:
        p = cv.g.producer(name)
        if p is None or p.op != "Reshape":
            return chain, name
        if not private_to(cv, name, readers):
            return None, name
        chain.append(name)
        readers, name = [p], p.inputs[0]


def _runs_backwards(cv, y: str, axis: int) -> bool:
    """The backward direction as the converter writes it: REVERSE_V2(time) -> recurrent layer (an op, or a WHILE
    loop with Reshapes around it) -> REVERSE_V2(time). When `y` (what the second reversal reads, on `axis`) is the
    forward node's sequence over a time-reversed x, and nothing else reads the tensors in between, the node (and its
    final-state twins) runs backwards over x itself (`reverse`: its sequence in x's order) and both reversal
    copies go: returns True, `y` then holds the reversed sequence (no longer the TFLite tensor it is named after).
    Batch 1 (a batch-major reshape keeps the order of time steps)."""
    g = cv.g
    chain_out, seq = _reshape_chain(cv, y, [])
    node = g.producer(seq)
    if chain_out is None or node is None or node.op not in ("LSTM", "GRU", "RNN") or \
            node.attrs.get("output") != "sequence" or node.attrs.get("reverse") or \
            g.tensors[seq].shape[0] != 1:
        return False
    _, T, H = g.tensors[seq].shape
    shape = g.tensors[y].shape
    if axis == len(shape) - 1 or shape[axis] != T or any(d != 1 for a, d in enumerate(shape[:-1]) if a != axis):
        return False                              # not the time axis of y
    finals = [n for n in g.consumers(seq) if n.op == "Slice" and tuple(n.attrs["sizes"]) == (1, 1, H)]
    if not private_to(cv, seq, finals + ([g.producer(chain_out[-1])] if chain_out else [])):
        return False
    twins = [n for n in g.consumers(node.inputs[0]) if n is not node]
    if any(n.op != node.op or n.inputs[1:] != node.inputs[1:] or n.attrs.get("output") == "sequence" for n in twins):
        return False
    chain_in, flipped = _reshape_chain(cv, node.inputs[0], [node] + twins)
    if chain_in is None:
        return False
    flip = time_flip(g, flipped, T, g.tensors[node.inputs[0]].shape[2])
    if flip is None or not private_to(cv, flipped, [g.producer(chain_in[-1])] if chain_in else [node] + twins):
        return False
    for n in g.consumers(flipped):
        n.inputs = [flip.inputs[0] if i == flipped else i for i in n.inputs]
    g.nodes.remove(flip)
    for n in [node] + twins:
        n.attrs["reverse"] = True
    for n in finals:
        n.attrs["starts"] = (0, T - 1 - n.attrs["starts"][1], 0)
    for name in chain_out + [seq] + chain_in:
        g.tensors[name].source_name = None
    return True


RECURRENT_OPS = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": unidirectional_sequence_lstm,
    "BIDIRECTIONAL_SEQUENCE_LSTM": bidirectional_sequence_lstm,
    "UNIDIRECTIONAL_SEQUENCE_RNN": unidirectional_sequence_rnn,
    "REVERSE_V2": reverse_v2,
    "WHILE": while_loop,
}
RECURRENT_MULTI_OUTPUT = frozenset({"BIDIRECTIONAL_SEQUENCE_LSTM", "WHILE"})
