"""Post-training quantization of a float IR graph to TFLite's int8 scheme (`tinyc compile --quantize int8`).

What the TFLite converter does, in spirit (https://www.tensorflow.org/lite/performance/quantization_spec):
  * activations: per-tensor asymmetric int8; the calibrated range is widened to include 0, scale =
    (max - min) / 255, zero point = round(-128 - min / scale) clamped to int8;
  * Conv2D/Dense weights: per output channel, symmetric, narrow range [-127, 127], scale = max|w| / 127;
    with `weights="int4"` (`--weights int4`) int4 instead: scale = max|w| / 7, values in [-7, 7] (below);
  * biases: int32 with scale input_scale * weight_scale[c], zero point 0;
  * ops that move bytes (pooling, reshape, transpose, pad, concatenation) share one scale and zero point
    between their inputs and output (the union of the members' ranges);
  * fixed output parameters where TFLite's kernels require them: softmax and logistic 1/256 with zero point
    -128, tanh 1/128 with zero point 0;
  * activations other than clamps (sigmoid, tanh, hard-swish, leaky ReLU) fused into a conv become standalone
    int8 ops: an int8 conv can only clamp its output.
Graph inputs and outputs become int8 too: the API is `<name>_invoke(const int8_t *, int8_t *)` with the
quantize/dequantize helpers.

Streaming state (docs/streaming-state.md): a state tensor and its next value share one scale and zero point (the
C copies the bytes), calibrated over the samples run as consecutive frames; the initial value is quantized with
them.
"""
from __future__ import annotations

import numpy as np

from ..disjoint_sets import DisjointSets
from ..errors import TinycError
from ..ir import Graph, Node, Quant
from ..ops import REGISTRY, gru_rnn_int8, names_where
from ..ops.activation import FIXED_QUANT, INT8_FUNCTIONS, INT8_FUSABLE, NOT_QUANTIZED
from . import lstm_ptq
from .calibrate import collect_ranges
from .params import QMAX, QMIN

# The ops' quantization policies (OpDef.quantize, tinyc/ops/opdef.py).
CLAMPS = INT8_FUSABLE
INT8_ACTIVATIONS = tuple(f for f in INT8_FUNCTIONS if f not in NOT_QUANTIZED)
SHARED = names_where(quantize="shared")
QUANTIZABLE = tuple(n for n, d in REGISTRY.items() if d.quantize is not None)
# ops whose input 1 is weights (int8, symmetric, per output channel along axis 0) and input 2 an int32 bias
WEIGHTED = ("Conv2D", "ConvTranspose2D", "Dense")
FIXED = {**{n: d.fixed_quant for n, d in REGISTRY.items() if d.quantize == "fixed"}, **FIXED_QUANT}
# --weights int4: the weighted ops whose int8 kernels take int4 weights (ConvTranspose2D keeps int8: TFLite's
# TRANSPOSE_CONV has no INT4 filter)
INT4_WEIGHTED = ("Conv2D", "Dense")
WEIGHT_TYPES = ("int8", "int4")


def _check(g: Graph) -> None:
    for n in g.nodes:
        if n.op == "LSTM":      # TFLite's integer LSTM (quant/lstm_ptq.py)
            lstm_ptq.check(g, n)
            continue
        if n.op not in QUANTIZABLE:
            raise TinycError(f"cannot quantize node '{n.name}': tinyc's quantizer does not quantize op {n.op} (it "
                             f"quantizes {', '.join(QUANTIZABLE)}); quantize with TFLiteConverter instead")
        if n.op == "Activation" and n.attrs["fn"] not in INT8_ACTIVATIONS:
            raise TinycError(f"cannot quantize node '{n.name}': tinyc's quantizer makes no int8 activation "
                             f"'{n.attrs['fn']}' (it makes {', '.join(INT8_ACTIVATIONS)})")
        act = n.attrs.get("activation")
        if n.op != "Activation" and act is not None and act["fn"] not in INT8_ACTIVATIONS:
            raise TinycError(f"cannot quantize node '{n.name}': fused activation '{act['fn']}' has no int8 kernel")
        if n.op == "Softmax" and n.attrs["axis"] != len(g.tensors[n.inputs[0]].shape) - 1:
            raise TinycError(f"cannot quantize node '{n.name}': int8 softmax works on the last axis only")
        if n.op in WEIGHTED and not all(g.tensors[i].is_const for i in n.inputs[1:]):
            raise TinycError(f"cannot quantize node '{n.name}': its weights are computed at run time")
        if n.op in gru_rnn_int8.CHAIN_OPS:
            _check_chain(g, n)


