"""Fast int8 GEMM kernels for int4 weights (templates/int8_fast/gemm_int4.c.j2): Conv2D with groups 1 (1x1, strided
1x1, k x k through a per-pixel im2col) and Dense. Byte-identical to their reference twins (templates/int8/
conv2d.c.j2 and dense.c.j2 with `w4`), which compute what TFLite's reference kernels compute after unpacking the
int4 filter to int8: the arithmetic is the int8 one, and so are the requantization paths (int8_fast.py).

The weights stay packed, two per byte in flash, and are unpacked in registers where they are multiplied: no int8
copy of them anywhere (TFLite Micro unpacks the whole filter into a scratch buffer first). The nibbles hold
v = w + 8 (0..15), so unpacking needs no sign extension: the kernels subtract 8 x (the sum of the row's inputs).

**DSP path** (Cortex-M4/M7/M33). A row's first K8 = K - K % 8 inputs are sign-extended once into kernel scratch as
halfword pairs P0 = (x0, x2), P1 = (x1, x3), P2 = (x4, x6), P3 = (x5, x7) per 8 inputs (SXTB16, SXTB16 ROR 8), and
summed (S). Per channel and 8 inputs one 32-bit word holds the 8 nibbles, ordered at compile time so that
(W >> 4j) & 0x000F000F is the halfword pair of weights that matches P_j (`nibble_words`): one AND (its operand
shifted for free) and one SMLAD per two multiply-accumulates, one LDR per eight. With two or more rows (conv
pixels), two rows at a time share each unpacked weight pair (one AND, two SMLADs; the inputs interleaved as A0 A1
B0 B1 A2 A3 B2 B3 per chunk, a last odd row paired with itself): 17 instructions per 16 MACs in the inner loop;
a single row (FULLY_CONNECTED) takes two channels per LDRD of inputs: 20 (int8's pair-packed words: 17 one pixel
at a time, 13 two at a time).
acc = Σ x v - 8 S + Σ_tail x w + (bias - zp Σ w); the last K % 8 inputs meet a small packed tail table, read with
the reference's nibble expression.

**Byte path** (Cortex-M0+, Thumb-1). As gemm_pack's byte kernel: the row's inputs + 128 (u, unsigned bytes) in the
scratch with their sum S, then per four channels and input position two bytes, b0 = vA | vB << 4 and b1 = vC | vD
<< 4 (`nibble_bytes`). Per byte: Z += u (b & 15) and Y += u b, so Σ u vA = Z and Σ u vB = (Y - Z) >> 4 (Y - Z is
16 Σ u vB exactly): LDRB, LSLS, LSRS, two MULS, two ADDs per two MACs, 15 instructions per position of 4 channels.
Since Σ u v = Σ x w + 8 S + 128 Σ w, acc = Σ u v - 8 S + (bias - (zp + 128) Σ w), gemm_pack.byte_folded_bias.
"""
from __future__ import annotations

import numpy as np

from ..nibbles import c_nibble, pack_int4
from ..quant import params as qp
from . import gemm_pack

MIN_K = 8        # inputs per row the kernels need (one word of nibbles); shorter rows: the reference kernel
DSP_UNROLL = 2   # chunks of 8 inputs per iteration of the DSP inner loop
# input j of a chunk of 8 -> its nibble position in the chunk's word: P_j's pair (lo, hi) at bits 4j and 16 + 4j
WORD_ORDER = (0, 1, 4, 5, 2, 3, 6, 7)     # nibble n holds input WORD_ORDER[n]


def int4_weights(g, node) -> np.ndarray | None:
    """The layer's int4 weights as int8 values [O, K] when they are constant and symmetric, else None."""
    w = g.tensors[node.inputs[1]]
    if w.dtype != "int4" or not w.is_const or w.quant is None or np.any(np.asarray(w.quant.zero_point) != 0):
        return None
    return w.data.astype(np.int8).reshape(w.shape[0], -1)


