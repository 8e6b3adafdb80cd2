"""Write a tinyc IR graph (float32 or int8) as a TFLite flatbuffer, so TFLite's reference kernels can run it.

Why: the TFLite converter only makes the int8 models its own quantizer picks, so tests cannot ask it for extreme
zero points, scales from 1e-6 to 1e2 or per-channel multipliers that shift both ways; and tinyc's own
post-training quantizer needs an oracle for the int8 IR it produces. Written as .tflite, exactly the graph tinyc
compiles runs in `tf.lite.Interpreter` (BUILTIN_REF kernels), whose int8 arithmetic is the bit-exact reference.

The file is built with TensorFlow's generated schema module (object API: ModelT, SubGraphT, TensorT, ...) and
`flatbuffers.Builder`; no bytes are encoded by hand. Tensors keep their IR names and NHWC layout except
depthwise filters: IR [C*mult,KH,KW,1] becomes TFLite [1,KH,KW,C*mult] (per-channel axis 0 becomes 3).
TFLite knows only SAME and VALID padding: a Conv2D whose pads are neither is written as PAD then VALID; pooling
pads must be SAME or VALID (a PAD would change what an average counts). Every operator is written
as version 1, which every TFLite op resolver registers; kernels read types and quantization from the tensors.

Streaming state is written in TFLite's resource-variable form (what tinyc's frontend reads back,
frontends/tflite_variables.py): CALL_ONCE of an init subgraph assigning each variable its initial value, then per
state tensor VAR_HANDLE + READ_VARIABLE into it, the graph's operators, and ASSIGN_VARIABLE of each next value.
TFLite's interpreter keeps the variables across invoke(), as the C keeps its state.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..frontends.geometry import conv_geometry
from ..ir import Graph, Node, Quant
from ..nibbles import pack_int4
from ..passes.fuse_activation import activation_of

__all__ = ["graph_to_tflite", "write_tflite"]

IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
DEPTHWISE_PERM = (3, 1, 2, 0)   # IR [C*mult,KH,KW,1] <-> TFLite [1,KH,KW,C*mult] (its own inverse)
LAST_CLASSIC_CODE = 127         # deprecated_builtin_code is an int8: larger codes store 127 there
# activation key -> TFLite name; the first three are also fused activation codes (ActivationFunctionType)
CLAMPS = {("relu",): "RELU", ("clip", 0.0, 6.0): "RELU6", ("clip", -1.0, 1.0): "RELU_N1_TO_1",
          ("clip", 0.0, 1.0): "RELU_0_TO_1"}
FUSABLE_CLAMPS = ("RELU", "RELU6", "RELU_N1_TO_1")
PLAIN_ACTIVATIONS = {"sigmoid": "LOGISTIC", "tanh": "TANH", "hard_swish": "HARD_SWISH", "abs": "ABS", "sqrt": "SQRT",
                     "rsqrt": "RSQRT", "exp": "EXP", "log": "LOG", "neg": "NEG"}


def _schema():
    """TensorFlow's generated flatbuffer schema module (object API), imported quietly."""
    from ..keras_runtime import import_keras
    try:
        import_keras()
        from tensorflow.lite.python import schema_py_generated
    except (TinycError, ImportError):
        raise TinycError("writing .tflite models needs TensorFlow (its tensorflow.lite schema module); "
                         "pip install tensorflow") from None
    return schema_py_generated


def _activation_key(act: dict) -> tuple:
    if act.get("fn") == "clip":
        return "clip", float(act["lo"]), float(act["hi"])
    return (act.get("fn"),)


