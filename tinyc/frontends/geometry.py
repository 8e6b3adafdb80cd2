"""Window geometry shared by the frontends: output size and padding along one spatial axis."""
import math

from ..errors import TinycError


def conv_geometry(size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one axis. 'same' is TF/Keras/ONNX SAME_UPPER (the odd pad
    goes after), 'same_lower' puts it before, 'causal' pads only before."""
    if k < 1 or s < 1 or d < 1:    # the frontends say which layer; this is the last line of defence
        raise TinycError(f"window {k}, stride {s} and dilation {d} must all be at least 1")
    eff = (k - 1) * d + 1
    if padding == "valid":
        return (size - eff) // s + 1, 0, 0
    if padding in ("same", "same_lower"):
        out = math.ceil(size / s)
        total = max((out - 1) * s + eff - size, 0)
        small = total // 2
        return (out, small, total - small) if padding == "same" else (out, total - small, small)
    if padding == "causal":
        return (size - 1) // s + 1, eff - 1, 0
    raise TinycError(f"padding '{padding}' is not supported")