def mode(g, node) -> str | None:
    """'rows' (1x1 stride 1 conv, Dense), 'strided' (1x1), 'im2col' (k x k) when the int4 GEMM kernel takes the
    layer, else None (the reference kernel)."""
    from .int8_fast import _bias, _io_int8, conv_geometry, scratch_level
    if node.op not in ("Conv2D", "Dense") or not _io_int8(g, node) or scratch_level(node) == "none":
        return None
    if node.op == "Conv2D" and node.attrs.get("groups", 1) != 1:
        return None
    w, bias = int4_weights(g, node), _bias(g, node)
    if w is None or bias is False or w.shape[1] < MIN_K or 128 * 15 * w.shape[1] >= 1 << 30:
        return None
    zp = qp.zero_point_of(g.tensors[node.inputs[0]].quant)
    if gemm_pack.folded_bias(w, bias, zp) is None or gemm_pack.byte_folded_bias(w, bias, zp) is None:
        return None
    if node.op == "Dense":
        scales = qp.fc_scales(g.tensors[node.inputs[0]].quant, g.tensors[node.inputs[1]].quant,
                              g.tensors[node.outputs[0]].quant, w.shape[0])
        return "rows" if all(gemm_pack.double_requant(s) is not None for s in scales) else None
    geo = conv_geometry(g, node)
    if geo["kh"] == 1 and geo["kw"] == 1 and not any(geo["pads"]):
        return "rows" if (geo["sh"], geo["sw"]) == (1, 1) else "strided"
    return "im2col"


def rows_of(g, node) -> int:
    """Rows of K inputs the layer multiplies (output pixels of a conv, rows of a Dense)."""
    return g.tensors[node.outputs[0]].size // g.tensors[node.outputs[0]].shape[-1]


