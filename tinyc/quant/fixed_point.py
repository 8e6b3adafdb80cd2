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



# -- gemmlowp's exp_on_negative_values for int8 SOFTMAX (runtime_c/tinyc_int8.h, docs/int8-numerics.md 3) --------
def saturating_rounding_multiply_by_pot(x: int, exponent: int) -> int:
    """tinyc_satpot: x * 2^exponent saturated to int32 (exponent > 0), a rounding divide (exponent < 0)."""
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    limit = (1 << (31 - exponent)) - 1
    return INT32_MAX if x > limit else INT32_MIN if x < -limit else x << exponent


def exp_on_interval_quarter(a: int) -> int:
    """tinyc_exp_quarter: e^a for a in [-1/4, 0), Q0.31 in and out."""
    srdhm, rdbpot = saturating_rounding_doubling_high_mul, rounding_divide_by_pot
    c, third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3, x4 = srdhm(x2, x), srdhm(x2, x2)
    poly = rdbpot(srdhm(rdbpot(x4, 2) + x3, third) + x2, 1)
    return c + srdhm(c, x + poly)


EXP_BARREL_FACTORS = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)


def exp_on_negative_values_q5(a: int) -> int:
    """tinyc_exp_negative_q5: e^a for a <= 0 in Q5.26 (int32), the result in Q0.31."""
    quarter = 1 << 24
    a_mod = (a & (quarter - 1)) - quarter
    result = exp_on_interval_quarter(saturating_rounding_multiply_by_pot(a_mod, 5))
    remainder = a_mod - a
    for i, factor in enumerate(EXP_BARREL_FACTORS):
        if remainder & (1 << (24 + i)):
            result = saturating_rounding_doubling_high_mul(result, factor)
    return INT32_MAX if a == 0 else result
