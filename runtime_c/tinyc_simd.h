/* SIMD intrinsics and fast requantization for tinyc's fast int8 kernels. Header-only, static inline.
 *
 * TINYC_DSP is 1 on cores with the DSP extension (Cortex-M4/M7/M33: __ARM_FEATURE_DSP) and when the host build
 * defines TINYC_SIMD_EMULATE, which runs the same DSP code paths with the portable C below (so ASan/UBSan
 * check them on the host). Elsewhere (Cortex-M0+, plain host builds) the kernels take their plain-C paths.
 * Every fast kernel must equal its reference kernel (tinyc_int8.h) bit for bit on both paths. */
#ifndef TINYC_SIMD_H
#define TINYC_SIMD_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) || defined(TINYC_SIMD_EMULATE)
#define TINYC_DSP 1
#else
#define TINYC_DSP 0
#endif

/* 4 bytes from any address: one LDR where the core allows unaligned loads (M3/M4/M7/M33). */
static inline uint32_t tinyc_load32(const void *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static inline void tinyc_store32(void *p, uint32_t v) {
  memcpy(p, &v, 4);
}

#if defined(__ARM_FEATURE_DSP)
/* (int16) bytes 0 and 2 of x, sign-extended, as two halfwords */
static inline uint32_t tinyc_sxtb16(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
  return r;
}

/* bytes 1 and 3 of x, sign-extended, as two halfwords */
static inline uint32_t tinyc_sxtb16_ror8(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}

/* acc + lo(a) * lo(b) + hi(a) * hi(b), signed 16-bit halves, wrapping */
static inline int32_t tinyc_smlad(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}

/* (a * b + 2^31) >> 32, signed: the rounded high word of the product */
static inline int32_t tinyc_smmulr(int32_t a, int32_t b) {
  int32_t r;
  __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

/* four signed bytes added with saturation */
static inline uint32_t tinyc_qadd8(uint32_t a, uint32_t b) {
  uint32_t r;
  __asm__("qadd8 %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

/* bytewise signed maximum: SSUB8 sets GE per byte where a >= b, SEL picks a there and b elsewhere */
static inline uint32_t tinyc_smax8(uint32_t a, uint32_t b) {
  uint32_t r, d;
  __asm__("ssub8 %1, %2, %3\n\tsel %0, %2, %3" : "=r"(r), "=&r"(d) : "r"(a), "r"(b) : "cc");
  return r;
}
/* halfword packing: (lo(a), lo(b)) and (hi(a), hi(b)) */
static inline uint32_t tinyc_pkhbt(uint32_t a, uint32_t b) {
  uint32_t r;
  __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

static inline uint32_t tinyc_pkhtb(uint32_t a, uint32_t b) {
  uint32_t r;
  __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

/* acc + lo(a) * lo(b) / acc + hi(a) * hi(b), signed 16-bit halves */
static inline int32_t tinyc_smlabb(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm__("smlabb %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}

static inline int32_t tinyc_smlatt(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm__("smlatt %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}

/* two halfword additions, wrapping */
static inline uint32_t tinyc_sadd16(uint32_t a, uint32_t b) {
  uint32_t r;
  __asm__("sadd16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
#else
static inline int32_t tinyc_lo16(uint32_t x) { return (int32_t)(int16_t)(uint16_t)(x & 0xFFFFu); }
static inline int32_t tinyc_hi16(uint32_t x) { return (int32_t)(int16_t)(uint16_t)(x >> 16); }

static inline uint32_t tinyc_sxtb16(uint32_t x) {
  const uint32_t lo = (uint32_t)(int32_t)(int8_t)(uint8_t)(x & 0xFFu) & 0xFFFFu;
  const uint32_t hi = (uint32_t)(int32_t)(int8_t)(uint8_t)((x >> 16) & 0xFFu) & 0xFFFFu;
  return lo | (hi << 16);
}

static inline uint32_t tinyc_sxtb16_ror8(uint32_t x) {
  return tinyc_sxtb16((x >> 8) | (x << 24));
}

static inline int32_t tinyc_smlad(uint32_t a, uint32_t b, int32_t acc) {
  const uint32_t s = (uint32_t)acc + (uint32_t)(tinyc_lo16(a) * tinyc_lo16(b)) +
                     (uint32_t)(tinyc_hi16(a) * tinyc_hi16(b));
  return (int32_t)s;
}

static inline int32_t tinyc_smmulr(int32_t a, int32_t b) {
  return (int32_t)(((int64_t)a * b + 0x80000000LL) >> 32);
}

static inline uint32_t tinyc_qadd8(uint32_t a, uint32_t b) {
  uint32_t r = 0;
  for (int i = 0; i < 32; i += 8) {
    int32_t s = (int32_t)(int8_t)(uint8_t)(a >> i) + (int32_t)(int8_t)(uint8_t)(b >> i);
    s = s < -128 ? -128 : (s > 127 ? 127 : s);
    r |= ((uint32_t)s & 0xFFu) << i;
  }
  return r;
}

static inline uint32_t tinyc_smax8(uint32_t a, uint32_t b) {
  uint32_t r = 0;
  for (int i = 0; i < 32; i += 8) {
    const int32_t x = (int8_t)(uint8_t)(a >> i), y = (int8_t)(uint8_t)(b >> i);
    r |= ((uint32_t)(x >= y ? x : y) & 0xFFu) << i;
  }
  return r;
}
static inline uint32_t tinyc_pkhbt(uint32_t a, uint32_t b) {
  return (a & 0xFFFFu) | (b << 16);
}

static inline uint32_t tinyc_pkhtb(uint32_t a, uint32_t b) {
  return (a & 0xFFFF0000u) | (b >> 16);
}

static inline int32_t tinyc_smlabb(uint32_t a, uint32_t b, int32_t acc) {
  return (int32_t)((uint32_t)acc + (uint32_t)(tinyc_lo16(a) * tinyc_lo16(b)));
}

static inline int32_t tinyc_smlatt(uint32_t a, uint32_t b, int32_t acc) {
  return (int32_t)((uint32_t)acc + (uint32_t)(tinyc_hi16(a) * tinyc_hi16(b)));
}

static inline uint32_t tinyc_sadd16(uint32_t a, uint32_t b) {
  return ((a + b) & 0xFFFFu) | (((a >> 16) + (b >> 16)) << 16);
}
#endif

/* -- pair-packed GEMM steps (gemm_pack.py, templates/int8_fast/gemm.c.j2) ----------------------------------
 * One step: 4 int8 inputs at `a` (advanced by 4) against the packed words of two channel pairs (QUAD; `wp`
 * advanced by 8 int16) or one pair (PAIR; by 4): ax += SMLAD(inputs, h), ay += SMLAD(inputs, SXTB16(h)).
 * On the DSP cores each step is one asm block, so the compiler cannot hoist loads into more registers than the
 * core has (17 instructions per 16 multiply-accumulates). `wp` must be 4-byte aligned (LDRD). */
#if defined(__ARM_FEATURE_DSP)
#define TINYC_GEMM_PAIR_ASM(ax, ay, p, x, w0, w1)                                                           \
  "smlad %[" #ax "], %[" #p "], %[" #w0 "], %[" #ax "]\n\t"                                                \
  "sxtb16 %[" #w0 "], %[" #w0 "]\n\t"                                                                     \
  "smlad %[" #ay "], %[" #p "], %[" #w0 "], %[" #ay "]\n\t"                                                \
  "smlad %[" #ax "], %[" #x "], %[" #w1 "], %[" #ax "]\n\t"                                                \
  "sxtb16 %[" #w1 "], %[" #w1 "]\n\t"                                                                     \
  "smlad %[" #ay "], %[" #x "], %[" #w1 "], %[" #ay "]\n\t"

#define TINYC_GEMM_QUAD_STEP                                                                                 \
  "ldr %[x], [%[ap]], #4\n\t"                                                                                \
  "ldrd %[w0], %[w1], [%[wq]], #8\n\t"                                                                       \
  "sxtb16 %[p], %[x]\n\t"                                                                                    \
  "sxtb16 %[x], %[x], ror #8\n\t"                                                                            \
  TINYC_GEMM_PAIR_ASM(ax0, ay0, p, x, w0, w1)                                                                \
  "ldrd %[w0], %[w1], [%[wq]], #8\n\t"                                                                       \
  TINYC_GEMM_PAIR_ASM(ax1, ay1, p, x, w0, w1)

#define TINYC_GEMM_PAIR_STEP                                                                                 \
  "ldr %[x], [%[ap]], #4\n\t"                                                                                \
  "ldrd %[w0], %[w1], [%[wq]], #8\n\t"                                                                       \
  "sxtb16 %[p], %[x]\n\t"                                                                                    \
  "sxtb16 %[x], %[x], ror #8\n\t"                                                                            \
  TINYC_GEMM_PAIR_ASM(ax0, ay0, p, x, w0, w1)

/* `steps`: TINYC_GEMM_QUAD_STEP repeated (a string literal); scratch registers x_, p_, w0_, w1_ are declared
 * inside */
#define TINYC_GEMM_QUAD_ASM(steps, AX0, AY0, AX1, AY1, A, WP)                                                \
  do {                                                                                                       \
    uint32_t x_, p_, w0_, w1_;                                                                               \
    __asm__(steps                                                                                            \
            : [ax0] "+r"(AX0), [ay0] "+r"(AY0), [ax1] "+r"(AX1), [ay1] "+r"(AY1), [ap] "+r"(A), [wq] "+r"(WP), \
              [x] "=&r"(x_), [p] "=&r"(p_), [w0] "=&r"(w0_), [w1] "=&r"(w1_)                                  \
            :                                                                                                \
            : "memory");                                                                                     \
  } while (0)

#define TINYC_GEMM_PAIR_ASM_BLOCK(steps, AX0, AY0, A, WP)                                                    \
  do {                                                                                                       \
    uint32_t x_, p_, w0_, w1_;                                                                               \
    __asm__(steps                                                                                            \
            : [ax0] "+r"(AX0), [ay0] "+r"(AY0), [ap] "+r"(A), [wq] "+r"(WP),                                 \
              [x] "=&r"(x_), [p] "=&r"(p_), [w0] "=&r"(w0_), [w1] "=&r"(w1_)                                  \
            :                                                                                                \
            : "memory");                                                                                     \
  } while (0)

/* Two pixels against one channel pair (templates/int8_fast/gemm.c.j2, px2): 4 inputs of pixel A and of pixel B
 * already sign-extended in `e` as [A02 A13 B02 B13] (advanced by 4 words), one packed word pair at `wp`
 * (advanced by 4 int16): 13 instructions per 16 multiply-accumulates. */
#define TINYC_GEMM_2PX_STEP                                                                                  \
  "ldrd %[pa], %[qa], [%[ep]], #8\n\t"                                                                       \
  "ldrd %[pb], %[qb], [%[ep]], #8\n\t"                                                                       \
  "ldrd %[w0], %[w1], [%[wq]], #8\n\t"                                                                       \
  "smlad %[axa], %[pa], %[w0], %[axa]\n\t"                                                                   \
  "smlad %[axb], %[pb], %[w0], %[axb]\n\t"                                                                   \
  "sxtb16 %[w0], %[w0]\n\t"                                                                                  \
  "smlad %[aya], %[pa], %[w0], %[aya]\n\t"                                                                   \
  "smlad %[ayb], %[pb], %[w0], %[ayb]\n\t"                                                                   \
  "smlad %[axa], %[qa], %[w1], %[axa]\n\t"                                                                   \
  "smlad %[axb], %[qb], %[w1], %[axb]\n\t"                                                                   \
  "sxtb16 %[w1], %[w1]\n\t"                                                                                  \
  "smlad %[aya], %[qa], %[w1], %[aya]\n\t"                                                                   \
  "smlad %[ayb], %[qb], %[w1], %[ayb]\n\t"

#define TINYC_GEMM_2PX_ASM(steps, AXA, AYA, AXB, AYB, EP, WP)                                                \
  do {                                                                                                       \
    uint32_t pa_, qa_, pb_, qb_, w0_, w1_;                                                                   \
    __asm__(steps                                                                                            \
            : [axa] "+r"(AXA), [aya] "+r"(AYA), [axb] "+r"(AXB), [ayb] "+r"(AYB), [ep] "+r"(EP), [wq] "+r"(WP), \
              [pa] "=&r"(pa_), [qa] "=&r"(qa_), [pb] "=&r"(pb_), [qb] "=&r"(qb_), [w0] "=&r"(w0_),             \
              [w1] "=&r"(w1_)                                                                                \
            :                                                                                                \
            : "memory");                                                                                     \
  } while (0)

/* One pixel from int16-expanded inputs (`ep`: [x02 x13] per 4 inputs, advanced by 2 words) against two pairs
 * (QUAD_E, `wp` advanced by 8 int16) or one pair (PAIR_E, by 4): 15 instructions per 16 multiply-accumulates. */
#define TINYC_GEMM_QUAD_E_STEP                                                                               \
  "ldrd %[p], %[x], [%[ap]], #8\n\t"                                                                         \
  "ldrd %[w0], %[w1], [%[wq]], #8\n\t"                                                                       \
  TINYC_GEMM_PAIR_ASM(ax0, ay0, p, x, w0, w1)                                                                \
  "ldrd %[w0], %[w1], [%[wq]], #8\n\t"                                                                       \
  TINYC_GEMM_PAIR_ASM(ax1, ay1, p, x, w0, w1)

#define TINYC_GEMM_PAIR_E_STEP                                                                               \
  "ldrd %[p], %[x], [%[ap]], #8\n\t"                                                                         \
  "ldrd %[w0], %[w1], [%[wq]], #8\n\t"                                                                       \
  TINYC_GEMM_PAIR_ASM(ax0, ay0, p, x, w0, w1)

/* The same with the loop in the asm block too (`iters` > 0 times `steps`), so the compiler does not shuffle
 * accumulators between registers around each iteration: 2 instructions of loop control per iteration. */
#define TINYC_GEMM_LOOP_ASM(steps) "1:\n\t" steps "subs %[n], %[n], #1\n\tbne 1b\n\t"

#define TINYC_GEMM_QUAD_LOOP(steps, iters, AX0, AY0, AX1, AY1, A, WP)                                        \
  do {                                                                                                       \
    uint32_t x_, p_, w0_, w1_, n_ = (iters);                                                                 \
    __asm__(TINYC_GEMM_LOOP_ASM(steps)                                                                       \
            : [ax0] "+r"(AX0), [ay0] "+r"(AY0), [ax1] "+r"(AX1), [ay1] "+r"(AY1), [ap] "+r"(A), [wq] "+r"(WP), \
              [n] "+r"(n_), [x] "=&r"(x_), [p] "=&r"(p_), [w0] "=&r"(w0_), [w1] "=&r"(w1_)                   \
            :                                                                                                \
            : "memory", "cc");                                                                               \
  } while (0)

#define TINYC_GEMM_PAIR_LOOP(steps, iters, AX0, AY0, A, WP)                                                  \
  do {                                                                                                       \
    uint32_t x_, p_, w0_, w1_, n_ = (iters);                                                                 \
    __asm__(TINYC_GEMM_LOOP_ASM(steps)                                                                       \
            : [ax0] "+r"(AX0), [ay0] "+r"(AY0), [ap] "+r"(A), [wq] "+r"(WP), [n] "+r"(n_),                   \
              [x] "=&r"(x_), [p] "=&r"(p_), [w0] "=&r"(w0_), [w1] "=&r"(w1_)                                  \
            :                                                                                                \
            : "memory", "cc");                                                                               \
  } while (0)

#define TINYC_GEMM_2PX_LOOP(steps, iters, AXA, AYA, AXB, AYB, EP, WP)                                        \
  do {                                                                                                       \
    uint32_t pa_, qa_, pb_, qb_, w0_, w1_, n_ = (iters);                                                     \
    __asm__(TINYC_GEMM_LOOP_ASM(steps)                                                                       \
            : [axa] "+r"(AXA), [aya] "+r"(AYA), [axb] "+r"(AXB), [ayb] "+r"(AYB), [ep] "+r"(EP), [wq] "+r"(WP), \
              [n] "+r"(n_), [pa] "=&r"(pa_), [qa] "=&r"(qa_), [pb] "=&r"(pb_), [qb] "=&r"(qb_),                \
              [w0] "=&r"(w0_), [w1] "=&r"(w1_)                                                               \
            :                                                                                                \
            : "memory", "cc");                                                                               \
  } while (0)

#define TINYC_GEMM_QUAD(ax0, ay0, ax1, ay1, a, wp) TINYC_GEMM_QUAD_ASM(TINYC_GEMM_QUAD_STEP, ax0, ay0, ax1, ay1, a, wp)
#define TINYC_GEMM_PAIR(ax0, ay0, a, wp) TINYC_GEMM_PAIR_ASM_BLOCK(TINYC_GEMM_PAIR_STEP, ax0, ay0, a, wp)
#else
#define TINYC_GEMM_QUAD_E(ax0, ay0, ax1, ay1, ep, wp)                                                        \
  do {                                                                                                       \
    TINYC_GEMM_PAIR_C(ax0, ay0, (ep)[0], (ep)[1], wp);                                                       \
    TINYC_GEMM_PAIR_C(ax1, ay1, (ep)[0], (ep)[1], (wp) + 4);                                                 \
    ep += 2;                                                                                                 \
    wp += 8;                                                                                                 \
  } while (0)

#define TINYC_GEMM_PAIR_E(ax0, ay0, ep, wp)                                                                  \
  do {                                                                                                       \
    TINYC_GEMM_PAIR_C(ax0, ay0, (ep)[0], (ep)[1], wp);                                                       \
    ep += 2;                                                                                                 \
    wp += 4;                                                                                                 \
  } while (0)

#define TINYC_GEMM_2PX(axa, aya, axb, ayb, ep, wp)                                                           \
  do {                                                                                                       \
    const uint32_t w02_ = tinyc_load32(wp), w13_ = tinyc_load32((wp) + 2);                                   \
    axa = (uint32_t)tinyc_smlad((ep)[0], w02_, (int32_t)(axa));                                              \
    axb = (uint32_t)tinyc_smlad((ep)[2], w02_, (int32_t)(axb));                                              \
    aya = tinyc_smlad((ep)[0], tinyc_sxtb16(w02_), aya);                                                     \
    ayb = tinyc_smlad((ep)[2], tinyc_sxtb16(w02_), ayb);                                                     \
    axa = (uint32_t)tinyc_smlad((ep)[1], w13_, (int32_t)(axa));                                              \
    axb = (uint32_t)tinyc_smlad((ep)[3], w13_, (int32_t)(axb));                                              \
    aya = tinyc_smlad((ep)[1], tinyc_sxtb16(w13_), aya);                                                     \
    ayb = tinyc_smlad((ep)[3], tinyc_sxtb16(w13_), ayb);                                                     \
    ep += 4;                                                                                                 \
    wp += 4;                                                                                                 \
  } while (0)

#define TINYC_GEMM_PAIR_C(ax, ay, p02, p13, wp)                                                              \
  do {                                                                                                       \
    const uint32_t w02_ = tinyc_load32(wp), w13_ = tinyc_load32((wp) + 2);                                   \
    ax = (uint32_t)tinyc_smlad(p02, w02_, (int32_t)(ax));                                                    \
    ay = tinyc_smlad(p02, tinyc_sxtb16(w02_), ay);                                                           \
    ax = (uint32_t)tinyc_smlad(p13, w13_, (int32_t)(ax));                                                    \
    ay = tinyc_smlad(p13, tinyc_sxtb16(w13_), ay);                                                           \
  } while (0)

#define TINYC_GEMM_QUAD(ax0, ay0, ax1, ay1, a, wp)                                                           \
  do {                                                                                                       \
    const uint32_t x_ = tinyc_load32(a);                                                                     \
    const uint32_t p02_ = tinyc_sxtb16(x_), p13_ = tinyc_sxtb16_ror8(x_);                                   \
    TINYC_GEMM_PAIR_C(ax0, ay0, p02_, p13_, wp);                                                             \
    TINYC_GEMM_PAIR_C(ax1, ay1, p02_, p13_, (wp) + 4);                                                       \
    a += 4;                                                                                                  \
    wp += 8;                                                                                                 \
  } while (0)

#define TINYC_GEMM_PAIR(ax0, ay0, a, wp)                                                                     \
  do {                                                                                                       \
    const uint32_t x_ = tinyc_load32(a);                                                                     \
    const uint32_t p02_ = tinyc_sxtb16(x_), p13_ = tinyc_sxtb16_ror8(x_);                                   \
    TINYC_GEMM_PAIR_C(ax0, ay0, p02_, p13_, wp);                                                             \
    a += 4;                                                                                                  \
    wp += 4;                                                                                                 \
  } while (0)
#endif

/* clamp to [-128, 127]: one SSAT on M3 and up (the compiler does not always find it by itself) */
static inline int32_t tinyc_ssat8(int32_t v) {
#if defined(__ARM_FEATURE_SAT)
  int32_t r;
  __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(v));
  return r;
#else
  return v < -128 ? -128 : (v > 127 ? 127 : v);
#endif
}

/* clamp to [lo, hi] within [-128, 127]: SSAT, then the activation's tighter bounds, which constant folding
 * removes when they are -128 / 127 */
static inline int32_t tinyc_clamp8(int32_t v, int32_t lo, int32_t hi) {
  v = tinyc_ssat8(v);
  if (lo > -128) v = v < lo ? lo : v;
  if (hi < 127) v = v > hi ? hi : v;
  return v;
}

/* TFLite's MultiplyByQuantizedMultiplier (tinyc_requantize) for the common case, in fewer instructions:
 * no left shift, right shift >= 1, multiplier > 0 and |acc| < 2^30 (the code generator proves all three from
 * the weights before it uses this). SRDHM(acc, m) = (2 acc m + 2^31) >> 32 exactly (ties toward +infinity;
 * its saturating case needs m = INT32_MIN), and RoundingDivideByPOT(s, r) = (s + 2^(r-1) - (s < 0)) >> r. */
static inline int32_t tinyc_requantize_fast(int32_t acc, int32_t multiplier, int32_t rshift, int32_t round_half) {
  const int32_t s = tinyc_smmulr(acc * 2, multiplier);
  return (s + (s >> 31) + round_half) >> rshift;    /* round_half = 2^(rshift - 1) */
}

/* TFLite 2.21 FULLY_CONNECTED's round(acc * scale) (tinyc_requantize_double), in integers: q = acc * m with
 * m = round(scale * 2^32) < 2^31, so q / 2^32 is acc * scale within the compile-time bound `tie` (in 2^-32
 * units). Outside [half-integer - tie, half-integer + tie] rounding q gives the same integer as the double
 * path; inside, the double path itself decides (out of line: it is rare and needs soft-float on most cores). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int32_t tinyc_round_double(int32_t acc, const double *scale) {
  const double r = round((double)acc * *scale);
  return r > 16777216.0 ? 16777216 : (r < -16777216.0 ? -16777216 : (int32_t)r);
}

static inline int32_t tinyc_requantize_double_fast(int32_t acc, int32_t m, uint32_t tie, const double *scale) {
  const int64_t q = (int64_t)acc * m + 0x80000000LL;
  if ((uint32_t)((uint32_t)q + tie) <= 2u * tie) return tinyc_round_double(acc, scale);
  return (int32_t)(q >> 32);
}

/* -- depthwise kernel helpers (int8_depthwise.py) -- */
/* acc + hi(a) * lo(b), signed 16-bit halves */
#if defined(__ARM_FEATURE_DSP)
static inline int32_t tinyc_smlatb(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm__("smlatb %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}
#else
static inline int32_t tinyc_smlatb(uint32_t a, uint32_t b, int32_t acc) {
  return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(uint16_t)(a >> 16) *
                                              (int32_t)(int16_t)(uint16_t)(b & 0xFFFFu)));
}
#endif

/* tinyc_smmulr(a, b) for b >= 0 from 16-bit halves, without a 64-bit product (a library call on Cortex-M0+).
 * With a = ah 2^16 + al, b = bh 2^16 + bl (al, bl unsigned): t = ah bl + (al bl >> 16), w = (t & 0xFFFF) +
 * al bh (unsigned), and (a b + 2^31) >> 32 = ah bh + (t >> 16) + ((w + 2^15) >> 16); nothing overflows. */
static inline int32_t tinyc_smmulr_halves(int32_t a, int32_t b) {
  const uint32_t al = (uint32_t)a & 0xFFFFu, bl = (uint32_t)b & 0xFFFFu;
  const int32_t ah = a >> 16, bh = b >> 16;
  const int32_t t = ah * (int32_t)bl + (int32_t)((al * bl) >> 16);
  const uint32_t w = (uint32_t)(t & 0xFFFF) + al * (uint32_t)bh;
  return ah * bh + (t >> 16) + (int32_t)((w + 0x8000u) >> 16);
}

/* tinyc_requantize_fast on cores without a 32 x 32 -> 64 multiply (its preconditions, and multiplier >= 0) */
static inline int32_t tinyc_requantize_halves(int32_t acc, int32_t multiplier, int32_t rshift, int32_t round_half) {
  const int32_t s = tinyc_smmulr_halves(acc * 2, multiplier);
  return (s + (s >> 31) + round_half) >> rshift;
}

/* tinyc_requantize_fast(acc, ...) given acc2 = 2 acc (kernels whose weights and bias are doubled at compile time) */
static inline int32_t tinyc_requantize_doubled(int32_t acc2, int32_t multiplier, int32_t rshift, int32_t round_half) {
  const int32_t s = tinyc_smmulr(acc2, multiplier);
  return (s + (s >> 31) + round_half) >> rshift;
}

/* Hides a pointer's value from the optimizer, so that loads through it stay inside a loop instead of being
 * hoisted into more registers than the core has (and spilled) */
#if defined(__GNUC__)
#define TINYC_OPAQUE(p) __asm__("" : "+r"(p))
#else
#define TINYC_OPAQUE(p) ((void)0)
#endif

/* (tinyc_ssat8 is defined above, next to tinyc_clamp8) */

/* -- pooling / elementwise kernel helpers (int8_fast_misc.py) -- */
#if defined(__ARM_FEATURE_DSP)
/* bytewise signed minimum: SSUB8 sets GE per byte where a >= b, SEL picks b there and a elsewhere */
static inline uint32_t tinyc_smin8(uint32_t a, uint32_t b) {
  uint32_t r, d;
  __asm__("ssub8 %1, %2, %3\n\tsel %0, %3, %2" : "=r"(r), "=&r"(d) : "r"(a), "r"(b) : "cc");
  return r;
}
#else
static inline uint32_t tinyc_smin8(uint32_t a, uint32_t b) {
  uint32_t r = 0;
  for (int i = 0; i < 32; i += 8) {
    const int32_t x = (int8_t)(uint8_t)(a >> i), y = (int8_t)(uint8_t)(b >> i);
    r |= ((uint32_t)(x >= y ? y : x) & 0xFFu) << i;
  }
  return r;
}
#endif

/* (a b + 2^31) >> 32 for b >= 0: SMMULR on DSP cores, 16-bit halves elsewhere (no 64-bit multiply, a library
 * call on Cortex-M0+) */
static inline int32_t tinyc_mulhr(int32_t a, int32_t b) {
#if TINYC_DSP
  return tinyc_smmulr(a, b);
#else
  return tinyc_smmulr_halves(a, b);
#endif
}

/* tinyc_requantize_fast(acc, ...) given acc2 = 2 acc (kernels that get the doubling for free upstream pass it
 * doubled: Add/Sub's rescale tables and shifts), with tinyc_mulhr */
static inline int32_t tinyc_requantize_fast2(int32_t acc2, int32_t multiplier, int32_t rshift, int32_t round_half) {
  const int32_t s = tinyc_mulhr(acc2, multiplier);
  return (s + (s >> 31) + round_half) >> rshift;
}

/* Average pooling's mean of n int8 values with sum s, rounded half away from zero as TFLite's
 * (s > 0 ? s + n/2 : s - n/2) / n, without a division (also none on Cortex-M0+): shifted by 128 to be
 * non-negative, it is floor((s + 128 n + n/2) / n) - 128 (for even n, s < 0 takes s - 1: the same with ties
 * rounded down), i.e. ((s' + 128 n + n/2) * recip - 2^31) >> 24 with recip = ceil(2^24 / n), all folded into
 * offset = (128 n + n/2) * recip - 2^31. neg_adjust = -1 for even n, 0 for odd n. The code generator checks the
 * result for every sum of n int8 values (int8_fast_misc.avg_reciprocal). */
static inline int32_t tinyc_avg_div(int32_t s, int32_t neg_adjust, uint32_t recip, uint32_t offset) {
  return (int32_t)((uint32_t)(s + ((s >> 31) & neg_adjust)) * recip + offset) >> 24;
}

/* -- GEMM on cores without the DSP extension (gemm_pack.py, "byte layout") -- */
/* 4 bytes from an address the code generator knows is 4-byte aligned: one LDR on every core */
static inline uint32_t tinyc_load32a(const void *p) {
  uint32_t v;
#if defined(__GNUC__)
  memcpy(&v, __builtin_assume_aligned(p, 4), 4);
#else
  memcpy(&v, p, 4);
#endif
  return v;
}

/* u[i] = x[i] ^ 0x80 (= x + 128, unsigned) for n inputs; returns their sum. `aligned`: x and u are 4-byte
 * aligned and n % 4 == 0 (a literal, so the word loop or the byte loop is all that is compiled). u may be x. The
 * word loop adds the bytes in two 16-bit fields per accumulator, emptied every 256 words. */
static inline uint32_t tinyc_bias_bytes(uint8_t *u, const int8_t *x, int n, int aligned) {
  uint32_t sum = 0;
  if (aligned) {
    for (int i = 0; i < n;) {
      const int end = n - i > 1024 ? i + 1024 : n;
      uint32_t lo = 0, hi = 0;
      for (; i < end; i += 4) {
        const uint32_t v = tinyc_load32a(x + i) ^ 0x80808080u;
        tinyc_store32(u + i, v);
        lo += v & 0x00FF00FFu;
        hi += (v >> 8) & 0x00FF00FFu;
      }
      sum += (lo & 0xFFFFu) + (lo >> 16) + (hi & 0xFFFFu) + (hi >> 16);
    }
  } else {
    for (int i = 0; i < n; ++i) {
      const uint32_t v = (uint8_t)x[i] ^ 0x80u;
      u[i] = (uint8_t)v;
      sum += v;
    }
  }
  return sum;
}

/* a0..a3 += Σ_k u[k] * w[4k + c] for k < k8 (a multiple of 8, at least 8); w advances past the 4 * k8 bytes.
 * Thumb-1 (Cortex-M0+): inputs and weights by LDRB with immediate offsets, the accumulators in high registers,
 * 13 instructions per input position and 4 per 8 positions of loop. Elsewhere the same sums in C, and so at -Os:
 * gcc then keeps Thumb-1 code out of the callee-saved high registers (stacking them costs size; gcc 12 gives an
 * asm one high register at -Os, five at -O2), and the asm fails with "inconsistent operand constraints". */
#if defined(__thumb__) && !defined(__thumb2__) && defined(__GNUC__) && !defined(__OPTIMIZE_SIZE__)
#define TINYC_U8X4_STEP(j)                                                                                    \
  "ldrb %[x], [%[xp], #" #j "]\n\t"                                                                           \
  "ldrb %[w0], [%[wp], #(4*" #j ")]\n\t"                                                                      \
  "ldrb %[w1], [%[wp], #(4*" #j "+1)]\n\t"                                                                    \
  "ldrb %[w2], [%[wp], #(4*" #j "+2)]\n\t"                                                                    \
  "ldrb %[w3], [%[wp], #(4*" #j "+3)]\n\t"                                                                    \
  "muls %[w0], %[x], %[w0]\n\t"                                                                               \
  "muls %[w1], %[x], %[w1]\n\t"                                                                               \
  "muls %[w2], %[x], %[w2]\n\t"                                                                               \
  "muls %[w3], %[x], %[w3]\n\t"                                                                               \
  "add %[a0], %[w0]\n\t"                                                                                      \
  "add %[a1], %[w1]\n\t"                                                                                      \
  "add %[a2], %[w2]\n\t"                                                                                      \
  "add %[a3], %[w3]\n\t"
#define TINYC_GEMM_U8X4(a0, a1, a2, a3, u, w, k8)                                                             \
  do {                                                                                                        \
    const uint8_t *xp_ = (u), *const xe_ = (u) + (k8);                                                        \
    uint32_t x_, w0_, w1_, w2_, w3_;                                                                          \
    __asm__ volatile(".syntax unified\n1:\n\t" TINYC_U8X4_STEP(0) TINYC_U8X4_STEP(1) TINYC_U8X4_STEP(2)      \
                     TINYC_U8X4_STEP(3) TINYC_U8X4_STEP(4) TINYC_U8X4_STEP(5) TINYC_U8X4_STEP(6)              \
                     TINYC_U8X4_STEP(7) "adds %[xp], #8\n\t"                                                  \
                     "adds %[wp], #32\n\t"                                                                    \
                     "cmp %[xp], %[xe]\n\t"                                                                   \
                     "bne 1b\n\t"                                                                             \
                     : [xp] "+l"(xp_), [wp] "+l"(w), [x] "=&l"(x_), [w0] "=&l"(w0_), [w1] "=&l"(w1_),        \
                       [w2] "=&l"(w2_), [w3] "=&l"(w3_), [a0] "+h"(a0), [a1] "+h"(a1), [a2] "+h"(a2),        \
                       [a3] "+h"(a3)                                                                          \
                     : [xe] "h"(xe_)                                                                          \
                     : "cc", "memory");                                                                       \
  } while (0)
#else
#define TINYC_GEMM_U8X4(a0, a1, a2, a3, u, w, k8)                                                             \
  do {                                                                                                        \
    const uint8_t *xp_ = (u);                                                                                 \
    for (int k_ = 0; k_ < (k8); ++k_, (w) += 4) {                                                             \
      const uint32_t x_ = xp_[k_];                                                                            \
      (a0) += x_ * (w)[0];                                                                                    \
      (a1) += x_ * (w)[1];                                                                                    \
      (a2) += x_ * (w)[2];                                                                                    \
      (a3) += x_ * (w)[3];                                                                                    \
    }                                                                                                         \
  } while (0)
#endif

#endif
