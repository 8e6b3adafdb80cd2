"""TFLite's integer UNIDIRECTIONAL_SEQUENCE_LSTM (int8 input and hidden state, int16 cell state, int8 weights,
int32 biases; what the converter writes for a tf_keras LSTM with a representative dataset and int8 I/O) -> the
int8 form of the IR's LSTM node (tinyc/ops/lstm_int8.py).

The float rule (tflite_recurrent.unidirectional_sequence_lstm) hands int8 operators to `int8_lstm`. The four
gates' weights are stacked in the IR's order i, f, g, o with one scale per gate (per channel along axis 0, each
scale repeated H times); the biases stay int32 as stored. The state tensors are TFLite variable tensors, which
TFLite keeps across invoke() and resets to their zero points (reset_all_variables, and before the first
invoke()): they become streaming state tensors (docs/streaming-state.md), h0 int8 and c0 int16 with their
quantization, starting at their zero points; their next values are the sequence's last step and the final cell
state (the node's second output, `cell_output`). The fifth intermediate tensor
("effective hidden") gives the hidden value's scale and zero point (`hidden_quant`); the other four, the gates'
calibrated ranges, only matter for layer normalization, which is refused with projection, peepholes, CIFG,
time-major input, diagonal recurrent weights and other fused activations than tanh.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Quant

TANH = 4                            # ActivationFunctionType
GATES = ("input", "forget", "cell", "output")
INPUT_WEIGHTS, RECURRENT_WEIGHTS, BIASES = (1, 2, 3, 4), (5, 6, 7, 8), (12, 13, 14, 15)
REFUSED = {9: "cell_to_input_weights (peepholes)", 10: "cell_to_forget_weights (peepholes)",
           11: "cell_to_output_weights (peepholes)", 16: "projection_weights (projection)",
           17: "projection_bias (projection)", 20: "input_layer_norm_coefficients (layer normalization)",
           21: "forget_layer_norm_coefficients (layer normalization)",
           22: "cell_layer_norm_coefficients (layer normalization)",
           23: "output_layer_norm_coefficients (layer normalization)"}
HIDDEN_INTERMEDIATE = 4


def _refuse(cv, what: str) -> TinycError:
    return TinycError(f"{cv.where()}: int8 LSTM with {what} is not supported; tinyc compiles TFLite's integer LSTM "
                      "without peepholes, projection, layer normalization or CIFG")


def _gate_weights(cv, ins, indices, cols: int, what: str) -> tuple[np.ndarray, list]:
    """The four gates' int8 weights stacked [4H, cols], and their per-tensor scales."""
    arrays, scales = [], []
    for gate, i in zip(GATES, indices):
        name = f"{what}_to_{gate}_weights"
        if cv.dtype_name(ins[i]) != "INT8":
            raise TinycError(f"{cv.where()}: {name} '{cv.tname(ins[i])}' is {cv.dtype_name(ins[i])}; TFLite's integer "
                             "LSTM takes int8 weights")
        v = cv.value(ins[i], name)
        q = cv.quant(ins[i])
        if q is None or q.axis is not None or int(q.zero_point) != 0:
            raise TinycError(f"{cv.where()}: {name} '{cv.tname(ins[i])}' needs one symmetric scale (per-tensor, zero "
                             "point 0), which TFLite's integer LSTM reads")
        if v.ndim != 2 or v.shape[1] != cols:
            raise TinycError(f"{cv.where()}: {name} has shape {tuple(v.shape)}, expected [H, {cols}]"
                             + (" (diagonal recurrent weights are not supported in int8)" if v.ndim == 1 else ""))
        arrays.append(v)
        scales.append(float(q.scale))
    if len({a.shape[0] for a in arrays}) != 1:
        raise TinycError(f"{cv.where()}: the four gates' {what} weights have different numbers of cells")
    return np.concatenate(arrays).astype(np.int8), scales


def _weights_const(cv, name: str, data: np.ndarray, scales: list) -> str:
    H = data.shape[0] // 4
    t = cv.g.add_const(name, data, "int8")
    cv.g.tensors[t].quant = Quant(np.repeat(np.asarray(scales, np.float32), H), np.zeros(4 * H, np.int64), 0)
    return t


