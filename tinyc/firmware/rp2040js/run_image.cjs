#!/usr/bin/env node
/* Run a tinyc Pico board image (ELF, UF2 or raw .bin) on rp2040js's emulated RP2040 and print ONE JSON line.
 *
 *   node run_image.cjs IMAGE [--rp2040js DIR] [--stop-line PREFIX] [--max-cycles N] [--timeout-s S]
 *                            [--marker-addr ADDR]
 *
 * Used by tinyc/firmware/soc.py (`tinyc run --emulate --soc`); rp2040js (MIT) is a library here, installed by
 * `npm ci` into DIR/node_modules (DIR: --rp2040js, else $TINYC_RP2040JS, else this file's directory).
 *
 * Boot: there is no bootrom offline, so the run starts where the bootrom's hand-over after boot2 would:
 * VTOR = 0x10000100, SP = the word there, PC = the next word (boot2, the first 256 bytes, only calls bootrom
 * functions to set up XIP, which rp2040js serves without them).
 * Time: every executed instruction advances rp2040js's clock by its cycles at the current clk_sys (as the
 * firmware configured it through the CLOCKS/PLL registers), so SysTick counts exactly the core's cycles.
 * Cycles: rp2040js's core counter (core.cycles) at stores to the marker register (the RP2040's WATCHDOG
 * SCRATCH0, harmless on a real board), which the board image writes around the inference.
 * Faults: rp2040js never raises a HardFault itself (it logs and goes on), so this runner stops at what a real
 * Cortex-M0+ would fault on: undefined or unimplemented instructions, BKPT without a debugger, accesses to
 * unmapped addresses, unaligned word/halfword accesses, branches without the Thumb bit, instruction fetches
 * outside the loaded image and SRAM, and any exception but SysTick (the firmware uses no other).
 */
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const FLASH = 0x10000000;
const FLASH_MAX = 16 * 1024 * 1024;
const SRAM = 0x20000000;
const SRAM_BYTES = 264 * 1024;
const VECTORS = FLASH + 0x100; // after the 256-byte boot2 block
const WATCHDOG_SCRATCH0 = 0x4005800c;
const UF2_MAGIC0 = 0x0a324655;
const UF2_MAGIC1 = 0x9e5d5157;
const UF2_MAGIC_END = 0x0ab16f30;
const UF2_FLAG_NOT_MAIN_FLASH = 0x1;
const UF2_FLAG_FAMILY = 0x2000;
const RP2040_FAMILY = 0xe48bff56;
const CHUNK = 1 << 16; // instructions between budget/wall-clock checks
const EXCEPTION_NAMES = { 2: 'NMI', 3: 'HardFault', 11: 'SVCall', 14: 'PendSV' };

let result = null; // printed once, at exit
function emit(obj) {
  if (result === null) {
    result = obj;
    process.stdout.write(JSON.stringify(obj) + '\n');
  }
}
function hex(n) {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}

class Stop extends Error {
  constructor(obj) {
    super(obj.message);
    this.obj = obj;
  }
}

function parseArgs(argv) {
  const a = { image: null, dir: null, stopLine: null, maxCycles: 2e9, timeoutS: 600, marker: WATCHDOG_SCRATCH0 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Stop({ ok: false, kind: 'usage', message: `${k} needs a value` });
      return argv[++i];
    };
    if (k === '--rp2040js') a.dir = v();
    else if (k === '--stop-line') a.stopLine = v();
    else if (k === '--max-cycles') a.maxCycles = Number(v());
    else if (k === '--timeout-s') a.timeoutS = Number(v());
    else if (k === '--marker-addr') a.marker = Number(v()) >>> 0;
    else if (k.startsWith('--')) throw new Stop({ ok: false, kind: 'usage', message: `unknown option ${k}` });
    else a.image = k;
  }
  if (!a.image) throw new Stop({ ok: false, kind: 'usage', message: 'usage: run_image.cjs IMAGE [options]' });
  if (!(a.maxCycles > 0) || !(a.timeoutS > 0)) {
    throw new Stop({ ok: false, kind: 'usage', message: '--max-cycles and --timeout-s must be positive' });
  }
  return a;
}

