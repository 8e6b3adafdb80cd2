"""Weights stored in flash in a narrower form than the kernel computes in, widened where the kernel reads each one
(`--weights`): never a wide copy in SRAM.

A kernel rule opts in per input with `KernelContext.weight(i)`, which returns a `WeightArray`: the C array's name,
its element type and `load(e)`, the C expression of element `e`'s value in the kernel's arithmetic. Without a
`--weights` form (or for a constant the form cannot hold exactly) that is the constant itself, so a kernel written
with `weight(i)` compiles the same as before. Which constants a form holds is thus decided by the kernels that read
them: a constant also read by a kernel without `weight(i)` is emitted twice (each kernel gets its own array).

Forms: `float16` (float models: IEEE binary16 bits, runtime_c/tinyc_half.h widens them; a constant is stored so
only when every value is a float16 value, which `tinyc.frontends.rounded_weights` makes of a model's weights).
Another form (e.g. packed int4 for int8 models) is one more `WeightForm` in `FORMS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import TinycError


@dataclass(frozen=True)
class WeightForm:
    name: str                              # the --weights choice
    family: str                            # the kernel family whose constants it holds ("float", "int8")
    source_dtype: str                      # IR dtype of the constants it holds
    stored_dtype: str                      # IR dtype of the stored array's elements (C type via literals.c_type)
    header: str                            # runtime_c header defining the widening
    holds: Callable[[np.ndarray], bool]    # the form represents these values exactly
    store: Callable[[np.ndarray], np.ndarray]   # the values -> the stored elements
    widen: str                             # C: "%s" -> the value of stored element %s
    dot: str | None = None                 # C function (acc, const float *x, const stored *w, n) -> acc + x . w


def _is_half(data: np.ndarray) -> bool:
    data = np.asarray(data, np.float32)
    with np.errstate(over="ignore"):
        return bool(np.array_equal(data.astype(np.float16).astype(np.float32), data))


def _half_bits(data: np.ndarray) -> np.ndarray:
    return np.asarray(data, np.float32).astype(np.float16).view(np.uint16)


FLOAT16 = WeightForm("float16", "float", "float32", "uint16", "tinyc_half.h", _is_half, _half_bits,
                     "tinyc_half_to_float(%s)", "tinyc_dot_half")

FORMS = {f.name: f for f in (FLOAT16,)}
# --weights choices that are no stored form but weights tinyc's quantizer makes (`--quantize int8 --weights int4`:
# per-channel symmetric int4, which the int8 kernels keep packed two per byte themselves, ops/int8_common.py)
QUANTIZED_WEIGHTS = ("int4",)


def weight_choices() -> list:
    """Every --weights choice."""
    return list(FORMS) + list(QUANTIZED_WEIGHTS)


def weight_form(name: str | None) -> WeightForm | None:
    """The form named by --weights (None: every constant as the model has it, or as the quantizer makes it)."""
    if name is None or name in QUANTIZED_WEIGHTS:
        return None
    if name not in FORMS:
        raise TinycError(f"--weights {name} is not supported; use {' or '.join(weight_choices())}")
    return FORMS[name]


@dataclass(frozen=True)
class WeightArray:
    """A weight input as a kernel reads it: `name[i]` of C type `ctype`, whose value is `load("name[i]")`."""
    name: str
    ctype: str
    form: WeightForm | None = None

    def load(self, element: str) -> str:
        return self.form.widen % element if self.form is not None else element

    def dot(self, acc: str, x: str, w: str, n: int, i: str = "i") -> str:
        """A C statement adding x[0..n) . w[0..n) to `acc` in index order, `w` a pointer into this array: the plain
        loop (counter `i`), or the form's dot-product function (e.g. two float16 weights per load)."""
        if self.form is not None and self.form.dot is not None and n > 1:
            return f"{acc} = {self.form.dot}({acc}, {x}, {w}, {n});"
        if self.form is not None and n == 1:      # (a depthwise tap: no pair to load)
            return f"{acc} += {x}[0] * {self.load(f'{w}[0]')};"
        return f"for (int {i} = 0; {i} < {n}; ++{i}) {acc} += {x}[{i}] * {self.load(f'{w}[{i}]')};"

    def __str__(self) -> str:
        return self.name
