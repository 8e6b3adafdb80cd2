"""TFLite frontend: a float32 or fully-integer (int8) .tflite flatbuffer -> IR Graph.

The file is read with TensorFlow's own generated schema module (`tensorflow.lite.python.schema_py_generated`,
object API), never parsed by hand. TFLite is NHWC already, so tensors keep their layout: every operator output
becomes an IR tensor with `source_name` = the TFLite tensor name (for per-layer verification) and
`source_perm` None. Operators are converted in file order (TFLite stores them in execution order) by the rules
in `tflite_ops.TFLITE_OPS`; constant sub-graphs (the SHAPE -> STRIDED_SLICE -> PACK chain the converter emits
around Flatten, DEQUANTIZE of float16/int8 weights) are evaluated with numpy by `tflite_ops.FOLD_OPS`.

int8 models keep their integers: activations become int8 IR tensors and weights int8/int32 constants, each with
its `Tensor.quant` (per-channel parameters re-indexed to the IR weight layout); QUANTIZE/DEQUANTIZE computed at
run time become Quantize/Dequantize nodes. 16x8 models (TFLite's int16 activations with int8 weights) keep theirs
the same way: int16 IR tensors with a per-tensor scale and zero point 0, int64 (or int32) biases
(docs/int16-numerics.md 1). Other integer activation types (uint8, per-channel or asymmetric int16), int16 weights
and hybrid models (float activations with int8 weights) are refused with a clear error.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from ..errors import MALFORMED, TinycError
from ..ir import Graph, Quant
from ..nibbles import packed_bytes, unpack_int4
from .tflite_ops import FOLD_OPS, MULTI_OUTPUT_OPS, TFLITE_OPS
from .tflite_variables import finish_variables

__all__ = ["FOLD_OPS", "TFLITE_OPS", "load_tflite"]

IDENTIFIER = b"TFL3"
RUNTIME_TYPES = {"FLOAT32": "float32", "INT8": "int8", "INT16": "int16",
                 "INT32": "int32", "INT64": "int64",   # INT32/INT64: indices (ARG_MAX, GATHER)
                 "BOOL": "bool"}                       # BOOL: LESS / SELECT_V2 (Keras 3's Embedding)
CONST_TYPES = {"FLOAT32": "float32", "INT8": "int8", "INT16": "int16", "INT32": "int32",
               "INT64": "int64"}                 # INT16: 16x8 operands; INT64: 16x8 biases
QUANTIZED = ("int8", "int16")     # runtime types that carry quantization parameters (int16: 16x8 activations)
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")   # int8 weights in 16x8
OTHER_TYPE_HINT = ("tinyc compiles float32, int8 and 16x8 (int16 activations, int8 weights) models; convert with "
                   "TFLITE_BUILTINS_INT8 or EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, or without "
                   "quantization")
SIXTEEN_BY_EIGHT = "TFLite's 16x8 scheme (int16 activations per tensor with zero point 0, int8 weights)"


def _schema():
    """TensorFlow's generated flatbuffer schema module (object API). The `tflite` PyPI package is not used."""
    from ..keras_runtime import import_keras
    try:
        import_keras()   # imports TensorFlow quietly
        from tensorflow.lite.python import schema_py_generated
        return schema_py_generated
    except (TinycError, ImportError):
        pass
    if importlib.util.find_spec("tflite") is None:
        raise TinycError("reading .tflite models needs TensorFlow (its tensorflow.lite schema module); "
                         "pip install tensorflow")
    raise TinycError("reading .tflite models needs TensorFlow's schema module; the `tflite` package alone is "
                     "not supported")


def _enum_names(enum_cls) -> dict:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _s(b) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or "")


