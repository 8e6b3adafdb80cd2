"""TFLite's fixed-point requantization, in exact Python integers (the reference for our C in
runtime_c/tinyc_int8.h).

A real multiplier m (e.g. input_scale * weight_scale / output_scale) becomes an int32 `multiplier` in
[2^30, 2^31) and a `shift`, with m ~= multiplier * 2^(shift - 31). Applying it to an int32 accumulator x is
  rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x * 2^max(shift, 0), multiplier), max(-shift, 0))
exactly as TFLite's reference kernels do. Rounding follows gemmlowp: the high multiply rounds to nearest with
ties toward +infinity (-7.5 -> -7, 7.5 -> 8); the power-of-two divide rounds ties away from zero.
"""
from __future__ import annotations

import math

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(multiplier, shift) for a real multiplier >= 0, as TFLite's QuantizeMultiplier computes them."""
    if real < 0 or not math.isfinite(real):
        raise ValueError(f"multiplier {real} must be finite and non-negative")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))   # std::round (halves away from zero); q > 0 here
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:                          # every bit would be shifted out: flush to zero
        return 0, 0
    if shift > 30:                           # saturate: larger multipliers cannot be represented
        return INT32_MAX, 30
    return q_fixed, shift


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def saturating_rounding_doubling_high_mul(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _c_div(ab + nudge, 1 << 31)


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    assert 0 <= exponent <= 31
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    v = ((x * (1 << left) + (1 << 31)) % (1 << 32)) - (1 << 31)   # the shift happens in 32 bits, as in C
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(v, multiplier), right)

