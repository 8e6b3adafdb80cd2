"""The oracles: run a model in its reference runtime (onnxruntime for .onnx, or onnx's reference evaluator for an
ONNX model on 4- or 2-bit integers; Keras for .keras/.h5, TFLite's reference kernels for .tflite), optionally
exposing intermediate tensors for per-layer comparison.

A .tflite model that TFLite's interpreter refuses to load or allocate (e.g. TFLite Micro's person_detect.tflite:
per-axis `quantized_dimension` 3 on single-scale tensors of rank < 4, which TFLite rejects and TFLite Micro
ignores) can be run by TFLite Micro's Python interpreter instead (`run_reference(..., fallback=True)`, used by
`tinyc verify`, which reports the oracle). Only those loading/allocation errors fall back; a failure while
running does not."""
from __future__ import annotations

import importlib.metadata
import os
import re
import struct
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


def run_onnx(path: str, samples: list, intermediates=(), state: dict | None = None,
             initial: dict | None = None) -> tuple[list, list]:
    """samples: per sample a list of input arrays (ONNX layout, batch 1). Returns (outputs per sample,
    {name: array} per sample for the requested intermediates that onnxruntime could expose). `state`: {graph
    input: graph output} streaming pairs; the samples are then frames of one stream: each state input starts at
    `initial[input]` (default: zeros, or its initializer) and is fed the paired output of the frame before, and
    the samples hold the other inputs only."""
    state = state or {}
    sess, n_model_outputs = _onnx_session(path, intermediates)
    inputs = {i.name: i for i in sess.get_inputs()}
    in_names = [n for n in inputs if n not in state]
    out_names = [o.name for o in sess.get_outputs()]
    # zeros at first, but a state input with an initializer (not fed: its initializer applies to the first frame;
    # a dynamic first dimension is 1, as tinyc reads it)
    carried = {n: np.zeros([d if isinstance(d, int) else 1 for d in inputs[n].shape], _ORT_TYPES[inputs[n].type])
               for n in state if n in inputs}
    carried.update({n: v for n, v in (initial or {}).items() if n in state})
    outs, inters = [], []
    for sample in samples:
        res = sess.run(None, {**dict(zip(in_names, sample)), **carried})
        values = dict(zip(out_names, res))
        carried = {n: values[o] for n, o in state.items()}
        outs.append(res[:n_model_outputs])
        inters.append(values)
    return outs, inters


# onnxruntime's type strings of the state inputs it starts at zeros (tensor types tinyc's runtime tensors have)
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
              "tensor(int32)": np.int32, "tensor(uint32)": np.uint32, "tensor(int64)": np.int64,
              "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_}


def computes_on_sub_byte_integers(path: str) -> bool:
    """Whether an ONNX model takes, holds, computes or returns 4- or 2-bit integers (INT4, UINT4, INT2, UINT2).
    onnxruntime is no oracle for those: its Python API can neither take nor return them, and its Cast from float
    to them rounds and wraps, where ONNX's reference implementation truncates and gives 0 out of range."""
    import onnx
    from onnx import TensorProto
    sub_byte = {TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2}
    model = onnx.load(path)
    graph = onnx.shape_inference.infer_shapes(model).graph
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    types = {vi.type.tensor_type.elem_type for vi in values if vi.type.HasField("tensor_type")}
    return bool((types | {t.data_type for t in graph.initializer}) & sub_byte)


def run_onnx_reference(path: str, samples: list, intermediates=()) -> tuple[list, list]:
    """As `run_onnx`, with onnx's reference evaluator (the definition of every op) instead of onnxruntime."""
    import onnx
    from onnx.reference import ReferenceEvaluator
    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer}
    in_names = [i.name for i in model.graph.input if i.name not in inits]
    out_names = [o.name for o in model.graph.output]
    evaluator = ReferenceEvaluator(model)
    outs, inters = [], []
    for sample in samples:
        results = evaluator.run(None, dict(zip(in_names, sample)), intermediate=True)
        outs.append([results[n] for n in out_names])
        inters.append({n: results[n] for n in intermediates if n in results})
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


# TFLite Micro's Python interpreter (PyPI `tflite-micro`, dev builds only: pinned in pyproject.toml)
TFLM_PACKAGE = "tflite-micro==0.dev20261023182759"


