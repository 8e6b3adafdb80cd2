"""dequantize_hybrid (`--hybrid float`): a hybrid layer (float activations, int8 weights, tinyc/ops/hybrid.py)
becomes a float32 layer whose weights are the int8 weights dequantized at compile time, w[c] * scale[c] in float32
as TFLite's DEQUANTIZE computes it. The model then computes what the float model with those weights computes
(no on-the-fly input quantization), for users who want the float model's numbers; the weights take four bytes
each in flash instead of one. Without the option tinyc keeps TFLite's hybrid arithmetic (the default).
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph

CHOICES = ("tflite", "float")     # --hybrid: TFLite's hybrid kernels' arithmetic, or the weights dequantized


def dequantize_hybrid(g: Graph) -> Graph:
    """Every hybrid layer with its weights dequantized to float32 (and the `hybrid` attribute dropped)."""
    g = g.copy()
    for node in g.nodes:
        h = node.attrs.get("hybrid")
        if not h:
            continue
        w = g.tensors[node.inputs[1]]
        scales = np.asarray(h["scales"], np.float32).reshape((-1,) + (1,) * (w.data.ndim - 1))
        values = (w.data.astype(np.float32) * scales).astype(np.float32)
        node.inputs[1] = g.add_const(f"{w.name}_dequantized", values, "float32")
        del node.attrs["hybrid"]
    g.remove_unused_tensors()
    return g


def apply_hybrid_choice(g: Graph, choice: str, quantize: str | None = None) -> Graph:
    """The graph as `--hybrid CHOICE` compiles it: "tflite" keeps hybrid layers, "float" dequantizes them. A hybrid
    model is already quantized: tinyc does not quantize it again."""
    if choice not in CHOICES:
        raise TinycError(f"--hybrid {choice} is not supported; use {' or '.join(CHOICES)}")
    hybrid = [n for n in g.nodes if n.attrs.get("hybrid")]
    if hybrid and quantize is not None:
        raise TinycError(f"--quantize {quantize}: node '{hybrid[0].name}' is a hybrid layer (int8 weights) already; "
                         "compile the model as it is, or quantize its float original")
    return dequantize_hybrid(g) if choice == "float" and hybrid else g
