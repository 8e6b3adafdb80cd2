"""TFLite's hybrid (dynamic-range) arithmetic: float activations, int8 weights (docs/hybrid-numerics.md).

What `converter.optimizations = [tf.lite.Optimize.DEFAULT]` without a representative dataset makes of
FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D: the weights are int8 (per channel, or per tensor), the activations
float32, and the kernel quantizes its input on the fly — per row (FULLY_CONNECTED) or per image (convolutions),
symmetric or asymmetric —, multiplies int8 by int8 into int32 and rescales in float by input scale x weight scale.

A Dense / Conv2D node with the attribute `hybrid` is such a layer: `{"inputs": "symmetric" | "asymmetric",
"scales": float32 per output channel (the weights' scales, repeated when per tensor), "order": how the float
rescale is grouped, "separate" or "combined"}`; its weights input is the int8 constant, its bias float32.
`evaluate_dense` / `evaluate_conv` are the definition (the ops' `evaluate` calls them), the C rules below compute
the same in the same float32 operations, in the order TFLite's reference kernels use.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..codegen.literals import c_float
from ..errors import TinycError

F32 = np.float32
INPUTS = ("symmetric", "asymmetric")
# The float rescale of the int32 sum: "separate" (acc * s_w[c]) * s_in (CONV_2D with per-channel weights),
# "combined" acc * (s_w[c] * s_in) (FULLY_CONNECTED, DEPTHWISE_CONV_2D, CONV_2D with one weight scale)
ORDERS = ("separate", "combined")


def is_hybrid(node) -> bool:
    return bool(node.attrs.get("hybrid"))


def attrs(inputs: str, scales, order: str) -> dict:
    """The `hybrid` attribute of a layer with these quantized inputs, weight scales and rescale order."""
    if inputs not in INPUTS or order not in ORDERS:
        raise TinycError(f"internal: hybrid inputs '{inputs}' / order '{order}'")
    return {"inputs": inputs, "scales": np.asarray(scales, F32).reshape(-1), "order": order}


# -- the definition ------------------------------------------------------------------------------------------
def _round_away(x) -> np.ndarray:
    """C's roundf / TfLiteRound: halves away from zero (exact in float64 for float32 values)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_symmetric(v) -> tuple[np.ndarray, np.float32, int]:
    """tensor_utils::SymmetricQuantizeFloats: scale = max|v| / 127, q = round(v * (127 / max|v|)) in [-127, 127];
    all zeros: q = 0, scale 1."""
    v = np.asarray(v, F32).reshape(-1)
    r = max(abs(F32(v.min())), abs(F32(v.max())))
    if r == 0:
        return np.zeros(v.size, np.int64), F32(1.0), 0
    inv = F32(F32(127) / r)
    q = np.clip(_round_away((v * inv).astype(F32)), -127, 127).astype(np.int64)
    return q, F32(r / F32(127)), 0


def quantize_asymmetric(v) -> tuple[np.ndarray, np.float32, int]:
    """tensor_utils::AsymmetricQuantizeFloats: the range [min(v, 0), max(v, 0)] (its width in float32) over 255
    steps in double, the zero point from the end with the smaller error (in double), nudged into [-128, 127];
    q = round(zp + v * (1.0 / scale)) in double (TF 2.21 rounds so: measured on 6,924 exact float32 ties). An
    all-zero range: q = 0, scale 1, zero point 0."""
    v = np.asarray(v, F32).reshape(-1)
    lo, hi = min(F32(0), F32(v.min())), max(F32(0), F32(v.max()))
    if lo == hi:
        return np.zeros(v.size, np.int64), F32(1.0), 0
    rmin, rmax = float(lo), float(hi)
    scale = float(F32(hi - lo)) / 255.0
    from_min, from_max = -128.0 - rmin / scale, 127.0 - rmax / scale
    zp = from_min if 128.0 + abs(rmin / scale) < 127.0 + abs(rmax / scale) else from_max
    offset = -128 if zp <= -128.0 else 127 if zp >= 127.0 else int(_round_away(zp))
    s = F32(scale)
    scaled = offset + v.astype(np.float64) * (1.0 / float(s))
    return np.clip(_round_away(scaled), -128, 127).astype(np.int64), s, offset