class TFLiteRejected(TinycError):
    """TFLite's interpreter refused to load or allocate a model (`reason`: its message)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"TFLite's interpreter rejected '{path}': {reason}")
        self.reason = " ".join(reason.split())


def _tf_message(e: Exception) -> str:
    """TFLite's error reporter concatenates its messages without a separator ("...Was 3.Tensor 26 has invalid
    quantization parameters.quantized_dimension must ...") and repeats them per tensor: the first two, spaced."""
    text = " ".join(str(e).split()) or type(e).__name__
    parts = re.split(r"(?<=[.)])(?=[A-Z])|(?<=[a-z]\.)(?=[a-z_]+ )", text)
    text = " ".join(parts[:2]) + (" ..." if len(parts) > 2 else "")
    return text if len(text) <= 240 else text[:237] + "..."


# Operators BUILTIN_REF registers with the same kernel as TFLite's default resolver but for fewer versions:
# lite/kernels/register_ref.cc adds Register_TILE() for versions 1-2, register.cc the same kernel for 1-3, and
# the converter writes an int8 TILE (Keras UpSampling2D nearest) as version 3, which kernels/tile.cc runs as a copy;
# the same for REVERSE_V2 (Register_REVERSE_V2() for versions 1-2 there, 1-3 in register.cc; the converter's int8
# Bidirectional LSTM has version 3), a copy in kernels/reverse.cc whatever the type.
REF_MAX_VERSION = {"TILE": 2, "REVERSE_V2": 2}


def _ref_loadable(path: str) -> bytes | None:
    """The model's bytes with every operator code of REF_MAX_VERSION above its version there lowered to it (a
    patch of the version field in place: the same kernel runs), or None when none is."""
    from .frontends.tflite_import import _enum_names, _schema
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    S = _schema()
    codes = {code: REF_MAX_VERSION[name] for code, name in _enum_names(S.BuiltinOperator).items()
             if name in REF_MAX_VERSION}
    patched = False
    try:
        model = S.Model.GetRootAs(data, 0)
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            top = codes.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()))
            field = oc._tab.Offset(8)            # OperatorCode.version (absent: the default, 1)
            if top is not None and field and oc.Version() > top:
                struct.pack_into("<i", data, oc._tab.Pos + field, top)
                patched = True
    except Exception:   # a malformed file: TFLite's own loader says what is wrong with it
        return None
    return bytes(data) if patched else None


