"""BatchNorm: inference-mode batch normalization over the last axis. Frontends emit it; passes fold it into the
conv before it (fold_batchnorm) or turn it into a ScaleShift (fold_affine), so no kernel is needed."""
from __future__ import annotations

import numpy as np

from .opdef import OpDef


def evaluate(a, ins):
    x, gamma, beta, mean, var = ins
    return (x - mean) / np.sqrt(var + a["epsilon"]) * gamma + beta


DEFINITIONS = (OpDef(
    "BatchNorm", "x[...,C], gamma, beta, mean, var  [epsilon]  (only before passes: folded away)",
    evaluate, None, None, None, None, None, memory=None, quantize=None),)
