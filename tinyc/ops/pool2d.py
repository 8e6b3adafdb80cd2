"""MaxPool2D, AvgPool2D: pooling windows over one NHWC image."""
from __future__ import annotations

import numpy as np

from ..codegen import int8_fast_misc
from ..errors import TinycError
from ..quant import params as qp
from .conv2d import pad_nhwc
from .int8_common import in_quant, out_quant
from .opdef import OpDef


def pool2d(x, kind, kernel, strides, pads, count_include_pad=False):
    n, h, wd, c = x.shape
    kh, kw = kernel
    sh, sw = strides
    t, l, bo, r = pads
    fill = -np.inf if kind == "max" else 0.0
    xp = pad_nhwc(x.astype(np.float64), pads, fill)
    ones = pad_nhwc(np.ones((1, h, wd, 1)), pads, 0.0)
    oh = (h + t + bo - kh) // sh + 1
    ow = (wd + l + r - kw) // sw + 1
    out = np.zeros((n, oh, ow, c))
    for y in range(oh):
        for xx in range(ow):
            win = xp[:, y * sh: y * sh + kh, xx * sw: xx * sw + kw, :]
            if kind == "max":
                out[:, y, xx, :] = win.max(axis=(1, 2))
            else:
                cnt = kh * kw if count_include_pad else ones[:, y * sh: y * sh + kh, xx * sw: xx * sw + kw, :].sum()
                out[:, y, xx, :] = win.sum(axis=(1, 2)) / cnt
    return out


def evaluator(kind):
    return lambda a, ins: pool2d(ins[0], kind, a["kernel"], a["strides"], a["pads"],
                                 a.get("count_include_pad", False))


def float_kernel(k):
    _, ih, iw, c = k.in_shape(0)
    _, oh, ow, _ = k.out_shape
    a = k.node.attrs
    pt, pl, pb, pr = a["pads"]
    v = dict(kind="max" if k.node.op == "MaxPool2D" else "avg", ih=ih, iw=iw, c=c, oh=oh, ow=ow,
             kh=a["kernel"][0], kw=a["kernel"][1], sh=a["strides"][0], sw=a["strides"][1],
             pt=pt, pl=pl, pb=pb, pr=pr, count_include_pad=a.get("count_include_pad", False))
    return "pool2d.c.j2", v, 0


def int8_prepare(k) -> dict:
    """The window geometry and the output clamp; TFLite's checks (same parameters in and out)."""
    _, v, _ = float_kernel(k)
    if (qp.scale_of(in_quant(k)), qp.zero_point_of(in_quant(k))) != (qp.scale_of(out_quant(k)),
                                                                    qp.zero_point_of(out_quant(k))):
        raise TinycError(f"node '{k.node.name}': int8 pooling needs the same scale and zero point on input and "
                         "output (TFLite requires it)")
    if v["kind"] == "avg" and v["count_include_pad"] and any((v["pt"], v["pl"], v["pb"], v["pr"])):
        raise TinycError(f"node '{k.node.name}': int8 average pooling that counts padded cells is not supported")
    v["lo"], v["hi"] = qp.activation_range(k.node.attrs.get("activation"), out_quant(k))
    return v


def int8_kernel(k):
    return "pool2d.c.j2", dict(k.params), 0


SIGNATURE = "x[N,H,W,C]  [kernel=(kh,kw), strides, pads=(t,l,b,r), count_include_pad (avg only)]"
DEFINITIONS = (
    OpDef("MaxPool2D", SIGNATURE, evaluator("max"), None, float_kernel, int8_prepare, int8_kernel,
          int8_fast_misc.pool2d, memory="windowed", quantize="shared", one_image=True, qdq_rule="pool"),
    OpDef("AvgPool2D", SIGNATURE, evaluator("avg"), None, float_kernel, int8_prepare, int8_kernel,
          int8_fast_misc.pool2d, memory="windowed", quantize="shared", one_image=True, qdq_rule="pool"),
)
