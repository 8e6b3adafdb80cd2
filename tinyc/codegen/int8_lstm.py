"""Fast int8 LSTM (templates/int8_fast/lstm.c.j2, the reference template with `fast`): the gate products x_t w^T
and h r^T on the DSP extension, byte-identical to the reference (tinyc/ops/lstm_int8.py, TFLite's integer LSTM).

Each step sign-extends x_t and h once into halfword pairs (v0, v2), (v1, v3) per four values (the kernel
scratch after the gates and the cell state). The weights are re-laid out at compile time as rows of their first
multiple of four columns (word-aligned, so one LDR reads four) and a small tail table of the rest. Four rows at a
time: per four columns two loads of the pairs, then per row one LDR, SXTB16 and SXTB16 ROR 8 of the weights and
two SMLAD: 22 instructions per 16 multiply-accumulates. The integer sums are exact (int8 products, at most
(I + H) * 2^14 in magnitude), so the order of the additions does not matter; requantization, saturation and the
gate activations are the reference's, except that e^x on [-1/4, 0) (the Taylor series inside gemmlowp's
exp_on_negative_values) is read from a table of its values per input format (2^(13 - k) int16 entries for k
integer bits: 1 KB for the gates' sigmoid, 512 B for their tanh). Cores without DSP run plain loops over the
same tables."""
from __future__ import annotations

from ..ops import lstm_int8
from . import int8_smlad


def _split(k, i: int, label: str) -> tuple[str, str | None, int]:
    """Weights [4H, K] as a table of rows of their first K4 = K - K % 4 columns and a tail table (None if K4 = K)."""
    return int8_smlad.split_rows(k, k.tensor(i).data, f"int8 LSTM {label}")


def lstm(k):
    """The fast rule of the int8 LSTM, or None (inputs or units fewer than four: the reference kernel)."""
    B, T, I = k.in_shape(0)
    H = k.in_shape(2)[1]
    if I < 4 or H < 4 or k.work is None:
        return None
    v = lstm_int8.kernel_variables(k)
    v["wq"], v["wt"], v["I4"] = _split(k, 1, "input weights")
    v["rq"], v["rt"], v["H4"] = _split(k, 2, "recurrent weights")
    v.update(fast=True, expand_offset=lstm_int8.expand_offset(H, not k.node.attrs.get("cell_output")))
    for key in ("gate_exp", "gate_tanh_exp", "cell_tanh_exp"):     # the series of e^x on [-1/4, 0) as a table
        e = v[key]
        if e is not None:
            v[key] = dict(e, table=k.table(lstm_int8.exp_quarter_table(e["k"]), "int16",
                                           f"e^x on [-1/4, 0) in Q0.15, input Q{e['k']}.{15 - e['k']}"))
    return "lstm.c.j2", v, B * T * 4 * H * (I + H)
