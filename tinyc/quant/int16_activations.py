"""TFLite's 16x8 SOFTMAX, LOGISTIC and TANH (docs/int16-numerics.md §5): the parameters their Prepare derives, and
each kernel's integer steps in numpy, the executable twin of the generated C (templates/int8/softmax_int16.c.j2,
templates/int8/sigmoid_tanh_int16.c.j2) that tests compare against TF's interpreter on every int16 input.

LOGISTIC and TANH share one 256-entry table of sigmoid(i / 24) in 0.16 fixed point, which TFLite ships as data
(`sigmoid_table_uint16`): its entries are not a rounding of the exact function (entry 33 is 52311 where
65536 * sigmoid(33/24) = 52309.97), so they are written out here. SOFTMAX's two 513-entry tables (e^x on [-10, 0]
and 1/(1+x) on [0, 1], both Q0.15) are generated in double as TFLite's Prepare generates them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

from ..errors import TinycError
from .fixed_point import quantize_multiplier

# sigmoid(i / 24) in 0.16 fixed point for i = 0..255 (TFLite's and CMSIS-NN's sigmoid_table_uint16).
SIGMOID_TABLE = (
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064, 42688,
    43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409,
    51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
    57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110,
    61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186,
    63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
    64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786, 64816, 64845, 64873, 64900,
    64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079, 65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208,
    65221, 65234, 65246, 65258, 65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
    65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449,
    65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491,
    65493, 65495, 65497, 65498, 65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
    65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524,
    65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530,
    65530, 65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65535)

OUT_SCALE = 1.0 / 32768         # the output scale each of the three ops requires (Q0.15)
# LOGISTIC / TANH: the input rescale's product x * multiplier must fit in int32 for every int16 x (TFLite's C
# overflows beyond, from input scales of about 5.3 up)
MAX_SIGMOID_MULTIPLIER = 65535
SOFTMAX_MAX_RANK = 4            # TFLite's int16 softmax takes tensors of 1 to 4 dimensions
SOFTMAX_MAX_LEFT_SHIFT = 15     # |x - max| <= 65535 times 2^15 still fits in int32 before the high multiply
SOFTMAX_MAX_ROW = 65536         # rows of up to this many Q0.15 exponentials (each <= 32767) sum within int32
LUT_SIZE = 513                  # 512 intervals and the end point


def _logf():
    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    lib.logf.restype, lib.logf.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda v: np.float32(lib.logf(float(v)))


def _round_away(v: float) -> float:
    return math.copysign(math.floor(abs(v) + 0.5), v)


def checked_log2(x: float) -> tuple[int, bool]:
    """TFLite's CheckedLog2, in float32 with libm's logf: (the rounded log2 of x, whether x is within 1e-3 in log2
    of that power of two)."""
    f32, logf = np.float32, _logf()
    x_log2 = f32(logf(x) * f32(f32(1.0) / logf(f32(2.0))))
    rounded = f32(_round_away(float(x_log2)))
    return int(rounded), bool(abs(f32(x_log2 - rounded)) < f32(1e-3))


def sigmoid_tanh_rescale(fn: str, s_in: float, where: str) -> tuple[int, int]:
    """(multiplier, shift) with which the int16 LOGISTIC ('sigmoid') / TANH kernel takes x to the table's scale
    1/(3 * 4096): v = (x * multiplier + rounding) >> shift (SigmoidPrepare / TanhPrepare, then the kernel's
    power-of-two case)."""
    log2, pot = checked_log2(s_in)
    left_shift = 12 + log2          # (15 - 3 input integer bits) + log2(scale)
    if pot and (left_shift == 0 or (fn == "tanh" and left_shift == 1)):
        return 3 << left_shift, 0   # a power-of-two scale 2^-12 (or 2^-11 for tanh): x * 3 (or x * 6)
    real, shift = s_in * 4096.0 * 3.0, 0
    while real <= 32767.0 / 2.0 and shift <= 30:
        shift += 1
        real *= 2.0
    mult = int(real)
    if mult == 0:       # TFLite would take it for the power-of-two case and shift 3 left by 31
        raise TinycError(f"{where}: int16 {'logistic' if fn == 'sigmoid' else 'tanh'} input scale {s_in:g} is "
                         "below 4e-14, which TFLite's int16 kernel cannot represent; recalibrate the model")
    if mult > MAX_SIGMOID_MULTIPLIER:
        raise TinycError(f"{where}: int16 {'logistic' if fn == 'sigmoid' else 'tanh'} input scale {s_in:g} is 5.3 "
                         "or more, where TFLite's int16 kernel overflows int32 (its inputs span beyond +-170000); "
                         "recalibrate the model so the input scale is below 5.3")
    return mult, shift


def check_sigmoid_tanh_output(fn: str, s_out: float, where: str) -> None:
    """LOGISTIC requires the output scale 1/32768 exactly; TANH a scale whose CheckedLog2 is -15."""
    log2, pot = checked_log2(s_out)
    exact = s_out == OUT_SCALE
    if not (exact if fn == "sigmoid" else pot and log2 == -15):
        raise TinycError(f"{where}: int16 {'logistic' if fn == 'sigmoid' else 'tanh'} output scale {s_out:g}; "
                         "TFLite's kernel requires 1/32768 (zero point 0)")


def rescaled(x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """v = (x * mult + rounding) >> shift: the input at the sigmoid table's scale (int64 array)."""
    return (x.astype(np.int64) * mult + ((1 << (shift - 1)) if shift > 0 else 0)) >> shift


