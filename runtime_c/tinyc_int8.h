/* TFLite's fixed-point requantization for tinyc's generated int8 code. Header-only, static inline.
 * Reference: tinyc/quant/fixed_point.py (same algorithms in exact integers; tests compare the two). */
#ifndef TINYC_INT8_H
#define TINYC_INT8_H
#include <math.h>
#include <stdint.h>

/* a * b / 2^31 rounded to nearest, ties toward +infinity; the one overflowing case (-1 * -1) saturates. */
static inline int32_t tinyc_srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) {
    return INT32_MAX;
  }
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
  return (int32_t)((ab + nudge) / (1LL << 31));
}

/* x / 2^exponent rounded to nearest, halves away from zero (0 <= exponent <= 31). */
static inline int32_t tinyc_rdbpot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)((1LL << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * multiplier * 2^(shift - 31), as TFLite's MultiplyByQuantizedMultiplier. */
static inline int32_t tinyc_requantize(int32_t x, int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return tinyc_rdbpot(tinyc_srdhm((int32_t)((uint32_t)x << left), multiplier), right);
}

static inline int8_t tinyc_sat8(int32_t v, int32_t lo, int32_t hi) {
  return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* FULLY_CONNECTED's reference requantization in TFLite 2.21: round(acc * effective_scale) in double, halves away
 * from zero (not fixed point; docs/int8-numerics.md 4.3). Results beyond +-2^24 saturate any int8 output. */
static inline int32_t tinyc_requantize_double(int32_t acc, double effective_scale) {
  const double r = round((double)acc * effective_scale);
  return r > 16777216.0 ? 16777216 : (r < -16777216.0 ? -16777216 : (int32_t)r);
}

/* -- gemmlowp fixed-point helpers for int8 SOFTMAX (docs/int8-numerics.md 3) ------------------------------ */

/* x * 2^exponent, saturating for exponent > 0; a rounding divide for exponent < 0. */
static inline int32_t tinyc_satpot(int32_t x, int exponent) {
  if (exponent < 0) return tinyc_rdbpot(x, -exponent);
  if (exponent == 0) return x;
  const int32_t limit = (int32_t)((1LL << (31 - exponent)) - 1);
  if (x > limit) return INT32_MAX;
  if (x < -limit) return INT32_MIN;
  return (int32_t)((uint32_t)x << exponent);
}

/* e^a for a in [-1/4, 0), Q0.31 in and out: Taylor series around -1/8. */
static inline int32_t tinyc_exp_quarter(int32_t a) {
  const int32_t c = 1895147668, third = 715827883;
  const int32_t x = a + (1 << 28);
  const int32_t x2 = tinyc_srdhm(x, x), x3 = tinyc_srdhm(x2, x), x4 = tinyc_srdhm(x2, x2);
  const int32_t poly = tinyc_rdbpot(tinyc_srdhm(tinyc_rdbpot(x4, 2) + x3, third) + x2, 1);
  return c + tinyc_srdhm(c, x + poly);
}

/* e^a for a <= 0 in Q5.26, result in Q0.31. */
static inline int32_t tinyc_exp_negative_q5(int32_t a) {
  static const int32_t factors[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
  const int32_t quarter = 1 << 24;
  const int32_t a_mod = (a & (quarter - 1)) - quarter;
  int32_t result = tinyc_exp_quarter(tinyc_satpot(a_mod, 5));
  const int32_t remainder = a_mod - a;
  for (int i = 0; i < 7; ++i) {
    if (remainder & (1 << (24 + i))) result = tinyc_srdhm(result, factors[i]);
  }
  return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + a) for a in [0, 1), Q0.31: Newton-Raphson in Q2.29. */
static inline int32_t tinyc_one_over_one_plus_x(int32_t a) {
  const int64_t s = (int64_t)a + INT32_MAX;
  const int32_t half_denominator = (int32_t)((s + (s >= 0 ? 1 : -1)) / 2);
  int32_t x = 1515870810 + tinyc_srdhm(half_denominator, -1010580540);
  for (int i = 0; i < 3; ++i) {
    const int32_t one_minus = (1 << 29) - tinyc_srdhm(half_denominator, x);
    x = x + tinyc_satpot(tinyc_srdhm(x, one_minus), 2);
  }
  return tinyc_satpot(x, 1);
}

/* 1 / x for x > 0 in Q12.19; returns the reciprocal in Q0.31 and its exponent (num_bits_over_unit). */
static inline int32_t tinyc_reciprocal_q12(int32_t x, int *bits_over_unit) {
  int headroom = 0;
  while (headroom < 32 && !((uint32_t)x & (0x80000000u >> headroom))) ++headroom;
  *bits_over_unit = 12 - headroom;
  const int32_t shifted_minus_one = (int32_t)(((uint32_t)x << headroom) - 0x80000000u);
  return tinyc_one_over_one_plus_x(shifted_minus_one);
}

/* -- int16 helpers for int8 HARD_SWISH (docs/int8-numerics.md 4.13) ------------------------------------------ */
static inline int16_t tinyc_sat16(int32_t v) {
  return (int16_t)(v < -32768 ? -32768 : (v > 32767 ? 32767 : v));
}

static inline int16_t tinyc_srdhm16(int16_t a, int16_t b) {
  if (a == INT16_MIN && b == INT16_MIN) return INT16_MAX;
  const int32_t ab = (int32_t)a * b;
  return (int16_t)((ab + (ab >= 0 ? (1 << 14) : 1 - (1 << 14))) / (1 << 15));
}

/* the truncating (not rounding) doubling high multiply TFLite's hard-swish uses on purpose */
static inline int16_t tinyc_sdhm16(int16_t a, int16_t b) {
  if (a == INT16_MIN && b == INT16_MIN) return INT16_MAX;
  return (int16_t)(((int32_t)a * b) / (1 << 15));
}

static inline int8_t tinyc_hard_swish(int32_t x, int32_t in_zp, int16_t out_mult, int out_exp, int16_t relu_mult,
                                      int relu_exp, int32_t out_zp) {
  const int16_t hires = (int16_t)((x - in_zp) * 128);
  const int16_t scaled = tinyc_srdhm16(hires, out_mult);
  int16_t r = hires;
  if (relu_exp > 0) r = tinyc_sat16((int32_t)r * (1 << (relu_exp - 1)));
  r = tinyc_srdhm16(r, relu_mult);
  if (relu_exp > 0) r = tinyc_sat16((int32_t)r * 2);
  if (relu_exp < 0) r = (int16_t)tinyc_rdbpot(r, -relu_exp);
  r = (int16_t)(((int32_t)r + 32768) >> 1);
  const int16_t p = tinyc_sdhm16(r, scaled);
  return tinyc_sat8(tinyc_rdbpot(p, -out_exp) + out_zp, -128, 127);
}

/* float -> int8 as TFLite's QUANTIZE: zero_point + round(x / scale) (std::round: halves away from zero),
 * saturated to [-128, 127]. The clamp happens on the float so that huge values never overflow a cast. */
static inline int8_t tinyc_quantize_f32(float x, float scale, int32_t zero_point) {
  const float r = roundf(x / scale);
  if (!(r == r)) return (int8_t)zero_point;                 /* NaN */
  if (r > (float)(127 - zero_point)) return 127;
  if (r < (float)(-128 - zero_point)) return -128;
  return (int8_t)((int32_t)r + zero_point);
}
#endif
