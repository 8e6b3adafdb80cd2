"""Fast int8 depthwise conv rules (templates/int8_fast/depthwise*.c.j2): depth multiplier 1, any kernel size,
stride, dilation and padding. Bit-exact twins of templates/int8/conv2d.c.j2 (groups > 1) and
templates/int8/depthwise_in_place.c.j2.

**Planar kernel** (`depthwise.c.j2`, the usual one). Channel after channel: the rows of that channel's input
plane the current output row needs are copied into a small ring in the kernel scratch `s`, padded with the input
zero point, so that output pixels need no bounds checks at all (padded taps read the zero point: with the input
zero point folded into the bias, Σ x * w + (b - zp * Σ w), a zero point contributes nothing). The ring holds
`span` = (kh - 1) * dh + 1 rows of the padded width, each stored twice (slot r and slot r + span), so the
`span` rows of any output row's window are contiguous from one pointer: every tap is a compile-time offset.
Output pixels are computed two at a time. DSP path: one unaligned word of the plane row is four neighbouring
pixels; SXTB16 / SXTB16 ROR 8 give the pairs (x0, x2) and (x1, x3), and one SMLAD multiplies a pair against
two taps two columns apart (weights re-laid out at compile time as int16 pairs (w_t, w_t+2)); a lone tap is
one SMLABB / SMLATB. Which words to load and how to pair the taps is chosen per layer by `row_plan`
(3x3 stride 1: one load, two unpacks, two SMLAD and two halfword MACs per kernel row for 6 MACs). Plain path
(Cortex-M0+): the ring holds x ^ 0x80 (unsigned, so every load is an LDRB with an immediate offset) and the
bias absorbs the 128 * Σ w; one MULS per tap with int32 weights.

Written over its input (k.in_place, tinyc/schedule/overlap.py): channel c's outputs may only overwrite input
bytes no longer needed. Every input row is copied into the ring before any output row that needs it, so an
output row can go straight to y when the bytes it covers are channel-c bytes (the lead is a whole number of
pixels) of input rows already copied; `_direct_ok` checks that for every output row at compile time. Otherwise
an in-place (kind "depthwise") layer computes each channel into the scratch plane `t` and stores it afterwards,
as the reference does, and an overlapped (kind "overlap") one takes the raster kernel.

**Raster kernel** (`depthwise_raster.c.j2`), for an overlap the planar kernel cannot keep: the reference's raster
order, pixel after pixel with all channels; interior pixels with unrolled taps at literal offsets and no bounds
checks, border pixels through per-tap pointers (padded taps read a row of the input zero point). DSP path: four
channels per word, SMLABB / SMLATT against per-tap weight words (w[c], w[c + 2]). It leaves the scratch `s`
unused (`work_bytes` is asked before the plan picks a kind).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..quant import params as qp
from . import gemm_pack

GROUP = 2           # output pixels per step of the planar kernel's inner loop


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

    @property
    def span(self) -> int:          # rows of one output row's window
        return (self.kh - 1) * self.dh + 1

    @property
    def width(self) -> int:         # padded columns the outputs read
        return (self.ow - 1) * self.sw + (self.kw - 1) * self.dw + 1

    @property
    def cols(self) -> int:          # input columns copied into a ring row
        return max(0, min(self.iw, self.width - self.pl))

    @property
    def ring_bytes(self) -> int:    # 2 * span rows, + 3 bytes a last word load may read past the end
        return (2 * self.span * self.width + 3 + 3) // 4 * 4


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
    if min(geo.oh, geo.ow) < 1 or geo.width > 4095 or geo.span * geo.width * 2 > 4095:
        return None             # keep every ring offset an immediate
    return geo


def work_bytes(g, node) -> int:
    """Kernel scratch of the fast depthwise kernel: the planar kernel's ring (reserved whatever in-place kind
    the planner picks later; the raster kernel leaves it unused)."""
    geo = geometry(g, node)
    return geo.ring_bytes if geo is not None else 0


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
    cost = len(word_used) + len(used_vecs) + sum(len(o) for o in ops) + loads
    return cost, used_vecs, ops, word_used


@lru_cache(maxsize=256)
def row_plan(outputs: int, sw: int, dw: int, kw: int) -> RowPlan:
    """The cheapest (loads + unpacks + multiplies) way found to compute one kernel row of `outputs`
    neighbouring output pixels."""
    cols = [{o * sw + t * dw: t for t in range(kw)} for o in range(outputs)]
    last = max(max(c) for c in cols)
    best = None
    for n in range(0, min(last + 1, 5) + 1):
        for words in itertools.combinations(range(0, last + 1), n):
            cost, used_vecs, ops, word_used = _evaluate(cols, words)
            key = (cost, max(words, default=0))
            if best is None or key < best[0]:
                best = (key, words, used_vecs, ops, word_used)
    (cost, _), words, used_vecs, ops, word_used = best
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
                wv = f"(uint32_t)wc[{ky * len(keys) + keys.index(_key_of(op))}]"
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


def _plain_lines(outputs: int, geo: Geo, acc: list) -> list:
    """Plain path: one multiply per tap, unsigned ring bytes (LDRB with an immediate offset), int32 weights;
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
    p - lead / C for its pixels p; each must lie in a row already copied into the ring (or outside the
    input)."""
    if lead % geo.c:
        return False
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


def _requant_vars(k, geo: Geo, w2d: np.ndarray, bias, in_zp: int, folded: np.ndarray) -> dict:
    """Per channel [bias (DSP path), bias (plain path: 128 x weight sums less), multiplier, shift, rounding]:
    for tinyc_requantize_fast a right shift r and 2^(r - 1) + out_zp * 2^r (the output zero point added before
    the shift, exact while the sum cannot overflow), else TFLite's shift for tinyc_requantize."""
    in_q, out_q = k.tensor(0).quant, k.out.quant
    mults, shifts = qp.conv_multipliers(in_q, k.tensor(1).quant, out_q, geo.c)
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), out_q)
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
    prm = np.stack([folded, plain, mults, sh, rounding], axis=1).astype(np.int64)
    return dict(out_zp=out_zp, lo=lo, hi=hi, requant="fast" if fast else "mbqm", zp_folded=zp_folded,
                prm=k.table(prm, "int32", "per channel: bias (DSP), bias (plain), multiplier, shift, rounding"))


