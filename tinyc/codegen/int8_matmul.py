"""Fast int8 MatMul of two computed tensors (attention's q @ k^T and p @ v; templates/int8_fast/matmul.c.j2),
byte-identical to the reference (tinyc/ops/matmul.py, TFLite's BATCH_MATMUL).

Both operands are computed, so nothing is packed at compile time (the GEMM kernel's pair-packed words need weights
known to fit int16). Per batch, the DSP path reads the left operand as rows [M, K] and the right one as rows
[N, K] (both contiguous in k); an operand stored the other way round is transposed once into the kernel scratch.
Per pair of left rows, the two rows are sign-extended once into the scratch (per 4 k the halfwords (0, 2) and
(1, 3), doubled); then 2 x 2 outputs per block, four k per step written out with immediate offsets: two word
loads and four SXTB16 of the right rows, four loads of the extended left rows, eight SMLAD for 16 multiply-
accumulates. The zero points come out of the loop:
    Σ (a - z_a)(b - z_b) = Σ a b - z_b Σ a - z_a Σ b + K z_a z_b,
with -z_a Σ_k b per right row computed once per batch (int32, in the scratch) and K z_a z_b - z_b Σ_k a once per
left row; they start the accumulators. The doubled left halves make the accumulators hold 2 acc, the form
TFLite's rounding multiply (SMMULR of 2 acc) wants, and the output zero point is added before the final shift
where that stays in int32. An odd last left row is paired with itself (the same bytes stored twice); an odd last
right row gets a plain loop. Cores without DSP run the same blocks in plain C."""
from __future__ import annotations

import numpy as np

from . import gemm_pack
from .loops import broadcast_strides, row_major_strides, strided_loops


def logical_shapes(node, a, b) -> tuple[tuple, tuple]:
    """The operands' shapes as multiplied ([..., M, K] and [..., K, N]), after the transposes the node reads."""
    a, b = tuple(a), tuple(b)
    if node.attrs.get("transpose_a") and len(a) >= 2:
        a = a[:-2] + (a[-1], a[-2])
    if node.attrs.get("transpose_b") and len(b) >= 2:
        b = b[:-2] + (b[-1], b[-2])
    return a, b


def geometry(k) -> dict:
    """M, K, N, the batch shape and, per batch index, the element offsets of y, a and b (broadcast axes 0)."""
    a, b = logical_shapes(k.node, k.in_shape(0), k.in_shape(1))
    y = k.out_shape
    m, kk, n = a[-2], a[-1], b[-1]
    batch = list(y[:-2]) or [1]
    strides = [[s * m * n for s in row_major_strides(batch)],
               [s * m * kk for s in broadcast_strides(a[:-2], batch)] if len(a) > 2 else [0] * len(batch),
               [s * kk * n for s in broadcast_strides(b[:-2], batch)] if len(b) > 2 else [0] * len(batch)]
    # element (m, k) of a and (k, n) of b in C, as stored
    a_at = "pa[k * %d + m]" % m if k.node.attrs.get("transpose_a") else "pa[m * %d + k]" % kk
    b_at = "pb[n * %d + k]" % kk if k.node.attrs.get("transpose_b") else "pb[k * %d + n]" % n
    return dict(m=m, k=kk, n=n, batch=batch, strides=strides, a_at=a_at, b_at=b_at,
                macs=int(np.prod(batch)) * m * n * kk, shapes=(tuple(k.in_shape(0)), tuple(k.in_shape(1)), tuple(y)))


MAX_UNROLL = 16     # steps of four k written out (immediate offsets); deeper products loop


def _sides(node) -> tuple[bool, bool]:
    """(pack the left operand, pack the right operand): stored [K, M] / [K, N] rather than as rows."""
    return bool(node.attrs.get("transpose_a")), not node.attrs.get("transpose_b")