def _quantize(a: dict, v):
    return (quantize_asymmetric if a["hybrid"]["inputs"] == "asymmetric" else quantize_symmetric)(v)


def evaluate_dense(a: dict, ins) -> np.ndarray:
    """FULLY_CONNECTED hybrid: each row of K inputs quantized on its own; per output channel c
    dot = sum(w[c] * q) - row_sum(w[c]) * zp (in float, as TFLite), y = bias[c] + dot * (s_in * s_w[c])."""
    x, w = np.asarray(ins[0], F32), np.asarray(ins[1]).astype(np.int64)
    bias = np.asarray(ins[2], F32) if len(ins) > 2 else None
    scales = a["hybrid"]["scales"]
    rows = x.reshape(-1, w.shape[1])
    row_sums = w.sum(axis=1).astype(F32)
    out = np.zeros((rows.shape[0], w.shape[0]), F32)
    for r, row in enumerate(rows):
        q, s, zp = _quantize(a, row)
        dot = (w @ q).astype(F32)
        if zp:
            dot = np.trunc((dot - (row_sums * F32(zp)).astype(F32)).astype(F32))
        out[r] = (dot.astype(np.int64).astype(F32) * (F32(s) * scales).astype(F32)).astype(F32)
        if bias is not None:
            out[r] = (out[r] + bias).astype(F32)
    return out.reshape(x.shape[:-1] + (w.shape[0],))


def evaluate_conv(a: dict, ins) -> np.ndarray:
    """CONV_2D / DEPTHWISE_CONV_2D hybrid: each image quantized on its own, padding contributes nothing (TFLite
    skips it), acc = sum(w * (q - zp)) in int32, rescaled in float in the op's order, plus bias."""
    x, w = np.asarray(ins[0], F32), np.asarray(ins[1]).astype(np.int64)
    bias = np.asarray(ins[2], F32) if len(ins) > 2 else None
    h = a["hybrid"]
    t, l, b, r = a["pads"]
    sh, sw = a["strides"]
    dh, dw = a["dilations"]
    groups = a["groups"]
    o, kh, kw, cg = w.shape
    og = o // groups
    outs = []
    for image in x:
        q, s, zp = _quantize(a, image)
        q = np.pad(q.reshape(image.shape) - zp, ((t, b), (l, r), (0, 0)))
        ih, iw, _ = q.shape
        oh, ow = (ih - (kh - 1) * dh - 1) // sh + 1, (iw - (kw - 1) * dw - 1) // sw + 1
        acc = np.zeros((oh, ow, o), np.int64)
        for ky in range(kh):
            for kx in range(kw):
                patch = q[ky * dh: ky * dh + (oh - 1) * sh + 1: sh, kx * dw: kx * dw + (ow - 1) * sw + 1: sw]
                for g in range(groups):
                    acc[..., g * og:(g + 1) * og] += patch[..., g * cg:(g + 1) * cg] @ w[g * og:(g + 1) * og, ky, kx].T
        accf = acc.astype(F32)
        if h["order"] == "separate":
            y = ((accf * h["scales"]).astype(F32) * F32(s)).astype(F32)
        else:
            y = (accf * (h["scales"] * F32(s)).astype(F32)).astype(F32)
        outs.append(y if bias is None else (y + bias).astype(F32))
    return np.stack(outs)