def _interior(n_out: int, stride: int, dil: int, k: int, pad: int, n_in: int) -> tuple[int, int]:
    """[lo, hi): the outputs along one axis whose taps all fall inside the input."""
    ok = [o for o in range(n_out) if o * stride - pad >= 0 and o * stride - pad + (k - 1) * dil <= n_in - 1]
    return (ok[0], ok[-1] + 1) if ok else (0, 0)


def _raster_vars(k, geo: Geo, w: np.ndarray, in_zp: int) -> dict:
    """The raster kernel's tables: per group of four channels and tap, the words (w[c], w[c + 2]) and
    (w[c + 1], w[c + 3]) (DSP path); int32 weights [C, taps] (plain path and the last C % 4 channels); C bytes
    of the input zero point that padded taps of border pixels read."""
    taps = geo.kh * geo.kw
    c4 = geo.c - geo.c % 4
    wt = w.reshape(geo.c, taps).astype(np.int64)
    quads = np.zeros((c4 // 4, taps, 2), np.int64)
    for q in range(c4 // 4):
        c = 4 * q
        quads[q, :, 0] = (wt[c] & 0xFFFF) + wt[c + 2] * 65536
        quads[q, :, 1] = (wt[c + 1] & 0xFFFF) + wt[c + 3] * 65536
    oy_lo, oy_hi = _interior(geo.oh, geo.sh, geo.dh, geo.kh, geo.pt, geo.ih)
    ox_lo, ox_hi = _interior(geo.ow, geo.sw, geo.dw, geo.kw, geo.pl, geo.iw)
    offsets = [(ky * geo.dh * geo.iw + kx * geo.dw) * geo.c for ky in range(geo.kh) for kx in range(geo.kw)]
    return dict(variant="raster", c4=c4, taps=taps, offsets=offsets, oy_lo=oy_lo, oy_hi=oy_hi, ox_lo=ox_lo,
                ox_hi=ox_hi,
                wquad=k.table(quads.astype(np.int32), "int32", "weight words (w[c], w[c + 2]), (w[c + 1], w[c + 3]) "
                              "per tap") if c4 else None,
                wplain=k.table(wt.astype(np.int32), "int32", "weights as int32"),
                zpbuf=k.table(np.full(geo.c, in_zp), "int8", "the input zero point, for padded taps"))


def depthwise(k):
    """(template, variables, MACs) for a depthwise int8 Conv2D, or None (reference kernel)."""
    from .int8_fast import _bias, _int8_weights
    g = k.plan.graph
    geo = geometry(g, k.node)
    if geo is None:
        return None
    w = _int8_weights(g, k.node).reshape(geo.c, geo.kh, geo.kw)
    w2d = w.reshape(geo.c, -1)
    bias = _bias(g, k.node)
    in_zp = qp.zero_point_of(k.tensor(0).quant)
    folded = gemm_pack.folded_bias(w2d, bias, in_zp)
    if folded is None or np.any(np.abs(folded) + 384 * np.abs(w2d.astype(np.int64)).sum(axis=1) >= 1 << 31):
        return None     # the plain path's partial sums (bias - 128 x weight sums, + up to 255 x |w|) fit int32
    v = dict(geo.__dict__, span=geo.span, width=geo.width, cols=geo.cols, ring_bytes=geo.ring_bytes,
             in_zp=in_zp, **_requant_vars(k, geo, w2d, bias, in_zp, folded),
             comment=f"depthwise {geo.ih}x{geo.iw}x{geo.c} -> {geo.oh}x{geo.ow}x{geo.c}, kernel {geo.kh}x{geo.kw}, "
                     f"stride {geo.sh}x{geo.sw}, dilation {geo.dh}x{geo.dw}, pads t{geo.pt} l{geo.pl} b{geo.pb} "
                     f"r{geo.pr}")
    macs = geo.oh * geo.ow * geo.c * geo.kh * geo.kw
    lead = k.in_place.lead if k.in_place is not None else None
    direct = lead is None or _direct_ok(geo, lead)
    if k.in_place is not None and not k.depthwise_in_place and not direct:
        v.update(_raster_vars(k, geo, w, in_zp))        # an overlap the planar kernel cannot keep
        return "depthwise_raster.c.j2", v, macs
    plans = [row_plan(GROUP, geo.sw, geo.dw, geo.kw)] + ([row_plan(1, geo.sw, geo.dw, geo.kw)]
                                                         if geo.ow % GROUP else [])
    keys = _weight_keys(plans)
    accs = [f"a{o}" for o in range(GROUP)]
    v.update(variant="planar", groups=geo.ow // GROUP, tail=geo.ow % GROUP, group=GROUP, nkeys=len(keys),
             direct=direct, scratch=k.scratch, zp_plain=(in_zp + 128),
             wdsp=k.table(_packed_weights(w, keys), "int32", "weight words (w[t], w[t + 2]) per kernel row"),
             wplain=k.table(w2d.astype(np.int32), "int32", "weights as int32"),
             dsp_group=_dsp_lines(plans[0], geo, keys, accs),
             dsp_tail=_dsp_lines(plans[1], geo, keys, accs) if geo.ow % GROUP else None,
             plain_group=_plain_lines(1, geo, accs),
             costs=[p.cost for p in plans])
    return "depthwise.c.j2", v, macs
