"""tinyc's quantizer for the LSTM: a float LSTM node becomes TFLite's integer LSTM (the int8 form of
tinyc/ops/lstm_int8.py), with the parameters TFLite's converter picks from a representative dataset.

What the converter does for an LSTM without peepholes, projection or layer normalization (its operator property of
UNIDIRECTIONAL_SEQUENCE_LSTM and the LSTM rules of its MLIR quantizer, checked against what it writes for tf_keras
LSTMs; docs/int8-numerics.md 4.42):
  * input x: an ordinary int8 activation;
  * the eight weight matrices: int8, symmetric, narrow range, one scale per matrix (max |w| / 127);
  * the four biases: int32 with the scale s_x * s_w of their gate's input weights;
  * the output, the hidden state (the variable h) and the "effective hidden" intermediate: one set of int8
    parameters, from the union of the output's and the state's calibrated ranges (the output is the whole sequence
    of h, also when the model reads only its last step);
  * the cell state: int16, zero point 0, scale 2^ceil(log2 max|c|) / 32768, where max|c| is the largest
    magnitude of the cell state the calibrator saw in the variable tensor, i.e. after each sample's last step
    (intermediate steps may exceed it and saturate).
tinyc keeps the cell scale within 2^-15 .. 2^-9: for the others TFLite 2.21's kernel skips the tanh of the cell
(h = o * i, docs/int8-numerics.md 4.40), which the converter lets happen (2^-16 when max|c| <= 0.5).
The converter's calibrator never resets the LSTM's variables: each sample starts from the h and c the previous one
left. tinyc calibrates so too (`Calibration.graph`), so every range downstream of an LSTM is the converter's.
State carried across inferences (a float .tflite LSTM's variable tensors, Keras stateful=True) stays carried: the
node gives its int8 sequence and its int16 final c (its second output, `cell_output`), which the writer leaves to
TFLite's variable tensors. A reverse LSTM becomes a forward one between Gathers (`forward_only`).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node, Quant
from ..ops.recurrent import DEFAULT_ACTIVATIONS, evaluate_lstm

CELL_EXPONENTS = (0, 6)     # log2 of the cell state's bound: scales 2^-15 .. 2^-9, where TFLite's tanh of c works
WEIGHT_MAX = 127


def _refuse(n: Node, what: str) -> TinycError:
    return TinycError(f"cannot quantize LSTM '{n.name}': {what}; keep this LSTM float (tinyc's int8 LSTM is TFLite's "
                      "integer LSTM without peepholes, ONNX clip, coupled gates or other activations)")


def _zero_const(g: Graph, name: str) -> bool:
    t = g.tensors[name]
    return t.is_const and not np.any(t.data)


def check(g: Graph, n: Node) -> None:
    """Refuse, in one line, an LSTM tinyc's integer LSTM cannot compute."""
    a = n.attrs
    names = tuple(act.get("fn") for act in a["activations"])
    if names != DEFAULT_ACTIVATIONS["LSTM"] or any(len(act) > 1 for act in a["activations"]):
        raise _refuse(n, f"attribute activations {names}: TFLite's integer LSTM computes sigmoid, tanh, tanh")
    if a.get("clip") is not None:
        raise _refuse(n, f"attribute clip {a['clip']:g} (ONNX's activation threshold) has no integer form")
    if a.get("input_forget"):
        raise _refuse(n, "attribute input_forget (coupled input and forget gates, CIFG)")
    if not _zero_const(g, n.inputs[6]):
        raise _refuse(n, "peepholes (input p)")
    carried = [i for i in n.inputs[4:6] if i in g.state]
    if carried:
        _check_carried(g, n)
        return
    if a["output"] not in ("sequence", "last_h") or a.get("cell_output"):
        raise _refuse(n, f"output '{a['output']}'{' and its final c' if a.get('cell_output') else ''}: the cell "
                         "state is read, which tinyc's quantizer does not cover")
    for k, what in ((1, "w"), (2, "r"), (3, "b")):
        if not g.tensors[n.inputs[k]].is_const:
            raise _refuse(n, f"input {what} is computed at run time; the weights and biases must be constants")
    for k, what in ((4, "h0"), (5, "c0")):
        if not _zero_const(g, n.inputs[k]):
            kind = "a nonzero constant" if g.tensors[n.inputs[k]].is_const else "a model input, computed or carried"
            raise _refuse(n, f"initial state {what} is {kind}; TFLite's integer LSTM starts from its variable "
                             "tensors, which TFLite resets to zero")


