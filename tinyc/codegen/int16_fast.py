"""Fast 16x8 kernels (int16 activations, int8 weights; docs/int16-numerics.md 2.4): FULLY_CONNECTED and the 1x1
CONV_2D as one GEMM over rows (templates/int8_fast/gemm_16x8.c.j2), byte-identical to their reference twins.

**int32 sums, proved at compile time.** TFLite accumulates 16x8 products in int64; one product is below 2^22 in
magnitude, so a sum of them over input positions whose weights satisfy 32768 * Σ|w| < 2^31 cannot leave int32,
whatever the int16 inputs (and neither can any partial sum). `segments` cuts the input chunks (4 positions each)
greedily into such runs, for every output channel at once; the kernel sums each run in int32 (SMLAD on cores
with the DSP extension: two int16 x int16 products per instruction, the int8 weights sign-extended in registers
by SXTB16) and adds the runs to the int64 total that starts from the int64 bias. One run is the usual case (a
4,096-input FC with |w| <= 16 on average). The requantization reads the int64 total exactly as the reference.

**Weight layout (DSP path).** Per output channel, per chunk of four positions k0..k3, the bytes (w0, w2, w1, w3):
SXTB16 of the word gives (w0, w1) and SXTB16 ROR 8 gives (w2, w3), the halfword pairs that meet the int16 input
words (x0, x1) and (x2, x3). Positions past the last multiple of four are a small tail table. The plain path
(Cortex-M0+) reads the weights in their own order (a copy compiled only there).

**FULLY_CONNECTED's double requantization** (round(acc * scale) in double, int16-numerics 2.3) is done in integers
where exact, as the int8 kernel does (gemm_pack.double_requant, runtime_c/tinyc_simd.h): when every total fits
int32, q = acc * round(scale * 2^32) decides the rounding except within a compile-time margin of a half-integer,
where the double path runs.
"""
from __future__ import annotations

import numpy as np

from .gemm_pack import double_requant

INT31 = 1 << 31
PRODUCT = 32768          # |x| <= 32768 for int16 x: a run's sum stays in int32 while 32768 * Σ|w| < 2^31
MAX_SEGMENTS = 8         # beyond this many int32 runs, the reference kernel
SATURATED = 1 << 16      # |acc * scale| beyond this saturates any int16 output


def _is_16x8(g, node) -> bool:
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    return x.dtype == "int16" and y.dtype == "int16" and x.quant is not None and y.quant is not None


