"""Weights and requantization constants for the fast int8 GEMM kernel (templates/int8_fast/gemm.c.j2), with the
compile-time checks that make its shortcuts exact.

**Pair-packed weights.** Output channels are taken in pairs (A, B). For input positions k, the kernel sees one
int16 per pair, h = w_A[k] + 256 * w_B[k]. One SMLAD of two input values (x_k, x_k') against (h_k, h_k') adds
Σ x * w_A + 256 * Σ x * w_B to accumulator X; one SXTB16 of the same word gives (w_A[k], w_A[k']) (the low byte
of h is w_A's), and a second SMLAD adds Σ x * w_A to accumulator Y. At the end A = Y and B = (X - Y) / 256:
three instructions per four multiply-accumulates where unpacking int8 weights costs four. Exact when
  - every h fits int16 (w_B = -128 with w_A < 0 does not), and
  - |256 * Σ x * w_B| < 2^31 for every int8 input x, i.e. 128 * Σ_k |w_B[k]| < 2^23 (X wraps modulo 2^32, which
    is harmless, but X - Y must recover 256 * Σ x * w_B exactly).
The second condition is kept per *segment* of the inputs: where a long row would break it (a Dense of 1,568
inputs), the kernel ends a segment, adds B_segment = (X - Y) >> 8 to a third accumulator and sets X = Y, so each
segment's X - Y stays exact. `segments` cuts the input chunks greedily; one segment is the usual case.
Layout, per group of four output channels (two pairs) and per chunk of four input positions k0..k3, the int16
words [h(k0), h(k2), h(k1), h(k3)] of the first pair then of the second (so SXTB16 / SXTB16 ROR 8 of one input
word (x0, x2) / (x1, x3) meet matching halfwords); a last odd pair follows in the same form; a last single channel
keeps plain int8 weights; input positions past the last multiple of four are a small int8 tail table.

**Input offset folded into the bias.** Σ (x - z) * w + b = Σ x * w + (b - z * Σ w): the kernel multiplies raw
int8 inputs and starts from the folded bias.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

INT31 = 1 << 31


@dataclass
class PackedWeights:
    packed: np.ndarray        # int16, the pair-packed words (quads, then an odd pair)
    single: np.ndarray        # int8 [K4] weights of a last single channel (empty if none)
    tail: np.ndarray          # int8 [O, K % 4]
    quads: int
    odd_pair: bool
    pairs: int                # channel pairs (o // 2)
    odd_single: bool
    k4: int                   # input positions handled by the packed words (K rounded down to 4)
    segments: list            # chunks of four inputs per segment (module docstring), summing to k4 / 4


SEGMENT_LIMIT = 1 << 23     # 128 * Σ|w_B| over one segment must stay below this
MAX_SEGMENTS = 8            # each segment repeats the unrolled inner loop: beyond this, the reference kernel


def h_fits(w_a: np.ndarray, w_b: np.ndarray) -> bool:
    """Every packed word h = w_A + 256 w_B of one pair fits int16."""
    h = w_a.astype(np.int64) + 256 * w_b.astype(np.int64)
    return bool(np.all(h >= -32768) and np.all(h <= 32767))


def segments(w_b: np.ndarray) -> list[int]:
    """w_b: the B rows of every pair, [pairs, K4]. Chunk counts of the fewest greedy segments in which every
    pair keeps 128 * Σ|w_B| < SEGMENT_LIMIT."""
    per_chunk = 128 * np.abs(w_b.astype(np.int64)).reshape(len(w_b), -1, 4).sum(axis=2)    # [pairs, chunks]
    out, run, n = [], np.zeros(len(w_b), np.int64), 0
    for c in range(per_chunk.shape[1]):
        if np.any(run + per_chunk[:, c] >= SEGMENT_LIMIT):
            out.append(n)
            run, n = np.zeros_like(run), 0
        run += per_chunk[:, c]
        n += 1
    return out + [n] if n else out


def pack(w: np.ndarray, layout: str = "quad") -> PackedWeights | None:
    """w: int8 [O, K]. None when a pair's words do not fit int16 or the inputs would need more than MAX_SEGMENTS
    segments (the layer then uses the reference kernel). layout "quad": per chunk of 4 inputs the words of two
    pairs together (one pixel, two pairs per step); "pair": each pair's words for all inputs, pair after pair (two
    pixels, one pair per step)."""
    o, k = w.shape
    k4 = k - k % 4
    w = w.astype(np.int64)
    pairs = o // 2
    main = w[:, :k4]
    if not all(h_fits(main[2 * p], main[2 * p + 1]) for p in range(pairs)):
        return None
    segs = segments(main[1:2 * pairs:2]) if pairs else [k4 // 4]
    if len(segs) > MAX_SEGMENTS:
        return None
    words = []
    for p in range(pairs):
        h = main[2 * p] + 256 * main[2 * p + 1]                    # [K4]
        words.append(h.reshape(-1, 4)[:, [0, 2, 1, 3]])            # per chunk: h0, h2, h1, h3
    quads = pairs // 2 if layout == "quad" else 0
    parts = []
    if quads:
        q = np.stack(words[:2 * quads]).reshape(quads, 2, -1, 4)   # quad, pair, chunk, 4
        parts.append(q.transpose(0, 2, 1, 3).reshape(-1))          # quad, chunk, pair, 4
    parts += [wd.reshape(-1) for wd in words[2 * quads:]]
    packed = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return PackedWeights(packed=packed.astype(np.int16), single=w[-1, :k4].astype(np.int8) if o % 2 else
                         np.zeros(0, np.int8), tail=w[:, k4:].astype(np.int8), quads=quads,
                         odd_pair=layout == "quad" and bool(pairs % 2), pairs=pairs, odd_single=bool(o % 2), k4=k4,
                         segments=[s for s in segs if s])


def folded_bias(w: np.ndarray, bias: np.ndarray | None, in_zp: int) -> np.ndarray | None:
    """bias - in_zp * Σ_k w[o, k] as int64 (None if it does not fit int32)."""
    b = np.zeros(w.shape[0], np.int64) if bias is None else bias.astype(np.int64)
    out = b - int(in_zp) * w.astype(np.int64).sum(axis=1)
    # the kernel adds raw-input partial sums (|Σ x w| <= 128 Σ|w|) to it in int32
    if np.any(np.abs(out) + 128 * np.abs(w.astype(np.int64)).sum(axis=1) >= INT31):
        return None
    return out


def acc_bound(w: np.ndarray, bias: np.ndarray | None, in_zp: int) -> int:
    """Largest |Σ (x - in_zp) * w + bias| over all int8 inputs x, over all output channels."""
    span = max(127 - int(in_zp), int(in_zp) + 128)
    b = 0 if bias is None else np.abs(bias.astype(np.int64))
    return int(np.max(span * np.abs(w.astype(np.int64)).sum(axis=1) + b))


def fast_mbqm(shifts, bound: int) -> bool:
    """tinyc_requantize_fast applies: every shift a right shift of 1..31 and |acc| < 2^30."""
    return bool(all(-31 <= s <= -1 for s in shifts) and bound < (1 << 30))


SATURATED = 400     # |acc * scale| beyond this saturates any int8 output whatever the zero point


def double_requant(scale: float, saturated: int = SATURATED) -> tuple[int, int] | None:
    """For tinyc_requantize_double_fast: (m, tie) with m = round(scale * 2^32) and tie (in 2^-32 units) larger
    than |acc * m / 2^32 - acc * scale| plus the double product's rounding for every acc whose result does not
    saturate (|acc * scale| < saturated: SATURATED for int8 outputs, int16_fast.SATURATED for int16 ones); None
    when the scale is outside (0, 0.5)."""
    s = Fraction(scale)
    if not (0 < s < Fraction(1, 2)):
        return None
    m = round(s * (1 << 32))
    if not (0 < m < INT31):
        return None
    a_max = min(Fraction(saturated) / s, Fraction(INT31))
    err = a_max * abs(m - s * (1 << 32))                   # |acc| * |m - scale * 2^32|
    rounding = Fraction(saturated * (1 << 32), 1 << 53)    # the double product's relative error 2^-53
    tie = int(err + rounding) + 2
    return (m, tie) if tie < (1 << 30) else None


# ---------------------------------------------------------------------------------------------------------------
# Byte layout for cores without the DSP extension (Cortex-M0+: Thumb-1, no SMLAD, signed byte loads only with a
# register offset). The kernel multiplies *unsigned* bytes so every load is one LDRB with an immediate offset:
# u = x ^ 0x80 = x + 128 for the inputs (written into kernel scratch once per row, with their sum S), v = w + 128
# for the weights. Then
#   Σ (x - z) w + b = Σ u v - 128 S + (b - (z + 128) Σ w)
# and the last term is folded at compile time. Per input position, one LDRB of u, four LDRBs of v, four MULS,
# four ADDs: 13 instructions for 4 multiply-accumulates. Σ u v < 65025 K stays exact in uint32.

BYTE_UNROLL = 8     # inputs per inner iteration: LDRB immediate offsets reach 31 = 4 * 8 - 1


def byte_k(k: int) -> int:
    """Input positions the byte kernel walks: K rounded up to BYTE_UNROLL (the padding inputs are u = 0)."""
    return -(-k // BYTE_UNROLL) * BYTE_UNROLL


def pack_bytes(w: np.ndarray) -> np.ndarray:
    """w: int8 [O, K] -> uint8 [ceil(O / 4), byte_k(K), 4]: per group of four output channels, per input
    position, the four channels' w + 128 (padding channels and positions have w = 0)."""
    o, k = w.shape
    groups = -(-o // 4)
    v = np.full((groups * 4, byte_k(k)), 128, np.int64)
    v[:o, :k] = w.astype(np.int64) + 128
    return v.reshape(groups, 4, -1).transpose(0, 2, 1).astype(np.uint8)


def byte_folded_bias(w: np.ndarray, bias: np.ndarray | None, in_zp: int) -> np.ndarray | None:
    """b - (z + 128) Σ_k w per channel, padded to a multiple of 4 channels with zeros; None if the byte kernel's
    sums could leave uint32 / int32 (K > 66051, or the folded bias beyond int32)."""
    o, k = w.shape
    if 65025 * byte_k(k) >= (1 << 32):
        return None
    b = np.zeros(o, np.int64) if bias is None else bias.astype(np.int64)
    out = b - (int(in_zp) + 128) * w.astype(np.int64).sum(axis=1)
    if np.any(np.abs(out) >= INT31):
        return None
    return np.concatenate([out, np.zeros(-o % 4, np.int64)])
