"""int8 matrix-vector products on the DSP extension's SMLAD, shared by the fast int8 LSTM (codegen/int8_lstm.py)
and the fast int8 GRU/RNN (ops/gru_rnn_int8.py): an int8 vector is sign-extended once into halfword pairs
(v0, v2), (v1, v3) per four values (templates/int8_fast/smlad_rows.j2, expand_pairs), and weights are re-laid out
at compile time as rows of their first multiple of four columns (word-aligned, so one LDR reads four) plus a tail
table of the rest; four rows at a time take per four columns one LDR, SXTB16 and SXTB16 ROR 8 of each row's weights
and two SMLAD (rows4). The sums are exact integers, so their order does not matter."""
from __future__ import annotations

import jinja2
import numpy as np

from ..resources import resource_dir

_MACROS = None


def split_rows(k, w, label: str) -> tuple[str, str | None, int]:
    """Weights [R, K] as a table of rows of their first K4 = K - K % 4 columns and a tail table (None if K4 = K)."""
    w = np.asarray(w, np.int8)
    k4 = w.shape[1] // 4 * 4
    head = k.table(np.ascontiguousarray(w[:, :k4]), "int8", f"{label}, columns 0..{k4 - 1} per row")
    tail = None
    if k4 < w.shape[1]:
        tail = k.table(np.ascontiguousarray(w[:, k4:]), "int8", f"{label}, columns {k4}.. per row")
    return head, tail, k4


def macros():
    """The macros of templates/int8_fast/smlad_rows.j2, for kernels that write their C in Python."""
    global _MACROS
    if _MACROS is None:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                                 trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                 undefined=jinja2.StrictUndefined, autoescape=False)
        _MACROS = env.get_template("int8_fast/smlad_rows.j2").module
    return _MACROS