def split_activations(g: Graph) -> Graph:
    """A non-clamp activation fused into a producer becomes a standalone Activation node (int8 producers can
    only clamp). The producer then writes a new tensor `<output>_pre`."""
    g = g.copy()
    nodes = []
    for n in g.nodes:
        nodes.append(n)
        act = n.attrs.get("activation") if n.op != "Activation" else None
        if act is None or act["fn"] in CLAMPS:
            continue
        y = n.outputs[0]
        pre = g.unique_name(f"{y}_pre")
        t = g.tensors[y]
        g.add_tensor(pre, t.shape, t.dtype)
        n.attrs["activation"] = None
        n.outputs = [pre]
        nodes.append(Node("Activation", [pre], [y], dict(act), f"{n.name}_act"))
    g.nodes = nodes
    return g


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric int8 tensor covering [lo, hi] (widened to include 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8 * 255   # a constant-zero tensor: any scale represents it
    scale = float(np.float32((hi - lo) / 255.0))
    zp_real = QMIN - lo / scale
    zp = QMIN if zp_real < QMIN else QMAX if zp_real > QMAX else int(np.floor(zp_real + 0.5))
    return scale, zp


def _groups(g: Graph, shared: tuple = SHARED) -> dict[str, str]:
    """Union-find over runtime tensors that must share quantization parameters (the outputs of `shared` ops with
    their inputs) -> representative (a state tensor and its next value are one group)."""
    sets = DisjointSets(name for name, t in g.tensors.items() if not t.is_const)
    for n in g.nodes:
        if n.op in shared:
            for i in n.inputs:
                if i in sets:
                    sets.merge(n.outputs[0], i)
    for n in g.nodes:    # a GRU/RNN's initial hidden state is its hidden state
        if n.op in gru_rnn_int8.CHAIN_OPS and n.inputs[-1] in sets:
            sets.merge(n.outputs[0], n.inputs[-1])
    for s, v in g.state.items():
        if g.tensors[v].is_const:
            raise TinycError(f"cannot quantize: state '{s}' takes the constant '{v}' after every inference; "
                             "quantize the model without that state")
        sets.merge(s, v)
    return {name: sets.find(name) for name in sets.parent}


def group_members(rep: dict[str, str]) -> dict[str, list[str]]:
    """representative -> the tensors of its group (the inverse of `_groups`)."""
    members: dict[str, list[str]] = {}
    for name, r in rep.items():
        members.setdefault(r, []).append(name)
    return members


def _fixed(g: Graph, name: str):
    p = g.producer(name)
    if p is None:
        return None
    if p.op != "Activation" and REGISTRY[p.op].quantize == "fixed":     # Softmax, LpNormalize (L2: 1/128, 0)
        return REGISTRY[p.op].fixed_quant
    if p.op == "Activation" and p.attrs["fn"] in ("sigmoid", "tanh"):
        return FIXED[p.attrs["fn"]]
    if p.op in gru_rnn_int8.CHAIN_OPS:    # an RNN's h is its activation's output
        return gru_rnn_int8.fixed_quant(gru_rnn_int8.chain(p)[-1])
    return None


def _quantize_int4_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (axis 0), symmetric int4 as ai-edge-quantizer makes them (uniform_quantize_tensor:
    scale = max|w| / 7, round half to even, clipped to [-8, 7]): the channel's largest magnitude is +-7, so -8
    never occurs, and the grid stays symmetric (a scale of max|w| / 8 would clip the largest positive weight to 7).
    TFLite's kernels unpack int4 to int8 and run the int8 arithmetic, so every int8 rule holds."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.max(np.abs(flat), axis=1)
    scale = np.where(amax > 0, amax / 7.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(flat / scale.astype(np.float64)[:, None]), -8, 7)
    return q.astype(np.int8).reshape(w.shape), scale


def _quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (axis 0), symmetric, [-127, 127]; halves rounded away from zero."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.max(np.abs(flat), axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = flat / scale.astype(np.float64)[:, None]
    q = np.clip(np.sign(q) * np.floor(np.abs(q) + 0.5), -127, 127)
    return q.astype(np.int8).reshape(w.shape), scale


def _quantize_tensor(data: np.ndarray, scale: float, zp: int) -> np.ndarray:
    q = np.asarray(data, np.float64) / scale
    q = np.sign(q) * np.floor(np.abs(q) + 0.5) + zp
    return np.clip(q, QMIN, QMAX).astype(np.int8)


def quantize_graph(g: Graph, samples: list[np.ndarray], progress=None, weights: str = "int8") -> Graph:
    """The int8 version of float graph `g` (already optimized), calibrated on `samples` (per input, [N, ...]).
    `weights`: "int8", or "int4" for the weights of Conv2D (depthwise too) and Dense (INT4_WEIGHTED)."""
    if weights not in WEIGHT_TYPES:
        raise TinycError(f"tinyc's quantizer makes {' or '.join(WEIGHT_TYPES)} weights, not {weights}")
    _check(g)
    g = lstm_ptq.forward_only(split_activations(g))
    step_ranges: dict = {}
    lstm = lstm_ptq.Calibration(g)
    ranges = collect_ranges(lstm.graph, samples, progress,
                            lambda env: (_observe_chains(g, env, step_ranges), lstm(env)))
    lstm.widen(ranges)
    _widen_by_initial_states(g, ranges)
    q = g.copy()
    rep = _groups(q)
    members = group_members(rep)
    params: dict[str, tuple[float, int]] = {}
    for r, names in members.items():
        fixed = [f for f in (_fixed(q, n) for n in names) if f is not None]
        if fixed:
            if len(set(fixed)) > 1:
                raise TinycError(f"cannot quantize: tensors {names} need different fixed int8 parameters")
            params[r] = fixed[0]
            continue
        known = [ranges[n] for n in names if n in ranges]
        if not known:
            raise TinycError(f"internal: no calibration range for tensors {names}")
        params[r] = activation_params(min(k[0] for k in known), max(k[1] for k in known))
    for name, r in rep.items():
        t = q.tensors[name]
        scale, zp = params[r]
        t.dtype, t.quant = "int8", Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))
        t.source_name, t.source_perm = name, None    # the exported .tflite keeps IR names
    made: dict = {}     # LSTM weights quantized once for the nodes sharing them
    for n in q.nodes:
        if n.op in gru_rnn_int8.CHAIN_OPS:
            _quantize_chain(q, n, step_ranges[n.name])
            continue
        if n.op == "LSTM":
            lstm_ptq.quantize_node(q, n, lstm.c_max[n.name], rep, made)
            continue
        _quantize_constants(q, n, weights if n.op in INT4_WEIGHTED else "int8")
        if n.op == "Pad":
            n.attrs["value"] = int(q.tensors[n.outputs[0]].quant.zero_point)
    for s in q.state:   # an absent initial value is float zeros: the zero point in int8
        init, quant = q.state_init.get(s, np.zeros(q.tensors[s].shape, np.float32)), q.tensors[s].quant
        if q.tensors[s].dtype == "int16":   # an LSTM's cell state, starting at zero (lstm_ptq checks)
            q.state_init[s] = np.zeros(q.tensors[s].shape, np.int16)
            continue
        q.state_init[s] = _quantize_tensor(init, float(quant.scale), int(quant.zero_point))
    q.remove_unused_tensors()
    return q