def _state(cv, i: int, shape: tuple, dtype: str, what: str) -> str:
    """A state input: a computed int8 tensor as it is; a variable tensor (the converter's) a streaming state tensor
    (docs/streaming-state.md) starting at its reset value, the zero point, with its quantization."""
    if i < 0:
        raise TinycError(f"{cv.where()}: the {what} state input is absent; the .tflite file is corrupt")
    want = {"int8": "INT8", "int16": "INT16"}[dtype]
    if cv.dtype_name(i) != want:
        raise TinycError(f"{cv.where()}: {what} state '{cv.tname(i)}' is {cv.dtype_name(i)}; TFLite's integer LSTM "
                         f"keeps it {want}")
    if i in cv.names:
        if cv.names[i] in cv.g.state:
            raise TinycError(f"{cv.where()}: {what} state '{cv.tname(i)}' is the state of an earlier recurrent "
                             "operator too; tinyc carries a variable tensor for one operator")
        if dtype != "int8":
            raise TinycError(f"{cv.where()}: a computed {what} state ('{cv.tname(i)}') is not supported; tinyc reads "
                             "an int8 LSTM's cell state from its variable tensor")
        return cv.names[i]
    if cv.is_const(i) or not cv.tensor(i).isVariable:
        raise TinycError(f"{cv.where()}: {what} state '{cv.tname(i)}' is not a variable tensor without a buffer (a "
                         "constant state TFLite would overwrite); the .tflite file is not what the converter writes")
    q = cv.quant(i)
    if q is None or q.axis is not None:
        raise TinycError(f"{cv.where()}: {what} state '{cv.tname(i)}' lacks per-tensor quantization parameters")
    if int(np.prod(cv.tensor(i).shape)) != int(np.prod(shape)):
        raise TinycError(f"{cv.where()}: {what} state '{cv.tname(i)}' has shape {tuple(cv.tensor(i).shape)}, "
                         f"expected {shape}")
    name = cv.g.unique_name(f"{cv.tname(cv.out).split(';')[0] or 'lstm'}_{what}_state")
    cv.g.add_state(name, shape, dtype, initial=np.full(shape, int(q.zero_point)), quant=q)
    cv.names[i] = name
    return name


def _carry(cv, inputs: list, y: str, attrs: dict) -> None:
    """TFLite writes the final h and c back into the variable tensors: the next values of the state tensors are
    the sequence's last step and the node's final cell state, its second output (`cell_output`)."""
    h0, c0 = inputs[4], inputs[5]
    if h0 in cv.g.state and cv.g.state[h0] is None:
        B, T, H = cv.g.tensors[y].shape
        hq, yq = cv.g.tensors[h0].quant, cv.g.tensors[y].quant
        if (float(hq.scale), int(hq.zero_point)) == (float(yq.scale), int(yq.zero_point)):
            step = cv.emit("Slice", [y], (B, 1, H), final=False, tag="final_step", like=y, starts=(0, T - 1, 0),
                           steps=(1, 1, 1), sizes=(B, 1, H))
            cv.g.state[h0] = cv.emit("Reshape", [step], (B, H), final=False, tag="final_h", like=y)
        else:   # the converter relabels an output a Concatenation reads; TFLite copies the state's bytes as they
            # are: a `last_h` node computes them with the state's label (the sequence once more)
            cv.g.state[h0] = cv.emit("LSTM", inputs, (B, H), final=False, tag="final_h", like=h0,
                                     **{**attrs, "output": "last_h"})
    if c0 in cv.g.state and cv.g.state[c0] is None:     # the sequence node's second output (cell_output)
        t = cv.g.tensors[c0]
        c = cv.g.add_tensor(cv.g.unique_name(f"{y}_final_c"), t.shape, t.dtype, quant=t.quant).name
        node = cv.g.producer(y)
        node.outputs.append(c)
        node.attrs["cell_output"] = True
        cv.g.state[c0] = c


