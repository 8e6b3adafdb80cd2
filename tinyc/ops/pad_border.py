"""PadBorder: padding with values taken from x itself, numpy.pad(x, pads, mode) for mode "reflect" (mirror
without the edge: ONNX reflect, TFLite MIRROR_PAD REFLECT), "symmetric" (mirror with the edge: TFLite MIRROR_PAD
SYMMETRIC), "edge" (the border value repeated: ONNX edge) or "wrap" (the other side: ONNX wrap). Constant padding
is the op Pad.

The kernel reads every output position's source index on each padded axis from a small table numpy.pad computes
at compile time (so pads larger than the axis reflect or wrap as numpy does), and copies the unpadded inner axes
as one contiguous run.
"""
from __future__ import annotations

import numpy as np

from ..codegen.loops import dense_strides
from ..errors import TinycError
from .int8_common import same_quant_copy
from .opdef import ALL_DTYPES, OpDef

MODES = ("reflect", "symmetric", "edge", "wrap")


def evaluate(a, ins):
    return np.pad(ins[0], a["pads"], mode=a["mode"])


def check(g, n) -> None:
    x, y = g.tensors[n.inputs[0]].shape, g.tensors[n.outputs[0]].shape
    pads = n.attrs["pads"]
    if (n.attrs["mode"] not in MODES or len(pads) != len(x) or any(min(p) < 0 for p in pads)
            or tuple(d + b + e for d, (b, e) in zip(x, pads)) != tuple(y)):
        raise TinycError(f"internal: PadBorder '{n.name}' ({n.attrs['mode']}) pads {x} by {pads} into {y}; "
                         "report this model")


def float_kernel(k):
    x, out = k.in_shape(0), k.out_shape
    pads, mode = [tuple(p) for p in k.node.attrs["pads"]], k.node.attrs["mode"]
    padded = [a for a, p in enumerate(pads) if p != (0, 0)]
    last = padded[-1] if padded else -1
    inner = int(np.prod(x[last + 1:], dtype=np.int64))
    xs, ys = dense_strides(x), dense_strides(out)
    lines, pad, src, dst = [], "  ", [], []
    for a in range(last + 1):
        if out[a] == 1:
            continue
        lines.append(f"{pad}for (int i{a} = 0; i{a} < {out[a]}; ++i{a}) {{")
        pad += "  "
        dst.append(f"i{a} * {ys[a]}" if ys[a] != 1 else f"i{a}")
        if pads[a] != (0, 0):
            rows = np.pad(np.arange(x[a]), pads[a], mode=mode) * xs[a]
            src.append(f"{k.table(rows.astype(np.int32), 'int32', f'{k.node.name}: axis {a} sources')}[i{a}]")
        else:
            src.append(f"i{a} * {xs[a]}" if xs[a] != 1 else f"i{a}")
    s, d = " + ".join(src) or "0", " + ".join(dst) or "0"
    if inner > 1:
        lines.append(f"{pad}for (int j = 0; j < {inner}; ++j) y[{d} + j] = x0[{s} + j];")
    else:
        lines.append(f"{pad}y[{d}] = x0[{s}];")
    for _ in range(len(lines) - 1):
        pad = pad[:-2]
        lines.append(f"{pad}}}")
    return "elementwise.c.j2", dict(comment=f"{mode} pad {x} by {tuple(pads)}", loops="\n".join(lines)), 0


DEFINITIONS = (OpDef(
    "PadBorder", "x  [pads=((b0,e0),(b1,e1),...), mode=reflect|symmetric|edge|wrap]", evaluate, check,
    float_kernel, None, same_quant_copy(float_kernel), None, memory=None, quantize="shared", moves_data=True,
    plain_dtypes=ALL_DTYPES, int16_activations=True),)
