"""int8 kernel rules: IR op on quantized tensors -> (template, variables, MACs), registered in KERNELS.

These are the plain-C reference kernels: each computes exactly what TFLite's reference kernel computes
(docs/int8-numerics.md), with every zero point, multiplier and clamp baked in as a constant. Fixed-point
parameters come from `tinyc.quant.params`; per-channel ones become constant tables (`k.table`).
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..quant import params as qp
from . import float_kernels
from .literals import c_double, c_float
from .loops import broadcast_strides, row_major_strides, strided_loops


def _q(t, what):
    if t.quant is None:
        raise TinycError(f"int8 tensor '{t.name}' ({what}) has no quantization parameters")
    return t.quant


def _in(k, i=0):
    return _q(k.tensor(i), "input")


def _outq(k):
    return _q(k.out, "output")


def _symmetric_weights(k, i=1):
    w = k.tensor(i)
    if w.dtype != "int8" or not w.is_const:
        raise TinycError(f"node '{k.node.name}': weights '{w.name}' must be constant int8 (found {w.dtype}); "
                         "hybrid models (float activations, int8 weights) are not supported")
    q = _q(w, "weights")
    if np.any(np.asarray(q.zero_point) != 0):
        raise TinycError(f"node '{k.node.name}': weights '{w.name}' are asymmetric (zero point != 0); TFLite's "
                         "int8 scheme needs symmetric weights — requantize the model per channel")
    return q


def _bias(k):
    if not k.has_input(2):
        return None
    b = k.tensor(2)
    if b.dtype != "int32" or not b.is_const:
        raise TinycError(f"node '{k.node.name}': bias '{b.name}' must be constant int32 (found {b.dtype})")
    return k.expr(2)


def conv2d(k):
    template, v, macs = float_kernels.conv2d(k)
    mults, shifts = qp.conv_multipliers(_in(k), _symmetric_weights(k), _outq(k), v["oc"])
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), _outq(k))
    v.update(in_zp=qp.zero_point_of(_in(k)), out_zp=qp.zero_point_of(_outq(k)), lo=lo, hi=hi, bias=_bias(k),
             mult=k.table(mults, "int32", "requantization multipliers"),
             shift=k.table(shifts, "int8", "requantization shifts"))
    return template, v, macs


def dense(k):
    """TFLite 2.21's reference FULLY_CONNECTED requantizes in double: round(acc * in_s * w_s[c] / out_s)."""
    v, macs = float_kernels.dense(k)[1:]
    wq = _symmetric_weights(k)
    per_channel = np.asarray(wq.scale).size > 1
    scales = qp.fc_scales(_in(k), wq, _outq(k), v["o"])
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), _outq(k))
    scale = k.table(scales, "float64", "requantization scales") if per_channel else c_double(scales[0])
    v.update(in_zp=qp.zero_point_of(_in(k)), out_zp=qp.zero_point_of(_outq(k)), lo=lo, hi=hi, bias=_bias(k),
             scale=scale, per_channel=per_channel)
    return "dense.c.j2", v, macs


def pool2d(k):
    _, v, _ = float_kernels.pool2d(k)
    if (qp.scale_of(_in(k)), qp.zero_point_of(_in(k))) != (qp.scale_of(_outq(k)), qp.zero_point_of(_outq(k))):
        raise TinycError(f"node '{k.node.name}': int8 pooling needs the same scale and zero point on input and "
                         "output (TFLite requires it)")
    if v["kind"] == "avg" and v["count_include_pad"] and any((v["pt"], v["pl"], v["pb"], v["pr"])):
        raise TinycError(f"node '{k.node.name}': int8 average pooling that counts padded cells is not supported")
    v["lo"], v["hi"] = qp.activation_range(k.node.attrs.get("activation"), _outq(k))
    return "pool2d.c.j2", v, 0


def _loop_operands(k):
    out = k.out_shape
    return out, [row_major_strides(out), broadcast_strides(k.in_shape(0), out), broadcast_strides(k.in_shape(1), out)]


