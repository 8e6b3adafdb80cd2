"""C literals for constants: exact float32 round-trips, finite values only (but for a model output's value,
which may be <math.h>'s INFINITY or NAN)."""
import numpy as np

from ..errors import TinycError


def c_float(v) -> str:
    """A float32 value as a C99 literal; '%.9g' round-trips every float32 exactly."""
    v = np.float32(v)
    if not np.isfinite(v):
        raise TinycError(f"constant {v} is not finite (NaN or Inf in the model); fix the model's weights")
    s = "%.9g" % v
    if "e" not in s and "." not in s and "n" not in s:
        s += ".0"
    return s + "f"


def _array_item(v: float) -> str:
    """One value of a float initializer list; Inf and NaN as <math.h>'s C99 macros (constant expressions)."""
    if not np.isfinite(v):
        return "NAN" if np.isnan(v) else ("INFINITY" if v > 0 else "-INFINITY")
    s = "%.9g" % v
    return s + "f" if ("." in s or "e" in s) else s + ".0f"


def c_float_array(data: np.ndarray, per_line: int = 8, non_finite: bool = False) -> str:
    """The body of a float initializer list, `per_line` values per line. `non_finite`: Inf and NaN are allowed
    (a model output's value, computed at compile time), else refused."""
    flat = np.asarray(data, dtype=np.float32).ravel()
    if flat.size and not non_finite and not np.all(np.isfinite(flat)):
        raise TinycError("the model's weights contain NaN or Inf; fix the model before compiling")
    items = [_array_item(v) for v in flat.tolist()]
    return ",\n".join("  " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


def c_int_literal(v: int) -> str:
    """An integer constant C reads as that value: INT32_MIN and INT64_MIN are expressions (no such literals),
    values above INT64_MAX are unsigned."""
    if v == -(1 << 31):
        return "(-2147483647 - 1)"
    if v == -(1 << 63):
        return "(-9223372036854775807LL - 1)"
    if v >= 1 << 63:
        return f"{v}ULL"
    if not -(1 << 31) < v < (1 << 31):
        return f"{v}LL"
    return str(v)


def c_int_array(data: np.ndarray, per_line: int = 16) -> str:
    """The body of an integer initializer list."""
    data = np.asarray(data)
    flat = data.ravel().astype(np.uint64 if data.dtype == np.uint64 else np.int64).tolist()
    items = [c_int_literal(int(v)) for v in flat]
    return ",\n".join("  " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


# IR dtype -> C element type
C_TYPES = {"float32": "float", "float64": "double", "int8": "int8_t", "int16": "int16_t", "int32": "int32_t",
           "int64": "int64_t", "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t", "uint64": "uint64_t",
           "bool": "uint8_t",   # bool: one byte, 0 or 1 (as NumPy stores it)
           "int4": "int8_t", "uint4": "uint8_t", "int2": "int8_t", "uint2": "uint8_t"}   # unpacked: one per byte

# The NumPy type of the bytes the C API holds for a 4- or 2-bit integer tensor: the value itself, in a whole byte
# (ml_dtypes' arrays are one per byte too, but keep only the low bits: -1 is 0x0F in an int4 array, 0xFF in C).
C_STORAGE = {"int4": "int8", "uint4": "uint8", "int2": "int8", "uint2": "uint8"}


def to_c_storage(arr: np.ndarray) -> np.ndarray:
    """An array as the C API stores it (4- and 2-bit integers widened to a byte; other types unchanged)."""
    arr = np.asarray(arr)
    return arr.astype(C_STORAGE[arr.dtype.name]) if arr.dtype.name in C_STORAGE else arr


def from_c_storage(raw: np.ndarray, dtype: str) -> np.ndarray:
    """The C API's values (of C_STORAGE's type for 4- and 2-bit integers) as an array of the tensor's `dtype`."""
    return np.asarray(raw).astype(dtype) if dtype in C_STORAGE else np.asarray(raw)


def c_storage_dtype(dtype: str) -> str:
    """The NumPy type of the C API's bytes for a tensor of `dtype`."""
    return C_STORAGE.get(dtype, dtype)


def c_type(dtype: str) -> str:
    if dtype not in C_TYPES:
        raise TinycError(f"tensors of type {dtype} are not supported by the code generator")
    return C_TYPES[dtype]


def c_double(v: float) -> str:
    """A double as an exact C99 hexadecimal literal (bit-exact kernels must not depend on decimal parsing)."""
    v = float(v)
    if not np.isfinite(v):
        raise TinycError(f"constant {v} is not finite")
    return v.hex()


def c_array_body(data: np.ndarray, dtype: str, per_line: int = 4, non_finite: bool = False) -> str:
    if dtype == "float32":
        return c_float_array(data, non_finite=non_finite)
    if dtype == "float64":
        items = [c_double(v) for v in np.asarray(data, np.float64).ravel().tolist()]
        return ",\n".join("  " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
    return c_int_array(data)
