"""The int8 LSTM: TFLite's integer UNIDIRECTIONAL_SEQUENCE_LSTM ("8x8_16": int8 input, weights and hidden state,
int16 cell state and gates, int32 biases), the int8 facets of the LSTM op of tinyc/ops/recurrent.py.

The int8 form of an LSTM node (what the TFLite frontend writes, docs/int8-numerics.md 4.39 for the arithmetic):
  x   int8 [B,T,I], per-tensor Quant (s_x, z_x)
  w   int8 [4H,I], r int8 [4H,H]: symmetric; Quant per channel along axis 0 with one scale per gate (each repeated
      H times), or one per-tensor scale for all four gates
  b   int32 [4H]: the gate biases as stored (scale s_x * s_w of their gate; zero point 0)
  h0  int8 [B,H], Quant (s_h, z_h): the hidden state as the recurrent product reads it (TFLite's output_state)
  c0  int16 [B,H], Quant (2^n, 0): the cell state; its scale must be a power of two, 2^-15 .. 2^-9
  p   the peepholes: must be a zero constant (peephole int8 LSTMs are refused)
  output int8, sequence [B,T,H] or last_h [B,H]; with `cell_output`, a second output: the final cell state, int16
  with c0's quantization.
Attributes beyond the float ones: `hidden_quant` = (scale, zero point) of the hidden value each step computes
(TFLite's "effective hidden" intermediate; the converter gives it the output's parameters); `cell_clip` stays a
float and is quantized here as TFLite does. The gates are Q3.12 (TFLite's fixed gate scale 2^-12 of an LSTM
without layer normalization), their activations Q0.15.

`int8_prepare` derives TFLite's Prepare (PopulateQuantizedLstmParams8x8_16, PopulatePrecomputedZPTimesWeights-
WithBias) in the same float32/double steps; `int8_kernel` renders templates/int8/lstm.c.j2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..quant import params as qp
from ..quant.fixed_point import rounding_divide_by_pot

GATE_SCALE = 2.0 ** -12             # Q3.12: TFLite's intermediate scale of each gate without layer normalization
CELL_TANH_SHIFTS = range(-15, -8)   # cell scales 2^-15 .. 2^-9: TFLite's tanh of the cell takes 0..6 integer bits


@dataclass(frozen=True)
class LstmInt8Params:
    """TFLite's IntegerLstmParameter for an LSTM without peepholes, projection or layer normalization."""
    input_mult: tuple       # per gate (i, f, g, o): (multiplier, shift) of s_x * s_w / 2^-12
    recurrent_mult: tuple   # per gate: (multiplier, shift) of s_h * s_r / 2^-12
    hidden_mult: tuple      # (multiplier, shift) of 2^-30 / s_hidden: Q0.15 x Q0.15 -> hidden int8
    hidden_zp: int
    cell_shift: int         # log2 of the cell state's scale
    cell_clip: int          # |c| <= cell_clip in cell LSBs; 0: none
    input_bias: tuple       # [4H] int32: bias - z_x * sum_i w[r, i]
    recurrent_bias: tuple   # [4H] int32: - z_h * sum_j r[r, j]


def _refuse(k, what: str) -> TinycError:
    return TinycError(f"int8 LSTM '{k.node.name}': {what}")


def _gate_scales(k, i: int, name: str) -> list[float]:
    """The four gate scales of weight input `i` (per-tensor: the same four times), as float32 values."""
    t = k.tensor(i)
    H = k.in_shape(2)[1]
    if t.dtype != "int8" or t.quant is None or not t.is_const:
        raise _refuse(k, f"{name} must be constant int8 with quantization parameters (got {t.dtype})")
    scale = np.asarray(t.quant.scale, np.float32).reshape(-1)
    if np.any(np.asarray(t.quant.zero_point).reshape(-1) != 0):
        raise _refuse(k, f"{name} has a nonzero zero point; TFLite's integer LSTM needs symmetric weights")
    if scale.size == 1:
        return [float(scale[0])] * 4
    if scale.size != 4 * H or t.quant.axis != 0 or np.any(scale.reshape(4, H) != scale.reshape(4, H)[:, :1]):
        raise _refuse(k, f"{name} is quantized per row; TFLite's integer LSTM takes one scale per gate")
    return [float(s) for s in scale.reshape(4, H)[:, 0]]