class Ctx:
    """What an operator converter sees: constants, IR names and shapes of TFLite tensors, and `emit`."""

    def __init__(self, S, model, data: bytes, graph: Graph, check_shapes: bool):
        self.S = S
        self.model = model
        self.sg = model.subgraphs[0]
        self.data = data
        self.g = graph
        self.check_shapes = check_shapes
        self.types = _enum_names(S.TensorType)
        self.values: dict[int, np.ndarray] = {}    # constant TFLite tensors (buffers and folded results)
        self.names: dict[int, str] = {}            # runtime TFLite tensors -> IR names
        self._consts: dict[tuple, str] = {}
        counts: dict[str, int] = {}
        for t in self.sg.tensors:
            counts[_s(t.name)] = counts.get(_s(t.name), 0) + 1
        self._unique = {n for n, c in counts.items() if c == 1}
        self.op_name = ""       # builtin name of the operator being converted
        self.op_index = -1
        self.out = -1           # its (first) output tensor index; a multi-output rule sets it per output
        self.outs: list = []    # all its output tensor indices
        # resource variables (tflite_variables.py): resource tensor index -> variable key; key -> its state
        self.resources: dict[int, str] = {}
        self.variables: dict[str, dict] = {}
        for i, t in enumerate(self.sg.tensors):
            arr = self.buffer_value(t)
            if arr is not None:
                self.values[i] = arr

    # -- tensors --------------------------------------------------------------------------------------------
    def tensor(self, i: int):
        return self.sg.tensors[i]

    def tname(self, i: int) -> str:
        return _s(self.sg.tensors[i].name)

    def dtype_name(self, i: int) -> str:
        return self.types.get(self.sg.tensors[i].type, str(self.sg.tensors[i].type))

    def _np_dtype(self, t):
        name = self.types.get(t.type, str(t.type))
        try:
            return np.dtype(name.lower())
        except TypeError:
            raise TinycError(f"tensor '{_s(t.name)}' has type {name}, which tinyc cannot read") from None

    def buffer_value(self, t) -> np.ndarray | None:
        """The constant data of TFLite tensor `t` (of any subgraph: WHILE bodies read theirs), or None."""
        if not t.buffer or t.buffer >= len(self.model.buffers):
            return None
        b = self.model.buffers[t.buffer]
        if b.offset and b.offset > 1:                      # large models: data after the flatbuffer
            raw = self.data[b.offset: b.offset + b.size]
            if len(raw) != b.size:
                raise TinycError(f"buffer of tensor '{_s(t.name)}' lies outside the file (truncated .tflite?)")
        elif b.data is not None and len(b.data):
            raw = bytes(np.asarray(b.data, np.uint8))
        else:
            return None
        dt = self._np_dtype(t).newbyteorder("<")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        count = int(np.prod(shape, dtype=np.int64))
        if self.types.get(t.type) == "INT4":               # two values per byte, low nibble first
            if len(raw) != packed_bytes(count):
                raise TinycError(f"int4 constant tensor '{_s(t.name)}' holds {len(raw)} bytes but its shape "
                                 f"{list(shape)} needs {packed_bytes(count)}; the .tflite file is corrupt")
            return unpack_int4(raw, count).reshape(shape)
        if len(raw) != count * dt.itemsize:
            raise TinycError(f"constant tensor '{_s(t.name)}' holds {len(raw)} bytes but its shape {list(shape)} "
                             f"and type need {count * dt.itemsize}; the .tflite file is corrupt")
        return np.frombuffer(raw, dt).astype(dt.newbyteorder("=")).reshape(shape)

    def is_const(self, i: int) -> bool:
        return i in self.values

    def value(self, i: int, what: str = "input") -> np.ndarray:
        if i not in self.values:
            raise TinycError(f"{self.where()}: its {what} '{self.tname(i)}' must be a constant "
                             "(computed at run time here, which is not supported)")
        return self.values[i]

    def weights(self, i: int, arr: np.ndarray | None = None, key: str = "", axis_map: dict | None = None) -> str:
        """The weights of a CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED as an IR constant (`const`'s arguments):
        INT4 ones (two per byte in the file) stay int4, with symmetric per-channel or per-tensor scales."""
        if self.dtype_name(i) != "INT4":
            return self.const(i, arr, key, axis_map)
        if (i, key) in self._consts:
            return self._consts[(i, key)]
        if self.dtype_name(self.out) == "FLOAT32":
            raise TinycError(f"{self.where()}: int4 weights '{self.tname(i)}' with float activations (a hybrid layer); "
                             "tinyc takes int4 weights with int8 activations (ai-edge-quantizer's static recipe, or "
                             "--quantize int8 --weights int4) and hybrid layers with int8 weights")
        q = self.quant(i)
        if q is None:
            raise TinycError(f"{self.where()}: int4 weights '{self.tname(i)}' have no quantization parameters; "
                             "tinyc takes int4 weights with symmetric scales (zero point 0)")
        zps = np.asarray(q.zero_point).reshape(-1)
        if np.any(zps != 0):
            raise TinycError(f"{self.where()}: int4 weights '{self.tname(i)}' are asymmetric (zero point "
                             f"{int(zps[zps != 0][0])}); tinyc takes symmetric int4 weights (zero point 0, per "
                             "channel or per tensor): quantize them symmetrically")
        if q.axis is not None and axis_map:
            q.axis = axis_map[q.axis]
        arr = self.value(i) if arr is None else arr
        name = self.g.add_const((self.tname(i).split(";")[0] or f"const{i}") + (f"_{key}" if key else ""),
                                arr.astype("int4"), "int4")
        self.g.tensors[name].quant = q
        self._consts[(i, key)] = name
        return name

    def shape(self, i: int) -> tuple:
        if i in self.values:
            return tuple(self.values[i].shape)
        return self.g.tensors[self.x(i)].shape

    def x(self, i: int) -> str:
        """IR name of a TFLite tensor that an IR node reads (a constant is added to the graph as float32)."""
        if i in self.names:
            return self.names[i]
        if i in self.values:
            return self.const(i)
        raise TinycError(f"{self.where()}: input '{self.tname(i)}' is neither a model input nor computed by an "
                         "earlier operator")

    def const(self, i: int, arr: np.ndarray | None = None, key: str = "", axis_map: dict | None = None) -> str:
        """Add constant tensor `i` (or `arr` derived from it) to the IR: float32 weights, or int8/int32 with
        their quantization (`axis_map` re-indexes a per-channel axis when `arr` is a transposed view)."""
        if self.dtype_name(i) == "INT4":      # (the weights of CONV_2D, DEPTHWISE_CONV_2D, FC: `weights`)
            raise TinycError(f"{self.where()}: constant '{self.tname(i)}' has type INT4; tinyc takes int4 only as the "
                             "weights of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: quantize it to int8")
        if (i, key) in self._consts:
            return self._consts[(i, key)]
        if arr is None:
            arr = self.value(i)
        kind = self.dtype_name(i) if i in self.values and np.issubdtype(arr.dtype, np.integer) else "FLOAT32"
        if kind == "INT16" and self.op_name in WEIGHTED_OPS:
            raise TinycError(f"{self.where()}: constant '{self.tname(i)}' is int16 (int16 weights); tinyc takes "
                             f"{SIXTEEN_BY_EIGHT}: quantize the weights to int8")
        if kind == "INT16":     # an int16 operand of an elementwise op (ADD of a bias the converter split off)
            self._check_int16(i)
        if kind not in CONST_TYPES:
            raise TinycError(f"{self.where()}: constant '{self.tname(i)}' has type {kind}; {OTHER_TYPE_HINT}")
        base = self.tname(i).split(";")[0] or f"const{i}"
        name = self.g.add_const(base + (f"_{key}" if key else ""), arr.astype(CONST_TYPES[kind]), CONST_TYPES[kind])
        q = self.quant(i) if kind != "FLOAT32" else None
        if q is not None and q.axis is not None and axis_map:
            q.axis = axis_map[q.axis]
        self.g.tensors[name].quant = q
        self._consts[(i, key)] = name
        return name

    def runtime_dtype(self, i: int) -> str:
        kind = self.dtype_name(i)
        if kind not in RUNTIME_TYPES:
            raise TinycError(f"tensor '{self.tname(i)}' is {kind} at run time; {OTHER_TYPE_HINT}")
        if kind == "INT8":
            q = self.quant(i)
            if q is None or q.axis is not None:
                raise TinycError(f"int8 tensor '{self.tname(i)}' lacks per-tensor quantization parameters")
        if kind == "INT16":
            self._check_int16(i)
        return RUNTIME_TYPES[kind]

    def _check_int16(self, i: int) -> None:
        """An int16 activation is one of TFLite's 16x8 scheme: per-tensor scale, zero point 0."""
        q = self.quant(i)
        if q is None:
            raise TinycError(f"int16 tensor '{self.tname(i)}' has no quantization parameters; tinyc takes int16 "
                             f"only as {SIXTEEN_BY_EIGHT}")
        if q.axis is not None:
            raise TinycError(f"int16 tensor '{self.tname(i)}' is quantized per channel (axis {q.axis}); tinyc takes "
                             f"{SIXTEEN_BY_EIGHT}")
        if int(np.asarray(q.zero_point)) != 0:
            raise TinycError(f"int16 tensor '{self.tname(i)}' has zero point {int(np.asarray(q.zero_point))}; tinyc "
                             f"takes {SIXTEEN_BY_EIGHT}")

    def quant(self, i: int) -> Quant | None:
        q = self.tensor(i).quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        scale = np.asarray(q.scale, np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros(len(scale)), np.int64)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise TinycError(f"tensor '{self.tname(i)}' has quantization scale(s) {scale.ravel()[:4].tolist()}; "
                             "scales must be positive and finite (the .tflite file is corrupt)")
        if self.dtype_name(i) == "INT8" and zp.size and (zp.min() < -128 or zp.max() > 127):
            raise TinycError(f"int8 tensor '{self.tname(i)}' has zero point {int(zp.ravel()[0])} outside "
                             "-128..127; the .tflite file is corrupt")
        if scale.size == 1:
            return Quant(scale.reshape(()), zp.reshape(()) if zp.size else np.zeros((), np.int64), None)
        return Quant(scale, zp, int(q.quantizedDimension))

    # -- emitting -------------------------------------------------------------------------------------------
    def where(self) -> str:
        out = self.tname(self.out) if self.out >= 0 else "?"
        return f"TFLite operator #{self.op_index} ({self.op_name}, output '{out}')"

    def emit(self, op: str, inputs, shape, final: bool = True, tag: str | None = None, like: str | None = None,
             **attrs) -> str:
        """Add one node. `final` writes the operator's output tensor (named after the TFLite tensor, with its
        source name and quantization); otherwise a helper tensor with no source name, of the dtype and
        quantization of IR tensor `like` (default: the operator's output)."""
        shape = tuple(int(d) for d in shape)
        base = self.tname(self.out).split(";")[0] or f"t{self.out}"
        if final:
            dtype = self.runtime_dtype(self.out)
            if self.check_shapes and self.tensor(self.out).shape is not None:
                t = self.tensor(self.out)
                theirs = tuple(int(d) for d in t.shape)
                sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else theirs
                dynamic = {j for j, d in enumerate(sig) if d < 0} if len(sig) == len(theirs) else set()
                if len(theirs) != len(shape) or any(a != b for j, (a, b) in enumerate(zip(theirs, shape))
                                                    if j not in dynamic):
                    raise TinycError(f"{self.where()} computes shape {shape} but the model declares {theirs}: "
                                     "the .tflite file is inconsistent (if it runs in TFLite, report it)")
            name = self.g.unique_name(base)
            full = self.tname(self.out)
            self.g.add_tensor(name, shape, dtype, source_name=full if full in self._unique else None,
                              quant=self.quant(self.out) if dtype in QUANTIZED else None)
            self.names[self.out] = name
        else:
            name = self.g.unique_name(f"{base}_{tag or op.lower()}")
            if like is not None:
                ref = self.g.tensors[like]
                dtype, quant = ref.dtype, ref.quant
            else:
                dtype = self.runtime_dtype(self.out)
                quant = self.quant(self.out) if dtype in QUANTIZED else None
            self.g.add_tensor(name, shape, dtype, quant=quant)
        self.g.add_node(op, inputs, [name], name=name, **attrs)
        return name


