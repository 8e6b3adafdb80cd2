/* The on-the-fly input quantization of TFLite's hybrid (dynamic-range) kernels: float activations, int8 weights
 * (docs/hybrid-numerics.md). Header-only, static inline. The same float32 and double operations as TFLite's
 * tensor_utils, in the same order: fused multiply-adds would round differently, so gcc may not contract them. */
#ifndef TINYC_HYBRID_H
#define TINYC_HYBRID_H
#include <math.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__)
#define TINYC_NO_FMA __attribute__((optimize("fp-contract=off")))
#else
#define TINYC_NO_FMA
#endif

/* SymmetricQuantizeFloats: q = round(v * 127 / max|v|) in [-127, 127], *scale = max|v| / 127; all zero: q = 0,
 * scale 1. */
static inline TINYC_NO_FMA void tinyc_quantize_symmetric(const float *v, int n, int8_t *q, float *scale) {
  float lo = v[0], hi = v[0];
  for (int i = 1; i < n; ++i) {
    lo = v[i] < lo ? v[i] : lo;
    hi = v[i] > hi ? v[i] : hi;
  }
  const float range = fabsf(lo) > fabsf(hi) ? fabsf(lo) : fabsf(hi);
  if (range == 0.0f) {
    for (int i = 0; i < n; ++i) q[i] = 0;
    *scale = 1.0f;
    return;
  }
  *scale = range / 127.0f;
  const float inv = 127.0f / range;
  for (int i = 0; i < n; ++i) {
    const float r = roundf(v[i] * inv);
    q[i] = (int8_t)(r > 127.0f ? 127 : (r < -127.0f ? -127 : (int32_t)r));
  }
}

/* AsymmetricQuantizeFloats' parameters: the range [min(v, 0), max(v, 0)] (its width in float, as TFLite's float rmin
 * and rmax) in 255 steps in double, the zero point from the end with the smaller error, nudged into [-128, 127].
 * Returns 0 for an empty range (scale 1, zero point 0: every q is 0). */
static inline TINYC_NO_FMA int tinyc_asymmetric_params(const float *v, int n, float *scale, int32_t *zero_point) {
  float lo = 0.0f, hi = 0.0f;
  for (int i = 0; i < n; ++i) {
    lo = v[i] < lo ? v[i] : lo;
    hi = v[i] > hi ? v[i] : hi;
  }
  *scale = 1.0f;
  *zero_point = 0;
  if (lo == hi) {
    return 0;
  }
  const double rmin = lo, rmax = hi;
  const double s = (double)(hi - lo) / 255.0;
  const double from_min = -128.0 - rmin / s, from_max = 127.0 - rmax / s;
  const double zp = 128.0 + fabs(rmin / s) < 127.0 + fabs(rmax / s) ? from_min : from_max;
  *zero_point = zp <= -128.0 ? -128 : (zp >= 127.0 ? 127 : (int32_t)round(zp));
  *scale = (float)s;
  return 1;
}

/* AsymmetricQuantizeFloats: q = round(zp + v * (1.0 / scale)) in double, in [-128, 127] (as TF 2.21 rounds). The
 * float sum is within 5e-5 of the double one (|v / scale| <= 383): where it is more than 1e-4 from a half, both
 * round alike, and only the values next to a half are computed again in double (soft float on these cores). */
static inline TINYC_NO_FMA void tinyc_quantize_asymmetric(const float *v, int n, int8_t *q, float *scale,
                                                          int32_t *zero_point) {
  if (!tinyc_asymmetric_params(v, n, scale, zero_point)) {
    for (int i = 0; i < n; ++i) q[i] = 0;
    return;
  }
  const double inv_d = 1.0 / (double)*scale;
  const float inv = (float)inv_d;
  const float z = (float)*zero_point;
  for (int i = 0; i < n; ++i) {
    const float t = v[i] * inv;
    const float u = z + t;
    float r = roundf(u);
    if (fabsf(u - r) > 0.4999f) {
      r = (float)round((double)*zero_point + (double)v[i] * inv_d);
    }
    q[i] = (int8_t)(r > 127.0f ? 127 : (r < -128.0f ? -128 : (int32_t)r));
  }
}
#endif
