"""Activation: one activation function (tinyc/activations.py's table) applied elementwise. On plain integer
tensors only the clamps, computed in the tensor's type: clip (integer bounds lo, hi) and relu."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import activations
from ..codegen import int8_fast_misc, int16_fast_activations
from ..codegen.literals import c_int_literal, c_type
from ..codegen.loops import strided_loops
from ..errors import TinycError
from ..quant import int16_activations as i16
from ..quant import params as qp
from .int8_common import elementwise, in_quant, out_quant
from .opdef import FLOAT, INTEGERS, OpDef

# Activation functions with an int8 kernel (TFLite: RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU, HARD_SWISH,
# LOGISTIC, TANH, ABS, SQRT, RSQRT, EXP, LOG, GELU, ELU, NEG); only the clamps among them fuse into an int8
# producer. The last ones are tables of their 256 outputs, computed as TFLite's kernel computes each.
TABLE_FUNCTIONS = ("sigmoid", "tanh", "abs", "sqrt", "rsqrt", "neg", *qp.LUT_FUNCTIONS)
INT8_FUNCTIONS = ("relu", "clip", "leaky_relu", "hard_swish", *TABLE_FUNCTIONS)
INT8_FUSABLE = ("relu", "clip")
# What tinyc's own quantizer does not make: NEG's kernel needs the negated input's parameters, which a calibrated
# range never gives; BUILTIN_REF has no ELU to check tinyc's quantized model against.
NOT_QUANTIZED = ("neg", "elu")
# Output parameters TFLite fixes (its kernels require them).
FIXED_QUANT = {"sigmoid": (1.0 / 256, -128), "tanh": (1.0 / 128, 0)}


INTEGER_FUNCTIONS = ("clip", "relu")     # on plain integer tensors


def evaluate(a, ins):
    if ins[0].dtype.kind in "iu":       # in the integers themselves (float64 would round int64)
        x = ins[0]
        lo, hi = (np.asarray(b, x.dtype) for b in _integer_bounds(a, x.dtype.name))
        return np.minimum(np.maximum(x, lo), hi)       # min > max: every output is max (as ONNX's Clip)
    return activations.apply(a, ins[0].astype(np.float64))


def _integer_bounds(a, dtype: str) -> tuple[int, int]:
    """The clamp's bounds on `dtype` (relu: 0 and the type's maximum)."""
    return (0, int(np.iinfo(dtype).max)) if a["fn"] == "relu" else (int(a["lo"]), int(a["hi"]))


def check(g, node) -> None:
    """On a plain integer tensor: a clamp with integer bounds, the output of the input's type."""
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    if x.quant is not None or y.quant is not None or x.dtype not in INTEGERS:
        return
    a = node.attrs
    if a["fn"] not in INTEGER_FUNCTIONS or y.dtype != x.dtype:
        raise TinycError(f"node '{node.name}' (Activation): '{a['fn']}' on {x.dtype} -> {y.dtype}; on integer "
                         f"tensors tinyc computes {' and '.join(INTEGER_FUNCTIONS)} in the input's type: cast to "
                         "float32 first")
    info = np.iinfo(x.dtype)
    if a["fn"] == "clip" and not all(isinstance(a[b], (int, np.integer)) and info.min <= a[b] <= info.max
                                     for b in ("lo", "hi")):
        raise TinycError(f"node '{node.name}' (Activation): clip of {x.dtype} with bounds {a['lo']}, {a['hi']}; "
                         f"integer tensors take integer bounds in their type's range")


def integer_kernel(k):
    """Clamp in the tensor's own type; a bound at the type's limit is left out (a comparison that is always false
    would not compile under -Wextra)."""
    t = k.out.dtype
    info = np.iinfo(t)
    lo, hi = _integer_bounds(k.node.attrs, t)
    ctype = c_type(t)
    clamps = "".join("if (v %s %s) v = (%s)%s; " % (cmp, c_int_literal(b), ctype, c_int_literal(b))
                     for cmp, b, needed in (("<", lo, lo > info.min), (">", hi, hi < info.max)) if needed)
    body = "{{ %s v = x0[{o0}]; %sy[{o0}] = v; }}" % (ctype, clamps)
    return "elementwise.c.j2", dict(comment=f"clamp to [{lo}, {hi}] on {k.out_size} {t} values",
                                    loops=strided_loops([k.out_size], [[1]], body)), 0


def float_kernel(k):
    if k.out.dtype != "float32":
        return integer_kernel(k)
    fn = {key: val for key, val in k.node.attrs.items()}
    body = "{{ const float v = x0[{o0}]; y[{o0}] = %s; }}" % k.act("v", fn)
    return "elementwise.c.j2", dict(comment=f"{fn['fn']} on {k.out_size} values",
                                    loops=strided_loops([k.out_size], [[1]], body)), 0