# -- loading -------------------------------------------------------------------------------------------------
def _read(S, path: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TinycError(f"cannot read '{path}': {e.strerror}") from None
    if len(data) < 8 or data[4:8] != IDENTIFIER:
        raise TinycError(f"'{path}' is not a TFLite model (no '{IDENTIFIER.decode()}' flatbuffer identifier); "
                         "is the file corrupt or of another format?")
    try:
        model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(data, 0))
    except Exception as e:   # flatbuffers raises struct/index errors on corrupt data
        raise TinycError(f"cannot parse TFLite model '{path}' ({type(e).__name__}); the file is corrupt or "
                         "truncated") from None
    if not model.subgraphs:
        raise TinycError(f"TFLite model '{path}' has no subgraph")
    _check_indices(S, model.subgraphs[0], len(model.buffers or []))
    _check_strings(model)
    return data, model


def _check_strings(model) -> None:
    """Every name in the file is UTF-8, as TFLite writes them (TFLite's own Python API cannot read it otherwise)."""
    names = [("description", model.description)] + [("subgraph name", sg.name) for sg in model.subgraphs]
    names += [("metadata name", md.name) for md in (model.metadata or [])]
    for sd in model.signatureDefs or []:
        names += [("signature", sd.signatureKey)]
        names += [("signature tensor", t.name) for t in (sd.inputs or []) + (sd.outputs or [])]
    names += [("tensor name", t.name) for t in (model.subgraphs[0].tensors or [])]
    for what, b in names:
        try:
            if isinstance(b, bytes):
                b.decode("utf-8")
        except UnicodeDecodeError:
            raise TinycError(f"a TFLite {what} in the file is not UTF-8 text; the .tflite file is corrupt") from None