def _quantize_constants(q: Graph, n, weights: str = "int8") -> None:
    for k, name in enumerate(n.inputs):
        t = q.tensors[name]
        if not t.is_const or t.dtype != "float32":
            continue
        if n.op in WEIGHTED and k == 1:
            data, scale = (_quantize_int4_weights if weights == "int4" else _quantize_weights)(t.data)
            t.data, t.dtype = data.astype(weights), weights
            t.quant = Quant(scale, np.zeros(scale.shape, np.int64), 0)
        elif n.op in WEIGHTED and k == 2:
            in_scale = np.float32(q.tensors[n.inputs[0]].quant.scale)
            w_scale = np.asarray(q.tensors[n.inputs[1]].quant.scale, np.float32)
            bias_scale = (in_scale * w_scale).astype(np.float32)
            b = np.asarray(t.data, np.float64) / bias_scale.astype(np.float64)
            b = np.sign(b) * np.floor(np.abs(b) + 0.5)
            t.data, t.dtype = np.clip(b, -(2 ** 31) + 1, 2 ** 31 - 1).astype(np.int32), "int32"
            t.quant = Quant(bias_scale, np.zeros(bias_scale.shape, np.int64), 0)
        else:   # a constant operand of Add/Sub/Mul/Concat: per-tensor asymmetric, own range
            scale, zp = activation_params(float(np.min(t.data)), float(np.max(t.data)))
            t.data, t.dtype = _quantize_tensor(t.data, scale, zp), "int8"
            t.quant = Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))


