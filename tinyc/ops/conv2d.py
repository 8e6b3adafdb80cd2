"""Conv2D: 2-D convolution of one NHWC image, grouped or depthwise, with an optional fused activation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codegen import int8_fast
from ..errors import TinycError
from ..quant import params as qp
from . import hybrid
from .int8_common import bias_expr, in_quant, is_16x8, out_quant, symmetric_weights, weighted_16x8_bias
from .int8_common import int4_weights, int16_activation_range
from .opdef import OpDef


def pad_nhwc(x, pads, value=0.0):
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def evaluate(a, ins):
    """x[N,H,W,C], w[O,KH,KW,C/groups] -> [N,OH,OW,O], in float64 (a hybrid layer: TFLite's hybrid arithmetic)."""
    if a.get("hybrid"):
        return hybrid.evaluate_conv(a, ins)
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    x = pad_nhwc(x.astype(np.float64), a["pads"])
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    sh, sw = a["strides"]
    dh, dw = a["dilations"]
    groups = a["groups"]
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (wd - (kw - 1) * dw - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, oh, ow, o))
    for ky in range(kh):
        for kx in range(kw):
            patch = x[:, ky * dh: ky * dh + (oh - 1) * sh + 1: sh, kx * dw: kx * dw + (ow - 1) * sw + 1: sw, :]
            for g in range(groups):
                out[..., g * og:(g + 1) * og] += patch[..., g * cg:(g + 1) * cg] @ w[g * og:(g + 1) * og, ky, kx, :].T
    if b is not None:
        out += b
    return out


def check_weights(g, n) -> None:
    """Weights, bias and input agree in shape (a corrupt model can break any of them)."""
    if len(n.inputs) < 2:
        return
    x, w = g.tensors[n.inputs[0]].shape, g.tensors[n.inputs[1]].shape
    o = w[0] if w else 0
    if n.op == "Conv2D":
        groups = int(n.attrs.get("groups", 1) or 0)
        ok = len(w) == 4 and len(x) == 4 and groups >= 1 and x[3] == w[3] * groups and o % groups == 0
    else:
        ok = len(w) == 2 and len(x) >= 1 and x[-1] == w[1]
    if not ok:
        raise TinycError(f"{n.op} '{n.name}': weights of shape {w} do not fit its input of shape {x}")
    if len(n.inputs) > 2 and g.tensors[n.inputs[2]].shape != (o,):
        raise TinycError(f"{n.op} '{n.name}': bias of shape {g.tensors[n.inputs[2]].shape} for {o} output "
                         "channels")


def float_kernel(k):
    n, ih, iw, ic = k.in_shape(0)
    _, oh, ow, oc = k.out_shape
    o, kh, kw, cg = k.in_shape(1)
    a = k.node.attrs
    pt, pl, pb, pr = a["pads"]
    groups = a["groups"]
    v = dict(ih=ih, iw=iw, ic=ic, oh=oh, ow=ow, oc=oc, kh=kh, kw=kw, cg=cg, groups=groups, og=oc // groups,
             sh=a["strides"][0], sw=a["strides"][1], dh=a["dilations"][0], dw=a["dilations"][1],
             pt=pt, pl=pl, pb=pb, pr=pr, padded=any(a["pads"]), w=k.weight(1),
             bias=k.expr(2) if len(k.node.inputs) > 2 else None, t=k.scratch)
    template = "depthwise_in_place.c.j2" if k.depthwise_in_place else "conv2d.c.j2"
    return template, v, oh * ow * oc * kh * kw * cg


@dataclass(frozen=True)
class ConvParams:
    """TFLite's OpDataConv: per-channel requantization, zero points and the fused activation's clamp."""
    mults: list
    shifts: list
    in_zp: int
    out_zp: int
    lo: int
    hi: int


def int8_prepare(k) -> ConvParams:
    """Multipliers in_scale * w_scale[c] / out_scale in double (PopulateConvolutionQuantizationParams)."""
    iq, oq = in_quant(k), out_quant(k)
    mults, shifts = qp.conv_multipliers(iq, symmetric_weights(k), oq, k.out_shape[-1])
    lo, hi = int16_activation_range(k, oq) if k.out.dtype == "int16" else \
        qp.activation_range(k.node.attrs.get("activation"), oq)
    return ConvParams(mults, shifts, qp.zero_point_of(iq), qp.zero_point_of(oq), lo, hi)


def requantized(float_rule):
    """The int8 reference rule of a convolution-like op: its float rule's loop nest, with int32 accumulation and
    the per-channel requantization of int8_prepare (ConvParams)."""
    def int8_rule(k):
        template, v, macs = float_rule(k)
        p = k.params
        if is_16x8(k):     # int64 accumulator, int64 bias, no zero points (docs/int16-numerics.md 2)
            if max(p.shifts) > 14:     # the int64 MultiplyByQuantizedMultiplier would shift by a negative amount
                raise TinycError(f"node '{k.node.name}' ({k.node.op}): input scale x weight scale / output scale "
                                 f"is 2^{max(p.shifts)} or more; TFLite's 16x8 requantization takes less than 2^14")
            w = np.abs(k.tensor(1).data.astype(np.int64)).reshape(k.in_shape(1)[0], -1).sum(axis=1)
            v.update(lo=p.lo, hi=p.hi, bias=weighted_16x8_bias(k, w),
                     mult=k.table(p.mults, "int32", "requantization multipliers"),
                     shift=k.table(p.shifts, "int8", "requantization shifts"))
            return template.replace(".c.j2", "_16x8.c.j2"), v, macs
        v.update(in_zp=p.in_zp, out_zp=p.out_zp, lo=p.lo, hi=p.hi, bias=bias_expr(k),
                 mult=k.table(p.mults, "int32", "requantization multipliers"),
                 shift=k.table(p.shifts, "int8", "requantization shifts"))
        v.update(int4_weights(k))      # int4 weights stay packed; the template unpacks them per use
        return template, v, macs
    return int8_rule


int8_kernel = requantized(float_kernel)


DEFINITIONS = (OpDef(
    "Conv2D", "x[N,H,W,C], w[O,KH,KW,C/groups], b[O]?  [strides=(sh,sw), dilations=(dh,dw), "
    "pads=(top,left,bottom,right), groups, activation]; groups == C gives depthwise (O = C*multiplier)",
    evaluate, check_weights, float_kernel, int8_prepare, int8_kernel, int8_fast.conv2d,
    memory="windowed", quantize="own", one_image=True, fuses_activation=True, qdq_rule="weighted",
    int16_activations=True),)
DEFINITIONS = tuple(hybrid.with_hybrid_variant(d) for d in DEFINITIONS)     # float inputs, int8 weights
