"""A copy of a float model file with its weights rounded to float16 (round to nearest, ties to even), written by
the format's own library (onnx, Keras, TensorFlow's TFLite schema): the model `--weights float16` compiles, and the
one `tinyc verify --weights float16` runs in the reference runtime, so both see the same numbers.

The weights are the float32 constant tensors of rank 2 or more: the kernels of conv, dense, matmul and recurrent
layers, embedding tables. Biases, normalization parameters and scalars (rank 0 or 1) stay float32. A float16
TFLite model's weights are float16 already (its DEQUANTIZE is folded at import): the copy changes nothing."""
from __future__ import annotations

import os

import numpy as np

from ..errors import TinycError
from . import EXTENSIONS

HALF_MAX = 65504.0


def round_to_half(values: np.ndarray, what: str) -> np.ndarray:
    """float32 values -> the nearest float16 values (ties to even), as float32; refuses values beyond float16."""
    values = np.asarray(values, np.float32)
    finite = values[np.isfinite(values)]
    if finite.size and float(np.max(np.abs(finite))) > HALF_MAX + 16:    # (65,520 and up round to infinity)
        raise TinycError(f"weight '{what}' holds {float(np.max(np.abs(finite))):g}, beyond float16's range "
                         f"(+-{HALF_MAX:,.0f}); compile it without --weights float16")
    return values.astype(np.float16).astype(np.float32)


def _is_weight(shape) -> bool:
    return len(shape) >= 2


def rounded_model_file(path: str, out_dir: str) -> tuple[str, int]:
    """Write the rounded copy of `path` into `out_dir`; its path and how many weight tensors it rounded."""
    kind = EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if not os.path.isfile(path):
        raise TinycError(f"model file '{path}' does not exist")
    out = os.path.join(out_dir, "float16_weights" + (".keras" if kind == "keras" else os.path.splitext(path)[1]))
    rounders = {"onnx": _round_onnx, "tflite": _round_tflite, "keras": _round_keras}
    if kind not in rounders:
        raise TinycError(f"--weights float16: '{path}' is not a model file tinyc reads")
    return out, rounders[kind](path, out)


def _round_onnx(path: str, out: str) -> int:
    import onnx
    from onnx import numpy_helper
    try:
        model = onnx.load(path)
    except Exception as e:       # a corrupt file: the frontend says what is wrong when it loads the original
        raise TinycError(f"cannot read '{path}' as an ONNX model ({type(e).__name__})") from None
    count = 0

    def rounded(t):
        nonlocal count
        if t.data_type != onnx.TensorProto.FLOAT or not _is_weight(t.dims):
            return None
        count += 1
        return numpy_helper.from_array(round_to_half(numpy_helper.to_array(t), t.name), t.name)

    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for k, t in enumerate(g.initializer):
            r = rounded(t)
            if r is not None:
                g.initializer[k].CopyFrom(r)
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR and node.op_type == "Constant":
                    r = rounded(a.t)
                    if r is not None:
                        a.t.CopyFrom(r)
                graphs += [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
    onnx.save(model, out)
    return count


def _round_tflite(path: str, out: str) -> int:
    import flatbuffers
    from .tflite_import import IDENTIFIER, _schema
    S = _schema()
    with open(path, "rb") as f:
        data = f.read()
    try:
        model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(data, 0))
    except Exception as e:
        raise TinycError(f"cannot read '{path}' as a TFLite model ({type(e).__name__})") from None
    done = set()
    for sg in model.subgraphs or []:
        for t in sg.tensors or []:
            b = int(t.buffer)
            if (t.type != S.TensorType.FLOAT32 or t.shape is None or not _is_weight(t.shape) or b in done
                    or not 0 < b < len(model.buffers or []) or model.buffers[b].data is None
                    or len(model.buffers[b].data) == 0):
                continue
            values = np.frombuffer(bytes(bytearray(model.buffers[b].data)), "<f4")
            name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)
            model.buffers[b].data = np.frombuffer(round_to_half(values, name).astype("<f4").tobytes(), np.uint8)
            done.add(b)
    builder = flatbuffers.Builder(max(1024, len(data)))
    builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
    with open(out, "wb") as f:
        f.write(bytes(builder.Output()))
    return len(done)


def _round_keras(path: str, out: str) -> int:
    from ..keras_runtime import import_keras
    keras = import_keras()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise TinycError(f"cannot read '{path}' as a Keras model ({type(e).__name__})") from None
    count = 0
    for v in model.weights:
        if _is_weight(v.shape) and str(v.dtype) == "float32":
            v.assign(round_to_half(np.asarray(v.numpy()), v.path))
            count += 1
    model.save(out)
    return count