# -- GRU / RNN: the per-step chain of int8 ops (tinyc/ops/gru_rnn_int8.py) -------------------------------------
def _check_chain(g: Graph, n) -> None:
    reason = gru_rnn_int8.refusal(n)
    if reason:
        raise TinycError(f"cannot quantize {reason}")
    if not all(g.tensors[i].is_const for i in n.inputs[1:-1]):
        raise TinycError(f"cannot quantize node '{n.name}': its weights or biases are computed at run time")


def _observe_chains(g: Graph, env: dict, step_ranges: dict) -> None:
    """Widen each GRU/RNN node's per-role ranges by one sample's run of its chain (every step counts)."""
    for n in g.nodes:
        if n.op not in gru_rnn_int8.CHAIN_OPS:
            continue
        inputs = [env[i] if i in env else g.tensors[i].data for i in n.inputs]
        seen = step_ranges.setdefault(n.name, {})
        for role, (lo, hi) in gru_rnn_int8.float_ranges(n, inputs).items():
            old = seen.get(role, (lo, hi))
            seen[role] = (min(old[0], lo), max(old[1], hi))


def _widen_by_initial_states(g: Graph, ranges: dict) -> None:
    """A constant initial hidden state is quantized with the hidden state's parameters: their range covers it."""
    for n in g.nodes:
        h0 = g.tensors[n.inputs[-1]]
        if n.op in gru_rnn_int8.CHAIN_OPS and h0.is_const and n.outputs[0] in ranges:
            lo, hi = ranges[n.outputs[0]]
            ranges[n.outputs[0]] = (min(lo, float(np.min(h0.data))), max(hi, float(np.max(h0.data))))


def _int32_bias(name: str, values: np.ndarray, in_scale: float, w_scale: np.ndarray, q: Graph) -> str:
    """An int32 bias tensor with scale in_scale * w_scale[c] (float32), as a Dense bias is quantized."""
    scale = (np.float32(in_scale) * np.broadcast_to(w_scale, values.shape)).astype(np.float32)
    b = values / scale.astype(np.float64)
    b = np.clip(np.sign(b) * np.floor(np.abs(b) + 0.5), -(2 ** 31) + 1, 2 ** 31 - 1)
    name = q.unique_name(name)
    q.add_tensor(name, values.shape, "int32", b.astype(np.int32),
                 quant=Quant(scale, np.zeros(scale.shape, np.int64), 0))
    return name


def _quantize_chain(q: Graph, n, ranges: dict) -> None:
    """The int8 form of a GRU/RNN node (tinyc/ops/gru_rnn_int8.py): step_quant from the calibrated ranges (fixed
    for LOGISTIC/TANH outputs), per-channel weights, int32 FC biases, the initial state with the output's
    parameters."""
    steps = gru_rnn_int8.chain(n)
    quant = {}
    for s in steps:
        if s.out != "h":
            quant[s.out] = gru_rnn_int8.fixed_quant(s) or activation_params(*ranges[s.out])
    n.attrs["step_quant"] = quant
    x, w, r, b = (q.tensors[i] for i in n.inputs[:4])
    for t in (w, r):
        if t.dtype == "float32":
            data, scale = _quantize_weights(t.data)
            t.data, t.dtype, t.quant = data, "int8", Quant(scale, np.zeros(scale.shape, np.int64), 0)
    H = r.shape[1]
    bx, bh = gru_rnn_int8.fc_biases(n.op, q.const(n.inputs[3]), q.const(n.inputs[4]) if n.op == "GRU" else None, H)
    w_scale, r_scale = (np.asarray(t.quant.scale, np.float32).reshape(-1) for t in (w, r))
    n.inputs[3] = _int32_bias(f"{n.name}_input_bias", bx, float(x.quant.scale), w_scale, q)
    if bh is not None:
        hn_input = next(s.ins[0] for s in steps if s.out == "hn")
        in_scale = quant[hn_input][0] if hn_input in quant else float(q.tensors[n.outputs[0]].quant.scale)
        n.inputs[4] = _int32_bias(f"{n.name}_recurrent_bias", bh, in_scale, r_scale, q)
    h0, out = q.tensors[n.inputs[-1]], q.tensors[n.outputs[0]]
    if h0.is_const:
        name = q.unique_name(f"{n.name}_h0")
        q.add_tensor(name, h0.shape, "int8", _quantize_tensor(h0.data, float(out.quant.scale),
                                                               int(out.quant.zero_point)), quant=out.quant)
        n.inputs[-1] = name
