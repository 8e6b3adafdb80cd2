/* tinyc's RP2040 second-stage boot block ("boot2"): the first 256 bytes of flash.
 *
 * Written for tinyc from the RP2040 datasheet; the assembled bytes are stored in tinyc/firmware/rp_boot.py
 * (RP2040_BOOT2_CODE) and tests/firmware/test_rp_boot.py re-assembles this file to check they have not drifted:
 *
 *   arm-none-eabi-gcc -mcpu=cortex-m0plus -mthumb -nostdlib -c boot2_rp2040.S -o boot2.o
 *   arm-none-eabi-objcopy -O binary -j .text boot2.o boot2.bin
 *
 * How it is entered (RP2040 datasheet section 2.8.1, boot sequence / flash second stage): the bootrom reads the
 * first 256 bytes of flash with standard 03h serial reads into the top of SRAM (0x20041f00), checks the CRC32 of
 * the first 252 bytes against the last 4 (tinyc/firmware/rp_boot.py appends it) and branches there with lr = 0.
 * Runtimes may also call boot2 again as an ordinary function (lr != 0) to restore XIP after programming flash.
 *
 * What it does: the simplest configuration that works with every flash chip. Instead of programming the SSI for a
 * fast quad mode, it calls the bootrom's own flash_enter_cmd_xip (table code 'C','X', datasheet section 2.8.3),
 * which sets the SSI up so that each XIP access becomes a plain 03h serial read -- the same command the bootrom
 * just used successfully. The SCK divider the bootrom chose (it is left unchanged) is conservative, BAUDR = 6, so
 * this stays valid when the firmware raises clk_sys to 125 MHz: 20.8 MHz SCK, within the W25Q16JV's 50 MHz for 03h. Slow XIP is fine for tinyc: the cache is on and hot loops
 * and weights are small.
 *
 * Then: entered from the bootrom -> point VTOR at the vector table at 0x10000100 (right after this block), load
 * the main stack pointer and the reset handler from it, and jump; called as a function -> return.
 *
 * Position independent (PC-relative literals only), so it runs wherever it was copied.
 */

    .syntax unified
    .cpu cortex-m0plus
    .thumb

    .text
    .balign 4
    .global tinyc_boot2_entry
    .type tinyc_boot2_entry, %function
    .thumb_func
tinyc_boot2_entry:
    /* Save the caller's lr (0 from the bootrom); r4 only keeps the stack 8-byte aligned (AAPCS) for the ROM calls. */
    push    {r4, lr}

    /* Bootrom contents (datasheet section 2.8.3): the halfword at 0x14 is a 16-bit pointer to the public function
     * table, the halfword at 0x18 a 16-bit pointer to rom_table_lookup(table, code), which returns the address
     * (Thumb bit set) of the function whose two-character code is code = c1 | c2 << 8. */
    movs    r0, #0x14
    ldrh    r0, [r0]                /* r0 = function table */
    movs    r2, #0x18
    ldrh    r2, [r2]                /* r2 = rom_table_lookup */
    ldr     r1, =CODE_CX            /* r1 = 'C' | 'X' << 8 */
    blx     r2                      /* r0 = flash_enter_cmd_xip */
    blx     r0                      /* XIP now issues 03h serial reads */

    /* Who called us? The lr saved at entry sits just above r4 on the stack. */
    ldr     r0, [sp, #4]
    cmp     r0, #0
    beq     enter_image
    pop     {r4, pc}                /* called as a function: return (restores r4) */

enter_image:
    /* Armv6-M: VTOR (0xE000ED08) makes exceptions use the image's own vector table. */
    ldr     r0, =VECTOR_TABLE
    ldr     r1, =VTOR
    str     r0, [r1]
    /* Word 0 of the table is the initial main stack pointer, word 1 the reset handler (Thumb bit set). */
    ldmia   r0!, {r1, r2}
    msr     msp, r1
    bx      r2

    .equ    CODE_CX, 0x5843         /* 'C' = 0x43, 'X' = 0x58 */
    .equ    VTOR, 0xE000ED08        /* System Control Block: Vector Table Offset Register */
    .equ    VECTOR_TABLE, 0x10000100 /* XIP base 0x10000000 + this 256-byte block */

    .balign 4
    .ltorg
    .size tinyc_boot2_entry, . - tinyc_boot2_entry
