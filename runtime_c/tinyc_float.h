/* Helpers shared by tinyc's generated float32 code. Header-only, static inline: every model that includes it
 * gets its own copy, so several models link into one firmware. */
#ifndef TINYC_FLOAT_H
#define TINYC_FLOAT_H
#include <math.h>

/* Logistic sigmoid that never overflows: expf only ever sees a non-positive argument. */
static inline float tinyc_sigmoidf(float x) {
  if (x >= 0.0f) {
    return 1.0f / (1.0f + expf(-x));
  }
  const float e = expf(x);
  return e / (1.0f + e);
}

static inline float tinyc_clampf(float x, float lo, float hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}
#endif