def _check_indices(S, sg, buffers: int) -> None:
    """Every tensor index the subgraph uses names one of its tensors, every tensor's buffer exists and its type is
    one of the schema's (the converters index lists with them)."""
    n = len(sg.tensors or [])
    types = _enum_names(S.TensorType)

    def check(indices, what, optional=False):
        for i in (indices if indices is not None else []):
            if not (0 <= int(i) < n or (optional and int(i) == -1)):
                raise TinycError(f"TFLite {what} refers to tensor {int(i)}, but the subgraph has {n}; the .tflite "
                                 "file is corrupt")
    check(sg.inputs, "subgraph input")
    check(sg.outputs, "subgraph output")
    for k, op in enumerate(sg.operators or []):
        check(op.inputs, f"operator #{k}", optional=True)    # -1: an absent optional input
        check(op.outputs, f"operator #{k}")
    for t in sg.tensors or []:
        if t.buffer >= buffers:
            raise TinycError(f"TFLite tensor '{_s(t.name)}' refers to buffer {t.buffer}, but the file has {buffers}; "
                             "the .tflite file is corrupt")
        if t.type not in types:
            raise TinycError(f"TFLite tensor '{_s(t.name)}' has type {t.type}, which the TFLite schema does not "
                             "define; the .tflite file is corrupt")


