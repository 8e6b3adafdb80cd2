"""MaxPool2D, AvgPool2D: pooling windows over one NHWC image (what a window means: ops/pool3d.py)."""
from __future__ import annotations

from ..codegen import int8_fast_misc
from ..codegen.literals import c_type
from ..errors import TinycError
from ..quant import params as qp
from .int8_common import in_quant, int16_activation_range, out_quant
from .opdef import OpDef, integer_range
from .pool3d import MAX_POOL_DTYPES, pool_windows, window_kernel


def evaluator(kind):
    return lambda a, ins: pool_windows(ins[0], kind, a["kernel"], a["strides"], a.get("dilations", (1, 1)),
                                       a["pads"], a.get("count_include_pad", False))


def _dilated(node) -> bool:
    return tuple(node.attrs.get("dilations", (1, 1))) != (1, 1)


def _geometry(k) -> dict:
    """The variables of pool2d.c.j2 (float and int8)."""
    _, ih, iw, c = k.in_shape(0)
    _, oh, ow, _ = k.out_shape
    a = k.node.attrs
    pt, pl, pb, pr = a["pads"]
    return dict(kind="max" if k.node.op == "MaxPool2D" else "avg", ih=ih, iw=iw, c=c, oh=oh, ow=ow,
                kh=a["kernel"][0], kw=a["kernel"][1], sh=a["strides"][0], sw=a["strides"][1],
                pt=pt, pl=pl, pb=pb, pr=pr, count_include_pad=a.get("count_include_pad", False))


def float_kernel(k):
    a = k.node.attrs
    kh, kw = a["kernel"]
    pt, pl, pb, pr = a["pads"]
    may_be_empty = max(pt, pb) >= kh or max(pl, pr) >= kw    # a window wholly in the padding averages to 0
    if _dilated(k.node) or k.out.dtype != "float32" or may_be_empty:   # the shared window kernel (ops/pool3d.py)
        return window_kernel(k)
    return "pool2d.c.j2", _geometry(k), 0


def int8_prepare(k) -> dict:
    """The window geometry and the output clamp; TFLite's checks (same parameters in and out)."""
    if _dilated(k.node):
        raise TinycError(f"node '{k.node.name}': int8 pooling with dilations {k.node.attrs['dilations']} is not "
                         "supported (TFLite has none); keep this pooling in float32")
    v = _geometry(k)
    if (qp.scale_of(in_quant(k)), qp.zero_point_of(in_quant(k))) != (qp.scale_of(out_quant(k)),
                                                                    qp.zero_point_of(out_quant(k))):
        raise TinycError(f"node '{k.node.name}': int8 pooling needs the same scale and zero point on input and "
                         "output (TFLite requires it)")
    if v["kind"] == "avg" and v["count_include_pad"] and any((v["pt"], v["pl"], v["pb"], v["pr"])):
        raise TinycError(f"node '{k.node.name}': int8 average pooling that counts padded cells is not supported")
    dtype = k.out.dtype            # int8, or int16 (16x8: the same arithmetic, docs/int16-numerics.md 4.3)
    if k.tensor(0).dtype != dtype:
        raise TinycError(f"node '{k.node.name}': pooling from {k.tensor(0).dtype} to {dtype}; TFLite pools within "
                         "one type")
    v["lo"], v["hi"] = int16_activation_range(k, out_quant(k)) if dtype == "int16" else \
        qp.activation_range(k.node.attrs.get("activation"), out_quant(k))
    v.update(dtype=dtype, ctype=c_type(dtype), lowest=integer_range(dtype)[0],
             clamp="tinyc_clamp16" if dtype == "int16" else "tinyc_sat8")
    return v


def int8_kernel(k):
    return "pool2d.c.j2", dict(k.params), 0


SIGNATURE = ("x[N,H,W,C]  [kernel=(kh,kw), strides, dilations (float only; default 1), pads=(t,l,b,r), "
             "count_include_pad (avg only)]")
DEFINITIONS = (
    OpDef("MaxPool2D", SIGNATURE, evaluator("max"), None, float_kernel, int8_prepare, int8_kernel,
          int8_fast_misc.pool2d, memory="windowed", quantize="shared", one_image=True, qdq_rule="pool",
          plain_dtypes=MAX_POOL_DTYPES, int16_activations=True),
    OpDef("AvgPool2D", SIGNATURE, evaluator("avg"), None, float_kernel, int8_prepare, int8_kernel,
          int8_fast_misc.pool2d, memory="windowed", quantize="shared", one_image=True, qdq_rule="pool",
          int16_activations=True),
)
