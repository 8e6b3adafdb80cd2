"""Activation functions as data: one row per function, its C expression and its numpy meaning.

An activation is either a standalone `Activation` node or fused into Conv2D/Dense/Add as the `activation`
attribute; both are the dict `{"fn": name, **params}`. The C expression computes from the float `x` (a plain
variable: expressions may read it several times) and uses only C99 <math.h>. Each function means what its
framework defines; frontends translate (e.g. Keras 3 hard_sigmoid is relu6(x + 3) / 6, i.e. hard_sigmoid with
alpha 1/6, beta 0.5; ONNX HardSigmoid passes its own alpha/beta). Every unary elementwise op of the frontends
(ONNX Abs..Tanh, TFLite ABS..SQUARE, Keras activations) is a row here: it then fuses into the op before it and
is evaluated by the interpreter like any other.

Numerically stable for any float input: no expression overflows where the function's value is finite (expf
only ever sees an argument whose result is used: softplus, mish, sigmoid, elu, selu, celu take the
non-overflowing branch), so large |x| gives the limit, never inf/inf or inf - inf.
"""
import math

import numpy as np

from .codegen.literals import c_float as _f
from .errors import TinycError

# softplus(x) = log(1 + e^x) for any x: max(x, 0) + log1p(e^-|x|)
_SOFTPLUS = "(({x} > 0.0f ? {x} : 0.0f) + log1pf(expf(-fabsf({x}))))"
_erf = np.frompyfunc(math.erf, 1, 1)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _keras_relu(x, p):
    """Keras 3 ReLU(negative_slope, max_value, threshold >= 0): (x > t ? min(x, hi) : 0) - slope * max(t - x, 0)."""
    t = p["threshold"]
    return np.where(x > t, np.minimum(x, p["hi"]), 0.0) - p["slope"] * np.maximum(t - x, 0.0)


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
    # ONNX Selu / Keras selu: gamma * (x > 0 ? x : alpha * (e^x - 1))
    "selu": ("({gamma} * ({x} > 0.0f ? {x} : {alpha} * (expf({x}) - 1.0f)))",
             lambda x, p: p["gamma"] * np.where(x > 0, x, p["alpha"] * (np.exp(np.minimum(x, 0)) - 1))),
    # ONNX Celu (alpha > 0): max(0, x) + min(0, alpha * (e^(x/alpha) - 1))
    "celu": ("({x} > 0.0f ? {x} : {alpha} * (expf({x} / {alpha}) - 1.0f))",
             lambda x, p: np.maximum(x, 0) + np.minimum(0, p["alpha"] * (np.exp(np.minimum(x, 0) / p["alpha"]) - 1))),
    "thresholded_relu": ("({x} > {alpha} ? {x} : 0.0f)", lambda x, p: np.where(x > p["alpha"], x, 0.0)),
    # ONNX's recurrent-op activations Affine (alpha * x + beta) and ScaledTanh (alpha * tanh(beta * x))
    "affine": ("({alpha} * {x} + {beta})", lambda x, p: p["alpha"] * x + p["beta"]),
    "scaled_tanh": ("({alpha} * tanhf({beta} * {x}))", lambda x, p: p["alpha"] * np.tanh(p["beta"] * x)),
    "keras_relu": ("(({x} > {threshold} ? ({x} < {hi} ? {x} : {hi}) : 0.0f) - "
                   "{slope} * ({threshold} - {x} > 0.0f ? {threshold} - {x} : 0.0f))", _keras_relu),
    # ONNX Shrink: x < -lambd ? x + bias : (x > lambd ? x - bias : 0) (Keras hard_shrink / soft_shrink)
    "shrink": ("({x} < -({lambd}) ? {x} + {bias} : ({x} > {lambd} ? {x} - {bias} : 0.0f))",
               lambda x, p: np.where(x < -p["lambd"], x + p["bias"], np.where(x > p["lambd"], x - p["bias"], 0.0))),
    "softplus": (_SOFTPLUS, lambda x, p: _softplus(x)),
    "log_sigmoid": ("(-" + _SOFTPLUS.replace("{x}", "(-{x})") + ")", lambda x, p: -_softplus(-x)),
    "softsign": ("({x} / (1.0f + fabsf({x})))", lambda x, p: x / (1 + np.abs(x))),
    "mish": ("({x} * tanhf(" + _SOFTPLUS + "))", lambda x, p: x * np.tanh(_softplus(x))),
    "tanh_shrink": ("({x} - tanhf({x}))", lambda x, p: x - np.tanh(x)),
    # GELU: x * Phi(x) (ONNX approximate="none", TFLite GELU, Keras gelu), and its tanh approximation
    "gelu": ("(0.5f * {x} * (1.0f + erff({x} * 0.707106781f)))",
             lambda x, p: 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(np.float64))),
    "gelu_tanh": ("(0.5f * {x} * (1.0f + tanhf(0.797884561f * ({x} + 0.044715f * {x} * {x} * {x}))))",
                  lambda x, p: _gelu_tanh(x)),
    # Plain math functions (ONNX's unary ops, TFLite's, Keras 'exponential').
    "abs": ("fabsf({x})", lambda x, p: np.abs(x)),
    "neg": ("(-{x})", lambda x, p: -x),
    "sign": ("({x} > 0.0f ? 1.0f : ({x} < 0.0f ? -1.0f : {x}))", lambda x, p: np.sign(x)),
    "reciprocal": ("(1.0f / {x})", lambda x, p: 1 / x),
    "square": ("({x} * {x})", lambda x, p: x * x),
    "sqrt": ("sqrtf({x})", lambda x, p: np.sqrt(x)),
    "rsqrt": ("(1.0f / sqrtf({x}))", lambda x, p: 1 / np.sqrt(x)),
    "exp": ("expf({x})", lambda x, p: np.exp(x)),
    "log": ("logf({x})", lambda x, p: np.log(x)),
    "erf": ("erff({x})", lambda x, p: _erf(x).astype(np.float64)),
    "floor": ("floorf({x})", lambda x, p: np.floor(x)),
    "ceil": ("ceilf({x})", lambda x, p: np.ceil(x)),
    # Half to even (ONNX Round, TFLite ROUND): rintf in the default rounding mode, which tinyc never changes.
    "round": ("rintf({x})", lambda x, p: np.round(x)),
    "sin": ("sinf({x})", lambda x, p: np.sin(x)),
    "cos": ("cosf({x})", lambda x, p: np.cos(x)),
    "tan": ("tanf({x})", lambda x, p: np.tan(x)),
    "asin": ("asinf({x})", lambda x, p: np.arcsin(x)),
    "acos": ("acosf({x})", lambda x, p: np.arccos(x)),
    "atan": ("atanf({x})", lambda x, p: np.arctan(x)),
    "sinh": ("sinhf({x})", lambda x, p: np.sinh(x)),
    "cosh": ("coshf({x})", lambda x, p: np.cosh(x)),
    "asinh": ("asinhf({x})", lambda x, p: np.arcsinh(x)),
    "acosh": ("acoshf({x})", lambda x, p: np.arccosh(x)),
    "atanh": ("atanhf({x})", lambda x, p: np.arctanh(x)),
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
    with np.errstate(all="ignore"):   # log(-1), 1/0, exp(1000): NaN / inf, as the C computes
        return np.asarray(ACTIVATIONS[act["fn"]][1](x, act)).astype(x.dtype)