def sigmoid_tanh_of_rescaled(fn: str, v: np.ndarray) -> np.ndarray:
    """The kernel's output for the rescaled input v (int64 array)."""
    table = np.asarray(SIGMOID_TABLE, np.int64)
    a = np.abs(v)
    frac_bits = 9 if fn == "sigmoid" else 8        # tanh(x) = 2 sigmoid(2x) - 1: the table at twice the step
    hi, lo = a >> frac_bits, a & ((1 << frac_bits) - 1)
    i = np.minimum(hi, 254)
    r = np.where(hi >= 255, (0x7FFF << 10) if fn == "sigmoid" else (0xFFFF << 8),
                 (table[i] << frac_bits) + lo * (table[i + 1] - table[i]))
    if fn == "sigmoid":     # 1 - sigmoid(x) below 0; Q0.25 -> Q0.15 rounding
        r = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1) >> 10
    else:                   # 2 sigmoid - 1, its negation below 0; Q0.23 -> Q0.15 rounding
        r = np.where(v >= 0, r - (1 << 23) + (1 << 7), (1 << 23) - r + (1 << 7) - 1) >> 8
    return r.astype(np.int16)


def sigmoid_tanh(fn: str, x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """The kernel on int16 `x` (reference_integer_ops::Logistic / Tanh for int16), in exact integers."""
    return sigmoid_tanh_of_rescaled(fn, rescaled(x, mult, shift))


# -- SOFTMAX --------------------------------------------------------------------------------------------------------
def _lut(func, lo: float, hi: float) -> list[int]:
    """TFLite's int16 LUT of `func` on [lo, hi] (Prepare, in double): 512 samples in Q0.15, each lowered by half
    the error its interval's linear interpolation makes at the midpoint, and the end point."""
    step = (hi - lo) / 512
    out = []
    for i in range(512):
        here = _round_away(func(lo + i * step) * 32768.0)
        interpolated = _round_away((func(lo + (i + 1) * step) * 32768.0 + here) / 2.0)
        midpoint = _round_away(func(lo + i * step + step / 2.0) * 32768.0)
        bias = _round_away((interpolated - midpoint) / 2.0)
        out.append(int(min(max(here - bias, -32768.0), 32767.0)))
    out.append(int(min(max(_round_away(func(hi) * 32768.0), -32768.0), 32767.0)))
    return out


def softmax_tables() -> tuple[list[int], list[int]]:
    """(e^x on [-10, 0], 1 / (1 + x) on [0, 1]): 513 int16 entries each, Q0.15."""
    return _lut(math.exp, -10.0, 0.0), _lut(lambda v: 1.0 / (1.0 + v), 0.0, 1.0)


def softmax_rescale(s_in: float, beta: float, where: str) -> tuple[int, int]:
    """(multiplier, shift) taking x - max(row) to the exp table's input, where -65535 is -10: QuantizeMultiplier of
    f32(s_in * beta) / (10 / 65535)."""
    real = float(np.float32(np.float32(s_in) * np.float32(beta))) / (10.0 / 65535.0)
    mult, shift = quantize_multiplier(real)
    if shift > SOFTMAX_MAX_LEFT_SHIFT:
        raise TinycError(f"{where}: int16 softmax input scale {s_in:g} x beta {beta:g} is above 5.0001, where "
                         "TFLite's int16 softmax overflows int32 (its logits span beyond +-160000); recalibrate the "
                         "model so the scale is below 5")
    return mult, shift


def check_softmax_output(s_out: float, where: str) -> None:
    """TFLite: the output scale within 0.1 % of 1/32768 (its values are Q0.15 whatever the scale says)."""
    if abs(np.float32(s_out) - np.float32(OUT_SCALE)) > np.float32(0.001) * np.float32(OUT_SCALE):
        raise TinycError(f"{where}: int16 softmax output scale {s_out:g}; TFLite's kernel requires 1/32768 (zero "
                         "point 0)")


def table_lookup(v: np.ndarray, lut) -> np.ndarray:
    """TFLite's generic_int16_table_lookup: lut[256 + v/128] plus the interpolated part of the next step."""
    lut = np.asarray(lut, np.int64)
    v = v.astype(np.int64)
    i = 256 + (v >> 7)
    return lut[i] + (((lut[i + 1] - lut[i]) * (v & 0x7F) + 64) >> 7)


def multiply_by_quantized_multiplier(x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier on int64 arrays of int32 values (the left shift wraps in 32 bits, as C)."""
    left, right = max(shift, 0), max(-shift, 0)
    v = ((x << left) + (1 << 31)) % (1 << 32) - (1 << 31)
    if mult == 0:
        return np.zeros_like(v)
    ab = v * mult
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = ab + nudge
    high = np.where(high >= 0, high >> 31, -((-high) >> 31))       # C division by 2^31 truncates
    high = np.where((v == -(1 << 31)) & (mult == -(1 << 31)), (1 << 31) - 1, high)
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + ((high & mask) > threshold)


def softmax(x: np.ndarray, mult: int, shift: int, exp_lut, recip_lut) -> np.ndarray:
    """The kernel (reference_ops::SoftmaxInt16) over the last axis of int16 `x`, in exact integers."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
    diff = rows - rows.max(axis=1, keepdims=True)
    scaled = multiply_by_quantized_multiplier(diff, mult, shift)
    e = table_lookup(np.clip(scaled + 32767, -32768, 32767), exp_lut)          # Q0.15
    total = e.sum(axis=1)                                                       # Q16.15
    out = np.empty_like(rows)
    for r, s in enumerate(total.tolist()):
        headroom_plus_one = 32 - int(s).bit_length()                    # count of leading zeros of uint32
        shifted = ((s << (headroom_plus_one - 1)) + (1 << 13)) >> 14    # the sum in [1, 2) as Q1.15 of x + 1
        recip = int(table_lookup(np.array([min(max(shifted - (1 << 15) - (1 << 16), -32768), 32767)]),
                                 recip_lut)[0])
        right = 31 - headroom_plus_one
        out[r] = np.clip((e[r] * recip + (1 << (right - 1))) >> right, 0, 32767)
    return out.reshape(x.shape).astype(np.int16)
