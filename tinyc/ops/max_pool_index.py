"""MaxPoolIndex: where each max-pooling window's maximum is (ONNX MaxPool's second output, Indices).

x[N, *spatial, C] (2-D or 3-D) -> int64 [N, *out, C]: the flat index of the window's first largest input cell
in the model's N, C, spatial order (what ONNX means; the IR stores the tensor channels last): row-major
spatial axes, or column-major with storage_order 1, as onnxruntime computes it. A window with no input cell
in it gives -1.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..codegen.literals import c_type
from ..errors import TinycError
from .opdef import OpDef
from .pool3d import MAX_POOL_DTYPES, lowest_literal, out_size, window_loops


def _spatial_strides(spatial, storage_order: int) -> list:
    """Index step of each spatial axis in the flattened N, C, spatial order."""
    sizes = list(spatial) if storage_order else list(spatial)[::-1]
    steps = [int(np.prod(sizes[:i])) for i in range(len(sizes))]
    return steps if storage_order else steps[::-1]


def evaluate(a, ins):
    x = ins[0]
    n, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    nsp = len(spatial)
    kernel, strides, pads = a["kernel"], a["strides"], a["pads"]
    dilations = a.get("dilations", (1,) * nsp)
    sizes = [out_size(spatial[i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i]) for i in range(nsp)]
    steps = _spatial_strides(spatial, a.get("storage_order", 0))
    image = int(np.prod(spatial))
    base = (np.arange(n).reshape((n,) + (1,) * nsp + (1,)) * c + np.arange(c)) * image     # (n * C + c) * image
    best = np.full((n, *sizes, c), -np.inf)
    at = np.full(best.shape, -1, np.int64)
    values = x.astype(np.float64)
    for tap in itertools.product(*(range(k) for k in kernel)):
        inside, flat, coords = np.ones(sizes, bool), np.zeros(sizes, np.int64), []
        for i in range(nsp):     # the input position of this tap in every window, along spatial axis i
            pos = np.arange(sizes[i]) * strides[i] + tap[i] * dilations[i] - pads[i]
            along = [sizes[i] if j == i else 1 for j in range(nsp)]
            inside = inside & ((pos >= 0) & (pos < spatial[i])).reshape(along)
            coords.append(np.clip(pos, 0, spatial[i] - 1).reshape(along))
            flat = flat + coords[-1] * steps[i]
        v = values[(slice(None),) + tuple(coords) + (slice(None),)]      # [N, *sizes, C]
        inside, flat = inside[None, ..., None], flat[None, ..., None]
        take = inside & ((at < 0) | (v > best))
        best = np.where(take, v, best)
        at = np.where(take, base + flat, at)
    return at


def check(g, n) -> None:
    x, y = g.tensors[n.inputs[0]], g.tensors[n.outputs[0]]
    a = n.attrs
    nsp = len(x.shape) - 2
    kernel, strides, pads = tuple(a.get("kernel", ())), tuple(a.get("strides", ())), tuple(a.get("pads", ()))
    dilations = tuple(a.get("dilations", (1,) * nsp))
    ok = (nsp in (2, 3) and len(kernel) == len(strides) == len(dilations) == nsp and len(pads) == 2 * nsp
          and min(kernel + strides + dilations) >= 1 and min(pads) >= 0 and a.get("storage_order", 0) in (0, 1))
    if ok:
        sizes = tuple(out_size(x.shape[1 + i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i])
                      for i in range(nsp))
        ok = tuple(y.shape) == (x.shape[0],) + sizes + (x.shape[-1],) and min(sizes) >= 1
    if not ok:
        raise TinycError(f"MaxPoolIndex '{n.name}': kernel {kernel}, strides {strides}, dilations {dilations}, pads "
                         f"{pads} and storage order {a.get('storage_order')} do not take input {x.shape} to output "
                         f"{y.shape}")
    if y.dtype != "int64" or x.dtype not in MAX_POOL_DTYPES:
        raise TinycError(f"MaxPoolIndex '{n.name}': reads {x.dtype} and writes {y.dtype}; it takes "
                         f"{', '.join(MAX_POOL_DTYPES)} and writes int64")


def float_kernel(k):
    a = k.node.attrs
    x = k.in_shape(0)
    nsp = len(x) - 2
    v = window_loops(x, k.out_shape, a["kernel"], a["strides"], a.get("dilations", (1,) * nsp), a["pads"], x[0])
    steps = _spatial_strides(x[1:-1], a.get("storage_order", 0))
    image = int(np.prod(x[1:-1]))
    base = f"({'n * %d + ' % x[-1] if v['batch'] > 1 else ''}c) * {image}"
    spatial = " + ".join(ax["i"] if step == 1 else f"{ax['i']} * {step}" for ax, step in zip(v["axes"], steps))
    v.update(ctype=c_type(k.tensor(0).dtype), itype=c_type(k.out.dtype), c=x[-1],
             lowest=lowest_literal(k.tensor(0).dtype), index=f"{base} + {spatial}",
             order="column" if a.get("storage_order", 0) else "row")
    return "max_pool_index.c.j2", v, 0


DEFINITIONS = (OpDef(
    "MaxPoolIndex", "x[N,(D,)H,W,C] -> int64  [kernel, strides, dilations, pads=(begins..., ends...), "
    "storage_order]", evaluate, check, float_kernel, None, None, None, memory=None, quantize=None,
    plain_dtypes=MAX_POOL_DTYPES + ("int64",)),)