def forward_only(g: Graph) -> Graph:
    """Each reverse LSTM (Keras go_backwards, a Bidirectional's backward layer, ONNX reverse) as a forward one over x
    reversed along time (a Gather), its sequence gathered back: TFLite's integer LSTM runs forward only. A copy of
    `g` when there is one."""
    if not any(n.op == "LSTM" and n.attrs.get("reverse") for n in g.nodes):
        return g
    g = g.copy()
    nodes = []
    for n in g.nodes:
        if n.op != "LSTM" or not n.attrs.get("reverse"):
            nodes.append(n)
            continue
        x = g.tensors[n.inputs[0]]
        backwards = np.arange(x.shape[1] - 1, -1, -1)
        x_rev = g.unique_name(f"{n.name}_x_reversed")
        g.add_tensor(x_rev, x.shape, x.dtype)
        nodes.append(Node("Gather", [x.name], [x_rev], dict(axis=1, indices=backwards), x_rev))
        n.inputs[0], n.attrs["reverse"] = x_rev, False
        nodes.append(n)
        if n.attrs["output"] == "sequence":     # last_h: the forward run's last step is the reverse run's last
            y = g.tensors[n.outputs[0]]
            y_rev = g.unique_name(f"{n.name}_reversed")
            g.add_tensor(y_rev, y.shape, y.dtype)
            n.outputs[0] = y_rev
            nodes.append(Node("Gather", [y_rev], [y.name], dict(axis=1, indices=backwards), f"{n.name}_order"))
    g.nodes = nodes
    return g


def _carrying(g: Graph) -> Graph:
    """`g` with each LSTM's h0 and c0 (zero constants) as streaming state carried from one calibration sample to
    the next (its final h and c, computed by an extra node giving both: `last_h` with `cell_output`): what the
    converter's calibrator sees, since TFLite keeps the LSTM's variable tensors across invoke() and the calibrator
    never resets them."""
    g = g.copy()
    for n in [n for n in g.nodes if n.op == "LSTM" and n.inputs[4] not in g.state]:
        following = []
        for k, what in ((4, "h"), (5, "c")):
            t = g.tensors[n.inputs[k]]
            state = g.unique_name(f"{n.name}_calibration_{what}")
            g.add_state(state, t.shape, t.dtype)
            n.inputs[k] = state
            following.append(g.unique_name(f"{state}_next"))
            g.add_tensor(following[-1], t.shape, t.dtype)
            g.state[state] = following[-1]
        g.nodes.append(Node("LSTM", list(n.inputs), following, {**n.attrs, "output": "last_h", "cell_output": True},
                            following[0]))
    return g


def _check_carried(g: Graph, n: Node) -> None:
    """State carried across inferences in TFLite's form (a float .tflite LSTM's variable tensors, Keras
    stateful=True): h0 and c0 both state tensors starting at zero, the node giving its sequence or final h and, as
    its second output (`cell_output`), its final c."""
    h0, c0 = n.inputs[4:6]
    if not (h0 in g.state and c0 in g.state) or not n.attrs.get("cell_output") or n.attrs.get("reverse"):
        raise _refuse(n, "state carried across inferences in another form than TFLite's (h and c both state tensors "
                         "of a forward LSTM giving its final c)")
    for s in (h0, c0):
        if np.any(g.initial_state()[s]):
            raise _refuse(n, f"state '{s}' starts at nonzero values; TFLite's variable tensors start at zero")
        if any(m is not n for m in g.consumers(s)):
            raise _refuse(n, f"state '{s}' is read by another node than the LSTM")


class Calibration:
    """`observe(env)` for collect_ranges over `graph` (the model with the LSTMs' states carried, as the converter
    calibrates): per LSTM node, the range of h over the whole sequence and the largest |c| after the last step, over
    the samples."""

    def __init__(self, g: Graph):
        self.graph = _carrying(g) if any(n.op == "LSTM" and n.inputs[4] not in g.state for n in g.nodes) else g
        self.g = self.graph
        self.nodes = [n for n in self.graph.nodes if n.op == "LSTM" and n.name in {m.name for m in g.nodes}]
        self.h_range: dict[str, tuple[float, float]] = {}
        self.c_max: dict[str, float] = {}

    def __call__(self, env: dict) -> None:
        for n in self.nodes:
            ins = [env[i] if i in env else self.g.tensors[i].data for i in n.inputs]
            h, c = evaluate_lstm({**n.attrs, "output": "sequence", "cell_output": True}, ins)
            lo, hi = self.h_range.get(n.name, (float(h.min()), float(h.max())))
            self.h_range[n.name] = (min(lo, float(h.min())), max(hi, float(h.max())))
            self.c_max[n.name] = max(self.c_max.get(n.name, 0.0), float(np.abs(c).max()))

    def widen(self, ranges: dict) -> None:
        """The output's range becomes the sequence's (and 0, the state's first value): the converter's output is
        the whole sequence, a last-step output is a slice sharing its parameters."""
        for n in self.nodes:
            y = n.outputs[0]
            lo, hi = self.h_range[n.name]
            old = ranges.get(y, (lo, hi))
            ranges[y] = (min(lo, old[0], 0.0), max(hi, old[1], 0.0))


