"""Fast kernels of hybrid layers (float activations, int8 weights; tinyc/ops/hybrid.py): the int8 x int8 products
on the DSP extension's SMLAD (the int8 LSTM's machinery, codegen/int8_smlad.py), the quantization and the float
rescale as the reference kernel (templates/hybrid/) does them. The sums are exact integers, so the outputs equal
the reference kernel's bit for bit, on the DSP path and on the plain path (Cortex-M0+).

FULLY_CONNECTED: each quantized row is sign-extended once into halfword pairs, four weight rows at a time take
two SMLAD per four columns. CONV_2D (not depthwise): per output pixel the window of the quantized image is copied
into a column (positions outside the image get the zero point, so they add w * 0 after the correction, as TFLite
skips them), then the same products; acc = sum(w * col) - zp * row_sum(w), exact. A 1x1 convolution with stride 1
and no padding reads the pixel's channels in place.

The weights are re-laid out as rows of their first multiple of four columns plus a tail table: one copy in flash,
which both paths read. Scratch (after the op's quantized input, OpDef.work): the column and the pairs.
"""
from __future__ import annotations

import numpy as np

from ..ops import hybrid
from ..schedule.buffers import align
from . import int8_smlad
from .int8_fast import scratch_level


def _k4(kdim: int) -> int:
    return kdim // 4 * 4


def _window(g, node) -> tuple[int, bool]:
    """(values per window, whether a window is the pixel's channels in place: 1x1, stride 1, no padding)."""
    _, kh, kw, cg = g.tensors[node.inputs[1]].shape
    a = node.attrs
    in_place = (kh, kw) == (1, 1) and tuple(a["strides"]) == (1, 1) and not any(a["pads"])
    return kh * kw * cg, in_place


def applies(g, node) -> bool:
    """Dense, and Conv2D that is not grouped (depthwise keeps its reference kernel)."""
    if not hybrid.is_hybrid(node):
        return False
    return node.op == "Dense" or (node.op == "Conv2D" and node.attrs["groups"] == 1)


def work_bytes(g, node) -> int:
    """The fast kernel's scratch after the quantized input: the window column (Conv2D) and the expanded pairs."""
    if not applies(g, node):
        return 0
    if node.op == "Dense":
        return 2 * _k4(g.tensors[node.inputs[1]].shape[1])
    kdim, in_place = _window(g, node)
    return (0 if in_place else align(kdim)) + 2 * _k4(kdim)


def _common(k, kdim: int) -> dict:
    v = hybrid.common_vars(k)
    w = k.tensor(1).data.reshape(k.in_shape(1)[0], kdim)
    head, tail, k4 = int8_smlad.split_rows(k, w, f"hybrid {k.node.op} weights")
    q_bytes = align(hybrid.work(k.plan.graph, k.node))
    v.update(head=head, tail=tail, k=kdim, k4=k4, o=w.shape[0], q_bytes=q_bytes,
             row_sums=k.table(w.astype(np.int64).sum(axis=1), "int32", "hybrid weight row sums"))
    return v


def _takes(k) -> bool:
    """The fast kernel applies and the plan gave it its scratch (codegen/scratch_fit.py may have taken it away)."""
    return applies(k.plan.graph, k.node) and k.work is not None and scratch_level(k.node) != "none"


def dense(k):
    if not _takes(k):
        return None
    kdim = k.in_shape(0)[-1]
    v = _common(k, kdim)
    rows = k.in_size(0) // kdim
    v.update(rows=rows, pairs_at=v["q_bytes"])
    return "dense.c.j2", v, rows * kdim * v["o"]


def conv2d(k):
    if not _takes(k):
        return None
    g = k.plan.graph
    kdim, in_place = _window(g, k.node)
    v = _common(k, kdim)
    _, ih, iw, ic = k.in_shape(0)
    _, oh, ow, _ = k.out_shape
    _, kh, kw, _ = k.in_shape(1)
    a = k.node.attrs
    col_bytes = 0 if in_place else align(kdim)
    v.update(ih=ih, iw=iw, ic=ic, oh=oh, ow=ow, kh=kh, kw=kw, sh=a["strides"][0], sw=a["strides"][1],
             dh=a["dilations"][0], dw=a["dilations"][1], pt=a["pads"][0], pl=a["pads"][1], in_place=in_place,
             col_at=v["q_bytes"], pairs_at=v["q_bytes"] + col_bytes, order=a["hybrid"]["order"])
    return "conv2d.c.j2", v, oh * ow * v["o"] * kdim


HYBRID_FAST = {"Dense": dense, "Conv2D": conv2d}     # codegen's 'hybrid_fast' family (templates/hybrid_fast/)
