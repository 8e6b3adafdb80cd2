"""The oracles: run a model in its reference runtime (onnxruntime for .onnx, Keras for .keras/.h5, TFLite's
reference kernels for .tflite),
optionally exposing intermediate tensors for per-layer comparison."""
from __future__ import annotations

import os
import warnings

import numpy as np

from .errors import TinycError


def _onnx_session(path: str, extra_outputs=()):
    import onnx
    import onnxruntime as ort
    model = onnx.load(path)
    n_outputs = len(model.graph.output)
    if extra_outputs:
        known = {o.name for o in model.graph.output}
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {vi.name: vi for vi in inferred.graph.value_info}
        for name in extra_outputs:
            if name not in known and name in types:
                model.graph.output.append(types[name])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # keep every intermediate
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess, n_outputs


def run_onnx(path: str, samples: list, intermediates=()) -> tuple[list, list]:
    """samples: per sample a list of input arrays (ONNX layout, batch 1). Returns (outputs per sample,
    {name: array} per sample for the requested intermediates that onnxruntime could expose)."""
    sess, n_model_outputs = _onnx_session(path, intermediates)
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    outs, inters = [], []
    for sample in samples:
        res = sess.run(None, dict(zip(in_names, sample)))
        outs.append(res[:n_model_outputs])
        inters.append(dict(zip(out_names, res)))
    return outs, inters


def run_keras(path: str, samples: list, intermediates=()) -> tuple[list, list]:
    from .keras_runtime import import_keras
    keras = import_keras()
    model = keras.models.load_model(path, compile=False)
    names = [n for n in intermediates if _has_layer(model, n)]
    probe = keras.Model(_keras_args(model.inputs), [model.get_layer(n).output for n in names]) if names else None
    outs, inters = [], []
    for sample in samples:
        res = model(_keras_args(sample), training=False)
        res = res if isinstance(res, (list, tuple)) else [res]
        outs.append([np.asarray(r) for r in res])
        if probe is not None:
            vals = probe(_keras_args(sample), training=False)
            vals = vals if isinstance(vals, (list, tuple)) else [vals]
            inters.append({n: np.asarray(v) for n, v in zip(names, vals)})
        else:
            inters.append({})
    return outs, inters


def run_tflite(path: str, samples: list, intermediates=()) -> tuple[list, list]:
    """The TFLite interpreter with its reference kernels (BUILTIN_REF) and every intermediate kept, so tensors
    named in `intermediates` (TFLite tensor names) can be read after each run."""
    from .keras_runtime import import_keras
    import_keras()   # imports TensorFlow quietly
    import tensorflow as tf
    with warnings.catch_warnings():   # "tf.lite.Interpreter is deprecated": it is still TF's reference
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_path=path,
                                     experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
                                     experimental_preserve_all_tensors=True)
    ins = interp.get_input_details()
    if samples:
        resized = False
        for d, arr in zip(ins, samples[0]):
            if tuple(d["shape"]) != tuple(np.shape(arr)):
                interp.resize_tensor_input(d["index"], list(np.shape(arr)))
                resized = True
        if resized:
            interp.allocate_tensors()
    interp.allocate_tensors()
    index = {}
    for d in interp.get_tensor_details():
        index.setdefault(d["name"], d["index"])
    names = [n for n in intermediates if n in index]
    out_idx = [d["index"] for d in interp.get_output_details()]
    outs, inters = [], []
    for sample in samples:
        for d, arr in zip(ins, sample):
            interp.set_tensor(d["index"], np.asarray(arr, dtype=d["dtype"]))
        interp.invoke()
        outs.append([np.array(interp.get_tensor(i)) for i in out_idx])
        vals = {}
        for n in names:
            try:
                vals[n] = np.array(interp.get_tensor(index[n]))
            except ValueError:   # a tensor the interpreter does not keep (e.g. an unused one)
                pass
        inters.append(vals)
    return outs, inters


def _keras_args(items):
    """Keras wants a bare tensor for one input and a list for several (matching how the model was built)."""
    return items[0] if len(items) == 1 else list(items)


def _has_layer(model, name):
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def run_reference(path: str, samples: list, intermediates=()) -> tuple[list, list]:
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".onnx":
            return run_onnx(path, samples, intermediates)
        if ext == ".tflite":
            return run_tflite(path, samples, intermediates)
        return run_keras(path, samples, intermediates)
    except TinycError:
        raise
    except Exception as e:
        raise TinycError(f"the reference runtime failed on '{path}': {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")
