/* float16 weights (`tinyc compile --weights float16`): IEEE 754 binary16 values kept as their 16 bits in flash and
 * widened to float32 where a kernel reads them, never copied. Exact for every one of the 65,536 halves (subnormals,
 * infinities and NaNs included; a float16 value is always a float32 value). Header-only, static inline: every
 * model that includes it gets its own copy.
 *
 * Cortex-M cores with an FPU (FPv4-SP on the M4, FPv5 on the M7 and M33; every M-profile FPU has the half-precision
 * conversions) use VCVTB.F32.F16: the bits go into an S register and one instruction widens them. Other cores
 * (the M0+) and hosts use integer code; -DTINYC_HALF_INTEGER forces it everywhere (tests). */
#ifndef TINYC_HALF_H
#define TINYC_HALF_H
#include <stdint.h>

#if defined(__ARM_FP) && (__ARM_FP & 4) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M' && \
    !defined(TINYC_HALF_INTEGER)
#define TINYC_HALF_VCVT 1
#endif

static inline float tinyc_half_to_float(uint16_t h) {
#ifdef TINYC_HALF_VCVT
  float f;
  __asm__("vmov %0, %1\n\tvcvtb.f32.f16 %0, %0" : "=t"(f) : "r"((uint32_t)h));
  return f;
#else
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t rest = (uint32_t)(h & 0x7fffu);
  uint32_t bits;
  if (rest >= 0x0400u && rest < 0x7c00u) {
    bits = (rest << 13) + 0x38000000u;            /* normal: the exponent's bias 15 becomes 127 */
  } else if (rest >= 0x7c00u) {
    bits = (rest << 13) | 0x7f800000u;            /* infinity or NaN: all-ones exponent, the payload kept */
  } else if (rest == 0) {
    bits = 0;                                     /* zero (the sign is added below) */
  } else {
    uint32_t e = 113u;                            /* subnormal m x 2^-24: shift m up to 1.f x 2^(e - 127) */
    while (!(rest & 0x0400u)) {
      rest <<= 1;
      --e;
    }
    bits = (e << 23) | ((rest & 0x03ffu) << 13);
  }
  union { uint32_t u; float f; } v;
  v.u = bits | sign;
  return v.f;
#endif
}

/* acc + x[0] w[0] + x[1] w[1] + ... + x[n-1] w[n-1], added in index order, the weights float16. On the FPU cores
 * two weights come per aligned 32-bit load (a first weight at an odd half-word is taken alone) and VCVTB / VCVTT
 * widen the low and the high half: two instructions of conversion per pair instead of a load, a move and a
 * conversion per weight. */
static inline float tinyc_dot_half(float acc, const float *x, const uint16_t *w, int n) {
  int i = 0;
#ifdef TINYC_HALF_VCVT
  if (n > 0 && ((uintptr_t)(const void *)w & 2u)) {
    acc += x[0] * tinyc_half_to_float(w[0]);
    i = 1;
  }
  for (; i + 1 < n; i += 2) {
    uint32_t two;
    float lo, hi;
    __builtin_memcpy(&two, w + i, sizeof two);
    __asm__("vmov %0, %2\n\tvcvtt.f32.f16 %1, %0\n\tvcvtb.f32.f16 %0, %0" : "=&t"(lo), "=&t"(hi) : "r"(two));
    acc += x[i] * lo;
    acc += x[i + 1] * hi;
  }
#endif
  for (; i < n; ++i) acc += x[i] * tinyc_half_to_float(w[i]);
  return acc;
}
#endif