def _cell_shift(k) -> int:
    """TFLite's CheckedLog2 of the cell state's scale: the scale must be a power of two."""
    t = k.tensor(5)
    if t.dtype != "int16" or t.quant is None:
        raise _refuse(k, f"the cell state c0 must be int16 with quantization parameters (got {t.dtype})")
    log2 = float(np.float32(math.log(qp.scale_of(t.quant)) * np.float32(1.0 / math.log(2.0))))
    shift = qp.tflite_round(log2)
    if abs(log2 - shift) >= 1e-3 or qp.zero_point_of(t.quant) != 0:
        raise _refuse(k, f"cell state scale {qp.scale_of(t.quant):g} (zero point {qp.zero_point_of(t.quant)}) is "
                         "not a power of two with zero point 0, which TFLite's integer LSTM requires")
    if not -30 <= shift <= 1:
        raise _refuse(k, f"cell state scale 2^{shift} is outside 2^-30 .. 2, where TFLite's integer LSTM rescales "
                         "the cell state by a shift of 0 to 31")
    return shift


def _check_variant(k) -> None:
    a = k.node.attrs
    names = tuple(act.get("fn") for act in a["activations"])
    if names != ("sigmoid", "tanh", "tanh") or any(len(act) > 1 for act in a["activations"]):
        raise _refuse(k, f"activations {names}: TFLite's integer LSTM computes sigmoid, tanh, tanh only")
    if a.get("clip") is not None:
        raise _refuse(k, "clip (ONNX's activation threshold) has no integer form in TFLite; keep this LSTM float")
    if a.get("input_forget"):
        raise _refuse(k, "input_forget (CIFG, coupled input and forget gates) is not supported in int8")
    p = k.tensor(6)
    if not p.is_const or np.any(p.data):
        raise _refuse(k, "peepholes are not supported in int8; keep this LSTM float")
    if k.tensor(0).dtype != "int8" or k.tensor(4).dtype != "int8":
        raise _refuse(k, "the input and the hidden state h0 must be int8")
    if k.tensor(3).dtype != "int32":
        raise _refuse(k, f"the biases must be int32 (got {k.tensor(3).dtype})")
    out, c0 = k.out, k.tensor(5)
    if out.dtype != "int8":
        raise _refuse(k, f"output '{a['output']}' must be int8 (got {out.dtype})")
    if a.get("cell_output"):        # the final cell state's bytes as a second output
        c = k.outs[1]
        if c.quant is None or c0.quant is None or (qp.scale_of(c.quant), qp.zero_point_of(c.quant)) != (
                qp.scale_of(c0.quant), 0):
            raise _refuse(k, "cell_output must be int16 with the cell state's scale and zero point 0")
    if a.get("hidden_quant") is None:
        raise _refuse(k, "attribute hidden_quant (the effective hidden scale and zero point) is missing")


def _effective(weight_scale: float, other_scale: float) -> tuple[int, int]:
    """TFLite: weight_scale * other_scale / intermediate_scale, all in float32, then QuantizeMultiplier."""
    f32 = np.float32
    return qp.multiplier(float(f32(f32(f32(weight_scale) * f32(other_scale)) / f32(GATE_SCALE))))


def _zero_point_sums(weights: np.ndarray, zero_point: int) -> np.ndarray:
    """TFLite's PrecomputeZeroPointTimesWeightWithBias: -z * row sums of the weights, in int32 arithmetic."""
    sums = weights.astype(np.int64).sum(axis=1) * -zero_point
    return ((sums + (1 << 31)) % (1 << 32)) - (1 << 31)


