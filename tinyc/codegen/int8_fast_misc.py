"""Fast int8 pooling, Add/Sub/Mul, Mean, Softmax and unary (activation, int8 requantize) rules, each the bit-exact
twin of its op's reference rule in tinyc/ops/ (templates/int8_fast/pool.c.j2, binary.c.j2, lut.c.j2, mean.c.j2,
softmax.c.j2). Both read the parameters the op's `int8_prepare` computed (`k.params`).

How each stays exact:
- Unary int8 -> int8 ops (RELU/RELU6/clip, LEAKY_RELU, HARD_SWISH, LOGISTIC, TANH, QUANTIZE int8 -> int8) have
  only 256 possible inputs, so the reference formula is evaluated here for all of them, in exact Python integers
  mirroring runtime_c/tinyc_int8.h (`unary_table`), and the kernel is one table load per element. A table that
  is a plain clamp of the input runs as SIMD max/min on DSP cores.
- Add/Sub: each input's rescale (x - z) * 2^20 -> MultiplyByQuantizedMultiplier depends on that input alone:
  the operand with the larger scale has multiplier 0.5 and is a plain shift, the other is a 256-entry int32
  table for big tensors (`add_sub`); the final rescale, Mul's and MEAN's use the cheapest requantization
  `requant_expr` can prove equal to tinyc_requantize over the accumulator's bound.
- SOFTMAX: the reference's exponential only sees d = max - x (0..255), so it is a 256-entry table of the
  reference's values (`softmax_exp_table`); the sum and the final rescale are rewritten exactly for e, r >= 0
  (SOFTMAX_*, below).
- Pools: max via SSUB8/SEL on 4 channels per word; average sums 4 channels per word in 16-bit halves (windows of
  at most 255 cells cannot overflow them) and divides with TFLite's rounding by a reciprocal multiply checked
  here for every sum the window can produce (`avg_reciprocal`).
"""
from __future__ import annotations

import numpy as np

from ..quant import params as qp
from ..quant.fixed_point import multiply_by_quantized_multiplier as mbqm
from ..quant.fixed_point import exp_on_negative_values_q5, rounding_divide_by_pot, saturating_rounding_doubling_high_mul
from .loops import broadcast_strides, row_major_strides, strided_loops

INT8 = range(-128, 128)
ADD_TABLE_MIN_ELEMENTS = 512    # Add/Sub with at least this many outputs look their smaller-scale operand up
                                # in a 1 KB int32 table (none when both scales are equal)
UNROLL_TAPS = 64                # pooling windows up to this many cells are unrolled in the interior
RECIP_SHIFT = 24                # average pooling: tinyc_avg_div's >> 24
SOFTMAX_MAX_ROW = 511           # softmax rows up to this long: the Q12.19 sum of exponentials stays below 2^28, so
                                # the output's exponent E = bits over unit + 23 is at most 31


def _quantized_int8(t) -> bool:
    return t.dtype == "int8" and t.quant is not None


def _int8_io(k) -> bool:
    return all(_quantized_int8(k.tensor(i)) for i in range(len(k.node.inputs))) and _quantized_int8(k.out)


def _restrict(k) -> str:
    return "" if k.in_place is not None else "restrict "     # an output written over its input aliases it