# -- checks, scratch and the C rules -------------------------------------------------------------------------
def check(g, n) -> None:
    """A hybrid layer: constant int8 weights with one scale per output channel, float32 input, output and bias."""
    h = n.attrs["hybrid"]
    w = g.tensors[n.inputs[1]]
    if w.dtype != "int8" or not w.is_const:
        raise TinycError(f"{n.op} '{n.name}': hybrid weights '{w.name}' must be constant int8 (found {w.dtype})")
    if np.asarray(h["scales"]).size != w.shape[0]:
        raise TinycError(f"{n.op} '{n.name}': {np.asarray(h['scales']).size} weight scales for {w.shape[0]} output "
                         "channels")
    for name in [n.inputs[0], n.outputs[0]] + n.inputs[2:]:
        if g.tensors[name].dtype != "float32":
            raise TinycError(f"{n.op} '{n.name}': hybrid layers compute on float32 activations and bias; "
                             f"'{name}' is {g.tensors[name].dtype}")


def work(g, n) -> int:
    """Arena scratch of a hybrid layer: the quantized row (Dense) or image (Conv2D), int8."""
    x = g.tensors[n.inputs[0]]
    if n.op == "Dense":
        return x.shape[-1]
    return x.size // x.shape[0] if len(x.shape) == 4 else x.size


def _scales(k) -> str:
    """The weight scales as a float table (one value inlined when per tensor)."""
    scales = k.node.attrs["hybrid"]["scales"]
    if np.all(scales == scales[0]):
        return f"({c_float(scales[0])})"
    return k.table(scales, "float32", "hybrid weight scales") + "[o]"


def common_vars(k) -> dict:
    """Template variables every hybrid kernel reads; `scale` is the weight scale of channel `o`, `scale_at(i)` of
    channel i."""
    h = k.node.attrs["hybrid"]
    scale = _scales(k)
    scale_at = (lambda i: scale) if not scale.endswith("[o]") else (lambda i: f"{scale[:-3]}[{i}]")
    asymmetric = h["inputs"] == "asymmetric"
    return dict(asymmetric=asymmetric, w=k.expr(1), scale=scale, scale_at=scale_at,
                bias=k.expr(2) if k.has_input(2) else None, q=k.work)


def dense_kernel(k):
    kdim = k.in_shape(0)[-1]
    o = k.in_shape(1)[0]
    rows = k.in_size(0) // kdim
    v = dict(common_vars(k), rows=rows, k=kdim, o=o)
    if v["asymmetric"]:
        sums = k.tensor(1).data.astype(np.int64).sum(axis=1)
        v["row_sums"] = k.table(sums, "int32", "hybrid weight row sums")
    return "dense.c.j2", v, rows * kdim * o


def conv_kernel(k):
    _, ih, iw, ic = k.in_shape(0)
    _, oh, ow, oc = k.out_shape
    o, kh, kw, cg = k.in_shape(1)
    a = k.node.attrs
    pt, pl, _, _ = a["pads"]
    v = dict(common_vars(k), ih=ih, iw=iw, ic=ic, oh=oh, ow=ow, oc=oc, kh=kh, kw=kw, cg=cg, og=oc // a["groups"],
             sh=a["strides"][0], sw=a["strides"][1], dh=a["dilations"][0], dw=a["dilations"][1], pt=pt, pl=pl,
             order=a["hybrid"]["order"])
    return "conv2d.c.j2", v, oh * ow * oc * kh * kw * cg


def with_hybrid_variant(definition):
    """The definition of Dense / Conv2D with its hybrid variant: hybrid nodes are checked here and get their
    quantized-input scratch (OpDef.work); other nodes keep the op's own check and scratch."""
    own_check, own_work = definition.check, definition.work

    def checked(g, n):
        if own_check is not None:
            own_check(g, n)
        if is_hybrid(n):
            check(g, n)

    def scratch(g, n):
        return work(g, n) if is_hybrid(n) else (own_work(g, n) if own_work is not None else 0)
    return replace(definition, check=checked, work=scratch)


HYBRID_KERNELS = {"Dense": dense_kernel, "Conv2D": conv_kernel}     # codegen's 'hybrid' family (templates/hybrid/)
