"""Cast: convert each value to the output tensor's type (float32, the integer types, bool).

Each conversion is defined for every input, where C leaves some undefined: float -> integer truncates toward
zero after clamping to the target's range (NaN -> 0); integer -> narrower integer wraps modulo 2^bits (as NumPy
and onnxruntime do); anything -> bool is `!= 0`; bool -> number is 0 or 1.

The 4- and 2-bit integers (int4, uint4, int2, uint2; stored one value per byte) follow ONNX's reference
implementation (onnx.reference's Cast, i.e. ml_dtypes): from float, truncation toward zero, and 0 where the
truncated value is outside the type's range or NaN (ONNX leaves it undefined; there is no clamping); from
integers and bool, the low 4 or 2 bits, two's complement for the signed types (wrap, as ONNX specifies)."""
from __future__ import annotations

import numpy as np

from ..codegen.literals import c_float, c_type
from ..codegen.loops import strided_loops
from .opdef import ALL_DTYPES, SUB_BYTE_INTEGERS, OpDef, integer_range


def _float_to_int_range(dtype: str) -> tuple[float, float]:
    """The float32 values that convert into `dtype` without overflow: [lo, hi] with hi the largest float32 below
    the type's limit (float32 cannot hold INT32_MAX and above exactly)."""
    info = np.iinfo(dtype)
    hi = np.float32(info.max)
    if float(hi) > info.max:                      # rounded up past the limit: take the float below
        hi = np.nextafter(hi, np.float32(0))
    return float(np.float32(info.min)), float(hi)


def _to_sub_byte(x: np.ndarray, dtype: str) -> np.ndarray:
    lo, hi = integer_range(dtype)
    if x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            t = np.trunc(x.astype(np.float64))
            t = np.where((t >= lo) & (t <= hi), t, 0.0)            # NaN and out of range: 0
        return t.astype(np.int64).astype(dtype)
    bits = (hi - lo).bit_length()
    wrapped = (x.astype(np.int64) - lo) % (1 << bits) + lo      # the low bits, two's complement
    return wrapped.astype(dtype)


def cast_values(x: np.ndarray, dtype: str) -> np.ndarray:
    """What the kernel computes, in NumPy."""
    if x.dtype.name in SUB_BYTE_INTEGERS:      # ml_dtypes' types: through int64, exact for every value
        x = x.astype(np.int64)
    if dtype == "bool":
        return x != 0
    if dtype in SUB_BYTE_INTEGERS:
        return _to_sub_byte(x, dtype)
    if x.dtype.kind == "f" and dtype != "float32":
        lo, hi = _float_to_int_range(dtype)
        return np.trunc(np.clip(np.nan_to_num(x, nan=0.0), lo, hi)).astype(dtype)
    return x.astype(dtype)


def evaluate(a, ins):
    return cast_values(ins[0], a["to"])


def _sub_byte_expr(src: str, dst: str, v: str) -> str:
    lo, hi = integer_range(dst)
    ctype = c_type(dst)
    if src == "float32":     # in range iff lo - 1 < v < hi + 1 (then the conversion truncates); NaN fails both
        return f"(({v} > {c_float(lo - 1)} && {v} < {c_float(hi + 1)}) ? ({ctype}){v} : ({ctype})0)"
    mask = hi - lo
    low_bits = f"((uint32_t){v} & {mask}u)"     # (uint32_t) of any integer keeps its low bits
    if lo == 0:
        return f"({ctype}){low_bits}"
    sign = -lo
    return f"({ctype})((int32_t)({low_bits} ^ {sign}u) - {sign})"    # sign-extend the top bit


def _expr(src: str, dst: str, v: str) -> str:
    if dst == "bool":
        return f"(uint8_t)({v} != 0)"
    if src == dst:
        return v
    if dst in SUB_BYTE_INTEGERS:
        return _sub_byte_expr(src, dst, v)
    if src == "float32" and dst != "float32":
        lo, hi = _float_to_int_range(dst)
        return (f"({v} != {v} ? ({c_type(dst)})0 : {v} <= {c_float(lo)} ? ({c_type(dst)}){c_float(lo)} : "
                f"{v} >= {c_float(hi)} ? ({c_type(dst)}){c_float(hi)} : ({c_type(dst)}){v})")
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
    memory=None, quantize=None, plain_dtypes=ALL_DTYPES + SUB_BYTE_INTEGERS),)
