/* tinyc firmware support: console output, a cycle counter and exit, shared by the board image (UART console,
 * DWT or SysTick) and the emulation image (semihosting console, SysTick). No vendor SDK, no libc I/O. */
#ifndef TINYC_FIRMWARE_H
#define TINYC_FIRMWARE_H

#include <stdint.h>

/* Console: the board's UART (console.c) or QEMU semihosting (semihost.c). */
void tinyc_console_init(void);
void tinyc_console_putc(char c);

void tinyc_print(const char *s);
void tinyc_print_u32(uint32_t v);
void tinyc_print_i32(int32_t v);
void tinyc_print_hex_bytes(const void *data, uint32_t n);   /* two hex digits per byte, no separators */
void tinyc_print_f32(float v);                             /* about 7 significant digits */

/* Cycle counter, wrapping at 2^32: DWT CYCCNT (TINYC_CYCLES_DWT: Cortex-M4/M7/M33) or SysTick clocked by the
 * core with its wraps counted in SysTick_Handler (Cortex-M0+, and always under emulation). */
void tinyc_cycles_init(void);
uint32_t tinyc_cycles(void);

/* Stop: under emulation QEMU exits with `code`; on a board the core sleeps. */
void tinyc_exit(int code) __attribute__((noreturn));

#define TINYC_EXIT_FAULT 3   /* HardFault (e.g. an unaligned access with CCR.UNALIGN_TRP set) */

#endif
