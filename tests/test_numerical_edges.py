"""int8 numerical edge cases against TFLite's reference kernels (the IR written as .tflite by tinyc's writer, as
`verify --quantize` does): saturation at the int8 limits, all-zero and constant inputs, extreme zero points,
very small and very large scales, softmax over equal logits; and the cases TFLite cannot run, refused in one
line."""
from __future__ import annotations

import numpy as np
import pytest

from tinyc.compiler import compile_graph
from tinyc.errors import TinycError
from tinyc.ir import Graph, Quant


def _q(scale, zp):
    return Quant(np.float32(scale), np.int64(zp))


def softmax_graph(in_scale: float, in_zp: int = 0, n: int = 10) -> Graph:
    g = Graph("softmax")
    g.add_tensor("x", (1, n), "int8", quant=_q(in_scale, in_zp))
    g.add_tensor("y", (1, n), "int8", quant=_q(1 / 256, -128))
    g.add_node("Softmax", ["x"], ["y"], axis=1, beta=1.0, name="softmax")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def test_softmax_whose_logits_span_nothing_is_refused():
    """Input scale x beta below 2^-26: TFLite's interpreter aborts the process on such a softmax (seen with a
    MobileNetV2 calibrated on inputs that faded to zero); tinyc says so instead of compiling it."""
    with pytest.raises(TinycError, match="2\\^-26"):
        compile_graph(softmax_graph(7.8e-9), "m")
    compile_graph(softmax_graph(2e-8), "m")
