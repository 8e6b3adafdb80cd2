"""The TFLite frontend's rules: one small converter per builtin operator, collected in `TFLITE_OPS`.

A converter is `fn(cv, opts, ins)`: `cv` is the conversion context (`tflite_import.Ctx`), `opts` the operator's
builtin options object (schema object API, or None), `ins` the TFLite tensor indices of its inputs (-1: absent).
It emits IR nodes through `cv.emit`; the node emitted with `final=True` (the default) writes the operator's output.
`FOLD_OPS` evaluate operators whose inputs are all constants (and SHAPE, whose input shape is static) with numpy,
at compile time; they return the value. Nothing here imports TensorFlow.

Enum values below (Padding, ActivationFunctionType, TensorType) are those of TFLite's schema.fbs.
"""
from __future__ import annotations

import numpy as np

from ..activations import relu6
from ..errors import TinycError
from .geometry import conv_geometry
from .tflite_hybrid import hybrid_rules, refuse_hybrid
from .tflite_recurrent import RECURRENT_MULTI_OUTPUT, RECURRENT_OPS
from .tflite_variables import VARIABLE_OPS, VARIABLE_OUTPUTS

PADDING = {0: "same", 1: "valid"}
# fused_activation_function -> IR activation dict (5 = SIGN_BIT is not supported)
FUSED = {0: None, 1: {"fn": "relu"}, 2: {"fn": "clip", "lo": -1.0, "hi": 1.0}, 3: relu6(), 4: {"fn": "tanh"}}


def fused_act(cv, opts) -> dict | None:
    code = int(getattr(opts, "fusedActivationFunction", 0) or 0) if opts is not None else 0
    if code not in FUSED:
        raise TinycError(f"{cv.where()}: fused activation {code} (SIGN_BIT) is not supported")
    return dict(FUSED[code]) if FUSED[code] else None


def _then_act(cv, op, inputs, shape, act, **attrs) -> str:
    """`op` followed by its fused activation, if any. float32: a separate Activation node (the op has no
    `activation` attribute); int8 and int16 (16x8): the clamp is the op's `activation` attribute, as TFLite
    applies it."""
    if act is None:
        return cv.emit(op, inputs, shape, **attrs)
    if cv.runtime_dtype(cv.out) in ("int8", "int16"):
        return cv.emit(op, inputs, shape, activation=act, **attrs)
    y = cv.emit(op, inputs, shape, final=False, tag=op.lower(), **attrs)
    return cv.emit("Activation", [y], shape, **act)


def _rank4(cv, i) -> tuple:
    shape = cv.shape(i)
    if len(shape) != 4:
        raise TinycError(f"{cv.where()}: input '{cv.tname(i)}' has shape {shape}; a 4-D NHWC tensor is needed")
    return shape


def _geometry(cv, shape, k, s, d, padding):
    if padding not in PADDING:
        raise TinycError(f"{cv.where()}: unknown padding {padding}")
    if min(*k, *s, *d) < 1:
        raise TinycError(f"{cv.where()}: window {tuple(k)}, strides {tuple(s)} and dilations {tuple(d)} must all be "
                         "at least 1; the .tflite file is corrupt")
    geo = [conv_geometry(size, k[i], s[i], d[i], PADDING[padding]) for i, size in enumerate(shape[1:-1])]
    if any(g[0] <= 0 for g in geo):
        raise TinycError(f"{cv.where()}: input {shape} is smaller than the window {tuple(k)}")
    return (shape[0],) + tuple(g[0] for g in geo), tuple(g[1] for g in geo) + tuple(g[2] for g in geo)


def _bias(cv, ins) -> list:
    return [cv.const(ins[2])] if len(ins) > 2 and ins[2] >= 0 else []