@dataclass(frozen=True)
class ActivationParams:
    fn: str
    in_zp: int
    out_zp: int
    lo: int = qp.QMIN
    hi: int = qp.QMAX
    rescale: tuple = ()          # (multiplier, shift) input LSBs -> output LSBs (relu, clip; leaky_relu x >= 0)
    alpha_rescale: tuple = ()    # leaky_relu x < 0: alpha * input LSBs -> output LSBs
    hard_swish: tuple = ()       # (out_mult, out_exp, relu_mult, relu_exp), int16 multipliers
    table: tuple = ()            # TABLE_FUNCTIONS: the output for each input v, at v + 128
    int16_rescale: tuple = ()    # 16x8 sigmoid / tanh: (multiplier, shift) taking x to the sigmoid table's scale


# Activation functions with a 16x8 kernel (int16 in and out, TFLite's own algorithms: docs/int16-numerics.md 5;
# the rescaling ones 3.4)
INT16_FUNCTIONS = ("sigmoid", "tanh", "relu", "clip", "leaky_relu")


def _int16_prepare(k) -> ActivationParams:
    """16x8 LOGISTIC / TANH (docs/int16-numerics.md 5.1): the input rescale to the sigmoid table, the output
    scale TFLite requires."""
    fn, where = k.node.attrs["fn"], f"node '{k.node.name}'"
    if fn not in INT16_FUNCTIONS:
        raise TinycError(f"{where}: activation '{fn}' on int16 (16x8) tensors; tinyc's 16x8 activations are "
                         f"{', '.join(INT16_FUNCTIONS)}: run `tinyc ops`")
    if k.tensor(0).dtype != "int16" or k.out.dtype != "int16":
        raise TinycError(f"{where}: 16x8 {fn} from {k.tensor(0).dtype} to {k.out.dtype}; TFLite's kernel takes int16 "
                         "in and out")
    if fn in ("relu", "clip", "leaky_relu"):
        return _int16_rescaling(k, fn, where)
    i16.check_sigmoid_tanh_output(fn, qp.scale_of(out_quant(k)), where)
    return ActivationParams(fn, 0, 0, int16_rescale=i16.sigmoid_tanh_rescale(fn, qp.scale_of(in_quant(k)), where))


def _int16_rescaling(k, fn: str, where: str) -> ActivationParams:
    """16x8 RELU, RELU6 and LEAKY_RELU (docs/int16-numerics.md 3.4): the int8 multipliers
    (float32 quotients) on int16 values; a clamp bound more than int32 output steps away is refused (TFLite's
    float-to-int32 cast of it is undefined)."""
    a, iq, oq = dict(k.node.attrs), in_quant(k), out_quant(k)
    rescale = qp.rescale(iq, oq, in_float32=True)
    if fn == "leaky_relu":
        f32 = np.float32
        alpha = qp.multiplier(float(f32(f32(f32(qp.scale_of(iq)) * f32(a["alpha"])) / f32(qp.scale_of(oq)))))
        return ActivationParams(fn, 0, 0, -32768, 32767, rescale=rescale, alpha_rescale=alpha)
    if fn == "clip" and (float(a["lo"]), float(a["hi"])) != (0.0, 6.0):
        raise TinycError(f"{where}: int16 clip to [{a['lo']:g}, {a['hi']:g}]; TFLite's 16x8 kernels clamp standalone "
                         "with RELU and RELU6 only (its RELU_N1_TO_1 and RELU_0_TO_1 refuse int16): keep this clip in "
                         "float32, or fuse it into the op before it")
    for bound in (a["lo"], a["hi"]) if fn == "clip" else ():
        steps = float(np.float32(np.float32(bound) / np.float32(qp.scale_of(oq))))
        if np.isfinite(bound) and not abs(steps) < 2.0 ** 31:
            raise TinycError(f"{where}: int16 {fn} bound {bound:g} is {steps:.3g} steps of the output scale "
                             f"{qp.scale_of(oq):g}, beyond int32, where TFLite's bound is undefined; requantize the "
                             "model with a coarser output scale")
    return ActivationParams(fn, 0, 0, *qp.activation_range(a, oq, "int16"), rescale=rescale)