def int8_prepare(k) -> LstmInt8Params:
    """TFLite 2.21's PopulateQuantizedLstmParams8x8_16 and PopulatePrecomputedZPTimesWeightsWithBias for an LSTM
    without layer normalization, projection, peepholes or CIFG (docs/int8-numerics.md 4.39)."""
    _check_variant(k)
    a = k.node.attrs
    x_q, h_q = k.tensor(0).quant, k.tensor(4).quant
    if x_q is None or h_q is None:
        raise _refuse(k, "the input and the hidden state h0 need quantization parameters")
    s_x, z_x, s_h, z_h = qp.scale_of(x_q), qp.zero_point_of(x_q), qp.scale_of(h_q), qp.zero_point_of(h_q)
    w_scales, r_scales = _gate_scales(k, 1, "w (input weights)"), _gate_scales(k, 2, "r (recurrent weights)")
    cell_shift = _cell_shift(k)
    s_hidden, z_hidden = float(np.float32(a["hidden_quant"][0])), int(a["hidden_quant"][1])
    if not (s_hidden > 0 and math.isfinite(s_hidden)) or not -128 <= z_hidden <= 127:
        raise _refuse(k, f"hidden_quant {tuple(a['hidden_quant'])} is not a valid int8 scale and zero point")
    # double: 2^-15 / s * 2^-15, stored in a float
    hidden = float(np.float32(2.0 ** -15 / s_hidden * 2.0 ** -15))
    clip = 0
    if a.get("cell_clip"):     # float32: clip / scale, clamped to int16, truncated
        q = np.float32(np.float32(a["cell_clip"]) / np.float32(qp.scale_of(k.tensor(5).quant)))
        clip = int(min(max(q, np.float32(-32768.0)), np.float32(32767.0)))
    b = k.tensor(3).data.astype(np.int64) if k.tensor(3).is_const else None
    if b is None:
        raise _refuse(k, "the biases must be constant")
    input_bias = ((b + _zero_point_sums(k.tensor(1).data, z_x) + (1 << 31)) % (1 << 32)) - (1 << 31)
    return LstmInt8Params(
        input_mult=tuple(_effective(s, s_x) for s in w_scales),
        recurrent_mult=tuple(_effective(s, s_h) for s in r_scales),
        hidden_mult=qp.multiplier(hidden), hidden_zp=z_hidden, cell_shift=cell_shift, cell_clip=clip,
        input_bias=tuple(int(v) for v in input_bias),
        recurrent_bias=tuple(int(v) for v in _zero_point_sums(k.tensor(2).data, z_h)))


def int16_constant(c32: int) -> int:
    """gemmlowp's RescaleConstantInitializer for int16: a Q0.31 constant rounded to Q0.15 (RoundingDivideByPOT 16)."""
    return rounding_divide_by_pot(c32, 16)


# gemmlowp's constants (int32 raws), for exp_on_negative_values and the Newton-Raphson divisions
EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
              (4, 242))


def exp_constants(integer_bits: int) -> dict:
    """What templates/int8/lstm.c.j2's e^a needs for an int16 input with `integer_bits` integer bits: the quarter
    (1/4 in input LSBs), the barrel shifter's (bit, multiplier) steps and the clamp below -32 (None: none)."""
    fraction = 15 - integer_bits
    steps = [(1 << (fraction + e), int16_constant(m)) for e, m in EXP_BARREL if integer_bits > e]
    clamp = int16_constant(-(1 << (36 - integer_bits))) if integer_bits > 5 else None
    return dict(k=integer_bits, quarter=1 << (fraction - 2), steps=steps, clamp=clamp, table=None)


