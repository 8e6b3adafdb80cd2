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

/* x * multiplier * 2^(shift - 31) rounded once (halves toward +infinity), in 64 bits: TFLite's single-rounding
 * MultiplyByQuantizedMultiplier, which its per-channel FULLY_CONNECTED uses (docs/int8-numerics.md). */
static inline int32_t tinyc_requantize_single(int32_t x, int32_t multiplier, int shift) {
  const int total = 31 - shift;
  const int64_t r = ((int64_t)x * multiplier + (1LL << (total - 1))) >> total;
  return (int32_t)r;
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

static inline int8_t tinyc_sat8(int32_t v, int32_t lo, int32_t hi) {
  return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}
#endif
