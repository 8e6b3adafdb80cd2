"""fold_qdq: compile the QDQ form of quantized ONNX models as int8 ops.

A QDQ model (what onnxruntime.quantization.quantize_static writes) is a float model with the quantization
written around each op: `DequantizeLinear(x_q) -> op -> QuantizeLinear -> y_q`, weights stored as integers
behind a DequantizeLinear of their own. Taken literally it computes in float on rounded values, and that is
how the frontend imports it (IR Quantize / Dequantize nodes, integer constants behind Dequantize nodes). This
pass replaces each such group by the one int8 op reading x_q and writing y_q, which is what the model means on
an integer target and what onnxruntime does itself when it fuses the groups into its QLinear kernels. Integer
kernels round differently from float-on-rounded-values, so each op agrees with onnxruntime to within one LSB
of its output (docs/onnx-qdq.md).

Steps, in order:
  0. a Mean over H and W without keepdims (torch's x.mean((2, 3))) read by a Quantize becomes a Mean with
     keepdims and a Reshape, so that step 2 can lift the Quantize up to it;
  1. sink Dequantize below data movement: Dequantize -> Reshape / Transpose / zero Pad becomes the int8 move
     followed by the Dequantize (moving bytes commutes with per-tensor dequantization; the frontend puts its
     layout transposes and flattens after Dequantize nodes);
  2. raise Quantize above data movement, the mirror image (e.g. the reshape after a 1-D convolution);
  3. Quantize(Dequantize(t)) becomes t itself when the parameters agree, else a requantization of t
     (`_requantize`: why it is an int8 Add and not an int8 -> int8 Quantize is explained there);
  4. `Dequantize(s) -> op -> [relu / clip ...] -> Quantize` becomes the int8 op with the clamps fused, for
     Conv2D, Dense, Add / Sub / Mul, MaxPool2D / AvgPool2D, Mean over H and W, Concat, Resize (nearest, and
     linear in TFLite's coordinates) and a standalone relu / clip. Each rule checks what the int8 kernel needs
     (symmetric int8 weights with per-tensor or per-output-channel scales, equal input and output parameters for
     pools and resizes, ...) and leaves the group alone
     otherwise. quantize_static usually drops a Relu into the range of the following Quantize (zero point at
     the bottom of the range); when it keeps one, it fuses here as the int8 op's `activation` clamp, which
     gives exactly Quantize(relu(v)), so this runs before `fuse_activation` (which leaves int8 ops alone);
  5. Quantize / Dequantize nodes nobody reads any more are dropped, and Dequantize nodes of constants that
     are still needed (their op stayed float) are folded into float32 constants (`fold_constants` does not
     fold quantized tensors, so this pass must run before the passes that want constant float weights).
Whatever does not match stays float between its Dequantize and Quantize: correct, only not int8.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Quant, Tensor
from ..ops import REGISTRY
from .fuse_activation import activation_of, compose

_MOVES = ("Reshape", "Transpose", "Pad")
_INT32_MAX = 2 ** 31 - 1


# -- small queries ------------------------------------------------------------------------------------------
def _readers(g: Graph, name: str) -> list:
    return [n for n in g.nodes if name in n.inputs]


def _private(g: Graph, name: str) -> bool:
    """Read by exactly one node (once) and not a graph output: its producer may be rewritten freely."""
    return name not in g.live_out() and sum(i == name for n in g.nodes for i in n.inputs) == 1


def _per_tensor(q: Quant | None) -> bool:
    return q is not None and np.asarray(q.scale).size == 1


def _same_quant(a: Quant | None, b: Quant | None) -> bool:
    return (_per_tensor(a) and _per_tensor(b) and
            np.float32(np.asarray(a.scale).reshape(())) == np.float32(np.asarray(b.scale).reshape(())) and
            int(np.asarray(a.zero_point).reshape(())) == int(np.asarray(b.zero_point).reshape(())))


def _zero_point(q: Quant) -> int:
    return int(np.asarray(q.zero_point).reshape(-1)[0])


def _dequantized_value(g: Graph, name: str) -> str | None:
    """The computed int8 tensor (per-tensor parameters) that float tensor `name` is the Dequantize of."""
    p = g.producer(name)
    if p is None or p.op != "Dequantize":
        return None
    src = g.tensors[p.inputs[0]]
    return src.name if not src.is_const and src.dtype == "int8" and _per_tensor(src.quant) else None


def _dequantized_const(g: Graph, name: str) -> Tensor | None:
    """The quantized integer constant that float tensor `name` is the Dequantize of."""
    p = g.producer(name)
    if p is None or p.op != "Dequantize":
        return None
    src = g.tensors[p.inputs[0]]
    return src if src.is_const and src.quant is not None else None


def _real_values(t: Tensor) -> np.ndarray:
    """scale * (q - zero_point) of a quantized constant, per channel along its axis, in float32."""
    shape = [1] * t.data.ndim
    if np.asarray(t.quant.scale).size > 1:
        shape[t.quant.axis] = -1
    scale = np.asarray(t.quant.scale, np.float32).reshape(shape)
    zp = np.asarray(t.quant.zero_point, np.int64).reshape(shape)
    return ((t.data.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


def _int8_tensor(g: Graph, base: str, shape, quant: Quant) -> str:
    name = g.unique_name(base)
    g.add_tensor(name, shape, "int8", quant=quant)
    return name


def _int8_move_attrs(node: Node, quant: Quant) -> dict | None:
    """The attributes of data-movement `node` done on int8 data of parameters `quant` (None: not exact)."""
    attrs = dict(node.attrs)
    if node.op == "Pad":
        if float(attrs.get("value", 0.0)) != 0.0:
            return None
        attrs["value"] = _zero_point(quant)   # real 0 is the zero point
    return attrs


# -- steps 1-3: move Quantize / Dequantize past data movement, cancel pairs ---------------------------------
def _sink_dequantize(g: Graph) -> None:
    i = 0
    while i < len(g.nodes):   # in order, so chains (Dequantize -> Transpose -> Reshape) sink all the way
        node = g.nodes[i]
        x_q = _dequantized_value(g, node.inputs[0]) if node.op in _MOVES and len(node.inputs) == 1 else None
        attrs = _int8_move_attrs(node, g.tensors[x_q].quant) if x_q else None
        if attrs is not None:
            y = node.outputs[0]
            y_q = _int8_tensor(g, y + "_q", g.tensors[y].shape, g.tensors[x_q].quant)
            g.nodes[i:i + 1] = [Node(node.op, [x_q], [y_q], attrs, node.name),
                                Node("Dequantize", [y_q], [y], {}, y_q + "_dequantize")]
        i += 1


def _spatial_mean_then_quantize(g: Graph, node: Node) -> bool:
    """A Mean over H and W of a 4-D tensor, without keepdims, read only by a Quantize."""
    if node.op != "Mean" or node.attrs.get("keepdims") or tuple(node.attrs["axes"]) != (1, 2):
        return False
    y = node.outputs[0]
    return len(g.tensors[node.inputs[0]].shape) == 4 and _private(g, y) and _readers(g, y)[0].op == "Quantize"


def _mean_keeping_dims(g: Graph) -> None:
    for node in list(g.nodes):
        if not _spatial_mean_then_quantize(g, node):
            continue
        y = node.outputs[0]
        n, _, _, c = g.tensors[node.inputs[0]].shape
        kept = g.unique_name(y + "_keepdims")
        g.add_tensor(kept, (n, 1, 1, c))
        node.attrs, node.outputs = dict(node.attrs, keepdims=True), [kept]
        g.nodes.insert(g.nodes.index(node) + 1, Node("Reshape", [kept], [y], {}, kept + "_reshape"))


def _raise_one_quantize(g: Graph) -> bool:
    for q in g.nodes:
        if q.op != "Quantize" or g.tensors[q.inputs[0]].dtype != "float32":
            continue
        move = g.producer(q.inputs[0])
        if move is None or move.op not in _MOVES or len(move.inputs) != 1 or not _private(g, q.inputs[0]):
            continue
        x = g.tensors[move.inputs[0]]
        attrs = _int8_move_attrs(move, g.tensors[q.outputs[0]].quant)
        if x.dtype != "float32" or attrs is None:
            continue
        x_q = _int8_tensor(g, x.name + "_q", x.shape, g.tensors[q.outputs[0]].quant)
        g.nodes.remove(q)
        g.nodes.insert(g.nodes.index(move), Node("Quantize", [x.name], [x_q], {}, q.name))
        move.inputs, move.outputs, move.attrs = [x_q], [q.outputs[0]], attrs
        return True
    return False


def _requantize(g: Graph, src: str, out: str, act: dict | None = None) -> Node:
    """A node (not yet in the graph) computing int8 `out` from int8 `src` of other parameters, clamped by `act`:
    an int8 Add of a constant zero that has the parameters of `src`.

    Why not an int8 -> int8 Quantize: that kernel (and the int8 relu / clip kernel) rescales as TFLite's
    REQUANTIZE does, rounding twice (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT), which on
    inputs as small as int8 values is off by up to half an LSB, always away from zero (a ratio of 0.4387 takes
    1 to 1, not 0): about one value in ten differs from onnxruntime, and averages downstream turn that bias into
    2 LSBs. The int8 Add shifts its operands left by 20 bits first and, with equal input scales, halves them
    exactly, so its one real rescale rounds a 26-bit value: as exact as a float rescale, bar true ties."""
    zero = g.add_const(src + "_zero", np.zeros((1,) * len(g.tensors[src].shape)), "int8")
    g.tensors[zero].quant = Quant(np.asarray(g.tensors[src].quant.scale, np.float32).reshape(()),
                                  np.zeros((), np.int64))
    return Node("Add", [src, zero], [out], {"activation": act}, out + "_requantize")


def _cancel_pairs(g: Graph) -> None:
    """Quantize(Dequantize(t)): t itself with the same parameters, else a requantization of t."""
    for q in list(g.nodes):
        t = _dequantized_value(g, q.inputs[0]) if q.op == "Quantize" else None
        if t is None:
            continue
        y = q.outputs[0]
        if not _same_quant(g.tensors[t].quant, g.tensors[y].quant):
            g.nodes[g.nodes.index(q)] = _requantize(g, t, y)
        elif y in g.live_out():   # the output name must survive: an exact int8 copy
            q.inputs = [t]
        else:
            g.replace_uses(y, t)
            g.nodes.remove(q)


# -- step 4: compute patterns ---------------------------------------------------------------------------------
def _is_clamp(node: Node) -> bool:
    return node.op == "Activation" and activation_of(node)["fn"] in ("relu", "clip")


def _op_before(g: Graph, q: Node):
    """(op, clamp Activations between it and Quantize `q` in order, the clamp the int8 op must apply: its own
    fused activation, if any, then those) or None. A clamp whose input is a Dequantize output is itself the op
    (a standalone int8 activation; the `_activation` rule merges its own clamp)."""
    chain, v = [], q.inputs[0]
    while True:
        p = g.producer(v)
        if p is None or not _private(g, v):
            return None
        if not (_is_clamp(p) and _dequantized_value(g, p.inputs[0]) is None):
            break
        chain.insert(0, p)
        v = p.inputs[0]
    act = p.attrs.get("activation") if p.op != "Activation" else None
    for a in chain:
        act = activation_of(a) if act is None else compose(act, activation_of(a))
        if act is None:
            return None
    if act is not None and act["fn"] not in ("relu", "clip"):   # an int8 op can only clamp
        return None
    return p, chain, act


def _int32_bias(g: Graph, name: str, in_q: Quant, w_q: Quant, channels: int) -> str | None:
    """Bias `name` as int32 of scale in_scale * w_scale: the stored integers when the model's bias scale is that
    (up to float rounding), else requantized from its real values; None if it cannot be."""
    scale = (np.float32(np.asarray(in_q.scale).reshape(())) *
             np.asarray(w_q.scale, np.float32).reshape(-1)).astype(np.float32)
    wide = np.broadcast_to(scale, (channels,)).astype(np.float64)
    b = _dequantized_const(g, name)
    if b is not None and b.dtype == "int32" and not np.any(np.asarray(b.quant.zero_point)) and np.allclose(
            np.broadcast_to(np.asarray(b.quant.scale, np.float64).reshape(-1), (channels,)), wide, rtol=1e-6, atol=0):
        values = b.data.astype(np.int64).reshape(-1)
    else:
        real = _real_values(b) if b is not None else g.const(name)
        if real is None:   # a computed bias
            return None
        values = np.round(np.asarray(real, np.float64).reshape(-1) / wide)
    if values.size != channels or np.any(np.abs(values) > _INT32_MAX):
        return None
    out = g.unique_name(name + "_int32")
    q = Quant(scale, np.zeros(scale.shape, np.int64), 0) if scale.size > 1 else \
        Quant(scale.reshape(()), np.zeros((), np.int64), None)
    g.add_tensor(out, (channels,), "int32", values.astype(np.int32), quant=q)
    return out


def _symmetric_weights(w: Tensor | None) -> bool:
    """int8, zero point 0, one scale or one per output channel (axis 0 of the IR weight layout)."""
    if w is None or w.dtype != "int8" or np.any(np.asarray(w.quant.zero_point)):
        return False
    n = np.asarray(w.quant.scale).size
    return n == 1 or (n == w.shape[0] and w.quant.axis == 0)


def _conv_or_dense(g: Graph, op: Node, act, out: Tensor) -> bool:
    x_q, w = _dequantized_value(g, op.inputs[0]), _dequantized_const(g, op.inputs[1])
    if x_q is None or not _symmetric_weights(w):
        return False
    ins = [x_q, w.name]
    if len(op.inputs) > 2:
        bias = _int32_bias(g, op.inputs[2], g.tensors[x_q].quant, w.quant, w.shape[0])
        if bias is None:
            return False
        ins.append(bias)
    op.inputs = ins
    op.attrs["activation"] = act
    return True


def _binary(g: Graph, op: Node, act, out: Tensor) -> bool:
    """Add / Sub / Mul of int8 operands (computed, or constants quantized per tensor)."""
    ins = []
    for name in op.inputs:
        src = _dequantized_value(g, name)
        if src is None:
            c = _dequantized_const(g, name)
            src = c.name if c is not None and c.dtype == "int8" and _per_tensor(c.quant) else None
        if src is None:
            return False
        ins.append(src)
    op.inputs = ins
    op.attrs["activation"] = act
    return True


def _average_as_depthwise_conv(g: Graph, op: Node, x_q: str, kernel, strides, pads, act) -> bool:
    """An average over windows as a depthwise Conv2D whose weights are all 1 / window size: one rounding from
    the int32 window sum straight to the output parameters, where the int8 average pool kernel needs equal input
    and output parameters (quantize_static gives global average pools their own). The weight is stored as 127
    with scale 1 / (127 * size), not 1 with scale 1 / size: the larger accumulator makes the kernel's first
    (fixed-point) rounding 2^-7 finer, so it stops biasing results by up to half an LSB."""
    channels, area = g.tensors[x_q].shape[3], int(kernel[0]) * int(kernel[1])
    if 255 * 127 * area > _INT32_MAX:   # the int32 window sum would overflow
        return False
    w = g.add_const(op.name + "_mean_weights", np.full((channels, kernel[0], kernel[1], 1), 127), "int8")
    g.tensors[w].quant = Quant(np.asarray(1.0 / (127 * area), np.float32), np.zeros((), np.int64))
    op.op, op.inputs = "Conv2D", [x_q, w]
    op.attrs = dict(strides=tuple(strides), dilations=(1, 1), pads=tuple(pads), groups=channels, activation=act)
    return True


def _pool(g: Graph, op: Node, act, out: Tensor) -> bool:
    x_q = _dequantized_value(g, op.inputs[0])
    if x_q is None or tuple(op.attrs.get("dilations", (1, 1))) != (1, 1):   # TFLite has no dilated pooling
        return False
    pads, avg = tuple(op.attrs["pads"]), op.op == "AvgPool2D"
    counts_pads = avg and op.attrs.get("count_include_pad") and any(pads)
    if _same_quant(g.tensors[x_q].quant, out.quant) and not counts_pads:
        op.inputs = [x_q]
        op.attrs["activation"] = act
        return True
    if avg and (counts_pads or not any(pads)):   # a constant divisor: the window area
        return _average_as_depthwise_conv(g, op, x_q, op.attrs["kernel"], op.attrs["strides"], pads, act)
    return False


def _mean(g: Graph, op: Node, act, out: Tensor) -> bool:
    """Mean over H and W of an NHWC tensor (global average pool) as a whole-image average pool."""
    x_q = _dequantized_value(g, op.inputs[0])
    shape = g.tensors[op.inputs[0]].shape
    if x_q is None or len(shape) != 4 or tuple(op.attrs["axes"]) != (1, 2) or not op.attrs.get("keepdims"):
        return False
    kernel, strides, pads = (shape[1], shape[2]), (1, 1), (0, 0, 0, 0)
    if not _same_quant(g.tensors[x_q].quant, out.quant):
        return _average_as_depthwise_conv(g, op, x_q, kernel, strides, pads, act)
    op.op, op.inputs = "AvgPool2D", [x_q]
    op.attrs = dict(kernel=kernel, strides=strides, pads=pads, count_include_pad=False, activation=act)
    return True


def _concat(g: Graph, op: Node, act, out: Tensor) -> bool:
    """int8 Concat copies bytes: inputs with other parameters than the output are requantized first."""
    srcs = [_dequantized_value(g, name) for name in op.inputs]
    if act is not None or any(s is None for s in srcs):
        return False
    ins = []
    for s in srcs:
        if not _same_quant(g.tensors[s].quant, out.quant):
            r = _int8_tensor(g, s + "_requantized", g.tensors[s].shape, out.quant)
            g.nodes.insert(g.nodes.index(op), _requantize(g, s, r))
            s = r
        ins.append(s)
    op.inputs = ins
    return True


def _activation(g: Graph, op: Node, act, out: Tensor) -> bool:
    """A standalone relu / clip: the int8 activation kernel when the parameters do not change (an exact clamp),
    else a requantization with the clamp fused (see `_requantize`)."""
    x_q = _dequantized_value(g, op.inputs[0])
    if x_q is None or not _is_clamp(op):
        return False
    merged = activation_of(op) if act is None else compose(activation_of(op), act)
    if merged is None:
        return False
    if _same_quant(g.tensors[x_q].quant, out.quant):
        op.inputs, op.attrs = [x_q], dict(merged)
        return True
    add = _requantize(g, x_q, out.name, merged)
    op.op, op.inputs, op.attrs = add.op, add.inputs, add.attrs   # `op` itself becomes the requantizing Add
    return True


def _resize(g: Graph, op: Node, act, out: Tensor) -> bool:
    """Resize works on the stored values (nearest copies them; linear is TFLite's integer interpolation, for the
    coordinates TFLite has): equal input and output parameters, no clamp."""
    from ..ops.resize import tflite_coord
    x_q = _dequantized_value(g, op.inputs[0])
    if x_q is None or act is not None or not _same_quant(g.tensors[x_q].quant, out.quant):
        return False
    if op.attrs["mode"] != "nearest" and tflite_coord(op.attrs, g.tensors[op.inputs[0]].shape, out.shape) is None:
        return False
    op.inputs = [x_q]
    return True


# The rule each op names (OpDef.qdq_rule).
_RULES = {"weighted": _conv_or_dense, "binary": _binary, "pool": _pool, "mean": _mean, "concat": _concat,
          "activation": _activation, "resize": _resize}


def _fold_groups(g: Graph) -> None:
    for q in list(g.nodes):   # rules add and remove nodes, never a Quantize
        if q.op != "Quantize" or g.tensors[q.inputs[0]].dtype != "float32":
            continue
        out = g.tensors[q.outputs[0]]
        found = _op_before(g, q)
        if found is None or not _per_tensor(out.quant):
            continue
        op, chain, act = found
        rule = _RULES.get(REGISTRY[op.op].qdq_rule)
        if rule is None or not rule(g, op, act, out):
            continue
        op.outputs = [out.name]
        gone = [q] + chain
        g.nodes = [n for n in g.nodes if all(n is not x for x in gone)]


# -- step 5: clean up -----------------------------------------------------------------------------------------
def _drop_unread_qdq(g: Graph) -> None:
    while True:
        read = g.live_out() | {i for n in g.nodes for i in n.inputs}
        kept = [n for n in g.nodes if n.op not in ("Quantize", "Dequantize") or any(o in read for o in n.outputs)]
        if len(kept) == len(g.nodes):
            return
        g.nodes = kept


def _fold_constant_dequantize(g: Graph) -> None:
    """Weights whose op stayed float: their Dequantize becomes a float32 constant."""
    for n in list(g.nodes):
        if n.op == "Dequantize" and g.tensors[n.inputs[0]].is_const and n.outputs[0] not in g.outputs:
            out = g.tensors[n.outputs[0]]
            out.data = np.ascontiguousarray(_real_values(g.tensors[n.inputs[0]]).reshape(out.shape))
            g.nodes.remove(n)


def fold_qdq(g: Graph) -> Graph:
    """Turn Dequantize -> float op -> Quantize groups (ONNX QDQ models) into int8 ops; the rest stays float."""
    g = g.copy()
    if not any(n.op in ("Quantize", "Dequantize") for n in g.nodes):
        return g
    _mean_keeping_dims(g)
    _sink_dequantize(g)
    while _raise_one_quantize(g):
        pass
    _cancel_pairs(g)
    _fold_groups(g)
    _drop_unread_qdq(g)
    _fold_constant_dequantize(g)
    g.remove_unused_tensors()
    return g