def _tflite_interpreter(path: str, samples: list):
    """TFLite's interpreter on `path` with its reference kernels, inputs resized to the samples' shapes and
    tensors allocated (an operator of REF_MAX_VERSION at a newer version is loaded as that version). Its load and
    allocation errors (ValueError/RuntimeError from the constructor, resize_tensor_input and allocate_tensors)
    raise TFLiteRejected; nothing else is caught here."""
    from .keras_runtime import import_keras
    import_keras()   # imports TensorFlow quietly
    import tensorflow as tf
    content = _ref_loadable(path)
    source = dict(model_path=path) if content is None else dict(model_content=content)
    try:
        with warnings.catch_warnings():   # "tf.lite.Interpreter is deprecated": it is still TF's reference
            warnings.simplefilter("ignore")
            interp = tf.lite.Interpreter(**source,
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
    except (ValueError, RuntimeError) as e:
        raise TFLiteRejected(path, _tf_message(e)) from None
    return interp, ins


def run_tflite(path: str, samples: list, intermediates=(), carry_state: bool = False) -> tuple[list, list]:
    """The TFLite interpreter with its reference kernels (BUILTIN_REF) and every intermediate kept, so tensors
    named in `intermediates` (TFLite tensor names) can be read after each run. `carry_state`: the samples are
    frames of one stream, its variable tensors carried from one to the next (as the C carries the state tinyc
    made of them); otherwise each sample starts from their initial values. Raises TFLiteRejected when TFLite
    cannot load or allocate the model."""
    interp, ins = _tflite_interpreter(path, samples)
    index = {}
    for d in interp.get_tensor_details():
        index.setdefault(d["name"], d["index"])
    names = [n for n in intermediates if n in index]
    out_idx = [d["index"] for d in interp.get_output_details()]
    outs, inters = [], []
    for sample in samples:
        if not carry_state:
            # each sample is one inference from the initial state: TFLite's variable tensors (an LSTM's h and c)
            # would otherwise carry the previous sample's final state into this one
            interp.reset_all_variables()
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


def tflm_version() -> str | None:
    try:
        return importlib.metadata.version("tflite-micro")
    except importlib.metadata.PackageNotFoundError:
        return None


def _tflm_arena_bytes(model, data: bytes) -> int:
    """Room for every tensor at once (kPreserveAllTensors gives each its own bytes), twice over for the
    interpreter's own structures and kernel scratch, plus the model size and a margin."""
    from .frontends.tflite_import import _enum_names, _schema
    names = _enum_names(_schema().TensorType)
    total = 0
    for t in model.subgraphs[0].tensors:
        shape = [max(int(d), 1) for d in (t.shape if t.shape is not None else ())]
        try:   # TensorType names are NumPy's in capitals (FLOAT32, INT8, BOOL, ...); others: 8 bytes to be safe
            itemsize = np.dtype(names.get(t.type, "").lower()).itemsize
        except TypeError:
            itemsize = 8
        total += int(np.prod(shape, dtype=np.int64)) * itemsize
    return 2 * total + len(data) + (1 << 20)


def run_tflite_micro(path: str, samples: list, intermediates=()) -> tuple[list, list]:
    """TFLite Micro's Python interpreter (its reference kernels) on `path`, every tensor preserved so those named
    in `intermediates` can be read after each run. Samples must have the model's own input shapes (TFLite Micro
    does not resize)."""
    try:
        from tflite_micro import runtime as tflm
    except ImportError:
        raise TinycError(f"TFLite Micro's interpreter is not installed; pip install '{TFLM_PACKAGE}'") from None
    from .frontends.tflite_import import _read, _s, _schema
    data, model = _read(_schema(), path)
    sg = model.subgraphs[0]
    try:
        interp = tflm.Interpreter.from_bytes(data, arena_size=_tflm_arena_bytes(model, data),
                                             intrepreter_config=tflm.InterpreterConfig.kPreserveAllTensors)
    except Exception as e:   # its C++ errors arrive as RuntimeError/ValueError with the reporter's text
        raise TinycError(f"TFLite Micro's interpreter rejected it as well: {_tf_message(e)}") from None
    index = {}
    for i, t in enumerate(sg.tensors):
        index.setdefault(_s(t.name), i)
    names = [n for n in intermediates if n in index]
    n_out = len(sg.outputs if sg.outputs is not None else ())
    details = [interp.get_input_details(k) for k in range(len(sg.inputs if sg.inputs is not None else ()))]
    outs, inters = [], []
    for sample in samples:
        for k, (d, arr) in enumerate(zip(details, sample)):
            if tuple(int(v) for v in d["shape"]) != tuple(np.shape(arr)):
                raise TinycError(f"TFLite Micro cannot resize input {k} from {list(d['shape'])} to "
                                 f"{list(np.shape(arr))}")
            interp.set_input(np.ascontiguousarray(arr, dtype=d["dtype"]), k)
        interp.invoke()
        outs.append([np.array(interp.get_output(k)) for k in range(n_out)])
        inters.append({n: np.array(interp.GetTensor(index[n], 0)["tensor_data"]) for n in names})
    return outs, inters


ORACLES = {".onnx": "onnxruntime", ".tflite": "tflite"}   # others: "keras"


def run_reference(path: str, samples: list, intermediates=(), fallback: bool = False,
                  info: dict | None = None, state: dict | None = None,
                  carry_state: bool = False, initial: dict | None = None) -> tuple[list, list]:
    """The model's reference runtime on `samples`. `fallback`: a .tflite model that TFLite's interpreter rejects
    at load/allocation runs in TFLite Micro's interpreter instead. `info` (a dict) receives "oracle" (onnxruntime,
    keras, tflite or tflite-micro) and, after a fallback, "oracle_reason". `state` (ONNX): streaming state pairs
    {graph input: graph output}, carried from sample to sample (`run_onnx`). The other runtimes carry a model's
    own state by themselves when the samples run in order on one interpreter: Keras's stateful layers, and
    TFLite's variables with `carry_state` (the compiled graph has state; otherwise TFLite resets them before each
    sample)."""
    ext = os.path.splitext(path)[1].lower()
    info = {} if info is None else info
    info["oracle"] = ORACLES.get(ext, "keras")
    try:
        if ext == ".onnx":
            if computes_on_sub_byte_integers(path):
                if state:
                    raise TinycError("--state with 4- or 2-bit integers: onnx's reference evaluator is not set up "
                                     "to carry streaming state; tinyc cannot verify this model")
                info["oracle"] = "onnx-reference"
                return run_onnx_reference(path, samples, intermediates)
            return run_onnx(path, samples, intermediates, state, initial)
        if ext == ".tflite":
            try:
                return run_tflite(path, samples, intermediates, carry_state)
            except TFLiteRejected as rejected:
                if not fallback:
                    raise
                version = tflm_version()
                info["oracle"] = "tflite-micro"
                info["oracle_reason"] = f"TFLite's interpreter rejected the model: {rejected.reason}"
                info["oracle_version"] = version
                try:
                    return run_tflite_micro(path, samples, intermediates)
                except TinycError as e:
                    raise TinycError(f"{rejected}; {e}") from None
        return run_keras(path, samples, intermediates)
    except TinycError:
        raise
    except Exception as e:
        raise TinycError(f"the reference runtime failed on '{path}': {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")
