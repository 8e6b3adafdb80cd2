/* Reset and the vector table for tinyc firmware on any Cortex-M (ARMv6-M, ARMv7-M, ARMv8-M Mainline).
 * Only the 16 system exceptions are wired: the firmware uses no peripheral interrupt. The linker script
 * (board.ld or emulate.ld) provides the symbols below. */
#include <stdint.h>
#include "tinyc_firmware.h"

extern uint32_t __stack_top[];
extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
int main(void);
void tinyc_reset(void) __attribute__((noreturn));
void tinyc_fault(void);
void tinyc_unused_exception(void);
void SysTick_Handler(void);

#define SCB_CCR   (*(volatile uint32_t *)0xE000ED14u)   /* Configuration and Control Register */
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)   /* Coprocessor Access Control Register */

typedef void (*tinyc_vector)(void);

__attribute__((section(".vectors"), used)) const tinyc_vector tinyc_vectors[16] = {
  (tinyc_vector)(uintptr_t)__stack_top,   /* initial MSP */
  tinyc_reset,
  tinyc_fault,              /* NMI */
  tinyc_fault,              /* HardFault */
  tinyc_fault,              /* MemManage (ARMv7-M/v8-M) */
  tinyc_fault,              /* BusFault */
  tinyc_fault,              /* UsageFault */
  tinyc_fault,              /* SecureFault (ARMv8-M) */
  0, 0, 0,
  tinyc_unused_exception,   /* SVCall */
  tinyc_unused_exception,   /* DebugMonitor */
  0,
  tinyc_unused_exception,   /* PendSV */
  SysTick_Handler,
};

void tinyc_reset(void) {
  /* Word copies: the linker script aligns these sections to 4 bytes. */
  const uint32_t *src = __data_load;
  for (uint32_t *dst = __data_start; dst < __data_end;) *dst++ = *src++;
  for (uint32_t *dst = __bss_start; dst < __bss_end;) *dst++ = 0;
#if defined(__ARM_FP)
  /* Full access to CP10/CP11 (the FPU) before any floating-point instruction runs. */
  SCB_CPACR |= 0xFu << 20;
  __asm volatile("dsb\n\tisb" ::: "memory");
#endif
#if defined(TINYC_TRAP_UNALIGNED)
  /* Cortex-M0+ builds under emulation run on a Cortex-M3, which forgives unaligned word accesses that fault on
   * a real M0+ (ARMv6-M always traps them); UNALIGN_TRP makes the M3 fault too. */
  SCB_CCR |= 1u << 3;
  __asm volatile("dsb\n\tisb" ::: "memory");
#endif
  tinyc_exit(main());
}

void tinyc_fault(void) {
  tinyc_print("\nfault: the core took a fault exception (HardFault or similar)\n");
  tinyc_exit(TINYC_EXIT_FAULT);
}

void tinyc_unused_exception(void) {
  tinyc_print("\nfault: unexpected exception\n");
  tinyc_exit(TINYC_EXIT_FAULT);
}
