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
#endif
