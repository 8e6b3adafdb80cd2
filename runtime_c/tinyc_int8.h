/* TFLite's fixed-point requantization for tinyc's generated int8 code. Header-only, static inline.
 * Reference: tinyc/quant/fixed_point.py (same algorithms in exact integers; tests compare the two). */
#ifndef TINYC_INT8_H
#define TINYC_INT8_H
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
#endif