def _layout(g, node) -> dict:
    """Kernel scratch of the DSP path: the im2col windows of one or two rows, their expanded inputs, their tail
    inputs (each part word-aligned); the byte path's row of inputs + 128 shares it."""
    kdim = int4_weights(g, node).shape[1]
    k8 = kdim - kdim % 8
    n = 2 if rows_of(g, node) >= 2 else 1
    gather = -(-kdim // 4) * 4 if mode(g, node) == "im2col" else 0
    e_offset = n * gather
    t_offset = e_offset + n * 2 * k8
    dsp = t_offset + n * 8
    return dict(gather=gather, e_offset=e_offset, t_offset=t_offset, px2=n == 2,
                bytes=max(dsp, gemm_pack.byte_k(kdim), gather))


def work_bytes(g, node) -> int:
    return _layout(g, node)["bytes"] if mode(g, node) else 0


def nibble_words(w: np.ndarray, px2: bool = False) -> np.ndarray:
    """w: int8 [O, K] in -8..7 -> uint32 words of the DSP path: with `px2` (two rows at a time, one channel) each
    channel's words in order; else channel pairs one after another, per pair and chunk of 8 inputs the first
    channel's word then the second's, a last odd channel's words after them. Nibble n of a word holds v = w + 8 of
    input WORD_ORDER[n] of the chunk."""
    o, kdim = w.shape
    k8 = kdim - kdim % 8
    v = (w[:, :k8].astype(np.uint32) + 8).reshape(o, -1, 8)[:, :, list(WORD_ORDER)]    # [O, chunks, nibble]
    words = (v << (4 * np.arange(8, dtype=np.uint32))).sum(axis=2, dtype=np.uint32)     # [O, chunks]
    if px2:
        return words.reshape(-1).astype(np.uint32)
    pairs = o // 2
    parts = [words[:2 * pairs].reshape(pairs, 2, -1).transpose(0, 2, 1).reshape(-1)] if pairs else []
    if o % 2:
        parts.append(words[-1])
    return np.concatenate(parts).astype(np.uint32)


def nibble_bytes(w: np.ndarray) -> np.ndarray:
    """w: int8 [O, K] -> uint8 [ceil(O / 4), byte_k(K), 2] for the byte path: per group of four channels and input
    position, vA | vB << 4 and vC | vD << 4 (padding channels and positions: w = 0)."""
    o, kdim = w.shape
    groups = -(-o // 4)
    v = np.full((groups * 4, gemm_pack.byte_k(kdim)), 8, np.int64)
    v[:o, :kdim] = w.astype(np.int64) + 8
    v = v.reshape(groups, 2, 2, -1)                                  # group, byte, nibble, position
    return (v[:, :, 0] | (v[:, :, 1] << 4)).transpose(0, 2, 1).astype(np.uint8)


def _dsp_asm_px2(steps: int) -> str:
    """The two-row DSP inner loop's asm text: `steps` chunks per iteration, one channel's word each, the inputs of
    rows A and B interleaved as A0 A1 B0 B1 A2 A3 B2 B3."""
    body = []
    for _ in range(steps):
        body.append("ldr %[w], [%[wp]], #4")
        for half in range(2):
            body += ["ldrd %[x0], %[x1], [%[ep]], #8", "ldrd %[y0], %[y1], [%[ep]], #8"]
            for j in (2 * half, 2 * half + 1):
                shift = f", lsr #{4 * j}" if j else ""
                body += [f"and %[t], %[m], %[w]{shift}", f"smlad %[aa], %[x{j % 2}], %[t], %[aa]",
                         f"smlad %[ab], %[y{j % 2}], %[t], %[ab]"]
    return "".join(f'"{line}\\n\\t"' for line in body)


def _dsp_asm(channels: int, steps: int) -> str:
    """The DSP inner loop's asm text: `steps` chunks of 8 inputs per iteration, `channels` (1 or 2) words each."""
    body = []
    for _ in range(steps):
        body += ["ldrd %[p0], %[p1], [%[ep]], #8", "ldrd %[p2], %[p3], [%[ep]], #8"]
        for c in range(channels):
            body.append("ldr %[w], [%[wp]], #4")
            for j in range(4):
                shift = f", lsr #{4 * j}" if j else ""
                body += [f"and %[t], %[m], %[w]{shift}", f"smlad %[a{c}], %[p{j}], %[t], %[a{c}]"]
    return "".join(f'"{line}\\n\\t"' for line in body)


def gemm(k):
    """(template, variables, MACs) of the int4 GEMM kernel, or None where it does not apply (or the plan has no
    kernel scratch for it)."""
    from .int8_fast import _bias, _prm_table, conv_geometry, interior
    g = k.plan.graph
    m = mode(g, k.node)
    if m is None or k.work is None:
        return None
    w = int4_weights(g, k.node)
    o, kdim = w.shape
    bias = _bias(g, k.node)
    p = k.params
    k8, ktail = kdim - kdim % 8, kdim % 8
    folded = gemm_pack.folded_bias(w, bias, p.in_zp)
    folded_b = gemm_pack.byte_folded_bias(w, bias, p.in_zp)
    lay = _layout(g, k.node)
    chunks = k8 // 8
    px2 = lay["px2"]
    v = dict(nibble=c_nibble, mode=m, o=o, kdim=kdim, kwin=kdim, k8=k8, ktail=ktail, chunks=chunks, pairs=o // 2,
             odd=o % 2,
             iters=chunks // DSP_UNROLL, rest=chunks % DSP_UNROLL, e_offset=lay["e_offset"], t_offset=lay["t_offset"],
             asm2=_dsp_asm(2, DSP_UNROLL), asm2_rest=_dsp_asm(2, 1), asm1=_dsp_asm(1, DSP_UNROLL),
             asm1_rest=_dsp_asm(1, 1), asmx=_dsp_asm_px2(DSP_UNROLL), asmx_rest=_dsp_asm_px2(1), px2=px2,
             gather_bytes=lay["gather"], kb=gemm_pack.byte_k(kdim), groups=o // 4, group_rest=o % 4,
             in_zp=p.in_zp, zp_word=(p.in_zp & 0xFF) * 0x01010101, out_zp=p.out_zp, lo=p.lo, hi=p.hi,
             in_aligned=k.plan.offset_of(k.node.inputs[0]) % 4 == 0,
             restrict="" if k.in_place is not None else "restrict ",
             words=k.table(nibble_words(w, px2), "uint32", "int4 weights + 8, 8 nibbles per word (DSP path)",
                           "TINYC_DSP"),
             wbytes=k.table(nibble_bytes(w), "uint8", "int4 weights + 8, per 4 channels and input", "!TINYC_DSP"),
             tail=k.table(pack_int4(w[:, k8:]), "uint8", "int4 weights of the last inputs, two per byte",
                          "TINYC_DSP") if ktail else None,
             prm=None, prm_b=None, bias=None, bias_b=None, mult=None, shift=None, scale=None)
    if k.node.op == "Dense":
        fixed = [gemm_pack.double_requant(s) for s in p.scales]
        rest = [[m32 for m32, _ in fixed], [tie for _, tie in fixed], [0] * o]
        label = "per channel: bias, multiplier, half-way margin, 0"
        v.update(requant="double", rows=k.in_size(0) // kdim, variant="int4-fc",
                 scale=k.table(p.scales, "float64", "requantization scales (the double path near ties)"),
                 prm=_prm_table(k, folded, rest, label, "TINYC_DSP"),
                 prm_b=_prm_table(k, folded_b, rest, label, "!TINYC_DSP"),
                 comment=f"fully connected {k.in_size(0) // kdim} row(s) x {kdim} -> {o}, int4 weights")
        return "gemm_int4.c.j2", v, v["rows"] * kdim * o
    geo = conv_geometry(g, k.node)
    if gemm_pack.fast_mbqm(p.shifts, gemm_pack.acc_bound(w, bias, p.in_zp)):
        rest = [p.mults, [-s for s in p.shifts], [1 << (-s - 1) for s in p.shifts]]
        label = "per channel: bias, multiplier, right shift, rounding"
        v.update(requant="fast", prm=_prm_table(k, folded, rest, label, "TINYC_DSP"),
                 prm_b=_prm_table(k, folded_b, rest, label, "!TINYC_DSP"))
    else:
        v.update(requant="mbqm", bias=k.table(folded, "int32", "bias - input zero point x weight sums", "TINYC_DSP"),
                 bias_b=k.table(folded_b, "int32", "bias - (input zero point + 128) x weight sums", "!TINYC_DSP"),
                 mult=k.table(p.mults, "int32", "requantization multipliers"),
                 shift=k.table(p.shifts, "int8", "requantization shifts"))
    v.update(geo, **interior(geo), rows=geo["oh"] * geo["ow"],
             variant={"rows": "int4-1x1", "strided": "int4-1x1-strided", "im2col": "int4-im2col"}[m],
             comment=f"conv {geo['ih']}x{geo['iw']}x{geo['ic']} -> {geo['oh']}x{geo['ow']}x{geo['oc']}, kernel "
                     f"{geo['kh']}x{geo['kw']}, stride {geo['sh']}x{geo['sw']}, pads {tuple(geo['pads'])}, int4 "
                     "weights")
    return "gemm_int4.c.j2", v, geo["oh"] * geo["ow"] * o * kdim


# -- depthwise (depth multiplier 1): templates/int8_fast/depthwise_int4.c.j2 -------------------------------------
# Channel after channel: the channel's input plane is copied into kernel scratch as u = x + 128 (unsigned bytes, so
# every load is an LDRB with an immediate offset, on the M0+ too), padded with the input zero point's u, so the
# output pixels need no bounds checks; the channel's kh x kw nibbles are unpacked once into registers (its taps,
# never stored); acc = Σ u w + bias - (zp + 128) Σ w, the twin of the reference's Σ (x - zp) w + bias.
MAX_TAPS = 25        # taps unrolled per output pixel (5x5); larger windows keep the reference kernel


def _depthwise_geometry(g, node) -> dict | None:
    from .int8_fast import _bias, _io_int8, conv_geometry, is_depthwise, scratch_level
    if not is_depthwise(g, node) or not _io_int8(g, node) or scratch_level(node) == "none":
        return None
    w = g.tensors[node.inputs[1]]
    if w.dtype != "int4" or not w.is_const or w.quant is None or np.any(np.asarray(w.quant.zero_point) != 0):
        return None
    if _bias(g, node) is False:
        return None
    geo = conv_geometry(g, node)
    if geo["kh"] * geo["kw"] > MAX_TAPS:
        return None
    geo["ph"] = (geo["oh"] - 1) * geo["sh"] + (geo["kh"] - 1) * geo["dh"] + 1     # padded rows the outputs read
    geo["pw"] = (geo["ow"] - 1) * geo["sw"] + (geo["kw"] - 1) * geo["dw"] + 1
    return geo


def depthwise_applies(g, node) -> bool:
    return _depthwise_geometry(g, node) is not None


def applies(g, node) -> bool:
    """One of this module's kernels takes the layer."""
    return bool(mode(g, node)) or depthwise_applies(g, node)


def scratch_bytes(g, node) -> int:
    """Kernel scratch of the layer's int4 kernel (0 where none applies)."""
    if mode(g, node):
        return work_bytes(g, node)
    geo = _depthwise_geometry(g, node)
    if geo is None:
        return 0
    return max(-(-geo["ph"] * geo["pw"] // 4) * 4, -(-geo["oc"] // 4) * 4)    # planar plane / raster zero-point row


def tap_major_nibbles(w: np.ndarray) -> np.ndarray:
    """w: int8 [C, taps] -> the raster kernel's table: per tap, the channels' int4 values packed two per byte, low
    nibble first (as TFLite), channels padded to a multiple of 4 with zeros: one 16-bit load gives 4 channels."""
    c, taps = w.shape
    padded = np.zeros((taps, -(-c // 4) * 4), np.int64)
    padded[:, :c] = w.T
    return pack_int4(padded)


def depthwise(k):
    """(template, variables, MACs) of the int4 depthwise kernel, or None (no scratch in the plan, or an output
    overlapping its input other than pixel for pixel: the reference kernel's raster order then)."""
    from .int8_fast import _bias, interior
    g = k.plan.graph
    geo = _depthwise_geometry(g, k.node)
    if geo is None or k.work is None:
        return None
    c = geo["oc"]
    # planar (channel by channel) unless the output overlaps its input other than pixel for pixel: then the
    # reference's raster order (its memory contract), four channels per 16-bit load of tap-major nibbles, padded taps
    # reading a row of the input zero point from the scratch
    raster = k.in_place is not None and (k.in_place.kind != "depthwise" or k.in_place.lead % c != 0)
    p = k.params
    bias = _bias(g, k.node)
    w = k.tensor(1).data.astype(np.int8).reshape(c, -1)
    taps = [dict(index=t, off=(t // geo["kw"]) * geo["dh"] * geo["pw"] + (t % geo["kw"]) * geo["dw"])
            for t in range(geo["kh"] * geo["kw"])]
    bound = gemm_pack.acc_bound(w, bias, p.in_zp)
    fast = gemm_pack.fast_mbqm(p.shifts, bound)
    v = dict(geo, taps=taps, kk=len(taps), c=c, nibble=c_nibble, in_zp=p.in_zp, u_zp=(p.in_zp + 128) & 0xFF,
             out_zp=p.out_zp, lo=p.lo, hi=p.hi, has_t=k.scratch is not None, fast=fast,
             w=k.table(pack_int4(w), "uint8", "int4 weights, two per byte, low nibble first"),
             bias=k.table(bias, "int32", "biases") if bias is not None else None,
             prm=k.table(np.stack([p.mults, [-s for s in p.shifts], [1 << (-s - 1) for s in p.shifts]], axis=1),
                         "int32", "per channel: multiplier, right shift, rounding") if fast else None,
             mult=None if fast else k.table(p.mults, "int32", "requantization multipliers"),
             shift=None if fast else k.table(p.shifts, "int8", "requantization shifts"),
             raster=raster, padded=any(geo["pads"]), variant="int4-depthwise" + ("-raster" if raster else ""),
             **interior(geo),
             c4=c - c % 4, cpad=-(-c // 4) * 4, pair3=(geo["kw"], geo["sw"], geo["dw"]) == (3, 1, 1),
             wt=k.table(tap_major_nibbles(w), "uint8", "int4 weights per tap, 4 channels per 16 bits")
             if raster else None,
             folded=k.table(gemm_pack.folded_bias(w, bias, p.in_zp), "int32", "bias - input zero point x weight sums")
             if raster else None,
             comment=f"depthwise {geo['ih']}x{geo['iw']}x{c} -> {geo['oh']}x{geo['ow']}x{c}, kernel "
                     f"{geo['kh']}x{geo['kw']}, stride {geo['sh']}x{geo['sw']}, pads {tuple(geo['pads'])}, int4 "
                     "weights")
    return "depthwise_int4.c.j2", v, geo["oh"] * geo["ow"] * c * len(taps)
