"""ArgMinMax: the index of the largest (kind max) or smallest (kind min) value along one axis, the first one or,
with select_last_index, the last one among equal values; the axis kept as a 1 or dropped. The output is an integer
tensor (int64 or int32). On int8 input the raw values are compared (the scale is positive, so the order is the
real values' order): TFLite's ARG_MAX / ARG_MIN reference kernels do the same, so the result is exact. The int8
rule reads quantized int8 and writes plain int32/int64 indices (`int8_plain_dtypes`).
"""
from __future__ import annotations

import numpy as np

from ..codegen.literals import c_type
from ..errors import TinycError
from .opdef import FLOAT, INTEGERS, OpDef


def evaluate(a, ins):
    x, axis = ins[0], a["axis"]
    pick = np.argmax if a["kind"] == "max" else np.argmin
    if a.get("select_last_index"):
        idx = x.shape[axis] - 1 - pick(np.flip(x, axis=axis), axis=axis)
    else:
        idx = pick(x, axis=axis)
    return np.expand_dims(idx, axis) if a["keepdims"] else idx


def check(g, node):
    a, rank = node.attrs, len(g.tensors[node.inputs[0]].shape)
    if a["kind"] not in ("max", "min") or not 0 <= a["axis"] < rank:
        raise TinycError(f"node '{node.name}': ArgMinMax needs kind max or min and an axis of its rank-{rank} input "
                         f"(got {a['kind']!r}, {a['axis']})")


def kernel(k):
    """Any input and output element type (c_type of the tensors): the same loop for float32 and int8 inputs."""
    a, shape = k.node.attrs, k.in_shape(0)
    axis = a["axis"]
    outer, n, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    cmp = (">" if a["kind"] == "max" else "<") + ("=" if a.get("select_last_index") else "")
    xt, yt = c_type(k.tensor(0).dtype), c_type(k.out.dtype)
    loops = "\n".join([
        f"  for (int o = 0; o < {outer}; ++o) {{",
        f"    for (int i = 0; i < {inner}; ++i) {{",
        f"      const {xt} *in = x0 + o * {n * inner} + i;",
        "      int best = 0;",
        f"      {xt} v = in[0];",
        f"      for (int j = 1; j < {n}; ++j) if (in[j * {inner}] {cmp} v) {{ v = in[j * {inner}]; best = j; }}",
        f"      y[o * {inner} + i] = ({yt})best;",
        "    }",
        "  }"])
    return "elementwise.c.j2", dict(comment=f"arg{a['kind']} over {n} values, {outer} x {inner} times", loops=loops), 0


DEFINITIONS = (OpDef(
    "ArgMinMax", "x  [kind, axis, keepdims, select_last_index?] -> integer indices", evaluate, check, kernel, None,
    kernel, None, memory=None, quantize=None, plain_dtypes=FLOAT + INTEGERS, int8_plain_dtypes=("int32", "int64")),)
