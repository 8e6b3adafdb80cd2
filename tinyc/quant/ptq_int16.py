"""Post-training quantization of a float IR graph to TFLite's 16x8 scheme (`tinyc compile --quantize int16x8`).

What TF 2.21's converter makes with `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8` and a
representative dataset (checked tensor by tensor against the converter, tests/test_ptq_int16.py):
  * activations: int16, per tensor, symmetric: scale = max(|min|, |max|) / 32767 of the calibrated range (widened
    to include 0), zero point 0;
  * Conv2D / depthwise / Dense / ConvTranspose2D weights: int8, per output channel, symmetric [-127, 127], as for
    int8 (ptq.py); their biases int64 with scale input_scale * weight_scale[c];
  * LOGISTIC, TANH and SOFTMAX outputs: 1/32768, zero point 0 (what their int16 kernels require);
  * pooling, reshape, pad, transpose, slices share one scale between input and output, as for int8; a
    CONCATENATION does not: its output keeps its own range and each input of another scale is requantized
    (int16 -> int16 QUANTIZE) first, as the converter writes it (docs/int16-numerics.md 4.2);
  * the calibrated range of an ADD / SUB / MUL input that TFLite's float interpreter computes in place is widened
    by the op's output range: the converter's calibrator logs an op's inputs again after the op ran, when an
    in-place op has overwritten that input with its output (TFLite's ArenaPlanner shares the first input of the
    same size that nothing else reads, unless it is a graph input or the output a graph output).
One deliberate difference: a relu / relu6 that tinyc's passes fused into a Conv2DTranspose stays fused (TFLite's
16x8 TRANSPOSE_CONV clamps its output as well), where the converter writes TRANSPOSE_CONV and a separate RELU with a
scale of its own: one rounding instead of two, one layer fewer.
Graph inputs and outputs become int16: the API is `<name>_invoke(const int16_t *, int16_t *)` with the
quantize/dequantize helpers. Ops without a 16x8 kernel in tinyc (OpDef.int16_activations) are refused, naming the
node; so are recurrent layers (TF 2.21's converter makes no 16x8 LSTM) and streaming state.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node, Quant
from ..ops import REGISTRY
from .calibrate import collect_ranges
from .int16_activations import OUT_SCALE
from .ptq import WEIGHTED, _groups, _quantize_weights, group_members, split_activations

INT16_MAX = 32767
# Activation functions TFLite has in 16x8 and tinyc computes on int16 (relu and clip also fuse into producers)
INT16_FUNCTIONS = ("relu", "clip", "leaky_relu", "sigmoid", "tanh")
FIXED_FUNCTIONS = ("sigmoid", "tanh")          # output 1/32768 (Q0.15), zero point 0
# ops whose input and output share parameters in 16x8 (the int8 "shared" ops but CONCATENATION)
SHARED = tuple(n for n, d in REGISTRY.items() if d.quantize == "shared" and n != "Concat")
IN_PLACE = ("Add", "Sub", "Mul")               # TFLite's in-place float kernels (kTfLiteInplaceOpInput*Shared)
DATA_UNMODIFIED = ("Reshape", "Identity")      # share their input's buffer in TFLite's float interpreter


def supported_ops() -> tuple:
    return tuple(n for n, d in REGISTRY.items() if d.int16_activations and d.quantize is not None)


def check(g: Graph) -> None:
    """Refuse, in one line naming the node, what tinyc cannot quantize to 16x8."""
    if g.state:
        raise TinycError(f"cannot quantize to 16x8: the model has streaming state ({', '.join(g.state)}); tinyc "
                         "quantizes stateful models to int8 only (--quantize int8)")
    ops = supported_ops()
    for n in g.nodes:
        d = REGISTRY[n.op]
        if n.op in ("LSTM", "GRU", "RNN"):
            raise TinycError(f"cannot quantize node '{n.name}' ({n.op}) to 16x8: TFLite has no 16x8 {n.op} (TF 2.21's "
                             "converter refuses it too); use --quantize int8")
        if d.quantize is None or not d.int16_activations:
            raise TinycError(f"cannot quantize node '{n.name}' to 16x8: tinyc's {n.op} has no 16x8 kernel (ops with "
                             f"one: {', '.join(ops)}); use --quantize int8")
        if n.op == "Activation" and n.attrs["fn"] not in INT16_FUNCTIONS:
            raise TinycError(f"cannot quantize node '{n.name}' to 16x8: activation '{n.attrs['fn']}' has no 16x8 "
                             f"kernel (tinyc's 16x8 activations: {', '.join(INT16_FUNCTIONS)}); use --quantize int8")
        act = n.attrs.get("activation") if n.op != "Activation" else None
        if act is not None and act["fn"] not in INT16_FUNCTIONS:
            raise TinycError(f"cannot quantize node '{n.name}' to 16x8: fused activation '{act['fn']}' has no 16x8 "
                             f"kernel (tinyc's 16x8 activations: {', '.join(INT16_FUNCTIONS)})")
        if d.quantize == "fixed" and n.op != "Softmax":
            raise TinycError(f"cannot quantize node '{n.name}' ({n.op}) to 16x8: tinyc knows no fixed 16x8 output "
                             "parameters for it; use --quantize int8")
        if n.op in WEIGHTED and not all(g.tensors[i].is_const for i in n.inputs[1:]):
            raise TinycError(f"cannot quantize node '{n.name}' to 16x8: its weights are computed at run time")


def activation_scale(lo: float, hi: float) -> float:
    """The int16 scale of a tensor calibrated to [lo, hi]: max(|lo|, |hi|) / 32767 (symmetric, zero point 0)."""
    amax = max(abs(min(lo, 0.0)), abs(max(hi, 0.0)))
    if amax < 1e-8:      # a constant-zero tensor: any scale represents it
        amax = 1e-8
    return float(np.float32(amax / INT16_MAX))


def _uses(g: Graph) -> dict[str, int]:
    """How many reads each tensor has (a node's input slots, plus one as a graph output): TFLite's refcounts."""
    uses: dict[str, int] = {}
    for name in g.outputs + g.inputs:
        uses[name] = uses.get(name, 0) + 1
    for n in g.nodes:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    return uses


def widen_in_place_inputs(g: Graph, ranges: dict) -> None:
    """Widen the range of each ADD / SUB / MUL input that TFLite's float interpreter overwrites with the op's
    output (ArenaPlanner::IdentifyInPlaceTensors) by that output's range: the converter's calibrator logs the
    op's inputs again after it ran."""
    uses, root = _uses(g), {}

    def actual(name):
        while name in root:
            name = root[name]
        return name
    for n in g.nodes:
        out = n.outputs[0]
        if out in g.outputs:
            continue
        if n.op in DATA_UNMODIFIED:
            x = n.inputs[0]
            if not g.tensors[x].is_const and x not in g.inputs:
                root[out] = actual(x)
            continue
        if n.op not in IN_PLACE:
            continue
        size = g.tensors[out].size
        for i in n.inputs[:2]:
            t = g.tensors[i]
            if t.is_const or i in g.inputs or t.size != size or t.size <= 1 or uses.get(i, 0) > 1:
                continue
            if uses.get(actual(i), 0) <= 1 and i in ranges and out in ranges:
                lo, hi = ranges[i]
                ranges[i] = (min(lo, ranges[out][0]), max(hi, ranges[out][1]))
                root[out] = actual(i)
            break


def _fixed(g: Graph, name: str) -> bool:
    p = g.producer(name)
    return p is not None and (p.op == "Softmax" or (p.op == "Activation" and p.attrs["fn"] in FIXED_FUNCTIONS))


def quantize_graph_int16(g: Graph, samples: list[np.ndarray], progress=None) -> Graph:
    """The 16x8 version of float graph `g` (already optimized), calibrated on `samples` (per input, [N, ...])."""
    check(g)
    g = split_activations(g)
    ranges = collect_ranges(g, samples, progress)
    widen_in_place_inputs(g, ranges)
    q = g.copy()
    rep = _groups(q, SHARED)
    members = group_members(rep)
    scales: dict[str, float] = {}
    for r, names in members.items():
        if any(_fixed(q, n) for n in names):     # the group of a LOGISTIC / TANH / SOFTMAX output (its reshapes)
            scales[r] = OUT_SCALE
            continue
        known = [ranges[n] for n in names if n in ranges]
        if not known:
            raise TinycError(f"internal: no calibration range for tensors {names}")
        scales[r] = activation_scale(min(k[0] for k in known), max(k[1] for k in known))
    for name, r in rep.items():
        t = q.tensors[name]
        t.dtype, t.quant = "int16", Quant(np.asarray(scales[r], np.float32), np.asarray(0, np.int64))
        t.source_name, t.source_perm = name, None    # the exported .tflite keeps IR names
    for n in q.nodes:
        _quantize_constants(q, n)
        if n.op == "Pad":
            n.attrs["value"] = 0
    _requantize_concat_inputs(q)
    q.remove_unused_tensors()
    return q


def _quantize_constants(q: Graph, n: Node) -> None:
    for k, name in enumerate(n.inputs):
        t = q.tensors[name]
        if not t.is_const or t.dtype != "float32":
            continue
        if n.op in WEIGHTED and k == 1:
            data, scale = _quantize_weights(t.data)
            t.data, t.dtype = data, "int8"
            t.quant = Quant(scale, np.zeros(scale.shape, np.int64), 0)
        elif n.op in WEIGHTED and k == 2:
            in_scale = np.float32(q.tensors[n.inputs[0]].quant.scale)
            w_scale = np.asarray(q.tensors[n.inputs[1]].quant.scale, np.float32)
            bias_scale = (in_scale * w_scale).astype(np.float32)
            b = np.asarray(t.data, np.float64) / bias_scale.astype(np.float64)
            t.data, t.dtype = (np.sign(b) * np.floor(np.abs(b) + 0.5)).astype(np.int64), "int64"
            t.quant = Quant(bias_scale, np.zeros(bias_scale.shape, np.int64), 0)
        else:   # a constant operand of Add/Sub/Mul: int16, symmetric, its own range (of Concat: the output's)
            scale = (float(np.float32(q.tensors[n.outputs[0]].quant.scale)) if n.op == "Concat" else
                     activation_scale(float(np.min(t.data)), float(np.max(t.data))))
            v = np.asarray(t.data, np.float64) / scale
            t.data = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -INT16_MAX - 1, INT16_MAX).astype(np.int16)
            t.dtype, t.quant = "int16", Quant(np.asarray(scale, np.float32), np.asarray(0, np.int64))


def _requantize_concat_inputs(q: Graph) -> None:
    """Each Concat input whose scale is not the output's goes through an int16 -> int16 Quantize first (TFLite's
    int16 CONCATENATION copies raw values)."""
    nodes = []
    for n in q.nodes:
        if n.op == "Concat":
            out_quant = q.tensors[n.outputs[0]].quant
            for k, name in enumerate(n.inputs):
                t = q.tensors[name]
                if float(np.float32(t.quant.scale)) == float(np.float32(out_quant.scale)):
                    continue
                moved = q.unique_name(f"{name}_requantized")
                q.add_tensor(moved, t.shape, "int16", quant=Quant(out_quant.scale, out_quant.zero_point))
                q.tensors[moved].source_name = moved
                nodes.append(Node("Quantize", [name], [moved], {}, q.unique_name(f"{n.name}_requantize{k}")))
                n.inputs[k] = moved
        nodes.append(n)
    q.nodes = nodes