def _le_bytes(data: np.ndarray, dtype: str) -> np.ndarray:
    """Constant data as the little-endian uint8 vector a TFLite buffer holds (int4: two values per byte, low
    nibble first, as TFLite's INT4 tensors)."""
    if dtype == "int4":
        return pack_int4(data)
    arr = np.ascontiguousarray(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(-1)
    return arr.view(np.uint8)


class _Writer:
    """Collects TFLite tensors, buffers, operator codes and operators while the IR nodes are written."""

    def __init__(self, S, g: Graph):
        self.S = S
        self.g = g
        self.buffers = [S.BufferT()]            # buffer 0: the empty sentinel TFLite requires
        self.tensors: list = []
        self.index: dict[tuple, int] = {}       # (IR name, layout permutation) -> tensor index
        self.codes: list = []
        self.code_index: dict[int, int] = {}    # builtin code -> index into operatorCodes
        self.operators: list = []
        self.init_subgraph = None               # streaming state: CALL_ONCE's subgraph (index 1)
        self.lstm_states, self.lstm_done = _lstm_carried_states(g)   # carried by LSTMs' variable tensors

    # -- tensors --------------------------------------------------------------------------------------------
    def _add(self, name: str, shape, dtype: str, data, quant: Quant | None, tensors: list | None = None) -> int:
        """A tensor (and its buffer) in `tensors` (default: the main subgraph's); its index there."""
        S = self.S
        kind = getattr(S.TensorType, dtype.upper(), None)
        if kind is None:
            raise TinycError(f"tensor '{name}' has dtype {dtype}, which cannot be written to TFLite")
        buf = S.BufferT()
        if data is not None:
            buf.data = _le_bytes(data, dtype)
        t = S.TensorT()
        t.name, t.type, t.shape = name, kind, [int(d) for d in shape]
        t.buffer = len(self.buffers)
        t.quantization = self._quant(quant)
        self.buffers.append(buf)
        tensors = self.tensors if tensors is None else tensors
        tensors.append(t)
        return len(tensors) - 1

    def _quant(self, quant: Quant | None):
        if quant is None:
            return None
        q = self.S.QuantizationParametersT()
        q.scale = np.asarray(quant.scale, np.float32).reshape(-1)       # the exact dtypes the vectors hold:
        q.zeroPoint = np.asarray(quant.zero_point, np.int64).reshape(-1)  # numpy arrays are copied raw
        q.quantizedDimension = int(quant.axis or 0)
        return q

    def tensor(self, name: str, perm: tuple | None = None) -> int:
        """Index of IR tensor `name` in the file (added on first use); `perm` stores it transposed."""
        key = (name, perm)
        if key not in self.index:
            t = self.g.tensors[name]
            shape, data, quant = t.shape, t.data, t.quant
            if perm is not None:
                shape = tuple(shape[p] for p in perm)
                data = None if data is None else data.transpose(perm)
                if quant is not None and quant.axis is not None:
                    quant = Quant(quant.scale, quant.zero_point, perm.index(quant.axis))
            self.index[key] = self._add(name, shape, t.dtype, data, quant)
        return self.index[key]

    def const(self, name: str, values, dtype: str = "int32") -> int:
        """A helper constant the IR keeps as an attribute (axes, shapes, paddings, pad values)."""
        arr = np.asarray(values, dtype)
        return self._add(name, arr.shape, dtype, arr, None)

    # -- operators ------------------------------------------------------------------------------------------
    def options(self, kind: str, **fields):
        """A `<kind>T` builtin options object with `fields` set (each checked to exist in the schema)."""
        opts = getattr(self.S, kind + "T")()
        for field, value in fields.items():
            if not hasattr(opts, field):
                raise AttributeError(f"{kind} has no field {field}")
            setattr(opts, field, value)
        return opts

    def op(self, builtin: str, inputs: list, node: Node | None, options=None, outputs: list | None = None,
           into: list | None = None) -> None:
        """Append an operator (to `into`, default the main subgraph's list)."""
        S = self.S
        code = int(getattr(S.BuiltinOperator, builtin))
        if code not in self.code_index:
            oc = S.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, LAST_CLASSIC_CODE), 1
            self.code_index[code] = len(self.codes)
            self.codes.append(oc)
        o = S.OperatorT()
        o.opcodeIndex = self.code_index[code]
        o.inputs = [int(i) for i in inputs]
        o.outputs = outputs if outputs is not None else [self.tensor(n) for n in node.outputs]
        if options is not None:   # the union's type tag is the options table's name
            o.builtinOptionsType = getattr(S.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        (self.operators if into is None else into).append(o)

    def fused(self, node: Node) -> int:
        """The fused activation code of `node` (ActivationFunctionType)."""
        act = node.attrs.get("activation")
        if act is None:
            return self.S.ActivationFunctionType.NONE
        name = CLAMPS.get(_activation_key(act))
        if name not in FUSABLE_CLAMPS:
            raise TinycError(f"node '{node.name}' ({node.op}): fused activation {act} has no TFLite fused "
                             "activation code (only relu, relu6 and clip(-1, 1))")
        return getattr(self.S.ActivationFunctionType, name)

    def padding(self, node: Node, kernel, dilations=(1, 1), explicit_ok: bool = False) -> int | None:
        """The TFLite padding (SAME or VALID) that reproduces the node's explicit pads (None if neither, when
        `explicit_ok`: the caller then writes a PAD)."""
        x = self.g.tensors[node.inputs[0]]
        strides, pads = node.attrs["strides"], tuple(int(p) for p in node.attrs["pads"])
        for mode in ("valid", "same"):
            (_, top, bottom), (_, left, right) = (conv_geometry(x.shape[1 + i], int(kernel[i]), int(strides[i]),
                                                                int(dilations[i]), mode) for i in (0, 1))
            if (top, left, bottom, right) == pads:
                return getattr(self.S.Padding, mode.upper())
        if explicit_ok:
            return None
        raise TinycError(f"node '{node.name}' ({node.op}): pads {pads} are neither SAME nor VALID padding, the "
                         "only ones TFLite has")

    def model(self):
        S = self.S
        sg = S.SubGraphT()
        sg.name = self.g.name
        sg.inputs = [self.tensor(n) for n in self.g.inputs]
        sg.outputs = [self.tensor(n) for n in self.g.outputs]
        sg.tensors, sg.operators = self.tensors, self.operators
        m = S.ModelT()
        m.version, m.description = SCHEMA_VERSION, f"tinyc IR graph '{self.g.name}'"
        m.operatorCodes, m.subgraphs, m.buffers = self.codes, [sg], self.buffers
        if self.init_subgraph is not None:
            m.subgraphs.append(self.init_subgraph)
        return m

    # -- streaming state ------------------------------------------------------------------------------------
    def _resource(self, tensors: list, name: str) -> int:
        t = self.S.TensorT()
        t.name, t.type, t.shape, t.buffer = f"{name}_handle", self.S.TensorType.RESOURCE, [], 0
        tensors.append(t)
        return len(tensors) - 1

    def _var_handle(self, name: str):
        return self.options("VarHandleOptions", container="", sharedName=name)

    def read_state(self) -> dict:
        """CALL_ONCE(init subgraph), then VAR_HANDLE + READ_VARIABLE into every state tensor; its handles."""
        S, g = self.S, self.g
        init = S.SubGraphT()
        init.name, init.inputs, init.outputs, init.tensors, init.operators = f"{g.name}_init", [], [], [], []
        for s, value in g.initial_state().items():
            if s in self.lstm_states:
                continue
            handle = self._resource(init.tensors, s)
            t = g.tensors[s]
            initial = self._add(f"{s}_initial", t.shape, t.dtype, value, t.quant, init.tensors)
            self.op("VAR_HANDLE", [], None, self._var_handle(s), [handle], into=init.operators)
            self.op("ASSIGN_VARIABLE", [handle, initial], None, outputs=[], into=init.operators)
        self.init_subgraph = init
        self.op("CALL_ONCE", [], None, self.options("CallOnceOptions", initSubgraphIndex=1), outputs=[])
        handles = {}
        for s in [s for s in g.state if s not in self.lstm_states]:
            handles[s] = self._resource(self.tensors, s)
            self.op("VAR_HANDLE", [], None, self._var_handle(s), [handles[s]])
            self.op("READ_VARIABLE", [handles[s]], None, outputs=[self.tensor(s)])
        return handles

    def update_state(self, handles: dict) -> None:
        """ASSIGN_VARIABLE of each next value (none for a state that keeps its value)."""
        for s, v in self.g.state.items():
            if v != s and s not in self.lstm_states:
                self.op("ASSIGN_VARIABLE", [handles[s], self.tensor(v)], None, outputs=[])


# -- one writer per IR op ------------------------------------------------------------------------------------
def _inputs(w: _Writer, node: Node) -> list:
    return [w.tensor(n) for n in node.inputs]


def _conv(w: _Writer, node: Node) -> None:
    a = node.attrs
    x, weights = (w.g.tensors[n] for n in node.inputs[:2])
    channels, out_channels, groups = x.shape[3], weights.shape[0], int(a.get("groups", 1))
    dilations = a.get("dilations", (1, 1))
    padding = w.padding(node, weights.shape[1:3], dilations, explicit_ok=True)
    x_index = w.tensor(x.name)
    if padding is None:   # pads TFLite's SAME/VALID cannot express (e.g. a fused asymmetric pad): PAD, then VALID
        t, left, b, r = (int(p) for p in a["pads"])
        padded = w._add(f"{node.name}_padded", (x.shape[0], x.shape[1] + t + b, x.shape[2] + left + r, x.shape[3]),
                        x.dtype, None, x.quant)
        w.op("PAD", [x_index, w.const(f"{node.name}_paddings", [[0, 0], [t, b], [left, r], [0, 0]])], node,
             w.options("PadOptions"), outputs=[padded])
        x_index, padding = padded, w.S.Padding.VALID
    common = {"padding": padding, "strideH": int(a["strides"][0]),
              "strideW": int(a["strides"][1]), "dilationHFactor": int(dilations[0]),
              "dilationWFactor": int(dilations[1]), "fusedActivationFunction": w.fused(node)}
    bias = [w.tensor(n) for n in node.inputs[2:]] or [_zero_bias(w, node, x, weights, out_channels)]
    if groups != 1 and groups == channels and weights.shape[3] == 1 and out_channels % channels == 0:
        filt = w.tensor(weights.name, DEPTHWISE_PERM)
        w.op("DEPTHWISE_CONV_2D", [x_index, filt] + bias, node,
             w.options("DepthwiseConv2DOptions", depthMultiplier=out_channels // channels, **common))
    else:    # grouped too: CONV_2D takes the groups from the filter's input depth (C / groups), as the converter's
        w.op("CONV_2D", [x_index, w.tensor(weights.name)] + bias, node, w.options("Conv2DOptions", **common))


def _transpose_conv(w: _Writer, node: Node) -> None:
    """TRANSPOSE_CONV(output shape, filter, input, bias?): no groups, no dilation. TFLite derives the crop before
    from the output size (SAME or VALID conv padding of an input that large); another crop is VALID and a SLICE."""
    a = node.attrs
    x, weights, y = w.g.tensors[node.inputs[0]], w.g.tensors[node.inputs[1]], w.g.tensors[node.outputs[0]]
    if int(a.get("groups", 1)) != 1 or tuple(a["dilations"]) != (1, 1):
        raise TinycError(f"node '{node.name}': TFLite's TRANSPOSE_CONV has no groups or dilations")
    padding = None
    for mode, code in (("valid", w.S.Padding.VALID), ("same", w.S.Padding.SAME)):
        if all(conv_geometry(y.shape[1 + i], weights.shape[1 + i], int(a["strides"][i]), 1, mode)[1] == a["pads"][i]
               for i in (0, 1)):
            padding = code
            break
    top, left = int(a["pads"][0]), int(a["pads"][1])
    full, outputs = tuple(y.shape), None
    if padding is None:    # VALID (no crop) over the rows and columns before too, then a SLICE drops them
        if top < 0 or left < 0:
            raise TinycError(f"node '{node.name}': TRANSPOSE_CONV cannot extend its output before the first input "
                             f"(pads {tuple(a['pads'])})")
        padding, full = w.S.Padding.VALID, (y.shape[0], y.shape[1] + top, y.shape[2] + left, y.shape[3])
        outputs = [w._add(f"{node.name}_uncropped", full, y.dtype, None, y.quant)]
    shape = w.const(f"{node.name}_output_shape", [int(d) for d in full])
    w.op("TRANSPOSE_CONV", [shape, w.tensor(weights.name), w.tensor(x.name)] + [w.tensor(n) for n in node.inputs[2:]],
         node, w.options("TransposeConvOptions", padding=padding, strideH=int(a["strides"][0]),
                         strideW=int(a["strides"][1]), fusedActivationFunction=w.fused(node)), outputs=outputs)
    if outputs is not None:
        w.op("SLICE", [outputs[0], w.const(f"{node.name}_begin", [0, top, left, 0]),
                       w.const(f"{node.name}_size", [int(d) for d in y.shape])], node, w.options("SliceOptions"))


def _zero_bias(w: _Writer, node: Node, x, weights, channels: int) -> int:
    """TFLite's CONV_2D insists on a bias tensor: zeros (int32 with scale input * weight scale for int8, int64 for
    16x8)."""
    if x.dtype == "float32":
        return w._add(f"{node.name}_bias", (channels,), "float32", np.zeros(channels, np.float32), None)
    ws = np.broadcast_to(np.asarray(weights.quant.scale, np.float32).reshape(-1), (channels,))
    q = Quant((np.float32(np.asarray(x.quant.scale).reshape(-1)[0]) * ws).astype(np.float32),
              np.zeros(channels, np.int64), 0)
    kind = "int64" if x.dtype == "int16" else "int32"       # 16x8: TFLite's int16 CONV_2D takes an int64 bias
    return w._add(f"{node.name}_bias", (channels,), kind, np.zeros(channels, kind), q)


def _dense(w: _Writer, node: Node) -> None:
    rank = len(w.g.tensors[node.inputs[0]].shape)   # keepNumDims off flattens the input to [rows, K]
    opts = w.options("FullyConnectedOptions", fusedActivationFunction=w.fused(node), keepNumDims=rank != 2)
    w.op("FULLY_CONNECTED", _inputs(w, node), node, opts)


def _binary(builtin: str):
    def write(w: _Writer, node: Node) -> None:
        opts = w.options(builtin.title() + "Options", fusedActivationFunction=w.fused(node))
        if builtin in ("ADD", "SUB"):      # the schema's default is true: TFLite's int16 power-of-two kernel
            opts.potScaleInt16 = bool(node.attrs.get("pot_scale_int16", False))
        w.op(builtin, _inputs(w, node), node, opts)
    return write


def _activation(w: _Writer, node: Node) -> None:
    act = activation_of(node)
    if act.get("fn") == "leaky_relu":
        w.op("LEAKY_RELU", _inputs(w, node), node, w.options("LeakyReluOptions", alpha=float(act["alpha"])))
        return
    if act.get("fn") == "elu":
        if float(act.get("alpha", 1.0)) != 1.0:
            raise TinycError(f"node '{node.name}': ELU with alpha {act['alpha']:g}; TFLite's ELU has alpha 1")
        w.op("ELU", _inputs(w, node), node)
        return
    if act.get("fn") in ("gelu", "gelu_tanh"):
        w.op("GELU", _inputs(w, node), node, w.options("GeluOptions", approximate=act["fn"] == "gelu_tanh"))
        return
    builtin = PLAIN_ACTIVATIONS.get(act.get("fn")) or CLAMPS.get(_activation_key(act))
    if builtin is None:
        raise TinycError(f"node '{node.name}': activation {act} has no TFLite builtin")
    w.op(builtin, _inputs(w, node), node)


def _softmax(w: _Writer, node: Node) -> None:
    rank = len(w.g.tensors[node.inputs[0]].shape)
    if int(node.attrs.get("axis", -1)) % rank != rank - 1:
        raise TinycError(f"node '{node.name}': TFLite SOFTMAX works on the last axis only")
    w.op("SOFTMAX", _inputs(w, node), node, w.options("SoftmaxOptions", beta=float(node.attrs.get("beta", 1.0))))


def _log_softmax(w: _Writer, node: Node) -> None:
    rank = len(w.g.tensors[node.inputs[0]].shape)
    if int(node.attrs.get("axis", -1)) % rank != rank - 1:
        raise TinycError(f"node '{node.name}': TFLite LOG_SOFTMAX works on the last axis only")
    w.op("LOG_SOFTMAX", _inputs(w, node), node, w.options("LogSoftmaxOptions"))


def _l2_normalization(w: _Writer, node: Node) -> None:
    a, rank = node.attrs, len(w.g.tensors[node.inputs[0]].shape)
    if a["p"] != 2 or a["axis"] != rank - 1:
        raise TinycError(f"node '{node.name}': TFLite L2_NORMALIZATION is p = 2 over the last axis")
    w.op("L2_NORMALIZATION", _inputs(w, node), node, w.options("L2NormOptions"))

def _pool(builtin: str):
    def write(w: _Writer, node: Node) -> None:
        a = node.attrs
        if a.get("count_include_pad") and any(a["pads"]):
            raise TinycError(f"node '{node.name}': TFLite AVERAGE_POOL_2D never counts padded cells")
        opts = w.options("Pool2DOptions", padding=w.padding(node, a["kernel"]), strideH=int(a["strides"][0]),
                         strideW=int(a["strides"][1]), filterHeight=int(a["kernel"][0]),
                         filterWidth=int(a["kernel"][1]), fusedActivationFunction=w.fused(node))
        w.op(builtin, _inputs(w, node), node, opts)
    return write


def _mean(w: _Writer, node: Node) -> None:
    rank = len(w.g.tensors[node.inputs[0]].shape)
    axes = w.const(f"{node.name}_axes", [int(ax) % rank for ax in node.attrs["axes"]])
    opts = w.options("ReducerOptions", keepDims=bool(node.attrs.get("keepdims", False)))
    w.op("MEAN", [w.tensor(node.inputs[0]), axes], node, opts)


def _reshape(w: _Writer, node: Node) -> None:
    target = [int(d) for d in w.g.tensors[node.outputs[0]].shape]
    shape = w.const(f"{node.name}_shape", target)
    w.op("RESHAPE", [w.tensor(node.inputs[0]), shape], node, w.options("ReshapeOptions", newShape=target))


def _transpose(w: _Writer, node: Node) -> None:
    perm = w.const(f"{node.name}_perm", [int(p) for p in node.attrs["perm"]])
    w.op("TRANSPOSE", [w.tensor(node.inputs[0]), perm], node, w.options("TransposeOptions"))


def _pad(w: _Writer, node: Node) -> None:
    """Float pads with 0.0 (PAD) or a constant (PADV2); int8 always pads with the zero point, so the IR value
    (raw int8) must be it."""
    x = w.g.tensors[node.inputs[0]]
    value = node.attrs.get("value")
    paddings = w.const(f"{node.name}_paddings", [[int(b), int(e)] for b, e in node.attrs["pads"]])
    ins = [w.tensor(x.name), paddings]
    if x.dtype == "float32" and value:
        fill = w.const(f"{node.name}_value", value, "float32")
        w.op("PADV2", ins + [fill], node, w.options("PadV2Options"))
        return
    if x.dtype != "float32" and value is not None:
        zero = int(np.asarray(x.quant.zero_point).reshape(-1)[0]) if x.quant is not None else 0
        if int(value) != zero:
            raise TinycError(f"node '{node.name}': TFLite pads {x.dtype} tensors with their zero point {zero}, "
                             f"not {value}")
    w.op("PAD", ins, node, w.options("PadOptions"))


def _concat(w: _Writer, node: Node) -> None:
    rank = len(w.g.tensors[node.inputs[0]].shape)
    opts = w.options("ConcatenationOptions", axis=int(node.attrs["axis"]) % rank,
                     fusedActivationFunction=w.fused(node))
    w.op("CONCATENATION", _inputs(w, node), node, opts)


def _resize(w: _Writer, node: Node) -> None:
    """RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR of H and W of an NHWC tensor, in TFLite's coordinates (or
    ONNX's that mean the same)."""
    from ..ops.resize import tflite_coord
    x, y = w.g.tensors[node.inputs[0]].shape, w.g.tensors[node.outputs[0]].shape
    coord = tflite_coord(node.attrs, x, y)
    if coord is None:
        raise TinycError(f"node '{node.name}': TFLite has no resize computing {node.attrs['mode']} with "
                         f"{node.attrs['coord']} coordinates ({x} -> {y})")
    size = w.const(f"{node.name}_size", [int(y[1]), int(y[2])])
    flags = dict(alignCorners=coord == "tflite_align_corners", halfPixelCenters=coord == "tflite_half_pixel")
    if node.attrs["mode"] == "linear":
        w.op("RESIZE_BILINEAR", [w.tensor(node.inputs[0]), size], node, w.options("ResizeBilinearOptions", **flags))
    else:
        w.op("RESIZE_NEAREST_NEIGHBOR", [w.tensor(node.inputs[0]), size], node,
             w.options("ResizeNearestNeighborOptions", **flags))


def _gather(w: _Writer, node: Node) -> None:
    """GATHER along `axis`: constant indices (the attribute) as an int32 tensor, or the runtime indices input."""
    if len(node.inputs) > 1:
        indices = w.tensor(node.inputs[1])
    else:
        indices = w.const(f"{node.name}_indices", np.asarray(node.attrs["indices"]))
    rank = len(w.g.tensors[node.inputs[0]].shape)
    w.op("GATHER", [w.tensor(node.inputs[0]), indices], node,
         w.options("GatherOptions", axis=int(node.attrs["axis"]) % rank))


def _lstm_carried_states(g: Graph) -> tuple[set, set]:
    """The state tensors an int8 LSTM carries in its own variable tensors (TFLite writes the final h and c back into
    them, as tinyc's quantizer makes a float .tflite LSTM or a Keras stateful one), and the nodes whose work the
    kernel does: the Reshapes from the LSTM's final c (its second output, `cell_output`) to the c state's next
    value. The final h must be the sequence's last step (Slice, Reshape) or the node's last_h output."""
    states, done = set(), set()
    for n in g.nodes:
        if n.op != "LSTM" or n.inputs[4] not in g.state:
            continue
        h0, c0 = n.inputs[4], n.inputs[5]
        T = g.tensors[n.inputs[0]].shape[1]
        chain, name = [], g.state.get(c0)
        while name is not None and g.producer(name) is not None and g.producer(name).op == "Reshape":
            chain.append(g.producer(name))
            name = chain[-1].inputs[0]
        source = g.producer(name) if name is not None else None
        own = source is n and name == n.outputs[-1] and n.attrs.get("cell_output")
        behind = chain[1:] + ([n] if chain else [])
        if not own or g.state[c0] in g.outputs or \
                any(len(g.consumers(m.outputs[-1])) != 1 or m.outputs[-1] in g.outputs for m in behind):
            raise TinycError(f"node '{n.name}': state '{c0}' is not carried as TFLite's LSTM carries its cell state "
                             "(the next value must be this LSTM's final c alone)")
        name = g.state[h0]
        while g.producer(name) is not None and g.producer(name).op == "Reshape":
            name = g.producer(name).inputs[0]
        p = g.producer(name)
        if p is not None and p.op == "Slice" and p.attrs["starts"][1] == T - 1 and p.attrs["sizes"][1] == 1:
            name = p.inputs[0]
            while g.producer(name) is not None and g.producer(name).op == "Slice" and \
                    g.tensors[g.producer(name).inputs[0]].shape == g.tensors[name].shape:   # a whole-tensor copy
                name = g.producer(name).inputs[0]
        if name != n.outputs[0] or (n.attrs["output"] == "sequence") == (p is n):
            raise TinycError(f"node '{n.name}': state '{h0}' is not carried as TFLite's LSTM carries its hidden state "
                             "(the next value must be this LSTM's final h)")
        states |= {h0, c0}
        done |= {id(m) for m in chain}
    return states, done


def _int8_lstm(w: _Writer, node: Node) -> None:
    """An int8 LSTM node (TFLite's integer LSTM, tinyc/ops/lstm_int8.py) as UNIDIRECTIONAL_SEQUENCE_LSTM, written
    as the converter writes it: the gates' weights and biases as 8 + 4 tensors (one scale each), h and c as
    variable tensors (TFLite resets them to their zero points and carries them across invoke() until reset: the
    node's h0 and c0 must be those zero points), five intermediates of which the fifth carries `hidden_quant`.
    The kernel's output is the whole sequence: a last-step output is a SLICE and a RESHAPE of it. It runs forward
    only (tinyc's quantizer makes a reverse LSTM a forward one between two Gathers)."""
    g, a = w.g, node.attrs
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    B, T, _ = x.shape
    H = g.tensors[node.inputs[2]].shape[1]
    if x.dtype != "int8":
        raise TinycError(f"node '{node.name}': only int8 LSTMs (TFLite's integer LSTM) are written to TFLite")
    if a["output"] not in ("sequence", "last_h"):
        raise TinycError(f"node '{node.name}': LSTM output '{a['output']}' has no TFLite form (its kernel gives the "
                         "sequence)")
    h0, c0 = g.tensors[node.inputs[4]], g.tensors[node.inputs[5]]
    for t, what in ((h0, "h0"), (c0, "c0")):
        zp = int(np.asarray(t.quant.zero_point).reshape(-1)[0])
        if t.name not in w.lstm_states and (not t.is_const or np.any(np.asarray(t.data) != zp)):
            raise TinycError(f"node '{node.name}': initial state {what} is not its zero point; TFLite's LSTM starts "
                             "from its variable tensors, reset to their zero points")

    def per_tensor(scales, k: int) -> Quant:
        return Quant(np.asarray(np.asarray(scales, np.float32).reshape(-1)[k * H], np.float32),
                     np.asarray(0, np.int64))

    if a.get("reverse"):
        raise TinycError(f"node '{node.name}': TFLite's integer LSTM runs forward only; write the reverse LSTM as a "
                         "forward one between Gathers along time")
    ins = [w.tensor(x.name)]
    for k in (1, 2):     # the four gates' weights, each its own tensor with its gate's scale
        t = g.tensors[node.inputs[k]]
        for gate in range(4):
            ins.append(w._add(f"{node.name}_{'wr'[k - 1]}{'ifco'[gate]}", (H, t.shape[1]), "int8",
                              np.asarray(t.data)[gate * H:(gate + 1) * H], per_tensor(t.quant.scale, gate)))
    ins += [-1, -1, -1]  # no peepholes
    b = g.tensors[node.inputs[3]]
    ins += [w._add(f"{node.name}_b{'ifco'[gate]}", (H,), "int32", np.asarray(b.data)[gate * H:(gate + 1) * H],
                   per_tensor(b.quant.scale, gate)) for gate in range(4)]
    ins += [-1, -1]      # no projection
    for t, what in ((h0, "output_state"), (c0, "cell_state")):    # a carried state: the variable is the state
        ins.append(w._add(t.name if t.name in w.lstm_states else f"{node.name}_{what}", (B, H), t.dtype, None,
                          t.quant))
        w.tensors[ins[-1]].isVariable = True
    ins += [-1, -1, -1, -1]   # no layer normalization
    inter = [w._add(f"{node.name}_intermediate{k}", (0,), "float32", None, None) for k in range(4)]
    s_e, z_e = a["hidden_quant"]
    inter.append(w._add(f"{node.name}_effective_hidden", (0,), "int8", None,
                        Quant(np.asarray(s_e, np.float32), np.asarray(int(z_e), np.int64))))
    seq = w.tensor(y.name) if a["output"] == "sequence" else w._add(f"{node.name}_sequence", (B, T, H), "int8", None,
                                                                     y.quant)
    opts = w.options("UnidirectionalSequenceLSTMOptions", fusedActivationFunction=w.S.ActivationFunctionType.TANH,
                     cellClip=float(a.get("cell_clip") or 0.0), projClip=0.0, timeMajor=False,
                     asymmetricQuantizeInputs=False)
    w.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, node, opts, [seq])
    w.operators[-1].intermediates = inter
    if a["output"] == "last_h":
        step = w._add(f"{node.name}_last_step", (B, 1, H), "int8", None, y.quant)
        w.op("SLICE", [seq, w.const(f"{node.name}_begin", [0, T - 1, 0]), w.const(f"{node.name}_size", [B, 1, H])],
             node, w.options("SliceOptions"), [step])
        w.op("RESHAPE", [step, w.const(f"{node.name}_shape", [B, H])], node,
             w.options("ReshapeOptions", newShape=[B, H]), [w.tensor(y.name)])


def _plain(builtin: str):
    def write(w: _Writer, node: Node) -> None:
        w.op(builtin, _inputs(w, node), node)
    return write


def _slice(w: _Writer, node: Node) -> None:
    """SLICE for unit steps, else STRIDED_SLICE (an end before index 0 of a backwards axis: its end_mask bit)."""
    a = node.attrs
    starts, steps, sizes = (list(int(v) for v in a[k]) for k in ("starts", "steps", "sizes"))
    x = w.tensor(node.inputs[0])
    if all(s == 1 for s in steps):
        w.op("SLICE", [x, w.const(f"{node.name}_begin", starts), w.const(f"{node.name}_size", sizes)], node,
             w.options("SliceOptions"))
        return
    ends = [b + s * n for b, s, n in zip(starts, steps, sizes)]
    mask = sum(1 << i for i, e in enumerate(ends) if e < 0)
    w.op("STRIDED_SLICE", [x, w.const(f"{node.name}_begin", starts), w.const(f"{node.name}_end", ends),
                           w.const(f"{node.name}_strides", steps)], node,
         w.options("StridedSliceOptions", endMask=mask))


def _gate_tensor(w: _Writer, node: Node, i: int, gate: int, H: int) -> int:
    """Gate `gate`'s H rows of weights or bias input `i`, with their per-channel scales (written once, shared
    by every step)."""
    t = w.g.tensors[node.inputs[i]]
    rows = slice(gate * H, (gate + 1) * H)
    scale = np.asarray(t.quant.scale, np.float32).reshape(-1)
    scale = scale[rows] if scale.size > 1 else scale
    quant = Quant(scale, np.zeros(scale.shape, np.int64), 0)
    return w._add(f"{t.name}_gate{gate}", (H,) + tuple(t.shape[1:]), t.dtype, t.data[rows], quant)


def _recurrent_chain(w: _Writer, node: Node) -> None:
    """An int8 GRU / RNN node as TFLite's int8 ops, one chain per step (tinyc/ops/gru_rnn_int8.py): SLICE of x_t,
    FULLY_CONNECTED / ADD / SUB / MUL / LOGISTIC / TANH over [B,H] tensors with the node's shared parameters, then
    CONCATENATION + RESHAPE of the steps' h into the sequence (or the last h as the output)."""
    from ..ops import gru_rnn_int8 as chain_op
    g, a = w.g, node.attrs
    x, out = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    if x.dtype != "int8" or a.get("step_quant") is None:
        raise TinycError(f"node '{node.name}': a {x.dtype} {node.op} has no TFLite builtin; tinyc writes int8 "
                         f"{node.op} nodes of its --quantize int8 only")
    B, T, I = x.shape
    H = g.tensors[node.inputs[2]].shape[1]
    steps = chain_op.chain(node)
    quant = {r: Quant(np.asarray(sz[0], np.float32), np.asarray(sz[1], np.int64)) for r, sz in a["step_quant"].items()}
    quant["h"] = out.quant
    fc_inputs = {}
    for s in steps:
        if s.kind == "fc" and (s.matrix, s.gate) not in fc_inputs:
            i = 1 if s.matrix == "w" else 2
            bias = _gate_tensor(w, node, 3 if s.matrix == "w" else 4, s.gate, H) if s.bias else -1
            fc_inputs[s.matrix, s.gate] = (_gate_tensor(w, node, i, s.gate, H), bias)
    fc_opts = w.options("FullyConnectedOptions", fusedActivationFunction=w.S.ActivationFunctionType.NONE,
                        keepNumDims=False)
    h, outputs = w.tensor(node.inputs[-1]), {}
    order = range(T - 1, -1, -1) if a.get("reverse") else range(T)
    for n_step, t in enumerate(order):
        last = n_step == T - 1
        xt = w._add(f"{node.name}_x{t}", (B, 1, I), "int8", None, x.quant)
        w.op("SLICE", [w.tensor(x.name), w.const(f"{node.name}_x{t}_begin", [0, t, 0]),
                       w.const(f"{node.name}_x{t}_size", [B, 1, I])], node, w.options("SliceOptions"), outputs=[xt])
        value = {"x": xt, "h": h}
        for s in steps:
            if s.out == "h" and last and a["output"] == "last_h":
                y = w.tensor(out.name)
            else:
                y = w._add(f"{node.name}_{s.out}{t}", (B, H), "int8", None, quant[s.out])
            ins = [value[r] for r in s.ins]
            if s.kind == "fc":
                w.op("FULLY_CONNECTED", ins + list(fc_inputs[s.matrix, s.gate]), node, fc_opts, outputs=[y])
            elif s.kind == "act":
                w.op("LOGISTIC" if s.fn == "sigmoid" else "TANH", ins, node, outputs=[y])
            else:
                builtin = s.kind.upper()
                fused = getattr(w.S.ActivationFunctionType, "RELU" if s.fn == "relu" else "NONE")
                w.op(builtin, ins, node, w.options(builtin.title() + "Options", fusedActivationFunction=fused),
                     outputs=[y])
            value[s.out] = y
        h = outputs[t] = value["h"]
    if a["output"] == "sequence":
        joined = outputs[0]
        if T > 1:
            joined = w._add(f"{node.name}_steps", (B, T * H), "int8", None, out.quant)
            w.op("CONCATENATION", [outputs[t] for t in range(T)], node,
                 w.options("ConcatenationOptions", axis=1, fusedActivationFunction=w.S.ActivationFunctionType.NONE),
                 outputs=[joined])
        shape = w.const(f"{node.name}_shape", [B, T, H])
        w.op("RESHAPE", [joined, shape], node, w.options("ReshapeOptions", newShape=[B, T, H]))


WRITERS = {
    "LSTM": _int8_lstm, "Gather": _gather,
    "Conv2D": _conv, "ConvTranspose2D": _transpose_conv,
    "Dense": _dense, "Add": _binary("ADD"), "Sub": _binary("SUB"), "Mul": _binary("MUL"),
    "Div": _binary("DIV"), "Activation": _activation, "Softmax": _softmax, "LogSoftmax": _log_softmax,
    "MaxPool2D": _pool("MAX_POOL_2D"), "AvgPool2D": _pool("AVERAGE_POOL_2D"), "Mean": _mean,
    "Reshape": _reshape, "Transpose": _transpose, "Pad": _pad, "Concat": _concat, "Resize": _resize,
    "Quantize": _plain("QUANTIZE"), "Dequantize": _plain("DEQUANTIZE"), "LpNormalize": _l2_normalization,
    "GRU": _recurrent_chain, "RNN": _recurrent_chain, "Slice": _slice,
}


def graph_to_tflite(g: Graph) -> bytes:
    """The .tflite flatbuffer (schema version 3; one subgraph, and CALL_ONCE's with streaming state) computing what
    the IR graph `g` computes."""
    import flatbuffers
    g.validate()
    w = _Writer(_schema(), g)
    for name in g.inputs:
        w.tensor(name)          # inputs first, as the converter orders them
    handles = w.read_state() if set(g.state) - w.lstm_states else {}
    for node in g.nodes:
        if id(node) in w.lstm_done:     # the final c: TFLite's LSTM writes it into its variable tensor
            continue
        rule = WRITERS.get(node.op)
        if rule is None:
            raise TinycError(f"node '{node.name}': op {node.op} cannot be written to TFLite (supported: "
                             f"{', '.join(WRITERS)})")
        rule(w, node)
    if g.state:
        w.update_state(handles)
    builder = flatbuffers.Builder(1024)
    builder.Finish(w.model().Pack(builder), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


def write_tflite(g: Graph, path: str) -> None:
    """Write `g` as a .tflite file at `path`."""
    data = graph_to_tflite(g)
    with open(path, "wb") as f:
        f.write(data)