def _axis(cv, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise TinycError(f"{cv.where()}: axis {axis} is out of range for rank {rank}")
    return axis % rank


# -- convolutions and dense ----------------------------------------------------------------------------------
def conv_2d(cv, opts, ins):
    xs = _rank4(cv, ins[0])
    w = cv.value(ins[1], "filter")                          # [O,KH,KW,I/groups]: the IR layout already
    o, kh, kw, ci = w.shape
    if ci <= 0 or xs[3] % ci:
        raise TinycError(f"{cv.where()}: filter {w.shape} does not fit input channels {xs[3]}")
    s, d = (opts.strideH, opts.strideW), (opts.dilationHFactor, opts.dilationWFactor)
    nhw, pads = _geometry(cv, xs, (kh, kw), s, d, opts.padding)
    return cv.emit("Conv2D", [cv.x(ins[0]), cv.weights(ins[1])] + _bias(cv, ins), nhw + (o,), strides=s,
                   dilations=d, pads=pads, groups=xs[3] // ci, activation=fused_act(cv, opts))


def conv_3d(cv, opts, ins):
    xs = cv.shape(ins[0])
    if len(xs) != 5:
        raise TinycError(f"{cv.where()}: input '{cv.tname(ins[0])}' has shape {xs}; a 5-D NDHWC tensor is needed")
    w = cv.value(ins[1], "filter")                          # [KD,KH,KW,I,O]
    if w.ndim != 5 or w.shape[3] != xs[4]:
        raise TinycError(f"{cv.where()}: filter {w.shape} does not fit input channels {xs[4]}")
    s = (opts.strideD, opts.strideH, opts.strideW)
    d = (opts.dilationDFactor, opts.dilationHFactor, opts.dilationWFactor)
    ndhw, pads = _geometry(cv, xs, w.shape[:3], s, d, opts.padding)
    wt = cv.const(ins[1], np.ascontiguousarray(w.transpose(4, 0, 1, 2, 3)), key="ir",   # -> [O,KD,KH,KW,I]
                  axis_map={4: 0, 0: 1, 1: 2, 2: 3, 3: 4})
    return cv.emit("Conv3D", [cv.x(ins[0]), wt] + _bias(cv, ins), ndhw + (w.shape[4],), strides=s, dilations=d,
                   pads=pads, groups=1, activation=fused_act(cv, opts))


def depthwise_conv_2d(cv, opts, ins):
    xs = _rank4(cv, ins[0])
    w = cv.value(ins[1], "filter")                          # [1,KH,KW,C*mult], channel c*mult + m
    _, kh, kw, cm = w.shape
    c = xs[3]
    if w.shape[0] != 1 or cm % c:
        raise TinycError(f"{cv.where()}: depthwise filter {w.shape} does not fit input channels {c}")
    s, d = (opts.strideH, opts.strideW), (opts.dilationHFactor, opts.dilationWFactor)
    nhw, pads = _geometry(cv, xs, (kh, kw), s, d, opts.padding)
    wt = cv.weights(ins[1], np.ascontiguousarray(w.transpose(3, 1, 2, 0)), key="ir",   # -> [C*mult,KH,KW,1]
                  axis_map={3: 0, 0: 3})
    return cv.emit("Conv2D", [cv.x(ins[0]), wt] + _bias(cv, ins), nhw + (cm,), strides=s, dilations=d,
                   pads=pads, groups=c, activation=fused_act(cv, opts))


def transpose_conv(cv, opts, ins):
    """TRANSPOSE_CONV(output_shape, filter [O,KH,KW,I], input, bias?): the IR's ConvTranspose2D. The kernel's
    padding is conv padding for an input of the output's size (ComputePaddingHeightWidth): only the crop before
    is used; the output shape input says where the output ends."""
    out = tuple(int(d) for d in cv.value(ins[0], "output_shape").reshape(-1))
    w = cv.value(ins[1], "filter")                          # [O,KH,KW,I]: the IR layout already
    xs = _rank4(cv, ins[2])
    if w.ndim != 4 or len(out) != 4 or w.shape[3] != xs[3] or out[3] != w.shape[0] or out[0] != xs[0]:
        raise TinycError(f"{cv.where()}: filter {w.shape} and output shape {out} do not fit input {xs}")
    s = (opts.strideH, opts.strideW)
    if opts.padding not in PADDING or min(s) < 1 or min(out) < 1:
        raise TinycError(f"{cv.where()}: padding {opts.padding}, strides {s} or output shape {out} are invalid; the "
                         ".tflite file is corrupt")
    begins = [conv_geometry(out[1 + i], w.shape[1 + i], s[i], 1, PADDING[opts.padding])[1] for i in range(2)]
    ends = [(xs[1 + i] - 1) * s[i] + w.shape[1 + i] - begins[i] - out[1 + i] for i in range(2)]
    bias = [cv.const(ins[3])] if len(ins) > 3 and ins[3] >= 0 else []
    return cv.emit("ConvTranspose2D", [cv.x(ins[2]), cv.const(ins[1])] + bias, out, strides=s, dilations=(1, 1),
                   pads=tuple(begins) + tuple(ends), groups=1, activation=fused_act(cv, opts))


def fully_connected(cv, opts, ins):
    w = cv.value(ins[1], "weights")                         # [O,K]
    if w.ndim != 2:
        raise TinycError(f"{cv.where()}: weights of shape {w.shape} are not 2-D")
    if opts is not None and int(opts.weightsFormat or 0) != 0:
        raise TinycError(f"{cv.where()}: shuffled weight formats are not supported")
    o, k = w.shape
    xs = cv.shape(ins[0])
    x = cv.x(ins[0])
    if opts is not None and opts.keepNumDims:
        if xs[-1] != k:
            raise TinycError(f"{cv.where()}: input {xs} does not end in {k} features")
        out = xs[:-1] + (o,)
    else:                                                   # the input is read as [size / K, K]
        size = int(np.prod(xs, dtype=np.int64))
        if size % k:
            raise TinycError(f"{cv.where()}: input {xs} does not hold whole rows of {k} features")
        if xs != (size // k, k):
            x = cv.emit("Reshape", [x], (size // k, k), final=False, tag="rows", like=x)
        out = (size // k, o)
    return cv.emit("Dense", [x, cv.weights(ins[1])] + _bias(cv, ins), out, activation=fused_act(cv, opts))



def svdf(cv, opts, ins):
    """SVDF(input [B, I], feature weights [F, I], time weights [F, M], bias [F/rank]?, memory [B, F*M]): the memory
    is a variable tensor TFLite keeps across invocations, so it becomes a state tensor whose next value is the
    shifted memory with the newest feature values (`SvdfMemory`); the output is `SvdfTimeFilter` over that
    (tinyc/ops/svdf.py). int8: int16 memory and time weights, as TFLite's integer kernel (docs/int8-numerics.md
    §4.39)."""
    if len(ins) != 5 or min(ins[0], ins[1], ins[2], ins[4]) < 0:
        raise TinycError(f"{cv.where()}: SVDF takes 5 inputs (input, feature weights, time weights, bias or -1, "
                         "memory); the .tflite file is corrupt")
    x, mem_i = ins[0], ins[4]
    wf, wt = cv.value(ins[1], "feature weights"), cv.value(ins[2], "time weights")
    rank = int(opts.rank or 0) if opts is not None else 0
    xs = cv.shape(x)
    if len(xs) != 2 or wf.ndim != 2 or wt.ndim != 2 or wf.shape[1] != xs[1] or wt.shape[0] != wf.shape[0]:
        raise TinycError(f"{cv.where()}: input {xs}, feature weights {wf.shape} and time weights {wt.shape} do not "
                         "fit ([batch, features], [filters, features], [filters, memory size])")
    filters, size = wt.shape
    if rank < 1 or filters % rank:
        raise TinycError(f"{cv.where()}: rank {rank} must be a positive divisor of the {filters} filters")
    if cv.dtype_name(x) == "FLOAT32" and cv.dtype_name(ins[1]) != "FLOAT32":
        raise TinycError(f"{cv.where()}: a hybrid SVDF (float input, {cv.dtype_name(ins[1])} weights) is not "
                         "supported; convert the model fully to int8 or keep it float32")
    memory = cv.tensor(mem_i)
    readers = sum(mem_i in (op.inputs if op.inputs is not None else []) for op in cv.sg.operators)
    if not memory.isVariable or cv.is_const(mem_i) or mem_i in cv.names or readers != 1:
        raise TinycError(f"{cv.where()}: its memory '{cv.tname(mem_i)}' must be a variable tensor of this operator "
                         "alone (no buffer, not a model input, read by no other operator)")
    shape = (xs[0], filters * size)
    if tuple(int(d) for d in (memory.shape if memory.shape is not None else ())) != shape:
        raise TinycError(f"{cv.where()}: memory '{cv.tname(mem_i)}' has shape {memory.shape}; it must be "
                         f"[batch, filters x memory size] = {list(shape)}")
    int8 = cv.runtime_dtype(x) == "int8"
    code = int(getattr(opts, "fusedActivationFunction", 0) or 0) if opts is not None else 0
    if int8 and code != 1:
        raise TinycError(f"{cv.where()}: an int8 SVDF must declare the fused activation RELU (TFLite refuses "
                         f"activation {code} and does not apply RELU either: docs/int8-numerics.md §4.39)")
    act = None if int8 else fused_act(cv, opts)
    if int8 and (cv.dtype_name(mem_i), cv.dtype_name(ins[2])) != ("INT16", "INT16"):
        raise TinycError(f"{cv.where()}: memory {cv.dtype_name(mem_i)} and time weights {cv.dtype_name(ins[2])}; "
                         "TFLite's int8 SVDF keeps both int16 (TFLite Micro's int8 variant is not supported)")
    dtype = "int16" if int8 else cv.runtime_dtype(mem_i)
    state = cv.g.unique_name(cv.tname(mem_i).split(";")[0] or f"memory{mem_i}")
    cv.g.add_state(state, shape, dtype, quant=cv.quant(mem_i) if int8 else None)
    new = cv.emit("SvdfMemory", [cv.x(x), cv.const(ins[1]), state], shape, final=False, tag="memory", like=state)
    cv.g.state[state] = new
    w_time = _int16_const(cv, ins[2]) if int8 else cv.const(ins[2])
    bias = [cv.const(ins[3])] if ins[3] >= 0 else []
    return cv.emit("SvdfTimeFilter", [new, w_time] + bias, (xs[0], filters // rank), rank=rank, activation=act)


def _int16_const(cv, i) -> str:
    """An int16 constant with its quantization (SVDF's time weights; no other TFLite rule reads int16 data)."""
    name = cv.g.add_const(cv.tname(i).split(";")[0] or f"const{i}", cv.value(i).astype(np.int16), "int16")
    cv.g.tensors[name].quant = cv.quant(i)
    return name


def batch_matmul(cv, opts, ins):
    """BATCH_MATMUL: the IR's MatMul of two tensors (computed or constant), adj_x / adj_y read as transposes, the
    batch axes broadcast (float32, or int8 with per-tensor parameters as TFLite's reference kernel)."""
    adj_x = bool(opts.adjX) if opts is not None else False
    adj_y = bool(opts.adjY) if opts is not None else False
    if opts is not None and opts.asymmetricQuantizeInputs or cv.dtype_name(ins[0]) != cv.dtype_name(ins[1]):
        raise TinycError(f"{cv.where()}: a hybrid BATCH_MATMUL ({cv.dtype_name(ins[0])} x {cv.dtype_name(ins[1])}) "
                         "is not supported; convert the model fully to float32 or fully to int8")
    a, b = cv.shape(ins[0]), cv.shape(ins[1])
    if not (2 <= len(a) <= 5 and 2 <= len(b) <= 5):
        raise TinycError(f"{cv.where()}: operands {a} and {b}; BATCH_MATMUL takes ranks 2 to 5")
    m, ka = (a[-1], a[-2]) if adj_x else (a[-2], a[-1])
    kb, n = (b[-1], b[-2]) if adj_y else (b[-2], b[-1])
    try:
        batch = tuple(np.broadcast_shapes(a[:-2], b[:-2]))
    except ValueError:
        batch = None
    if ka != kb or batch is None:
        raise TinycError(f"{cv.where()}: operands {a} (adj_x={adj_x}) and {b} (adj_y={adj_y}) do not multiply")
    return cv.emit("MatMul", [cv.x(ins[0]), cv.x(ins[1])], batch + (m, n), transpose_a=adj_x, transpose_b=adj_y)

# -- elementwise ---------------------------------------------------------------------------------------------
def _broadcast_shape(cv, ins) -> tuple:
    a, b = cv.shape(ins[0]), cv.shape(ins[1])
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise TinycError(f"{cv.where()}: shapes {a} and {b} do not broadcast") from None


def _binary(op):
    def convert(cv, opts, ins):
        shape = _broadcast_shape(cv, ins)
        pot = {}
        if op in ("Add", "Sub") and cv.runtime_dtype(cv.out) == "int16" and getattr(opts, "potScaleInt16", True):
            pot = dict(pot_scale_int16=True)   # the schema's default: TFLite's power-of-two kernel where it applies
        return cv.emit(op, [cv.x(ins[0]), cv.x(ins[1])], shape, activation=fused_act(cv, opts), **pot)
    return convert


def _compare(kind):
    """LESS, GREATER, ...: a bool per element (Keras 3's Embedding wraps negative indices with LESS and SELECT)."""
    def convert(cv, opts, ins):
        shape = _broadcast_shape(cv, ins)
        return cv.emit("Compare", [cv.x(ins[0]), cv.x(ins[1])], shape, kind=kind)
    return convert


def select(cv, opts, ins):
    """SELECT_V2 broadcasts its three operands NumPy-style; SELECT (v1) also takes a 1-D condition over the first
    axis, which is not NumPy broadcasting: only equal shapes are read for it."""
    shapes = [cv.shape(i) for i in ins[:3]]
    try:
        shape = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise TinycError(f"{cv.where()}: shapes {shapes} do not broadcast") from None
    if cv.op_name == "SELECT" and len(set(shapes)) > 1:
        raise TinycError(f"{cv.where()}: SELECT of shapes {shapes}: tinyc reads SELECT with equal shapes only "
                         "(SELECT_V2 broadcasts)")
    return cv.emit("Where", [cv.x(i) for i in ins[:3]], shape)


def _activation(act):
    def convert(cv, opts, ins):
        return cv.emit("Activation", [cv.x(ins[0])], cv.shape(ins[0]), **act)
    return convert


def gelu(cv, opts, ins):
    approximate = bool(getattr(opts, "approximate", False)) if opts is not None else False
    return cv.emit("Activation", [cv.x(ins[0])], cv.shape(ins[0]), fn="gelu_tanh" if approximate else "gelu")


def leaky_relu(cv, opts, ins):
    alpha = float(opts.alpha) if opts is not None else 0.2
    return cv.emit("Activation", [cv.x(ins[0])], cv.shape(ins[0]), fn="leaky_relu", alpha=alpha)


def softmax(cv, opts, ins):
    beta = float(opts.beta) if opts is not None else 1.0
    if abs(beta - 1.0) > 1e-6:
        raise TinycError(f"{cv.where()}: SOFTMAX with beta={beta:g} is not supported; only beta=1")
    shape = cv.shape(ins[0])
    return cv.emit("Softmax", [cv.x(ins[0])], shape, axis=len(shape) - 1)


def l2_normalization(cv, opts, ins):
    """L2_NORMALIZATION: x / max(||x||, 1e-6) over the last axis (int8: docs/int8-numerics.md 4.37)."""
    if fused_act(cv, opts) is not None:
        raise TinycError(f"{cv.where()}: L2_NORMALIZATION with a fused activation; TFLite's kernel refuses it")
    shape = cv.shape(ins[0])
    return cv.emit("LpNormalize", [cv.x(ins[0])], shape, axis=len(shape) - 1, p=2, epsilon=1e-6)

# -- pooling and reductions ----------------------------------------------------------------------------------
def _pool(op, **extra):
    def convert(cv, opts, ins):
        xs = _rank4(cv, ins[0])
        k, s = (opts.filterHeight, opts.filterWidth), (opts.strideH, opts.strideW)
        nhw, pads = _geometry(cv, xs, k, s, (1, 1), opts.padding)
        return _then_act(cv, op, [cv.x(ins[0])], nhw + (xs[3],), fused_act(cv, opts), kernel=k, strides=s,
                         pads=pads, **extra)
    return convert


def reduction(kind):
    """MEAN (the IR's Mean), SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD (the IR's Reduce): constant axes, negative
    and repeated ones too."""
    def convert(cv, opts, ins):
        shape = cv.shape(ins[0])
        axes = tuple(sorted({_axis(cv, int(a), len(shape)) for a in cv.value(ins[1], "axes").reshape(-1)}))
        keep = bool(opts.keepDims) if opts is not None else False
        out = tuple(1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes)
        if kind == "mean":
            return cv.emit("Mean", [cv.x(ins[0])], out, axes=axes, keepdims=keep)
        return cv.emit("Reduce", [cv.x(ins[0])], out, kind=kind, axes=axes, keepdims=keep)
    return convert


def arg_min_max(kind):
    """ARG_MAX / ARG_MIN: integer indices along one constant axis, which is dropped."""
    def convert(cv, opts, ins):
        shape = cv.shape(ins[0])
        axis = cv.value(ins[1], "axis").reshape(-1)
        if axis.size != 1:
            raise TinycError(f"{cv.where()}: ARG_{kind.upper()} needs one axis, got {axis.tolist()}")
        axis = _axis(cv, int(axis[0]), len(shape))
        out = tuple(d for i, d in enumerate(shape) if i != axis)
        return cv.emit("ArgMinMax", [cv.x(ins[0])], out, kind=kind, axis=axis, keepdims=False)
    return convert


def log_softmax(cv, opts, ins):
    shape = cv.shape(ins[0])
    return cv.emit("LogSoftmax", [cv.x(ins[0])], shape, axis=len(shape) - 1)


# -- shapes --------------------------------------------------------------------------------------------------
def _reshape_target(cv, opts, ins, shape) -> tuple:
    if len(ins) > 1 and ins[1] >= 0:
        target = [int(v) for v in cv.value(ins[1], "shape").reshape(-1)]
    elif opts is not None and opts.newShape is not None:
        target = [int(v) for v in opts.newShape]
    else:
        raise TinycError(f"{cv.where()}: RESHAPE without a target shape")
    size = int(np.prod(shape, dtype=np.int64))
    if target.count(-1) > 1:
        raise TinycError(f"{cv.where()}: target shape {target} has more than one -1")
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
        if known <= 0 or size % known:
            raise TinycError(f"{cv.where()}: cannot reshape {tuple(shape)} to {target}")
        target[target.index(-1)] = size // known
    if int(np.prod(target, dtype=np.int64)) != size:
        raise TinycError(f"{cv.where()}: cannot reshape {tuple(shape)} to {target}")
    return tuple(target)


def reshape(cv, opts, ins):
    return cv.emit("Reshape", [cv.x(ins[0])], _reshape_target(cv, opts, ins, cv.shape(ins[0])))


def _squeeze_shape(cv, opts, shape) -> tuple:
    dims = list(opts.squeezeDims) if opts is not None and opts.squeezeDims is not None else []
    dims = {_axis(cv, int(d), len(shape)) for d in dims} or {i for i, d in enumerate(shape) if d == 1}
    if any(shape[i] != 1 for i in dims):
        raise TinycError(f"{cv.where()}: cannot squeeze axes {sorted(dims)} of shape {shape}")
    return tuple(d for i, d in enumerate(shape) if i not in dims)


def squeeze(cv, opts, ins):
    return cv.emit("Reshape", [cv.x(ins[0])], _squeeze_shape(cv, opts, cv.shape(ins[0])))


def _expand_shape(cv, ins, shape) -> tuple:
    axis = int(cv.value(ins[1], "axis").reshape(-1)[0])
    axis = _axis(cv, axis, len(shape) + 1)
    return tuple(shape[:axis]) + (1,) + tuple(shape[axis:])


def expand_dims(cv, opts, ins):
    """EXPAND_DIMS (the converter wraps Conv1D in it): a reshape."""
    return cv.emit("Reshape", [cv.x(ins[0])], _expand_shape(cv, ins, cv.shape(ins[0])))


def _pads(cv, ins, rank):
    pads = cv.value(ins[1], "paddings").astype(np.int64)
    if pads.shape != (rank, 2) or np.any(pads < 0):
        raise TinycError(f"{cv.where()}: paddings {pads.tolist()} are not [rank, 2] non-negative values")
    return tuple((int(b), int(e)) for b, e in pads)


def pad(cv, opts, ins):
    shape = cv.shape(ins[0])
    pads = _pads(cv, ins, len(shape))
    if len(ins) > 2 and ins[2] >= 0:
        v = cv.value(ins[2], "constant value").reshape(-1)[0]
        value = float(v) if np.issubdtype(v.dtype, np.floating) else int(v)
    elif cv.runtime_dtype(cv.out) in ("int8", "int16"):
        value = int(np.asarray(cv.quant(cv.out).zero_point).reshape(-1)[0])   # TFLite pads with the zero point
    else:
        value = 0.0
    out = tuple(d + b + e for d, (b, e) in zip(shape, pads))
    return cv.emit("Pad", [cv.x(ins[0])], out, pads=pads, value=value)


def concatenation(cv, opts, ins):
    shapes = [cv.shape(i) for i in ins]
    axis = _axis(cv, int(opts.axis), len(shapes[0]))
    if any(len(s) != len(shapes[0]) or any(a != b for j, (a, b) in enumerate(zip(s, shapes[0])) if j != axis)
           for s in shapes):
        raise TinycError(f"{cv.where()}: shapes {shapes} cannot be concatenated on axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return _then_act(cv, "Concat", [cv.x(i) for i in ins], tuple(out), fused_act(cv, opts), axis=axis)


def quantize(cv, opts, ins):
    return cv.emit("Quantize", [cv.x(ins[0])], cv.shape(ins[0]))


def dequantize(cv, opts, ins):
    return cv.emit("Dequantize", [cv.x(ins[0])], cv.shape(ins[0]))


# -- data movement (issue 17 section 3) ----------------------------------------------------------------------
def _window(cv, x, starts, steps, sizes, out_shape, final=True) -> str:
    """IR tensor `x` read through a Slice (starts, steps, sizes per axis), then a free Reshape to `out_shape` if
    the op drops or adds axes; an Identity / Reshape alone when the window is all of x."""
    shape = cv.g.tensors[x].shape
    if any(n == 0 for n in sizes) or any(d == 0 for d in out_shape):
        raise TinycError(f"{cv.where()}: the result would be zero-size {list(out_shape)}; tinyc handles zero-size "
                         "tensors in ONNX models only")
    if tuple(sizes) == tuple(shape) and all(s == 1 for s in steps):
        return cv.emit("Reshape" if tuple(out_shape) != tuple(shape) else "Identity", [x], out_shape, final=final)
    attrs = dict(starts=tuple(starts), steps=tuple(steps), sizes=tuple(sizes))
    if tuple(out_shape) == tuple(sizes):
        return cv.emit("Slice", [x], sizes, final=final, **attrs)
    y = cv.emit("Slice", [x], sizes, final=False, tag="slice", **attrs)
    return cv.emit("Reshape", [y], out_shape, final=final)


def _index_window(cv, index, shape):
    """(starts, steps, sizes, output shape) of numpy basic index `index` (ints, slices, newaxis, one Ellipsis) on
    `shape`, with numpy's clamping."""
    consume = sum(1 for e in index if e is not None and e is not Ellipsis)
    if sum(1 for e in index if e is Ellipsis) > 1 or consume > len(shape):
        raise TinycError(f"{cv.where()}: the index does not fit the input's {len(shape)} axes")
    full = []
    for e in index:
        full += [slice(None)] * (len(shape) - consume) if e is Ellipsis else [e]
    if Ellipsis not in index:
        full += [slice(None)] * (len(shape) - consume)
    starts, steps, sizes, out, a = [], [], [], [], 0
    for e in full:
        if e is None:
            out.append(1)
            continue
        d = shape[a]
        if isinstance(e, int):
            if not -d <= e < d:
                raise TinycError(f"{cv.where()}: index {e} is outside the {d} values of axis {a}")
            starts.append(e % d), steps.append(1), sizes.append(1)
        else:
            lo, hi, st = e.indices(d)
            n = len(range(lo, hi, st))
            starts.append(lo if n else 0), steps.append(st), sizes.append(n), out.append(n)
        a += 1
    return starts, steps, sizes, out


def strided_slice(cv, opts, ins):
    shape = cv.shape(ins[0])
    starts, steps, sizes, out = _index_window(cv, _strided_index(cv, opts, ins), shape)
    return _window(cv, cv.x(ins[0]), starts, steps, sizes, out)


def slice_(cv, opts, ins):
    shape = cv.shape(ins[0])
    begin = [int(v) for v in cv.value(ins[1], "begin").reshape(-1)]
    size = [int(v) for v in cv.value(ins[2], "size").reshape(-1)]
    if len(begin) != len(shape) or len(size) != len(shape):
        raise TinycError(f"{cv.where()}: begin {begin} and size {size} do not fit input {shape}")
    size = [d - b if n == -1 else n for d, b, n in zip(shape, begin, size)]
    if any(b < 0 or n < 0 or b + n > d for d, b, n in zip(shape, begin, size)):
        raise TinycError(f"{cv.where()}: begin {begin} and size {size} go outside input {shape}")
    return _window(cv, cv.x(ins[0]), begin, [1] * len(shape), size, size)


def _emit_parts(cv, x, shape, axis, parts, drop_axis=False):
    """One Slice per output of SPLIT / SPLIT_V / UNPACK along `axis` (UNPACK drops it: a free Reshape)."""
    if len(parts) != len(cv.outs) or sum(parts) != shape[axis] or any(p < 0 for p in parts):
        raise TinycError(f"{cv.where()}: parts {parts} do not split {shape[axis]} values into {len(cv.outs)} "
                         "outputs")
    at, last = 0, None
    for o, p in zip(cv.outs, parts):
        cv.out = o
        starts, sizes = [0] * len(shape), list(shape)
        starts[axis], sizes[axis] = at, p
        at += p
        out = sizes[:axis] + sizes[axis + 1:] if drop_axis else sizes
        last = _window(cv, x, starts, [1] * len(shape), sizes, out)
    return last


def split(cv, opts, ins):
    shape = cv.shape(ins[1])
    axis = _axis(cv, int(cv.value(ins[0], "axis").reshape(-1)[0]), len(shape))
    n = int(opts.numSplits) if opts is not None else len(cv.outs)
    if n < 1 or shape[axis] % n:
        raise TinycError(f"{cv.where()}: {shape[axis]} values on axis {axis} do not split into {n} equal parts")
    return _emit_parts(cv, cv.x(ins[1]), shape, axis, [shape[axis] // n] * n)


def split_v(cv, opts, ins):
    shape = cv.shape(ins[0])
    axis = _axis(cv, int(cv.value(ins[2], "axis").reshape(-1)[0]), len(shape))
    parts = [int(v) for v in cv.value(ins[1], "size_splits").reshape(-1)]
    if parts.count(-1) == 1:
        parts[parts.index(-1)] = shape[axis] - (sum(parts) + 1)
    return _emit_parts(cv, cv.x(ins[0]), shape, axis, parts)


def unpack(cv, opts, ins):
    shape = cv.shape(ins[0])
    axis = _axis(cv, int(opts.axis) if opts is not None else 0, len(shape))
    return _emit_parts(cv, cv.x(ins[0]), shape, axis, [1] * shape[axis], drop_axis=True)


def pack(cv, opts, ins):
    shapes = [cv.shape(i) for i in ins]
    if any(s != shapes[0] for s in shapes):
        raise TinycError(f"{cv.where()}: PACK of different shapes {shapes}")
    axis = _axis(cv, int(opts.axis) if opts is not None else 0, len(shapes[0]) + 1)
    one = tuple(shapes[0][:axis]) + (1,) + tuple(shapes[0][axis:])
    if len(ins) == 1:
        return cv.emit("Reshape", [cv.x(ins[0])], one)
    parts = [cv.emit("Reshape", [cv.x(i)], one, final=False, tag=f"part{k}", like=cv.x(i))
             for k, i in enumerate(ins)]
    out = list(one)
    out[axis] = len(ins)
    return cv.emit("Concat", parts, out, axis=axis)


def gather(cv, opts, ins):
    if opts is not None and int(getattr(opts, "batchDims", 0) or 0):
        raise TinycError(f"{cv.where()}: GATHER with batch_dims is not supported")
    if not cv.is_const(ins[1]):       # an embedding lookup: negative indices wrap, out-of-range ones clamp
        shape = cv.value(ins[0], "table").shape if cv.is_const(ins[0]) else cv.shape(ins[0])
        axis = _axis(cv, int(opts.axis) if opts is not None else 0, len(shape))
        idx = cv.x(ins[1])
        if cv.g.tensors[idx].dtype not in ("int32", "int64"):
            raise TinycError(f"{cv.where()}: GATHER indices are {cv.g.tensors[idx].dtype}; TFLite takes int32 or int64")
        table = cv.x(ins[0])
        out = tuple(shape[:axis]) + tuple(cv.shape(ins[1])) + tuple(shape[axis + 1:])
        if any(d == 0 for d in out):
            raise TinycError(f"{cv.where()}: the result would be zero-size {list(out)}; tinyc handles zero-size "
                             "tensors in ONNX models only")
        return cv.emit("Gather", [table, idx], out, axis=axis)
    if cv.is_const(ins[0]):
        raise TinycError(f"{cv.where()}: GATHER from a constant table with constant indices should have been folded "
                         "by the converter; fold it before export")
    shape = cv.shape(ins[0])
    axis = _axis(cv, int(opts.axis) if opts is not None else 0, len(shape))
    idx = cv.value(ins[1], "indices").astype(np.int64)
    d = shape[axis]
    if idx.size and (idx.min() < 0 or idx.max() >= d):
        raise TinycError(f"{cv.where()}: indices {idx.ravel()[:8].tolist()} are outside the {d} values of axis "
                         f"{axis} (TFLite refuses them)")
    out = tuple(shape[:axis]) + idx.shape + tuple(shape[axis + 1:])
    flat = idx.reshape(-1)
    steps = np.diff(flat)
    if idx.ndim <= 1 and (flat.size == 1 or (flat.size > 1 and steps[0] != 0 and np.all(steps == steps[0]))):
        starts, st, sizes = [0] * len(shape), [1] * len(shape), list(shape)
        starts[axis], sizes[axis] = int(flat[0]), flat.size
        st[axis] = int(steps[0]) if flat.size > 1 else 1
        return _window(cv, cv.x(ins[0]), starts, st, sizes, out)
    if any(d == 0 for d in out):
        raise TinycError(f"{cv.where()}: the result would be zero-size {list(out)}; tinyc handles zero-size "
                         "tensors in ONNX models only")
    return cv.emit("Gather", [cv.x(ins[0])], out, axis=axis, indices=idx)


def tile(cv, opts, ins):
    shape = cv.shape(ins[0])
    reps = [int(v) for v in cv.value(ins[1], "multiples").reshape(-1)]
    if len(reps) != len(shape) or any(r < 1 for r in reps):
        raise TinycError(f"{cv.where()}: multiples {reps} do not fit input {shape}")
    out = tuple(d * r for d, r in zip(shape, reps))
    if out == tuple(shape):
        return cv.emit("Identity", [cv.x(ins[0])], out)
    return cv.emit("Tile", [cv.x(ins[0])], out, reps=tuple(reps))


def broadcast_to(cv, opts, ins):
    shape = cv.shape(ins[0])
    target = tuple(int(v) for v in cv.value(ins[1], "shape").reshape(-1))
    try:
        out = tuple(np.broadcast_shapes(tuple(shape), target))
    except ValueError:
        raise TinycError(f"{cv.where()}: input {shape} does not broadcast to {list(target)}") from None
    if out != target or any(d == 0 for d in out):
        raise TinycError(f"{cv.where()}: input {shape} does not broadcast to {list(target)}")
    if out == tuple(shape):
        return cv.emit("Identity", [cv.x(ins[0])], out)
    return cv.emit("BroadcastTo", [cv.x(ins[0])], out, target=out)


def transpose(cv, opts, ins):
    shape = cv.shape(ins[0])
    perm = [int(v) for v in cv.value(ins[1], "perm").reshape(-1)]
    if sorted(p % len(shape) for p in perm) != list(range(len(shape))):
        raise TinycError(f"{cv.where()}: perm {perm} is not a permutation of {len(shape)} axes")
    perm = tuple(p % len(shape) for p in perm)
    out = tuple(shape[p] for p in perm)
    if perm == tuple(range(len(shape))):
        return cv.emit("Identity", [cv.x(ins[0])], out)
    return cv.emit("Transpose", [cv.x(ins[0])], out, perm=perm)


def depth_space(to_space: bool):
    """DEPTH_TO_SPACE / SPACE_TO_DEPTH (NHWC, DCR order): Reshape -> Transpose -> Reshape."""
    def convert(cv, opts, ins):
        from .movement import depth_space as steps
        x = cv.x(ins[0])
        mid, perm, out = steps(cv.shape(ins[0]), int(opts.blockSize) if opts is not None else 0, to_space,
                               False, True, cv.where())
        a = cv.emit("Reshape", [x], mid, final=False, tag="blocks", like=x)
        b = cv.emit("Transpose", [a], tuple(mid[p] for p in perm), final=False, tag="moved", like=x, perm=perm)
        return cv.emit("Reshape", [b], out)
    return convert


def _blocks(cv, ins, what: str) -> tuple[list, np.ndarray]:
    """SPACE_TO_BATCH_ND's / BATCH_TO_SPACE_ND's block shape (one per spatial axis after the batch) and its
    paddings / crops ([m, 2], >= 0)."""
    shape = cv.shape(ins[0])
    block = [int(v) for v in cv.value(ins[1], "block_shape").reshape(-1)]
    edges = cv.value(ins[2], what).astype(np.int64)
    m = len(block)
    if not 1 <= m <= len(shape) - 1 or min(block) < 1 or edges.shape != (m, 2) or np.any(edges < 0):
        raise TinycError(f"{cv.where()}: block shape {block} and {what} {edges.tolist()} do not fit input {shape}")
    if cv.runtime_dtype(cv.out) == "int8":
        a, b = cv.quant(ins[0]), cv.quant(cv.out)
        if a is None or b is None or not (np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point,
                                                                                            b.zero_point)):
            raise TinycError(f"{cv.where()}: int8 input and output have different scales or zero points; TFLite "
                             "copies the raw bytes, which tinyc does not reproduce (the converter makes them equal)")
    return block, edges


def space_to_batch_nd(cv, opts, ins):
    """SPACE_TO_BATCH_ND (how the converter writes a dilated 1-D / 2-D convolution): Pad (int8: with the zero
    point, as TFLite) -> Reshape [N, H'/bh, bh, W'/bw, bw, ...] -> Transpose [bh, bw, N, H'/bh, W'/bw, ...] ->
    Reshape [bh*bw*N, H'/bh, W'/bw, ...]."""
    shape = cv.shape(ins[0])
    block, pads = _blocks(cv, ins, "paddings")
    m = len(block)
    padded = [shape[1 + i] + int(pads[i, 0]) + int(pads[i, 1]) for i in range(m)]
    if any(p % b for p, b in zip(padded, block)):
        raise TinycError(f"{cv.where()}: padded spatial sizes {padded} are not multiples of the block shape {block}")
    x = cv.x(ins[0])
    rest = tuple(shape[1 + m:])
    if any(pads.reshape(-1)):
        value = int(np.asarray(cv.quant(cv.out).zero_point).reshape(-1)[0]) if cv.runtime_dtype(cv.out) == "int8" \
            else 0.0
        widths = ((0, 0),) + tuple((int(b), int(e)) for b, e in pads) + ((0, 0),) * len(rest)
        x = cv.emit("Pad", [x], (shape[0], *padded, *rest), final=False, tag="padded", like=x, pads=widths,
                    value=value)
    split = (shape[0],) + tuple(d for p, b in zip(padded, block) for d in (p // b, b)) + rest
    perm = tuple(2 + 2 * i for i in range(m)) + (0,) + tuple(1 + 2 * i for i in range(m)) + \
        tuple(range(1 + 2 * m, len(split)))
    x = cv.emit("Reshape", [x], split, final=False, tag="blocks", like=x)
    x = cv.emit("Transpose", [x], tuple(split[p] for p in perm), final=False, tag="moved", like=x, perm=perm)
    return cv.emit("Reshape", [x], (shape[0] * int(np.prod(block)),) + tuple(p // b for p, b in zip(padded, block))
                   + rest)


def batch_to_space_nd(cv, opts, ins):
    """BATCH_TO_SPACE_ND: Reshape [bh, bw, N, h, w, ...] -> Transpose [N, h, bh, w, bw, ...] -> Reshape
    [N, h*bh, w*bw, ...] -> Slice of the crops."""
    shape = cv.shape(ins[0])
    block, crops = _blocks(cv, ins, "crops")
    m = len(block)
    count = int(np.prod(block))
    if shape[0] % count:
        raise TinycError(f"{cv.where()}: batch {shape[0]} is not a multiple of the block shape {block}")
    n, rest = shape[0] // count, tuple(shape[1 + m:])
    full = [shape[1 + i] * block[i] for i in range(m)]
    sizes = [f - int(c[0]) - int(c[1]) for f, c in zip(full, crops)]
    if min(sizes) < 1:
        raise TinycError(f"{cv.where()}: crops {crops.tolist()} leave nothing of {full}")
    split = tuple(block) + (n,) + tuple(shape[1:1 + m]) + rest
    perm = (m,) + tuple(a for i in range(m) for a in (m + 1 + i, i)) + tuple(range(2 * m + 1, len(split)))
    x = cv.emit("Reshape", [cv.x(ins[0])], split, final=False, tag="blocks", like=cv.x(ins[0]))
    x = cv.emit("Transpose", [x], tuple(split[p] for p in perm), final=False, tag="moved", like=x, perm=perm)
    x = cv.emit("Reshape", [x], (n, *full, *rest), final=not any(crops.reshape(-1)), tag="joined", like=x)
    if not any(crops.reshape(-1)):
        return x
    out = (n, *sizes, *rest)
    return cv.emit("Slice", [x], out, starts=(0, *(int(c[0]) for c in crops), *(0,) * len(rest)),
                   steps=(1,) * len(out), sizes=out)


def mirror_pad(cv, opts, ins):
    shape = cv.shape(ins[0])
    pads = _pads(cv, ins, len(shape))
    mode = {0: "reflect", 1: "symmetric"}.get(int(opts.mode) if opts is not None else 0)
    if mode is None:
        raise TinycError(f"{cv.where()}: unknown MIRROR_PAD mode {opts.mode}")
    out = tuple(d + b + e for d, (b, e) in zip(shape, pads))
    return cv.emit("PadBorder", [cv.x(ins[0])], out, pads=pads, mode=mode)


def cast(cv, opts, ins):
    a, b = cv.dtype_name(ins[0]), cv.dtype_name(cv.out)
    if a != "FLOAT32" or b != "FLOAT32":
        raise TinycError(f"{cv.where()}: CAST from {a} to {b}; tinyc casts float32 to float32 only (integer "
                         "runtime tensors are not supported yet)")
    return cv.emit("Identity", [cv.x(ins[0])], cv.shape(ins[0]))


def resize(mode: str):
    """RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR: NHWC, H and W to the constant `size`, TFLite's coordinates."""
    def convert(cv, opts, ins):
        n, h, w, c = _rank4(cv, ins[0])
        size = [int(v) for v in cv.value(ins[1], "size").reshape(-1)]
        if len(size) != 2 or min(size) < 1:
            raise TinycError(f"{cv.where()}: size {size} must be two positive values (height, width)")
        align = bool(getattr(opts, "alignCorners", False)) if opts is not None else False
        half = bool(getattr(opts, "halfPixelCenters", False)) if opts is not None else False
        if align and half:
            raise TinycError(f"{cv.where()}: align_corners and half_pixel_centers are both set; TFLite allows one")
        out = (n, size[0], size[1], c)
        if out == (n, h, w, c):
            return cv.emit("Identity", [cv.x(ins[0])], out)
        coord = "tflite_align_corners" if align else "tflite_half_pixel" if half else "tflite_asymmetric"
        return cv.emit("Resize", [cv.x(ins[0])], out, sizes=out, mode=mode, coord=coord,
                       scales=(1.0, size[0] / h, size[1] / w, 1.0), nearest_mode="floor", cubic_coeff_a=-0.75,
                       exclude_outside=0)
    return convert


# Operators with several outputs: the rule writes every one of `cv.outs`, setting `cv.out` before each.
MULTI_OUTPUT_OPS = frozenset({"SPLIT", "SPLIT_V", "UNPACK"}) | RECURRENT_MULTI_OUTPUT | VARIABLE_OUTPUTS


TFLITE_OPS = {
    "CONV_2D": conv_2d,
    "CONV_3D": conv_3d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "TRANSPOSE_CONV": transpose_conv,
    "FULLY_CONNECTED": fully_connected,
    "BATCH_MATMUL": batch_matmul,
    "SVDF": svdf,
    "ADD": _binary("Add"),
    "SUB": _binary("Sub"),
    "MUL": _binary("Mul"),
    "DIV": _binary("Div"),
    "POW": _binary("Pow"),
    "MAXIMUM": _binary("Max"),
    "MINIMUM": _binary("Min"),
    "SQUARED_DIFFERENCE": _binary("SquaredDifference"),
    "PRELU": _binary("PRelu"),
    **{op: _compare(op.lower()) for op in ("LESS", "GREATER", "EQUAL", "LESS_EQUAL", "GREATER_EQUAL")},
    "SELECT": select,
    "SELECT_V2": select,
    "AVERAGE_POOL_2D": _pool("AvgPool2D", count_include_pad=False),   # TFLite averages over the valid cells
    "MAX_POOL_2D": _pool("MaxPool2D"),
    "MEAN": reduction("mean"),
    "SUM": reduction("sum"),
    "REDUCE_MAX": reduction("max"),
    "REDUCE_MIN": reduction("min"),
    "REDUCE_PROD": reduction("prod"),
    "ARG_MAX": arg_min_max("max"),
    "ARG_MIN": arg_min_max("min"),
    "RESHAPE": reshape,
    "SQUEEZE": squeeze,
    "EXPAND_DIMS": expand_dims,
    "SOFTMAX": softmax,
    "LOG_SOFTMAX": log_softmax,
    "L2_NORMALIZATION": l2_normalization,
    "LOGISTIC": _activation({"fn": "sigmoid"}),
    "TANH": _activation({"fn": "tanh"}),
    "RELU": _activation({"fn": "relu"}),
    "RELU6": _activation(relu6()),
    "RELU_N1_TO_1": _activation({"fn": "clip", "lo": -1.0, "hi": 1.0}),
    "LEAKY_RELU": leaky_relu,
    "HARD_SWISH": _activation({"fn": "hard_swish"}),
    "ELU": _activation({"fn": "elu", "alpha": 1.0}),
    "GELU": gelu,
    **{op: _activation({"fn": op.lower()}) for op in ("ABS", "NEG", "EXP", "LOG", "SQRT", "RSQRT", "SQUARE", "SIN",
                                                      "COS", "FLOOR", "CEIL", "ROUND")},
    "PAD": pad,
    "PADV2": pad,
    "CONCATENATION": concatenation,
    "QUANTIZE": quantize,
    "DEQUANTIZE": dequantize,
    "SPLIT": split,
    "SPLIT_V": split_v,
    "SLICE": slice_,
    "STRIDED_SLICE": strided_slice,
    "GATHER": gather,
    "TILE": tile,
    "BROADCAST_TO": broadcast_to,
    "PACK": pack,
    "UNPACK": unpack,
    "TRANSPOSE": transpose,
    "DEPTH_TO_SPACE": depth_space(True),
    "SPACE_TO_DEPTH": depth_space(False),
    "SPACE_TO_BATCH_ND": space_to_batch_nd,
    "BATCH_TO_SPACE_ND": batch_to_space_nd,
    "MIRROR_PAD": mirror_pad,
    "CAST": cast,
    "RESIZE_NEAREST_NEIGHBOR": resize("nearest"),
    "RESIZE_BILINEAR": resize("linear"),
    **RECURRENT_OPS,
    **VARIABLE_OPS,
}
# Hybrid (dynamic-range) layers, float activations with int8 weights: tflite_hybrid.py
TFLITE_OPS.update(hybrid_rules(TFLITE_OPS))
TFLITE_OPS["TRANSPOSE_CONV"] = refuse_hybrid(TFLITE_OPS["TRANSPOSE_CONV"], "filter")


# -- compile-time folding of constant sub-graphs -------------------------------------------------------------
def fold_shape(cv, opts, ins):
    out_type = int(getattr(opts, "outType", 2) or 2) if opts is not None else 2
    return np.asarray(cv.shape(ins[0]), np.int64 if out_type == 4 else np.int32)   # 4 = INT64


def _strided_index(cv, opts, ins) -> tuple:
    """STRIDED_SLICE as a numpy basic index. TF semantics: per index entry, a bit of begin/end mask means 'from the
    start'/'to the end', ellipsis and new-axis masks insert `...`/a new axis, shrink-axis takes the single element
    `begin` and drops the axis (exactly numpy basic indexing)."""
    begin, end = cv.value(ins[1], "begin").reshape(-1), cv.value(ins[2], "end").reshape(-1)
    strides = cv.value(ins[3], "strides").reshape(-1) if len(ins) > 3 and ins[3] >= 0 else np.ones_like(begin)
    if opts is not None and getattr(opts, "offset", False):
        raise TinycError(f"{cv.where()}: STRIDED_SLICE with offset=true is not supported")
    bm, em, elm, nm, sm = ((int(getattr(opts, f, 0) or 0) if opts is not None else 0)
                           for f in ("beginMask", "endMask", "ellipsisMask", "newAxisMask", "shrinkAxisMask"))
    index = []
    for i in range(len(begin)):
        bit = 1 << i
        if elm & bit:
            index.append(Ellipsis)
        elif nm & bit:
            index.append(np.newaxis)
        elif sm & bit:
            index.append(int(begin[i]))
        else:
            if int(strides[i]) == 0:
                raise TinycError(f"{cv.where()}: STRIDED_SLICE with stride 0")
            index.append(slice(None if bm & bit else int(begin[i]), None if em & bit else int(end[i]),
                               int(strides[i])))
    return tuple(index)


def fold_strided_slice(cv, opts, ins):
    x = cv.value(ins[0])
    return np.array(x[_strided_index(cv, opts, ins)])   # (np.ascontiguousarray would turn a 0-d result into 1-d)


def fold_pack(cv, opts, ins):
    vals = [cv.value(i) for i in ins]
    axis = int(opts.axis) if opts is not None else 0
    return np.stack(vals, axis=axis % (vals[0].ndim + 1))


def fold_dequantize(cv, opts, ins):
    v = cv.value(ins[0])
    if v.dtype == np.float16 or np.issubdtype(v.dtype, np.floating):
        return v.astype(np.float32)
    q = cv.quant(ins[0])
    if q is None:
        raise TinycError(f"{cv.where()}: DEQUANTIZE of '{cv.tname(ins[0])}' without quantization parameters")
    scale, zp = np.asarray(q.scale, np.float32), np.asarray(q.zero_point, np.float32)
    if q.axis is not None and scale.ndim == 1:
        bshape = [1] * v.ndim
        bshape[q.axis] = -1
        scale, zp = scale.reshape(bshape), zp.reshape(bshape)
    return ((v.astype(np.float32) - zp) * scale).astype(np.float32)


def fold_reshape(cv, opts, ins):
    v = cv.value(ins[0])
    return v.reshape(_reshape_target(cv, opts, ins, v.shape))


def fold_squeeze(cv, opts, ins):
    v = cv.value(ins[0])
    return v.reshape(_squeeze_shape(cv, opts, v.shape))


def fold_expand_dims(cv, opts, ins):
    v = cv.value(ins[0])
    return v.reshape(_expand_shape(cv, ins, v.shape))


def fold_concatenation(cv, opts, ins):
    if fused_act(cv, opts) is not None:
        raise TinycError(f"{cv.where()}: constant CONCATENATION with a fused activation is not supported")
    vals = [cv.value(i) for i in ins]
    return np.concatenate(vals, axis=int(opts.axis) % vals[0].ndim)


def fold_pad(cv, opts, ins):
    v = cv.value(ins[0])
    value = cv.value(ins[2]).reshape(-1)[0] if len(ins) > 2 and ins[2] >= 0 else 0
    return np.pad(v, _pads(cv, ins, v.ndim), constant_values=value)



def fold_gather(cv, opts, ins):
    """GATHER of constants: shape arithmetic on a folded SHAPE (Keras' Tensordot of a sequence: the batch and
    feature sizes picked out of the input's shape)."""
    if opts is not None and int(getattr(opts, "batchDims", 0) or 0):
        raise TinycError(f"{cv.where()}: GATHER with batch_dims is not supported")
    table, idx = cv.value(ins[0], "table"), cv.value(ins[1], "indices").astype(np.int64)
    axis = _axis(cv, int(opts.axis) if opts is not None else 0, table.ndim)
    if idx.size and (idx.min() < -table.shape[axis] or idx.max() >= table.shape[axis]):
        raise TinycError(f"{cv.where()}: indices {idx.ravel()[:8].tolist()} are outside the {table.shape[axis]} "
                         f"values of axis {axis}")
    return np.take(table, idx, axis=axis)


def fold_reduce_prod(cv, opts, ins):
    v = cv.value(ins[0])
    axes = tuple(sorted({_axis(cv, int(a), v.ndim) for a in cv.value(ins[1], "axes").reshape(-1)}))
    keep = bool(opts.keepDims) if opts is not None else False
    return np.prod(v, axis=axes, keepdims=keep).astype(v.dtype)

FOLD_OPS = {
    "SHAPE": fold_shape,
    "STRIDED_SLICE": fold_strided_slice,
    "PACK": fold_pack,
    "DEQUANTIZE": fold_dequantize,
    "RESHAPE": fold_reshape,
    "SQUEEZE": fold_squeeze,
    "EXPAND_DIMS": fold_expand_dims,
    "CONCATENATION": fold_concatenation,
    "PAD": fold_pad,
    "PADV2": fold_pad,
    "GATHER": fold_gather,
    "REDUCE_PROD": fold_reduce_prod,
}
