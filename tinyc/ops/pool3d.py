"""MaxPool3D, AvgPool3D: pooling windows over NDHWC volumes, with strides, dilations and padding.

Also the window rule every pooling shares: `pool_windows` is what MaxPool2D / AvgPool2D mean too, and
`window_kernel` is the plain C they run where their own template does not reach (dilated windows, MaxPool on
plain int8 / uint8 tensors). A window with no input cell in it gives the type's lowest value (max) or 0
(average), as onnxruntime's pooling does.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..codegen.literals import c_float, c_type
from ..errors import TinycError
from .opdef import FLOAT, OpDef

MAX_POOL_DTYPES = FLOAT + ("int8", "uint8")    # a maximum is exact on any type; ONNX MaxPool takes (u)int8


def out_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int) -> int:
    return (size + begin + end - (kernel - 1) * dilation - 1) // stride + 1


def lowest(dtype: str):
    """The smallest value of an un-quantized tensor type: what a maximum starts from."""
    return np.finfo(np.float32).min if dtype == "float32" else np.iinfo(dtype).min


def lowest_literal(dtype: str) -> str:
    return c_float(lowest(dtype)) if dtype == "float32" else str(int(lowest(dtype)))


def pool_windows(x, kind, kernel, strides, dilations, pads, count_include_pad=False):
    """x[N, *spatial, C] -> [N, *out, C] in float64; pads = begins + ends. A sum adds the window's input cells;
    an average divides it by the window's taps (count_include_pad: padded ones included) or by its taps on
    input cells."""
    nsp = len(kernel)
    spatial = x.shape[1:-1]
    widths = [(0, 0)] + list(zip(pads[:nsp], pads[nsp:])) + [(0, 0)]
    xp = np.pad(x.astype(np.float64), widths)
    on_input = np.pad(np.ones((1,) + spatial + (1,)), widths)
    sizes = [out_size(spatial[i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i]) for i in range(nsp)]
    total = np.zeros((x.shape[0], *sizes, x.shape[-1]))
    best = np.full(total.shape, -np.inf)
    count = np.zeros((1, *sizes, 1))
    for tap in itertools.product(*(range(k) for k in kernel)):
        window = (slice(None),) + tuple(slice(t * d, t * d + (n - 1) * s + 1, s)
                                        for t, d, n, s in zip(tap, dilations, sizes, strides)) + (slice(None),)
        values, inside = xp[window], on_input[window]
        total += values
        count += inside
        best = np.where(inside > 0, np.maximum(best, values), best)
    if kind == "sum":
        return total
    if kind == "max":
        return np.where(count > 0, best, lowest(x.dtype.name if x.dtype.kind in "iu" else "float32"))
    if count_include_pad:
        return total / np.prod(kernel)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def evaluator(kind: str, nsp: int):
    return lambda a, ins: pool_windows(ins[0], kind, a["kernel"], a["strides"], a.get("dilations", (1,) * nsp),
                                       a["pads"], a.get("count_include_pad", False))


def check(g, n) -> None:
    """Attributes of the right length and range, and the output shape they give."""
    x, y = g.tensors[n.inputs[0]].shape, g.tensors[n.outputs[0]].shape
    a = n.attrs
    kernel, strides, dilations, pads = (tuple(a.get(k, ())) for k in ("kernel", "strides", "dilations", "pads"))
    ok = (len(x) == 5 and len(kernel) == len(strides) == len(dilations) == 3 and len(pads) == 6
          and min(kernel + strides + dilations) >= 1 and min(pads) >= 0)
    if ok:
        sizes = tuple(out_size(x[1 + i], kernel[i], strides[i], dilations[i], pads[i], pads[3 + i]) for i in range(3))
        ok = tuple(y) == (x[0],) + sizes + (x[4],) and min(sizes) >= 1
    if not ok:
        raise TinycError(f"{n.op} '{n.name}': kernel {kernel}, strides {strides}, dilations {dilations} and pads "
                         f"{pads} do not take input {x} to output {y}")


def flat_index(names, dims) -> str:
    """The C expression of a row-major index: names[i] runs over dims[i]."""
    expr = names[0]
    for name, dim in zip(names[1:], dims[1:]):
        expr = f"({expr}) * {dim} + {name}" if " " in expr else f"{expr} * {dim} + {name}"
    return expr


def window_loops(x, y, kernel, strides, dilations, pads, images: int) -> dict:
    """What the window templates (pool.c.j2, conv3d.c.j2) loop over, for x[N, *spatial, C] -> y[N, *out, C']:
    per spatial axis its loop variables and sizes, and whether a tap can fall outside the input (only then is
    it tested); the flat indices of an output pixel and of an input tap. `images`: how many images the kernel
    loops over (1 for an op codegen calls once per image, OpDef.one_image)."""
    nsp = len(x) - 2
    batch = images
    axes = []
    for i, name in enumerate("zyx"[3 - nsp:]):
        last_tap = (y[1 + i] - 1) * strides[i] - pads[i] + (kernel[i] - 1) * dilations[i]
        axes.append(dict(o=f"o{name}", i=f"i{name}", k=f"k{name}", start=f"i{name}0", size=x[1 + i], out=y[1 + i],
                         kernel=kernel[i], stride=strides[i], dilation=dilations[i], begin=pads[i],
                         clipped=pads[i] > 0 or last_tap >= x[1 + i]))
    image, dims = (["n"], [batch]) if batch > 1 else ([], [])
    return dict(batch=batch, axes=axes,
                out_index=flat_index(image + [ax["o"] for ax in axes], dims + [ax["out"] for ax in axes]),
                in_index=flat_index(image + [ax["i"] for ax in axes], dims + [ax["size"] for ax in axes]),
                shape_in="x".join(map(str, x[1:])), shape_out="x".join(map(str, y[1:])),
                window="x".join(map(str, kernel)), strides="x".join(map(str, strides)),
                dilations="x".join(map(str, dilations)), pads=tuple(pads))


def window_kernel(k):
    """Plain C for one pooling layer on [N, H, W, C] (called per image) or [N, D, H, W, C]."""
    a = k.node.attrs
    x = k.in_shape(0)
    kernel = tuple(a["kernel"])
    v = window_loops(x, k.out_shape, kernel, a["strides"], a.get("dilations", (1,) * len(kernel)), a["pads"],
                     x[0] if len(x) == 5 else 1)       # the 2-D pools run per image (one_image)
    kind = "max" if k.node.op.startswith("MaxPool") else "avg"
    # the divisor is the window size unless a window can overhang the input and overhanging taps do not count
    constant_count = a.get("count_include_pad", False) or not any(ax["clipped"] for ax in v["axes"])
    dtype = k.out.dtype
    v.update(kind=kind, ctype=c_type(dtype), c=x[-1],
             lowest=lowest_literal(dtype),
             scale=c_float(1.0 / np.prod(kernel)) if constant_count else None)
    return "pool.c.j2", v, 0


SIGNATURE = ("x[N,D,H,W,C]  [kernel=(kd,kh,kw), strides, dilations, pads=(front,top,left,back,bottom,right), "
             "count_include_pad (avg only)]")
DEFINITIONS = (
    OpDef("MaxPool3D", SIGNATURE, evaluator("max", 3), check, window_kernel, None, None, None, memory=None,
          quantize=None, plain_dtypes=MAX_POOL_DTYPES),
    OpDef("AvgPool3D", SIGNATURE, evaluator("avg", 3), check, window_kernel, None, None, None, memory=None,
          quantize=None),
)
