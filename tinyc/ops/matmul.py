"""MatMul: the matrix product of two computed tensors, a[..., M, K] @ b[..., K, N] -> [..., M, N], the leading
(batch) axes broadcast NumPy-style. (A product with a constant right operand is a Dense, with its fast kernels.)"""
from __future__ import annotations

import numpy as np

from ..codegen.loops import broadcast_strides, row_major_strides, strided_loops
from ..errors import TinycError
from .opdef import OpDef


def evaluate(a, ins):
    return np.matmul(ins[0].astype(np.float64), ins[1].astype(np.float64))


def check(g, n) -> None:
    a, b, y = (g.tensors[t].shape for t in (n.inputs[0], n.inputs[1], n.outputs[0]))
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        raise TinycError(f"MatMul '{n.name}': operands {tuple(a)} and {tuple(b)} do not multiply (IR operands are "
                         "at least 2-D with a[-1] == b[-2])")
    try:
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    except ValueError:
        raise TinycError(f"MatMul '{n.name}': batch axes {tuple(a[:-2])} and {tuple(b[:-2])} do not broadcast")
    if tuple(y) != tuple(batch) + (a[-2], b[-1]):
        raise TinycError(f"MatMul '{n.name}': output {tuple(y)} is not {tuple(batch) + (a[-2], b[-1])}")


def float_kernel(k):
    a, b, y = k.in_shape(0), k.in_shape(1), k.out_shape
    m, kk, n = a[-2], a[-1], b[-1]
    batch = list(y[:-2]) or [1]
    strides = [[s * m * n for s in row_major_strides(batch)],
               [s * m * kk for s in broadcast_strides(a[:-2], batch)] if len(a) > 2 else [0] * len(batch),
               [s * kk * n for s in broadcast_strides(b[:-2], batch)] if len(b) > 2 else [0] * len(batch)]
    body = ("{{ const float *pa = %s + {o1}; const float *pb = %s + {o2}; float *py = y + {o0};\n"
            "    for (int m = 0; m < %d; ++m) {{\n"
            "      for (int n = 0; n < %d; ++n) {{\n"
            "        float acc = 0.0f;\n"
            "        for (int k = 0; k < %d; ++k) acc += pa[m * %d + k] * pb[k * %d + n];\n"
            "        py[m * %d + n] = acc;\n"
            "      }}\n"
            "    }} }}" % (k.expr(0), k.expr(1), m, n, kk, kk, n, n))
    macs = int(np.prod(batch)) * m * n * kk
    return "elementwise.c.j2", dict(comment=f"matmul {tuple(a)} @ {tuple(b)} -> {tuple(y)}",
                                    loops=strided_loops(batch, strides, body)), macs


DEFINITIONS = (OpDef(
    "MatMul", "a[..., M, K], b[..., K, N] -> [..., M, N]  (batch axes broadcast)", evaluate, check, float_kernel,
    None, None, None, memory=None, quantize=None),)
