"""ONNX op rules: one small function per ONNX op type, registered in ONNX_OPS (`tinyc ops` lists its keys).

Each rule reads the node through the importer (constants, layouts, logical shapes) and adds IR nodes.
"""
from __future__ import annotations


import numpy as np

from ..activations import relu6
from ..errors import TinycError
from ..ir import Quant
from ..ops import recurrent
from ..ops.cast import cast_values
from ..ops.linear_quant import DEQUANTIZED_TYPES, QUANTIZED_TYPES, dequantize_evaluate
from ..ops.opdef import SUB_BYTE_INTEGERS
from .geometry import conv_geometry
from .onnx_import import (RUNTIME_DTYPES, Layout, QuantizedConst, _input_dtype, channels_last, inverse, plain,
                          quantized_type, shift_to_int8)

FLOAT_MAX = float(np.finfo(np.float32).max)


def _attrs(node) -> dict:
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _name(node) -> str:
    return node.name or node.output[0]


def _spatial_pads(node, a, in_hw, kernel, strides, dilations):
    """ONNX pads / auto_pad for the spatial axes -> (begins, ends)."""
    n = len(in_hw)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        mode = "same" if auto == "SAME_UPPER" else "same_lower"
        geo = [conv_geometry(in_hw[i], kernel[i], strides[i], dilations[i], mode) for i in range(n)]
        return [g[1] for g in geo], [g[2] for g in geo]
    if auto == "VALID":
        return [0] * n, [0] * n
    pads = list(a.get("pads", [0] * (2 * n)))
    if any(p < 0 for p in pads):
        raise TinycError(f"node '{_name(node)}' has negative pads {pads}; tinyc needs pads >= 0")
    return pads[:n], pads[n:]