def _sat(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else (hi if v > hi else v)


def _absmax(zp: int) -> int:
    """max |x - zp| over int8 x."""
    return max(abs(-128 - zp), abs(127 - zp))


def _plus(expr: str, zp: int) -> str:
    return f"{expr} + ({zp})" if zp else expr


def requant_expr(acc: str, bound: int, m: int, shift: int, zp: int = 0, doubled: bool = False) -> str:
    """A C expression equal to tinyc_requantize(acc, m, shift) + zp for every |acc| <= bound, as cheap as can be
    proved: SRDHM(x, m) = floor((x m + 2^30) / 2^31) = smmulr(2x, m) (tinyc_mulhr) whenever 2x * 2^max(shift, 0)
    fits in int32 (no wrap, no saturation); for shift <= -1, tinyc_requantize_fast2's (s + (s < 0 ? -1 : 0) + c)
    >> r is RDBPOT(s, r) with c = 2^(r-1), and adding zp * 2^r to c adds zp to the result exactly when nothing
    overflows (|s| <= bound + 1). `doubled`: the C expression `acc` is 2 acc (bound still bounds acc)."""
    if m == 0:
        return str(zp)                               # SRDHM(x, 0) = 0, RDBPOT(0, e) = 0
    acc2 = acc if doubled else f"({acc}) * 2"
    if m > 0 and shift <= -1 and bound < (1 << 30):
        r = -shift
        if bound + 2 + (1 << (r - 1)) + abs(zp) * (1 << r) < (1 << 31):
            return f"tinyc_requantize_fast2({acc2}, {m}, {r}, {(1 << (r - 1)) + zp * (1 << r)})"
        return _plus(f"tinyc_requantize_fast2({acc2}, {m}, {r}, {1 << (r - 1)})", zp)
    if m > 0 and shift >= 0 and bound << (shift + 1) < (1 << 31):
        return _plus(f"tinyc_mulhr(({acc}) * {1 << (shift + (0 if doubled else 1))}, {m})", zp)
    return _plus(f"tinyc_requantize(({acc}) >> 1, {m}, {shift})" if doubled else
                 f"tinyc_requantize({acc}, {m}, {shift})", zp)


def clamp_expr(v: str, lo: int, hi: int) -> str:
    """int8 of v clamped to [lo, hi] (SSAT alone for the full range)."""
    if (lo, hi) == (-128, 127):
        return f"(int8_t)tinyc_ssat8({v})"
    return f"(int8_t)tinyc_clamp8({v}, {lo}, {hi})"


# -- unary ops: the reference formula on all 256 inputs ---------------------------------------------------------
def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _i16(v: int) -> int:
    return ((v + 32768) & 0xFFFF) - 32768


def _srdhm16(a: int, b: int, rounding: bool = True) -> int:
    """tinyc_srdhm16 (rounding) / tinyc_sdhm16 (truncating)."""
    if a == b == -32768:
        return 32767
    ab = a * b
    if rounding:
        ab += (1 << 14) if ab >= 0 else 1 - (1 << 14)
    return _i16(_c_div(ab, 1 << 15))


def hard_swish_value(x: int, in_zp: int, out_mult: int, out_exp: int, relu_mult: int, relu_exp: int,
                     out_zp: int) -> int:
    """tinyc_hard_swish (runtime_c/tinyc_int8.h) in exact integers (relu_exp <= 16: no int32 overflow in C)."""
    hires = _i16((x - in_zp) * 128)
    scaled = _srdhm16(hires, out_mult)
    r = hires
    if relu_exp > 0:
        r = _sat(r * (1 << (relu_exp - 1)), -32768, 32767)
    r = _srdhm16(r, relu_mult)
    if relu_exp > 0:
        r = _sat(r * 2, -32768, 32767)
    if relu_exp < 0:
        r = _i16(rounding_divide_by_pot(r, -relu_exp))
    r = _i16((r + 32768) >> 1)
    p = _srdhm16(r, scaled, rounding=False)
    return _sat(rounding_divide_by_pot(p, -out_exp) + out_zp, -128, 127)


def hard_swish_params(s_in: float, s_out: float) -> tuple[int, int, int, int] | None:
    """(out_mult, out_exp, relu_mult, relu_exp) of tinyc_hard_swish (quant.params.hard_swish_multipliers), or
    None where the reference refuses them or its C would overflow (relu_exp > 16)."""
    p = qp.hard_swish_multipliers(s_in, s_out)
    return None if p[1] > 0 or p[3] > 16 else p


def unary_table(k) -> list | None:
    """y for x = -128..127 (index x + 128) of an int8 -> int8 elementwise op, computed exactly as its reference
    kernel computes it (same parameters, `k.params`, same integer steps), or None when the reference kernel is
    needed (float input, or arithmetic whose C overflows)."""
    node, p = k.node, k.params
    if not _int8_io(k):
        return None
    if node.op == "Quantize":
        m, sh = p
        zi, zo = qp.zero_point_of(k.tensor(0).quant), qp.zero_point_of(k.out.quant)
        return [_sat(mbqm(v - zi, m, sh) + zo, -128, 127) for v in INT8]
    if node.op != "Activation":
        return None
    zi, zo = p.in_zp, p.out_zp
    if p.fn in ("relu", "clip"):
        m, sh = p.rescale
        return [_sat(mbqm(v - zi, m, sh) + zo, p.lo, p.hi) for v in INT8]
    if p.fn == "leaky_relu":
        (m_i, e_i), (m_a, e_a) = p.rescale, p.alpha_rescale
        return [_sat(zo + (mbqm(v - zi, m_i, e_i) if v >= zi else mbqm(v - zi, m_a, e_a)), -128, 127)
                for v in INT8]
    if p.fn == "hard_swish":
        return None if p.hard_swish[3] > 16 else [hard_swish_value(v, zi, *p.hard_swish, zo) for v in INT8]
    if p.table:     # sigmoid, tanh, abs, sqrt, exp, log, gelu: the reference kernel is the table already
        return [int(v) for v in p.table]
    return None


def _clamp_of(table: list) -> tuple[int, int] | None:
    """(lo, hi) when table[x + 128] == clamp(x, lo, hi) for every x."""
    lo, hi = table[0], table[255]
    if lo > hi or any(table[v + 128] != _sat(v, lo, hi) for v in INT8):
        return None
    return lo, hi


def _word(v: int) -> str:
    return "0x%08Xu" % ((v & 0xFF) * 0x01010101)


def unary(k):
    if "int16" in (k.tensor(0).dtype, k.out.dtype):
        return unary_int16(k)
    table = unary_table(k)
    if table is None:
        return None
    n = k.out_size
    what = k.node.attrs.get("fn", "requantize") if k.node.op == "Activation" else "requantize"
    clamp = _clamp_of(table)
    same_bytes = k.in_place is not None and k.in_place.kind == "elementwise" and k.in_place.lead == 0
    v = dict(n=n, n4=n - n % 4, x=k.expr(0), restrict=_restrict(k), clamp=clamp is not None, what=what,
             noop=False)
    if clamp is not None:
        lo, hi = clamp
        v.update(lo=lo, hi=hi, lo_word=_word(lo), hi_word=_word(hi),
                 noop=(lo, hi) == (-128, 127) and same_bytes)
        v["variant"] = "identity" if v["noop"] else "clamp"
    else:
        v["variant"] = "table"
    # indexed by the input's byte as uint8: u -> table[int8(u) + 128] = table[u ^ 0x80]
    v["table"] = None if v["noop"] else k.table([table[u ^ 0x80] for u in range(256)], "int8",
                                                  f"int8 {what}: output for each input byte")
    return "lut.c.j2", v, 0


def _clamp16_expr(v: str, lo: int, hi: int, dtype: str) -> str:
    """The output of a 16x8 rescale: int8 (QUANTIZE int16 -> int8) or int16, clamped to [lo, hi]."""
    return clamp_expr(v, lo, hi) if dtype == "int8" else f"tinyc_clamp16({v}, {lo}, {hi})"


def unary_int16(k):
    """16x8 RELU / RELU6, LEAKY_RELU and QUANTIZE int16 -> int8 / int16 (docs/int16-numerics.md 3.4, 3.5): each
    MultiplyByQuantizedMultiplier of an int16 value (|v| <= 2^15) in the cheapest form `requant_expr` proves equal.
    LOGISTIC / TANH (their own kernels) use the reference rule."""
    node, p = k.node, k.params
    if k.tensor(0).dtype != "int16":
        return None
    if node.op == "Quantize":
        m, sh = p
        lo, hi = (-128, 127) if k.out.dtype == "int8" else (-32768, 32767)
        expr = _clamp16_expr(requant_expr("v", 1 << 15, m, sh, qp.zero_point_of(k.out.quant)), lo, hi, k.out.dtype)
        what = f"requantize int16 to {k.out.dtype}"
    elif node.op == "Activation" and p.fn in ("relu", "clip"):
        m, sh = p.rescale
        expr, what = _clamp16_expr(requant_expr("v", 1 << 15, m, sh), p.lo, p.hi, "int16"), f"int16 {p.fn}"
    elif node.op == "Activation" and p.fn == "leaky_relu":
        (m_i, e_i), (m_a, e_a) = p.rescale, p.alpha_rescale
        expr = _clamp16_expr(f"(v >= 0 ? {requant_expr('v', 1 << 15, m_i, e_i)} : "
                             f"{requant_expr('v', 1 << 15, m_a, e_a)})", p.lo, p.hi, "int16")
        what = "int16 leaky relu"
    else:
        return None
    stmt = "{{ const int32_t v = %s[{o1}]; y[{o0}] = %s; }}" % (k.expr(0), expr)
    return "binary.c.j2", dict(comment=f"{what} on {k.out_size} values", variant="int16",
                               loops=strided_loops([k.out_size], [[1], [1]], stmt)), 0


# -- Add / Sub / Mul ----------------------------------------------------------------------------------------------
def _flat_loops(n: int, stmt: str, unroll: int = 4) -> str:
    """for-loop over n elements with `stmt` ({o0}, {o1}, {o2}: the element index) unrolled `unroll` times."""
    lines = []
    main = n - n % unroll
    if main:
        lines.append(f"  for (int i = 0; i < {main}; i += {unroll}) {{")
        for u in range(unroll):
            idx = "i" if u == 0 else f"i + {u}"
            lines.append("    " + stmt.format(o0=idx, o1=idx, o2=idx))
        lines.append("  }")
    for i in range(main, n):
        lines.append("  " + stmt.format(o0=i, o1=i, o2=i))
    return "\n".join(lines)


def _binary_loops(k, stmt: str) -> str:
    out = k.out_shape
    if tuple(k.in_shape(0)) == tuple(out) and tuple(k.in_shape(1)) == tuple(out):
        return _flat_loops(k.out_size, stmt)
    strides = [row_major_strides(out), broadcast_strides(k.in_shape(0), out), broadcast_strides(k.in_shape(1), out)]
    return strided_loops(out, strides, stmt)


def add_sub_params(k):
    """(per input: the value of its rescaled operand for each int8 x, index x + 128), the input multipliers and
    zero points, and the output multiplier, shift, zero point and clamp (`k.params`, ops/binary.py)."""
    p = k.params
    values = [[mbqm((x - z) * (1 << 20), m, sh) for x in INT8] for (m, sh), z in zip(p.in_mults, p.in_zps)]
    return values, list(p.in_mults), list(p.in_zps), p.out_mult, p.out_shift, p.out_zp, p.lo, p.hi


def _pure_shift(values: list, z: int) -> int | None:
    """k when values[x + 128] == (x - z) * 2^k for every x (the operand with the larger scale: multiplier 0.5)."""
    for k in range(31):
        if all(v == (x - z) * (1 << k) for v, x in zip(values, INT8)):
            return k
    return None


def add_sub(k):
    """raw = a(x0) +- b(x1) then the output rescale. The operand with the larger scale has multiplier 0.5, so it
    is (x - z) * 2^19 (found by checking all 256 values); the other is a table (big tensors) or computed. The
    final rescale's smmulr wants 2 raw: the operands come doubled, and every constant term is folded into a
    table (or added once). int16 (16x8): `add_sub_int16`."""
    if k.out.dtype == "int16":
        return add_sub_int16(k)
    if not _int8_io(k) or any(k.tensor(i).is_const for i in (0, 1)):
        return None
    values, ms, zs, mo, sho, zo, lo, hi = add_sub_params(k)
    sign = "+" if k.node.op == "Add" else "-"
    bound = max(abs(v) for v in values[0]) + max(abs(v) for v in values[1])
    use_tables = k.out_size >= ADD_TABLE_MIN_ELEMENTS
    f = 2 if bound < (1 << 30) else 1           # operands doubled for the final smmulr
    terms, kinds, const, table_at = [], [], 0, None
    for i, ((m, sh), z) in enumerate(zip(ms, zs)):
        sgn = 1 if i == 0 or sign == "+" else -1
        x = "%s[{o%d}]" % (k.expr(i), i + 1)
        shift = _pure_shift(values[i], z)
        if shift is not None:
            terms.append(f"(int32_t){x} * {f << shift}")
            const -= sgn * z * (f << shift)
            kinds.append("shift")
        elif use_tables:
            terms.append([f * v for v in values[i]])  # filled in below, with the constant folded in
            table_at = i if table_at is None else table_at
            kinds.append("table")
        else:
            terms.append(requant_expr(f"((int32_t){x} - ({z})) * (1 << 20)", _absmax(z) << 20, m, sh) +
                         (" * 2" if f == 2 else ""))
            kinds.append("requantized")
    if table_at is not None:                    # sgn * (T + sgn * const) = sgn * T + const
        sgn = 1 if table_at == 0 or sign == "+" else -1
        terms[table_at] = [v + sgn * const for v in terms[table_at]]
        const = 0
    for i, t in enumerate(terms):
        if isinstance(t, list):
            name = k.table([t[u ^ 0x80] for u in range(256)], "int32",
                           f"int8 {k.node.op} operand {i}: rescaled (x - zero point) x {f << 20}, for each input byte")
            terms[i] = "%s[(uint8_t)%s[{o%d}]]" % (name, k.expr(i), i + 1)
    raw = f"{terms[0]} {sign} {terms[1]}" + (f" + ({const})" if const else "")
    out = clamp_expr(requant_expr("r", bound, mo, sho, zo, doubled=f == 2), lo, hi)
    stmt = "{{ const int32_t r = %s; y[{o0}] = %s; }}" % (raw, out)
    return "binary.c.j2", dict(comment=f"int8 {k.node.op} {k.in_shape(0)} {sign} {k.in_shape(1)} -> "
                                       f"{k.out_shape}, operands {' and '.join(kinds)}",
                               loops=_binary_loops(k, stmt),
                               variant="table" if "table" in kinds else "compute"), 0


def add_sub_int16(k):
    """16x8 ADD / SUB on the general path (docs/int16-numerics.md 3.1): the operand with the larger scale has
    multiplier 0.5 (2^30, shift 0) on x * 2^15, which SRDHM makes exactly x * 2^14 (x * 2^45 plus or minus the
    nudge, divided by 2^31 toward zero); the other operand and the output keep the reference's rescale. The
    power-of-two path and constant operands use the reference kernel."""
    p = k.params
    if p.pot_shifts or any(k.tensor(i).is_const for i in (0, 1)):
        return None
    sign = "+" if k.node.op == "Add" else "-"
    terms, kinds = [], []
    for i, (m, sh) in enumerate(p.in_mults):
        x = "(int32_t)%s[{o%d}]" % (k.expr(i), i + 1)
        if (m, sh) == (1 << 30, 0):
            terms.append(f"{x} * {1 << (p.left_shift - 1)}")
            kinds.append("shifted")
        else:
            terms.append(f"tinyc_requantize({x} * {1 << p.left_shift}, {m}, {sh})")
            kinds.append("requantized")
    stmt = ("{{ const int32_t r = %s %s %s; y[{o0}] = tinyc_clamp16(tinyc_requantize(r, %d, %d), %d, %d); }}"
            % (terms[0], sign, terms[1], p.out_mult, p.out_shift, p.lo, p.hi))
    return "binary.c.j2", dict(comment=f"int16 {k.node.op} {k.in_shape(0)} {sign} {k.in_shape(1)} -> "
                                       f"{k.out_shape}, operands {' and '.join(kinds)}",
                               loops=_binary_loops(k, stmt), variant="int16"), 0


def mul(k):
    if not _int8_io(k) or any(k.tensor(i).is_const for i in (0, 1)):
        return None
    p = k.params
    m, sh, (z1, z2), zo, lo, hi = p.mult, p.shift, p.in_zps, p.out_zp, p.lo, p.hi
    req = requant_expr("p", _absmax(z1) * _absmax(z2), m, sh, zo)
    stmt = ("{{ const int32_t p = ((int32_t)%s[{o1}] - (%d)) * ((int32_t)%s[{o2}] - (%d)); y[{o0}] = %s; }}"
            % (k.expr(0), z1, k.expr(1), z2, clamp_expr(req, lo, hi)))
    return "binary.c.j2", dict(comment=f"int8 Mul {k.in_shape(0)} * {k.in_shape(1)} -> {k.out_shape}",
                               loops=_binary_loops(k, stmt), variant="mul"), 0


# -- pooling ----------------------------------------------------------------------------------------------------
def avg_reciprocal(n: int) -> tuple[int, int] | None:
    """(recip, offset) with which tinyc_avg_div gives TFLite's rounded mean (s > 0 ? s + n/2 : s - n/2) / n
    (C division) for every sum s of n int8 values, checked exhaustively; None if some s would differ."""
    recip = -(-(1 << RECIP_SHIFT) // n)
    offset = ((128 * n + n // 2) * recip - (1 << 31)) % (1 << 32)
    s = np.arange(-128 * n, 127 * n + 1, dtype=np.int64)
    num = np.where(s > 0, s + n // 2, s - n // 2)
    want = np.where(num >= 0, num // n, -((-num) // n))
    adjusted = s + ((s >> 63) & (-1 if n % 2 == 0 else 0))
    v = (adjusted * recip + offset) % (1 << 32)                     # uint32 arithmetic
    got = np.where(v >= (1 << 31), v - (1 << 32), v) >> RECIP_SHIFT  # (int32_t)v >> 24
    return (recip, offset) if np.array_equal(got, want) else None


def _interior(o: int, stride: int, pad: int, k: int, size: int) -> tuple[int, int]:
    """[first, last + 1) of the outputs whose window lies inside the input (empty: first == last)."""
    inside = [i for i in range(o) if i * stride - pad >= 0 and i * stride - pad + k <= size]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)


def _window_counts(v) -> set:
    counts = set()
    for oy in range(v["oh"]):
        iy0 = oy * v["sh"] - v["pt"]
        ny = min(v["kh"], v["ih"] - iy0) - max(0, -iy0)
        for ox in range(v["ow"]):
            ix0 = ox * v["sw"] - v["pl"]
            counts.add(ny * (min(v["kw"], v["iw"] - ix0) - max(0, -ix0)))
    return counts


def pool2d_int16(k):
    """16x8 AVERAGE_POOL_2D / MAX_POOL_2D (docs/int16-numerics.md 4.3): the reference's arithmetic, the windows that
    lie inside the input read with their taps unrolled at constant offsets and divided by a constant count."""
    v = dict(k.params)
    oy_lo, oy_hi = _interior(v["oh"], v["sh"], v["pt"], v["kh"], v["ih"])
    ox_lo, ox_hi = _interior(v["ow"], v["sw"], v["pl"], v["kw"], v["iw"])
    if oy_hi <= oy_lo or ox_hi <= ox_lo or v["kh"] * v["kw"] > UNROLL_TAPS:
        return None
    v.update(oy_lo=oy_lo, oy_hi=oy_hi, ox_lo=ox_lo, ox_hi=ox_hi, count=v["kh"] * v["kw"],
             taps=["in[j + %d]" % ((ky * v["iw"] + kx) * v["c"]) if ky or kx else "in[j]"
                   for ky in range(v["kh"]) for kx in range(v["kw"])])
    return "pool16.c.j2", v, 0


def pool2d(k):
    if k.out.dtype == "int16":
        return pool2d_int16(k)
    if not _int8_io(k):
        return None
    v = dict(k.params)                        # the geometry and clamp the reference uses (ops/pool2d.py)
    kind = v["kind"]
    c = v["c"]
    oy_lo, oy_hi = _interior(v["oh"], v["sh"], v["pt"], v["kh"], v["ih"])
    ox_lo, ox_hi = _interior(v["ow"], v["sw"], v["pl"], v["kw"], v["iw"])
    interior = oy_hi > oy_lo and ox_hi > ox_lo
    border = not (interior and (oy_lo, oy_hi, ox_lo, ox_hi) == (0, v["oh"], 0, v["ow"]))
    cells = v["kh"] * v["kw"]
    taps = [(ky * v["iw"] + kx) * c for ky in range(v["kh"]) for kx in range(v["kw"])] \
        if cells <= UNROLL_TAPS else None
    v.update(c4=c - c % 4, oy_lo=oy_lo, oy_hi=oy_hi, ox_lo=ox_lo, ox_hi=ox_hi, interior=interior, border=border,
             taps=taps, restrict=_restrict(k), lo_word=_word(v["lo"]), hi_word=_word(v["hi"]), variant=kind,
             count=cells, recip=None, offset=None, rtab=None, otab=None)
    if kind == "avg":
        if cells > 255:                       # 16-bit SIMD sums hold at most 255 cells
            return None
        counts = _window_counts(v)
        recips = {n: avg_reciprocal(n) for n in counts | ({cells} if interior else set())}
        if 0 in counts or any(r is None for r in recips.values()):
            return None
        if interior:
            v["recip"], v["offset"] = recips[cells]
        if border:
            pairs = [recips.get(n, (0, 0)) for n in range(cells + 1)]
            v["rtab"] = k.table([r for r, _ in pairs], "int32",
                                "average pooling: ceil(2^24 / n) for each window count n")
            v["otab"] = k.table([o - (1 << 32) if o >= (1 << 31) else o for _, o in pairs], "int32",
                                "average pooling: (128 n + n / 2) * ceil(2^24 / n) - 2^31 for each window count n "
                                "(as uint32)")
    return "pool.c.j2", v, 0


# -- MEAN over H and W ------------------------------------------------------------------------------------------
def mean_int16(k):
    """16x8 global average pooling (MEAN over axes 1, 2 of NHWC, docs/int16-numerics.md 4.4): four channel sums in
    registers per pass down the pixels; the rescale of each sum (|sum| <= 2^15 n) by `requant_expr`."""
    shape = k.in_shape(0)
    if len(shape) != 4 or shape[0] != 1 or sorted(set(k.node.attrs["axes"])) != [1, 2]:
        return None
    _, h, w, c = shape
    p = k.params
    out = "tinyc_clamp16(%s, -32768, 32767)" % requant_expr("acc", (1 << 15) * p.count, p.mult, p.shift)
    return "mean16.c.j2", dict(n=p.count, c=c, c4=c - c % 4, out=out,
                               comment=f"int16 mean of {p.count} values per channel ({h}x{w}x{c})"), 0


def mean(k):
    """Global average pooling (MEAN over axes 1, 2 of NHWC): sums of 4 channels per word on DSP cores."""
    if k.out.dtype == "int16":
        return mean_int16(k)
    shape = k.in_shape(0)
    if not _int8_io(k) or len(shape) != 4 or shape[0] != 1 or sorted(set(k.node.attrs["axes"])) != [1, 2]:
        return None
    _, h, w, c = shape
    p = k.params
    n, m2, e2, zi, zo = p.count, p.mult, p.shift, p.in_zp, p.out_zp
    acc = f"acc - ({zi * n})" if zi else "acc"
    out = clamp_expr(requant_expr(acc, _absmax(zi) * n, m2, e2, zo), -128, 127)
    return "mean.c.j2", dict(n=n, c=c, c4=c - c % 4, chunk=255, out=out,
                             comment=f"int8 mean of {n} values per channel ({h}x{w}x{c})"), 0



# -- SOFTMAX ----------------------------------------------------------------------------------------------------
# The C of templates/int8_fast/softmax.c.j2's arithmetic, held here so that tests/test_fast_softmax.py runs the
# same lines on the rounding ties no row reaches reliably. Per row they read `reciprocal` (uint32_t) and
# `bits_over_unit` (the reference's GetReciprocal); per element `e` (uint32_t: the table's e^-d, 0 <= e < 2^31).
# The sum's term is RDBPOT(e, 12) = (e + 2^11) >> 12 (e >= 0; no wrap in uint32). The output's RDBPOT(SRDHM(r, e),
# E) with E = bits_over_unit + 23 is floor((r e + 2^30 + 2^(E+30)) / 2^(E+31)) (both roundings add half and floor,
# as r, e >= 0; the reciprocal is at least 2^30 - 4 for every sum): the high word of r e + 2^30 + 2^(E-2) 2^32,
# shifted right E - 1. DSP cores form the 64-bit sum (UMULL/UMLAL); others its high word from 16-bit halves.
SOFTMAX_SUM_TERM = "(e + 2048u) >> 12"
SOFTMAX_ROW = ["const int shift = bits_over_unit + 22;",
               "const uint32_t round_hi = 1u << (bits_over_unit + 21);"]
SOFTMAX_ROW_DSP = ["const uint64_t round = ((uint64_t)round_hi << 32) | 0x40000000u;",
                   "uint32_t r32 = reciprocal;",
                   "TINYC_OPAQUE(r32);   /* else gcc multiplies 64 x 32 bits: it forgets the high word is 0 */"]
SOFTMAX_ROW_PLAIN = ["const uint32_t r_lo = reciprocal & 0xFFFFu, r_hi = reciprocal >> 16;"]
SOFTMAX_OUT_DSP = ["const uint32_t v = (uint32_t)(((uint64_t)r32 * e + round) >> 32) >> shift;"]
SOFTMAX_OUT_PLAIN = ["const uint32_t e_lo = e & 0xFFFFu, e_hi = e >> 16;",
                     "/* the middle products, the low one's carry and 2^30: < 2^32 - 2^16 as r, e < 2^31 */",
                     "const uint32_t mid = r_hi * e_lo + r_lo * e_hi + ((r_lo * e_lo) >> 16) + 0x4000u;",
                     "const uint32_t v = (r_hi * e_hi + (mid >> 16) + round_hi) >> shift;"]
SOFTMAX_PLAIN_STEP = 1     # the plain output loop is not unrolled: more spills than it saves on Cortex-M0+
# the reference's clamp of v - 128 to int8 (0 <= v < 2^31): SSAT on DSP cores, one compare elsewhere
SOFTMAX_BYTE_DSP = "(int8_t)tinyc_ssat8((int32_t)v - 128)"
SOFTMAX_BYTE_PLAIN = "(int8_t)((int32_t)(v > 255u ? 255u : v) - 128)"


def softmax_exp_table(p) -> list:
    """e(d) for each difference d = max - x in 0..255 (index d), as the reference kernel computes it (`k.params`,
    ops/softmax.py): exp_on_negative_values(SRDHM(-d * 2^shift, mult)) in Q0.31 where -d >= diff_min, else 0 (that
    element adds 0 to the sum and its output is -128, as the reference's)."""
    srdhm = saturating_rounding_doubling_high_mul
    return [exp_on_negative_values_q5(srdhm(-d * (1 << p.shift), p.mult)) if -d >= p.diff_min else 0
            for d in range(256)]


def softmax(k):
    """Per element a table load and a sum, the reference's per-row reciprocal, then one multiply per output."""
    p, n = k.params, k.out_shape[-1]
    if not _int8_io(k) or n > SOFTMAX_MAX_ROW:
        return None
    table = softmax_exp_table(p)
    assert all(0 <= e < (1 << 31) for e in table) and table[0] == (1 << 31) - 1
    name = k.table(table, "int32", "int8 softmax: gemmlowp's e^-d in Q0.31 for each difference d = max - x "
                                   "(0 beyond the cut)")
    return "softmax.c.j2", dict(rows=k.out_size // n, n=n, n4=n - n % 4, table=name, cut=-p.diff_min,
                                sum_term=SOFTMAX_SUM_TERM, row=SOFTMAX_ROW, row_dsp=SOFTMAX_ROW_DSP,
                                row_plain=SOFTMAX_ROW_PLAIN, out_dsp=SOFTMAX_OUT_DSP, out_plain=SOFTMAX_OUT_PLAIN,
                                byte_dsp=SOFTMAX_BYTE_DSP, byte_plain=SOFTMAX_BYTE_PLAIN,
                                plain_step=SOFTMAX_PLAIN_STEP), 0