def _op_name(S, model, op) -> str:
    if op.opcodeIndex >= len(model.operatorCodes):
        raise TinycError("TFLite model refers to an operator code that does not exist; the file is corrupt")
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = _enum_names(S.BuiltinOperator).get(builtin, f"builtin {builtin}")
    if name == "CUSTOM":
        return f"CUSTOM ({_s(code.customCode)})"
    return name


def _input_shape(name: str, shape: tuple, given) -> tuple:
    if given is not None:
        given = tuple(int(d) for d in given)
        if len(given) != len(shape):
            raise TinycError(f"--input-shape {given} for input '{name}' does not fit the model's shape {shape}")
        if given[0] != 1:
            raise TinycError(f"input '{name}': batch size {given[0]} is not supported; use batch 1")
        shape = given
    if any(d == 0 for d in shape):
        raise TinycError(f"input '{name}' has a zero-size dimension (shape {shape}); tinyc handles zero-size "
                         "tensors in ONNX models only")
    if any(d < 0 for d in shape):
        raise TinycError(f"input '{name}' has a dynamic shape {shape}; pass --input-shape with the "
                         "static shape of every input (NHWC, batch included)")
    if shape and shape[0] != 1:
        raise TinycError(f"input '{name}': batch size {shape[0]} is not supported; use batch 1")
    return shape