def _ceil_pool_shape(imp, outputs, shape, inferred, kernel, strides, dilations, begins, ends):
    """ceil_mode output size as onnxruntime (and PyTorch) compute it: a last window that would start in the end
    padding is dropped. onnx shape inference keeps it, so on disagreement the shapes after the outputs are
    re-inferred."""
    sizes = []
    for i in range(len(kernel)):
        span = (kernel[i] - 1) * dilations[i] + 1
        n = -(-(shape[2 + i] + begins[i] + ends[i] - span) // strides[i]) + 1
        if (n - 1) * strides[i] >= shape[2 + i] + begins[i]:
            n -= 1
        sizes.append(n)
    out_shape = tuple(inferred[:2]) + tuple(sizes)
    for y in outputs:
        if imp.shapes.get(y) != out_shape:
            imp.forget_shapes_after(y)
            imp.shapes[y] = out_shape
    return out_shape


# IR op per spatial rank (1-D runs as 2-D with H = 1) and kind
SPATIAL_OPS = {2: {"conv": "Conv2D", "max": "MaxPool2D", "avg": "AvgPool2D", "lp": "LpPool"},
               3: {"conv": "Conv3D", "max": "MaxPool3D", "avg": "AvgPool3D", "lp": "LpPool"}}


def _lp_order(node) -> int:
    """LpPool's / GlobalLpPool's p (default 2), a whole number >= 1."""
    p = _attrs(node).get("p", 2)
    if p < 1:
        raise TinycError(f"{node.op_type} '{_name(node)}' has p = {p}; a p-norm needs p >= 1")
    return int(p)


def _spatial(imp, node, kind: str, weights=None, bias=None):
    """Conv / pooling on rank-3 (1-D), rank-4 (2-D) or rank-5 (3-D) values, as NHWC / NDHWC IR ops; 1-D runs
    as 2-D with H = 1 via free reshapes."""
    x, y = node.input[0], node.output[0]
    shape = imp.logical_shape(x)
    rank = len(shape)
    if rank not in (3, 4, 5):
        raise TinycError(f"node '{_name(node)}' ({node.op_type}) has a rank-{rank} input; tinyc supports 1-D, "
                         "2-D and 3-D spatial ops")
    a = _attrs(node)
    nsp = rank - 2
    kernel = list(weights.shape[2:]) if weights is not None else list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    if any(s <= 0 for s in strides) or any(d <= 0 for d in dil):
        raise TinycError(f"node '{_name(node)}' has non-positive strides {strides} or dilations {dil}")
    begins, ends = _spatial_pads(node, a, shape[2:], kernel, strides, dil)
    out_shape = imp.logical_shape(y)
    # With no explicit padding, count_include_pad changes nothing: the ceil_mode overhang is never counted.
    include_pad = bool(a.get("count_include_pad", 0)) and (any(begins) or any(ends))
    zero_pads = None      # explicit padding written into the tensor before an average pool
    if kind != "conv":
        if a.get("ceil_mode", 0):
            out_shape = _ceil_pool_shape(imp, [o for o in node.output if o], shape, out_shape, kernel, strides,
                                         dil, begins, ends)
        # ceil_mode: extra end padding that covers the last partial window
        overhang = [max(0, (out_shape[2 + i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - shape[2 + i]
                        - begins[i] - ends[i]) for i in range(nsp)]
        if include_pad and any(overhang):
            # onnxruntime divides by the taps in the explicit padding but not by those in the overhang: the
            # padding becomes zeros in the tensor, and the average counts the cells there are
            zero_pads, begins, ends, include_pad = (begins, ends), [0] * nsp, overhang, False
        else:
            ends = [e + o for e, o in zip(ends, overhang)]
    if any(d < 1 for d in out_shape[2:]):
        raise TinycError(f"node '{_name(node)}' ({node.op_type}): window {kernel} with dilations {dil} is larger "
                         f"than its padded input {list(shape[2:])}; the model is invalid")
    if nsp == 1:
        kernel, strides, dil, begins, ends = [1] + kernel, [1] + strides, [1] + dil, [0] + begins, [0] + ends
        zero_pads = zero_pads and ([0] + zero_pads[0], [0] + zero_pads[1])
    attrs = dict(strides=tuple(strides), pads=tuple(begins) + tuple(ends))
    src = imp.get(x, channels_last(rank))
    dtype = imp.g.tensors[src].dtype
    if nsp == 1:  # [N, L, C] -> [N, 1, L, C]: a free alias
        src4 = imp.g.unique_name(f"{y}_in2d")
        n = imp.g.tensors[src].shape[0]
        imp.g.add_tensor(src4, (n, 1) + imp.g.tensors[src].shape[1:], dtype)
        imp.g.add_node("Reshape", [src], [src4], name=src4)
        src = src4
    if zero_pads is not None:
        padded = imp.g.unique_name(f"{y}_zero_padded")
        widths = ((0, 0),) + tuple(zip(*zero_pads)) + ((0, 0),)
        imp.g.add_tensor(padded, [d + b + e for d, (b, e) in zip(imp.g.tensors[src].shape, widths)], dtype)
        imp.g.add_node("Pad", [src], [padded], name=padded, pads=widths, value=0.0)
        src = padded
    if nsp == 1:
        dst = imp.g.unique_name(f"{y}_2d")
        imp.g.add_tensor(dst, (out_shape[0], 1, out_shape[2], out_shape[1]), dtype)
    else:
        dst = imp.define(y, channels_last(rank))
    op = SPATIAL_OPS[max(nsp, 2)][kind]
    if kind == "conv":
        # ONNX [O, C/groups, (KD, KH,) KW] -> IR [O, (KD,) KH, KW, C/groups]
        def to_ir(w):
            return np.moveaxis(w.reshape(w.shape[:2] + (1,) * (len(kernel) + 2 - w.ndim) + w.shape[2:]), 1, -1)
        ins = [src, _weight_input(imp, node.input[1], f"{y}_w", to_ir)]
        if bias is not None:
            ins.append(_weight_input(imp, node.input[2], f"{y}_b", lambda a: a, what="bias"))
        imp.g.add_node(op, ins, [dst], name=_name(node), dilations=tuple(dil), groups=a.get("group", 1),
                       activation=None, **attrs)
    else:
        extra = {"count_include_pad": include_pad} if kind == "avg" else {}
        if kind == "lp":
            extra["p"] = _lp_order(node)
        if nsp == 3 or kind == "lp" or any(d != 1 for d in dil):
            extra["dilations"] = tuple(dil)
        imp.g.add_node(op, [src], [dst], name=_name(node), kernel=tuple(kernel), **attrs, **extra)
    if nsp == 1:
        out = imp.define(y, channels_last(3))
        imp.g.add_node("Reshape", [dst], [out], name=out)
    if kind == "max" and len(node.output) > 1 and node.output[1]:
        _max_pool_indices(imp, node, src, nsp, dict(kernel=tuple(kernel), dilations=tuple(dil),
                                                    storage_order=a.get("storage_order", 0), **attrs))


def _max_pool_indices(imp, node, src: str, nsp: int, attrs: dict) -> None:
    """MaxPool's second output, Indices: a MaxPoolIndex over the same windows of the same (2-D or 3-D) input."""
    idx = node.output[1]
    if nsp == 1:
        dst = imp.g.unique_name(f"{idx}_2d")
        shape = imp.logical_shape(idx)
        imp.g.add_tensor(dst, (shape[0], 1, shape[2], shape[1]), "int64")
    else:
        dst = imp.define(idx, channels_last(nsp + 2))
    imp.g.add_node("MaxPoolIndex", [src], [dst], name=f"{_name(node)}_indices", **attrs)
    if nsp == 1:
        out = imp.define(idx, channels_last(3))
        imp.g.add_node("Reshape", [dst], [out], name=out)


def _weight_input(imp, onnx_name: str, ir_name: str, to_ir, scale_by: float = 1.0, what: str = "weights",
                  symmetric: bool = True) -> str:
    """The IR tensor of a constant operand, brought into IR layout by `to_ir` (data movement only). A quantized
    constant (DequantizeLinear of an initializer) stays integer behind an IR Dequantize, for `fold_qdq`; a plain
    one is a float32 constant, or keeps its integer or bool type (an operand of an op on integer tensors).
    `scale_by` multiplies the values (Gemm alpha / beta)."""
    qc = imp.qconsts.get(onnx_name)
    raw = np.asarray(imp.consts[onnx_name])
    if qc is None and raw.dtype.kind in "iub" and scale_by == 1:
        return imp.g.add_const(ir_name, np.asarray(to_ir(raw)), raw.dtype.name)
    if qc is None or scale_by <= 0:   # a negative factor cannot go into a scale: dequantized, float
        arr = np.asarray(to_ir(np.asarray(imp.consts[onnx_name], np.float32)), np.float32)
        return imp.g.add_const(ir_name, arr * np.float32(scale_by) if scale_by != 1 else arr)
    if symmetric and np.any(qc.zero_point != 0):
        raise TinycError(f"{what} '{qc.source}' are quantized asymmetrically (zero point != 0); tinyc's int8 "
                         "kernels need symmetric weights: quantize weights as QInt8 (symmetric)")
    return imp.add_quantized_const(qc, ir_name, to_ir, scale_by)


def conv(imp, node):
    w = np.asarray(imp.const(node.input[1], f"Conv '{_name(node)}' weights"), np.float32)
    b = imp.opt_const(node, 2)
    if len(node.input) > 2 and node.input[2] and b is None:
        raise TinycError(f"Conv '{_name(node)}' has a computed bias; tinyc needs constant biases")
    group = _attrs(node).get("group", 1)
    cin = imp.logical_shape(node.input[0])[1]
    if group < 1 or cin % group or w.shape[1] * group != cin or w.shape[0] % group:
        raise TinycError(f"Conv '{_name(node)}': weights {w.shape} do not match {cin} input channels in "
                         f"{group} group(s)")
    _spatial(imp, node, "conv", w, None if b is None else np.asarray(b, np.float32))


def _transpose_pads(node, a, in_sp, kernel, strides, dil, nsp):
    """ConvTranspose's (output sizes, crops before, crops after) of the full output per spatial axis: from pads, or
    from output_shape (auto_pad SAME_UPPER puts the odd row of the difference after, SAME_LOWER and NOTSET without
    pads before, as onnxruntime does); output_padding adds rows at the end. A negative crop extends the output."""
    out_pad = list(a.get("output_padding", [0] * nsp))
    if len(out_pad) != nsp or any(p < 0 for p in out_pad):
        raise TinycError(f"ConvTranspose '{_name(node)}': output_padding {out_pad} is not {nsp} values >= 0")
    full = [(in_sp[i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 for i in range(nsp)]
    auto = a.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise TinycError(f"ConvTranspose '{_name(node)}': unknown auto_pad '{auto}'")
    pads = list(a.get("pads", [0] * (2 * nsp)))
    if len(pads) != 2 * nsp:
        raise TinycError(f"ConvTranspose '{_name(node)}': pads {pads} are not {2 * nsp} values")
    if "output_shape" in a:
        out = list(a["output_shape"])[-nsp:]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        out = [in_sp[i] * strides[i] for i in range(nsp)]
    else:
        out = None
    if out is None or (auto == "NOTSET" and "pads" in a):
        begins = pads[:nsp] if auto == "NOTSET" else [0] * nsp
        if out is None:
            out = [full[i] + out_pad[i] - begins[i] - (pads[nsp + i] if auto == "NOTSET" else 0)
                   for i in range(nsp)]
    else:
        total = [full[i] + out_pad[i] - out[i] for i in range(nsp)]
        # onnxruntime splits as SAME_LOWER when auto_pad is NOTSET (the odd row goes before)
        begins = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    ends = [full[i] - begins[i] - out[i] for i in range(nsp)]
    if any(o < 1 for o in out):
        raise TinycError(f"ConvTranspose '{_name(node)}': pads {pads} leave an empty output {out}; the model is "
                         "invalid")
    return out, begins, ends


def conv_transpose(imp, node):
    """ConvTranspose on rank-3 (1-D, as 2-D with H = 1) and rank-4 values: the IR's ConvTranspose2D (NHWC)."""
    name = _name(node)
    x, y = node.input[0], node.output[0]
    shape = imp.logical_shape(x)
    rank = len(shape)
    if rank not in (3, 4):
        raise TinycError(f"ConvTranspose '{name}' has a rank-{rank} input; tinyc supports 1-D and 2-D transposed "
                         "convolutions")
    w = np.asarray(imp.const(node.input[1], f"ConvTranspose '{name}' weights"), np.float32)
    b = imp.opt_const(node, 2)
    if len(node.input) > 2 and node.input[2] and b is None:
        raise TinycError(f"ConvTranspose '{name}' has a computed bias; tinyc needs constant biases")
    a = _attrs(node)
    nsp = rank - 2
    group = a.get("group", 1)
    cin = shape[1]
    if w.ndim != rank or group < 1 or cin % group or w.shape[0] != cin:
        raise TinycError(f"ConvTranspose '{name}': weights {w.shape} do not match {cin} input channels in {group} "
                         "group(s)")
    kernel = list(w.shape[2:])
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    if len(strides) != nsp or len(dil) != nsp or min(strides + dil) < 1:
        raise TinycError(f"ConvTranspose '{name}' has strides {strides} or dilations {dil} that are not {nsp} "
                         "positive values")
    out, begins, ends = _transpose_pads(node, a, list(shape[2:]), kernel, strides, dil, nsp)
    out_shape = (shape[0], w.shape[1] * group, *out)
    if imp.shapes.get(y) != out_shape:         # onnx shape inference disagrees (or knows nothing): ours holds
        imp.forget_shapes_after(y)
        imp.shapes[y] = out_shape
    if nsp == 1:
        kernel, strides, dil, begins, ends = [1] + kernel, [1] + strides, [1] + dil, [0] + begins, [0] + ends
    src = imp.get(x, channels_last(rank))
    dtype = imp.g.tensors[src].dtype
    if nsp == 1:  # [N, L, C] -> [N, 1, L, C]: a free alias
        src4 = imp.g.unique_name(f"{y}_in2d")
        imp.g.add_tensor(src4, (shape[0], 1, shape[2], cin), dtype)
        imp.g.add_node("Reshape", [src], [src4], name=src4)
        src = src4
        dst = imp.g.unique_name(f"{y}_2d")
        imp.g.add_tensor(dst, (shape[0], 1, out[0], out_shape[1]), dtype)
    else:
        dst = imp.define(y, channels_last(rank))
    cg, og = cin // group, w.shape[1]

    def to_ir(v):   # ONNX [C, O/groups, (KH,) KW] -> IR [O, KH, KW, C/groups]
        v = v[:, :, None, :] if v.ndim == 3 else v
        v = v.reshape(group, cg, og, v.shape[2], v.shape[3])
        return np.ascontiguousarray(v.transpose(0, 2, 3, 4, 1).reshape(group * og, v.shape[3], v.shape[4], cg))
    ins = [src, _weight_input(imp, node.input[1], f"{y}_w", to_ir)]
    if b is not None:
        ins.append(_weight_input(imp, node.input[2], f"{y}_b", lambda v: v, what="bias"))
    imp.g.add_node("ConvTranspose2D", ins, [dst], name=name, strides=tuple(strides), dilations=tuple(dil),
                   pads=tuple(begins) + tuple(ends), groups=group, activation=None)
    if nsp == 1:
        imp.g.add_node("Reshape", [dst], [imp.define(y, channels_last(3))], name=f"{y}_1d")


def pool(kind):
    return lambda imp, node: _spatial(imp, node, kind)


def global_average_pool(imp, node):
    x, y = node.input[0], node.output[0]
    rank = len(imp.logical_shape(x))
    src = imp.get(x, channels_last(rank))
    out = imp.define(y, channels_last(rank))
    imp.g.add_node("Mean", [src], [out], name=_name(node), axes=tuple(range(1, rank - 1)), keepdims=True)


def global_max_pool(imp, node):
    """GlobalMaxPool: the maximum over every spatial axis (Reduce max)."""
    x, y = node.input[0], node.output[0]
    rank = len(imp.logical_shape(x))
    if rank < 3:
        raise TinycError(f"GlobalMaxPool '{_name(node)}' has a rank-{rank} input; it needs [N, C, spatial...]")
    src = imp.get(x, channels_last(rank))
    out = imp.define(y, channels_last(rank))
    imp.g.add_node("Reduce", [src], [out], name=_name(node), kind="max", axes=tuple(range(1, rank - 1)),
                   keepdims=True)


def global_lp_pool(imp, node):
    """GlobalLpPool: one LpPool window over every spatial axis."""
    x, y = node.input[0], node.output[0]
    shape = imp.logical_shape(x)
    rank = len(shape)
    if rank not in (3, 4, 5):
        raise TinycError(f"GlobalLpPool '{_name(node)}' has a rank-{rank} input; tinyc supports 1 to 3 spatial "
                         "axes")
    p = _lp_order(node)
    nsp = rank - 2
    src = imp.get(x, channels_last(rank))
    out = imp.define(y, channels_last(rank))
    imp.g.add_node("LpPool", [src], [out], name=_name(node), kernel=tuple(shape[2:]), strides=(1,) * nsp,
                   dilations=(1,) * nsp, pads=(0,) * (2 * nsp), p=p)


# Opset from which each ReduceX takes its axes as a second input and has noop_with_empty_axes (18 for the rest).
AXES_INPUT_OPSET = {"ReduceSum": 13}


def _reduced_layout(imp, x, axes, keep):
    """(the input's IR tensor, its physical reduced axes, the output's layout) for a reduction over the logical
    `axes` of ONNX value `x`."""
    rank = len(imp.logical_shape(x))
    lay = imp.layout(x) if imp.layout(x).flat is None else plain(rank)
    src = imp.get(x, lay)
    phys_axes = tuple(sorted(lay.perm[ax] for ax in axes))
    if keep:
        return src, phys_axes, lay
    rest = [lay.perm[r] for r in range(rank) if r not in axes]
    return src, phys_axes, Layout(tuple(sorted(rest).index(p) for p in rest))


def reduce(kind):
    """ReduceMean (the IR's Mean) and ReduceSum/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare (the IR's Reduce):
    axes as an attribute or (from AXES_INPUT_OPSET) a constant second input, negative ones too."""
    def rule(imp, node):
        x, y = node.input[0], node.output[0]
        a = _attrs(node)
        rank = len(imp.logical_shape(x))
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = np.asarray(imp.const(node.input[1], f"{node.op_type} '{_name(node)}' axes")).reshape(-1).tolist()
        if not axes:   # absent or empty: every axis, or none with noop_with_empty_axes
            noop = imp.opset >= AXES_INPUT_OPSET.get(node.op_type, 18) and a.get("noop_with_empty_axes", 0)
            if noop and kind == "mean":
                src = imp.get(x)
                imp.g.add_node("Identity", [src], [imp.define(y, imp.layout(x), like=src)], name=_name(node))
                return
            axes = [] if noop else range(rank)   # no axis: each value through the kind's formula (|x| for L1)
        if any(not -rank <= int(ax) < rank for ax in axes):
            raise TinycError(f"{node.op_type} '{_name(node)}': axes {list(axes)} are out of range for rank {rank}")
        axes = sorted({int(ax) % rank for ax in axes})   # a repeated axis is reduced once, as onnxruntime does
        keep = bool(a.get("keepdims", 1))
        src, phys_axes, out_lay = _reduced_layout(imp, x, axes, keep)
        out = imp.define(y, out_lay)
        if kind == "mean":
            imp.g.add_node("Mean", [src], [out], name=_name(node), axes=phys_axes, keepdims=keep)
        else:
            imp.g.add_node("Reduce", [src], [out], name=_name(node), kind=kind, axes=phys_axes, keepdims=keep)
    return rule


def arg_min_max(kind):
    """ArgMax / ArgMin: int64 indices along one axis."""
    def rule(imp, node):
        x, y = node.input[0], node.output[0]
        a = _attrs(node)
        rank = len(imp.logical_shape(x))
        axis = int(a.get("axis", 0))
        if not -rank <= axis < rank:
            raise TinycError(f"{node.op_type} '{_name(node)}': axis {axis} is out of range for rank {rank}")
        keep = bool(a.get("keepdims", 1))
        src, (phys_axis,), out_lay = _reduced_layout(imp, x, [axis % rank], keep)
        out = imp.define(y, out_lay)
        imp.g.tensors[out].dtype = "int64"
        imp.g.add_node("ArgMinMax", [src], [out], name=_name(node), kind=kind, axis=phys_axis, keepdims=keep,
                       select_last_index=bool(a.get("select_last_index", 0)))
    return rule


def _dense_input(imp, x):
    """The IR tensor feeding a Dense, and the data movement that puts weights [O, K] in its physical order."""
    lay = imp.layout(x)
    if lay.flat is not None and len(imp.logical_shape(x)) == 2:
        order = list(lay.flat)

        def to_physical(w):
            w_phys = np.empty_like(w)
            w_phys[:, order] = w
            return w_phys
        return imp.get(x), to_physical
    return imp.get(x, plain(len(imp.logical_shape(x)))), lambda w: w


def _broadcasts_to(shape, out_shape) -> bool:
    try:
        return np.broadcast_shapes(tuple(shape), tuple(out_shape)) == tuple(out_shape)
    except ValueError:
        return False


def _matrix_operand(imp, name: str, ir_base: str, transposed: bool) -> tuple[str, bool]:
    """(IR tensor, transposed?) of a 2-D Gemm operand: a computed value stored transposed (a relabel by Transpose)
    flips the flag instead of being copied; a constant is added as float32."""
    if name not in imp.values:
        return imp.g.add_const(imp.g.unique_name(ir_base), np.asarray(imp.consts[name], np.float32)), transposed
    lay = imp.layout(name)
    if lay.flat is None and lay.perm == (1, 0):
        return imp.get(name), not transposed
    return imp.get(name, plain(2)), transposed


def _gemm_computed(imp, node, a):
    """Gemm with a computed B or C: MatMul (transA / transB read in place), then alpha * (...) and + beta * C as
    elementwise Mul and Add (C of any shape that broadcasts to [M, N], computed or constant)."""
    y = node.output[0]
    ta, tb = bool(a.get("transA", 0)), bool(a.get("transB", 0))
    sa, sb = imp.logical_shape(node.input[0]), imp.logical_shape(node.input[1])
    if len(sa) != 2 or len(sb) != 2 or (sa[0] if ta else sa[1]) != (sb[1] if tb else sb[0]):
        raise TinycError(f"Gemm '{_name(node)}': A {list(sa)} (transA={int(ta)}) and B {list(sb)} (transB={int(tb)}) "
                         "do not multiply; the model is invalid")
    for n in node.input[:3]:
        if n and imp.dtypes.get(n, "float32") != "float32":
            raise TinycError(f"Gemm '{_name(node)}' of computed {imp.dtypes[n]} operands; tinyc's MatMul of computed "
                             "tensors is float32 (or int8 from TFLite)")
    (src_a, ta), (src_b, tb) = (_matrix_operand(imp, n, f"{y}_{w}", t)
                                for n, w, t in ((node.input[0], "a", ta), (node.input[1], "b", tb)))
    shape = (sa[1] if a.get("transA", 0) else sa[0], sb[0] if a.get("transB", 0) else sb[1])
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    has_c = len(node.input) > 2 and bool(node.input[2])
    if has_c and not _broadcasts_to(imp.logical_shape(node.input[2]), shape):
        raise TinycError(f"Gemm '{_name(node)}': C of shape {list(imp.logical_shape(node.input[2]))} does not "
                         f"broadcast to the output's {list(shape)}; the model is invalid")
    steps = (["alpha"] if alpha != 1 else []) + (["c"] if has_c else [])
    product = _fresh(imp, f"{y}_matmul") if steps else y
    imp.shapes[product] = shape
    out = imp.define(product, plain(2), source=not steps)
    imp.g.add_node("MatMul", [src_a, src_b], [out], name=_name(node) if not steps else out, transpose_a=ta,
                   transpose_b=tb)
    acc = product
    if alpha != 1:
        scale = _fresh(imp, f"{y}_alpha")
        imp.consts[scale] = np.asarray(alpha, np.float32)
        target = _fresh(imp, f"{y}_scaled") if has_c else y
        imp.shapes[target] = shape
        _binary_node(imp, "Mul", acc, scale, target, _name(node) if not has_c else target, source=not has_c)
        acc = target
    if has_c:
        c = node.input[2]
        if beta != 1 and c in imp.consts:
            c2 = _fresh(imp, f"{y}_c")
            imp.consts[c2] = np.asarray(imp.consts[c], np.float32) * np.float32(beta)
            c = c2
        elif beta != 1:
            factor, c2 = _fresh(imp, f"{y}_beta"), _fresh(imp, f"{y}_c")
            imp.consts[factor] = np.asarray(beta, np.float32)
            imp.shapes[c2] = imp.logical_shape(c)
            _binary_node(imp, "Mul", c, factor, c2, c2, source=False)
            c = c2
        _binary_node(imp, "Add", acc, c, y, _name(node))


def gemm(imp, node):
    a = _attrs(node)
    what = f"Gemm '{_name(node)}'"
    if node.input[1] in imp.values or (len(node.input) > 2 and node.input[2] in imp.values):
        _gemm_computed(imp, node, a)
        return
    b = np.asarray(imp.const(node.input[1], f"{what} weights"), np.float32)
    trans_b = a.get("transB", 0)
    n_out = b.shape[0] if trans_b else b.shape[1]
    if a.get("transA", 0):   # A is [K, M]: stored as its transpose [M, K] (a relabel, or one copy)
        src, to_physical = imp.get(node.input[0], Layout((1, 0))), lambda w: w
    else:
        src, to_physical = _dense_input(imp, node.input[0])
    ins = [src, _weight_input(imp, node.input[1], f"{node.output[0]}_w",
                              lambda w: to_physical(w if trans_b else w.T), scale_by=float(a.get("alpha", 1.0)))]
    c = imp.opt_const(node, 2)
    if len(node.input) > 2 and node.input[2] and c is None:
        raise TinycError(f"{what} has a computed C input; tinyc needs a constant bias")
    rows = imp.g.tensors[src].shape[0]
    out_shape = (rows, n_out)
    if c is not None and not _broadcasts_to(np.shape(c), out_shape):
        raise TinycError(f"{what}: C of shape {tuple(np.shape(c))} does not broadcast to the output's "
                         f"{list(out_shape)}; the model is invalid")
    beta = float(a.get("beta", 1.0))
    if c is not None and np.ndim(c) == 2 and np.shape(c)[0] > 1:
        # C differs per row: Dense without bias, then an Add of beta * C (a Dense bias is one row for all).
        acc = imp.g.unique_name(f"{node.output[0]}_gemm")
        imp.g.add_tensor(acc, out_shape)
        imp.g.add_node("Dense", ins, [acc], name=acc, activation=None)
        cc = np.asarray(c, np.float32)
        cc = imp.g.add_const(f"{node.output[0]}_c", cc * np.float32(beta) if beta != 1 else cc)
        out = imp.define(node.output[0], plain(2))
        imp.g.add_node("Add", [acc, cc], [out], name=_name(node), activation=None)
        return
    if c is not None:
        ins.append(_weight_input(imp, node.input[2], f"{node.output[0]}_b",
                                 lambda v: np.broadcast_to(v, (1, n_out)).reshape(-1), scale_by=beta, what="bias"))
    out = imp.define(node.output[0], plain(2))
    imp.g.add_node("Dense", ins, [out], name=_name(node), activation=None)


def _matmul_computed(imp, node):
    """MatMul of two computed tensors (IR MatMul); a 1-D operand is a row (a) or a column (b), as ONNX and NumPy
    define it, by free Reshapes around the product."""
    names = []
    shapes = [imp.logical_shape(n) for n in node.input[:2]]
    for i, (n, shape) in enumerate(zip(node.input[:2], shapes)):
        src = imp.get(n, plain(len(shape))) if n in imp.values else None
        if src is None:
            src = imp.g.add_const(f"{node.output[0]}_in{i}", np.asarray(imp.consts[n], np.float32))
        if len(shape) == 1:
            two = imp.g.unique_name(f"{node.output[0]}_in{i}_2d")
            imp.g.add_tensor(two, (1, shape[0]) if i == 0 else (shape[0], 1), imp.g.tensors[src].dtype)
            imp.g.add_node("Reshape", [src], [two], name=two)
            src = two
        names.append(src)
    a, b = (imp.g.tensors[n].shape for n in names)
    y_shape = tuple(np.broadcast_shapes(a[:-2], b[:-2])) + (a[-2], b[-1])
    y = node.output[0]
    out = imp.define(y, plain(len(imp.logical_shape(y))))
    if tuple(imp.g.tensors[out].shape) == y_shape:
        imp.g.add_node("MatMul", names, [out], name=_name(node))
        return
    full = imp.g.unique_name(f"{y}_full")
    imp.g.add_tensor(full, y_shape, imp.g.tensors[out].dtype)
    imp.g.add_node("MatMul", names, [full], name=_name(node))
    imp.g.add_node("Reshape", [full], [out], name=out)


def _einsum_terms(imp, node) -> tuple[list, str]:
    """Einsum's operand subscripts and output subscript, spaces dropped, each '...' spelled out as letters of its
    own (numbered from the right, so broadcast ellipses line up) and an implicit output made explicit (the
    letters used once, in alphabetical order, after the ellipsis)."""
    eq = _attrs(node).get("equation", "").replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len([n for n in node.input if n]) or not all(c.isalpha() or c in ",.->" for c in eq):
        raise TinycError(f"Einsum '{_name(node)}': equation '{eq}' does not match its {len(node.input)} operand(s)")
    spelled, ell = [], 0
    for t, n in zip(terms, node.input):
        if "..." in t:
            k = len(imp.logical_shape(n)) - len(t.replace("...", ""))
            ell = max(ell, k)
            t = t.replace("...", "".join(chr(0x3b1 + i) for i in reversed(range(k))))     # α, β, ... from the right
        spelled.append(t)
    dots = "".join(chr(0x3b1 + i) for i in reversed(range(ell)))
    if arrow:
        out = out.replace("...", dots)
    else:
        once = [c for c in sorted(set("".join(terms))) if c.isalpha() and "".join(terms).count(c) == 1]
        out = dots + "".join(once)
    return spelled, out


def _einsum_operand(imp, name: str, letters: str, order: str, summed: str, ir_base: str) -> str:
    """The IR tensor of an Einsum operand stored with its axes in `order` + `summed`, the `summed` ones added up
    (a relabel where the stored order already fits, else one copy; constants are arranged at compile time)."""
    full = order + summed
    if name not in imp.values:
        arr = np.asarray(imp.consts[name], np.float32).transpose([letters.index(c) for c in full])
        if summed:
            arr = arr.sum(axis=tuple(range(len(order), len(full))), dtype=np.float32)
        return imp.g.add_const(imp.g.unique_name(ir_base), arr)
    src = imp.get(name, Layout(tuple(full.index(c) for c in letters)))
    if not summed:
        return src
    out = imp.g.unique_name(f"{ir_base}_sum")
    imp.g.add_tensor(out, imp.g.tensors[src].shape[:len(order)])
    imp.g.add_node("Reduce", [src], [out], name=out, kind="sum", axes=tuple(range(len(order), len(full))),
                   keepdims=False)
    return out


def _reshaped(imp, src: str, shape, base: str) -> str:
    shape = tuple(int(d) for d in shape)
    if tuple(imp.g.tensors[src].shape) == shape:
        return src
    out = imp.g.unique_name(base)
    imp.g.add_tensor(out, shape, imp.g.tensors[src].dtype)
    imp.g.add_node("Reshape", [src], [out], name=out)
    return out


def _stored_order(imp, name: str, letters: str) -> str | None:
    """The letters of a computed value in the order its axes are stored (None for a constant or a flat value)."""
    if name not in imp.values or imp.layout(name).flat is not None:
        return None
    stored = [""] * len(letters)
    for i, p in enumerate(imp.layout(name).perm):
        stored[p] = letters[i]
    return "".join(stored)


def einsum(imp, node):
    """Einsum of one operand (a permutation, with sums over the letters the output drops) or two (a batched
    matrix product: letters of both operands and the output are batch axes, of both operands only contracted,
    of one operand and the output its rows or columns; letters of one operand only are summed first), as
    Transpose / Reduce / Reshape around one MatMul. Repeated letters in an operand (diagonals) and more than two
    operands are refused."""
    what = f"Einsum '{_name(node)}'"
    terms, out = _einsum_terms(imp, node)
    eq = _attrs(node).get("equation", "")
    names = [n for n in node.input if n]
    for n in names:
        if imp.dtypes.get(n, "float32") != "float32":
            raise TinycError(f"{what} ('{eq}') of {imp.dtypes[n]} tensors; tinyc computes Einsum in float32 only")
    if len(names) > 2 or any(len(set(t)) != len(t) for t in terms + [out]) or not set(out) <= set("".join(terms)):
        raise TinycError(f"{what}: equation '{eq}' is not supported; tinyc takes one or two operands, each letter "
                         "at most once per operand (no diagonals), e.g. 'bij,bjk->bik', 'bhqd,bhkd->bhqk', 'ij->ji'")
    sizes: dict = {}
    for t, n in zip(terms, names):
        shape = imp.logical_shape(n)
        if len(shape) != len(t):
            raise TinycError(f"{what}: subscripts '{t}' do not fit operand '{n}' of shape {list(shape)}")
        for c, d in zip(t, shape):
            if sizes.get(c, d) != d and 1 not in (sizes[c], d):
                raise TinycError(f"{what}: letter '{c}' has sizes {sizes[c]} and {d}")
            sizes[c] = max(sizes.get(c, d), d)
    y = node.output[0]
    if len(names) == 1:
        (t,), src = terms, names[0]
        summed = "".join(c for c in t if c not in out)
        if summed or src not in imp.values:
            imp.values[y] = (_einsum_operand(imp, src, t, out, summed, f"{y}_in"), plain(len(out)))
            return
        lay = imp.layout(src) if imp.layout(src).flat is None else plain(len(t))      # a permutation: a relabel
        imp.values[y] = (imp.get(src, lay), Layout(tuple(lay.perm[t.index(c)] for c in out)))
        return
    (ta, tb), (a, b) = terms, names
    batch = "".join(c for c in out if c in ta and c in tb)
    rows = "".join(c for c in out if c in ta and c not in tb)
    cols = "".join(c for c in out if c in tb and c not in ta)
    stored_a = _stored_order(imp, a, ta) or ta
    inner = "".join(c for c in stored_a if c in tb and c not in out)
    for t, other in ((ta, tb), (tb, ta)):
        for c in t:
            if c in other and c not in out and sizes[c] != imp.logical_shape(names[terms.index(t)])[t.index(c)]:
                raise TinycError(f"{what}: contracted letter '{c}' is broadcast; tinyc contracts equal sizes only")
    sum_a = "".join(c for c in ta if c not in out and c not in tb)
    sum_b = "".join(c for c in tb if c not in out and c not in ta)
    # a stored [batch, inner, rows] operand is read transposed instead of copied; b is read as [batch, cols, inner]
    # (rows of the dot products, as Dense weights) unless it is stored [batch, inner, cols] already
    trans_a = _stored_order(imp, a, ta) == batch + inner + rows + sum_a and bool(rows) and bool(inner)
    trans_b = _stored_order(imp, b, tb) != batch + inner + cols + sum_b and bool(cols) and bool(inner)
    ia = _einsum_operand(imp, a, ta, batch + (inner + rows if trans_a else rows + inner), sum_a, f"{y}_a")
    ib = _einsum_operand(imp, b, tb, batch + (cols + inner if trans_b else inner + cols), sum_b, f"{y}_b")
    m, k, n = (int(np.prod([sizes[c] for c in g])) for g in (rows, inner, cols))
    shape_a = [imp.g.tensors[ia].shape[i] for i in range(len(batch))]
    shape_b = [imp.g.tensors[ib].shape[i] for i in range(len(batch))]
    ia = _reshaped(imp, ia, shape_a + ([k, m] if trans_a else [m, k]), f"{y}_a2")
    ib = _reshaped(imp, ib, shape_b + ([n, k] if trans_b else [k, n]), f"{y}_b2")
    prod = imp.g.unique_name(f"{y}_product")
    imp.g.add_tensor(prod, [sizes[c] for c in batch] + [m, n])
    imp.g.add_node("MatMul", [ia, ib], [prod], name=_name(node), transpose_a=trans_a, transpose_b=trans_b)
    order = batch + rows + cols
    res = _reshaped(imp, prod, [sizes[c] for c in order], f"{y}_full")
    imp.values[y] = (res, Layout(tuple(order.index(c) for c in out)))


def matmul(imp, node):
    if node.input[1] not in imp.consts or np.ndim(imp.consts[node.input[1]]) != 2 \
            or len(imp.logical_shape(node.input[0])) < 2:
        _matmul_computed(imp, node)
        return
    src, to_physical = _dense_input(imp, node.input[0])
    w = _weight_input(imp, node.input[1], f"{node.output[0]}_w", lambda v: to_physical(np.ascontiguousarray(v.T)))
    out = imp.define(node.output[0], plain(len(imp.logical_shape(node.output[0]))))
    imp.g.add_node("Dense", [src, w], [out], name=_name(node), activation=None)


def _final_readers(imp, name: str) -> list | None:
    """(node, the input name it reads) for every reader of `name`, looking through QuantizeLinear /
    DequantizeLinear (a QDQ model puts a pair between a Flatten and its Gemm); None if a graph output is met."""
    if name in imp.output_names:
        return None
    readers = []
    for c in imp.consumers.get(name, []):
        if c.op_type in ("QuantizeLinear", "DequantizeLinear") and c.input[0] == name:
            further = _final_readers(imp, c.output[0])
            if further is None:
                return None
            readers += further
        else:
            readers.append((c, name))
    return readers


def _carry_qtype(imp, src: str, dst: str) -> None:
    if src in imp.qtypes:
        imp.qtypes[dst] = imp.qtypes[src]


def _reshape(imp, node):
    """Reshape / Flatten / Squeeze / Unsqueeze: a row-major reinterpretation (free alias later)."""
    x, y = node.input[0], node.output[0]
    lay, shape_in = imp.layout(x), imp.logical_shape(x)
    readers = _final_readers(imp, y)
    _carry_qtype(imp, x, y)   # before `define`, which looks at it
    if (lay.flat is None and not lay.is_plain and len(imp.logical_shape(y)) == 2 and imp.logical_shape(y)[0] == 1
            and readers and all(c.op_type in ("Gemm", "MatMul") and c.input[0] == read for c, read in readers)):
        # Flatten of an NCHW value feeding Gemm: flatten in NHWC order, permute the weights instead (one row
        # only: the weights' single permutation cannot follow several rows).
        phys = imp.g.tensors[imp.get(x)].shape
        flat = np.arange(int(np.prod(phys))).reshape(phys).transpose(lay.perm).ravel()
        out = imp.define(y, Layout((0, 1), tuple(int(i) for i in flat), x), like=imp.get(x))
        imp.g.add_node("Reshape", [imp.get(x)], [out], name=_name(node))
        return
    keeps_order = lay.flat is None and list(p for p, d in zip(lay.perm, shape_in) if d != 1) == sorted(
        p for p, d in zip(lay.perm, shape_in) if d != 1)
    src = imp.get(x) if keeps_order else imp.get(x, plain(len(shape_in)))
    out = imp.define(y, plain(len(imp.logical_shape(y))), like=src)
    imp.g.add_node("Reshape", [src], [out], name=_name(node))


def _rank_padded(imp, name: str, rank: int) -> str:
    """A computed value of lower rank as a rank-`rank` value with leading 1s (NumPy broadcasting aligns trailing
    axes): a free Reshape of its row-major data, under a name of its own that the ONNX model does not have."""
    key = ("rank", name, rank)   # one Reshape per value and rank, however many ops read it
    if key in imp._materialized:
        return imp._materialized[key]
    shape = imp.logical_shape(name)
    src = imp.get(name, plain(len(shape)))
    padded, k = f"{name}_rank{rank}", 1
    while padded in imp.g.tensors or padded in imp.shapes or padded in imp.values or padded in imp.consts:
        padded, k = f"{name}_rank{rank}_{k}", k + 1
    imp.shapes[padded] = (1,) * (rank - len(shape)) + tuple(shape)
    imp.define(padded, plain(rank), source=False, like=src)
    imp.g.add_node("Reshape", [src], [imp.values[padded][0]], name=padded)
    imp._materialized[key] = padded
    return padded


def _same_layout(imp, names, rank):
    """Physical IR operands for elementwise ops: runtime values share one layout, constants follow it."""
    names = [_rank_padded(imp, n, rank) if n in imp.values and len(imp.logical_shape(n)) < rank else n
             for n in names]
    lay = next((imp.layout(n) for n in names if n in imp.values and len(imp.logical_shape(n)) == rank), None)
    if lay is None or lay.flat is not None or any(
            n in imp.values and len(imp.logical_shape(n)) != rank for n in names):
        lay = plain(rank)
    ins = []
    for n in names:
        if n in imp.values:
            ins.append(imp.get(n, lay))
        else:   # a quantized constant operand keeps its integers and zero point
            ins.append(_weight_input(imp, n, n, lambda a: imp.const_in_layout(a, rank, lay, a.dtype), symmetric=False))
    return ins, lay


def binary(op):
    def rule(imp, node):
        _binary_node(imp, op, node.input[0], node.input[1], node.output[0], _name(node))
    return rule


def _fresh(imp, base: str) -> str:
    """An ONNX-level name no value, shape or constant of the model has (for values a rule makes itself)."""
    name, k = base, 1
    while name in imp.g.tensors or name in imp.shapes or name in imp.values or name in imp.consts:
        name, k = f"{base}_{k}", k + 1
    return name


def _binary_node(imp, op, a: str, b: str, y: str, name: str, source: bool = True) -> None:
    """IR `op` of ONNX values (or constants) `a` and `b` into ONNX value `y`, whose shape is known (`source`:
    the ONNX model has the value `y`, to compare with)."""
    rank = len(imp.logical_shape(y))
    ins, lay = _same_layout(imp, [a, b], rank)
    out = imp.define(y, lay, source=source)
    imp.g.add_node(op, ins, [out], name=name, activation=None)


def variadic(op, mean=False):
    """Sum / Max / Min / Mean of any number of inputs, with multidirectional broadcasting: a chain of binary
    IR ops (Mean: the Sum, then a division by the count)."""
    def rule(imp, node):
        names, y = [n for n in node.input if n], node.output[0]
        if len(names) == 1:   # (all-constant nodes are folded before the rules run)
            identity(imp, node)
            return
        acc = names[0]
        for i, other in enumerate(names[1:]):
            last = i == len(names) - 2 and not mean
            target = y if last else _fresh(imp, f"{y}_{op.lower()}{i}")
            if not last:
                imp.shapes[target] = tuple(np.broadcast_shapes(imp.logical_shape(acc), imp.logical_shape(other)))
            _binary_node(imp, op, acc, other, target, _name(node) if last else target, source=last)
            acc = target
        if mean:
            count = _fresh(imp, f"{y}_count")
            imp.consts[count] = np.asarray(len(names), np.float32)
            _binary_node(imp, "Div", acc, count, y, _name(node))
    return rule


def mod(imp, node):
    """Mod: fmod=0 gives the remainder the divisor's sign (Python's %), fmod=1 the dividend's (C's fmod / %)."""
    binary("Mod")(imp, node)
    imp.g.nodes[-1].attrs["fmod"] = int(_attrs(node).get("fmod", 0))


def prelu(imp, node):
    """PRelu: x < 0 ? slope * x : x, the slope broadcast to x; one constant slope is a LeakyRelu."""
    slope = imp.opt_const(node, 1)
    if slope is not None and np.size(slope) == 1 and node.input[1] not in imp.qconsts:
        _unary(imp, node, "Activation", fn="leaky_relu", alpha=float(np.asarray(slope).reshape(-1)[0]))
        return
    binary("PRelu")(imp, node)


def gelu(imp, node):
    approximate = _attrs(node).get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise TinycError(f"Gelu '{_name(node)}' has approximate='{approximate}'; ONNX defines 'none' and 'tanh'")
    _unary(imp, node, "Activation", fn="gelu" if approximate == "none" else "gelu_tanh")


def celu(imp, node):
    alpha = float(_attrs(node).get("alpha", 1.0))
    if alpha == 0:
        raise TinycError(f"Celu '{_name(node)}' has alpha=0 (it divides by alpha); the model is invalid")
    _unary(imp, node, "Activation", fn="celu", alpha=alpha)


def concat(imp, node):
    """Concat; zero-size operands add nothing and are left out (an empty input of the model, say)."""
    rank = len(imp.logical_shape(node.output[0]))
    names = [n for n in node.input if n and 0 not in imp.logical_shape(n)]
    ins, lay = _same_layout(imp, names, rank)
    out = imp.define(node.output[0], lay)
    if len(ins) == 1:
        imp.g.add_node("Identity", ins, [out], name=_name(node))
        return
    axis = _attrs(node)["axis"] % rank
    imp.g.add_node("Concat", ins, [out], name=_name(node), axis=lay.perm[axis])


def _unary(imp, node, op, **attrs):
    lay = imp.layout(node.input[0])
    src = imp.get(node.input[0])
    out = imp.define(node.output[0], lay)
    imp.g.add_node(op, [src], [out], name=_name(node), **attrs)


def activation(fn, **defaults):
    def rule(imp, node):
        a = _attrs(node)
        params = {k: float(a.get(k, v)) for k, v in defaults.items()}
        _unary(imp, node, "Activation", fn=fn, **params)
    return rule


def _integer_clip(imp, node, dtype: str) -> None:
    """Clip of a plain integer tensor: an Activation clamp in its type; an absent bound is the type's limit."""
    info = np.iinfo(dtype)
    bounds = []
    for i, default in ((1, int(info.min)), (2, int(info.max))):
        value = imp.opt_const(node, i)
        if value is not None and np.size(value) != 1:
            raise TinycError(f"Clip '{_name(node)}' has a bound of shape {list(np.shape(value))}; ONNX takes scalars")
        bounds.append(default if value is None else int(np.asarray(value).reshape(-1)[0]))
    lo, hi = bounds
    if not (info.min <= lo <= info.max and info.min <= hi <= info.max):
        raise TinycError(f"Clip '{_name(node)}' on {dtype} has bounds {lo}, {hi} outside {dtype}'s range; the "
                         "model is invalid (ONNX gives bounds the input's type)")
    _unary(imp, node, "Activation", fn="clip", lo=lo, hi=hi)


def clip(imp, node):
    for i in (1, 2):
        if len(node.input) > i and node.input[i] and node.input[i] not in imp.consts:
            raise TinycError(f"Clip '{_name(node)}' has computed bounds; tinyc needs constant min/max")
    src = imp.g.tensors[imp.get(node.input[0])]
    if src.quant is None and src.dtype not in ("float32", "bool"):
        _integer_clip(imp, node, src.dtype)
        return
    a = _attrs(node)
    lo, hi = a.get("min", -FLOAT_MAX), a.get("max", FLOAT_MAX)
    if imp.opt_const(node, 1) is not None:
        lo = float(imp.opt_const(node, 1))
    if imp.opt_const(node, 2) is not None:
        hi = float(imp.opt_const(node, 2))
    lo = min(lo, hi)   # ONNX: with min > max every output is max; the clamp below gives lo first
    act = relu6() if (lo, hi) == (0.0, 6.0) else {"fn": "clip", "lo": max(lo, -FLOAT_MAX), "hi": min(hi, FLOAT_MAX)}
    if lo == 0.0 and hi >= FLOAT_MAX:
        act = {"fn": "relu"}
    _unary(imp, node, "Activation", **act)


def softmax(op):
    """Softmax / LogSoftmax / Hardmax: one axis from opset 13; before, the input flattened to 2-D at `axis`."""
    def rule(imp, node):
        x, y = node.input[0], node.output[0]
        shape = imp.logical_shape(x)
        rank = len(shape)
        axis = _attrs(node).get("axis", -1 if imp.opset >= 13 else 1)
        if not -rank <= axis < rank:
            raise TinycError(f"{node.op_type} '{_name(node)}': axis {axis} is out of range for rank {rank}")
        axis %= rank
        if imp.opset < 13 and axis < rank - 1 and int(np.prod(shape[axis + 1:])) > 1:
            # Before opset 13 the op works on the input flattened to 2-D at `axis`.
            src = imp.get(x, plain(rank))
            flat = imp.g.unique_name(f"{y}_2d")
            imp.g.add_tensor(flat, (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))
            imp.g.add_node("Reshape", [src], [flat], name=flat)
            sm = imp.g.unique_name(f"{y}_sm")
            imp.g.add_tensor(sm, imp.g.tensors[flat].shape)
            imp.g.add_node(op, [flat], [sm], name=_name(node), axis=1)
            out = imp.define(y, plain(rank))
            imp.g.add_node("Reshape", [sm], [out], name=out)
            return
        lay = imp.layout(x) if imp.layout(x).flat is None else plain(rank)
        src = imp.get(x, lay)
        out = imp.define(y, lay)
        imp.g.add_node(op, [src], [out], name=_name(node), axis=lay.perm[axis])
    return rule


def transpose(imp, node):
    x = node.input[0]
    rank = len(imp.logical_shape(x))
    q = list(_attrs(node).get("perm", list(reversed(range(rank)))))
    lay = imp.layout(x) if imp.layout(x).flat is None else plain(rank)
    # A relabel of the same stored data: no copy.
    imp.values[node.output[0]] = (imp.get(x, lay), Layout(tuple(lay.perm[i] for i in q)))
    _carry_qtype(imp, x, node.output[0])


def pad(imp, node):
    """Pad: constant (IR Pad) or reflect / edge / wrap (IR PadBorder) on all axes or the `axes` input's; negative
    pads crop (an IR Slice after the padding)."""
    a = _attrs(node)
    what = f"Pad '{_name(node)}'"
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise TinycError(f"{what} uses mode '{mode}'; tinyc supports constant, reflect, edge and wrap")
    pads = a.get("pads")
    if pads is None:
        pads = np.asarray(imp.const(node.input[1], f"{what} pads")).reshape(-1).tolist()
    if len(node.input) > 2 and node.input[2] and node.input[2] not in imp.consts:
        raise TinycError(f"Pad '{_name(node)}' takes its constant_value from a computed tensor; tinyc needs a "
                         "constant pad value (make it an initializer, e.g. fold it with onnxsim)")
    given = imp.opt_const(node, 2)
    if given is not None and np.size(given) != 1:
        raise TinycError(f"Pad '{_name(node)}': constant_value holds {np.size(given)} values; it must be one value")
    value = float(np.reshape(given, -1)[0]) if given is not None else float(a.get("value", 0.0))
    x = node.input[0]
    shape = imp.logical_shape(x)
    rank = len(shape)
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        axes = [int(v) for v in np.asarray(imp.const(node.input[3], f"{what} axes")).reshape(-1)]
        if any(not -rank <= v < rank for v in axes) or len({v % rank for v in axes}) != len(axes):
            raise TinycError(f"{what}: axes {axes} are out of range or repeated for rank {rank}")
        axes = [v % rank for v in axes]
    if len(pads) != 2 * len(axes):
        raise TinycError(f"{what}: {len(pads)} pads for {len(axes)} axes; the model is invalid")
    begin, end = [0] * rank, [0] * rank
    for k, ax in enumerate(axes):
        begin[ax], end[ax] = int(pads[k]), int(pads[k + len(axes)])
    if any(d + b + e < 0 for d, b, e in zip(shape, begin, end)):
        raise TinycError(f"{what} crops {shape} by more than its size; the model is invalid")
    if _zero_size_result(imp, node.output[0], [d + b + e for d, b, e in zip(shape, begin, end)], x):
        return
    lay = _stored_layout(imp, x)
    src = imp.get(x, lay)
    grow = _physical(lay, [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)])
    crop = _physical(lay, [max(-b, 0) for b in begin])
    cropped = any(min(b, e) < 0 for b, e in zip(begin, end))
    if not any(b or e for b, e in grow) and not cropped:
        imp.g.add_node("Identity", [src], [imp.define(node.output[0], lay, like=src)], name=_name(node))
        return
    if any(b or e for b, e in grow):
        phys = tuple(d + b + e for d, (b, e) in zip(imp.g.tensors[src].shape, grow))
        if cropped:
            padded = imp.g.unique_name(f"{node.output[0]}_padded")
            imp.g.add_tensor(padded, phys)
        else:
            padded = imp.define(node.output[0], lay)
        if mode == "constant":
            imp.g.add_node("Pad", [src], [padded], name=_name(node), pads=tuple(grow), value=value)
        else:
            imp.g.add_node("PadBorder", [src], [padded], name=_name(node), pads=tuple(grow), mode=mode)
        src = padded
    if cropped:
        out = imp.define(node.output[0], lay, like=src)
        sizes = imp.g.tensors[out].shape
        imp.g.add_node("Slice", [src], [out], name=imp.g.unique_name(f"{node.output[0]}_crop"),
                       starts=tuple(crop), steps=(1,) * rank, sizes=tuple(sizes))


def batchnorm(imp, node):
    a = _attrs(node)
    if a.get("training_mode", 0):
        raise TinycError(f"BatchNormalization '{_name(node)}' is in training mode; export the model in eval mode")
    x = node.input[0]
    rank = len(imp.logical_shape(x))
    want = plain(rank) if rank <= 2 else channels_last(rank)
    lay = imp.layout(x)
    if lay.flat is None and lay.perm[1 if rank > 1 else 0] == rank - 1:
        want = lay
    src = imp.get(x, want)
    params = [imp.g.add_const(f"{node.output[0]}_{k}",
                              np.asarray(imp.const(n, f"BatchNormalization '{_name(node)}' {k}"), np.float32))
              for k, n in zip(("gamma", "beta", "mean", "var"), node.input[1:5])]
    out = imp.define(node.output[0], want)
    imp.g.add_node("BatchNorm", [src] + params, [out], name=_name(node), epsilon=float(a.get("epsilon", 1e-5)))



# -- normalizations (tinyc/ops/normalize.py) ------------------------------------------------------------------
def _norm_param(imp, node, i: int, what: str, logical_shape, lay: Layout) -> str:
    """Constant input `i` of a normalization, numpy-broadcast to `logical_shape` at its rank, in layout `lay`."""
    value = np.asarray(imp.const(node.input[i], f"{node.op_type} '{_name(node)}' {what}"), np.float32)
    rank = len(logical_shape)
    if value.ndim > rank:
        raise TinycError(f"{node.op_type} '{_name(node)}': {what} of shape {list(value.shape)} has more axes than "
                         f"the input {list(logical_shape)}; the model is invalid")
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    try:
        np.broadcast_shapes(full.shape, tuple(logical_shape))
    except ValueError:
        raise TinycError(f"{node.op_type} '{_name(node)}': {what} of shape {list(value.shape)} does not broadcast "
                         f"to the input {list(logical_shape)}; the model is invalid") from None
    return imp.g.add_const(imp.g.unique_name(f"{node.output[0]}_{what}"), imp.const_in_layout(full, rank, lay))


def _stash_type(node) -> None:
    stash = _attrs(node).get("stash_type", 1)
    if stash != 1:
        raise TinycError(f"{node.op_type} '{_name(node)}' has stash_type {stash}; tinyc computes the statistics in "
                         "float32 (stash_type 1)")


def _inv_std_dev(imp, node, src: str, mean: str, axes, epsilon: float, y: str, lay: Layout) -> None:
    """LayerNormalization's InvStdDev output: 1 / sqrt(mean((x - mean)^2) + epsilon), with the IR's elementwise ops."""
    x_shape = imp.g.tensors[src].shape
    stat_shape = imp.g.tensors[mean].shape
    d, dd, var, var_eps, std = (imp.g.unique_name(f"{y}_{k}") for k in ("d", "dd", "var", "var_eps", "std"))
    for t, shape in ((d, x_shape), (dd, x_shape), (var, stat_shape), (var_eps, stat_shape), (std, stat_shape)):
        imp.g.add_tensor(t, shape)
    eps = imp.g.add_const(imp.g.unique_name(f"{y}_epsilon"), np.full((1,) * len(x_shape), epsilon, np.float32))
    imp.g.add_node("Sub", [src, mean], [d], name=d, activation=None)
    imp.g.add_node("Mul", [d, d], [dd], name=dd, activation=None)
    imp.g.add_node("Mean", [dd], [var], name=var, axes=axes, keepdims=True)
    imp.g.add_node("Add", [var, eps], [var_eps], name=var_eps, activation=None)
    imp.g.add_node("Activation", [var_eps], [std], name=std, fn="sqrt")
    imp.g.add_node("Activation", [std], [imp.define(y, lay)], name=_name(node) + "_inv_std_dev", fn="reciprocal")


def layer_norm(center: bool):
    """LayerNormalization (center) and RMSNormalization: over the axes from `axis` on; LayerNormalization's optional
    Mean and InvStdDev outputs from the IR's Mean and elementwise ops."""
    def rule(imp, node):
        a = _attrs(node)
        _stash_type(node)
        x = node.input[0]
        shape = imp.logical_shape(x)
        rank = len(shape)
        axis = a.get("axis", -1)
        if not -rank <= axis < rank:
            raise TinycError(f"{node.op_type} '{_name(node)}': axis {axis} is out of range for rank {rank}")
        axis %= rank
        epsilon = float(a.get("epsilon", 1e-5))
        lay = _stored_layout(imp, x)
        src = imp.get(x, lay)
        axes = tuple(sorted(lay.perm[i] for i in range(axis, rank)))
        params = [_norm_param(imp, node, 1, "scale", shape, lay)]
        if center and len(node.input) > 2 and node.input[2]:
            params.append(_norm_param(imp, node, 2, "bias", shape, lay))
        out = imp.define(node.output[0], lay)
        imp.g.add_node("Normalize", [src] + params, [out], name=_name(node), axes=axes, epsilon=epsilon,
                       center=center)
        extra = [o for o in node.output[1:3] if o]
        if not extra:
            return
        mean = imp.define(node.output[1], lay) if len(node.output) > 1 and node.output[1] else None
        if mean is None:   # only InvStdDev is wanted: the mean is an IR tensor of its own
            mean = imp.g.unique_name(f"{node.output[0]}_mean")
            imp.g.add_tensor(mean, tuple(1 if i in axes else d for i, d in enumerate(imp.g.tensors[src].shape)))
        imp.g.add_node("Mean", [src], [mean], name=_name(node) + "_mean", axes=axes, keepdims=True)
        if len(node.output) > 2 and node.output[2]:
            _inv_std_dev(imp, node, src, mean, axes, epsilon, node.output[2], lay)
    return rule


def instance_norm(imp, node):
    """InstanceNormalization: over the spatial axes, a scale and bias per channel."""
    x = node.input[0]
    shape = imp.logical_shape(x)
    rank = len(shape)
    if rank < 2:
        raise TinycError(f"InstanceNormalization '{_name(node)}' on a rank-{rank} input; it needs [N, C, ...]")
    lay = _stored_layout(imp, x)
    src = imp.get(x, lay)
    per_channel = (1, shape[1]) + (1,) * (rank - 2)
    params = []
    for i, what in ((1, "scale"), (2, "bias")):
        value = np.asarray(imp.const(node.input[i], f"InstanceNormalization '{_name(node)}' {what}"), np.float32)
        if value.size != shape[1]:
            raise TinycError(f"InstanceNormalization '{_name(node)}': {what} has {value.size} values for "
                             f"{shape[1]} channels; the model is invalid")
        params.append(imp.g.add_const(imp.g.unique_name(f"{node.output[0]}_{what}"),
                                      imp.const_in_layout(value.reshape(per_channel), rank, lay)))
    out = imp.define(node.output[0], lay)
    imp.g.add_node("Normalize", [src] + params, [out], name=_name(node),
                   axes=tuple(sorted(lay.perm[i] for i in range(2, rank))),
                   epsilon=float(_attrs(node).get("epsilon", 1e-5)), center=True)


def group_norm(imp, node):
    """GroupNormalization: over the spatial axes and the channels of each group; scale and bias per channel from
    opset 21, per group in opset 18. The input is reshaped (for free) so that a group is an axis: [N, S, G, C/G]
    when it is stored channels-last, [N, G, C/G, S] otherwise."""
    a = _attrs(node)
    _stash_type(node)
    x = node.input[0]
    shape = imp.logical_shape(x)
    rank = len(shape)
    groups = int(a["num_groups"])
    if rank < 2 or groups < 1 or shape[1] % groups:
        raise TinycError(f"GroupNormalization '{_name(node)}': {shape[1] if rank > 1 else '?'} channels do not "
                         f"split into {groups} groups; the model is invalid")
    c, spatial = shape[1], int(np.prod(shape[2:]))
    per = c if imp.opset >= 21 else groups
    params = []
    for i, what in ((1, "scale"), (2, "bias")):
        value = np.asarray(imp.const(node.input[i], f"GroupNormalization '{_name(node)}' {what}"), np.float32)
        if value.size != per:
            raise TinycError(f"GroupNormalization '{_name(node)}': {what} has {value.size} values; opset "
                             f"{imp.opset} wants one per {'channel' if per == c else 'group'} ({per})")
        params.append(value.reshape(groups, per // groups))
    channels_last_stored = rank > 2 and imp.layout(x) == channels_last(rank)
    lay = channels_last(rank) if channels_last_stored else plain(rank)
    src = imp.get(x, lay)
    if channels_last_stored:
        grouped, axes, pshape = (shape[0], spatial, groups, c // groups), (1, 3), (1, 1, groups, -1)
    else:
        grouped, axes, pshape = (shape[0], groups, c // groups, spatial), (2, 3), (1, groups, -1, 1)
    view = imp.g.unique_name(f"{node.output[0]}_groups")
    imp.g.add_tensor(view, grouped)
    imp.g.add_node("Reshape", [src], [view], name=view)
    consts = [imp.g.add_const(imp.g.unique_name(f"{node.output[0]}_{what}"), v.reshape(pshape))
              for what, v in zip(("scale", "bias"), params)]
    normed = imp.g.unique_name(f"{node.output[0]}_normalized")
    imp.g.add_tensor(normed, grouped)
    imp.g.add_node("Normalize", [view] + consts, [normed], name=_name(node), axes=axes,
                   epsilon=float(a.get("epsilon", 1e-5)), center=True)
    imp.g.add_node("Reshape", [normed], [imp.define(node.output[0], lay)], name=imp.g.unique_name(f"{normed}_back"))


def lp_norm(imp, node):
    """LpNormalization: x / ||x||_p along one axis (p = 1 or 2); a zero norm gives 0."""
    a = _attrs(node)
    p = int(a.get("p", 2))
    if p not in (1, 2):
        raise TinycError(f"LpNormalization '{_name(node)}' has p={p}; ONNX defines p = 1 and 2")
    x = node.input[0]
    rank = len(imp.logical_shape(x))
    axis = a.get("axis", -1)
    if not -rank <= axis < rank:
        raise TinycError(f"LpNormalization '{_name(node)}': axis {axis} is out of range for rank {rank}")
    lay = _stored_layout(imp, x)
    src = imp.get(x, lay)
    out = imp.define(node.output[0], lay)
    imp.g.add_node("LpNormalize", [src], [out], name=_name(node), axis=lay.perm[axis % rank], p=p, epsilon=0.0)

def identity(imp, node):
    """Identity, and Dropout at inference: the values unchanged, and Dropout's mask all true (a constant)."""
    if node.op_type == "Dropout":
        training = imp.opt_const(node, 2)
        if len(node.input) > 2 and node.input[2] and (training is None or bool(np.any(training))):
            raise TinycError(f"Dropout '{_name(node)}' runs in training mode (random); tinyc compiles inference: "
                             "export the model in eval mode")
        if len(node.output) > 1 and node.output[1]:
            imp.consts[node.output[1]] = np.ones(imp.logical_shape(node.input[0]), bool)
    src = imp.get(node.input[0])
    _carry_qtype(imp, node.input[0], node.output[0])
    out = imp.define(node.output[0], imp.layout(node.input[0]), like=src)
    imp.g.add_node("Identity", [src], [out], name=_name(node))


# -- data movement with constant parameters (issue 17 section 3) ----------------------------------------------
def _stored_layout(imp, x) -> Layout:
    """The layout `x` is stored in, for ops that keep the rank and work on any axis (plain if flattened)."""
    lay = imp.layout(x)
    return lay if lay.flat is None else plain(len(imp.logical_shape(x)))


def _physical(lay: Layout, per_axis) -> list:
    """Per-logical-axis values in physical axis order."""
    out = [None] * len(per_axis)
    for j, v in enumerate(per_axis):
        out[lay.perm[j]] = v
    return out


def _dropped_layout(lay: Layout, axis: int) -> Layout:
    """The layout left when logical axis `axis` of a value stored in `lay` is removed (physical order kept)."""
    rest = [lay.perm[r] for r in range(len(lay.perm)) if r != axis]
    return Layout(tuple(sorted(rest).index(p) for p in rest))


def _set_shape(imp, name: str, shape) -> None:
    """Our own computation of an output's logical shape wins over onnx's inference (they agree on valid models)."""
    shape = tuple(int(d) for d in shape)
    if imp.shapes.get(name) != shape:
        imp.forget_shapes_after(name)
        imp.shapes[name] = shape


def _zero_size_result(imp, y: str, shape, x: str) -> bool:
    """True, after making ONNX value `y` the constant empty array, when `shape` is zero-size: a result without
    values needs no IR node (also onnx_import._zero_size_node). `x`: the input whose element type it has unless
    shape inference gave it one."""
    if 0 not in tuple(shape):
        return False
    dtype = imp.dtypes.get(y) or imp.dtypes.get(x) or (str(imp.consts[x].dtype) if x in imp.consts else "float32")
    imp.consts[y] = np.zeros(tuple(int(d) for d in shape), dtype)
    return True


def _slice_into(imp, node, x, y, starts, steps, sizes, lay, op_name=None) -> None:
    """ONNX value `y` = the logical window (starts, steps, sizes per logical axis) of `x`, kept in layout `lay`:
    an IR Slice, or an Identity when the window is all of `x`."""
    shape = imp.logical_shape(x)
    if _zero_size_result(imp, y, sizes, x):
        return
    _set_shape(imp, y, sizes)
    src = imp.get(x, lay)
    _carry_qtype(imp, x, y)
    out = imp.define(y, lay, like=src)
    if tuple(sizes) == tuple(shape) and all(s == 1 for s in steps):
        imp.g.add_node("Identity", [src], [out], name=op_name or _name(node))
        return
    imp.g.add_node("Slice", [src], [out], name=op_name or _name(node), starts=tuple(_physical(lay, starts)),
                   steps=tuple(_physical(lay, steps)), sizes=tuple(_physical(lay, sizes)))


def slice_(imp, node):
    """Slice: starts / ends / axes / steps as constant inputs (opset 10+) or attributes (before), NumPy clamping."""
    from ..ops.slice import resolve_slices
    x = node.input[0]
    what = f"Slice '{_name(node)}'"
    shape = imp.logical_shape(x)
    rank = len(shape)
    a = _attrs(node)
    if "starts" in a:
        starts, ends = list(a["starts"]), list(a["ends"])
        axes, steps = list(a.get("axes", range(len(starts)))), [1] * len(starts)
    else:
        starts = np.asarray(imp.const(node.input[1], f"{what} starts")).reshape(-1).tolist()
        ends = np.asarray(imp.const(node.input[2], f"{what} ends")).reshape(-1).tolist()
        ax = imp.opt_const(node, 3)
        st = imp.opt_const(node, 4)
        for i in (3, 4):
            if len(node.input) > i and node.input[i] and imp.opt_const(node, i) is None:
                imp.const(node.input[i], f"{what} {('axes', 'steps')[i - 3]}")   # raises: computed
        axes = np.asarray(ax).reshape(-1).tolist() if ax is not None else list(range(len(starts)))
        steps = np.asarray(st).reshape(-1).tolist() if st is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise TinycError(f"{what}: starts, ends, axes and steps differ in length; the model is invalid")
    if any(not -rank <= int(v) < rank for v in axes) or len({int(v) % rank for v in axes}) != len(axes):
        raise TinycError(f"{what}: axes {axes} are out of range or repeated for rank {rank}")
    if any(int(s) == 0 for s in steps):
        raise TinycError(f"{what} has a step of 0; the model is invalid")
    b, e, s = [0] * rank, list(shape), [1] * rank
    for ax, b0, e0, s0 in zip(axes, starts, ends, steps):
        ax = int(ax) % rank
        # int64 extremes (INT64_MAX for "to the end") are fine for Python's slice arithmetic
        b[ax], e[ax], s[ax] = int(b0), int(e0), int(s0)
    lo, st, sizes = resolve_slices(shape, b, e, s)
    _slice_into(imp, node, x, node.output[0], lo, st, sizes, _stored_layout(imp, x))


def split(imp, node):
    """Split: one IR Slice per output along `axis`; sizes from the `split` input (opset 13+) or attribute, else
    `num_outputs` (opset 18: ceil-sized parts, the last one smaller), else equal parts."""
    x = node.input[0]
    what = f"Split '{_name(node)}'"
    shape = imp.logical_shape(x)
    rank = len(shape)
    a = _attrs(node)
    axis = int(a.get("axis", 0))
    if not -rank <= axis < rank:
        raise TinycError(f"{what}: axis {axis} is out of range for rank {rank}")
    axis %= rank
    d, n = shape[axis], len(node.output)
    if len(node.input) > 1 and node.input[1]:
        parts = [int(v) for v in np.asarray(imp.const(node.input[1], f"{what} split")).reshape(-1)]
    elif "split" in a:
        parts = [int(v) for v in a["split"]]
    elif "num_outputs" in a:
        k = int(a["num_outputs"])
        chunk = -(-d // k)
        parts = [chunk] * (k - 1) + [d - chunk * (k - 1)]
    else:
        if d % n:
            raise TinycError(f"{what}: {d} values on axis {axis} do not split into {n} equal parts")
        parts = [d // n] * n
    if len(parts) != n or sum(parts) != d or any(p < 0 for p in parts):
        raise TinycError(f"{what}: parts {parts} do not split {d} values into {n} outputs; the model is invalid")
    lay = _stored_layout(imp, x)
    at = 0
    for k, (y, p) in enumerate(zip(node.output, parts)):
        starts, sizes = [0] * rank, list(shape)
        starts[axis], sizes[axis] = at, p
        at += p
        if y:
            _slice_into(imp, node, x, y, starts, [1] * rank, sizes, lay, op_name=f"{_name(node)}:{k}")


def _gather_axis(node, what: str, rank: int) -> int:
    """Gather's `axis` attribute in 0..rank-1 (negative counts from the end)."""
    axis = int(_attrs(node).get("axis", 0))
    if not -rank <= axis < rank:
        raise TinycError(f"{what}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def gather(imp, node):
    """Gather with constant indices: a scalar index is a Slice plus a free Reshape dropping the axis, evenly
    spaced indices a strided Slice, any others an IR Gather (the indices become a compile-time table)."""
    x, ind = node.input[0], node.input[1]
    what = f"Gather '{_name(node)}'"
    if ind not in imp.consts:
        return _gather_runtime(imp, node)
    if x in imp.consts:
        raise TinycError(f"{what} gathers from a constant table with computed indices; not supported yet")
    idx = np.asarray(imp.consts[ind])
    if idx.dtype.kind not in "iu":
        raise TinycError(f"{what}: indices of type {idx.dtype}; the model is invalid")
    shape = imp.logical_shape(x)
    rank, axis = len(shape), _gather_axis(node, what, len(shape))
    d = shape[axis]
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -d or idx.max() >= d):
        raise TinycError(f"{what}: indices {idx.ravel()[:8].tolist()} are outside the {d} values of axis {axis}; "
                         "the model is invalid")
    idx = np.where(idx < 0, idx + d, idx)
    y = node.output[0]
    out_shape = tuple(shape[:axis]) + idx.shape + tuple(shape[axis + 1:])
    if _zero_size_result(imp, y, out_shape, x):
        return
    lay = _stored_layout(imp, x)
    steps = np.diff(idx.reshape(-1))
    if idx.ndim <= 1 and (idx.size == 1 or (steps[0] != 0 and np.all(steps == steps[0]))):
        starts, st, sizes = [0] * rank, [1] * rank, list(shape)
        starts[axis], sizes[axis] = int(idx.reshape(-1)[0]), idx.size
        st[axis] = int(steps[0]) if idx.size > 1 else 1
        if idx.ndim == 1:
            _slice_into(imp, node, x, y, starts, st, sizes, lay)
            return
        part = f"{y}_slice"
        while part in imp.shapes or part in imp.values or part in imp.consts:
            part += "_"
        _slice_into(imp, node, x, part, starts, st, sizes, lay)
        _set_shape(imp, y, out_shape)
        src = imp.values[part][0]
        _carry_qtype(imp, x, y)
        out = imp.define(y, _dropped_layout(lay, axis), like=src)
        imp.g.add_node("Reshape", [src], [out], name=imp.g.unique_name(f"{y}_drop_axis"))
        return
    out_lay = lay
    if idx.ndim != 1:   # the rank changes: plain storage on both sides
        lay, out_lay = plain(rank), plain(len(out_shape))
    _set_shape(imp, y, out_shape)
    src = imp.get(x, lay)
    _carry_qtype(imp, x, y)
    out = imp.define(y, out_lay, like=src)
    imp.g.add_node("Gather", [src], [out], name=_name(node), axis=lay.perm[axis], indices=idx)


def _gather_runtime(imp, node):
    """Gather with runtime int32/int64 indices (an embedding lookup), the table constant or computed: plain layout
    on both sides; negative indices wrap, out-of-range ones clamp (tinyc/ops/gather.py)."""
    x, ind, y = node.input[0], node.input[1], node.output[0]
    what = f"Gather '{_name(node)}'"
    shape = imp.logical_shape(x)
    rank, axis = len(shape), _gather_axis(node, what, len(shape))
    out_shape = tuple(shape[:axis]) + tuple(imp.logical_shape(ind)) + tuple(shape[axis + 1:])
    if _zero_size_result(imp, y, out_shape, x):
        return
    _set_shape(imp, y, out_shape)
    idx = imp.get(ind, plain(len(imp.logical_shape(ind))))
    if imp.g.tensors[idx].dtype not in ("int32", "int64"):
        raise TinycError(f"{what}: indices '{ind}' are {imp.g.tensors[idx].dtype}; ONNX Gather takes int32 or int64")
    if x in imp.consts:
        if x in imp.qconsts:
            raise TinycError(f"{what} looks up a quantized constant table; tinyc reads a float32 (or integer) "
                             "table here: keep the embedding table unquantized")
        table = _weight_input(imp, x, f"{y}_table", lambda a: a)
    else:
        table = imp.get(x, plain(rank))
        _carry_qtype(imp, x, y)
    out = imp.define(y, plain(len(out_shape)), like=table)
    imp.g.add_node("Gather", [table, idx], [out], name=_name(node), axis=axis)


def gather_elements(imp, node):
    x, ind = node.input[0], node.input[1]
    what = f"GatherElements '{_name(node)}'"
    if ind not in imp.consts:
        raise TinycError(f"{what} reads runtime indices ('{ind}'); tinyc needs constant indices: runtime integer "
                         "tensors are not supported yet")
    idx = np.asarray(imp.consts[ind]).astype(np.int64)
    shape = imp.logical_shape(x)
    rank = len(shape)
    axis = int(_attrs(node).get("axis", 0))
    if not -rank <= axis < rank or idx.ndim != rank:
        raise TinycError(f"{what}: axis {axis} or indices {idx.shape} do not fit input {list(shape)}")
    axis %= rank
    d = shape[axis]
    if idx.size and (idx.min() < -d or idx.max() >= d):
        raise TinycError(f"{what}: indices {idx.ravel()[:8].tolist()} are outside the {d} values of axis {axis}; "
                         "the model is invalid")
    if _zero_size_result(imp, node.output[0], idx.shape, x):
        return
    _set_shape(imp, node.output[0], idx.shape)
    lay = _stored_layout(imp, x)
    src = imp.get(x, lay)
    out = imp.define(node.output[0], lay, like=src)
    phys = np.ascontiguousarray(np.where(idx < 0, idx + d, idx).transpose(inverse(lay.perm)))
    imp.g.add_node("GatherElements", [src], [out], name=_name(node), axis=lay.perm[axis], indices=phys)


def tile(imp, node):
    x = node.input[0]
    what = f"Tile '{_name(node)}'"
    reps = [int(v) for v in np.asarray(imp.const(node.input[1], f"{what} repeats")).reshape(-1)]
    shape = imp.logical_shape(x)
    if len(reps) != len(shape) or any(r < 0 for r in reps):
        raise TinycError(f"{what}: repeats {reps} do not fit input {list(shape)}; the model is invalid")
    out_shape = [d * r for d, r in zip(shape, reps)]
    if _zero_size_result(imp, node.output[0], out_shape, x):
        return
    _set_shape(imp, node.output[0], out_shape)
    lay = _stored_layout(imp, x)
    src = imp.get(x, lay)
    _carry_qtype(imp, x, node.output[0])
    out = imp.define(node.output[0], lay, like=src)
    if all(r == 1 for r in reps):
        imp.g.add_node("Identity", [src], [out], name=_name(node))
    else:
        imp.g.add_node("Tile", [src], [out], name=_name(node), reps=tuple(_physical(lay, reps)))


def expand(imp, node):
    """Expand: NumPy broadcasting of x with the constant `shape` (either side may have the 1s)."""
    x = node.input[0]
    what = f"Expand '{_name(node)}'"
    target = [int(v) for v in np.asarray(imp.const(node.input[1], f"{what} shape")).reshape(-1)]
    shape = imp.logical_shape(x)
    try:
        out_shape = tuple(np.broadcast_shapes(tuple(shape), tuple(target)))
    except ValueError:
        raise TinycError(f"{what}: shape {target} does not broadcast with input {list(shape)}") from None
    if _zero_size_result(imp, node.output[0], out_shape, x):
        return
    _set_shape(imp, node.output[0], out_shape)
    lay = _stored_layout(imp, x) if len(out_shape) == len(shape) else plain(len(shape))
    src = imp.get(x, lay)
    _carry_qtype(imp, x, node.output[0])
    out_lay = lay if len(out_shape) == len(shape) else plain(len(out_shape))
    out = imp.define(node.output[0], out_lay, like=src)
    if out_shape == tuple(shape):
        imp.g.add_node("Identity", [src], [out], name=_name(node))
    else:
        imp.g.add_node("BroadcastTo", [src], [out], name=_name(node), target=imp.g.tensors[out].shape)


def depth_space(to_space: bool):
    """DepthToSpace (DCR or CRD) / SpaceToDepth: Reshape -> Transpose -> Reshape on the stored layout (NHWC after
    a convolution, else NCHW); only the Transpose copies."""
    def rule(imp, node):
        from .movement import depth_space as steps, lower_depth_space
        x, y = node.input[0], node.output[0]
        a = _attrs(node)
        what = f"{node.op_type} '{_name(node)}'"
        crd = a.get("mode", "DCR") == "CRD"      # (SpaceToDepth's mode: opset 28)
        if a.get("mode", "DCR") not in ("DCR", "CRD"):
            raise TinycError(f"{what}: mode '{a['mode']}' is not DCR or CRD; the model is invalid")
        shape = imp.logical_shape(x)
        if len(shape) != 4:
            raise TinycError(f"{what} has a rank-{len(shape)} input; the model is invalid (it needs 4-D NCHW)")
        nhwc = imp.layout(x) == channels_last(4)
        lay = channels_last(4) if nhwc else plain(4)
        src = imp.get(x, lay)
        mid, perm, phys_out = steps(imp.g.tensors[src].shape, int(a["blocksize"]), to_space, crd, nhwc, what)
        _set_shape(imp, y, tuple(phys_out[p] for p in lay.perm))
        _carry_qtype(imp, x, y)
        out = imp.define(y, lay, like=src)
        lower_depth_space(imp.g, src, out, mid, perm, _name(node))
    return rule


def _resize_parameter(imp, node, i: int, what: str):
    """Resize's roi / scales / sizes input: None when absent or empty, else its constant values."""
    if len(node.input) <= i or not node.input[i]:
        return None
    if node.input[i] not in imp.consts:
        raise TinycError(f"{node.op_type} '{_name(node)}' computes its {what} at run time; tinyc needs them "
                         "constant (fold the shape arithmetic, e.g. with onnxsim, or export with fixed sizes)")
    v = np.asarray(imp.consts[node.input[i]]).reshape(-1)
    return v if v.size else None


def resize(imp, node):
    """Resize (opset 11+; older models arrive converted, Upsample included) and Upsample: IR Resize with constant
    scales or sizes on the stored layout (every axis resamples on its own)."""
    a = _attrs(node)
    what = f"{node.op_type} '{_name(node)}'"
    x, y = node.input[0], node.output[0]
    shape = imp.logical_shape(x)
    rank = len(shape)
    mode = {"bilinear": "linear"}.get(a.get("mode", "nearest"), a.get("mode", "nearest"))
    coord = a.get("coordinate_transformation_mode", "asymmetric" if node.op_type == "Upsample" else "half_pixel")
    nearest = a.get("nearest_mode", "floor" if node.op_type == "Upsample" else "round_prefer_floor")
    from ..ops.resize import MODES, NEAREST_MODES, ONNX_COORDS
    if a.get("antialias", 0):
        raise TinycError(f"{what} uses antialias=1; tinyc resizes without antialiasing (export with antialias=0)")
    if coord == "tf_crop_and_resize":
        raise TinycError(f"{what} uses coordinate_transformation_mode tf_crop_and_resize; tinyc supports "
                         f"{', '.join(ONNX_COORDS)} (crop with a Slice before the Resize instead)")
    if coord not in ONNX_COORDS or mode not in MODES or nearest not in NEAREST_MODES:
        raise TinycError(f"{what}: mode '{mode}', coordinate_transformation_mode '{coord}', nearest_mode "
                         f"'{nearest}'; tinyc supports modes {', '.join(MODES)} with coordinate modes "
                         f"{', '.join(ONNX_COORDS)} (not tf_crop_and_resize)")
    if node.op_type == "Upsample":
        scales = a.get("scales")
        scales = np.asarray(scales if scales is not None else _resize_parameter(imp, node, 1, "scales"))
        sizes = None
    else:
        scales = _resize_parameter(imp, node, 2, "scales")
        sizes = _resize_parameter(imp, node, 3, "sizes")
    axes = [int(v) for v in a.get("axes", range(rank))]
    if any(not -rank <= v < rank for v in axes) or len({v % rank for v in axes}) != len(axes):
        raise TinycError(f"{what}: axes {axes} are out of range or repeated for rank {rank}")
    axes = [v % rank for v in axes]
    given = scales if sizes is None else sizes
    if given is None or len(given) != len(axes) or (scales is not None and sizes is not None):
        raise TinycError(f"{what} needs one of scales and sizes, one value per resized axis ({len(axes)}); the "
                         "model is invalid")
    scale_of, out = [1.0] * rank, list(shape)
    if sizes is None:
        if np.any(np.asarray(scales, np.float64) <= 0):
            raise TinycError(f"{what}: scales {scales.tolist()} must be positive")
        for ax, s in zip(axes, scales):
            scale_of[ax] = float(np.float32(s))
            out[ax] = int(scale_of[ax] * shape[ax])
    else:
        wanted = [int(v) for v in sizes]
        for ax, n in zip(axes, wanted):
            scale_of[ax], out[ax] = n / shape[ax], n
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        if policy not in ("stretch", "not_larger", "not_smaller"):
            raise TinycError(f"{what}: keep_aspect_ratio_policy '{policy}' is not stretch, not_larger or not_smaller")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(scale_of[ax] for ax in axes)
            for ax in axes:
                scale_of[ax], out[ax] = common, int(common * shape[ax] + 0.5)
    if any(d < 1 for d in out):
        raise TinycError(f"{what} resizes {list(shape)} to {out}; tinyc needs a non-empty output")
    from ..ops.resize import ambiguous_scale
    modes = dict(mode=mode, coord=coord, nearest_mode=nearest, cubic_coeff_a=float(a.get("cubic_coeff_a", -0.75)),
                 exclude_outside=int(a.get("exclude_outside", 0)))
    if any(ambiguous_scale(modes, shape[ax], out[ax], scale_of[ax]) for ax in range(rank)):
        raise TinycError(f"{what}: {coord} with scales {[scale_of[ax] for ax in axes]} that give a fractional "
                         f"output length ({list(shape)} -> {out}): onnxruntime and onnx's reference disagree there; "
                         "give the output sizes instead of scales")
    _set_shape(imp, y, out)
    lay = _stored_layout(imp, x)
    src = imp.get(x, lay)
    _carry_qtype(imp, x, y)
    dst = imp.define(y, lay, like=src)
    if out == list(shape) and all(s == 1.0 for s in scale_of):
        imp.g.add_node("Identity", [src], [dst], name=_name(node))
        return
    imp.g.add_node("Resize", [src], [dst], name=_name(node), sizes=tuple(_physical(lay, out)),
                   scales=tuple(_physical(lay, scale_of)), **modes)


def cast(imp, node):
    """Cast / CastLike between float32, the integer types and bool (IR Cast); to the same type, the identity."""
    from onnx import TensorProto
    x = node.input[0]
    if node.op_type == "CastLike":
        like = node.input[1]
        target = (np.asarray(imp.consts[like]).dtype.name if like in imp.consts else
                  imp.g.tensors[imp.values[like][0]].dtype if like in imp.values else None)
    else:
        to = int(_attrs(node)["to"])
        dtype = _input_dtype(to)
        target = dtype.name if dtype is not None else TensorProto.DataType.Name(to).lower()
    if target not in RUNTIME_DTYPES:
        raise TinycError(f"ONNX {node.op_type} '{_name(node)}' converts to {target}; tinyc's runtime tensors are "
                         "float32, integers (int2 to int64, uint2 to uint64) and bool")
    if x in imp.consts:      # CastLike of a constant to a computed value's type: a constant
        imp.consts[node.output[0]] = cast_values(np.asarray(imp.consts[x]), target)
        return
    src = imp.get(x)
    if imp.g.tensors[src].dtype == target:
        identity(imp, node)
        return
    imp.dtypes[node.output[0]] = target
    out = imp.define(node.output[0], imp.layout(x))
    imp.g.add_node("Cast", [src], [out], name=_name(node), to=target)


def compare(kind):
    """Equal, Greater, Less, GreaterOrEqual, LessOrEqual: bool results, operands broadcast."""
    def rule(imp, node):
        rank = len(imp.logical_shape(node.output[0]))
        ins, lay = _same_layout(imp, list(node.input[:2]), rank)
        out = imp.define(node.output[0], lay)
        imp.g.add_node("Compare", ins, [out], name=_name(node), kind=kind)
    return rule


def logical(kind):
    """And, Or, Xor (operands broadcast), Not: bool in, bool out."""
    def rule(imp, node):
        rank = len(imp.logical_shape(node.output[0]))
        ins, lay = _same_layout(imp, list(node.input[:1 if kind == "not" else 2]), rank)
        out = imp.define(node.output[0], lay)
        imp.g.add_node("Logical", ins, [out], name=_name(node), kind=kind)
    return rule


def where(imp, node):
    rank = len(imp.logical_shape(node.output[0]))
    ins, lay = _same_layout(imp, list(node.input[:3]), rank)
    out = imp.define(node.output[0], lay)
    imp.g.add_node("Where", ins, [out], name=_name(node))


def size(imp, node):
    """Size of a computed tensor: a compile-time constant (shapes are static)."""
    imp.consts[node.output[0]] = np.array(int(np.prod(imp.logical_shape(node.input[0]), dtype=np.int64)), np.int64)


# -- QDQ: QuantizeLinear / DequantizeLinear ------------------------------------------------------------------
def _quantize_output_type(imp, node):
    """QuantizeLinear's integer type: its zero point's, else the `output_dtype` attribute (opset 21), else uint8."""
    zp = imp.opt_const(node, 2)
    if zp is not None:
        return np.asarray(zp).dtype
    code = _attrs(node).get("output_dtype", 0)
    if code:
        from onnx import helper
        return helper.tensor_dtype_to_np_dtype(code)
    return np.dtype(np.uint8)


def _qdq_params(imp, node, qtype: str, rank: int):
    """(scale float32, zero point int64 in int8 terms, per-channel axis or None) of a QuantizeLinear or
    DequantizeLinear whose integer side has ONNX type `qtype` and rank `rank`."""
    what = f"{node.op_type} '{_name(node)}'"
    a = _attrs(node)
    if a.get("block_size", 0):
        raise TinycError(f"{what} uses blocked quantization (block_size); tinyc supports per-tensor and per-channel")
    scale = np.asarray(imp.const(node.input[1], f"{what} scale"), np.float64).astype(np.float32)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise TinycError(f"{what} has scale {scale.ravel()[:4]}; scales must be positive and finite")
    zp = imp.opt_const(node, 2)
    if len(node.input) > 2 and node.input[2] and zp is None:
        imp.const(node.input[2], f"{what} zero point")   # raises: computed zero point
    if zp is None:   # the default zero point is 0 of the integer type (uint8 0 is int8 -128)
        zp = np.zeros(scale.shape, np.int64)
    zp = shift_to_int8(zp, qtype).astype(np.int64)
    if scale.size == 1:
        return scale.reshape(()), zp.reshape(()), None
    return scale.reshape(-1), np.broadcast_to(zp.reshape(-1), (scale.size,)).copy(), int(a.get("axis", 1)) % rank


def dequantize_constant(imp, node):
    """DequantizeLinear of an initializer (weights, biases, constant operands): kept as a QuantizedConst so
    rules can store the integers; its float value is also a constant, for rules that only want numbers."""
    x, y = node.input[0], node.output[0]
    values = np.asarray(imp.consts[x])
    kind = values.dtype.name
    _check_float32_arithmetic(imp, node)
    if kind in SUB_BYTE_INTEGERS:    # 4- and 2-bit weights: float constants (int8 kernels take no such weights)
        scale, zp = _linear_qdq_arrays(imp, node, kind, values.shape)
        imp.consts[y] = dequantize_evaluate({}, [values, scale, zp])
        return
    qtype = kind if kind == "int32" else quantized_type(values.dtype, f"constant '{x}'")
    scale, zp, axis = _qdq_params(imp, node, qtype, values.ndim)
    if axis is not None and values.shape[axis] != scale.size:
        raise TinycError(f"DequantizeLinear '{_name(node)}': {scale.size} scales for axis {axis} of '{x}' "
                         f"with shape {values.shape}")
    qc = QuantizedConst(shift_to_int8(values, qtype), scale, zp, axis, x)
    imp.qconsts[y] = qc
    imp.consts[y] = qc.dequantized()


def _check_float32_arithmetic(imp, node) -> None:
    """QuantizeLinear divides in its `precision`, DequantizeLinear multiplies into its `output_dtype`, each by
    default the scale's type: tinyc computes in float32 only."""
    from onnx import TensorProto, helper
    a = _attrs(node)
    scale = imp.opt_const(node, 1)
    default = helper.np_dtype_to_tensor_dtype(np.asarray(scale).dtype) if scale is not None else TensorProto.FLOAT
    attr = "precision" if node.op_type == "QuantizeLinear" else "output_dtype"
    code = int(a.get(attr, 0)) or default
    if code != TensorProto.FLOAT:
        raise TinycError(f"{node.op_type} '{_name(node)}' computes in {TensorProto.DataType.Name(code).lower()} "
                         f"({attr} or the scale's type); tinyc computes it in float32 only: use float32 scales")


def _linear_qdq_arrays(imp, node, int_type: str, shape) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32, zero point of `int_type`) of a QuantizeLinear / DequantizeLinear whose data has the logical
    `shape`: as given per tensor, else broadcast to the data (per axis or per block)."""
    what = f"{node.op_type} '{_name(node)}'"
    rank = len(shape)
    a = _attrs(node)
    scale = np.asarray(imp.const(node.input[1], f"{what} scale"), np.float32)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise TinycError(f"{what} has scale {scale.ravel()[:4]}; scales must be positive and finite")
    zp = imp.opt_const(node, 2)
    if len(node.input) > 2 and node.input[2] and zp is None:
        imp.const(node.input[2], f"{what} zero point")   # raises: computed zero point
    zp = np.zeros(scale.shape, int_type) if zp is None else np.asarray(zp)
    if zp.size == 1 == scale.size:      # one value each, as a scalar or a 1-element vector (as onnx's reference)
        zp = zp.reshape(scale.shape)
    if zp.dtype.name != int_type or zp.shape != scale.shape:
        raise TinycError(f"{what}: zero point {zp.dtype}{list(zp.shape)} does not match scale {list(scale.shape)} "
                         f"and type {int_type}")
    arrays = [scale, zp]
    if scale.size > 1 or scale.ndim == rank > 0:
        axis = int(a.get("axis", 1)) % rank
        block = int(a.get("block_size", 0))
        if block:     # scales per block of `block` values along the axis
            if scale.ndim != rank:
                raise TinycError(f"{what}: blocked scales must have the data's rank {rank}")
            arrays = [np.take(np.repeat(v, block, axis=axis), range(shape[axis]), axis=axis) for v in arrays]
        else:
            if scale.ndim != 1 or scale.size != shape[axis]:
                raise TinycError(f"{what}: {scale.size} scales for axis {axis} of a {list(shape)} value")
            arrays = [v.reshape([-1 if d == axis else 1 for d in range(rank)]) for v in arrays]
    return arrays[0], arrays[1]


def _linear_qdq_params(imp, node, int_type: str) -> tuple[str, str]:
    """IR constants (scale float32, zero point of `int_type`) broadcast to the data in its stored layout, per
    tensor, per axis or per block, for LinearQuantize / LinearDequantize."""
    x = node.input[0]
    shape, lay = imp.logical_shape(x), imp.layout(x)
    arrays = _linear_qdq_arrays(imp, node, int_type, shape)
    if arrays[0].ndim == len(shape) > 0:     # broadcast to the data: in its stored layout
        arrays = [imp.const_in_layout(v, len(shape), lay, v.dtype) for v in arrays]
    name = node.output[0]
    return (imp.g.add_const(f"{name}_scale", arrays[0], "float32"),
            imp.g.add_const(f"{name}_zero_point", arrays[1], int_type))


def _folds_into_int8(imp, node) -> bool:
    """A QuantizeLinear that the int8 path takes (fold_qdq): int8 / uint8, per tensor, and read only by
    DequantizeLinear nodes (not a model output)."""
    y = node.output[0]
    readers = imp.consumers.get(y, [])
    return (np.dtype(_quantize_output_type(imp, node)).name in ("int8", "uint8") and y not in imp.output_names
            and bool(readers) and all(r.op_type == "DequantizeLinear" for r in readers)
            and np.size(imp.opt_const(node, 1) if imp.opt_const(node, 1) is not None else 0) == 1
            and not _attrs(node).get("block_size", 0))


def quantize_linear(imp, node):
    x, y = node.input[0], node.output[0]
    _check_float32_arithmetic(imp, node)
    out_type = np.dtype(_quantize_output_type(imp, node)).name
    if not _folds_into_int8(imp, node) and out_type in QUANTIZED_TYPES \
            and imp.g.tensors[imp.get(x)].dtype == "float32":
        scale, zp = _linear_qdq_params(imp, node, out_type)
        imp.dtypes[y] = out_type
        out = imp.define(y, imp.layout(x))
        imp.g.add_node("LinearQuantize", [imp.get(x), scale, zp], [out], name=_name(node), to=out_type)
        return
    qtype = quantized_type(_quantize_output_type(imp, node), f"QuantizeLinear '{_name(node)}' output '{y}'")
    scale, zp, axis = _qdq_params(imp, node, qtype, len(imp.logical_shape(x)))
    if axis is not None:
        raise TinycError(f"QuantizeLinear '{_name(node)}' quantizes '{x}' per axis; tinyc supports per-tensor "
                         "quantization of activations only")
    src = imp.get(x)
    imp.qtypes[y] = qtype
    out = imp.define(y, imp.layout(x))
    imp.g.tensors[out].dtype, imp.g.tensors[out].quant = "int8", Quant(scale, zp)
    imp.g.add_node("Quantize", [src], [out], name=_name(node))


def dequantize_linear(imp, node):
    x, y = node.input[0], node.output[0]
    _check_float32_arithmetic(imp, node)
    src = imp.get(x)
    q = imp.g.tensors[src].quant
    if q is None and imp.g.tensors[src].dtype in DEQUANTIZED_TYPES:
        scale, zp = _linear_qdq_params(imp, node, imp.g.tensors[src].dtype)   # integers from outside
        out = imp.define(y, imp.layout(x))
        imp.g.add_node("LinearDequantize", [src, scale, zp], [out], name=_name(node))
        return
    if q is None:
        raise TinycError(f"DequantizeLinear '{_name(node)}' reads '{x}', which no QuantizeLinear made; tinyc "
                         "needs QuantizeLinear -> DequantizeLinear pairs on computed tensors")
    scale, zp, axis = _qdq_params(imp, node, imp.qtypes.get(x, "int8"), len(imp.logical_shape(x)))
    if axis is not None:
        raise TinycError(f"DequantizeLinear '{_name(node)}' dequantizes '{x}' per axis; tinyc supports "
                         "per-tensor quantization of activations only")
    if np.float32(scale) != np.float32(q.scale) or int(zp) != int(q.zero_point):
        raise TinycError(f"DequantizeLinear '{_name(node)}' reads '{x}' with another scale or zero point than "
                         "it was quantized with; not supported")
    out = imp.define(y, imp.layout(x))
    imp.g.add_node("Dequantize", [src], [out], name=_name(node))


# -- recurrent layers (issue 19): LSTM, GRU, RNN --------------------------------------------------------------
# ONNX's gate blocks in tinyc's order (tinyc/ops/recurrent.py): LSTM W/R/B rows i, o, f, c -> i, f, g(c), o and its
# peepholes i, o, f -> i, f, o; GRU z, r, h and RNN keep theirs.
_ONNX_GATE_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (0, 1, 2), "RNN": (0,)}
_ONNX_PEEPHOLE_ORDER = (0, 2, 1)
_ONNX_RECURRENT_OUTPUTS = {"LSTM": ("sequence", "last_h", "last_c"), "GRU": ("sequence", "last_h"),
                           "RNN": ("sequence", "last_h")}     # Y, Y_h (, Y_c)
# ONNX recurrent activation -> (tinyc activation, its parameters in (alpha, beta) order with onnxruntime's defaults;
# None: no default, the model must give it)
_RECURRENT_ACTIVATIONS = {
    "relu": ("relu", ()), "tanh": ("tanh", ()), "sigmoid": ("sigmoid", ()), "softsign": ("softsign", ()),
    "softplus": ("softplus", ()), "affine": ("affine", (("alpha", None), ("beta", None))),
    "leakyrelu": ("leaky_relu", (("alpha", 0.01),)), "thresholdedrelu": ("thresholded_relu", (("alpha", None),)),
    "scaledtanh": ("scaled_tanh", (("alpha", None), ("beta", None))),
    "hardsigmoid": ("hard_sigmoid", (("alpha", 0.2), ("beta", 0.5))), "elu": ("elu", (("alpha", 1.0),)),
}


def _recurrent_activations(node, op: str, directions: int) -> list:
    """Per direction, the tuple of tinyc activation dicts. activation_alpha / activation_beta are consumed in the
    order of the activations (both directions'), each by the functions that take that parameter, as onnxruntime
    does; a function whose parameter has no default there (Affine, ThresholdedRelu, ScaledTanh) must be given it."""
    a = _attrs(node)
    per = len(recurrent.DEFAULT_ACTIVATIONS[op])
    names = [n.decode() if isinstance(n, bytes) else n for n in a.get("activations", [])]
    names = names or list(recurrent.DEFAULT_ACTIVATIONS[op]) * directions
    if len(names) != per * directions:
        raise TinycError(f"{op} '{_name(node)}': {len(names)} activations for {directions} direction(s); ONNX wants "
                         f"{per} per direction")
    given = {"alpha": list(a.get("activation_alpha", [])), "beta": list(a.get("activation_beta", []))}
    acts = []
    for name in names:
        if name.lower() not in _RECURRENT_ACTIVATIONS:
            raise TinycError(f"{op} '{_name(node)}': activation '{name}' is not one of ONNX's recurrent activations "
                             f"({', '.join(sorted(_RECURRENT_ACTIVATIONS))})")
        fn, params = _RECURRENT_ACTIVATIONS[name.lower()]
        act = {"fn": fn}
        for param, default in params:
            if given[param]:
                act[param] = float(given[param].pop(0))
            elif default is None:
                raise TinycError(f"{op} '{_name(node)}': activation {name} without its activation_{param}; its "
                                 "default differs between onnxruntime (0) and the ONNX operator: give it explicitly")
            else:
                act[param] = default
        acts.append(act)
    return [tuple(acts[d * per:(d + 1) * per]) for d in range(directions)]


def _gate_blocks(arr, order, H: int):
    """The rows of `arr` (gate blocks of H along its first axis) in tinyc's gate order."""
    return np.concatenate([arr[k * H:(k + 1) * H] for k in order], axis=0)


def _recurrent_state(imp, node, i: int, d: int, directions: int, batch_first: bool, shape, base: str) -> str:
    """Direction d's [B, H] slice of initial_h / initial_c (input i): a constant (zeros when absent), or a computed
    value of the model sliced (free when it has one direction)."""
    name = node.input[i] if len(node.input) > i else ""
    axis = 1 if batch_first else 0
    if not name:
        return imp.g.add_const(base, np.zeros(shape, np.float32))
    if name in imp.consts:
        return imp.g.add_const(base, np.take(np.asarray(imp.consts[name], np.float32), d, axis=axis))
    src = imp.get(name, plain(3))
    full = imp.g.tensors[src].shape
    if directions > 1:
        part = imp.g.unique_name(f"{base}_slice")
        sizes = tuple(1 if k == axis else n for k, n in enumerate(full))
        imp.g.add_tensor(part, sizes)
        imp.g.add_node("Slice", [src], [part], name=part, starts=tuple(d if k == axis else 0 for k in range(3)),
                       steps=(1, 1, 1), sizes=sizes)
        src = part
    out = imp.g.unique_name(base)
    imp.g.add_tensor(out, shape)
    imp.g.add_node("Reshape", [src], [out], name=out)
    return out


def _used(imp, node, k: int) -> bool:
    name = node.output[k] if len(node.output) > k else ""
    return bool(name) and (name in imp.output_names or bool(imp.consumers.get(name)))


def _check_sequence_lens(imp, node, op: str, B: int, T: int) -> None:
    """A `sequence_lens` of the full length T for every sequence is the default; tinyc runs every sequence over all
    T steps, so any other (or one computed at run time) is refused."""
    name = node.input[4] if len(node.input) > 4 else ""
    if not name:
        return
    if name not in imp.consts:
        raise TinycError(f"{op} '{_name(node)}': sequence_lens '{name}' is computed at run time; tinyc runs every "
                         f"sequence over its full length {T}: drop sequence_lens or make it constant")
    lens = np.asarray(imp.consts[name]).ravel()
    if lens.size != B:
        raise TinycError(f"{op} '{_name(node)}': sequence_lens has {lens.size} values for a batch of {B}; the model "
                         "is invalid")
    if np.any(lens != T):
        raise TinycError(f"{op} '{_name(node)}': sequence_lens {lens.tolist()[:8]} differs from the full length {T}; "
                         "tinyc runs every sequence over all its steps: pad or cut the sequences to one length")


def recurrent_layer(op: str):
    """ONNX LSTM / GRU / RNN: one IR node per direction, its results put into ONNX's Y [T, D, B, H] (layout 0,
    stored batch-major as [B, T, D, H]) or [B, T, D, H] (layout 1), Y_h / Y_c [D, B, H] or [B, D, H]. The node
    gives the sequence when Y is read (the last hidden state then a Slice of it), else the last hidden state; an
    LSTM whose Y_c is read gives its final cell state as its second output (cell_output)."""
    def rule(imp, node):
        a = _attrs(node)
        what = f"{op} '{_name(node)}'"
        direction = a.get("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise TinycError(f"{what}: direction '{direction}' is not forward, reverse or bidirectional")
        batch_first = bool(a.get("layout", 0))
        directions = 2 if direction == "bidirectional" else 1
        x = node.input[0]
        T, B, I = imp.logical_shape(x)
        if batch_first:
            B, T = T, B
        w = np.asarray(imp.const(node.input[1], f"{what} W"), np.float32)
        r = np.asarray(imp.const(node.input[2], f"{what} R"), np.float32)
        H, G = r.shape[-1], recurrent.GATES[op]
        if w.shape != (directions, G * H, I) or r.shape != (directions, G * H, H) or \
                a.get("hidden_size", H) != H:
            raise TinycError(f"{what}: W {list(w.shape)} and R {list(r.shape)} do not fit {directions} direction(s), "
                             f"input size {I} and hidden size {a.get('hidden_size', H)}")
        bias = imp.opt_const(node, 3)
        if len(node.input) > 3 and node.input[3] and bias is None:
            imp.const(node.input[3], f"{what} B")     # raises: computed biases
        bias = np.zeros((directions, 2 * G * H), np.float32) if bias is None else np.asarray(bias, np.float32)
        peep = imp.opt_const(node, 7) if op == "LSTM" else None
        if op == "LSTM" and len(node.input) > 7 and node.input[7] and peep is None:
            imp.const(node.input[7], f"{what} P")
        peep = np.zeros((directions, 3 * H), np.float32) if peep is None else np.asarray(peep, np.float32)
        if bias.shape != (directions, 2 * G * H) or peep.shape != (directions, 3 * H):
            raise TinycError(f"{what}: B {list(bias.shape)} or P {list(peep.shape)} do not fit hidden size {H}")
        _check_sequence_lens(imp, node, op, B, T)
        acts = _recurrent_activations(node, op, directions)
        if "clip" in a and not a["clip"] > 0:
            raise TinycError(f"{what}: clip {a['clip']}; ONNX's clip threshold must be positive")
        attrs = dict(clip=float(a["clip"]) if "clip" in a else None)
        if op == "LSTM":
            attrs.update(cell_clip=None, input_forget=bool(a.get("input_forget", 0)))
        if op == "GRU":
            attrs["linear_before_reset"] = bool(a.get("linear_before_reset", 0))
        src = imp.get(x, plain(3) if batch_first else Layout((1, 0, 2)))
        order = _ONNX_GATE_ORDER[op]
        wants = [k for k in range(len(_ONNX_RECURRENT_OUTPUTS[op])) if _used(imp, node, k)]
        # The cell state (Y_c) is an LSTM node's second output (cell_output), beside its sequence or last h
        cell = op == "LSTM" and 2 in wants
        main = "sequence" if 0 in wants else "last_h"
        results = {k: [] for k in wants}    # output index -> per direction IR tensor
        for d in range(directions):
            base = f"{node.output[0] or _name(node)}_d{d}" if directions > 1 else (node.output[0] or _name(node))
            ins = [src, imp.g.add_const(f"{base}_w", _gate_blocks(w[d], order, H)),
                   imp.g.add_const(f"{base}_r", _gate_blocks(r[d], order, H))]
            wb, rb = (_gate_blocks(bias[d, k * G * H:(k + 1) * G * H], order, H) for k in (0, 1))
            if op == "GRU":
                ins += [imp.g.add_const(f"{base}_b", wb), imp.g.add_const(f"{base}_rb", rb)]
            else:
                ins.append(imp.g.add_const(f"{base}_b", wb + rb))
            ins.append(_recurrent_state(imp, node, 5, d, directions, batch_first, (B, H), f"{base}_h0"))
            if op == "LSTM":
                ins.append(_recurrent_state(imp, node, 6, d, directions, batch_first, (B, H), f"{base}_c0"))
                ins.append(imp.g.add_const(f"{base}_p", _gate_blocks(peep[d], _ONNX_PEEPHOLE_ORDER, H)))
            reverse = direction == "reverse" or d == 1
            suffix = f"_d{d}" if directions > 1 else ""
            outs = [imp.g.unique_name(f"{base}_{main}")]
            imp.g.add_tensor(outs[0], (B, T, H) if main == "sequence" else (B, H))
            if cell:
                outs.append(imp.g.unique_name(f"{base}_last_c"))
                imp.g.add_tensor(outs[1], (B, H))
            imp.g.add_node(op, ins, outs, name=f"{_name(node)}_{main}{suffix}", output=main, activations=acts[d],
                           reverse=reverse, **attrs, **({"cell_output": True} if cell else {}))
            for k in wants:
                kind = _ONNX_RECURRENT_OUTPUTS[op][k]
                if kind == "last_h" and main == "sequence":     # the sequence's last step in processing order
                    out = _time_steps(imp, outs[0], 0 if reverse else T - 1, 1, f"{base}_last_h")
                else:
                    out = outs[1] if kind == "last_c" else outs[0]
                results[k].append(out)
        for k in wants:
            _recurrent_output(imp, node.output[k], results[k], k == 0, batch_first, directions)
    return rule


def _time_steps(imp, src: str, start: int, count: int, name: str) -> str:
    """Steps start..start+count-1 of a recurrent node's output [B, steps, H] (a view of its bytes for B = 1)."""
    B, _, H = imp.g.tensors[src].shape
    out = imp.g.unique_name(name)
    imp.g.add_tensor(out, (B, count, H))
    imp.g.add_node("Slice", [src], [out], name=out, starts=(0, start, 0), steps=(1, 1, 1), sizes=(B, count, H))
    return out


def _recurrent_output(imp, y: str, parts: list, sequence: bool, batch_first: bool, directions: int) -> None:
    """ONNX output `y` from the per-direction IR results: each given a unit direction axis (a free Reshape), then
    concatenated along it. The sequence is stored [B, T, D, H] (for layout 0, Y [T, D, B, H] in a transposed
    layout, which PyTorch's Transpose back to batch-first reads without a copy); the final states in ONNX's own
    order."""
    if sequence:
        lay, axis = (plain(4), 2) if batch_first else (Layout((1, 2, 0, 3)), 2)
    else:
        lay, axis = (plain(3), 1) if batch_first else (plain(3), 0)
    out = imp.define(y, lay)
    if directions == 1:
        imp.g.add_node("Reshape", parts, [out], name=y)
        return
    shape = list(imp.g.tensors[out].shape)
    shape[axis] = 1
    units = []
    for part in parts:
        units.append(imp.g.unique_name(f"{part}_unit"))
        imp.g.add_tensor(units[-1], shape)
        imp.g.add_node("Reshape", [part], [units[-1]], name=units[-1])
    imp.g.add_node("Concat", units, [out], name=y, axis=axis)


ONNX_OPS = {
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
    "Add": binary("Add"), "Sub": binary("Sub"), "Mul": binary("Mul"), "Div": binary("Div"),
    "Relu": activation("relu"), "Clip": clip, "LeakyRelu": activation("leaky_relu", alpha=0.01),
    "Sigmoid": activation("sigmoid"), "Tanh": activation("tanh"), "Elu": activation("elu", alpha=1.0),
    "HardSigmoid": activation("hard_sigmoid", alpha=0.2, beta=0.5), "HardSwish": activation("hard_swish"),
    # elementwise math (tinyc/activations.py) and the binary family (tinyc/ops/binary.py)
    **{op: activation(op.lower()) for op in ("Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil",
                                             "Round", "Sign", "Erf", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan",
                                             "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Softplus", "Softsign",
                                             "Mish")},
    "Selu": activation("selu", alpha=1.67326319217681884765625, gamma=1.05070102214813232421875),
    "Celu": celu, "Gelu": gelu, "ThresholdedRelu": activation("thresholded_relu", alpha=1.0),
    "Shrink": activation("shrink", lambd=0.5, bias=0.0), "PRelu": prelu,
    "Pow": binary("Pow"), "Mod": mod, "Max": variadic("Max"), "Min": variadic("Min"), "Sum": variadic("Add"),
    "Mean": variadic("Add", mean=True),
    "Softmax": softmax("Softmax"), "LogSoftmax": softmax("LogSoftmax"), "Hardmax": softmax("Hardmax"),
    "MaxPool": pool("max"), "AveragePool": pool("avg"), "GlobalAveragePool": global_average_pool,
    "GlobalMaxPool": global_max_pool, "LpPool": pool("lp"), "GlobalLpPool": global_lp_pool,
    "ReduceMean": reduce("mean"), "ReduceSum": reduce("sum"), "ReduceMax": reduce("max"), "ReduceMin": reduce("min"),
    "ReduceProd": reduce("prod"), "ReduceL1": reduce("l1"), "ReduceL2": reduce("l2"), "ReduceLogSum": reduce("logsum"),
    "ReduceLogSumExp": reduce("logsumexp"), "ReduceSumSquare": reduce("sumsquare"),
    "ArgMax": arg_min_max("max"), "ArgMin": arg_min_max("min"),
    "Flatten": _reshape, "Reshape": _reshape, "Squeeze": _reshape, "Unsqueeze": _reshape,
    "Transpose": transpose, "Concat": concat, "Pad": pad, "BatchNormalization": batchnorm,
    "Identity": identity, "Dropout": identity,
    "Slice": slice_, "Split": split, "Gather": gather, "GatherElements": gather_elements, "Tile": tile,
    "Expand": expand, "DepthToSpace": depth_space(True), "SpaceToDepth": depth_space(False), "Cast": cast,
    "CastLike": cast, "Size": size,
    "Equal": compare("equal"), "Greater": compare("greater"), "Less": compare("less"),
    "GreaterOrEqual": compare("greater_equal"), "LessOrEqual": compare("less_equal"),
    "And": logical("and"), "Or": logical("or"), "Xor": logical("xor"), "Not": logical("not"), "Where": where,
    "QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear,
    "LayerNormalization": layer_norm(True), "RMSNormalization": layer_norm(False),
    "InstanceNormalization": instance_norm, "GroupNormalization": group_norm, "LpNormalization": lp_norm,
    "Resize": resize, "Upsample": resize,
    "Einsum": einsum,
    "LSTM": recurrent_layer("LSTM"), "GRU": recurrent_layer("GRU"), "RNN": recurrent_layer("RNN"),
}