def kernel_variables(k) -> dict:
    """What templates/int8/lstm.c.j2 reads, for the reference kernel and its fast twin (codegen/int8_lstm.py)."""
    p: LstmInt8Params = k.params
    B, T, I = k.in_shape(0)
    H = k.in_shape(2)[1]
    a = k.node.attrs
    (im, ish), (rm, rsh) = zip(*p.input_mult), zip(*p.recurrent_mult)
    if k.work is None:
        raise TinycError(f"internal: int8 LSTM '{k.node.name}' has no arena scratch for its gates and state")
    return dict(
        B=B, T=T, I=I, H=H, w=k.expr(1), r=k.expr(2), h0=k.expr(4), c0=k.expr(5), fast=False,
        output=a["output"], reverse=bool(a.get("reverse")), cell_output=bool(a.get("cell_output")),
        input_bias=k.table(p.input_bias, "int32", "int8 LSTM input bias with the input zero point folded in"),
        recurrent_bias=(k.table(p.recurrent_bias, "int32", "int8 LSTM recurrent zero point times the weights")
                        if any(p.recurrent_bias) else None),
        input_mult=k.table(im, "int32", "int8 LSTM input multipliers (i, f, g, o)"),
        input_shift=k.table(ish, "int32", "int8 LSTM input shifts (i, f, g, o)"),
        recurrent_mult=k.table(rm, "int32", "int8 LSTM recurrent multipliers (i, f, g, o)"),
        recurrent_shift=k.table(rsh, "int32", "int8 LSTM recurrent shifts (i, f, g, o)"),
        hidden_mult=p.hidden_mult[0], hidden_shift=p.hidden_mult[1],
        hidden_zp=p.hidden_zp, cell_shift=p.cell_shift, cell_clip=p.cell_clip,
        third=int16_constant(715827883), exp_c=int16_constant(1895147668),
        c48=int16_constant(1515870810), cn32=int16_constant(-1010580540),
        gate_exp=exp_constants(3), gate_tanh_exp=exp_constants(4),
        cell_tanh_exp=exp_constants(16 + p.cell_shift) if p.cell_shift in CELL_TANH_SHIFTS else None)


def _wrap16(v: int) -> int:
    return ((v + 32768) & 0xFFFF) - 32768


def _mul16(a: int, b: int) -> int:
    """gemmlowp's int16 SaturatingRoundingDoublingHighMul."""
    return min((a * b + 16384) >> 15, 32767)


def exp_quarter_table(integer_bits: int) -> list[int]:
    """e^(m / 2^(15 - k) - 1/4) in Q0.15 for m = 0 .. 2^(13 - k) - 1: gemmlowp's
    exp_on_interval_between_negative_one_quarter_and_0_excl on int16 (the Taylor series around -1/8) of each
    `a mod 1/4 - 1/4` that exp_on_negative_values with k integer bits computes; the fast kernel reads it instead
    of evaluating the series."""
    quarter = 1 << (13 - integer_bits)
    third, c = int16_constant(715827883), int16_constant(1895147668)
    out = []
    for m in range(quarter):
        x = _wrap16((m - quarter) * (1 << integer_bits) + 4096)
        x2 = _mul16(x, x)
        x3, x4 = _mul16(x2, x), _mul16(x2, x2)
        poly = rounding_divide_by_pot(_wrap16(_mul16(_wrap16(rounding_divide_by_pot(x4, 2) + x3), third) + x2), 1)
        out.append(max(-32768, min(32767, c + _mul16(c, _wrap16(x + poly)))))
    return out


def int8_kernel(k):
    B, T, I = k.in_shape(0)
    H = k.in_shape(2)[1]
    return "lstm.c.j2", kernel_variables(k), B * T * 4 * H * (I + H)


def expand_offset(H: int, cell_in_scratch: bool = True) -> int:
    """Where the fast kernel's halfword pairs of x_t and h start in the scratch: after the gates and the cell
    state (not there with `cell_output`: the kernel keeps it in the second output), 4-byte aligned."""
    return (2 * 4 * H + (2 * H if cell_in_scratch else 0) + 3) // 4 * 4


def work_bytes(H: int, I: int, cell_in_scratch: bool = True) -> int:
    """The int8 kernel's arena scratch for one batch row: the four int16 gates [4H] and the int16 cell state [H]
    (none with `cell_output`, whose output holds it; h lives in the first output), then, for the fast kernel, x_t
    and h as int16 halfword pairs (their first multiples of four values)."""
    return expand_offset(H, cell_in_scratch) + 2 * (I // 4 * 4 + H // 4 * 4)
