"""Fixed-point parameters of int8 kernels, derived from float scales exactly as TFLite's kernels derive them.

Bit-exactness depends on details as small as whether a product of two scales is rounded to float32 before it
is widened to double, so each function says which precision TFLite uses (see docs/int8-numerics.md).
`np.float32` arithmetic reproduces C++ `float` arithmetic; Python floats are C++ `double`.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TinycError
from .fixed_point import multiply_by_quantized_multiplier as mbqm
from .fixed_point import rounding_divide_by_pot
from .fixed_point import saturating_rounding_doubling_high_mul as srdhm
from .fixed_point import quantize_multiplier

QMIN, QMAX = -128, 127


def scale_of(q) -> float:
    """The per-tensor scale as a float32 value (what TFLite stores), widened to Python float exactly."""
    return float(np.float32(np.asarray(q.scale).reshape(-1)[0]))


def zero_point_of(q) -> int:
    return int(np.asarray(q.zero_point).reshape(-1)[0])


def tflite_round(x: float) -> int:
    """TfLiteRound / std::round: halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_value(real: float, scale: float, zero_point: int) -> int:
    """zero_point + round(real / scale), the division in float32 (TFLite's activation-range helper)."""
    return zero_point + tflite_round(float(np.float32(real) / np.float32(scale)))


def activation_range(act: dict | None, q, dtype: str = "int8") -> tuple[int, int]:
    """The clamp of a fused activation (TFLite CalculateActivationRangeQuantized) for an int8 output, or an int16
    one (`dtype`, 16x8)."""
    scale, zp = scale_of(q), zero_point_of(q)
    qmin, qmax = (QMIN, QMAX) if dtype == "int8" else (-32768, 32767)
    if act is None:
        return qmin, qmax
    fn = act["fn"]
    if fn == "relu":
        return max(qmin, quantize_value(0.0, scale, zp)), qmax
    if fn == "clip":
        lo = max(qmin, quantize_value(act["lo"], scale, zp))
        hi = min(qmax, quantize_value(act["hi"], scale, zp)) if math.isfinite(act["hi"]) else qmax
        return lo, hi
    raise TinycError(f"activation '{fn}' cannot be fused into an int8 op; only relu, relu6 and clip can")


def multiplier(real: float) -> tuple[int, int]:
    """(multiplier, shift) of a real multiplier, or a clear error when TFLite could not represent it."""
    if not math.isfinite(real) or real < 0:
        raise TinycError(f"quantization scales give an invalid rescaling factor {real}; check the model's scales")
    return quantize_multiplier(real)


def conv_multipliers(in_q, w_q, out_q, out_channels: int) -> tuple[list, list]:
    """Per-output-channel (multipliers, shifts) for Conv2D: in_scale * w_scale[c] / out_scale, in double
    (TFLite's PopulateConvolutionQuantizationParams)."""
    in_s, out_s = scale_of(in_q), scale_of(out_q)
    w_scales = np.asarray(w_q.scale, np.float32).reshape(-1)
    if w_scales.size not in (1, out_channels):
        raise TinycError(f"weights have {w_scales.size} scales for {out_channels} output channels")
    mults, shifts = [], []
    for c in range(out_channels):
        m, s = multiplier(in_s * float(w_scales[c if w_scales.size > 1 else 0]) / out_s)
        mults.append(m)
        shifts.append(s)
    return mults, shifts


def rescale(in_q, out_q, in_float32: bool = False) -> tuple[int, int]:
    """(multiplier, shift) taking input LSBs to output LSBs: in_scale / out_scale in double (QUANTIZE, MEAN), or
    divided in float32 first (`in_float32`: RELU, LEAKY_RELU)."""
    if in_float32:
        return multiplier(float(np.float32(np.float32(scale_of(in_q)) / np.float32(scale_of(out_q)))))
    return multiplier(scale_of(in_q) / scale_of(out_q))


def fc_scales(in_q, w_q, out_q, out_channels: int) -> list[float]:
    """FULLY_CONNECTED's reference requantization factors: in_scale * w_scale[c] / out_scale in double."""
    w = np.asarray(w_q.scale, np.float32).reshape(-1)
    return [scale_of(in_q) * float(w[c if w.size > 1 else 0]) / scale_of(out_q) for c in range(out_channels)]


# -- LOGISTIC / TANH: 256-entry tables built in float32 as TFLite's LUTPopulate does -------------------------
def _libm_float_fn(name: str):
    """The C library's float function (TFLite's tables call std::exp/std::tanh on float, i.e. libm's
    expf/tanhf); numpy's float32 versions differ in the last bit for some arguments. Falls back to numpy
    where no C library can be loaded."""
    import ctypes
    import ctypes.util
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
        return lambda v: np.float32(fn(float(v)))
    except (OSError, AttributeError):
        np_fn = {"expf": np.exp, "tanhf": np.tanh}[name]
        return lambda v: np_fn(np.float32(v))