MAX_DEPTH = ((1 << 31) - 1) // (2 * 255 * 255)     # the DSP path accumulates 2 acc in int32


def applies(g, node) -> bool:
    return (node.op == "MatMul" and all(g.tensors[t].dtype == "int8" and g.tensors[t].quant is not None
                                        for t in (*node.inputs[:2], node.outputs[0]))
            and _dims(g, node)[1] <= MAX_DEPTH)


def _dims(g, node) -> tuple[int, int, int]:
    a, b = logical_shapes(node, g.tensors[node.inputs[0]].shape, g.tensors[node.inputs[1]].shape)
    return a[-2], a[-1], b[-1]


def work_bytes(g, node, level: str = "full") -> int:
    """z_a Σ b per right row (int32), then the transposed right and left operands where they need it (the
    planner asks int8_fast.work_bytes, which gives 0 where it wants no scratch: the rule then returns None)."""
    if not applies(g, node):
        return 0
    m, k, n = _dims(g, node)
    return sum(_scratch(m, k, n, *_sides(node), level == "full"))


def _scratch(m, k, n, pack_a, pack_b, expand_b) -> tuple[int, int, int, int]:
    """Bytes of: the column terms (int32 per right row) and, with `expand_b`, the right rows sign-extended; two
    sign-extended left rows; the right and the left operand transposed (where they need it)."""
    k4 = k - k % 4
    return 4 * n + (2 * n * k4 if expand_b else 0), 4 * k4, n * k if pack_b else 0, m * k if pack_a else 0


def matmul(k, level: str = "full"):
    """The rule; `level`: the planner's scratch level (int8_fast.scratch_level): "small" keeps the right rows
    as bytes (sign-extended per block instead of once)."""
    g = k.plan.graph
    if not applies(g, k.node) or k.work is None:      # a plan made without kernel scratch
        return None
    geo, p = geometry(k), k.params
    m, kdim, n = geo["m"], geo["k"], geo["n"]
    pack_a, pack_b = _sides(k.node)
    bound = 255 * 255 * kdim                  # |acc| over every int8 input
    expand_b = level == "full"
    cols, rows, packed_b, _ = _scratch(m, kdim, n, pack_a, pack_b, expand_b)
    requant = "mbqm"
    round_half = round_zp = 0
    if gemm_pack.fast_mbqm([p.shift], bound):
        requant, rshift = "fast_zp", -p.shift
        round_half = 1 << (rshift - 1)
        # the output zero point added before the final shift (exact: zp * 2^r is a multiple of 2^r), where the
        # sum stays in int32: |s| <= |2 acc m| / 2^32 + 1
        round_zp = round_half + (p.out_zp << rshift)
        if (bound * p.mult >> 31) + 1 + abs(round_zp) < (1 << 31):
            requant = "fast"
    body = ("{{ const int8_t *pa = %s + {o1}; const int8_t *pb = %s + {o2}; int8_t *py = y + {o0};\n@BODY@\n  }}"
            % (k.expr(0), k.expr(1)))
    v = dict(comment=f"fast int8 matmul, {m} x {n} outputs of depth {kdim} per batch",
             loops=strided_loops(geo["batch"], geo["strides"], body), m=m, n=n, kdim=kdim, k4=kdim - kdim % 4,
             unrolled=kdim - kdim % 4 <= 4 * MAX_UNROLL, a_zp=p.a_zp, b_zp=p.b_zp, out_zp=p.out_zp,
             row_const=kdim * p.a_zp * p.b_zp, off_f=4 * n, expand_b=expand_b, pack_a=pack_a, pack_b=pack_b,
             off_e=cols, off_b=cols + rows, off_a=cols + rows + packed_b, a_at=geo["a_at"], b_at=geo["b_at"],
             mult=p.mult, shift=p.shift,
             requant=requant, rshift=-p.shift, round_half=round_half, round_zp=round_zp)
    return "matmul.c.j2", v, geo["macs"]
