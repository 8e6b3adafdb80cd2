"""Cast: convert each value to the output tensor's type (float32, the integer types, bool).

Each conversion is defined for every input, where C leaves some undefined: float -> integer truncates toward
zero after clamping to the target's range (NaN -> 0); integer -> narrower integer wraps modulo 2^bits (as NumPy
and onnxruntime do); anything -> bool is `!= 0`; bool -> number is 0 or 1."""
from __future__ import annotations

import numpy as np

from ..codegen.literals import c_float, c_type
from ..codegen.loops import strided_loops
from .opdef import ALL_DTYPES, OpDef


def _float_to_int_range(dtype: str) -> tuple[float, float]:
    """The float32 values that convert into `dtype` without overflow: [lo, hi] with hi the largest float32 below
    the type's limit (float32 cannot hold INT32_MAX and above exactly)."""
    info = np.iinfo(dtype)
    hi = np.float32(info.max)
    if float(hi) > info.max:                      # rounded up past the limit: take the float below
        hi = np.nextafter(hi, np.float32(0))
    return float(np.float32(info.min)), float(hi)


def cast_values(x: np.ndarray, dtype: str) -> np.ndarray:
    """What the kernel computes, in NumPy."""
    if dtype == "bool":
        return x != 0
    if x.dtype.kind == "f" and dtype != "float32":
        lo, hi = _float_to_int_range(dtype)
        return np.trunc(np.clip(np.nan_to_num(x, nan=0.0), lo, hi)).astype(dtype)
    return x.astype(dtype)


def evaluate(a, ins):
    return cast_values(ins[0], a["to"])


def _expr(src: str, dst: str, v: str) -> str:
    if dst == "bool":
        return f"(uint8_t)({v} != 0)"
    if src == "float32" and dst != "float32":
        lo, hi = _float_to_int_range(dst)
        return (f"({v} != {v} ? ({c_type(dst)})0 : {v} <= {c_float(lo)} ? ({c_type(dst)}){c_float(lo)} : "
                f"{v} >= {c_float(hi)} ? ({c_type(dst)}){c_float(hi)} : ({c_type(dst)}){v})")
    if src == dst:
        return v
    if dst == "float32":
        return f"(float){v}"
    # integer -> integer: through the unsigned type of the target's width, which wraps by definition in C
    width = np.dtype(dst).itemsize * 8
    return f"({c_type(dst)})(uint{width}_t){v}"


def float_kernel(k):
    src, dst = k.tensor(0).dtype, k.out.dtype
    body = "{{ const %s v = %s[{o0}]; y[{o0}] = %s; }}" % (c_type(src), k.expr(0), _expr(src, dst, "v"))
    return "elementwise.c.j2", dict(comment=f"cast {k.out_size} values {src} -> {dst}",
                                    loops=strided_loops([k.out_size], [[1]], body)), 0


DEFINITIONS = (OpDef(
    "Cast", "x -> y  [to] (the output's type)", evaluate, None, float_kernel, None, None, None,
    memory=None, quantize=None, plain_dtypes=ALL_DTYPES),)