def activation_table(fn: str, in_q, out_q) -> list[int]:
    """lut[v + 128] for v in -128..127: dequantize, apply `fn` (sigmoid or tanh) in float32, requantize with
    roundf and a truncating cast after a float add of the zero point (docs/int8-numerics.md 4.10)."""
    f32 = np.float32
    s_in, z_in = f32(scale_of(in_q)), zero_point_of(in_q)
    inv, z_out = f32(f32(1.0) / f32(scale_of(out_q))), zero_point_of(out_q)
    expf, tanhf = _libm_float_fn("expf"), _libm_float_fn("tanhf")
    table = []
    for v in range(-128, 128):
        deq = f32(s_in * f32(v - z_in))
        t = f32(f32(1.0) / f32(f32(1.0) + expf(-deq))) if fn == "sigmoid" else tanhf(deq)
        r = f32(tflite_round(float(f32(t * inv))))
        q = int(f32(r + f32(z_out)))
        table.append(min(QMAX, max(QMIN, q)))
    return table


# -- ABS, SQRT, EXP, LOG, GELU: int8 -> int8 functions of one input, as 256-entry tables ----------------------
def _libm_float(name: str):
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda v: np.float32(fn(float(v)))


def _lut_transform(fn: str, out_q):
    """TFLite's float transform of each LUT op (elementwise.cc, exp.cc, gelu.cc), in float32 with libm."""
    f32 = np.float32
    if fn == "exp":
        return _libm_float("expf")
    if fn == "log":     # values <= 0 give the output's lowest real value
        logf, low = _libm_float("logf"), f32(f32(QMIN - zero_point_of(out_q)) * f32(scale_of(out_q)))
        return lambda v: low if v <= 0 else logf(v)
    if fn == "gelu":    # 0.5 * x * erfc(-x / sqrt(2)), written with erfc for large negative x
        erfcf, c = _libm_float("erfcf"), f32(-0.70710678118654752440)
        return lambda v: f32(f32(f32(0.5) * v) * erfcf(f32(v * c)))
    if fn == "elu":     # TFLite Micro's table (docs/int8-numerics.md 4.33): expf(x) - 1, not expm1f
        expf = _libm_float("expf")
        return lambda v: f32(expf(v) - f32(1)) if v < 0 else v
    if fn == "gelu_tanh":
        tanhf, k = _libm_float("tanhf"), f32(1.12837916709551257390 * 0.70710678118654752440)
        return lambda v: f32(f32(f32(0.5) * v) * f32(f32(1) + tanhf(
            f32(k * f32(v + f32(f32(f32(f32(0.044715) * v) * v) * v))))))
    raise ValueError(fn)


LUT_FUNCTIONS = ("exp", "log", "gelu", "gelu_tanh", "elu")


def lut_table(fn: str, in_q, out_q) -> list[int]:
    """lut[v + 128] as TFLite's LUTPopulate<int8_t> builds it for EXP, LOG and GELU (docs/int8-numerics.md
    4.28) and TFLite Micro's for ELU (4.33): the same float32 steps as LOGISTIC's table (4.10) with the op's
    transform."""
    f32 = np.float32
    s_in, z_in = f32(scale_of(in_q)), zero_point_of(in_q)
    inv, z_out = f32(f32(1.0) / f32(scale_of(out_q))), zero_point_of(out_q)
    transform = _lut_transform(fn, out_q)
    table = []
    for v in range(-128, 128):
        t = transform(f32(s_in * f32(v - z_in)))
        scaled = float(f32(t * inv))
        q = float(f32(f32(tflite_round(scaled)) + f32(z_out))) if abs(scaled) < 2.0 ** 32 else math.inf
        if not -2.0 ** 31 <= q < 2.0 ** 31:     # C++'s float -> int32 conversion is undefined there
            raise TinycError(f"int8 {fn} table: input {v} gives {scaled:g} output steps, beyond int32, where TFLite's "
                             "table is undefined (its x86 build stores -128); the output scale is far too fine")
        table.append(min(QMAX, max(QMIN, int(q))))
    return table


def abs_table(in_q, out_q) -> list[int]:
    """ABS (elementwise.cc AbsEvalQuantized): |x - z_in| rescaled by f32(s_in / s_out) unless the scales are
    equal, plus z_out, saturated."""
    z_in, z_out = zero_point_of(in_q), zero_point_of(out_q)
    s_in, s_out = np.float32(scale_of(in_q)), np.float32(scale_of(out_q))
    m, sh = multiplier(float(np.float32(s_in / s_out)))
    out = []
    for v in range(-128, 128):
        a = abs(v - z_in)
        out.append(min(QMAX, max(QMIN, (a if s_in == s_out else mbqm(a, m, sh)) + z_out)))
    return out


