"""The binary elementwise family: Add, Sub, Mul, Div, Pow, Max, Min, Mod, SquaredDifference and PRelu, with
numpy broadcasting of any rank and an optional fused activation. One table says what each computes (numpy) and
how (a C expression of its operands); variadic framework ops (ONNX Sum/Max/Min/Mean, Keras Add/Maximum/Average)
are chains of these, made by the frontends. Pow also takes an exponent of another type than its base (ONNX's
T1): its own kernels, below."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codegen import int8_fast_misc
from ..codegen.literals import c_int_literal, c_type
from ..codegen.loops import broadcast_strides, row_major_strides, strided_loops
from ..errors import TinycError
from ..quant import params as qp
from ..quant.int16_activations import checked_log2
from .int8_common import in_quant, int16_activation_range, is_16x8, out_quant, same_quant
from .opdef import OpDef, integer_range


def _prelu(a, slope):
    return np.where(a < 0, a * slope, a)


# op: (numpy meaning on float64, C expression of the operands {a} and {b}). An expression that reads an operand
# more than once gets the operands in locals first.
BINARY = {
    "Add": (np.add, "{a} + {b}"),
    "Sub": (np.subtract, "{a} - {b}"),
    "Mul": (np.multiply, "{a} * {b}"),
    "Div": (np.divide, "{a} / {b}"),
    "Pow": (np.power, "powf({a}, {b})"),
    # NaN in either operand gives NaN, as numpy (and ONNX) define Max / Min
    "Max": (np.maximum, "(({a} > {b} || {a} != {a}) ? {a} : {b})"),
    "Min": (np.minimum, "(({a} < {b} || {a} != {a}) ? {a} : {b})"),
    "Mod": (np.fmod, "fmodf({a}, {b})"),          # C fmod: the result has the dividend's sign (ONNX fmod=1)
    "SquaredDifference": (lambda a, b: (a - b) * (a - b), "({a} - {b}) * ({a} - {b})"),
    "PRelu": (_prelu, "({a} < 0.0f ? {a} * {b} : {a})"),   # b: the slope
}
SYMBOL = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}


def evaluator(op):
    def evaluate(a, ins):
        if op == "Pow" and (ins[0].dtype.kind in "iu" or ins[1].dtype.kind in "iu"):
            return pow_values(ins[0], ins[1])
        if ins[0].dtype.kind in "iu" and op in INTEGER:
            return integer_values(op, ins[0], ins[1], a.get("fmod", 1))
        with np.errstate(all="ignore"):     # 1/0, 0^-1, fmod(x, 0): inf / NaN, as the C computes
            x, y = ins[0].astype(np.float64), ins[1].astype(np.float64)
            if op == "Mod" and not a.get("fmod", 1):        # the divisor's sign (Python's %)
                return np.mod(x, y)
            return BINARY[op][0](x, y)
    return evaluate


# -- integer tensors: two's complement wrap-around as NumPy computes; x / 0 and x % 0 are 0 -------------------
INTEGER = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Mod")
INTEGER_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
INTEGER_DTYPES = ("float32",) + INTEGER_TYPES      # plain_dtypes of the ops in INTEGER


def integer_values(op: str, a: np.ndarray, b: np.ndarray, fmod: int) -> np.ndarray:
    """What the integer kernels compute, in NumPy (a and b of one integer type)."""
    a, b = np.broadcast_arrays(a, b)
    with np.errstate(all="ignore"):
        if op in ("Add", "Sub", "Mul", "Max", "Min"):
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum,
                    "Min": np.minimum}[op](a, b)
        minus_one = (b == -1) if a.dtype.kind == "i" else np.zeros(b.shape, bool)
        safe = np.where((b == 0) | minus_one, 1, b).astype(a.dtype)   # (INT_MIN // -1 traps in hardware)
        if op == "Div":                 # truncated toward zero (C), not floored; x / -1 = -x, wrapping
            q = a // safe
            q = np.where((a % safe != 0) & ((a < 0) != (safe < 0)), q + 1, q).astype(a.dtype)
            q = np.where(minus_one, (np.zeros_like(a) - a).astype(a.dtype), q)
        else:                           # Mod: fmod=1 the dividend's sign (C %), fmod=0 the divisor's (Python %)
            q = np.where(minus_one, 0, np.fmod(a, safe) if fmod else np.mod(a, safe))
        return np.where(b == 0, 0, q).astype(a.dtype)


def _integer_expr(op: str, ctype: str, signed: bool, wide: str, fmod: int) -> str:
    """C expression of `op` on the loaded operands lhs, rhs of type `ctype` (no undefined behaviour: sums and
    products wrap in the unsigned type `wide`; INT_MIN / -1 wraps; a zero divisor gives 0)."""
    if op in ("Add", "Sub", "Mul"):
        return "(%s)((%s)lhs %s (%s)rhs)" % (ctype, wide, SYMBOL[op], wide)
    if op in ("Max", "Min"):
        return "(lhs %s rhs ? lhs : rhs)" % (">" if op == "Max" else "<")
    minus_one = " || rhs == -1" if signed else ""
    if op == "Div":
        neg = "(%s)(0u - (%s)lhs)" % (ctype, wide) if signed else "0"
        return "(rhs == 0 ? (%s)0 : %s(%s)(lhs / rhs))" % (
            ctype, f"rhs == -1 ? {neg} : " if signed else "", ctype)
    rem = "(%s)(lhs %% rhs)" % ctype
    if fmod:
        return "((rhs == 0%s) ? (%s)0 : %s)" % (minus_one, ctype, rem)
    # Python's %: a non-zero remainder takes the divisor's sign
    return ("((rhs == 0%s) ? (%s)0 : (%s != 0 && ((%s < 0) != (rhs < 0)) ? (%s)(%s + rhs) : %s))"
            % (minus_one, ctype, rem, rem, ctype, rem, rem)) if signed else \
        "(rhs == 0 ? (%s)0 : %s)" % (ctype, rem)


def integer_kernel(k):
    op, t = k.node.op, k.out.dtype
    ctype, signed = c_type(t), t.startswith("int")
    wide = "uint64_t" if t.endswith("64") else "uint32_t"
    expr = _integer_expr(op, ctype, signed, wide, int(k.node.attrs.get("fmod", 1)))
    out, strides = _loop_operands(k)
    body = "{{ const %s lhs = %s[{o1}]; const %s rhs = %s[{o2}]; y[{o0}] = %s; }}" % (
        ctype, k.expr(0), ctype, k.expr(1), expr)
    return "elementwise.c.j2", dict(comment=f"{op} on {t}: {k.in_shape(0)}, {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


# -- Pow with an integer base or exponent (ONNX Pow's T and T1, TFLite's int32 POW) --------------------------
# onnxruntime computes static_cast<T>(std::pow(x, y)), which promotes an integer operand to double. tinyc computes:
#   float32 base, integer exponent: (float)pow((double)x, (double)y), as onnxruntime;
#   integer base, float32 exponent: pow in double, then to the base's type as Cast converts (toward zero; NaN -> 0
#     and out of range -> the type's limit, where C and onnxruntime leave it undefined);
#   integer base, integer exponent: the exact power, wrapping modulo 2^bits like Mul (onnxruntime's double is
#     exact up to 2^53 and undefined past the type's range); a negative exponent gives 1/x^-y toward zero as
#     onnxruntime: 1 for x = 1, +-1 for x = -1, else 0 (also for x = 0, where onnxruntime's 1/0 is undefined:
#     the convention of integer Div).
POW_TYPES = ("float32",) + INTEGER_TYPES


def double_to_integer(r: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values converted to integer `dtype`: toward zero, NaN -> 0, out of range -> the nearest limit."""
    info = np.iinfo(dtype)
    top = 2.0 ** (info.bits - (1 if info.min < 0 else 0))          # the first value above the range
    nan, high, low = np.isnan(r), r >= top, r < float(info.min)
    out = np.trunc(np.where(nan | high | low, 0.0, r)).astype(dtype)
    out[high], out[low] = info.max, info.min
    return out