def add_sub(k):
    """TFLite int8 ADD/SUB: both inputs shifted left by 20 bits and rescaled to twice the larger input scale,
    added (subtracted), then rescaled to the output."""
    s1, s2, so = qp.scale_of(_in(k, 0)), qp.scale_of(_in(k, 1)), qp.scale_of(_outq(k))
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = qp.multiplier(s1 / twice_max)
    m2, sh2 = qp.multiplier(s2 / twice_max)
    out_real = twice_max / float(np.float32((1 << 20) * np.float32(so)))
    if out_real >= 1.0:
        raise TinycError(f"node '{k.node.name}': int8 {k.node.op} with output scale {so:g} far below its input "
                         f"scales ({s1:g}, {s2:g}) cannot be computed by TFLite's scheme; requantize the model")
    mo, sho = qp.multiplier(out_real)
    z1, z2, zo = qp.zero_point_of(_in(k, 0)), qp.zero_point_of(_in(k, 1)), qp.zero_point_of(_outq(k))
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), _outq(k))
    sign = "+" if k.node.op == "Add" else "-"
    body = ("{{ const int32_t a = tinyc_requantize(((int32_t)%s[{o1}] - (%d)) * (1 << 20), %d, %d);\n"
            "  const int32_t b = tinyc_requantize(((int32_t)%s[{o2}] - (%d)) * (1 << 20), %d, %d);\n"
            "  y[{o0}] = tinyc_sat8(tinyc_requantize(a %s b, %d, %d) + (%d), %d, %d); }}"
            % (k.expr(0), z1, m1, sh1, k.expr(1), z2, m2, sh2, sign, mo, sho, zo, lo, hi))
    out, strides = _loop_operands(k)
    return "elementwise.c.j2", dict(comment=f"int8 {k.node.op} {k.in_shape(0)} {sign} {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


def mul(k):
    """TFLite int8 MUL: (a - za) * (b - zb) rescaled by sa * sb / so (computed in float32)."""
    s1, s2, so = (np.float32(qp.scale_of(q)) for q in (_in(k, 0), _in(k, 1), _outq(k)))
    m, sh = qp.multiplier(float(np.float32(np.float32(s1 * s2) / so)))
    z1, z2, zo = qp.zero_point_of(_in(k, 0)), qp.zero_point_of(_in(k, 1)), qp.zero_point_of(_outq(k))
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), _outq(k))
    body = ("y[{o0}] = tinyc_sat8(tinyc_requantize(((int32_t)%s[{o1}] - (%d)) * ((int32_t)%s[{o2}] - (%d)), "
            "%d, %d) + (%d), %d, %d);" % (k.expr(0), z1, k.expr(1), z2, m, sh, zo, lo, hi))
    out, strides = _loop_operands(k)
    return "elementwise.c.j2", dict(comment=f"int8 Mul {k.in_shape(0)} * {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


def _same_quant(a, b) -> bool:
    return qp.scale_of(a) == qp.scale_of(b) and qp.zero_point_of(a) == qp.zero_point_of(b)


def _elementwise(k, expr: str, comment: str):
    body = "{{ const int32_t v = x0[{o0}]; y[{o0}] = %s; }}" % expr
    return "elementwise.c.j2", dict(comment=comment, loops=strided_loops([k.out_size], [[1]], body)), 0


def quantize(k):
    src = k.tensor(0)
    oq = _outq(k)
    if k.out.dtype != "int8":
        raise TinycError(f"node '{k.node.name}': quantizing to {k.out.dtype} is not supported; only int8")
    if src.dtype == "float32":
        body = "y[{o0}] = tinyc_quantize_f32(x0[{o0}], %s, %d);" % (
            c_float(qp.scale_of(oq)), qp.zero_point_of(oq))
        return "elementwise.c.j2", dict(comment=f"quantize {k.out_size} floats",
                                        loops=strided_loops([k.out_size], [[1]], body)), 0
    m, sh = qp.rescale(_in(k), oq)
    return _elementwise(k, "tinyc_sat8(tinyc_requantize(v - (%d), %d, %d) + (%d), -128, 127)"
                        % (qp.zero_point_of(_in(k)), m, sh, qp.zero_point_of(oq)), "int8 requantize")


def dequantize(k):
    q = _in(k)
    body = "y[{o0}] = %s * (float)((int32_t)x0[{o0}] - (%d));" % (c_float(qp.scale_of(q)),
                                                                     qp.zero_point_of(q))
    return "elementwise.c.j2", dict(comment=f"dequantize {k.out_size} values",
                                    loops=strided_loops([k.out_size], [[1]], body)), 0


def clamp_activation(k):
    """RELU / RELU6 / RELU_N1_TO_1 (and fused-style clips): rescale input to output LSBs, then clamp."""
    act = dict(k.node.attrs)
    lo, hi = qp.activation_range(act, _outq(k))
    m, sh = qp.rescale(_in(k), _outq(k), in_float32=True)
    return _elementwise(k, "tinyc_sat8(tinyc_requantize(v - (%d), %d, %d) + (%d), %d, %d)"
                        % (qp.zero_point_of(_in(k)), m, sh, qp.zero_point_of(_outq(k)), lo, hi),
                        f"int8 {act['fn']}")


def activation(k):
    fn = k.node.attrs["fn"]
    rule = ACTIVATIONS.get(fn)
    if rule is None:
        raise TinycError(f"node '{k.node.name}': activation '{fn}' has no int8 kernel; run `tinyc ops`")
    return rule(k)


def leaky_relu(k):
    """Two multipliers: identity for v >= 0, alpha for v < 0 (both computed in float32, as TFLite)."""
    f32 = np.float32
    s_in, s_out = f32(qp.scale_of(_in(k))), f32(qp.scale_of(_outq(k)))
    m_a, e_a = qp.multiplier(float(f32(f32(s_in * f32(k.node.attrs["alpha"])) / s_out)))
    m_i, e_i = qp.rescale(_in(k), _outq(k), in_float32=True)
    zi, zo = qp.zero_point_of(_in(k)), qp.zero_point_of(_outq(k))
    return _elementwise(k, "tinyc_sat8((%d) + (v >= %d ? tinyc_requantize(v - (%d), %d, %d) : "
                        "tinyc_requantize(v - (%d), %d, %d)), -128, 127)" % (zo, zi, zi, m_i, e_i, zi, m_a, e_a),
                        "int8 leaky relu")


def _int16_multiplier(m: int) -> int:
    """TFLite's DownScaleInt32ToInt16Multiplier."""
    return 32767 if m >= (1 << 31) - 1 - (1 << 15) else (m + (1 << 15)) >> 16


def hard_swish(k):
    """int16 arithmetic with two down-scaled multipliers (docs/int8-numerics.md 4.13)."""
    f32 = np.float32
    s_in, s_out = f32(qp.scale_of(_in(k))), f32(qp.scale_of(_outq(k)))
    hires = f32(f32(1.0 / 128.0) * s_in)
    reluish = f32(f32(3.0) / f32(32768.0))
    om, oe = qp.multiplier(float(f32(hires / s_out)))
    rm, re = qp.multiplier(float(f32(hires / reluish)))
    if oe > 0:
        raise TinycError(f"node '{k.node.name}': int8 hard-swish needs output scale >= input scale / 128 "
                         "(TFLite requires it)")
    return _elementwise(k, "tinyc_hard_swish(v, %d, %d, %d, %d, %d, %d)" % (
        qp.zero_point_of(_in(k)), _int16_multiplier(om), oe, _int16_multiplier(rm), re, qp.zero_point_of(_outq(k))),
        "int8 hard swish")


def table_activation(k):
    """sigmoid / tanh: a 256-entry table computed at compile time in float32, as TFLite does."""
    fn = k.node.attrs["fn"]
    table = k.table(qp.activation_table(fn, _in(k), _outq(k)), "int8", f"int8 {fn} table")
    return _elementwise(k, "%s[v + 128]" % table, f"int8 {fn} by table")


ACTIVATIONS = {"relu": clamp_activation, "clip": clamp_activation, "leaky_relu": leaky_relu,
               "hard_swish": hard_swish, "sigmoid": table_activation, "tanh": table_activation}


def softmax(k):
    """gemmlowp fixed-point softmax over the last axis (docs/int8-numerics.md 4.9)."""
    shape, axis = k.out_shape, k.node.attrs["axis"]
    if axis != len(shape) - 1:
        raise TinycError(f"node '{k.node.name}': int8 softmax works on the last axis only")
    oq = _outq(k)
    if qp.zero_point_of(oq) != -128 or abs(qp.scale_of(oq) * 256 - 1) > 1e-3:
        raise TinycError(f"node '{k.node.name}': int8 softmax output must have scale 1/256 and zero point -128")
    beta = float(k.node.attrs.get("beta", 1.0))
    real = min(beta * qp.scale_of(_in(k)) * float(1 << 26), float((1 << 31) - 1))
    if not real > 1.0:     # TFLite's PreprocessSoftmaxScaling requires it (its interpreter aborts otherwise)
        raise TinycError(f"node '{k.node.name}': int8 softmax input scale {qp.scale_of(_in(k)):g} x beta {beta:g} is "
                         "below 2^-26, which TFLite's softmax cannot run (its logits span almost nothing); "
                         "recalibrate the model on real data")
    mult, shift = qp.multiplier(real)
    diff_min = -int(np.floor(((1 << 5) - 1) * float(1 << 26) / float(1 << shift)))
    n = shape[-1]
    return "softmax.c.j2", dict(rows=k.out_size // n, n=n, mult=mult, shift=shift, diff_min=diff_min), 0


def mean(k):
    """Sum of raw values minus n * zero point, rescaled by in/out scale divided by n folded into the multiplier
    (TFLite's integer QuantizedMeanOrSum, docs/int8-numerics.md 4.8)."""
    shape = k.in_shape(0)
    axes = sorted(set(k.node.attrs["axes"]))
    n = int(np.prod([shape[a] for a in axes]))
    m, e = qp.rescale(_in(k), _outq(k))
    shift = min(n.bit_length() - 1, 32, 31 + e)
    m2, e2 = (m << shift) // n, e - shift
    zi, zo = qp.zero_point_of(_in(k)), qp.zero_point_of(_outq(k))
    strides = row_major_strides(shape)
    kept = [d for i, d in enumerate(shape) if i not in axes]
    kept_in = [s for i, s in enumerate(strides) if i not in axes]
    reduced = [shape[a] for a in axes]
    reduced_in = [strides[a] for a in axes]
    inner = strided_loops(reduced, [reduced_in], "acc += x0[base + {o0}];", indent="    ", var="r")
    body = ("{{ const int base = {o0};\n    int32_t acc = 0;\n" + inner.replace("{", "{{").replace("}", "}}")
            + "\n    y[{o1}] = tinyc_sat8(tinyc_requantize(acc - (%d), %d, %d) + (%d), -128, 127); }}"
            % (zi * n, m2, e2, zo))
    loops = strided_loops(kept or [1], [kept_in or [0], row_major_strides(kept or [1])], body)
    return "elementwise.c.j2", dict(comment=f"int8 mean of {n} values per output", loops=loops), 0


def same_quant_copy(rule):
    """Data movement (reshape, transpose, concat): bytes move unchanged, so the parameters must agree."""
    def convert(k):
        for i in range(len(k.node.inputs)):
            if not _same_quant(_in(k, i), _outq(k)):
                raise TinycError(f"node '{k.node.name}' ({k.node.op}): input '{k.tensor(i).name}' and output have "
                                 "different quantization parameters, which tinyc does not support here")
        return rule(k)
    return convert


def pad(k):
    if not _same_quant(_in(k), _outq(k)):
        raise TinycError(f"node '{k.node.name}': int8 Pad needs equal input and output quantization")
    value = int(k.node.attrs.get("value", qp.zero_point_of(_outq(k))))
    pads = k.node.attrs["pads"]
    fill = strided_loops([k.out_size], [[1]], "y[{o0}] = %d;" % value)
    place = float_kernels._place(k.in_shape(0), k.out_shape, [b for b, _ in pads], "x0")
    return "elementwise.c.j2", dict(comment=f"int8 pad {k.in_shape(0)} by {tuple(pads)} with {value}",
                                    loops=fill + "\n" + place), 0


KERNELS = {
    "Conv2D": conv2d, "Dense": dense, "MaxPool2D": pool2d, "AvgPool2D": pool2d, "Add": add_sub, "Sub": add_sub,
    "Mul": mul, "Activation": activation, "Softmax": softmax, "Mean": mean, "Quantize": quantize, "Dequantize": dequantize, "Pad": pad,
    "Reshape": same_quant_copy(float_kernels.copy), "Identity": same_quant_copy(float_kernels.copy),
    "Transpose": same_quant_copy(float_kernels.transpose), "Concat": same_quant_copy(float_kernels.concat),
}