def cell_exponent(c_max: float) -> int:
    """log2 of the cell state's bound: the converter's ceil(log2 max|c|), kept within CELL_EXPONENTS."""
    e = math.ceil(math.log2(c_max)) if c_max > 0 else CELL_EXPONENTS[0]
    return min(max(e, CELL_EXPONENTS[0]), CELL_EXPONENTS[1])


def _round_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _gate_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[4H, K] float -> int8 with one symmetric scale per gate (max |w| / 127, narrow range), and the four scales."""
    H = w.shape[0] // 4
    gates = np.asarray(w, np.float64).reshape(4, H, -1)
    amax = np.abs(gates).reshape(4, -1).max(axis=1)
    scales = np.where(amax > 0, amax / WEIGHT_MAX, 1.0).astype(np.float32)
    q = np.clip(_round_away(gates / scales.astype(np.float64)[:, None, None]), -WEIGHT_MAX, WEIGHT_MAX)
    return q.reshape(w.shape).astype(np.int8), scales


def _per_gate(scales: np.ndarray, H: int) -> Quant:
    return Quant(np.repeat(scales, H).astype(np.float32), np.zeros(4 * H, np.int64), 0)


def quantize_node(q: Graph, n: Node, c_max: float, rep: dict, made: dict) -> None:
    """Node `n` of the int8 graph `q` (x, the output and carried states already int8 with their parameters) as
    TFLite's integer LSTM: int8 weights and int32 biases (made once for nodes that share them: `made`), a zero-point
    h0 and an int16 c0 when they are constants, a carried cell state int16 with everything sharing its parameters
    (`rep`: tensor -> representative of its group), and `hidden_quant`: h's parameters."""
    x, y = q.tensors[n.inputs[0]], q.tensors[n.outputs[0]]
    B, H = x.shape[0], q.tensors[n.inputs[2]].shape[1]
    h_quant = q.tensors[n.inputs[4]].quant if n.inputs[4] in q.state else y.quant
    s_h, z_h = float(np.asarray(h_quant.scale).reshape(-1)[0]), int(np.asarray(h_quant.zero_point).reshape(-1)[0])
    shift = cell_exponent(c_max) - 15
    cell = Quant(np.asarray(2.0 ** shift, np.float32), np.asarray(0, np.int64))
    key = tuple(n.inputs[1:4]) + (x.name,)
    if key not in made:
        made[key] = _weights(q, n, float(np.asarray(x.quant.scale).reshape(-1)[0])) + [
            q.add_const(f"{n.name}_p_int16", np.zeros(3 * H), "int16")]
    n.inputs[1:4], n.inputs[6] = made[key][:3], made[key][3]
    if n.inputs[5] in q.state:      # carried: the cell state's group (c0, the final c, its reshapes) is int16
        group = rep[n.inputs[5]]
        for name, r in rep.items():
            if r == group:
                q.tensors[name].dtype, q.tensors[name].quant = "int16", cell
    else:
        for k, name, data, dtype, quant in (
                (4, f"{n.name}_h0_int8", np.full((B, H), z_h), "int8", h_quant),
                (5, f"{n.name}_c0_int16", np.zeros((B, H)), "int16", cell)):
            t = q.tensors[q.add_const(name, data, dtype)]
            t.quant = quant
            n.inputs[k] = t.name
    n.attrs["hidden_quant"] = (s_h, z_h)


def _weights(q: Graph, n: Node, s_x: float) -> list:
    """The int8 w and r (one symmetric scale per gate) and the int32 b (scale s_x * s_w of its gate) of node `n`."""
    H = q.tensors[n.inputs[2]].shape[1]
    w, w_scales = _gate_weights(q.tensors[n.inputs[1]].data)
    r, r_scales = _gate_weights(q.tensors[n.inputs[2]].data)
    bias_scales = (np.float32(s_x) * w_scales).astype(np.float32)
    b = np.asarray(q.tensors[n.inputs[3]].data, np.float64).reshape(4, H) / bias_scales.astype(np.float64)[:, None]
    b = np.clip(_round_away(b), -(2 ** 31) + 1, 2 ** 31 - 1).astype(np.int32).reshape(-1)
    names = []
    for name, data, dtype, scales in ((f"{n.name}_w_int8", w, "int8", w_scales),
                                      (f"{n.name}_r_int8", r, "int8", r_scales),
                                      (f"{n.name}_b_int32", b, "int32", bias_scales)):
        t = q.tensors[q.add_const(name, data, dtype)]
        t.quant = _per_gate(scales, H)
        names.append(t.name)
    return names