def integer_power(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a ** b for integer arrays, in a's type: square-and-multiply modulo 2^64, then wrapped to a's width."""
    a, b = np.broadcast_arrays(a, b)
    negative = b < 0
    e = np.where(negative, 0, b).astype(np.uint64)
    base, acc = a.astype(np.uint64), np.ones(a.shape, np.uint64)   # (two's complement: wraps by definition)
    with np.errstate(all="ignore"):
        while np.any(e):
            acc = np.where(e & 1, acc * base, acc)
            base, e = base * base, e >> np.uint64(1)
    minus_one = (a == -1) if a.dtype.kind == "i" else np.zeros(a.shape, bool)
    reciprocal = np.where(a == 1, 1, np.where(minus_one, np.where(b % 2 != 0, -1, 1), 0)).astype(a.dtype)
    return np.where(negative, reciprocal, acc.astype(a.dtype))


def pow_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What the Pow kernels compute when an operand is an integer, in NumPy; the result has the base's type."""
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return integer_power(a, b)
    with np.errstate(all="ignore"):
        r = np.power(a.astype(np.float64), b.astype(np.float64))
        return r.astype(np.float32) if a.dtype.kind == "f" else double_to_integer(r, a.dtype.name)


def _double_to_integer_c(r: str, dtype: str) -> str:
    """C expression converting the double `r` to `dtype` as double_to_integer does (no undefined conversion)."""
    info, ctype = np.iinfo(dtype), c_type(dtype)
    top = "%.1f" % 2.0 ** (info.bits - (1 if info.min < 0 else 0))
    low = "%s < %.1f ? (%s)%s : " % (r, float(info.min), ctype, c_int_literal(int(info.min))) if info.min < 0 \
        else "%s < 0.0 ? (%s)0 : " % (r, ctype)
    return "(%s != %s ? (%s)0 : %s >= %s ? (%s)%s : %s(%s)%s)" % (
        r, r, ctype, r, top, ctype, c_int_literal(int(info.max)), low, ctype, r)


def _integer_power_c(base_t: str, exp_t: str) -> str:
    """C statements setting `v` (of the base's type) to `lhs` ** `rhs` as integer_power does (braces doubled for
    strided_loops): square-and-multiply in the unsigned type of the base's width, which wraps by definition."""
    ctype = c_type(base_t)
    wide = "uint64_t" if base_t.endswith("64") else "uint32_t"
    loop = ("{{ %s acc = 1u, sq = (%s)lhs; uint64_t ex = (uint64_t)rhs; "
            "while (ex != 0u) {{ if ((ex & 1u) != 0u) acc *= sq; sq *= sq; ex >>= 1; }} v = (%s)acc; }}"
            % (wide, wide, ctype))
    if exp_t.startswith("uint"):
        return loop
    minus_one = " : lhs == -1 ? (rhs % 2 != 0 ? -1 : 1)" if base_t.startswith("int") else ""
    return "if (rhs < 0) v = (%s)(lhs == 1 ? 1%s : 0); else %s" % (ctype, minus_one, loop)


def pow_kernel(k):
    """Pow with an integer operand (float32 ** float32 is float_kernel's powf)."""
    base_t, exp_t = k.tensor(0).dtype, k.tensor(1).dtype
    loads = "const %s lhs = %s[{o1}]; const %s rhs = %s[{o2}]; " % (c_type(base_t), k.expr(0), c_type(exp_t),
                                                                     k.expr(1))
    if base_t == "float32":     # an integer exponent
        body = "{{ %sconst float v = (float)pow((double)lhs, (double)rhs); y[{o0}] = %s; }}" % (loads, k.act("v"))
    elif exp_t == "float32":
        body = "{{ %sconst double r = pow((double)lhs, (double)rhs); y[{o0}] = %s; }}" % (
            loads, _double_to_integer_c("r", base_t))
    else:
        body = "{{ %s%s v; %sy[{o0}] = v; }}" % (loads, c_type(base_t), _integer_power_c(base_t, exp_t))
    out, strides = _loop_operands(k)
    return "elementwise.c.j2", dict(comment=f"Pow {base_t} {k.in_shape(0)} ** {exp_t} {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


def pow_check(g, node) -> None:
    """check, and the types: a float32 or integer base and exponent, the output of the base's type."""
    check(g, node)
    base, exponent, out = (g.tensors[n] for n in (*node.inputs, node.outputs[0]))
    if base.quant is not None or out.quant is not None:
        return
    if base.dtype not in POW_TYPES or exponent.dtype not in POW_TYPES or out.dtype != base.dtype:
        raise TinycError(f"node '{node.name}' (Pow): {base.dtype} ** {exponent.dtype} -> {out.dtype}; Pow takes a "
                         f"float32 or integer base and exponent and gives the base's type")


def check(g, node) -> None:
    """Both operands broadcast (numpy's rules) to the output's shape."""
    out = tuple(g.tensors[node.outputs[0]].shape)
    for name in node.inputs:
        shape = tuple(g.tensors[name].shape)
        try:
            ok = np.broadcast_shapes(shape, out) == out
        except ValueError:
            ok = False
        if not ok:
            raise TinycError(f"node '{node.name}' ({node.op}): operand '{name}' of shape {list(shape)} does not "
                             f"broadcast to the output's shape {list(out)}; the model is invalid")


def c_binary(op: str, a: str, b: str) -> tuple[str, str]:
    """(C statements loading the operands, C expression of `op`) for operand expressions `a`, `b`."""
    expr = BINARY[op][1]
    if expr.count("{a}") == 1 and expr.count("{b}") == 1:
        return "", expr.format(a=a, b=b)
    return "const float lhs = %s; const float rhs = %s; " % (a, b), expr.format(a="lhs", b="rhs")


def _loop_operands(k):
    out = k.out_shape
    return out, [row_major_strides(out), broadcast_strides(k.in_shape(0), out), broadcast_strides(k.in_shape(1), out)]


def float_kernel(k):
    op = k.node.op
    if op == "Pow" and (k.tensor(0).dtype != "float32" or k.tensor(1).dtype != "float32"):
        if k.out.dtype != "float32" and k.node.attrs.get("activation") is not None:
            raise TinycError(f"node '{k.node.name}' ({op}) on {k.out.dtype} has a fused activation; report this model")
        return pow_kernel(k)
    if k.out.dtype != "float32":
        if k.node.attrs.get("activation") is not None:
            raise TinycError(f"node '{k.node.name}' ({op}) on {k.out.dtype} has a fused activation; report this model")
        return integer_kernel(k)
    out, strides = _loop_operands(k)
    if op == "Mod" and not k.node.attrs.get("fmod", 1):     # the divisor's sign (Python's %) on floats
        loads = "const float lhs = %s[{o1}]; const float rhs = %s[{o2}]; " % (k.expr(0), k.expr(1))
        loads += "const float r = fmodf(lhs, rhs); "
        # a zero remainder takes the divisor's sign too (ONNX Mod-28, Python's %)
        expr = "((r != 0.0f && ((r < 0.0f) != (rhs < 0.0f))) ? r + rhs : (r == 0.0f ? copysignf(0.0f, rhs) : r))"
    else:
        slope = k.weight(1) if op == "PRelu" else None      # PReLU's slope is a weight (--weights float16)
        rhs = slope.load(f"{slope}[{{o2}}]") if slope is not None else k.expr(1) + "[{o2}]"
        loads, expr = c_binary(op, k.expr(0) + "[{o1}]", rhs)
    # Doubled braces survive strided_loops' str.format; {o0}.. become the operands' offsets.
    body = "{{ %sconst float v = %s; y[{o0}] = %s; }}" % (loads, expr, k.act("v"))
    what = SYMBOL.get(op, op)
    return "elementwise.c.j2", dict(comment=f"{op} {k.in_shape(0)} {what} {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


@dataclass(frozen=True)
class AddSubParams:
    """TFLite's ADD/SUB OpData: both inputs shifted left by 20 bits (int8; 15 for int16) and rescaled to twice the
    larger input scale, combined, then rescaled to the output. int16 with the option pot_scale_int16 and three
    power-of-two scales: `pot_shifts`, the right shift of each input instead (docs/int16-numerics.md 3.2)."""
    in_mults: tuple        # ((m1, shift1), (m2, shift2))
    in_zps: tuple          # (z1, z2)
    out_mult: int
    out_shift: int
    out_zp: int
    lo: int
    hi: int
    left_shift: int = 20
    pot_shifts: tuple = ()     # (right shift of input 1, of input 2): TFLite's int16 power-of-two path


def add_sub_prepare(k) -> AddSubParams:
    q1, q2, qo = in_quant(k, 0), in_quant(k, 1), out_quant(k)
    s1, s2, so = qp.scale_of(q1), qp.scale_of(q2), qp.scale_of(qo)
    sixteen = is_16x8(k)
    if sixteen:
        _int16_operands(k)
        pot = _pot_shifts(k, s1, s2, so)
        if pot:
            return AddSubParams((), (0, 0), 0, 0, 0, *int16_activation_range(k, qo), left_shift=0, pot_shifts=pot)
    left = 15 if sixteen else 20
    twice_max = 2.0 * max(s1, s2)
    ms = (qp.multiplier(s1 / twice_max), qp.multiplier(s2 / twice_max))
    out_real = twice_max / float(np.float32((1 << left) * np.float32(so)))
    if out_real >= 1.0:
        raise TinycError(f"node '{k.node.name}': {k.out.dtype} {k.node.op} with output scale {so:g} far below its "
                         f"input scales ({s1:g}, {s2:g}) cannot be computed by TFLite's scheme; requantize the model")
    mo, sho = qp.multiplier(out_real)
    lo, hi = int16_activation_range(k, qo) if sixteen else qp.activation_range(k.node.attrs.get("activation"), qo)
    return AddSubParams(ms, (qp.zero_point_of(q1), qp.zero_point_of(q2)), mo, sho, qp.zero_point_of(qo), lo, hi,
                        left_shift=left)


def _int16_operands(k) -> None:
    """16x8 Add / Sub / Mul: int16 operands and output (TFLite's int16-in, int8-out MUL is an LSTM kernel)."""
    types = [k.tensor(0).dtype, k.tensor(1).dtype, k.out.dtype]
    if types != ["int16"] * 3:
        raise TinycError(f"node '{k.node.name}' ({k.node.op}): operands {types[0]}, {types[1]} -> {types[2]}; the "
                         "16x8 kernel takes int16 operands and an int16 output")


def _pot_shifts(k, s1: float, s2: float, so: float) -> tuple:
    """TFLite's int16 ADD / SUB power-of-two path (docs/int16-numerics.md 3.2): the right shift of each input when
    the node asks for it (pot_scale_int16) and CheckedLog2 finds all three scales powers of two, else ()."""
    if not k.node.attrs.get("pot_scale_int16"):
        return ()
    (l1, p1), (l2, p2), (lo, po) = (checked_log2(s) for s in (s1, s2, so))
    if not (p1 and p2 and po):
        return ()
    shifts = (lo - l1, lo - l2)
    where = f"node '{k.node.name}' ({k.node.op}, int16 with power-of-two scales)"
    if min(shifts) != 0:
        raise TinycError(f"{where}: input scales 2^{l1}, 2^{l2} and output 2^{lo}; TFLite's power-of-two kernel "
                         "takes one input on the output's scale and the other finer, and refuses these")
    if max(shifts) > 31:
        raise TinycError(f"{where}: an input 2^{max(shifts)} times finer than the output makes TFLite shift by more "
                         "than 31 bits, which is undefined; requantize the model")
    if k.node.op == "Add" and tuple(k.in_shape(0)) != tuple(k.in_shape(1)):
        raise TinycError(f"{where}: TFLite's power-of-two ADD has no broadcasting kernel (it aborts); write the "
                         "model with pot_scale_int16 false or operands of one shape")
    return shifts


def add_sub_kernel(k):
    p = k.params
    sign = SYMBOL[k.node.op]
    out, strides = _loop_operands(k)
    if p.pot_shifts:
        return _add_sub_pot_kernel(k, sign, out, strides)
    (m1, sh1), (m2, sh2) = p.in_mults
    z1, z2 = p.in_zps
    clamp = "tinyc_clamp16" if k.out.dtype == "int16" else "tinyc_sat8"
    body = ("{{ const int32_t a = tinyc_requantize(((int32_t)%s[{o1}] - (%d)) * (1 << %d), %d, %d);\n"
            "  const int32_t b = tinyc_requantize(((int32_t)%s[{o2}] - (%d)) * (1 << %d), %d, %d);\n"
            "  y[{o0}] = %s(tinyc_requantize(a %s b, %d, %d) + (%d), %d, %d); }}"
            % (k.expr(0), z1, p.left_shift, m1, sh1, k.expr(1), z2, p.left_shift, m2, sh2, clamp, sign,
               p.out_mult, p.out_shift, p.out_zp, p.lo, p.hi))
    return "elementwise.c.j2", dict(comment=f"{k.out.dtype} {k.node.op} {k.in_shape(0)} {sign} {k.in_shape(1)} -> "
                                            f"{out}", loops=strided_loops(out, strides, body)), 0


def _add_sub_pot_kernel(k, sign, out, strides):
    """int16 ADD / SUB on power-of-two scales: each input's rounding right shift as gemmlowp computes it on int16
    (tinyc_rdbpot16), the saturating sum or difference, the activation's clamp."""
    s1, s2 = k.params.pot_shifts
    body = ("{{ const int32_t a = tinyc_rdbpot16(%s[{o1}], %d);\n"
            "  const int32_t b = tinyc_rdbpot16(%s[{o2}], %d);\n"
            "  y[{o0}] = tinyc_clamp16(tinyc_sat16(a %s b), %d, %d); }}"
            % (k.expr(0), s1, k.expr(1), s2, sign, k.params.lo, k.params.hi))
    return "elementwise.c.j2", dict(comment=f"int16 {k.node.op} {k.in_shape(0)} {sign} {k.in_shape(1)} -> {out}, "
                                            f"power-of-two scales: inputs shifted right by {s1}, {s2}",
                                    loops=strided_loops(out, strides, body)), 0


@dataclass(frozen=True)
class MulParams:
    mult: int
    shift: int
    in_zps: tuple
    out_zp: int
    lo: int
    hi: int


def mul_prepare(k) -> MulParams:
    """(a - za) * (b - zb) rescaled by sa * sb / so, computed in float32 as TFLite does (int16: zero points 0,
    docs/int16-numerics.md 3.3)."""
    q1, q2, qo = in_quant(k, 0), in_quant(k, 1), out_quant(k)
    s1, s2, so = (np.float32(qp.scale_of(q)) for q in (q1, q2, qo))
    m, sh = qp.multiplier(float(np.float32(np.float32(s1 * s2) / so)))
    if is_16x8(k):
        _int16_operands(k)
        lo, hi = int16_activation_range(k, qo)
    else:
        lo, hi = qp.activation_range(k.node.attrs.get("activation"), qo)
    return MulParams(m, sh, (qp.zero_point_of(q1), qp.zero_point_of(q2)), qp.zero_point_of(qo), lo, hi)


def mul_kernel(k):
    p = k.params
    z1, z2 = p.in_zps
    clamp = "tinyc_clamp16" if k.out.dtype == "int16" else "tinyc_sat8"
    body = ("y[{o0}] = %s(tinyc_requantize(((int32_t)%s[{o1}] - (%d)) * ((int32_t)%s[{o2}] - (%d)), "
            "%d, %d) + (%d), %d, %d);" % (clamp, k.expr(0), z1, k.expr(1), z2, p.mult, p.shift, p.out_zp, p.lo, p.hi))
    out, strides = _loop_operands(k)
    return "elementwise.c.j2", dict(comment=f"{k.out.dtype} Mul {k.in_shape(0)} * {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


@dataclass(frozen=True)
class MaxMinParams:
    """TFLite's MAXIMUM / MINIMUM compare the stored integers: inputs and output share one scale and zero point."""
    lo: int
    hi: int


def max_min_prepare(k) -> MaxMinParams:
    """int8, or int16 (16x8: TFLite's MAXIMUM / MINIMUM compare the stored int16 values the same way)."""
    qo = out_quant(k)
    for i in (0, 1):
        if k.tensor(i).dtype != k.out.dtype or not same_quant(in_quant(k, i), qo):
            raise TinycError(f"node '{k.node.name}': {k.out.dtype} {k.node.op} with input '{k.tensor(i).name}' "
                             "quantized differently from its output; TFLite compares the stored integers, so inputs "
                             "and output need one type, scale and zero point (as TFLiteConverter makes them)")
    return MaxMinParams(*qp.activation_range(k.node.attrs.get("activation"), qo, k.out.dtype))


def max_min_kernel(k):
    p = k.params
    pick = ">" if k.node.op == "Max" else "<"
    ctype, full = c_type(k.out.dtype), (p.lo, p.hi) == integer_range(k.out.dtype)
    clamp = "tinyc_clamp16" if k.out.dtype == "int16" else "tinyc_sat8"
    value = "(lhs %s rhs ? lhs : rhs)" % pick
    body = ("{{ const %s lhs = %s[{o1}]; const %s rhs = %s[{o2}]; y[{o0}] = %s; }}"
            % (ctype, k.expr(0), ctype, k.expr(1), value if full else "%s(%s, %d, %d)" % (clamp, value, p.lo, p.hi)))
    out, strides = _loop_operands(k)
    return "elementwise.c.j2", dict(comment=f"{k.out.dtype} {k.node.op} {k.in_shape(0)}, {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


@dataclass(frozen=True)
class DivParams:
    """TFLite's DIV (docs/int8-numerics.md 4.31): the divisor's reciprocal in fixed point, the dividend normalised
    by its leading sign bits, one multiplier s1 / (s2 * s_out) and a right shift that depends on both."""
    in_zps: tuple
    mult: int
    shift: int
    out_zp: int
    lo: int
    hi: int


# DIV's final right shift is h + rs - shift: h the dividend's redundant sign bits (31 for a dividend of 0, 23
# for one of 128, both always reachable), rs = floor(log2 |divisor|) (7 for 128, reachable whatever the zero
# point). gemmlowp's RoundingDivideByPOT is undefined outside [0, 31]: TFLite's x86 build then gives anything from
# z_out + 1 to a saturated extreme where the quotient rounds to 0. So the multiplier's shift must lie in [7, 23].
DIV_SHIFTS = (7, 23)


def div_prepare(k) -> DivParams:
    q1, q2, qo = in_quant(k, 0), in_quant(k, 1), out_quant(k)
    s1, s2, so = (np.float32(qp.scale_of(q)) for q in (q1, q2, qo))
    real = float(np.float32(s1 / np.float32(s2 * so)))
    mult, shift = qp.multiplier(real)
    if not DIV_SHIFTS[0] <= shift <= DIV_SHIFTS[1]:
        finest, coarsest = (float(s1) / (float(s2) * 2.0 ** e) for e in (DIV_SHIFTS[1], DIV_SHIFTS[0] - 1))
        raise TinycError(f"node '{k.node.name}': int8 DIV with scales {float(s1):g} / {float(s2):g} -> {float(so):g} "
                         "makes TFLite's kernel shift by a count outside 0..31, which is undefined (its result depends "
                         f"on the CPU); an output scale between about {finest:.3g} and {coarsest:.3g} avoids it, or "
                         "keep this DIV in float32")
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), qo)
    return DivParams((qp.zero_point_of(q1), qp.zero_point_of(q2)), mult, shift, qp.zero_point_of(qo), lo, hi)


def div_kernel(k):
    p = k.params
    z1, z2 = p.in_zps
    # a / b: b's reciprocal (GetReciprocal: Q0.31 and 31 - clz(b) bits over unit, here 12 + 19), a shifted left
    # by its redundant sign bits h, two high multiplies, one rounding right shift; b == z2 (TFLite: undefined)
    # saturates toward a's sign
    body = ("{{ int32_t a = (int32_t)%s[{o1}] - (%d); int32_t b = (int32_t)%s[{o2}] - (%d);\n"
            "  if (b == 0) {{ y[{o0}] = (int8_t)(a >= 0 ? %d : %d); }} else {{\n"
            "    if (b < 0) {{ a = -a; b = -b; }}\n"
            "    int bits; const int32_t inverse = tinyc_reciprocal_q12(b, &bits);\n"
            "    uint32_t rest = (uint32_t)(a < 0 ? ~a : a); int h = 31; while (rest != 0u) {{ rest >>= 1; --h; }}\n"
            "    const int32_t u = tinyc_srdhm((int32_t)((uint32_t)a << h), inverse);\n"
            "    y[{o0}] = tinyc_sat8(tinyc_rdbpot(tinyc_srdhm(u, %d), h + bits + 19 - (%d)) + (%d), %d, %d); }} }}"
            % (k.expr(0), z1, k.expr(1), z2, p.hi, p.lo, p.mult, p.shift, p.out_zp, p.lo, p.hi))
    out, strides = _loop_operands(k)
    return "elementwise.c.j2", dict(comment=f"int8 Div {k.in_shape(0)} / {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


@dataclass(frozen=True)
class PReluParams:
    """TFLite's PRELU: x - z_in >= 0 rescaled by s_in / s_out, else (x - z_in) * (alpha - z_alpha) rescaled by
    s_in * s_alpha / s_out; both factors computed in float32 (activations.cc PreluPrepare)."""
    in_zp: int
    alpha_zp: int
    out_zp: int
    positive: tuple     # (multiplier, shift)
    negative: tuple
    lo: int
    hi: int


def prelu_prepare(k) -> PReluParams:
    qi, qa, qo = in_quant(k, 0), in_quant(k, 1), out_quant(k)
    if np.asarray(qa.scale).size > 1:
        raise TinycError(f"node '{k.node.name}': int8 PRelu with a per-channel quantized slope; TFLite's PRELU takes "
                         "one scale for the slope")
    f32 = np.float32
    s_in, s_a, s_out = (f32(qp.scale_of(q)) for q in (qi, qa, qo))
    pos = qp.multiplier(float(f32(s_in / s_out)))
    neg = qp.multiplier(float(f32(f32(s_in * s_a) / s_out)))
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), qo)
    return PReluParams(qp.zero_point_of(qi), qp.zero_point_of(qa), qp.zero_point_of(qo), pos, neg, lo, hi)


def prelu_kernel(k):
    p = k.params
    (m1, e1), (m2, e2) = p.positive, p.negative
    body = ("{{ const int32_t v = (int32_t)%s[{o1}] - (%d);\n"
            "  y[{o0}] = tinyc_sat8((v >= 0 ? tinyc_requantize(v, %d, %d) : "
            "tinyc_requantize(v * ((int32_t)%s[{o2}] - (%d)), %d, %d)) + (%d), %d, %d); }}"
            % (k.expr(0), p.in_zp, m1, e1, k.expr(1), p.alpha_zp, m2, e2, p.out_zp, p.lo, p.hi))
    out, strides = _loop_operands(k)
    return "elementwise.c.j2", dict(comment=f"int8 PRelu {k.in_shape(0)}, slope {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


@dataclass(frozen=True)
class SquaredDifferenceParams:
    """TFLite's SQUARED_DIFFERENCE (squared_difference.cc): both inputs shifted left by 7 bits and rescaled to
    twice the larger input scale, subtracted, squared, then rescaled to the output."""
    in_mults: tuple        # ((m1, shift1), (m2, shift2))
    in_zps: tuple
    out_mult: int
    out_shift: int
    out_zp: int
    lo: int
    hi: int


def squared_difference_prepare(k) -> SquaredDifferenceParams:
    q1, q2, qo = in_quant(k, 0), in_quant(k, 1), out_quant(k)
    s1, s2, so = (float(np.float32(qp.scale_of(q))) for q in (q1, q2, qo))
    twice_max = 2.0 * max(s1, s2)
    ms = (qp.multiplier(s1 / twice_max), qp.multiplier(s2 / twice_max))
    mo, sho = qp.multiplier(twice_max * twice_max / float(np.float32(np.float32(1 << 14) * np.float32(so))))
    if sho > 0:
        raise TinycError(f"node '{k.node.name}': int8 SquaredDifference with output scale {so:g} far below its input "
                         f"scales ({s1:g}, {s2:g}) cannot be computed by TFLite's scheme; requantize the model")
    lo, hi = qp.activation_range(k.node.attrs.get("activation"), qo)
    return SquaredDifferenceParams(ms, (qp.zero_point_of(q1), qp.zero_point_of(q2)), mo, sho, qp.zero_point_of(qo),
                                   lo, hi)


def squared_difference_kernel(k):
    p = k.params
    (m1, sh1), (m2, sh2) = p.in_mults
    z1, z2 = p.in_zps
    body = ("{{ const int32_t d = tinyc_requantize(((int32_t)%s[{o1}] - (%d)) * (1 << 7), %d, %d) -\n"
            "    tinyc_requantize(((int32_t)%s[{o2}] - (%d)) * (1 << 7), %d, %d);\n"
            "  y[{o0}] = tinyc_sat8(tinyc_requantize(d * d, %d, %d) + (%d), %d, %d); }}"
            % (k.expr(0), z1, m1, sh1, k.expr(1), z2, m2, sh2, p.out_mult, p.out_shift, p.out_zp, p.lo, p.hi))
    out, strides = _loop_operands(k)
    return "elementwise.c.j2", dict(comment=f"int8 SquaredDifference {k.in_shape(0)}, {k.in_shape(1)} -> {out}",
                                    loops=strided_loops(out, strides, body)), 0


SIGNATURE = "a, b with numpy broadcasting  [activation]"
ADD_SUB_SIGNATURE = ("a, b with numpy broadcasting  [activation, pot_scale_int16 (int16: TFLite's option for its "
                     "power-of-two kernel)]")
DEFINITIONS = (
    OpDef("Add", ADD_SUB_SIGNATURE, evaluator("Add"), check, float_kernel, add_sub_prepare, add_sub_kernel,
          int8_fast_misc.add_sub, memory="elementwise", quantize="own", fuses_activation=True, qdq_rule="binary",
          plain_dtypes=INTEGER_DTYPES, int16_activations=True),
    OpDef("Sub", ADD_SUB_SIGNATURE, evaluator("Sub"), check, float_kernel, add_sub_prepare, add_sub_kernel,
          int8_fast_misc.add_sub, memory="elementwise", quantize="own", fuses_activation=True, qdq_rule="binary",
          plain_dtypes=INTEGER_DTYPES, int16_activations=True),
    OpDef("Mul", SIGNATURE, evaluator("Mul"), check, float_kernel, mul_prepare, mul_kernel, int8_fast_misc.mul,
          memory="elementwise", quantize="own", fuses_activation=True, qdq_rule="binary",
          plain_dtypes=INTEGER_DTYPES, int16_activations=True),
    OpDef("Div", SIGNATURE, evaluator("Div"), check, float_kernel, div_prepare, div_kernel, None,
          memory="elementwise", quantize=None, fuses_activation=True, plain_dtypes=INTEGER_DTYPES),
    OpDef("Pow", "base, exponent (float32 or integer) with numpy broadcasting -> the base's type  [activation]",
          evaluator("Pow"), pow_check, float_kernel, None, None, None, memory="elementwise", quantize=None,
          fuses_activation=True, plain_dtypes=POW_TYPES),
    OpDef("Max", SIGNATURE, evaluator("Max"), check, float_kernel, max_min_prepare, max_min_kernel, None,
          memory="elementwise", quantize=None, fuses_activation=True, plain_dtypes=INTEGER_DTYPES,
          int16_activations=True),
    OpDef("Min", SIGNATURE, evaluator("Min"), check, float_kernel, max_min_prepare, max_min_kernel, None,
          memory="elementwise", quantize=None, fuses_activation=True, plain_dtypes=INTEGER_DTYPES,
          int16_activations=True),
    OpDef("Mod", "a, b with numpy broadcasting  [fmod: 1 the dividend's sign (C), 0 the divisor's (Python)]",
          evaluator("Mod"), check, float_kernel, None, None, None, memory="elementwise", quantize=None,
          fuses_activation=True, plain_dtypes=INTEGER_DTYPES),
    OpDef("SquaredDifference", SIGNATURE, evaluator("SquaredDifference"), check, float_kernel,
          squared_difference_prepare, squared_difference_kernel, None, memory="elementwise", quantize=None,
          fuses_activation=True),
    OpDef("PRelu", "x, slope with numpy broadcasting  [activation]", evaluator("PRelu"), check, float_kernel,
          prelu_prepare, prelu_kernel, None, memory="elementwise", quantize=None, fuses_activation=True),
)
