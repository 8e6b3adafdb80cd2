"""Hybrid (dynamic-range) TFLite layers: FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D with a float32 input and
int8 weights, what the converter makes with `optimizations = [tf.lite.Optimize.DEFAULT]` and no representative
dataset. The layer's own rule (tflite_ops.py) reads it; `hybrid_rule` then gives the node the `hybrid` attribute
that selects TFLite's hybrid arithmetic (tinyc/ops/hybrid.py, docs/hybrid-numerics.md). Variants TFLite computes
in ways tinyc does not reproduce are refused in one line.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ops import hybrid

# TFLite operator -> (IR op, the axis of the TFLite filter that holds the output channels)
LAYERS = {"FULLY_CONNECTED": ("Dense", 0), "CONV_2D": ("Conv2D", 0), "DEPTHWISE_CONV_2D": ("Conv2D", 3)}
HINT = "convert it with the converter's defaults (per-channel weights) or fully to int8 or float32"


def is_hybrid_layer(cv, ins) -> bool:
    return len(ins) > 1 and min(ins[:2]) >= 0 and cv.dtype_name(ins[0]) == "FLOAT32" and \
        cv.dtype_name(ins[1]) == "INT8"


def hybrid_attrs(cv, opts, ins) -> dict:
    """The `hybrid` attribute of this hybrid layer: how TFLite 2.21's reference kernel quantizes its input
    (FULLY_CONNECTED: as `asymmetric_quantize_inputs` says; CONV_2D: asymmetric with per-channel weights, symmetric
    with one weight scale; DEPTHWISE_CONV_2D: asymmetric, per-channel weights only)."""
    kind = cv.op_name
    _, axis = LAYERS[kind]
    q = cv.quant(ins[1])
    w = cv.value(ins[1], "weights")
    if q is None:
        raise TinycError(f"{cv.where()}: int8 weights '{cv.tname(ins[1])}' without quantization parameters")
    if np.any(np.asarray(q.zero_point) != 0):
        raise TinycError(f"{cv.where()}: hybrid weights '{cv.tname(ins[1])}' have a nonzero zero point; TFLite's "
                         "hybrid kernels take symmetric int8 weights")
    channels = w.shape[axis]
    scales = np.asarray(q.scale, np.float32).reshape(-1)
    per_channel = q.axis is not None
    if per_channel and (q.axis != axis or scales.size != channels):
        raise TinycError(f"{cv.where()}: hybrid weights '{cv.tname(ins[1])}' quantized along axis {q.axis} with "
                         f"{scales.size} scales; {kind} needs one scale per output channel (axis {axis})")
    if kind == "FULLY_CONNECTED":
        asymmetric = bool(getattr(opts, "asymmetricQuantizeInputs", False)) if opts is not None else False
        return hybrid.attrs("asymmetric" if asymmetric else "symmetric", np.resize(scales, channels), "combined")
    if (opts.dilationHFactor, opts.dilationWFactor) != (1, 1):
        raise TinycError(f"{cv.where()}: a hybrid {kind} with dilation {(opts.dilationHFactor, opts.dilationWFactor)}"
                         " is not supported (the converter writes dilation as SPACE_TO_BATCH_ND); " + HINT)
    if kind == "DEPTHWISE_CONV_2D":
        if not per_channel:
            raise TinycError(f"{cv.where()}: a hybrid DEPTHWISE_CONV_2D with one weight scale per tensor: TFLite's "
                             "hybrid depthwise kernel reads a scale per channel, which such a model lacks; " + HINT)
        return hybrid.attrs("asymmetric", scales, "combined")
    groups = cv.shape(ins[0])[3] // w.shape[3]
    if not per_channel and groups != 1:
        raise TinycError(f"{cv.where()}: a grouped hybrid CONV_2D with one weight scale per tensor is not supported; "
                         + HINT)
    if per_channel:
        return hybrid.attrs("asymmetric", scales, "separate")
    return hybrid.attrs("symmetric", np.resize(scales, channels), "combined")     # s_in * s_w first (EvalHybrid)


def hybrid_rule(rule):
    """`rule` (a layer of LAYERS), whose node gets the `hybrid` attribute when the layer is hybrid."""
    def convert(cv, opts, ins):
        if not is_hybrid_layer(cv, ins):
            return rule(cv, opts, ins)
        attrs = hybrid_attrs(cv, opts, ins)
        out = rule(cv, opts, ins)
        node = cv.g.nodes[-1]
        if node.op != LAYERS[cv.op_name][0] or node.outputs != [out]:
            raise TinycError(f"internal: {cv.where()} did not end in its {LAYERS[cv.op_name][0]} node")
        node.attrs["hybrid"] = attrs
        return out
    return convert


def hybrid_rules(rules: dict) -> dict:
    """The rules of LAYERS, reading hybrid layers too."""
    return {kind: hybrid_rule(rules[kind]) for kind in LAYERS}


def refuse_hybrid(rule, what: str):
    """A rule that refuses its hybrid form (int8 weights at input 1, a float32 output) in one line."""
    def convert(cv, opts, ins):
        if len(ins) > 1 and ins[1] >= 0 and cv.dtype_name(ins[1]) == "INT8" and cv.dtype_name(cv.out) == "FLOAT32":
            raise TinycError(f"{cv.where()}: a hybrid {cv.op_name} (float activations, int8 {what}) is not supported; "
                             "tinyc compiles hybrid FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D: convert with "
                             "`converter.optimizations = []` or fully to int8 (a representative dataset)")
        return rule(cv, opts, ins)
    return convert


def dequantized_model_file(path: str, out_path: str) -> int:
    """The .tflite at `path` with the int8 weights of its hybrid layers dequantized to float32 (w * scale[c], as
    TFLite's DEQUANTIZE), written to `out_path`: the float model `--hybrid float` computes, which `tinyc verify`
    runs as the oracle. Returns how many weight tensors it dequantized."""
    import flatbuffers

    from .tflite_import import _read, _schema
    S = _schema()
    _, model = _read(S, path)
    sg = model.subgraphs[0]
    codes = {getattr(S.BuiltinOperator, kind): kind for kind in LAYERS}
    done = set()
    for op in sg.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        kind = codes.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)))
        ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        if kind is None or len(ins) < 2 or min(ins[:2]) < 0 or ins[1] in done:
            continue
        x, w = sg.tensors[ins[0]], sg.tensors[ins[1]]
        if x.type != S.TensorType.FLOAT32 or w.type != S.TensorType.INT8:
            continue
        buf = model.buffers[w.buffer]
        values = np.frombuffer(bytes(np.asarray(buf.data, np.uint8)), np.int8).astype(np.float32)
        values = values.reshape([int(d) for d in w.shape])
        scales = np.asarray(w.quantization.scale, np.float32)
        if scales.size > 1:
            shape = [1] * values.ndim
            shape[int(w.quantization.quantizedDimension)] = -1
            scales = scales.reshape(shape)
        buf.data = np.frombuffer((values * scales).astype("<f4").tobytes(), np.uint8)
        w.type, w.quantization = S.TensorType.FLOAT32, None
        done.add(ins[1])
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with open(out_path, "wb") as f:
        f.write(bytes(builder.Output()))
    return len(done)