def sqrt_table(in_q, out_q) -> list[int]:
    """SQRT (elementwise.cc SqrtEvalQuantized): per element in float32, sqrtf(s_in * (x - z_in)) / s_out
    truncated toward zero, plus z_out, saturated. TFLite stops the inference on an input below zero; tinyc's
    table gives sqrt(0) there."""
    f32 = np.float32
    s_in, z_in, s_out, z_out = f32(scale_of(in_q)), zero_point_of(in_q), f32(scale_of(out_q)), zero_point_of(out_q)
    out = []
    for v in range(-128, 128):
        d = max(f32(s_in * f32(v - z_in)), f32(0))
        q = int(np.trunc(f32(np.sqrt(d) / s_out))) + z_out
        out.append(min(QMAX, max(QMIN, q)))
    return out


def _srmul_pot(x: int, exponent: int) -> int:
    """gemmlowp's SaturatingRoundingMultiplyByPOT<exponent> on an int32."""
    if exponent > 0:
        threshold = (1 << (31 - exponent)) - 1
        return (1 << 31) - 1 if x > threshold else (-(1 << 31) if x < -threshold else x << exponent)
    return rounding_divide_by_pot(x, -exponent) if exponent < 0 else x


def _wrap32(x: int) -> int:
    return ((x + (1 << 31)) % (1 << 32)) - (1 << 31)


def inv_sqrt_multiplier(value: int) -> tuple[int, int]:
    """TFLite's GetInvSqrtQuantizedMultiplierExp(value, kReverseShift = -1): 1/sqrt(value) as (multiplier, left
    shift), by 5 Newton-Raphson steps in gemmlowp fixed point (Q3.28 values, SRDHM products)."""
    if value <= 1:
        return (1 << 31) - 1, 0
    shift = 11
    while value >= (1 << 29):
        value //= 4
        shift += 1
    pairs = ((32 - value.bit_length()) - 1) // 2 - 1      # CountLeadingZeros(value) - 1, in bit pairs, minus one
    shift -= pairs
    value <<= 2 * pairs
    half_input = rounding_divide_by_pot(value >> 1, 1)
    half_three = (1 << 28) + (1 << 27)
    x = 1 << 28                                           # F3::One()
    for _ in range(5):
        x3 = _srmul_pot(srdhm(srdhm(x, x), x), 6)         # F9 -> F3
        x = _srmul_pot(_wrap32(srdhm(half_three, x) - srdhm(half_input, x3)), 3)   # F6 -> F3
    x = srdhm(x, 1518500250)                              # * sqrt(2) / 2 (F0)
    if shift < 0:
        x, shift = _wrap32(x << -shift), 0
    return x, -shift


def rsqrt_table(in_q, out_q) -> list[int]:
    """RSQRT (elementwise.cc RsqrtEvalQuantizedInt8): v = x - z_in; v == 0 gives 127; else
    MBQM(MBQM(1, inv_mult, inv_shift + 20), m, e - 20) + z_out, saturated, with (m, e) = QuantizeMultiplier(
    1 / f32(sqrtf(s_in) * s_out)). TFLite stops the inference on an input below the zero point; tinyc's table
    gives 127 there, as for 0."""
    f32 = np.float32
    m, e = multiplier(1.0 / float(f32(f32(np.sqrt(f32(scale_of(in_q)))) * f32(scale_of(out_q)))))
    z_in, z_out = zero_point_of(in_q), zero_point_of(out_q)
    out = []
    for v in range(-128, 128):
        value = v - z_in
        if value <= 0:
            out.append(QMAX)
            continue
        im, ish = inv_sqrt_multiplier(value)
        data = mbqm(1, im, ish + 20)
        out.append(min(QMAX, max(QMIN, mbqm(data, m, e - 20) + z_out)))
    return out


# -- HARD_SWISH: int16 arithmetic with two down-scaled multipliers (docs/int8-numerics.md 4.13) ----------------
def int16_multiplier(m: int) -> int:
    """TFLite's DownScaleInt32ToInt16Multiplier."""
    return 32767 if m >= (1 << 31) - 1 - (1 << 15) else (m + (1 << 15)) >> 16


def hard_swish_multipliers(s_in: float, s_out: float) -> tuple[int, int, int, int]:
    """(out_mult, out_exp, relu_mult, relu_exp) of tinyc_hard_swish, derived in float32 as TFLite's Prepare."""
    f32 = np.float32
    hires = f32(f32(1.0 / 128.0) * f32(s_in))
    om, oe = multiplier(float(f32(hires / f32(s_out))))
    rm, re = multiplier(float(f32(hires / f32(f32(3.0) / f32(32768.0)))))
    return int16_multiplier(om), oe, int16_multiplier(rm), re