function loadRp2040js(dir) {
  const base = path.resolve(dir || process.env.TINYC_RP2040JS || __dirname);
  const pkg = path.join(base, 'node_modules', 'rp2040js', 'package.json');
  if (!fs.existsSync(pkg)) {
    throw new Stop({ ok: false, kind: 'setup', message: `rp2040js is not installed in ${base}` });
  }
  const version = JSON.parse(fs.readFileSync(pkg, 'utf8')).version;
  const req = createRequire(path.join(base, 'package.json'));
  return { lib: req('rp2040js'), version, dir: base };
}

/* The image's bytes as [flash offset, Uint8Array] chunks. */
function imageChunks(file) {
  const buf = fs.readFileSync(file);
  const bad = (message) => new Stop({ ok: false, kind: 'image', message: `${path.basename(file)}: ${message}` });
  const chunks = [];
  const put = (addr, bytes, what) => {
    const off = addr - FLASH;
    if (off < 0 || off + bytes.length > FLASH_MAX) {
      throw bad(`${what} at ${hex(addr)} (${bytes.length} bytes) lies outside the flash window`);
    }
    chunks.push([off, bytes]);
  };
  if (buf.length >= 52 && buf.readUInt32BE(0) === 0x7f454c46) {
    if (buf[4] !== 1 || buf[5] !== 1 || buf.readUInt16LE(18) !== 40) throw bad('not a 32-bit little-endian ARM ELF');
    const phoff = buf.readUInt32LE(28);
    const phentsize = buf.readUInt16LE(42);
    const phnum = buf.readUInt16LE(44);
    for (let i = 0; i < phnum; i++) {
      const p = phoff + i * phentsize;
      if (p + 32 > buf.length) throw bad('truncated program header table');
      const [type, offset, , paddr, filesz] = [0, 4, 8, 12, 16].map((o) => buf.readUInt32LE(p + o));
      if (type !== 1 || filesz === 0) continue; // PT_LOAD with bytes; .bss and the stack have none
      if (offset + filesz > buf.length) throw bad('a segment runs past the end of the file');
      put(paddr, buf.subarray(offset, offset + filesz), 'a PT_LOAD segment'); // LMA: .data loads from flash
    }
    return { format: 'elf', chunks };
  }
  if (buf.length >= 512 && buf.readUInt32LE(0) === UF2_MAGIC0 && buf.readUInt32LE(4) === UF2_MAGIC1) {
    if (buf.length % 512) throw bad('UF2 size is not a multiple of 512 bytes');
    for (let b = 0; b < buf.length; b += 512) {
      const w = (o) => buf.readUInt32LE(b + o);
      if (w(0) !== UF2_MAGIC0 || w(4) !== UF2_MAGIC1 || w(508) !== UF2_MAGIC_END) throw bad(`UF2 block ${b / 512} has bad magic`);
      const flags = w(8);
      if (flags & UF2_FLAG_NOT_MAIN_FLASH) continue;
      if (flags & UF2_FLAG_FAMILY && w(28) !== RP2040_FAMILY) throw bad(`UF2 block ${b / 512} is for family ${hex(w(28))}, not the RP2040`);
      const size = w(16);
      if (size > 476) throw bad(`UF2 block ${b / 512} claims ${size} payload bytes`);
      put(w(12), buf.subarray(b + 32, b + 32 + size), `UF2 block ${b / 512}`);
    }
    return { format: 'uf2', chunks };
  }
  put(FLASH, buf, 'the raw image');
  return { format: 'bin', chunks };
}

