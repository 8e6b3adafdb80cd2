"""Fast int8 depthwise conv rules (templates/int8_fast/depthwise*.c.j2): depth multiplier 1, any kernel size,
stride, dilation and padding. Bit-exact twins of templates/int8/conv2d.c.j2 (groups > 1) and
templates/int8/depthwise_in_place.c.j2. Input zero point folded into the bias: Σ (x - zp) w + b =
Σ x w + (b - zp Σ w); requantization by tinyc_requantize_fast when gemm_pack.fast_mbqm proves it exact (on the
DSP path from doubled weights and bias: the accumulator is already the 2 acc SMMULR wants; the output zero
point is folded into the rounding constant when nothing can overflow), else tinyc_requantize.

**Planar kernel** (`depthwise.c.j2`, the usual one). Channel after channel: the channel's input rows are copied
into a buffer in the kernel scratch `s`, padded with the input zero point (pad rows and columns are written
once per layer), so output pixels need no bounds checks at all: a padded tap reads the zero point, which
contributes nothing. When the padded plane fits `buf_rows` (ROWS_BUDGET bytes or 1/16 of the input tensor) the
whole channel is copied first; otherwise the rows an output row needs are appended as it goes and, when the
buffer is full, the rows still needed move back to its start. Either way the window's rows are contiguous from
one pointer, so every tap is a compile-time offset. DSP path: one unaligned word of a buffer row is four
neighbouring pixels; SXTB16 / SXTB16 ROR 8 give the pairs (x0, x2) and (x1, x3), one SMLAD multiplies a pair
against two taps two columns apart (weights re-laid out at compile time as int16 pairs (w_t, w_t+2)), a lone
tap is one SMLABB / SMLATB. `row_plan` chooses which words to load and how to pair the taps, `_choose_group` how
many output pixels one step computes (3x3 stride 1: 2 to 5 pixels, one load, two unpacks and two MACs per pixel
and kernel row); on DSP cores each step is one asm block (`_asm_group`: loads, MACs, requantization, SSAT,
stores) so that the compiler cannot spill, and the C intrinsics run elsewhere (host emulation). Plain path
(Cortex-M0+): the buffer holds x ^ 0x80 (unsigned: every load is an LDRB with an immediate offset) and the bias
absorbs the 128 Σ w; one MULS per tap with int32 weights, tinyc_requantize_halves (no 64-bit multiply).

Written over its input (k.in_place, tinyc/schedule/overlap.py): channel c's outputs may only overwrite input
bytes no longer needed. Every input row is copied into the buffer before any output row that needs it, so an
output row can go straight to y when the bytes it covers are channel-c bytes (the lead is a whole number of
pixels) of input rows already copied (always, when the whole channel is copied first); `_direct_ok` checks that
at compile time. Otherwise an in-place (kind "depthwise") layer computes each channel into the scratch plane `t`
and stores it afterwards, as the reference does, and an overlapped (kind "overlap") one takes the raster kernel.

**Raster kernel** (`depthwise_raster.c.j2`): the reference's raster order, pixel after pixel with all channels;
interior pixels with unrolled taps at literal offsets and no bounds checks, border pixels through per-tap
pointers (padded taps read a row of the input zero point). DSP path: four channels per word, SMLABB / SMLATT
against per-tap weight words (w[c], w[c + 2]), an interior pixel's group of four channels one asm block. Used
for an overlap the planar kernel cannot keep, and where it is estimated cheaper (stride 2: no copies). It leaves
the scratch `s` unused (`work_bytes` is asked before the plan picks a kind).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ..quant import params as qp
from . import gemm_pack

GROUP = 2           # output pixels per step of the planar kernel's inner loop (DSP path)
# Its input rows are channel-major (int8_fast.PLANAR_ROWS_OUT: a fused block's GEMM row kernel wrote them so): the
# planar kernel copies each channel's run of a row contiguously, in words, instead of gathering every C-th byte
PLANAR_ROWS_IN = "planar_rows_in"
ROWS_BUDGET = 256   # bytes of padded input rows the planar kernel may keep, at least (or 1/16 of the input tensor)


@dataclass(frozen=True)
class Geo:
    ih: int
    iw: int
    c: int
    oh: int
    ow: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    pb: int
    pr: int
    small: bool = False         # keep the fewest buffer rows: the raster kernel is expected unless in place

    @property
    def span(self) -> int:          # rows of one output row's window
        return (self.kh - 1) * self.dh + 1

    @property
    def width(self) -> int:         # padded columns the outputs read
        return (self.ow - 1) * self.sw + (self.kw - 1) * self.dw + 1

    @property
    def cols(self) -> int:          # input columns copied into a buffer row
        return max(0, min(self.iw, self.width - self.pl))

    @property
    def new_rows(self) -> int:      # rows each output row after the first copies
        return min(self.sh, self.span)

    @property
    def rows_total(self) -> int:    # padded input rows copied per channel
        return (self.oh - 1) * self.new_rows + self.span

    @property
    def buf_rows(self) -> int:
        """Rows of the planar kernel's buffer: the whole channel when it fits the budget (ROWS_BUDGET bytes or
        1/16 of the input tensor, whichever is larger), else as many rows as fit, at least enough that the rows
        still needed move back to the start (once every few output rows) without overlapping themselves."""
        budget = 0 if self.small else max(ROWS_BUDGET, self.ih * self.iw * self.c // 16)
        if self.rows_total * self.width <= budget:
            return self.rows_total
        return min(self.rows_total, max(2 * self.span, budget // self.width))

    @property
    def whole(self) -> bool:
        """The buffer holds the whole padded channel: copied at once, before any output of the channel."""
        return self.buf_rows == self.rows_total and self.sh <= self.span

    @property
    def buf_bytes(self) -> int:     # + 3 bytes a last word load may read past the last row
        return (self.buf_rows * self.width + 3 + 3) // 4 * 4


def geometry(g, node) -> Geo | None:
    """The layer's geometry when the fast depthwise kernel applies (int8 in and out, int8 symmetric weights,
    int32 or no bias, depth multiplier 1), else None."""
    from .int8_fast import _bias, _int8_weights, _io_int8, is_depthwise
    if not is_depthwise(g, node) or not _io_int8(g, node):
        return None
    if _int8_weights(g, node) is None or _bias(g, node) is False:
        return None
    _, ih, iw, c = g.tensors[node.inputs[0]].shape
    _, oh, ow, _ = g.tensors[node.outputs[0]].shape
    wshape = g.tensors[node.inputs[1]].shape
    if len(wshape) != 4 or wshape[0] != c or wshape[3] != 1:
        return None
    a = node.attrs
    pt, pl, pb, pr = (int(p) for p in a["pads"])
    geo = Geo(ih, iw, c, oh, ow, wshape[1], wshape[2], a["strides"][0], a["strides"][1], a["dilations"][0],
              a["dilations"][1], pt, pl, pb, pr)
    if min(geo.oh, geo.ow) < 1 or geo.span * geo.width > 4000:
        return None             # keep every tap offset an immediate
    return geo


def work_bytes(g, node) -> int:
    """Kernel scratch of the fast depthwise kernel: the planar kernel's row buffer, reserved whatever in-place
    kind the planner picks later (the raster kernel leaves it unused; where the raster kernel is expected, the
    buffer is the smallest the planar kernel can work with, for a layer planned in place)."""
    layer = _layer(g, node)
    return layer["geo"].buf_bytes if layer is not None else 0


# -- the planar kernel's horizontal plan ---------------------------------------------------------------------

@dataclass(frozen=True)
class RowPlan:
    """How one kernel row's taps of `outputs` neighbouring output pixels are multiplied (DSP path).
    words: byte offsets (from the group's first input column) of the 32-bit loads; vecs: (word index, 'lo' |
    'ror8', position) of the used SXTB16 results, position = the column of their low halfword; ops[o]: per
    output, ('pair', vec, t) for SMLAD of (x[p], x[p + 2]) against taps (t, t + 2 dilations apart, i.e. two
    columns apart); ('lo' | 'hi', vec, t) for one halfword against tap t; ('byte', column, t) for a byte load."""
    outputs: int
    words: tuple
    vecs: tuple
    ops: tuple
    cost: int



def _pairs_for(taps: dict, avail: set) -> tuple[list, set]:
    """taps: column -> tap index of one output. Greedy left-to-right matching of columns (p, p + 2) whose
    vector (x[p], x[p + 2]) is available (optimal on each chain p, p + 2, p + 4, ...)."""
    used, pairs = set(), []
    for p in sorted(taps):
        if p in used or p + 2 not in taps or p + 2 in used or p not in avail:
            continue
        pairs.append((p, taps[p], taps[p + 2]))
        used |= {p, p + 2}
    return pairs, used


def _evaluate(outputs: list, words: tuple):
    """Cost and ops of computing `outputs` (column -> tap dicts) from the 32-bit loads at `words`."""
    avail = {}
    for i, w in enumerate(words):
        avail.setdefault(w, (i, "lo"))
        avail.setdefault(w + 1, (i, "ror8"))
    used_vecs, ops, singles_todo = {}, [], []
    for taps in outputs:
        pairs, used = _pairs_for(taps, set(avail))
        for p, _, _ in pairs:
            used_vecs[p] = avail[p]
        ops.append([("pair", p, t, t2) for p, t, t2 in pairs])
        singles_todo.append([(p, t) for p, t in sorted(taps.items()) if p not in used])
    loads = 0
    for o, singles in enumerate(singles_todo):
        for p, t in singles:
            if p in used_vecs:
                ops[o].append(("lo", p, t, None))
            elif p - 2 in used_vecs:
                ops[o].append(("hi", p - 2, t, None))
            elif p in avail:
                used_vecs[p] = avail[p]
                ops[o].append(("lo", p, t, None))
            elif p - 2 in avail:
                used_vecs[p - 2] = avail[p - 2]
                ops[o].append(("hi", p - 2, t, None))
            else:
                ops[o].append(("byte", p, t, None))
                loads += 1
    word_used = {i for i, _ in used_vecs.values()}
    keys = {("pair", t) if kind == "pair" else ("one", t) for o in ops for kind, _, t, _ in o}
    # loads, unpacks, multiply-accumulates, byte loads, and the weight words (two per LDRD)
    cost = len(word_used) + len(used_vecs) + sum(len(o) for o in ops) + loads + (len(keys) + 1) // 2
    return cost, used_vecs, ops, word_used


@lru_cache(maxsize=512)
def row_plan(outputs: int, sw: int, dw: int, kw: int, max_keys: int | None = None) -> RowPlan:
    """The cheapest (loads + unpacks + multiplies + weight words) way found to compute one kernel row of
    `outputs` neighbouring output pixels; with `max_keys`, among the plans using at most that many weight words
    (fewer registers), if any."""
    cols = [{o * sw + t * dw: t for t in range(kw)} for o in range(outputs)]
    last = max(max(c) for c in cols)
    best = None
    for n in range(0, min(last + 1, 5) + 1):
        for words in itertools.combinations(range(0, last + 1), n):
            cost, used_vecs, ops, word_used = _evaluate(cols, words)
            nkeys = len({("pair", op[2]) if op[0] == "pair" else ("one", op[2]) for o in ops for op in o})
            key = (max_keys is not None and nkeys > max_keys, cost, max(words, default=0))
            if best is None or key < best[0]:
                best = (key, words, used_vecs, ops, word_used)
    (_, cost, _), words, used_vecs, ops, word_used = best
    kept = [i for i in range(len(words)) if i in word_used]
    renumber = {i: j for j, i in enumerate(kept)}
    vecs = tuple(sorted((renumber[i], kind, p) for p, (i, kind) in used_vecs.items()))
    return RowPlan(outputs, tuple(words[i] for i in kept), vecs, tuple(tuple(o) for o in ops), cost)


def _weight_keys(plans) -> list:
    """The distinct weight words the plans' ops use, per kernel row: ('pair', t, t2) -> (w[t], w[t2]) as int16
    halves, ('one', t) -> w[t] in the low half."""
    keys = []
    for plan in plans:
        for out in plan.ops:
            for kind, _, t, t2 in out:
                key = ("pair", t, t2) if kind == "pair" else ("one", t, None)
                if key not in keys:
                    keys.append(key)
    return keys


def _key_of(op) -> tuple:
    kind, _, t, t2 = op
    return ("pair", t, t2) if kind == "pair" else ("one", t, None)


def _packed_weights(w: np.ndarray, keys: list) -> np.ndarray:
    """int32 [C, kh, len(keys)] weight words (w: int8 [C, kh, kw])."""
    wl = w.astype(np.int64)
    out = np.zeros((w.shape[0], w.shape[1], len(keys)), np.int64)
    for j, (kind, t, t2) in enumerate(keys):
        lo = wl[:, :, t] & 0xFFFF
        hi = wl[:, :, t2] if kind == "pair" else 0
        out[:, :, j] = lo + hi * 65536
    return out.astype(np.int32)


def _dsp_lines(plan: RowPlan, geo: Geo, keys: list, acc: list) -> list:
    """C statements of one group (plan.outputs outputs at `g`) over all kernel rows, DSP path."""
    lines = []
    for ky in range(geo.kh):
        row = ky * geo.dh * geo.width
        body = []
        for j, off in enumerate(plan.words):
            body.append(f"const uint32_t u{j} = tinyc_load32(g + {row + off});")
        for j, kind, p in plan.vecs:
            fn = "tinyc_sxtb16" if kind == "lo" else "tinyc_sxtb16_ror8"
            body.append(f"const uint32_t v{p} = {fn}(u{j});")
        for o, ops in enumerate(plan.ops):
            for op in ops:
                kind, p = op[0], op[1]
                wv = f"(uint32_t)wc[{PRM + ky * len(keys) + keys.index(_key_of(op))}]"
                if kind == "pair":
                    body.append(f"{acc[o]} = tinyc_smlad(v{p}, {wv}, {acc[o]});")
                elif kind == "lo":
                    body.append(f"{acc[o]} = tinyc_smlabb(v{p}, {wv}, {acc[o]});")
                elif kind == "hi":
                    body.append(f"{acc[o]} = tinyc_smlatb(v{p}, {wv}, {acc[o]});")
                else:
                    body.append(f"{acc[o]} = tinyc_smlabb((uint32_t)(int32_t)g[{row + p}], {wv}, {acc[o]});")
        lines.append("{ " + " ".join(body) + " }")
    return lines


PRM = 5               # per-channel parameters ahead of the channel's weight words in the DSP path's table
ASM_OPERANDS = 12      # registers one asm group may ask for (r0-r12 and lr, minus what the loop around it keeps)


def _asm_requant(a: str, m: str, rs: str, rz: str, out_zp: int, zp_folded: bool, lo: int, hi: int) -> list:
    """tinyc_requantize_doubled(a, m, rs, rz), the zero point unless folded into rz, SSAT and the activation's
    clamp, in place in register a."""
    code = [f"smmulr {a}, {a}, {m}", f"add {a}, {a}, {a}, asr #31", f"add {a}, {a}, {rz}", f"asr {a}, {a}, {rs}"]
    if not zp_folded:
        code.append(f"add {a}, {a}, #{out_zp}")
    code.append(f"ssat {a}, #8, {a}")
    if lo > -128:
        code += [f"cmp {a}, #{lo}", "it lt", f"movlt {a}, #{lo}"]
    if hi < 127:
        code += [f"cmp {a}, #{hi}", "it gt", f"movgt {a}, #{hi}"]
    return code


def _asm_group(plan: RowPlan, geo: Geo, keys: list, ostep: int, out_zp: int, zp_folded: bool, lo: int,
               hi: int) -> tuple[list, int] | None:
    """One group of the DSP path as Cortex-M asm (the C intrinsics' register allocation spills on 14 registers):
    bias, every kernel row's loads, unpacks and multiply-accumulates, then tinyc_requantize_doubled, SSAT,
    the activation's clamp and the stores. Operands: %[g] (window), %[wc] (the channel's parameters, PRM words:
    bias, plain bias, multiplier, shift, rounding; then its weight words),     parameters), %[o] (first output), %[a<n>] accumulators, %[t<n>] temporaries. Returns (asm lines, number of
    temporaries), or None when it needs more registers than ASM_OPERANDS."""
    n = plan.outputs
    code, live, peak = [], {}, [0]             # virtual register -> physical temporary; temporaries made
    free = []

    def alloc(v):
        if not free:
            free.append(f"t{peak[0]}")
            peak[0] += 1
        live[v] = free.pop()
        return live[v]

    def release(v):
        free.append(live.pop(v))

    for ky in range(geo.kh):
        row = ky * geo.dh * geo.width
        base = 4 * (PRM + ky * len(keys))
        ops = [(o, op) for o, out in enumerate(plan.ops) for op in out]
        need = {}                               # virtual register -> ops still to use it
        for o, op in ops:
            src = ("v", op[1]) if op[0] != "byte" else ("b", op[1])
            need[src] = need.get(src, 0) + 1
            need[("w", _key_of(op))] = need.get(("w", _key_of(op)), 0) + 1
        row_keys = sorted({keys.index(_key_of(op)) for _, op in ops})
        if len(row_keys) <= 4:                  # every weight word of the row at once, LDRD where two are adjacent
            i = 0
            while i < len(row_keys):
                k = row_keys[i]
                if i + 1 < len(row_keys) and row_keys[i + 1] == k + 1:
                    a, b = alloc(("w", keys[k])), alloc(("w", keys[k + 1]))
                    code.append(f"ldrd %[{a}], %[{b}], [%[wc], #{base + 4 * k}]")
                    i += 2
                else:
                    code.append(f"ldr %[{alloc(('w', keys[k]))}], [%[wc], #{base + 4 * k}]")
                    i += 1
        done = set()
        vec_of_word = {}
        for j, kind, p in plan.vecs:
            vec_of_word.setdefault(j, []).append((kind, p))

        def use(v):
            need[v] -= 1
            if not need[v]:
                release(v)

        for j, off in enumerate(plan.words):
            u = alloc(("u", j))
            code.append(f"ldr %[{u}], [%[g], #{row + off}]")
            vs = dict(vec_of_word.get(j, []))
            if "lo" in vs and "ror8" in vs:
                code.append(f"sxtb16 %[{alloc(('v', vs['lo']))}], %[{u}]")
                code.append(f"sxtb16 %[{u}], %[{u}], ror #8")
                live[("v", vs["ror8"])] = live.pop(("u", j))
            elif "lo" in vs:
                code.append(f"sxtb16 %[{u}], %[{u}]")
                live[("v", vs["lo"])] = live.pop(("u", j))
            else:
                code.append(f"sxtb16 %[{u}], %[{u}], ror #8")
                live[("v", vs["ror8"])] = live.pop(("u", j))
            ready = [(i, (o, op)) for i, (o, op) in enumerate(ops) if i not in done and op[0] != "byte"
                     and ("v", op[1]) in live]
            for i, (o, op) in ready:
                w = ("w", _key_of(op))
                if w not in live:
                    code.append(f"ldr %[{alloc(w)}], [%[wc], #{base + 4 * keys.index(_key_of(op))}]")
                ins = {"pair": "smlad", "lo": "smlabb", "hi": "smlatb"}[op[0]]
                code.append(f"{ins} %[a{o}], %[{live[('v', op[1])]}], %[{live[w]}], %[a{o}]")
                done.add(i)
                use(("v", op[1]))
                use(w)
        for i, (o, op) in enumerate(ops):
            if i in done:
                continue
            w = ("w", _key_of(op))
            if w not in live:
                code.append(f"ldr %[{alloc(w)}], [%[wc], #{base + 4 * keys.index(_key_of(op))}]")
            b = alloc(("b", op[1]))
            code.append(f"ldrsb %[{b}], [%[g], #{row + op[1]}]")
            code.append(f"smlabb %[a{o}], %[{b}], %[{live[w]}], %[a{o}]")
            use(("b", op[1]))
            use(w)
        if live:                                # pragma: no cover (defensive)
            raise AssertionError(live)
    # requantization: 2 x acc -> SMMULR, RoundingDivideByPOT (zero point folded in), SSAT, clamp, store
    code.insert(0, "ldr %[a0], [%[wc]]")
    code[1:1] = [f"mov %[a{o}], %[a0]" for o in range(1, n)]
    code.append("ldrd %[t0], %[t1], [%[wc], #8]")
    code.append("ldr %[t2], [%[wc], #16]")
    peak[0] = max(peak[0], 3)
    for o in range(n):
        code += _asm_requant(f"%[a{o}]", "%[t0]", "%[t1]", "%[t2]", out_zp, zp_folded, lo, hi)
        code.append(f"strb %[a{o}], [%[o], #{o * ostep}]")
    if n + peak[0] + 3 > ASM_OPERANDS or (n - 1) * ostep > 4095:
        return None
    return code, peak[0]


def _asm_vars(plan, geo, keys, v, direct):
    code, temps = _asm_group(plan, geo, keys, geo.c if direct else 1, v["out_zp"], v["zp_folded"], v["lo"], v["hi"])
    return dict(code=code, temps=temps)


def _choose_group(geo: Geo, v: dict, direct: bool) -> tuple | None:
    """(outputs per step, its row plan, the last group's plan or None) for the DSP path's asm: the fewest
    estimated instructions per output row among the group sizes and plans whose asm fits the registers; None
    when none does or the requantization is the generic one (the C intrinsics then run, GROUP per step)."""
    if v["requant"] != "fast":
        return None
    ostep = geo.c if direct else 1

    def cost(n):
        if n == 0:
            return 0, None
        found = None
        for max_keys in (None, 2):
            plan = row_plan(n, geo.sw, geo.dw, geo.kw, max_keys)
            asm = _asm_group(plan, geo, _weight_keys([plan]), ostep, v["out_zp"], v["zp_folded"], v["lo"], v["hi"])
            if asm is not None and (found is None or len(asm[0]) < found[0]):
                found = (len(asm[0]) + 4, plan)          # + the loop's pointer updates and branch
        return found if found else (None, None)

    best = None
    for n in range(1, min(6, geo.ow) + 1):
        (main, plan), (rest, tail) = cost(n), cost(geo.ow % n)
        if main is None or rest is None:
            continue
        total = geo.ow // n * main + rest
        if best is None or total < best[0]:
            best = (total, n, plan, tail)
    return best[1:] if best else None


def _plain_lines(outputs: int, geo: Geo, acc: list) -> list:
    """Plain path: one multiply per tap, unsigned buffer bytes (LDRB with an immediate offset), int32 weights;
    one statement per tap keeps Cortex-M0+'s few registers free."""
    lines = []
    for o in range(outputs):
        for ky in range(geo.kh):
            row = ky * geo.dh * geo.width
            lines.append(" ".join(f"{acc[o]} += (int32_t)g[{row + o * geo.sw + kx * geo.dw}] * wq[{ky * geo.kw + kx}];"
                                  for kx in range(geo.kw)))
    return lines


def _direct_ok(geo: Geo, lead: int) -> bool:
    """In place: can output row oy be stored into y right away? It covers channel c of input pixels
    p - lead / C for its pixels p; each must lie in a row already copied into the buffer (or outside the
    input)."""
    if lead % geo.c:
        return False
    if geo.whole:
        return True
    shift = -lead // geo.c
    for oy in range(geo.oh):
        loaded = oy * geo.sh + geo.span - 1 - geo.pt            # last input row copied so far
        q_lo, q_hi = oy * geo.ow + shift, (oy + 1) * geo.ow - 1 + shift
        q_hi = min(q_hi, geo.ih * geo.iw - 1)
        if q_hi < max(q_lo, 0):
            continue
        if q_hi // geo.iw > loaded:
            return False
    return True


def _quant(g, node, geo: Geo, w2d: np.ndarray, bias, in_zp: int, folded: np.ndarray) -> dict:
    """Per channel [bias (DSP path), bias (plain path: 128 x weight sums less), multiplier, shift, rounding]:
    for tinyc_requantize_fast a right shift r and 2^(r - 1) + out_zp * 2^r (the output zero point added before
    the shift, exact while the sum cannot overflow), else TFLite's shift for tinyc_requantize."""
    in_q, out_q = g.tensors[node.inputs[0]].quant, g.tensors[node.outputs[0]].quant
    mults, shifts = qp.conv_multipliers(in_q, g.tensors[node.inputs[1]].quant, out_q, geo.c)
    lo, hi = qp.activation_range(node.attrs.get("activation"), out_q)
    out_zp = qp.zero_point_of(out_q)
    fast = gemm_pack.fast_mbqm(shifts, gemm_pack.acc_bound(w2d, bias, in_zp))
    plain = folded - 128 * w2d.astype(np.int64).sum(axis=1)
    if fast:
        sh = [-s for s in shifts]
        rounding = [1 << (r - 1) for r in sh]
        # |SRDHM(acc, m)| <= |acc| * m / 2^31 + 1 < 2^30; with the zero point: + 2^(r-1) + |zp| 2^r < 2^31
        zp_folded = all((1 << 30) + rh + abs(out_zp) * (1 << r) < (1 << 31) for r, rh in zip(sh, rounding))
        if zp_folded:
            rounding = [rh + out_zp * (1 << r) for r, rh in zip(sh, rounding)]
    else:
        sh, rounding, zp_folded = shifts, [0] * geo.c, False
    dsp_bias = folded * 2 if fast else folded        # the DSP path accumulates 2 x acc with doubled weights
    prm = np.stack([dsp_bias, plain, mults, sh, rounding], axis=1).astype(np.int64)
    return dict(out_zp=out_zp, lo=lo, hi=hi, requant="fast" if fast else "mbqm", zp_folded=zp_folded,
                doubled=fast, prm_values=prm)


def _interior(n_out: int, stride: int, dil: int, k: int, pad: int, n_in: int) -> tuple[int, int]:
    """[lo, hi): the outputs along one axis whose taps all fall inside the input."""
    ok = [o for o in range(n_out) if o * stride - pad >= 0 and o * stride - pad + (k - 1) * dil <= n_in - 1]
    return (ok[0], ok[-1] + 1) if ok else (0, 0)


def _raster_plan(geo: Geo, w: np.ndarray, v: dict) -> dict:
    """The raster kernel's tables. DSP path, per group of four channels, in the order the kernel reads them: the
    four biases, per tap the words (w[c], w[c + 2]) and (w[c + 1], w[c + 3]), then per channel multiplier,
    shift and rounding. Plain path and the last C % 4 channels: int32 weights [C, taps] and the per-channel
    parameters. C bytes of the input zero point, which padded taps of border pixels read. On DSP cores an
    interior pixel's group of four channels is one asm block when the requantization is the fast one and every
    tap offset is an immediate."""
    doubled = v["doubled"]
    taps = geo.kh * geo.kw
    c4 = geo.c - geo.c % 4
    wt = w.reshape(geo.c, taps).astype(np.int64)
    wd = wt * 2 if doubled else wt
    prm = v["prm_values"]
    stream = []
    for c in range(0, c4, 4):
        words = list(prm[c:c + 4, 0])
        for t in range(taps):
            words += [(wd[c, t] & 0xFFFF) + wd[c + 2, t] * 65536, (wd[c + 1, t] & 0xFFFF) + wd[c + 3, t] * 65536]
        for i in range(4):
            words += list(prm[c + i, 2:5])
        stream.append(words)
    oy_lo, oy_hi = _interior(geo.oh, geo.sh, geo.dh, geo.kh, geo.pt, geo.ih)
    ox_lo, ox_hi = _interior(geo.ow, geo.sw, geo.dw, geo.kw, geo.pl, geo.iw)
    offsets = [(ky * geo.dh * geo.iw + kx * geo.dw) * geo.c for ky in range(geo.kh) for kx in range(geo.kw)]
    asm = None
    if c4 and v["requant"] == "fast" and max(offsets) + 3 < 4096:
        asm = ["ldrd %[a0], %[a1], [%[wp]], #8", "ldrd %[a2], %[a3], [%[wp]], #8"]
        for off in offsets:
            asm += [f"ldr %[x], [%[px], #{off}]", "ldrd %[w0], %[w1], [%[wp]], #8", "sxtb16 %[y], %[x]",
                    "sxtb16 %[x], %[x], ror #8", "smlabb %[a0], %[y], %[w0], %[a0]",
                    "smlatt %[a2], %[y], %[w0], %[a2]", "smlabb %[a1], %[x], %[w1], %[a1]",
                    "smlatt %[a3], %[x], %[w1], %[a3]"]
        for i in range(4):
            asm += ["ldrd %[w0], %[w1], [%[wp]], #8", "ldr %[y], [%[wp]], #4"]
            asm += _asm_requant(f"%[a{i}]", "%[w0]", "%[w1]", "%[y]", v["out_zp"], v["zp_folded"], v["lo"], v["hi"])
            asm.append(f"strb %[a{i}], [%[out], #{i}]")
        asm += ["add %[px], %[px], #4", "add %[out], %[out], #4"]
    return dict(variant="raster", c4=c4, taps=taps, offsets=offsets, oy_lo=oy_lo, oy_hi=oy_hi, ox_lo=ox_lo,
                ox_hi=ox_hi, asm=asm, quad_words=4 + 2 * taps + 12, stream=stream, wt=wt)


def _raster_tables(k, r: dict, geo: Geo, in_zp: int) -> dict:
    return dict(scratch=k.scratch,
                wquad=k.table(np.array(r.pop("stream"), np.int64).astype(np.int32), "int32",
                              "per 4 channels: biases, weight words (w[c], w[c + 2]), (w[c + 1], w[c + 3]) per tap, "
                              "then multiplier, shift, rounding per channel") if r["c4"] else None,
                wplain=k.table(r.pop("wt").astype(np.int32), "int32", "weights as int32"),
                zpbuf=k.table(np.full(geo.c, in_zp), "int8", "the input zero point, for padded taps"))


def _planar_estimate(geo: Geo, chosen) -> int:
    """Instructions of the planar kernel's DSP path (asm groups), roughly: groups, row copies, loop overheads."""
    n, plan, tail = chosen
    keys = _weight_keys([plan] + ([tail] if tail else []))
    group = len(_asm_group(plan, geo, keys, geo.c, 0, True, -128, 127)[0]) + 4
    last = len(_asm_group(tail, geo, keys, geo.c, 0, True, -128, 127)[0]) + 4 if tail else 0
    row = geo.ow // n * group + last + 25
    return geo.c * (geo.oh * row + geo.rows_total * (geo.cols * 5 // 2 + 12) + 40)


def _raster_estimate(geo: Geo, r: dict) -> int:
    """Instructions of the raster kernel's DSP path (asm interior pixels, C border pixels), roughly."""
    quads, rest, taps = r["c4"] // 4, geo.c - r["c4"], r["taps"]
    interior = (r["oy_hi"] - r["oy_lo"]) * (r["ox_hi"] - r["ox_lo"])
    border = geo.oh * geo.ow - interior
    return (interior * (quads * (len(r["asm"]) + 3) + rest * (4 * taps + 15) + 12)
            + border * (quads * (10 * taps + 45) + rest * (5 * taps + 15) + 8 * taps + 20))


def _layer(g, node) -> dict | None:
    """Everything the rules decide from the graph alone (also before the memory plan, for `work_bytes`): the
    geometry, weights, folded bias, requantization, and whether the raster kernel is expected to be cheaper than
    the planar one on the DSP path (then the planar kernel, still needed for a layer planned in place, keeps the
    smallest buffer); None when the fast kernel does not apply."""
    from .int8_fast import _bias, _int8_weights
    geo = geometry(g, node)
    if geo is None:
        return None
    w = _int8_weights(g, node).reshape(geo.c, geo.kh, geo.kw)
    w2d = w.reshape(geo.c, -1)
    bias = _bias(g, node)
    in_zp = qp.zero_point_of(g.tensors[node.inputs[0]].quant)
    folded = gemm_pack.folded_bias(w2d, bias, in_zp)
    if folded is None or np.any(np.abs(folded) + 384 * np.abs(w2d.astype(np.int64)).sum(axis=1) >= 1 << 31):
        return None     # the plain path's partial sums (bias - 128 x weight sums, + up to 255 x |w|) fit int32
    q = _quant(g, node, geo, w2d, bias, in_zp, folded)
    chosen = _choose_group(geo, q, True)
    raster = _raster_plan(geo, w, q)
    cheaper = (chosen is not None and raster["asm"] is not None
               and _raster_estimate(geo, raster) < _planar_estimate(geo, chosen))
    if cheaper or node.attrs.get("kernel_scratch") == "small":     # int8_fast.SCRATCH, set by the planner
        geo = replace(geo, small=True)
    return dict(geo=geo, w=w, w2d=w2d, in_zp=in_zp, q=q, raster=raster, raster_cheaper=cheaper)


def depthwise(k):
    """(template, variables, MACs) for a depthwise int8 Conv2D, or None (reference kernel)."""
    layer = _layer(k.plan.graph, k.node)
    if layer is None:
        return None
    geo, w, w2d, in_zp, q = layer["geo"], layer["w"], layer["w2d"], layer["in_zp"], layer["q"]
    v = dict(geo.__dict__, span=geo.span, width=geo.width, cols=geo.cols, buf_rows=geo.buf_rows,
             buf_bytes=geo.buf_bytes, new_rows=geo.new_rows, moves=geo.buf_rows < geo.rows_total,
             kept_bytes=(geo.span - geo.new_rows) * geo.width, whole=geo.whole,
             whole_rows=max(0, min(geo.ih, geo.rows_total - geo.pt)), in_zp=in_zp, **q,
             prm=k.table(q["prm_values"], "int32", "per channel: bias (DSP), bias (plain), multiplier, shift, rounding"),
             comment=f"depthwise {geo.ih}x{geo.iw}x{geo.c} -> {geo.oh}x{geo.ow}x{geo.c}, kernel {geo.kh}x{geo.kw}, "
                     f"stride {geo.sh}x{geo.sw}, dilation {geo.dh}x{geo.dw}, pads t{geo.pt} l{geo.pl} b{geo.pb} "
                     f"r{geo.pr}")
    macs = geo.oh * geo.ow * geo.c * geo.kh * geo.kw
    lead = k.in_place.lead if k.in_place is not None else None
    direct = lead is None or _direct_ok(geo, lead)
    planar_in = bool(k.node.attrs.get(PLANAR_ROWS_IN))
    if planar_in and (k.depthwise_in_place or not direct):
        return None         # (a row kernel is never in place; the block then stores the rows pixel-major)
    v["planar_in"] = planar_in
    # raster order is never safe for an output written channel by channel (in place, kind "depthwise"); it is
    # the only kernel for an overlap the planar one cannot keep, and otherwise taken where it is cheaper
    if not k.depthwise_in_place and not planar_in and (layer["raster_cheaper"] or not direct):
        raster = layer["raster"]
        v.update(raster, **_raster_tables(k, raster, geo, in_zp))
        return "depthwise_raster.c.j2", v, macs
    chosen = _choose_group(geo, v, direct)
    if chosen is None:
        gsize = min(GROUP, geo.ow)
        tail = geo.ow % gsize
        plans = [row_plan(gsize, geo.sw, geo.dw, geo.kw)] + ([row_plan(tail, geo.sw, geo.dw, geo.kw)] if tail else [])
    else:
        gsize, plan, tail_plan = chosen
        tail = geo.ow % gsize
        plans = [plan] + ([tail_plan] if tail else [])
    asm = chosen is not None
    keys = _weight_keys(plans)
    accs = [f"a{o}" for o in range(gsize)]
    words = _packed_weights(w.astype(np.int64) * (2 if q["doubled"] else 1), keys).reshape(geo.c, -1)
    v.update(variant="planar", group_size=gsize, nkeys=len(keys), direct=direct, scratch=k.scratch,
             zp_plain=in_zp + 128, ostep=geo.c if direct else 1,
             wdsp=k.table(np.concatenate([q["prm_values"], words], axis=1), "int32",
                          "per channel: parameters, then weight words (w[t], w[t + 2]) per kernel row"
                          + (", doubled" if q["doubled"] else "")),
             wplain=k.table(w2d.astype(np.int32), "int32", "weights as int32"),
             dsp_group=_dsp_lines(plans[0], geo, keys, accs),
             dsp_tail=_dsp_lines(plans[1], geo, keys, accs) if tail else None,
             plain_group=_plain_lines(1, geo, accs),
             asm_group=_asm_vars(plans[0], geo, keys, v, direct) if asm else None,
             asm_tail=_asm_vars(plans[1], geo, keys, v, direct) if asm and tail else None)
    if planar_in and layer["raster_cheaper"]:      # channel-major rows on the DSP path only: raster elsewhere
        raster = layer["raster"]
        tables = _raster_tables(k, raster, geo, in_zp)
        v.update({key: raster[key] for key in ("c4", "taps", "offsets", "oy_lo", "oy_hi", "ox_lo", "ox_hi", "asm",
                                               "quad_words")},
                 wquad=tables["wquad"], zpbuf=tables["zpbuf"], variant="planar+raster")
        return "depthwise_split.c.j2", v, macs
    return "depthwise.c.j2", v, macs
