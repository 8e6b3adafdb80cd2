"""float32 kernel rules: IR op -> (template, variables, MACs). One function per op, registered in KERNELS.

Every shape, stride and constant is baked into the generated function. `k` is a `KernelContext`
(see emit.py): input/output shapes, C expressions for the inputs, the fused activation.
"""
from __future__ import annotations

import numpy as np

from .literals import c_float
from .loops import broadcast_strides, row_major_strides, strided_loops


def conv2d(k):
    n, ih, iw, ic = k.in_shape(0)
    _, oh, ow, oc = k.out_shape
    o, kh, kw, cg = k.in_shape(1)
    a = k.node.attrs
    pt, pl, pb, pr = a["pads"]
    groups = a["groups"]
    v = dict(ih=ih, iw=iw, ic=ic, oh=oh, ow=ow, oc=oc, kh=kh, kw=kw, cg=cg, groups=groups, og=oc // groups,
             sh=a["strides"][0], sw=a["strides"][1], dh=a["dilations"][0], dw=a["dilations"][1],
             pt=pt, pl=pl, pb=pb, pr=pr, padded=any(a["pads"]), w=k.expr(1),
             bias=k.expr(2) if len(k.node.inputs) > 2 else None, t=k.scratch)
    template = "depthwise_in_place.c.j2" if k.depthwise_in_place else "conv2d.c.j2"
    return template, v, oh * ow * oc * kh * kw * cg


def dense(k):
    kdim = k.in_shape(0)[-1]
    o = k.in_shape(1)[0]
    rows = k.in_size(0) // kdim
    v = dict(rows=rows, k=kdim, o=o, w=k.expr(1), bias=k.expr(2) if len(k.node.inputs) > 2 else None)
    return "dense.c.j2", v, rows * kdim * o


def binary(k):
    sym = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}[k.node.op]
    out = k.out_shape
    strides = [row_major_strides(out), broadcast_strides(k.in_shape(0), out), broadcast_strides(k.in_shape(1), out)]
    # Doubled braces survive strided_loops' str.format; {o0}.. become the operands' offsets.
    body = "{{ const float v = %s[{o1}] %s %s[{o2}]; y[{o0}] = %s; }}" % (k.expr(0), sym, k.expr(1), k.act("v"))
    return "elementwise.c.j2", dict(comment=f"{k.node.op} {k.in_shape(0)} {sym} {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


def activation(k):
    fn = {key: val for key, val in k.node.attrs.items()}
    body = "{{ const float v = x0[{o0}]; y[{o0}] = %s; }}" % k.act("v", fn)
    return "elementwise.c.j2", dict(comment=f"{fn['fn']} on {k.out_size} values",
                                    loops=strided_loops([k.out_size], [[1]], body)), 0


def scale_shift(k):
    c = k.out_shape[-1]
    body = "y[{o0}] = x0[{o0}] * %s[{o1}] + %s[{o1}];" % (k.expr(1), k.expr(2))
    shape = [k.out_size // c, c]
    return "elementwise.c.j2", dict(comment=f"per-channel scale and shift, {c} channels",
                                    loops=strided_loops(shape, [[c, 1], [0, 1]], body)), 0


def softmax(k):
    shape, axis = k.out_shape, k.node.attrs["axis"]
    v = dict(outer=int(np.prod(shape[:axis])), n=shape[axis], inner=int(np.prod(shape[axis + 1:])))
    return "softmax.c.j2", v, 0


def pool2d(k):
    _, ih, iw, c = k.in_shape(0)
    _, oh, ow, _ = k.out_shape
    a = k.node.attrs
    pt, pl, pb, pr = a["pads"]
    v = dict(kind="max" if k.node.op == "MaxPool2D" else "avg", ih=ih, iw=iw, c=c, oh=oh, ow=ow,
             kh=a["kernel"][0], kw=a["kernel"][1], sh=a["strides"][0], sw=a["strides"][1],
             pt=pt, pl=pl, pb=pb, pr=pr, count_include_pad=a.get("count_include_pad", False))
    return "pool2d.c.j2", v, 0


def mean(k):
    shape = k.in_shape(0)
    axes = set(k.node.attrs["axes"])
    count = int(np.prod([shape[i] for i in axes]))
    kept = [1 if i in axes else d for i, d in enumerate(shape)]
    out_strides = [0 if i in axes else s for i, s in enumerate(row_major_strides(kept))]
    loops = strided_loops(shape, [row_major_strides(shape), out_strides], "y[{o1}] += x0[{o0}];")
    return "mean.c.j2", dict(out_size=k.out_size, count=count, loops=loops, scale=c_float(1.0 / count)), 0


def copy(k):
    """Reshape / Identity that could not share storage with its input."""
    return "elementwise.c.j2", dict(comment=f"copy {k.out_size} values",
                                    loops=strided_loops([k.out_size], [[1]], "y[{o0}] = x0[{o0}];")), 0


def transpose(k):
    src = k.in_shape(0)
    perm = k.node.attrs["perm"]
    in_strides = row_major_strides(src)
    strides = [row_major_strides(k.out_shape), [in_strides[p] for p in perm]]
    return "elementwise.c.j2", dict(comment=f"transpose {src} by {tuple(perm)}",
                                    loops=strided_loops(k.out_shape, strides, "y[{o0}] = x0[{o1}];")), 0


def _place(src_shape, out_shape, begin, src_expr):
    """Loops copying a whole `src_shape` block into `out_shape` at corner `begin`."""
    full = _dense_strides(out_shape)
    base = sum(b * s for b, s in zip(begin, full))
    body = "y[%d + {o1}] = %s[{o0}];" % (base, src_expr) if base else "y[{o1}] = %s[{o0}];" % src_expr
    return strided_loops(src_shape, [row_major_strides(src_shape),
                                     [s if d != 1 else 0 for s, d in zip(full, src_shape)]], body)


def _dense_strides(shape):
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return list(reversed(strides))


def pad(k):
    pads = k.node.attrs["pads"]
    fill = strided_loops([k.out_size], [[1]], "y[{o0}] = %s;" % c_float(k.node.attrs.get("value", 0.0)))
    place = _place(k.in_shape(0), k.out_shape, [b for b, _ in pads], "x0")
    return "elementwise.c.j2", dict(comment=f"pad {k.in_shape(0)} by {tuple(pads)}", loops=fill + "\n" + place), 0


def concat(k):
    axis = k.node.attrs["axis"]
    parts, at = [], 0
    for i in range(len(k.node.inputs)):
        begin = [0] * len(k.out_shape)
        begin[axis] = at
        parts.append(_place(k.in_shape(i), k.out_shape, begin, k.expr(i)))
        at += k.in_shape(i)[axis]
    return "elementwise.c.j2", dict(comment=f"concatenate {len(parts)} tensors on axis {axis}",
                                    loops="\n".join(parts)), 0


KERNELS = {
    "Conv2D": conv2d, "Dense": dense, "Add": binary, "Sub": binary, "Mul": binary, "Div": binary,
    "Activation": activation, "ScaleShift": scale_shift, "Softmax": softmax, "MaxPool2D": pool2d,
    "AvgPool2D": pool2d, "Mean": mean, "Reshape": copy, "Identity": copy, "Transpose": transpose,
    "Pad": pad, "Concat": concat,
}
