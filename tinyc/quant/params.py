"""Fixed-point parameters of int8 kernels, derived from float scales exactly as TFLite's kernels derive them.

Bit-exactness depends on details as small as whether a product of two scales is rounded to float32 before it
is widened to double, so each function says which precision TFLite uses (see docs/int8-numerics.md).
`np.float32` arithmetic reproduces C++ `float` arithmetic; Python floats are C++ `double`.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TinycError
from .fixed_point import quantize_multiplier

QMIN, QMAX = -128, 127


def scale_of(q) -> float:
    """The per-tensor scale as a float32 value (what TFLite stores), widened to Python float exactly."""
    return float(np.float32(np.asarray(q.scale).reshape(-1)[0]))


def zero_point_of(q) -> int:
    return int(np.asarray(q.zero_point).reshape(-1)[0])


def tflite_round(x: float) -> int:
    """TfLiteRound / std::round: halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_value(real: float, scale: float, zero_point: int) -> int:
    """zero_point + round(real / scale), the division in float32 (TFLite's activation-range helper)."""
    return zero_point + tflite_round(float(np.float32(real) / np.float32(scale)))


def activation_range(act: dict | None, q) -> tuple[int, int]:
    """The int8 clamp of a fused activation (TFLite CalculateActivationRangeQuantized)."""
    scale, zp = scale_of(q), zero_point_of(q)
    if act is None:
        return QMIN, QMAX
    fn = act["fn"]
    if fn == "relu":
        return max(QMIN, quantize_value(0.0, scale, zp)), QMAX
    if fn == "clip":
        lo = max(QMIN, quantize_value(act["lo"], scale, zp))
        hi = min(QMAX, quantize_value(act["hi"], scale, zp)) if math.isfinite(act["hi"]) else QMAX
        return lo, hi
    raise TinycError(f"activation '{fn}' cannot be fused into an int8 op; only relu, relu6 and clip can")


def multiplier(real: float) -> tuple[int, int]:
    """(multiplier, shift) of a real multiplier, or a clear error when TFLite could not represent it."""
    if not math.isfinite(real) or real < 0:
        raise TinycError(f"quantization scales give an invalid rescaling factor {real}; check the model's scales")
    return quantize_multiplier(real)


def conv_multipliers(in_q, w_q, out_q, out_channels: int, product_in_float: bool = False) -> tuple[list, list]:
    """Per-output-channel (multipliers, shifts) for Conv2D/Dense: in_scale * w_scale[c] / out_scale.

    Convolutions compute the product in double. TFLite's per-tensor FULLY_CONNECTED multiplies the two float
    scales in float32 first (`product_in_float`)."""
    in_s, out_s = scale_of(in_q), scale_of(out_q)
    w_scales = np.asarray(w_q.scale, np.float32).reshape(-1)
    if w_scales.size not in (1, out_channels):
        raise TinycError(f"weights have {w_scales.size} scales for {out_channels} output channels")
    mults, shifts = [], []
    for c in range(out_channels):
        ws = np.float32(w_scales[c if w_scales.size > 1 else 0])
        if product_in_float:
            real = float(np.float32(np.float32(in_s) * ws)) / out_s
        else:
            real = in_s * float(ws) / out_s
        m, s = multiplier(real)
        mults.append(m)
        shifts.append(s)
    return mults, shifts


def rescale(in_q, out_q) -> tuple[int, int]:
    """(multiplier, shift) taking input LSBs to output LSBs: in_scale / out_scale in double."""
    return multiplier(scale_of(in_q) / scale_of(out_q))
