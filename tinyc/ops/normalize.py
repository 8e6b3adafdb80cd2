"""Normalize and LpNormalize: per-row normalizations computed in float.

Normalize: y = (x - mean) / sqrt(var + epsilon) * scale + bias, the mean and the (biased) variance taken over
`axes` for each index of the other axes: ONNX LayerNormalization (axes axis..last), InstanceNormalization
(the spatial axes), GroupNormalization (the spatial axes and the channels of a group, after a free Reshape),
Keras LayerNormalization and GroupNormalization. With center=False nothing is subtracted and var is the mean of
x^2 (RMSNormalization). `scale` and the optional `bias` have x's rank and broadcast to it. The kernel makes three
passes over each row's values: the sum (mean), the sum of squared differences (variance), then the output.

LpNormalize: y = x / ||x||_p along `axis` (p = 1 or 2); with epsilon > 0 the norm is at least epsilon (TFLite's
L2_NORMALIZATION, 1e-6), and a zero norm gives 0 (ONNX LpNormalization's 0 / 0 = 0).

Memory: "elementwise" where each row is one contiguous block (the normalized axes last, schedule/overlap.py
`_rows_in_order`): a row is read whole (its sums), then read and written in index order, element i read just before
y[i] is written, rows in address order, so an output at any lead >= 0 below the input destroys only values already
consumed. Strided rows (over H and W of NHWC) get their own output buffer. The kernels keep that order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codegen.literals import c_float
from ..codegen.loops import broadcast_strides, row_major_strides, strided_loops
from ..errors import TinycError
from ..quant import params as qp
from .int8_common import in_quant, out_quant
from .opdef import OpDef


def evaluate(a, ins):
    x, axes = ins[0].astype(np.float64), tuple(a["axes"])
    d = x - x.mean(axis=axes, keepdims=True) if a["center"] else x
    y = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + a["epsilon"]) * ins[1]
    return y + ins[2] if len(ins) > 2 else y


def check(g, node):
    x = g.tensors[node.inputs[0]]
    rank, axes = len(x.shape), node.attrs["axes"]
    if any(not 0 <= ax < rank for ax in axes) or len(set(axes)) != len(axes):
        raise TinycError(f"node '{node.name}' (Normalize): axes {tuple(axes)} are not distinct axes of a rank-{rank} "
                         "input")
    if not node.attrs["epsilon"] >= 0:
        raise TinycError(f"node '{node.name}' (Normalize): epsilon {node.attrs['epsilon']} is negative")
    for what, name in zip(("scale", "bias"), node.inputs[1:]):
        shape = g.tensors[name].shape
        if len(shape) != rank or any(d not in (1, n) for d, n in zip(shape, x.shape)):
            raise TinycError(f"node '{node.name}' (Normalize): {what} of shape {tuple(shape)} does not broadcast to "
                             f"the input's {tuple(x.shape)} at the same rank")


def _row_loops(k, parts) -> str:
    """Loops over each row (the kept axes) of x0. `parts`, in order, are statements (str) and loop nests over the
    row's values (a one-element list holding the step). In the row, `base`, `sb`, `bb` are its first offsets in
    x0, scale (x1) and bias (x2); a step reads x0[base + {o0}], x1[sb + {o1}], x2[bb + {o2}], writes y[base + {o0}]."""
    shape = k.in_shape(0)
    axes = set(k.node.attrs["axes"])
    operands = [row_major_strides(shape)] + [broadcast_strides(k.in_shape(i), shape)
                                             for i in range(1, len(k.node.inputs))]
    kept, reduced = [i for i in range(len(shape)) if i not in axes], sorted(axes)
    lines = []
    for part in parts:
        if isinstance(part, str):
            lines.append("    " + part)
        else:
            lines.append(strided_loops([shape[i] for i in reduced], [[s[i] for i in reduced] for s in operands],
                                       part[0], indent="    ", var="r"))

    def esc(s):
        return s.replace("{", "{{").replace("}", "}}")
    names = ["base", "sb", "bb"][:len(operands)]
    heads = " ".join(f"const int {n} = {{o{j}}};" for j, n in enumerate(names))
    body = "{{ " + heads + "\n" + esc("\n".join(lines)) + " }}"
    return strided_loops([shape[i] for i in kept] or [1], [[s[i] for i in kept] or [0] for s in operands], body)


def float_kernel(k):
    a = k.node.attrs
    shape = k.in_shape(0)
    count = int(np.prod([shape[i] for i in a["axes"]]))
    n, eps = c_float(float(count)), c_float(float(a["epsilon"]))
    v = "x0[base + {o0}]"
    bias = f" + {k.expr(2)}[bb + {{o2}}]" if k.has_input(2) else ""
    inv = f"const float inv = 1.0f / sqrtf(sq / {n} + {eps});"
    if a["center"]:      # as ONNX's LayerNormalization: D = x - mean, var = mean(D * D), D * (1 / sqrt(var + eps))
        parts = ["float sum = 0.0f;", [f"sum += {v};"], f"const float mean = sum / {n};", "float sq = 0.0f;",
                 [f"{{{{ const float d = {v} - mean; sq += d * d; }}}}"], inv,
                 [f"y[base + {{o0}}] = ({v} - mean) * inv * {k.expr(1)}[sb + {{o1}}]{bias};"]]
    else:
        parts = ["float sq = 0.0f;", [f"sq += {v} * {v};"], inv,
                 [f"y[base + {{o0}}] = {v} * inv * {k.expr(1)}[sb + {{o1}}]{bias};"]]
    what = "mean/variance" if a["center"] else "RMS"
    return "elementwise.c.j2", dict(comment=f"{what} normalization over {count} values per row",
                                    loops=_row_loops(k, parts)), 0


def lp_evaluate(a, ins):
    x, p = ins[0].astype(np.float64), a["p"]
    norm = (np.abs(x) ** p).sum(axis=a["axis"], keepdims=True) ** (1.0 / p)
    if a["epsilon"] > 0:
        norm = np.maximum(norm, a["epsilon"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm == 0, 0.0, x / norm)


def lp_check(g, node):
    rank, a = len(g.tensors[node.inputs[0]].shape), node.attrs
    if not 0 <= a["axis"] < rank:
        raise TinycError(f"node '{node.name}' (LpNormalize): axis {a['axis']} is not an axis of a rank-{rank} input")
    if a["p"] not in (1, 2):
        raise TinycError(f"node '{node.name}' (LpNormalize): p = {a['p']}; tinyc computes the L1 and L2 norms (p = 1 "
                         "or 2), as ONNX defines")


def lp_float_kernel(k):
    a, shape = k.node.attrs, k.out_shape
    axis = a["axis"]
    outer, n, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    return "lp_normalize.c.j2", dict(outer=outer, n=n, inner=inner, p=a["p"],
                                     epsilon=c_float(float(a["epsilon"])) if a["epsilon"] > 0 else None), 0


L2_OUTPUT_QUANT = (1.0 / 128, 0)
L2_MAX_ROW = ((1 << 31) - 1) // (255 * 255)     # TFLite's int32 sum of squared differences cannot overflow


@dataclass(frozen=True)
class L2Params:
    in_zp: int


def lp_int8_prepare(k) -> L2Params:
    """TFLite's L2_NORMALIZATION Prepare (docs/int8-numerics.md 4.37): L2 over the last axis, output 1/128 and 0."""
    a, shape, name = k.node.attrs, k.out_shape, k.node.name
    if a["p"] != 2 or a["axis"] != len(shape) - 1:
        raise TinycError(f"node '{name}': int8 LpNormalize is TFLite's L2_NORMALIZATION (p = 2 over the last axis); "
                         "keep this normalization in float32")
    oq = out_quant(k)
    if (qp.scale_of(oq), qp.zero_point_of(oq)) != L2_OUTPUT_QUANT:
        raise TinycError(f"node '{name}': int8 L2 normalization output must have scale 1/128 and zero point 0 "
                         "(TFLite requires it)")
    if shape[-1] > L2_MAX_ROW:
        raise TinycError(f"node '{name}': int8 L2 normalization of {shape[-1]} values per row; TFLite's int32 sum of "
                         f"squares overflows past {L2_MAX_ROW}, keep it in float32")
    return L2Params(qp.zero_point_of(in_quant(k)))


def lp_int8_kernel(k):
    n = k.out_shape[-1]
    return "lp_normalize.c.j2", dict(rows=k.out_size // n, n=n, in_zp=k.params.in_zp), 0


DEFINITIONS = (
    OpDef("Normalize", "x, scale, bias?  [axes, epsilon, center]", evaluate, check, float_kernel, None, None, None,
          memory="elementwise", quantize=None),
    OpDef("LpNormalize", "x  [axis, p, epsilon]", lp_evaluate, lp_check, lp_float_kernel, lp_int8_prepare,
          lp_int8_kernel, None, memory="elementwise", quantize="fixed", fixed_quant=L2_OUTPUT_QUANT),
)
