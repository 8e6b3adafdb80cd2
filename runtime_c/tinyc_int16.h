/* TFLite's 16x8 scheme for tinyc's generated code: int16 activations (one scale per tensor, zero point 0), int8
 * weights, int64 biases (docs/int16-numerics.md). Header-only, static inline; included only by libraries with
 * 16x8 layers, after tinyc_int8.h. */
#ifndef TINYC_INT16_H
#define TINYC_INT16_H

#include <math.h>
#include <stdint.h>

/* MultiplyByQuantizedMultiplier for an int64 accumulator (docs/int16-numerics.md 1.3): the multiplier reduced to
 * 16 bits, one rounding (half up), the result truncated to 32 bits as TFLite's cast does. |acc| < 2^47. */
static inline int32_t tinyc_requantize64(int64_t acc, int32_t multiplier, int shift) {
  const int64_t reduced = multiplier < 0x7FFF0000 ? (multiplier + (1 << 15)) >> 16 : 0x7FFF;
  const int total = 15 - shift;
  return (int32_t)((acc * reduced + ((int64_t)1 << (total - 1))) >> total);
}

/* FULLY_CONNECTED's reference requantization (TFLite 2.21, as for int8): round(acc * effective_scale) in double,
 * halves away from zero, converted to int32 (docs/int16-numerics.md 2.3). A result outside int32 is what TFLite's
 * conversion gives on x86 (the oracle): INT32_MIN, which the clamp then takes to the activation's minimum. */
static inline int32_t tinyc_requantize64_double(int64_t acc, double effective_scale) {
  const double r = round((double)acc * effective_scale);
  return r >= -2147483648.0 && r < 2147483648.0 ? (int32_t)r : INT32_MIN;
}

static inline int16_t tinyc_clamp16(int32_t v, int32_t lo, int32_t hi) {
  return (int16_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* gemmlowp's RoundingDivideByPOT instantiated on int16 (TFLite's power-of-two int16 ADD / SUB, docs/int16-numerics.md
 * 3.2): x / 2^exponent rounded half away from zero for exponent <= 15; the mask is cut to 16 bits, so exponents 16
 * to 31 give 1 for every x >= 0 and -1 for every x < 0. */
static inline int16_t tinyc_rdbpot16(int16_t x, int exponent) {
  const int16_t mask = (int16_t)(uint16_t)((1UL << exponent) - 1);
  const int16_t threshold = (int16_t)((mask >> 1) + (x < 0 ? 1 : 0));
  return (int16_t)((x >> exponent) + ((int16_t)(x & mask) > threshold ? 1 : 0));
}

/* float -> int16 (zero point 0): round(x / scale) halves away from zero, saturated (TFLite's AffineQuantize). */
static inline int16_t tinyc_quantize_f32_s16(float x, float scale) {
  const float r = roundf(x / scale);
  if (!(r == r)) return 0;                 /* NaN */
  if (r > 32767.0f) return 32767;
  if (r < -32768.0f) return -32768;
  return (int16_t)r;
}

/* v saturated to [-2^16, 2^16 - 1] / [-2^17, 2^17 - 1]: one SSAT where the core has it. The fast 16x8 LOGISTIC /
 * TANH (templates/int8_fast/sigmoid_tanh_int16.c.j2) clamp their rescaled input to their segment tables with it. */
static inline int32_t tinyc_ssat17(int32_t v) {
#if defined(__ARM_FEATURE_SAT)
  int32_t r;
  __asm__("ssat %0, #17, %1" : "=r"(r) : "r"(v));
  return r;
#else
  /* in range exactly when the bits from 16 up are all the sign (two shifts, no constants on the M0+) */
  return (v >> 16) == (v >> 31) ? v : (v >> 31) ^ 0xFFFF;
#endif
}

static inline int32_t tinyc_ssat18(int32_t v) {
#if defined(__ARM_FEATURE_SAT)
  int32_t r;
  __asm__("ssat %0, #18, %1" : "=r"(r) : "r"(v));
  return r;
#else
  return (v >> 17) == (v >> 31) ? v : (v >> 31) ^ 0x1FFFF;
#endif
}

/* the signed maximum of each halfword of a and b: SSUB16 sets GE per halfword where a >= b, SEL picks a there (the
 * fast 16x8 SOFTMAX's row maximum) */
static inline uint32_t tinyc_smax16(uint32_t a, uint32_t b) {
#if defined(__ARM_FEATURE_DSP)
  uint32_t r, d;
  __asm__("ssub16 %1, %2, %3\n\tsel %0, %2, %3" : "=r"(r), "=&r"(d) : "r"(a), "r"(b) : "cc");
  return r;
#else
  const int32_t alo = (int16_t)(uint16_t)(a & 0xFFFFu), blo = (int16_t)(uint16_t)(b & 0xFFFFu);
  const int32_t ahi = (int16_t)(uint16_t)(a >> 16), bhi = (int16_t)(uint16_t)(b >> 16);
  return ((uint32_t)(alo >= blo ? alo : blo) & 0xFFFFu) | ((uint32_t)(ahi >= bhi ? ahi : bhi) << 16);
#endif
}

#endif
