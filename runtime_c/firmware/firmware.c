/* Console formatting, the cycle counter and exit for tinyc firmware (see tinyc_firmware.h). */
#include <stdint.h>
#include "tinyc_firmware.h"

void tinyc_print(const char *s) {
  while (*s) tinyc_console_putc(*s++);
}

void tinyc_print_u32(uint32_t v) {
  char buf[11];
  int i = 10;
  buf[i] = 0;
  do {
    buf[--i] = (char)('0' + v % 10u);
    v /= 10u;
  } while (v);
  tinyc_print(buf + i);
}

void tinyc_print_i32(int32_t v) {
  if (v < 0) {
    tinyc_console_putc('-');
    tinyc_print_u32(0u - (uint32_t)v);
  } else {
    tinyc_print_u32((uint32_t)v);
  }
}

void tinyc_print_hex_bytes(const void *data, uint32_t n) {
  static const char digits[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)data;
  for (uint32_t i = 0; i < n; ++i) {
    tinyc_console_putc(digits[p[i] >> 4]);
    tinyc_console_putc(digits[p[i] & 15u]);
  }
}

void tinyc_print_f32(float v) {
  /* Fixed point with 6 decimals below 1e6, else scientific-ish via scaling: for reading, not for parsing. */
  if (v != v) { tinyc_print("nan"); return; }
  if (v < 0.0f) { tinyc_console_putc('-'); v = -v; }
  if (v > 3.4e38f) { tinyc_print("inf"); return; }
  int exp10 = 0;
  while (v >= 1e6f) { v /= 10.0f; ++exp10; }
  uint32_t whole = (uint32_t)v;
  uint32_t frac = (uint32_t)((v - (float)whole) * 1e6f + 0.5f);
  if (frac >= 1000000u) { whole += 1u; frac -= 1000000u; }
  tinyc_print_u32(whole);
  tinyc_console_putc('.');
  for (uint32_t d = 100000u; d; d /= 10u) tinyc_console_putc((char)('0' + (frac / d) % 10u));
  if (exp10) { tinyc_console_putc('e'); tinyc_print_i32(exp10); }
}

#if defined(TINYC_CYCLES_DWT)
/* DWT cycle counter (ARMv7-M/ARMv8-M Architecture Reference Manual, Data Watchpoint and Trace unit). */
#define DEMCR      (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL   (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_LAR    (*(volatile uint32_t *)0xE0001FB0u)   /* Cortex-M7: DWT writes are ignored until unlocked */

void SysTick_Handler(void) {}

void tinyc_cycles_init(void) {
  DEMCR |= 1u << 24;        /* TRCENA: enable DWT */
  DWT_LAR = 0xC5ACCE55u;
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1u;           /* CYCCNTENA */
}

uint32_t tinyc_cycles(void) { return DWT_CYCCNT; }
#else
/* SysTick, clocked by the core (CLKSOURCE = 1), counting down from 2^24 - 1; its interrupt counts the wraps. */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { systick_wraps++; }

void tinyc_cycles_init(void) {
  SYST_RVR = 0xFFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 7u;            /* ENABLE | TICKINT | CLKSOURCE = processor clock */
  /* Writing CVR clears it; the counter loads RVR on its next tick. Until then it reads 0, which would count as
   * a full period: wait for the load. */
  while (SYST_CVR == 0) {}
}

uint32_t tinyc_cycles(void) {
  uint32_t wraps, value;
  do {   /* a wrap between the two reads shows as a changed count: read again */
    wraps = systick_wraps;
    value = SYST_CVR;
  } while (wraps != systick_wraps);
  return (wraps << 24) + (0xFFFFFFu - value);
}
#endif

#if defined(TINYC_EMULATION)
void tinyc_semihost_exit(int code) __attribute__((noreturn));

void tinyc_exit(int code) { tinyc_semihost_exit(code); }
#else
void tinyc_exit(int code) {
  (void)code;
  for (;;) __asm volatile("wfi");
}
#endif
