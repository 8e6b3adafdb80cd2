"""C literals for constants: exact float32 round-trips, finite values only."""
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


def c_float_array(data: np.ndarray, per_line: int = 8) -> str:
    """The body of a float initializer list, `per_line` values per line."""
    flat = np.asarray(data, dtype=np.float32).ravel()
    if flat.size and not np.all(np.isfinite(flat)):
        raise TinycError("the model's weights contain NaN or Inf; fix the model before compiling")
    items = ["%.9g" % v for v in flat.tolist()]
    items = [s + "f" if ("." in s or "e" in s) else s + ".0f" for s in items]
    return ",\n".join("  " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