def segments(w: np.ndarray) -> list[tuple[int, int]] | None:
    """w: int8 [O, K4] (K4 a multiple of 4). (first chunk, end chunk) of the fewest greedy runs of chunks in which
    every channel keeps 32768 * Σ|w| < 2^31; None beyond MAX_SEGMENTS."""
    o, k4 = w.shape
    per_chunk = PRODUCT * np.abs(w.astype(np.int64)).reshape(o, k4 // 4, 4).sum(axis=2)
    out, run, start = [], np.zeros(o, np.int64), 0
    for c in range(k4 // 4):
        if np.any(run + per_chunk[:, c] >= INT31):
            out.append((start, c))
            run, start = np.zeros(o, np.int64), c
        run += per_chunk[:, c]
    if k4:
        out.append((start, k4 // 4))
    return out if len(out) <= MAX_SEGMENTS else None


def fits_int32(w: np.ndarray, bias: np.ndarray) -> bool:
    """Every channel's whole total (bias included) is below 2^31 for every int16 input."""
    return bool(np.all(np.abs(bias) + PRODUCT * np.abs(w.astype(np.int64)).sum(axis=1) < INT31))


def words_of_four(w: np.ndarray) -> np.ndarray:
    """int8 [R, n] -> the same bytes with each row's first n - n % 4 in the DSP layout of `reordered` (SXTB16 and
    SXTB16 ROR 8 of a word give the int16 pairs (w0, w1), (w2, w3)); the n % 4 last bytes of a row as they are."""
    n4 = w.shape[1] - w.shape[1] % 4
    return np.ascontiguousarray(np.concatenate([reordered(w[:, :n4]), w[:, n4:]], axis=1))


def reordered(w4: np.ndarray) -> np.ndarray:
    """int8 [O, K4] -> the DSP layout: per chunk of four, bytes (w0, w2, w1, w3)."""
    o, k4 = w4.shape
    return np.ascontiguousarray(w4.reshape(o, k4 // 4, 4)[:, :, [0, 2, 1, 3]]).reshape(o, k4)


def _weights_bias(g, node):
    w = g.tensors[node.inputs[1]]
    if w.dtype != "int8" or not w.is_const:
        return None, None
    w2d = w.data.astype(np.int8).reshape(w.shape[0], -1)
    if len(node.inputs) > 2:
        b = g.tensors[node.inputs[2]]
        if b.dtype != "int64" or not b.is_const:
            return None, None
        bias = b.data.astype(np.int64).reshape(-1)
    else:
        bias = np.zeros(w2d.shape[0], np.int64)
    return w2d, bias


def pointwise(g, node) -> bool:
    """A 1x1 CONV_2D that is a GEMM over its pixels: stride 1, no padding, no groups."""
    a = node.attrs
    w = g.tensors[node.inputs[1]]
    return (node.op == "Conv2D" and len(w.shape) == 4 and w.shape[1:3] == (1, 1) and int(a.get("groups", 1)) == 1
            and tuple(a["strides"]) == (1, 1) and not any(a["pads"]))


def applies(g, node) -> bool:
    """The 16x8 GEMM kernel takes this layer."""
    if node.op not in ("Dense", "Conv2D") or not _is_16x8(g, node):
        return False
    if node.op == "Conv2D" and not pointwise(g, node):
        return False
    w2d, bias = _weights_bias(g, node)
    if w2d is None:
        return False
    k4 = w2d.shape[1] - w2d.shape[1] % 4
    return segments(w2d[:, :k4]) is not None


def gemm(k):
    """FULLY_CONNECTED / 1x1 CONV_2D 16x8 (the module docstring), or None where it does not apply."""
    g, node, p = k.plan.graph, k.node, k.params
    if not applies(g, node):
        return None
    w2d, bias = _weights_bias(g, node)
    o, kdim = w2d.shape
    k4 = kdim - kdim % 4
    rows = k.in_size(0) // kdim
    # Written over its input (a window overlap), output row r + 1 may cover input row r: one row at a time then
    v = dict(rows=rows, k=kdim, k4=k4, o=o, lo=p.lo, hi=p.hi, segments=segments(w2d[:, :k4]),
             pair_rows=k.in_place is None, restrict="" if k.in_place is not None else "restrict ",
             # the M4 asm loop: LDRD of word-aligned input rows (even k), LDR offsets (k4 + 4) below 4096
             asm=kdim % 2 == 0 and (kdim - kdim % 4) + 4 <= 4095,
             far=3 * (kdim - kdim % 4) + 4 > 4095,    # channels 2, 3 from a second pointer (LDR offsets < 4096)
             wd=k.table(reordered(w2d[:, :k4]), "int8", "16x8 weights, bytes (w0, w2, w1, w3) per chunk of four",
                        "TINYC_DSP") if k4 else None,
             wp=k.table(w2d, "int8", "16x8 weights", "!TINYC_DSP"),
             tail=k.table(np.ascontiguousarray(w2d[:, k4:]), "int8", "16x8 weights of the last inputs",
                          "TINYC_DSP") if kdim - k4 else None,
             wide=not fits_int32(w2d, bias))
    if np.any(bias):     # int32 when the whole total provably fits (then no int64 arithmetic at all)
        v["bias"] = k.table(bias, "int64" if v["wide"] else "int32", "16x8 bias")
    else:
        v["bias"] = None
    if node.op == "Dense":
        scales = p.scales
        fixed = [double_requant(s, SATURATED) for s in scales]
        v["scale"] = k.table(np.asarray(scales, np.float64), "float64", "requantization scales")
        v["fast_double"] = not v["wide"] and all(f is not None for f in fixed)
        if v["fast_double"]:
            v["m32"] = k.table([f[0] for f in fixed], "int32", "requantization multipliers (scale x 2^32)")
            v["tie"] = k.table([f[1] for f in fixed], "uint32", "half-way margins")
        v["what"] = f"fully connected {rows} row(s) x {kdim} -> {o}"
    else:
        v.update(mult=k.table(p.mults, "int32", "requantization multipliers"),
                 shift=k.table(p.shifts, "int8", "requantization shifts"), fast_double=False)
        high = high_word_multipliers(p.mults, p.shifts)
        if high is not None and not v["wide"]:
            v["high"] = k.table(high, "int32", "requantization multipliers (high word of the product)")
        _, ih, iw, ic = k.in_shape(0)
        v["what"] = f"1x1 conv {ih}x{iw}x{ic} -> {o}"
    v["kind"] = node.op
    v["requant"] = lambda total, c: requantize_expr(v, total, c)
    return "gemm_16x8.c.j2", v, rows * kdim * o


def high_word_multipliers(mults, shifts) -> list[int] | None:
    """MBQM64 of an int32 acc (int16-numerics 1.3) as one rounded high-word product: with reduced = m rounded to
    16 bits and total = 15 - shift, (acc * reduced + 2^(total-1)) >> total = (acc * M + 2^31) >> 32 (SMMULR) for
    M = reduced * 2^(32 - total), both sides scaled by 2^(32 - total); exact when 16 <= total <= 32 (shift -17 ..
    -1), where M < 2^31. None when a channel's shift is outside."""
    out = []
    for m, sh in zip(mults, shifts):
        total = 15 - int(sh)
        if not 16 <= total <= 32:
            return None
        reduced = (int(m) + (1 << 15)) >> 16 if int(m) < 0x7FFF0000 else 0x7FFF
        out.append(reduced << (32 - total))
    return out


def requantize_expr(v: dict, total: str, c: str) -> str:
    """C expression of output channel `c` from its `total` (int64, or int32 where proved; reference arithmetic,
    int16-numerics 2)."""
    lo, hi = v["lo"], v["hi"]
    if v.get("high"):
        return f"tinyc_clamp16(tinyc_smmulr({total}, {v['high']}[{c}]), {lo}, {hi})"
    if v["kind"] == "Conv2D":
        return f"tinyc_clamp16(tinyc_requantize64({total}, {v['mult']}[{c}], {v['shift']}[{c}]), {lo}, {hi})"
    if v["fast_double"]:
        return (f"tinyc_clamp16(tinyc_requantize_double_fast((int32_t)({total}), {v['m32']}[{c}], {v['tie']}[{c}], "
                f"&{v['scale']}[{c}]), {lo}, {hi})")
    return f"tinyc_clamp16(tinyc_requantize64_double({total}, {v['scale']}[{c}]), {lo}, {hi})"


# -- depthwise ---------------------------------------------------------------------------------------------------
# One channel at a time (the order of the reference's in-place depthwise, so the planner's "depthwise" in-place
# decision holds too): the channel's kh x kw int8 weights (as stored: int8 in flash) are widened once per channel
# into int16 pairs in registers (SXTB16, _tap_register), each output pixel inside the image sums its
# taps at compile-time offsets from the pixel (one LDRSH and one MLA per multiply-accumulate) in int32, proved not
# to overflow (|bias| + 32768 * Σ|w| < 2^31); pixels whose window leaves the image take a bounds-checked loop.

def depthwise_applies(g, node) -> bool:
    """A 16x8 depthwise conv (multiplier 1) whose totals fit int32 and whose requantization is one SMMULR."""
    if node.op != "Conv2D" or not _is_16x8(g, node):
        return False
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    c = x.shape[-1]
    if int(node.attrs.get("groups", 1)) != c or y.shape[-1] != c or len(x.shape) != 4 or x.shape[0] != 1:
        return False
    w2d, bias = _weights_bias(g, node)
    return w2d is not None and fits_int32(w2d, bias)


def _segments_of(n_out: int, stride: int, pad: int, k: int, dil: int, n_in: int) -> list[tuple]:
    """Runs (first, end, taps inside) of output positions along one axis whose window taps inside the input are
    the same."""
    out = []
    for o in range(n_out):
        inside = tuple(t for t in range(k) if 0 <= o * stride - pad + t * dil < n_in)
        if out and out[-1][2] == inside:
            out[-1] = (out[-1][0], o + 1, inside)
        else:
            out.append((o, o + 1, inside))
    return out


def _tap_register(j: int, n: int) -> tuple[int, str]:
    """(register, half) of depthwise tap j of n on the DSP path: word q of a channel's int8 taps widens by SXTB16 into
    p(2q) = (tap 4q, tap 4q+2) and by SXTB16 ROR 8 into p(2q+1) = (4q+1, 4q+3) (low, high half); the n % 4 last taps
    one register each, in the low half."""
    n4 = n - n % 4
    if j < n4:
        return 2 * (j // 4) + j % 2, "t" if j % 4 >= 2 else "b"
    return n4 // 2 + j - n4, "b"


def _tap_mac(j: int, n: int) -> str:
    """The start of the SMLAxB call that multiplies tap j's widened weight by an int16 input in the low half."""
    r, half = _tap_register(j, n)
    return f"tinyc_smla{half}b(p{r}, "


def depthwise(k):
    g, node, p = k.plan.graph, k.node, k.params
    if not depthwise_applies(g, node) or (k.in_place is not None and not k.depthwise_in_place):
        return None     # written over its input in raster order (an overlap): the reference keeps that order
    high = high_word_multipliers(p.mults, p.shifts)
    if high is None:
        return None
    w2d, bias = _weights_bias(g, node)
    _, ih, iw, c = k.in_shape(0)
    _, oh, ow, _ = k.out_shape
    _, kh, kw, _ = k.in_shape(1)
    a = node.attrs
    (sh, sw), (dh, dw), (pt, pl) = a["strides"], a["dilations"], a["pads"][:2]
    # output rows / columns whose whole window lies inside the input
    rows = [oy for oy in range(oh) if oy * sh - pt >= 0 and oy * sh - pt + (kh - 1) * dh < ih]
    cols = [ox for ox in range(ow) if ox * sw - pl >= 0 and ox * sw - pl + (kw - 1) * dw < iw]
    taps = [(ky, kx, ((ky * dh) * iw + kx * dw) * c) for ky in range(kh) for kx in range(kw)]
    row_segs = _segments_of(oh, sh, pt, kh, dh, ih)
    col_segs = _segments_of(ow, sw, pl, kw, dw, iw)
    v = dict(ih=ih, iw=iw, c=c, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl, taps=taps,
             rows=(rows[0], rows[-1] + 1) if rows else (0, 0), cols=(cols[0], cols[-1] + 1) if cols else (0, 0),
             w=k.table(w2d, "int8", "16x8 depthwise weights, int8, the kh x kw taps of each channel"),
             bias=k.table(bias, "int32", "16x8 bias") if np.any(bias) else None,
             high=k.table(high, "int32", "requantization multipliers (high word of the product)"),
             lo=p.lo, hi=p.hi, t=k.scratch if k.depthwise_in_place else None, wstride=kh * kw,
             mac=[_tap_mac(j, kh * kw) for j in range(kh * kw)],
             tail=[(j, _tap_register(j, kh * kw)[0]) for j in range(kh * kw - (kh * kw) % 4, kh * kw)],
             # edge pixels: per block of rows and columns whose taps inside the image are the same, those taps
             # unrolled (no bounds checks); a kernel with many such blocks checks its taps per pixel instead
             blocks=[(r, cs) for r in row_segs for cs in col_segs] if len(row_segs) * len(col_segs) <= 16 else None)
    v["unused"] = _unused_tap_registers(v["blocks"], kh, kw)
    return "depthwise_16x8.c.j2", v, oh * ow * c * kh * kw


def _unused_tap_registers(blocks, kh: int, kw: int) -> list[int]:
    """The widened weight registers no block of pixels multiplies by (taps that no output pixel's window brings
    inside an image smaller than the kernel): declared with the others, then marked used for -Werror. Without
    blocks every tap is written out (the inner pixels' loop)."""
    n = kh * kw
    used = range(n) if blocks is None else {ky * kw + kx for (_, _, kys), (_, _, kxs) in blocks
                                             for ky in kys for kx in kxs}
    return sorted({_tap_register(j, n)[0] for j in range(n)} - {_tap_register(j, n)[0] for j in used})


# -- k x k convolution -------------------------------------------------------------------------------------------
# Raster order, all channels of a pixel before the next pixel (the reference's order: its window placements hold).
# An inner pixel's window is kh runs of kw * C contiguous int16 inputs (dilation 1 along the row); each run meets
# its weights as int16 pairs (the weights stored int8, bytes (w0, w2, w1, w3) per word of four, widened in registers
# by SXTB16 / SXTB16 ROR 8) with one SMLAD per two multiply-accumulates; two output channels of two neighbouring
# inner pixels per pass, so each widened weight word serves four SMLADs (on the M4 one asm statement per window:
# in C the compiler hoists the window's input loads out of the channel loop and spills them). Edge pixels copy their
# window with zeros outside onto the stack, or take a bounds-checked loop. int32 totals proved not to overflow, as
# above.

def conv_applies(g, node) -> bool:
    if node.op != "Conv2D" or not _is_16x8(g, node) or pointwise(g, node) or depthwise_applies(g, node):
        return False
    a = node.attrs
    x = g.tensors[node.inputs[0]]
    if int(a.get("groups", 1)) != 1 or int(a["dilations"][1]) != 1 or len(x.shape) != 4 or x.shape[0] != 1:
        return False
    w2d, bias = _weights_bias(g, node)
    return w2d is not None and fits_int32(w2d, bias)


def conv(k):
    g, node, p = k.plan.graph, k.node, k.params
    if not conv_applies(g, node):
        return None
    w2d, bias = _weights_bias(g, node)
    _, ih, iw, c = k.in_shape(0)
    _, oh, ow, o = k.out_shape
    _, kh, kw, _ = k.in_shape(1)
    a = node.attrs
    (sh, sw), dh, (pt, pl) = a["strides"], a["dilations"][0], a["pads"][:2]
    run = kw * c
    runp = run + run % 2
    run4 = run - run % 4
    rows = [oy for oy in range(oh) if oy * sh - pt >= 0 and oy * sh - pt + (kh - 1) * dh < ih]
    cols = [ox for ox in range(ow) if ox * sw - pl >= 0 and ox * sw - pl + kw - 1 < iw]
    high = high_word_multipliers(p.mults, p.shifts)
    v = dict(ih=ih, iw=iw, c=c, oh=oh, ow=ow, o=o, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, pt=pt, pl=pl, run=run, runp=runp,
             run4=run4, rows=(rows[0], rows[-1] + 1) if rows else (0, 0),
             cols=(cols[0], cols[-1] + 1) if cols else (0, 0),
             w=k.table(words_of_four(w2d.reshape(o * kh, run)), "int8",
                       "16x8 conv weights, int8, each row of the window as bytes (w0, w2, w1, w3) per four"),
             bias=k.table(bias, "int32", "16x8 bias") if np.any(bias) else None, lo=p.lo, hi=p.hi,
             restrict="" if k.in_place is not None else "restrict ",
             # written over its input (the planner's window placement, safe in raster order), a pass over two
             # pixels stores the second one's outputs after the first one's last read: no read follows a write
             # that raster order puts after it
             buffer_b=k.in_place is not None,
             window=kh * runp * 2 <= 512)     # edge pixels copy their window onto the stack (<= 512 bytes)
    if high is not None:
        hw = k.table(high, "int32", "requantization multipliers (high word of the product)")
        v["requant"] = lambda acc, ch: f"tinyc_clamp16(tinyc_smmulr({acc}, {hw}[{ch}]), {p.lo}, {p.hi})"
    else:
        mult = k.table(p.mults, "int32", "requantization multipliers")
        shift = k.table(p.shifts, "int8", "requantization shifts")
        v["requant"] = lambda acc, ch: (f"tinyc_clamp16(tinyc_requantize64({acc}, {mult}[{ch}], {shift}[{ch}]), "
                                        f"{p.lo}, {p.hi})")
    return "conv_16x8.c.j2", v, oh * ow * o * kh * kw * c


# -- transposed convolution ----------------------------------------------------------------------------------------
# The reference's gather form (each output pixel sums the taps that reach it) with int32 totals proved not to
# overflow, int8 weights (each tap's input channels as bytes (w0, w2, w1, w3) per word of four, widened in registers
# by SXTB16 / SXTB16 ROR 8) multiplied by SMLAD over channel pairs, four output channels per pass sharing the input
# loads (on the M4 one asm statement per tap), and the SMMULR requantization where exact.

def transpose_applies(g, node) -> bool:
    if node.op != "ConvTranspose2D" or not _is_16x8(g, node) or int(node.attrs.get("groups", 1)) != 1:
        return False
    w2d, bias = _weights_bias(g, node)
    return w2d is not None and fits_int32(w2d, bias)


def conv_transpose(k):
    g, node, p = k.plan.graph, k.node, k.params
    if not transpose_applies(g, node):
        return None
    template, v, macs = _reference_transpose_vars(k)
    w2d, bias = _weights_bias(g, node)
    o, kh, kw, cg = k.in_shape(1)
    high = high_word_multipliers(p.mults, p.shifts)
    v.update(w=k.table(words_of_four(w2d.reshape(o * kh * kw, cg)), "int8",
                       "16x8 transposed conv weights, int8, each tap's channels as bytes (w0, w2, w1, w3) per four",
                       "TINYC_DSP"),
             wp=k.table(w2d, "int8", "16x8 transposed conv weights, int8", "!TINYC_DSP"),
             cg4=cg - cg % 4, bias=k.table(bias, "int32", "16x8 bias") if np.any(bias) else None, lo=p.lo, hi=p.hi,
             restrict="" if k.in_place is not None else "restrict ")
    if high is not None:
        hw = k.table(high, "int32", "requantization multipliers (high word of the product)")
        v["requant"] = lambda acc, ch: f"tinyc_clamp16(tinyc_smmulr({acc}, {hw}[{ch}]), {p.lo}, {p.hi})"
    else:
        mult = k.table(p.mults, "int32", "requantization multipliers")
        shift = k.table(p.shifts, "int8", "requantization shifts")
        v["requant"] = lambda acc, ch: (f"tinyc_clamp16(tinyc_requantize64({acc}, {mult}[{ch}], {shift}[{ch}]), "
                                        f"{p.lo}, {p.hi})")
    return "conv_transpose_16x8.c.j2", v, macs


def _reference_transpose_vars(k):
    """The reference template's loop variables (ops/conv_transpose.py float_kernel's), and the MACs: per axis, the
    taps whose input position exists, summed over the output positions."""
    batch, ih, iw, ic = k.in_shape(0)
    _, oh, ow, oc = k.out_shape
    _, kh, kw, cg = k.in_shape(1)
    a = k.node.attrs
    (sh, sw), (dh, dw), groups = a["strides"], a["dilations"], a["groups"]
    top, left = a["pads"][0], a["pads"][1]

    def offset(name, v):
        return f"{name} + {v}" if v > 0 else (f"{name} - {-v}" if v < 0 else name)

    def hits(size, kk, s, d, begin, out):
        return sum(1 for o in range(out) for t in range(kk)
                   if (o + begin - t * d) % s == 0 and 0 <= (o + begin - t * d) // s < size)
    v = dict(batch=batch, ih=ih, iw=iw, ic=ic, oh=oh, ow=ow, oc=oc, kh=kh, kw=kw, cg=cg, groups=groups,
             og=oc // groups, sh=sh, sw=sw, dh=dh, dw=dw, pads=tuple(a["pads"]), ty=offset("oy", top),
             tx=offset("ox", left))
    macs = batch * hits(ih, kh, sh, dh, top, oh) * hits(iw, kw, sw, dw, left, ow) * cg * oc
    return "conv_transpose_16x8.c.j2", v, macs
