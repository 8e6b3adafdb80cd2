"""Activation functions as data: one row per function, its C expression and its numpy meaning.

An activation is either a standalone `Activation` node or fused into Conv2D/Dense/Add as the `activation`
attribute; both are the dict `{"fn": name, **params}`. The C expression computes from the float `x`.
Each function means what its framework defines; frontends translate (e.g. Keras 3 hard_sigmoid is
relu6(x + 3) / 6, i.e. hard_sigmoid with alpha 1/6, beta 0.5; ONNX HardSigmoid passes its own alpha/beta).
"""
import numpy as np

from .codegen.literals import c_float as _f
from .errors import TinycError


# name: (C expression with {x} and params, numpy function)
ACTIVATIONS = {
    "relu": ("({x} > 0.0f ? {x} : 0.0f)", lambda x, p: np.maximum(x, 0)),
    "clip": ("({x} < {lo} ? {lo} : ({x} > {hi} ? {hi} : {x}))",
             lambda x, p: np.clip(x, p["lo"], p["hi"])),
    "leaky_relu": ("({x} >= 0.0f ? {x} : {alpha} * {x})", lambda x, p: np.where(x >= 0, x, p["alpha"] * x)),
    # Stable for any x: expf only ever sees a non-positive argument.
    "sigmoid": ("tinyc_sigmoidf({x})", lambda x, p: 1 / (1 + np.exp(-x))),
    "tanh": ("tanhf({x})", lambda x, p: np.tanh(x)),
    "hard_sigmoid": ("tinyc_clampf({alpha} * {x} + {beta}, 0.0f, 1.0f)",
                     lambda x, p: np.clip(p["alpha"] * x + p["beta"], 0, 1)),
    "hard_swish": ("({x} * tinyc_clampf({x} * (1.0f / 6.0f) + 0.5f, 0.0f, 1.0f))",
                   lambda x, p: x * np.clip(x / 6 + 0.5, 0, 1)),
    "swish": ("({x} * tinyc_sigmoidf({x}))", lambda x, p: x / (1 + np.exp(-x))),
    "elu": ("({x} > 0.0f ? {x} : {alpha} * (expf({x}) - 1.0f))",
            lambda x, p: np.where(x > 0, x, p["alpha"] * (np.exp(np.minimum(x, 0)) - 1))),
}


def relu6() -> dict:
    return {"fn": "clip", "lo": 0.0, "hi": 6.0}


def c_expr(act: dict | None, x: str) -> str:
    """The C expression applying `act` to the C expression `x` (which must be side-effect free)."""
    if act is None:
        return x
    if act["fn"] not in ACTIVATIONS:
        raise TinycError(f"activation '{act['fn']}' is not supported; run `tinyc ops` for the list")
    params = {k: _f(v) for k, v in act.items() if k != "fn"}
    return ACTIVATIONS[act["fn"]][0].format(x=x, **params)


def apply(act: dict | None, x: np.ndarray) -> np.ndarray:
    """numpy meaning of `act`, for pass tests and constant folding."""
    if act is None:
        return x
    return ACTIVATIONS[act["fn"]][1](x, act).astype(x.dtype)
