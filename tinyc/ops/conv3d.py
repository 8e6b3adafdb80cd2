"""Conv3D: 3-D convolution of NDHWC volumes, grouped, with strides, dilations, padding and an optional fused
activation (float32; TFLite's CONV_3D has no int8 kernel either)."""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import TinycError
from .opdef import OpDef
from .pool3d import flat_index, out_size, window_loops


def evaluate(a, ins):
    """x[N,D,H,W,C], w[O,KD,KH,KW,C/groups] -> [N,OD,OH,OW,O], in float64."""
    x, w = ins[0].astype(np.float64), ins[1]
    b = ins[2] if len(ins) > 2 else None
    pads, strides, dilations, groups = a["pads"], a["strides"], a["dilations"], a["groups"]
    kernel, cg, o = w.shape[1:4], w.shape[4], w.shape[0]
    xp = np.pad(x, [(0, 0)] + list(zip(pads[:3], pads[3:])) + [(0, 0)])
    sizes = [out_size(x.shape[1 + i], kernel[i], strides[i], dilations[i], pads[i], pads[3 + i]) for i in range(3)]
    og = o // groups
    out = np.zeros((x.shape[0], *sizes, o))
    for tap in itertools.product(*(range(k) for k in kernel)):
        window = (slice(None),) + tuple(slice(t * d, t * d + (n - 1) * s + 1, s)
                                        for t, d, n, s in zip(tap, dilations, sizes, strides)) + (slice(None),)
        patch = xp[window]
        for g in range(groups):
            out[..., g * og:(g + 1) * og] += patch[..., g * cg:(g + 1) * cg] @ w[(slice(g * og, (g + 1) * og),) + tap].T
    if b is not None:
        out += b
    return out


def check(g, n) -> None:
    """Weights, bias, attributes and output agree (a corrupt model can break any of them)."""
    x, w, y = (g.tensors[t].shape for t in (n.inputs[0], n.inputs[1], n.outputs[0]))
    a = n.attrs
    groups = int(a.get("groups", 1) or 0)
    strides, dilations, pads = (tuple(a.get(k, ())) for k in ("strides", "dilations", "pads"))
    ok = (len(x) == 5 and len(w) == 5 and groups >= 1 and x[4] == w[4] * groups and w[0] % groups == 0
          and len(strides) == len(dilations) == 3 and len(pads) == 6 and min(strides + dilations) >= 1
          and min(pads) >= 0)
    if ok:
        sizes = tuple(out_size(x[1 + i], w[1 + i], strides[i], dilations[i], pads[i], pads[3 + i]) for i in range(3))
        ok = tuple(y) == (x[0],) + sizes + (w[0],) and min(sizes) >= 1
    if not ok:
        raise TinycError(f"Conv3D '{n.name}': weights {w}, groups {groups}, strides {strides}, dilations "
                         f"{dilations} and pads {pads} do not take input {x} to output {y}")
    if len(n.inputs) > 2 and g.tensors[n.inputs[2]].shape != (w[0],):
        raise TinycError(f"Conv3D '{n.name}': bias of shape {g.tensors[n.inputs[2]].shape} for {w[0]} output "
                         "channels")


def float_kernel(k):
    a = k.node.attrs
    x, y, w = k.in_shape(0), k.out_shape, k.in_shape(1)
    strides, dilations, pads, groups = tuple(a["strides"]), tuple(a["dilations"]), tuple(a["pads"]), a["groups"]
    v = window_loops(x, y, w[1:4], strides, dilations, pads, x[0])
    v.update(ic=x[4], oc=y[4], cg=w[4], groups=groups, og=y[4] // groups, taps=int(np.prod(w[1:4])) * w[4],
             w=k.expr(1), bias=k.expr(2) if len(k.node.inputs) > 2 else None,
             tap_index=flat_index([ax["k"] for ax in v["axes"]], list(w[1:4])))
    return "conv3d.c.j2", v, x[0] * int(np.prod(y[1:])) * v["taps"]


DEFINITIONS = (OpDef(
    "Conv3D", "x[N,D,H,W,C], w[O,KD,KH,KW,C/groups], b[O]?  [strides=(sd,sh,sw), dilations=(dd,dh,dw), "
    "pads=(front,top,left,back,bottom,right), groups, activation]",
    evaluate, check, float_kernel, None, None, None, memory=None, quantize=None, fuses_activation=True),)
