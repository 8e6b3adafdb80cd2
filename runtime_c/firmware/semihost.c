/* The emulation image's console: Arm semihosting (BKPT 0xAB on M-profile), which QEMU serves with
 * `-semihosting-config enable=on,target=native`. Output is line-buffered so each line costs one trap. */
#include <stdint.h>
#include "tinyc_firmware.h"

#define SYS_WRITE0        0x04
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static int semihost_call(int op, const void *arg) {
  register int r0 __asm("r0") = op;
  register const void *r1 __asm("r1") = arg;
  __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

static char line[128];
static unsigned line_len;

static void flush_line(void) {
  line[line_len] = 0;
  semihost_call(SYS_WRITE0, line);
  line_len = 0;
}

void tinyc_console_init(void) { line_len = 0; }

void tinyc_console_putc(char c) {
  line[line_len++] = c;
  if (c == '\n' || line_len == sizeof line - 1) flush_line();
}

void tinyc_semihost_exit(int code) __attribute__((noreturn));

void tinyc_semihost_exit(int code) {
  if (line_len) flush_line();
  /* SYS_EXIT_EXTENDED: QEMU exits with `code` as its own exit status. */
  const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
  semihost_call(SYS_EXIT_EXTENDED, block);
  for (;;) {}
}