function run(args) {
  const { lib, version, dir } = loadRp2040js(args.dir);
  const image = imageChunks(args.image);
  if (!image.chunks.length) throw new Stop({ ok: false, kind: 'image', message: `${path.basename(args.image)}: nothing to load` });

  const warnings = new Map(); // message -> count: rp2040js's notes about registers it does not model
  let pending = null; // the first fault seen during the current instruction
  const fault = (kind, detail, extra = {}) => {
    if (!pending) pending = { kind, detail, ...extra };
  };
  // rp2040js reports bus errors and unknown opcodes through its logger and carries on; a real M0+ faults.
  const logger = {
    debug() {},
    info() {},
    warn(component, message) {
      let m;
      if ((m = /Read from invalid memory address: ([0-9a-f]+)/.exec(message))) {
        fault('bad memory access', `read from unmapped address 0x${m[1]}`, { address: parseInt(m[1], 16) });
      } else if ((m = /Write to undefined address: ([0-9a-f]+)/.exec(message))) {
        fault('bad memory access', `write to unmapped address 0x${m[1]}`, { address: parseInt(m[1], 16) });
      } else if ((m = /Instruction at ([0-9a-f]+) is not implemented/.exec(message))) {
        fault('invalid instruction', 'an instruction ARMv6-M (or rp2040js) does not have');
      } else if (!/^Opcode: /.test(message)) {
        const key = `[${component}] ${message}`;
        warnings.set(key, (warnings.get(key) || 0) + 1);
      }
    },
    error(component, message) {
      fault(/not 32 bit aligned/.test(message) ? 'unaligned access' : 'peripheral error', `${component}: ${message}`);
    },
  };
  const noise = (...a) => {
    const key = a.join(' ');
    warnings.set(key, (warnings.get(key) || 0) + 1);
  };
  console.warn = console.log = console.info = console.debug = console.error = noise; // keep stdout one JSON line

  const mcu = new lib.RP2040();
  mcu.logger = logger;
  for (const [off, bytes] of image.chunks) mcu.flash.set(bytes, off);
  let codeLo = FLASH_MAX;
  let codeHi = 0;
  for (const [off, bytes] of image.chunks) {
    codeLo = Math.min(codeLo, off);
    codeHi = Math.max(codeHi, off + bytes.length);
  }
  codeLo += FLASH;
  codeHi += FLASH;
  const core = mcu.core;
  const clock = mcu.clock;

  // Alignment: ARMv6-M faults on unaligned word and halfword accesses; rp2040js would serve them.
  const r32 = core.readUint32.bind(core);
  const r16 = core.readUint16.bind(core);
  const w32 = core.writeUint32.bind(core);
  const w16 = core.writeUint16.bind(core);
  core.readUint32 = (a) => {
    if (a & 3) fault('unaligned access', `word read from ${hex(a)}`, { address: a >>> 0 });
    return r32(a);
  };
  core.readUint16 = (a) => {
    if (a & 1) fault('unaligned access', `halfword read from ${hex(a)}`, { address: a >>> 0 });
    return r16(a);
  };
  core.writeUint32 = (a, v) => {
    if (a & 3) fault('unaligned access', `word write to ${hex(a)}`, { address: a >>> 0 });
    w32(a, v);
  };
  core.writeUint16 = (a, v) => {
    if (a & 1) fault('unaligned access', `halfword write to ${hex(a)}`, { address: a >>> 0 });
    w16(a, v);
  };
  // BX/POP to an address without the Thumb bit: INVSTATE UsageFault, escalated to HardFault on the M0+.
  const bxWritePC = core.BXWritePC.bind(core);
  core.BXWritePC = (addr) => {
    const excReturn = core.IPSR !== 0 && addr >>> 28 === 0xf;
    if (!excReturn && !(addr & 1)) fault('invalid state', `branch to ${hex(addr)} without the Thumb bit`);
    bxWritePC(addr);
  };
  // The firmware enables SysTick only; any other exception is the firmware (or this run) going wrong.
  const exceptionEntry = core.exceptionEntry.bind(core);
  core.exceptionEntry = (n) => {
    if (n !== 15) {
      const name = EXCEPTION_NAMES[n] || (n >= 16 ? `IRQ ${n - 16}` : `exception ${n}`);
      fault(n === 3 ? 'HardFault' : 'unexpected exception', `${name} taken`);
    }
    exceptionEntry(n);
  };
  mcu.onBreak = (code) => {
    const at = (core.PC - core.breakRewind) >>> 0;
    const op = mcu.readUint16(at);
    if (op >> 8 === 0xbe) fault('invalid instruction', `BKPT #${code} with no debugger attached`);
    else fault('invalid instruction', `UDF #${code}, permanently undefined`);
  };

  // UART0 bytes arrive in onByte synchronously, inside the store to UARTDR.
  const uartBytes = [];
  let lineStart = 0;
  let stopped = null;
  const lines = []; // [text, core.cycles at its first byte]
  let lineCycles = 0;
  mcu.uart[0].onByte = (b) => {
    if (uartBytes.length === lineStart) lineCycles = core.cycles;
    uartBytes.push(b);
    if (b !== 10) return;
    const text = Buffer.from(uartBytes.slice(lineStart)).toString('latin1').replace(/\r?\n$/, '');
    lineStart = uartBytes.length;
    lines.push([text, lineCycles]);
    if (/^fault: /.test(text)) fault('firmware fault handler', text);
    else if (args.stopLine !== null && text.startsWith(args.stopLine)) stopped = stopped || 'stop line';
  };
  const markers = [];
  const watchdog = mcu.peripherals[(args.marker >>> 14) << 2];
  if (!watchdog) throw new Stop({ ok: false, kind: 'usage', message: `no peripheral at marker address ${hex(args.marker)}` });
  const markerOffset = args.marker & 0xfff;
  const wdWrite = watchdog.writeUint32.bind(watchdog);
  watchdog.writeUint32 = (offset, value) => {
    if (offset === markerOffset) markers.push({ value: value >>> 0, cycles: core.cycles });
    wdWrite(offset, value);
  };

  // clk_sys as the firmware configures it: time per cycle follows it, so SysTick (clocked by clk_sys in
  // rp2040js) and the core's cycle counter agree at any clock.
  // The history starts from rp2040js's defaults (125 MHz), not the chip's reset state (ring oscillator, clk_peri
  // stopped); the firmware's bring-up overwrites both.
  let nsPerCycle = 1e9 / mcu.clkSys;
  const clockChanges = [{ cycles: 0, clk_sys: mcu.clkSys, clk_peri: mcu.clkPeri }];
  const updateClocks = mcu.updateClocks.bind(mcu);
  mcu.updateClocks = () => {
    updateClocks();
    nsPerCycle = 1e9 / mcu.clkSys;
    const sys = mcu.clocks.sysFreq;
    const peri = mcu.clocks.periFreq;
    const last = clockChanges[clockChanges.length - 1];
    if (sys !== last.clk_sys || peri !== last.clk_peri) clockChanges.push({ cycles: core.cycles, clk_sys: sys, clk_peri: peri });
  };

  // The bootrom's hand-over after boot2.
  const sp = mcu.readUint32(VECTORS);
  const reset = mcu.readUint32(VECTORS + 4);
  core.VTOR = VECTORS;
  const inCode = (pc) => (pc >= codeLo && pc < codeHi) || (pc >= SRAM && pc < SRAM + SRAM_BYTES);
  const base = {
    image: { path: args.image, format: image.format, lo: codeLo, hi: codeHi },
    rp2040js: version,
    rp2040js_dir: dir,
    vtor: VECTORS,
    initial_sp: sp,
    reset_vector: reset,
  };
  core.SP = sp;
  core.PC = reset & ~1;

  const t0 = process.hrtime.bigint();
  const wall = () => Number(process.hrtime.bigint() - t0) / 1e9;
  let sleepCycles = 0;
  let pc = core.PC;
  // boot2 enters the reset handler with BX: without the Thumb bit that is an INVSTATE fault.
  if (!(reset & 1)) fault('invalid state', `the reset vector ${hex(reset)} lacks the Thumb bit`);
  const finish = (extra) => {
    const seconds = wall();
    const cycles = core.cycles + sleepCycles;
    return {
      ...base,
      uart: Buffer.from(uartBytes).toString('latin1'),
      lines,
      markers,
      cycles,
      // As the CLOCKS and PLL registers define them (0: stopped or an unmodelled source).
      clk_sys: mcu.clocks.sysFreq,
      clk_peri: mcu.clocks.periFreq,
      clock_changes: clockChanges.slice(0, 50),
      clk_ref: mcu.clocks.refFreq,
      pll_sys_hz: mcu.pllSys.frequency,
      wall_s: seconds,
      cycles_per_s: seconds > 0 ? Math.round(core.cycles / seconds) : null,
      warnings: [...warnings].slice(0, 20).map(([m, n]) => (n > 1 ? `${m} (x${n})` : m)),
      ...extra,
    };
  };
  for (;;) {
    for (let i = 0; i < CHUNK && !pending; i++) {
      if (core.waiting) {
        const ns = clock.nanosToNextAlarm;
        if (!(ns > 0)) {
          throw new Stop(finish({ ok: false, kind: 'hang', pc, detail: 'WFI/WFE with nothing left to wake the core' }));
        }
        clock.tick(ns);
        sleepCycles += Math.round(ns / nsPerCycle);
        continue;
      }
      pc = core.PC;
      if (!inCode(pc)) {
        fault('bad memory access', pc < 0x4000 ? `instruction fetch from ${hex(pc)}: the bootrom, which is not loaded (and not called by tinyc firmware)`
            : `instruction fetch from ${hex(pc)}, outside the image (${hex(codeLo)}..${hex(codeHi)}) and SRAM`);
      } else {
        clock.tick(core.executeInstruction() * nsPerCycle);
      }
      if (pending || stopped) break;
    }
    if (pending) {
      // A Cortex-M0+ takes a HardFault for each of these; it locks up instead when the fault comes from the NMI or
      // HardFault handler, or when the HardFault cannot push its frame (SP outside SRAM).
      const inHandler = core.IPSR === 2 || core.IPSR === 3;
      const spOk = core.SP >= SRAM + 32 && core.SP <= SRAM + SRAM_BYTES;
      let { kind, detail } = pending;
      if (inHandler || !spOk) {
        detail = inHandler ? `${kind} inside the ${EXCEPTION_NAMES[core.IPSR]} handler: ${detail}`
          : `${kind}: ${detail}; SP ${hex(core.SP)} leaves no room for the HardFault's frame`;
        kind = 'lockup';
      }
      throw new Stop(finish({ ok: false, kind: 'fault', fault: kind, pc, ipsr: core.IPSR, detail, address: pending.address }));
    }
    if (stopped) return finish({ ok: true, stop: stopped, pc });
    if (core.cycles + sleepCycles >= args.maxCycles) {
      throw new Stop(finish({ ok: false, kind: 'hang', pc, detail: `the budget of ${args.maxCycles.toLocaleString('en-US')} cycles ran out before the stop line` }));
    }
    if (wall() > args.timeoutS) {
      throw new Stop(finish({ ok: false, kind: 'hang', pc, detail: `${args.timeoutS} s of wall time ran out before the stop line` }));
    }
  }
}

function main() {
  try {
    const args = parseArgs(process.argv.slice(2));
    const r = run(args);
    emit(r);
    process.exitCode = 0;
  } catch (e) {
    if (e instanceof Stop) {
      emit(e.obj);
      process.exitCode = e.obj.kind === 'usage' ? 2 : 1;
    } else {
      const where = e && e.stack ? String(e.stack).split('\n')[1] : '';
      emit({ ok: false, kind: 'internal', message: `${e && e.name}: ${e && e.message}`.slice(0, 300), where: (where || '').trim() });
      process.exitCode = 1;
    }
  }
}

main();
