"""Fast int8 SVDF kernels (tinyc/ops/svdf.py), byte-identical to the reference kernels (docs/fast-kernels.md,
"SVDF"):

- SvdfMemory: sum((x - z) * w) = sum(x * w) - z * sum(w), the second term a per-filter constant. On DSP cores the
  bytes of x and w are sign-extended in pairs by SXTB16 (bytes 0 and 2, then 1 and 3) and multiplied pairwise by
  SMLAD; elsewhere four products are summed in int32 per step. All sums are taken modulo 2^32, as the reference's
  uint32_t ones, so they agree whatever the sizes.
- SvdfTimeFilter: on DSP cores the int16 time weights and memory are already pairs: one 32-bit load of each, one
  SMLAD; elsewhere the reference loop.
- Requantization: the cheapest expression equal to TFLite's MultiplyByQuantizedMultiplier over every sum the
  weights allow (int8_fast_misc.requant_expr: one SMMULR and a shift when |sum| < 2^30), else tinyc_requantize.
"""
from __future__ import annotations

import numpy as np

from .gemm_pack import acc_bound
from .int8_fast_misc import requant_expr


def _wrap32(v: np.ndarray) -> np.ndarray:
    return ((np.asarray(v, np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int64)


def memory(k):
    """SvdfMemory with the input zero point folded: the reference template's variables, the per-filter
    -z * sum(w) table (None when z is 0) and the feature count rounded down to a multiple of 4."""
    from ..ops.svdf import memory_int8_kernel
    template, v, macs = memory_int8_kernel(k)
    w = k.tensor(1).data.astype(np.int64)
    folded = _wrap32(-v["in_zp"] * w.sum(axis=1))
    v.update(features4=v["features"] - v["features"] % 4,
             folded=k.table(folded, "int32", "SVDF: -input zero point x sum of each feature filter")
             if np.any(folded) else None,
             requant=requant_expr("acc", acc_bound(w, None, v["in_zp"]), v["mult"], v["shift"]))
    return "svdf_memory.c.j2", v, macs


def time(k):
    """SvdfTimeFilter on SMLAD (the reference template's variables; it is included for cores without DSP)."""
    from ..ops.svdf import time_int8_kernel
    template, v, macs = time_int8_kernel(k)
    w = np.abs(k.tensor(1).data.astype(np.int64)).reshape(v["units"], -1).sum(axis=1)
    bias = np.abs(k.tensor(2).data.astype(np.int64)) if v["bias"] else 0
    bound = int(np.max(32768 * w + bias))        # |memory| <= 2^15
    v.update(memory2=v["memory"] - v["memory"] % 2, requant=requant_expr("acc", bound, v["mult"], v["shift"]))
    return "svdf_time.c.j2", v, macs
