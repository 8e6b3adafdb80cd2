"""ConvTranspose2D: transposed 2-D convolution of NHWC images (the gradient of Conv2D with respect to its
input), grouped, with strides, dilations, a crop (or extension) of the full output, and an optional fused
activation.

Input pixel (iy, ix) adds x[iy, ix, :] . w[o, ky, kx, :] to the output pixel whose full-output coordinates are
(iy * sh + ky * dh, ix * sw + kx * dw); the output is the full output of (ih - 1) * sh + (kh - 1) * dh + 1 rows
starting at row `top` (likewise columns), so `pads` (top, left, bottom, right) crop it, and a negative pad
extends it with rows only the bias reaches (ONNX output_padding / output_shape). The kernels gather: each output
pixel sums over the taps whose input pixel exists, in integers for int8 (TFLite's reference kernel scatters into
int32; the integer sums are the same). docs/int8-numerics.md §4.35 has the int8 arithmetic.
"""
from __future__ import annotations

import numpy as np

from ..codegen import int8_fast
from ..errors import TinycError
from .conv2d import int8_prepare, requantized
from .opdef import OpDef


def full_size(size: int, k: int, s: int, d: int) -> int:
    """Rows (or columns) of the uncropped output."""
    return (size - 1) * s + (k - 1) * d + 1


def out_size(size: int, k: int, s: int, d: int, begin: int, end: int) -> int:
    return full_size(size, k, s, d) - begin - end


def evaluate(a, ins):
    """x[N,H,W,C], w[O,KH,KW,C/groups] -> [N,OH,OW,O], in float64: scatter into the full output, then crop."""
    x, w = ins[0].astype(np.float64), ins[1]
    b = ins[2] if len(ins) > 2 else None
    n, ih, iw, _ = x.shape
    o, kh, kw, cg = w.shape
    (sh, sw), (dh, dw), groups = a["strides"], a["dilations"], a["groups"]
    top, left, bottom, right = a["pads"]
    fh, fw = full_size(ih, kh, sh, dh), full_size(iw, kw, sw, dw)
    og = o // groups
    full = np.zeros((n, fh, fw, o))
    for ky in range(kh):
        for kx in range(kw):
            rows = slice(ky * dh, ky * dh + (ih - 1) * sh + 1, sh)
            cols = slice(kx * dw, kx * dw + (iw - 1) * sw + 1, sw)
            for g in range(groups):
                full[:, rows, cols, g * og:(g + 1) * og] += x[..., g * cg:(g + 1) * cg] @ w[g * og:(g + 1) * og, ky,
                                                                                              kx, :].T
    oh, ow = fh - top - bottom, fw - left - right
    out = np.zeros((n, oh, ow, o))
    # the part of the output inside the full output (negative pads: rows and columns beyond it stay 0)
    y0, y1, x0, x1 = max(0, -top), min(oh, fh - top), max(0, -left), min(ow, fw - left)
    if y0 < y1 and x0 < x1:
        out[:, y0:y1, x0:x1] = full[:, y0 + top:y1 + top, x0 + left:x1 + left]
    if b is not None:
        out += b
    return out


def check(g, n) -> None:
    """Weights, bias, attributes and output agree (a corrupt model can break any of them)."""
    x, w, y = (g.tensors[t].shape for t in (n.inputs[0], n.inputs[1], n.outputs[0]))
    a = n.attrs
    groups = int(a.get("groups", 1) or 0)
    strides, dilations, pads = (tuple(a.get(k, ())) for k in ("strides", "dilations", "pads"))
    ok = (len(x) == 4 and len(w) == 4 and groups >= 1 and x[3] == w[3] * groups and w[0] % groups == 0
          and len(strides) == len(dilations) == 2 and len(pads) == 4 and min(strides + dilations) >= 1)
    if ok:
        sizes = tuple(out_size(x[1 + i], w[1 + i], strides[i], dilations[i], pads[i], pads[2 + i]) for i in range(2))
        ok = tuple(y) == (x[0],) + sizes + (w[0],) and min(sizes) >= 1
    if not ok:
        raise TinycError(f"ConvTranspose2D '{n.name}': weights {w}, groups {groups}, strides {strides}, dilations "
                         f"{dilations} and pads {pads} do not take input {x} to output {y}")
    if len(n.inputs) > 2 and g.tensors[n.inputs[2]].shape != (w[0],):
        raise TinycError(f"ConvTranspose2D '{n.name}': bias of shape {g.tensors[n.inputs[2]].shape} for {w[0]} "
                         "output channels")


def taps_hit(size: int, k: int, s: int, d: int, begin: int, out: int) -> int:
    """(input position, tap) pairs along one axis that land inside the output: the MACs' factor for that axis."""
    return sum(1 for t in range(k) for i in range(size) if 0 <= i * s + t * d - begin < out)


def _offset(name: str, v: int) -> str:
    return f"{name} + {v}" if v > 0 else (f"{name} - {-v}" if v < 0 else name)


def float_kernel(k):
    batch, ih, iw, ic = k.in_shape(0)
    _, oh, ow, oc = k.out_shape
    _, kh, kw, cg = k.in_shape(1)
    a = k.node.attrs
    (sh, sw), (dh, dw), groups = a["strides"], a["dilations"], a["groups"]
    top, left = a["pads"][0], a["pads"][1]
    v = dict(batch=batch, ih=ih, iw=iw, ic=ic, oh=oh, ow=ow, oc=oc, kh=kh, kw=kw, cg=cg, groups=groups, og=oc // groups,
             sh=sh, sw=sw, dh=dh, dw=dw, pads=tuple(a["pads"]), ty=_offset("oy", top), tx=_offset("ox", left),
             w=k.weight(1), bias=k.expr(2) if len(k.node.inputs) > 2 else None)
    macs = batch * taps_hit(ih, kh, sh, dh, top, oh) * taps_hit(iw, kw, sw, dw, left, ow) * cg * oc
    return "conv_transpose.c.j2", v, macs


int8_kernel = requantized(float_kernel)


DEFINITIONS = (OpDef(
    "ConvTranspose2D", "x[N,H,W,C], w[O,KH,KW,C/groups], b[O]?  [strides=(sh,sw), dilations=(dh,dw), "
    "pads=(top,left,bottom,right) cropped from the full output (negative: extended), groups, activation]",
    evaluate, check, float_kernel, int8_prepare, int8_kernel, int8_fast.conv_transpose,
    memory=None, quantize="own", fuses_activation=True, int16_activations=True),)