def _hidden_quant(cv) -> tuple[float, int]:
    op = cv.sg.operators[cv.op_index]
    inter = [int(i) for i in (op.intermediates if op.intermediates is not None else [])]
    if len(inter) != 5 or not 0 <= inter[HIDDEN_INTERMEDIATE] < len(cv.sg.tensors):
        raise TinycError(f"{cv.where()}: an int8 LSTM needs its five intermediate tensors (TFLite requires them); "
                         f"the operator has {len(inter)}")
    q = cv.quant(inter[HIDDEN_INTERMEDIATE])
    if q is None or q.axis is not None:
        raise TinycError(f"{cv.where()}: the effective hidden intermediate '{cv.tname(inter[HIDDEN_INTERMEDIATE])}' "
                         "lacks quantization parameters")
    return float(q.scale), int(q.zero_point)


def int8_lstm(cv, opts, ins) -> str:
    """An int8 UNIDIRECTIONAL_SEQUENCE_LSTM as one int8 IR LSTM node, its output sequence [B,T,H]."""
    for i, what in REFUSED.items():
        if i < len(ins) and ins[i] >= 0:
            raise _refuse(cv, what)
    if ins[1] < 0:
        raise _refuse(cv, "no input_to_input_weights (CIFG: coupled input and forget gates)")
    if opts is not None and opts.timeMajor:
        raise _refuse(cv, "time_major input")
    act = int(opts.fusedActivationFunction or 0) if opts is not None else 0
    if act != TANH:
        raise _refuse(cv, f"fused activation {act} (the integer kernel computes tanh)")
    shape = cv.shape(ins[0])
    if len(shape) != 3:
        raise TinycError(f"{cv.where()}: input '{cv.tname(ins[0])}' has shape {shape}; [batch, time, features] needed")
    B, T, I = shape
    w, w_scales = _gate_weights(cv, ins, INPUT_WEIGHTS, I, "input")
    H = w.shape[0] // 4
    r, r_scales = _gate_weights(cv, ins, RECURRENT_WEIGHTS, H, "recurrent")
    biases = []
    for gate, i in zip(GATES, BIASES):
        if cv.dtype_name(ins[i]) != "INT32" or cv.value(ins[i], f"{gate}_gate_bias").shape != (H,):
            raise TinycError(f"{cv.where()}: {gate}_gate_bias must be int32 [{H}]")
        biases.append(cv.value(ins[i]))
    base = cv.tname(cv.out).split(";")[0] or "lstm"
    inputs = [cv.x(ins[0]), _weights_const(cv, f"{base}_w", w, w_scales),
              _weights_const(cv, f"{base}_r", r, r_scales),
              cv.g.add_const(f"{base}_b", np.concatenate(biases), "int32"),
              _state(cv, ins[18], (B, H), "int8", "output"), _state(cv, ins[19], (B, H), "int16", "cell"),
              cv.g.add_const(f"{base}_p", np.zeros(3 * H), "int16")]
    clip = float(opts.cellClip) if opts is not None and opts.cellClip and opts.cellClip > 0 else None
    attrs = dict(activations=({"fn": "sigmoid"}, {"fn": "tanh"}, {"fn": "tanh"}), clip=None, cell_clip=clip,
                 input_forget=False, reverse=False, hidden_quant=_hidden_quant(cv))
    y = cv.emit("LSTM", inputs, (B, T, H), output="sequence", **attrs)
    relabel = _moved_as(cv)
    if relabel is not None:
        cv.g.tensors[y].quant = relabel
    _carry(cv, inputs, y, attrs)
    return y


def _moved_as(cv):
    """The quantization a byte-moving consumer (REVERSE_V2) declares for the output's bytes when it differs from
    the output's own, or None. The converter's bidirectional LSTM reverses the backward sequence with an output
    labelled like the Concatenation after it: TFLite copies the bytes, so they mean the label downstream, and the
    LSTM computes them with its effective-hidden parameters whatever its output's label says."""
    readers = [op for op in cv.sg.operators if cv.out in [int(i) for i in (op.inputs if op.inputs is not None else [])]]
    if len(readers) != 1 or cv.out in [int(i) for i in cv.sg.outputs]:
        return None
    op = readers[0]
    code = cv.model.operatorCodes[op.opcodeIndex]
    if max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) != cv.S.BuiltinOperator.REVERSE_V2:
        return None
    theirs, ours = cv.quant(int(op.outputs[0])), cv.quant(cv.out)
    if theirs is None or theirs.axis is not None or (float(theirs.scale), int(theirs.zero_point)) == (
            float(ours.scale), int(ours.zero_point)):
        return None
    return theirs
