"""A copy of a float model file with its weights rounded to float16 (round to nearest, ties to even), written by
the format's own library (onnx, Keras, TensorFlow's TFLite schema): the model `--weights float16` compiles, and the
one `tinyc verify --weights float16` runs in the reference runtime, so both see the same numbers.

The weights are the float32 constant tensors of rank 2 or more: the kernels of conv, dense, matmul and recurrent
layers, embedding tables. Biases, normalization parameters and scalars (rank 0 or 1) stay float32. A float16
TFLite model's weights are float16 already (its DEQUANTIZE is folded at import): the copy changes nothing.

A Keras BatchNormalization that tinyc folds into the Conv / Dense before it (passes/fold_batchnorm.py) is folded
into the copy's kernel before rounding, as TFLite's converter does for its float16 models: rounding the kernel
alone would leave tinyc a folded kernel float16 cannot hold, and the copy's BatchNormalization keeps only its
shift (a scale of exactly 1), so the kernel tinyc stores is the rounded one Keras runs. The same for the
Conv -> Mul(per-channel constant) that tf2onnx makes of a BatchNormalization (passes/fold_affine.py): the Mul's
constant becomes ones."""
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

    scaled = _fold_onnx_scales(model.graph)
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for k, t in enumerate(g.initializer):
            if g is model.graph and t.name in scaled:      # folded and rounded by _fold_onnx_scales
                count += 1
                continue
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


def _fold_onnx_scales(graph) -> set:
    """tf2onnx's BatchNormalization after a conv: Conv -> Mul(per-channel constant) -> Add. What tinyc's fold_affine
    folds (the Mul alone reads the Conv's output, which is no graph output; the constant [O,1,1] or [1,O,1,1]; W and
    B initializers read by that Conv only) is folded here first, as for Keras: W := float16(W * c), B := B * c, c :=
    ones, so the kernel tinyc stores is the rounded one onnxruntime runs. The names of the weights rounded."""
    from onnx import numpy_helper
    inits = {t.name: t for t in graph.initializer}
    readers: dict = {}
    for node in graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    outputs = {o.name for o in graph.output}
    done = set()
    for conv in graph.node:
        if conv.op_type != "Conv" or len(conv.output) != 1 or conv.output[0] in outputs:
            continue
        users = readers.get(conv.output[0], [])
        if len(users) != 1 or users[0].op_type != "Mul":
            continue
        mul = users[0]
        other = [i for i in mul.input if i != conv.output[0]]
        names = list(conv.input[1:3])
        if (len(other) != 1 or other[0] not in inits or any(n not in inits or len(readers.get(n, [])) != 1
                                                            for n in names) or len(readers.get(other[0], [])) != 1):
            continue
        w = numpy_helper.to_array(inits[names[0]])
        c = numpy_helper.to_array(inits[other[0]])
        if (w.dtype != np.float32 or c.dtype != np.float32 or w.ndim != 4 or c.ndim not in (3, 4)
                or c.shape[-3:] != (w.shape[0], 1, 1) or c.size != w.shape[0] or not np.all(np.isfinite(c))):
            continue
        scale = c.reshape(-1)
        inits[names[0]].CopyFrom(numpy_helper.from_array(
            round_to_half((w * scale.reshape(-1, 1, 1, 1)).astype(np.float32), names[0]), names[0]))
        if len(names) > 1:
            b = numpy_helper.to_array(inits[names[1]])
            inits[names[1]].CopyFrom(numpy_helper.from_array((b * scale).astype(np.float32), names[1]))
        inits[other[0]].CopyFrom(numpy_helper.from_array(np.ones_like(c), other[0]))
        done.update([names[0], other[0]])
    return done


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
    folded = {id(v) for layer, bn in _batchnorm_pairs(keras, model) for v in _fold_keras_batchnorm(layer, bn)}
    count = 0
    for v in model.weights:
        if _is_weight(v.shape) and str(v.dtype) == "float32":
            if id(v) not in folded:
                v.assign(round_to_half(np.asarray(v.numpy()), v.path))
            count += 1
    model.save(out)
    return count


# Keras layers whose output channels a following BatchNormalization scales: kernel attribute -> how its output
# channels lie on the kernel's axes (Conv2D [kh, kw, cin, cout], Conv1D [k, cin, cout], Dense [in, out]: the last;
# DepthwiseConv2D [kh, kw, cin, mult]: channel c * mult + m, the last two).
_SCALED = {"Conv2D": ("kernel", 1), "Conv1D": ("kernel", 1), "Dense": ("kernel", 1),
           "DepthwiseConv2D": ("kernel", 2)}


def _batchnorm_pairs(keras, model) -> list:
    """(layer, BatchNormalization) where the BatchNormalization over the last axis alone reads a linear Conv2D,
    Conv1D, DepthwiseConv2D or Dense of the model (each called once): what tinyc's fold_batchnorm folds."""
    def producer(t):
        history = getattr(t, "_keras_history", None)
        return history.operation if history is not None else None

    layers = [l for l in model.layers if len(getattr(l, "_inbound_nodes", ())) == 1]
    readers: dict = {}
    for l in layers:
        for t in keras.tree.flatten(l.input) if type(l).__name__ != "InputLayer" else ():
            readers.setdefault(id(producer(t)), []).append(l)
    outputs = {id(producer(t)) for t in keras.tree.flatten(model.outputs)}
    pairs = []
    for bn in layers:
        if type(bn).__name__ != "BatchNormalization" or bn.axis not in (-1, len(bn.input.shape) - 1) or not bn.center:
            continue
        layer = producer(bn.input)
        if (type(layer).__name__ in _SCALED and layer in layers and readers.get(id(layer)) == [bn]
                and id(layer) not in outputs and getattr(layer.activation, "__name__", "") == "linear"):
            pairs.append((layer, bn))
    return pairs


def _fold_keras_batchnorm(layer, bn) -> list:
    """As TFLite's converter does before rounding: the BatchNormalization's per-channel scale s = gamma /
    sqrt(var + eps) goes into the layer's kernel (rounded to float16 there) and bias (b * s); the BatchNormalization
    keeps its shift alone (gamma 1, mean 0, variance 1 - eps: a factor of exactly 1 in float32, so tinyc folds it
    without changing the rounded kernel). The variables set; [] where 1 - eps cannot give that factor."""
    eps = np.float32(bn.epsilon)
    unit = np.float32(np.float32(1.0) - eps)
    if np.float32(unit + eps) != np.float32(1.0) or np.float64(unit) + float(bn.epsilon) <= 0:
        return []
    attr, axes = _SCALED[type(layer).__name__]
    kernel = getattr(layer, attr)
    gamma = bn.gamma.numpy() if bn.scale else np.ones(bn.moving_mean.shape, np.float32)
    scale = gamma.astype(np.float64) / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + float(bn.epsilon))
    shift = bn.beta.numpy().astype(np.float64) - bn.moving_mean.numpy().astype(np.float64) * scale
    w = kernel.numpy()
    kernel.assign(round_to_half((w * scale.reshape(w.shape[-axes:])).astype(np.float32), kernel.path))
    done = [kernel]
    if layer.use_bias:
        layer.bias.assign((layer.bias.numpy() * scale).astype(np.float32))
        done.append(layer.bias)
    if bn.scale:
        bn.gamma.assign(np.ones(bn.gamma.shape, np.float32))
    bn.beta.assign(shift.astype(np.float32))
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, np.float32))
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, unit, np.float32))
    return done
