"""Gather and GatherElements: values of x picked by integer indices (negative ones count from the end).

- Gather: y = numpy.take(x, indices, axis): every index picks a whole slice x[..., i, ...] along `axis`, so the
  output's shape is x.shape[:axis] + indices.shape + x.shape[axis + 1:] (ONNX Gather, TFLite GATHER).
- GatherElements: y[p] = x[p with p[axis] replaced by indices[p]], the output shaped like indices
  (ONNX GatherElements, numpy.take_along_axis).

The indices are constants, held in the attribute `indices` (an integer array, checked against the axis' size
at compile time); the kernels copy values of any element type (float32, int8: bytes move unchanged). Runtime
indices (an embedding lookup into a constant table) need integer runtime tensors, which tinyc does not have
yet: the frontends refuse them in one line; they would be the node's second input.
"""
from __future__ import annotations

import numpy as np

from ..codegen.loops import dense_strides, strided_loops
from ..errors import TinycError
from .int8_common import same_quant_copy
from .opdef import ALL_DTYPES, OpDef


def _normalized(indices, size):
    idx = np.asarray(indices).astype(np.int64)
    return np.where(idx < 0, idx + size, idx)


def evaluate_gather(a, ins):
    x = ins[0]
    return np.take(x, _normalized(a["indices"], x.shape[a["axis"]]), axis=a["axis"])


def evaluate_elements(a, ins):
    x, idx, axis = ins[0], np.asarray(a["indices"]), a["axis"]
    # the indices may be smaller than x on the other axes: they read its leading corner (no broadcasting)
    corner = x[tuple(slice(None) if j == axis else slice(0, n) for j, n in enumerate(idx.shape))]
    return np.take_along_axis(corner, _normalized(idx, x.shape[axis]), axis=axis)


def check(g, n) -> None:
    x = g.tensors[n.inputs[0]]
    idx = np.asarray(n.attrs["indices"])
    axis = n.attrs["axis"]
    if len(n.inputs) != 1:
        raise TinycError(f"{n.op} '{n.name}' reads its indices at run time; tinyc needs constant indices "
                         "(runtime integer tensors are not supported yet)")
    if not 0 <= axis < len(x.shape) or idx.dtype.kind not in "iu":
        raise TinycError(f"internal: {n.op} '{n.name}' has axis {axis} and {idx.dtype} indices for input "
                         f"{x.shape}; report this model")
    size = x.shape[axis]
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise TinycError(f"{n.op} '{n.name}': indices {idx.ravel()[:8].tolist()} go outside the {size} "
                         f"values of axis {axis} of '{x.name}' {x.shape}; the model is invalid")
    if n.op == "GatherElements" and (idx.ndim != len(x.shape) or any(
            i > d for j, (i, d) in enumerate(zip(idx.shape, x.shape)) if j != axis)):
        raise TinycError(f"GatherElements '{n.name}': indices {idx.shape} do not fit input {x.shape}")


def gather_kernel(k):
    x = k.in_shape(0)
    axis = k.node.attrs["axis"]
    size = x[axis]
    idx = _normalized(k.node.attrs["indices"], size).reshape(-1)
    outer, inner = int(np.prod(x[:axis], dtype=np.int64)), int(np.prod(x[axis + 1:], dtype=np.int64))
    n = idx.size
    comment = f"gather {n} of the {size} slices on axis {axis} of {x}"
    if n == 1:     # one slice: a plain strided copy
        body = "y[{o0}] = x0[%d + {o1}];" % (int(idx[0]) * inner) if idx[0] else "y[{o0}] = x0[{o1}];"
        loops = strided_loops([outer, inner], [[inner, 1], [size * inner, 1]], body)
        return "elementwise.c.j2", dict(comment=comment, loops=loops), 0
    table = k.table((idx * inner).astype(np.int32), "int32", f"{k.node.name}: gathered offsets")
    lines = []
    pad = "  "
    if outer > 1:
        lines.append(f"{pad}for (int o = 0; o < {outer}; ++o) {{")
        pad += "  "
    lines.append(f"{pad}for (int j = 0; j < {n}; ++j) {{")
    src = f"{table}[j]" + (f" + o * {size * inner}" if outer > 1 else "")
    dst = f"j * {inner}" if inner > 1 else "j"
    dst += f" + o * {n * inner}" if outer > 1 else ""
    if inner > 1:
        lines.append(f"{pad}  for (int i = 0; i < {inner}; ++i) y[{dst} + i] = x0[{src} + i];")
    else:
        lines.append(f"{pad}  y[{dst}] = x0[{src}];")
    lines.append(f"{pad}}}")
    if outer > 1:
        lines.append("  }")
    return "elementwise.c.j2", dict(comment=comment, loops="\n".join(lines)), 0


def elements_kernel(k):
    x = k.in_shape(0)
    axis = k.node.attrs["axis"]
    idx = _normalized(k.node.attrs["indices"], x[axis])
    grid = list(np.indices(idx.shape))
    grid[axis] = idx
    offsets = sum(g * s for g, s in zip(grid, dense_strides(x))).reshape(-1)
    table = k.table(offsets.astype(np.int32), "int32", f"{k.node.name}: source offsets")
    loops = strided_loops([k.out_size], [[1]], "y[{o0}] = x0[%s[{o0}]];" % table)
    return "elementwise.c.j2", dict(comment=f"gather elements of {x} on axis {axis}", loops=loops), 0


DEFINITIONS = (
    OpDef("Gather", "x  [axis, indices (constant integers)]", evaluate_gather, check, gather_kernel, None,
          same_quant_copy(gather_kernel), None, memory=None, quantize="shared", moves_data=True,
          plain_dtypes=ALL_DTYPES),
    OpDef("GatherElements", "x  [axis, indices (constant integers of x's rank)]", evaluate_elements, check, elements_kernel,
          None, None, None, memory=None, quantize=None, moves_data=True,
          plain_dtypes=ALL_DTYPES),
)
