"""Frontends: model files -> IR graph. `load_model` picks one by file extension."""
from __future__ import annotations

import os

from ..errors import TinycError
from ..ir import Graph

EXTENSIONS = {".onnx": "onnx", ".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".tflite": "tflite"}


def load_model(path: str, input_shapes=None, io_layout: str = "nchw", bind: dict | None = None,
               state: dict | None = None) -> Graph:
    """Read `path` into an IR graph. `input_shapes`: one shape per input in the model's own layout (or None).
    `bind` (ONNX): {graph input name: array}, inputs made constants before import (weights, bounds, shapes that
    the model takes as inputs); `input_shapes` then counts the remaining inputs only. `state` (ONNX): {graph input
    name: graph output name}, streaming state pairs (docs/streaming-state.md)."""
    if not os.path.isfile(path):
        raise TinycError(f"model file '{path}' does not exist")
    ext = os.path.splitext(path)[1].lower()
    kind = EXTENSIONS.get(ext)
    if kind is None:
        raise TinycError(f"unknown model file extension '{ext or path}'; tinyc reads "
                         f"{', '.join(sorted(EXTENSIONS))}")
    if io_layout not in ("nchw", "nhwc"):
        raise TinycError(f"--io-layout must be nchw or nhwc, not '{io_layout}'")
    if bind and kind != "onnx":
        raise TinycError(f"binding graph inputs (--bind) applies to ONNX models; '{path}' is a {kind} model, "
                         "whose weights are constants already")
    if state and kind != "onnx":
        raise TinycError(f"--state pairs a graph input with a graph output of an ONNX model; '{path}' is a {kind} "
                         "model, whose state the model itself declares (TFLite variables, Keras stateful=True)")
    if kind == "onnx":
        from .onnx_import import load_onnx
        return load_onnx(path, input_shapes, io_layout, bind, state)
    if kind == "tflite":
        from .tflite_import import load_tflite
        return load_tflite(path, input_shapes)
    from .keras_import import load_keras
    return load_keras(path, input_shapes)


def supported_ops() -> dict:
    """{frontend: sorted op names}, for `tinyc ops`."""
    from .onnx_import import CONST_ONLY_OPS
    from .onnx_ops import ONNX_OPS
    ops = {"onnx": sorted(ONNX_OPS),
           "onnx (constant sub-graphs only, folded at compile time)": sorted(CONST_ONLY_OPS - set(ONNX_OPS))}
    from .tflite_ops import FOLD_OPS, TFLITE_OPS
    ops["tflite"] = sorted(TFLITE_OPS)
    ops["tflite (constant sub-graphs only, folded at compile time)"] = sorted(set(FOLD_OPS) - set(TFLITE_OPS))
    from ..ops import REGISTRY
    from ..ops.activation import INT8_FUNCTIONS
    ops["int8 kernels (IR ops; activations: " + ", ".join(sorted(INT8_FUNCTIONS)) + ")"] = \
        sorted(n for n, d in REGISTRY.items() if d.int8_kernel is not None)
    try:
        from .keras_import import SUPPORTED_LAYERS
        ops["keras"] = sorted(SUPPORTED_LAYERS)
    except ImportError:
        pass
    return ops