def int8_prepare(k) -> ActivationParams:
    if "int16" in (k.tensor(0).dtype, k.out.dtype):
        return _int16_prepare(k)
    a = dict(k.node.attrs)
    fn = a["fn"]
    iq, oq = in_quant(k), out_quant(k)
    zi, zo = qp.zero_point_of(iq), qp.zero_point_of(oq)
    if fn in ("relu", "clip"):
        lo, hi = qp.activation_range(a, oq)
        return ActivationParams(fn, zi, zo, lo, hi, rescale=qp.rescale(iq, oq, in_float32=True))
    if fn == "leaky_relu":      # both multipliers computed in float32, as TFLite
        f32 = np.float32
        s_in, s_out = f32(qp.scale_of(iq)), f32(qp.scale_of(oq))
        alpha = qp.multiplier(float(f32(f32(s_in * f32(a["alpha"])) / s_out)))
        return ActivationParams(fn, zi, zo, rescale=qp.rescale(iq, oq, in_float32=True), alpha_rescale=alpha)
    if fn == "hard_swish":
        m = qp.hard_swish_multipliers(qp.scale_of(iq), qp.scale_of(oq))
        if m[1] > 0:
            raise TinycError(f"node '{k.node.name}': int8 hard-swish needs output scale >= input scale / 128 "
                             "(TFLite requires it)")
        return ActivationParams(fn, zi, zo, hard_swish=m)
    if fn in ("sigmoid", "tanh"):
        return ActivationParams(fn, zi, zo, table=tuple(qp.activation_table(fn, iq, oq)))
    if fn == "neg":
        return ActivationParams(fn, zi, zo, table=tuple(_negated_bytes(k, iq, oq)))
    if fn == "elu" and float(a.get("alpha", 1.0)) != 1.0:
        raise TinycError(f"node '{k.node.name}': int8 ELU with alpha {a['alpha']:g}; TFLite's ELU (alpha 1) is the "
                         "only int8 one; keep this ELU in float32")
    if fn in TABLE_FUNCTIONS:
        try:
            table = {"abs": qp.abs_table, "sqrt": qp.sqrt_table, "rsqrt": qp.rsqrt_table}.get(
                fn, lambda i, o: qp.lut_table(fn, i, o))(iq, oq)
        except TinycError as e:
            raise TinycError(f"node '{k.node.name}': {e}") from None
        return ActivationParams(fn, zi, zo, table=tuple(table))
    raise TinycError(f"node '{k.node.name}': activation '{fn}' has no int8 kernel; run `tinyc ops`")


def _negated_bytes(k, iq, oq) -> list:
    """NEG (docs/int8-numerics.md 4.32): TFLite negates the stored integers (-128 stays -128), which is -x only
    when the output has the input's scale and the negated zero point."""
    if qp.scale_of(iq) != qp.scale_of(oq) or qp.zero_point_of(oq) != -qp.zero_point_of(iq):
        raise TinycError(f"node '{k.node.name}': int8 NEG with output scale {qp.scale_of(oq):g} and zero point "
                         f"{qp.zero_point_of(oq)} for input {qp.scale_of(iq):g}, {qp.zero_point_of(iq)}; TFLite "
                         "negates the stored integers, which means -x only with the input's scale and the negated "
                         "zero point")
    return [-128 if v == -128 else -v for v in range(-128, 128)]


def int8_kernel(k):
    p = k.params
    if p.int16_rescale:
        return sigmoid_tanh_int16(k)
    clamp, t = ("tinyc_clamp16", "int16") if k.out.dtype == "int16" else ("tinyc_sat8", "int8")
    if p.fn in ("relu", "clip"):    # RELU / RELU6 / RELU_N1_TO_1: rescale to output LSBs, then clamp
        m, sh = p.rescale
        return elementwise(k, "%s(tinyc_requantize(v - (%d), %d, %d) + (%d), %d, %d)"
                           % (clamp, p.in_zp, m, sh, p.out_zp, p.lo, p.hi), f"{t} {p.fn}")
    if p.fn == "leaky_relu":
        (m_i, e_i), (m_a, e_a) = p.rescale, p.alpha_rescale
        zi, zo = p.in_zp, p.out_zp
        return elementwise(k, "%s((%d) + (v >= %d ? tinyc_requantize(v - (%d), %d, %d) : "
                           "tinyc_requantize(v - (%d), %d, %d)), %d, %d)"
                           % (clamp, zo, zi, zi, m_i, e_i, zi, m_a, e_a, p.lo, p.hi), f"{t} leaky relu")
    if p.fn == "hard_swish":
        return elementwise(k, "tinyc_hard_swish(v, %d, %d, %d, %d, %d, %d)" % (p.in_zp, *p.hard_swish, p.out_zp),
                           "int8 hard swish")
    table = k.table(list(p.table), "int8", f"int8 {p.fn} table")     # computed as TFLite computes each output
    return elementwise(k, "%s[v + 128]" % table, f"int8 {p.fn} by table")


def sigmoid_tanh_int16(k):
    """TFLite's int16 LOGISTIC / TANH: the rescaled input's magnitude indexes the sigmoid table (one step per 2^9
    LSB for sigmoid, 2^8 for tanh), interpolated, mirrored below 0."""
    p = k.params
    mult, shift = p.int16_rescale
    table = k.table(list(i16.SIGMOID_TABLE), "uint16", "sigmoid(i / 24) in 0.16 fixed point (TFLite's table)")
    return "sigmoid_tanh_int16.c.j2", dict(fn=p.fn, n=k.out_size, mult=mult, shift=shift,
                                           round=(1 << (shift - 1)) if shift > 0 else 0, table=table), 0


def fast_kernel(k):
    """16x8 sigmoid / tanh: int16_fast_activations.sigmoid_tanh; otherwise int8_fast_misc.unary."""
    if k.params.int16_rescale:
        return int16_fast_activations.sigmoid_tanh(k)
    return int8_fast_misc.unary(k)


DEFINITIONS = (OpDef(
    "Activation", "x  [fn, **params] (the activation dict, flat; see tinyc.activations)",
    evaluate, check, float_kernel, int8_prepare, int8_kernel, fast_kernel,
    memory="elementwise", quantize="own", qdq_rule="activation", plain_dtypes=FLOAT + INTEGERS,
    int16_activations=True),)
