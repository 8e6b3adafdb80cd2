"""Gather and GatherElements: values of x picked by integer indices (negative ones count from the end).

- Gather: y = numpy.take(x, indices, axis): every index picks a whole slice x[..., i, ...] along `axis`, so the
  output's shape is x.shape[:axis] + indices.shape + x.shape[axis + 1:] (ONNX Gather, TFLite GATHER).
- GatherElements: y[p] = x[p with p[axis] replaced by indices[p]], the output shaped like indices
  (ONNX GatherElements, numpy.take_along_axis).

Constant indices are held in the attribute `indices` (an integer array, checked against the axis' size at
compile time); the kernels copy values of any element type (float32, int8: bytes move unchanged).

Gather also takes runtime indices (an embedding lookup: ONNX Gather, TFLite GATHER, Keras Embedding): an int32 or
int64 tensor as the node's second input, the table (input 0) a constant or computed. A negative index counts from
the end (-1 is the last slice). An index still outside the axis after that is clamped to the nearest slice (0 or
size - 1): ONNX leaves it undefined and TFLite fails the inference, and the C has no error path per element, so
it never reads outside the table and the result is defined. The int8 rule reads quantized int8 values with plain
integer indices (`int8_plain_dtypes`).
"""
from __future__ import annotations

import numpy as np

from ..codegen.loops import dense_strides, strided_loops
from ..errors import TinycError
from .int8_common import in_quant, out_quant, same_quant, same_quant_copy
from .opdef import ALL_DTYPES, OpDef


def _normalized(indices, size):
    idx = np.asarray(indices).astype(np.int64)
    return np.where(idx < 0, idx + size, idx)


def evaluate_gather(a, ins):
    x = ins[0]
    size = x.shape[a["axis"]]
    if len(ins) > 1:        # runtime indices: negative ones wrap once, the rest clamp into the axis
        return np.take(x, np.clip(_normalized(ins[1], size), 0, size - 1), axis=a["axis"])
    return np.take(x, _normalized(a["indices"], size), axis=a["axis"])


def evaluate_elements(a, ins):
    x, idx, axis = ins[0], np.asarray(a["indices"]), a["axis"]
    # the indices may be smaller than x on the other axes: they read its leading corner (no broadcasting)
    corner = x[tuple(slice(None) if j == axis else slice(0, n) for j, n in enumerate(idx.shape))]
    return np.take_along_axis(corner, _normalized(idx, x.shape[axis]), axis=axis)


def check(g, n) -> None:
    x = g.tensors[n.inputs[0]]
    axis = n.attrs["axis"]
    if n.op == "Gather" and len(n.inputs) == 2:
        i, y = g.tensors[n.inputs[1]], g.tensors[n.outputs[0]]
        if i.is_const or i.dtype not in ("int32", "int64") or i.quant is not None or not 0 <= axis < len(x.shape):
            raise TinycError(f"Gather '{n.name}': indices '{i.name}' must be a runtime int32 or int64 tensor "
                             f"(got {i.dtype}) and axis {axis} an axis of {x.shape}")
        if tuple(y.shape) != tuple(x.shape[:axis]) + tuple(i.shape) + tuple(x.shape[axis + 1:]):
            raise TinycError(f"internal: Gather '{n.name}' of {x.shape} by {i.shape} indices has output {y.shape}; "
                             "report this model")
        return
    if len(n.inputs) != 1:
        raise TinycError(f"{n.op} '{n.name}' reads its indices at run time; tinyc's {n.op} needs constant indices")
    idx = np.asarray(n.attrs["indices"])
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


def runtime_kernel(k):
    """Indices read at run time (x1, or a constant table x0 / its array name): wrap negatives once, clamp."""
    x, axis = k.in_shape(0), k.node.attrs["axis"]
    size = x[axis]
    outer, inner = int(np.prod(x[:axis], dtype=np.int64)), int(np.prod(x[axis + 1:], dtype=np.int64))
    n = k.in_size(1)
    src, idx = k.weight(0), k.expr(1)      # a constant table may be stored narrower (--weights float16)
    lines = [f"  for (int o = 0; o < {outer}; ++o) {{",
             f"    for (int j = 0; j < {n}; ++j) {{",
             f"      long long i = (long long){idx}[j];",
             f"      if (i < 0) i += {size};",
             f"      i = i < 0 ? 0 : (i > {size - 1} ? {size - 1} : i);   /* out of range: the nearest slice */",
             f"      const int at = o * {size * inner} + (int)i * {inner};",
             f"      for (int e = 0; e < {inner}; ++e) y[(o * {n} + j) * {inner} + e] = {src.load(f'{src}[at + e]')};",
             "    }",
             "  }"]
    return "elementwise.c.j2", dict(comment=f"gather {n} runtime indices into the {size} slices on axis {axis} of "
                                            f"{x}", loops="\n".join(lines)), 0


def int8_runtime_kernel(k):
    if not same_quant(in_quant(k, 0), out_quant(k)):
        raise TinycError(f"node '{k.node.name}' (Gather): table '{k.tensor(0).name}' and output have different "
                         "quantization parameters, which tinyc does not support here")
    return runtime_kernel(k)


def gather_kernel(k):
    if len(k.node.inputs) == 2:
        return runtime_kernel(k)
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


def int8_gather(k):
    return int8_runtime_kernel(k) if len(k.node.inputs) == 2 else same_quant_copy(gather_kernel)(k)


DEFINITIONS = (
    OpDef("Gather", "x, indices? (int32/int64 at run time)  [axis, indices (constant integers) otherwise]",
          evaluate_gather, check, gather_kernel, None, int8_gather, None, memory=None, quantize="shared",
          moves_data=True, plain_dtypes=ALL_DTYPES, int8_plain_dtypes=("int32", "int64")),
    OpDef("GatherElements", "x  [axis, indices (constant integers of x's rank)]", evaluate_elements, check, elements_kernel,
          None, None, None, memory=None, quantize=None, moves_data=True,
          plain_dtypes=ALL_DTYPES),
)
