"""LpPool: the p-norm of each pooling window, (sum over the window's input cells of |x|^p)^(1/p), over
[N, *spatial, C] with 1 to 3 spatial axes (ONNX LpPool and GlobalLpPool). Padded cells add nothing;
a window with no input cell in it gives 0. p is a whole number >= 1: p = 1 is the sum of |x|, p = 2 the
square root of the sum of squares, others go through powf. The windows are those of every pooling
(ops/pool3d.py); float32 only (TFLite has no int8 kernel)."""
from __future__ import annotations

import numpy as np

from ..codegen.literals import c_float
from ..errors import TinycError
from .opdef import OpDef
from .pool3d import out_size, pool_windows, window_loops


def evaluate(a, ins):
    x, p = ins[0].astype(np.float64), a["p"]
    total = pool_windows(np.abs(x) ** p, "sum", a["kernel"], a["strides"], a["dilations"], a["pads"])
    return total ** (1.0 / p)


def check(g, n) -> None:
    """Attributes of the right length and range, and the output shape they give."""
    x, y = g.tensors[n.inputs[0]].shape, g.tensors[n.outputs[0]].shape
    a = n.attrs
    kernel, strides, dilations, pads = (tuple(a.get(k, ())) for k in ("kernel", "strides", "dilations", "pads"))
    nsp = len(x) - 2
    ok = (nsp in (1, 2, 3) and len(kernel) == len(strides) == len(dilations) == nsp and len(pads) == 2 * nsp
          and min(kernel + strides + dilations) >= 1 and min(pads) >= 0)
    if ok:
        sizes = tuple(out_size(x[1 + i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i])
                      for i in range(nsp))
        ok = tuple(y) == (x[0],) + sizes + (x[-1],) and min(sizes) >= 1
    if not ok:
        raise TinycError(f"LpPool '{n.name}': kernel {kernel}, strides {strides}, dilations {dilations} and pads "
                         f"{pads} do not take input {x} to output {y}")
    p = a.get("p")
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 1:
        raise TinycError(f"LpPool '{n.name}': p = {p!r}; the norm needs a whole number p >= 1")


def float_kernel(k):
    a = k.node.attrs
    x = k.in_shape(0)
    v = window_loops(x, k.out_shape, tuple(a["kernel"]), a["strides"], a["dilations"], a["pads"], x[0])
    p = int(a["p"])
    term = {1: "fabsf(in[c])", 2: "in[c] * in[c]"}.get(p, f"powf(fabsf(in[c]), {c_float(float(p))})")
    root = {1: None, 2: "sqrtf(out[c])"}.get(p, f"powf(out[c], {c_float(1.0 / p)})")
    v.update(kind="lp", ctype="float", c=x[-1], lowest=None, scale=None, lp_term=term, lp_root=root)
    return "pool.c.j2", v, 0


DEFINITIONS = (OpDef(
    "LpPool", "x[N,(D,)(H,)W,C]  [kernel, strides, dilations, pads=(begins..., ends...), p (whole, >= 1)]",
    evaluate, check, float_kernel, None, None, None, memory=None, quantize=None),)