def _convert(cv, fn, opts, ins):
    """One operator's converter. Where its assumptions about a well-formed operator (options present, inputs of
    the right count and shapes) do not hold, say which operator, not where in tinyc."""
    try:
        return fn(cv, opts, ins)
    except MALFORMED as e:
        raise TinycError(f"{cv.where()}: malformed operator ({type(e).__name__}: {e}); the .tflite file is corrupt "
                         "or uses the op in a way tinyc does not support") from None


def load_tflite(path: str, input_shapes: list[tuple] | None = None) -> Graph:
    """Load a float32, int8 or 16x8 .tflite model as an IR Graph (NHWC, batch 1)."""
    if not os.path.isfile(path):
        raise TinycError(f"model file '{path}' not found")
    S = _schema()
    data, model = _read(S, path)
    sg = model.subgraphs[0]
    ins = [int(i) for i in (sg.inputs if sg.inputs is not None else [])]
    outs = [int(i) for i in (sg.outputs if sg.outputs is not None else [])]
    if not ins or not outs:
        raise TinycError(f"TFLite model '{path}' has no inputs or no outputs")
    if input_shapes is not None and len(input_shapes) != len(ins):
        raise TinycError(f"the model has {len(ins)} input(s) but {len(input_shapes)} --input-shape value(s) "
                         "were given")
    name = os.path.splitext(os.path.basename(path))[0]
    g = Graph(name, source_format="tflite")
    cv = Ctx(S, model, data, g, check_shapes=input_shapes is None)
    for k, i in enumerate(ins):
        t = sg.tensors[i]
        dtype = cv.runtime_dtype(i)
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
        shape = tuple(1 if (s < 0 and j == 0) else d for j, (d, s) in enumerate(zip(shape, sig))) \
            if len(sig) == len(shape) else shape
        shape = _input_shape(cv.tname(i), shape, input_shapes[k] if input_shapes else None)
        ir = g.unique_name(cv.tname(i).split(";")[0] or f"input{k}")
        g.add_tensor(ir, shape, dtype, source_name=cv.tname(i) if cv.tname(i) in cv._unique else None,
                     quant=cv.quant(i) if dtype in QUANTIZED else None)
        g.inputs.append(ir)
        cv.names[i] = ir
    for k, op in enumerate(sg.operators or []):
        kind = _op_name(S, model, op)
        op_ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        op_outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        cv.op_name, cv.op_index, cv.out = kind, k, (op_outs[0] if op_outs else -1)
        present = [i for i in op_ins if i >= 0]
        if kind in FOLD_OPS and (kind == "SHAPE" or all(cv.is_const(i) for i in present)):
            if len(op_outs) != 1:
                raise TinycError(f"{cv.where()} has {len(op_outs)} outputs; expected one")
            cv.values[op_outs[0]] = np.asarray(_convert(cv, FOLD_OPS[kind], op.builtinOptions, op_ins))
            continue
        rule = TFLITE_OPS.get(kind)
        if rule is None:
            extra = " on constant inputs only" if kind in FOLD_OPS else ""
            raise TinycError(f"unsupported TFLite op {kind}{extra} (operator #{k}, output "
                             f"'{cv.tname(cv.out) if cv.out >= 0 else '?'}'); run `tinyc ops` to see the supported ops")
        if len(op_outs) != 1 and kind not in MULTI_OUTPUT_OPS:
            raise TinycError(f"{cv.where()} has {len(op_outs)} outputs; only single-output ops are supported")
        cv.outs = op_outs
        _convert(cv, rule, op.builtinOptions, op_ins)
        if any(o not in cv.names and o not in cv.values and o not in cv.resources
               for o in op_outs):   # (a WHILE's counters are constants; VAR_HANDLE's is a resource)
            raise TinycError(f"internal: {cv.where()} did not produce its outputs")
    finish_variables(cv)      # TFLite resource variables: their state tensors take their last assignments
    for i in outs:
        if i not in cv.names:
            if i in cv.values:
                raise TinycError(f"model output '{cv.tname(i)}' is a constant; tinyc compiles computed outputs only")
            raise TinycError(f"model output '{cv.tname(i)}' is never computed")
        g.outputs.append(cv.names[i])
    g.remove_unused_tensors()
    g.validate()
    return g
