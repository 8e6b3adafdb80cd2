"""ONNX frontend: an .onnx file -> IR graph in NHWC.

Layout: every runtime value carries a `Layout` saying how its ONNX (logical) array relates to the physical array
we store: logical = physical.transpose(perm). Convolutions and pooling want NHWC physical storage, i.e. NCHW
logical on perm (0,3,1,2). ONNX Transpose nodes only relabel the perm: no copy. A copy (an IR Transpose) is
materialized only where an op needs a layout the value does not have, e.g. at an NCHW model input. A Flatten of
an NCHW value feeding Gemm/MatMul is no copy either: the value is flattened in NHWC order and the Gemm weights are
permuted at compile time (`Layout.flat`).

Shape sub-graphs (Shape, Gather, Slice, Concat, Unsqueeze, Cast on constants) are evaluated at compile time with
onnx's reference evaluator and disappear.

Quantized (QDQ) models: QuantizeLinear / DequantizeLinear on computed values become IR Quantize / Dequantize
with int8 tensors (uint8 values are shifted to int8 on the way in, see `quantized_type`); a DequantizeLinear of
an initializer is kept as a `QuantizedConst`, so weights stay integer (`add_quantized_const`). The pass
`fold_qdq` then turns the float ops between them into int8 ops (docs/onnx-qdq.md).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import MALFORMED, TinycError
from ..ir import Graph, Quant

# Element types of runtime tensors (and of the C API); float16, double and the like are refused.
RUNTIME_DTYPES = ("float32", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool",
                  "int4", "uint4", "int2", "uint2")   # 4- and 2-bit: one value per byte in the C API

# The opsets the op rules read; others are converted (`_within_read_opsets`).
MIN_OPSET, MAX_OPSET = 11, 23
# Ops whose versions after MAX_OPSET the rules read too, up to the version given (what changed), beside the ops
# that changed only in the types they take (`_reads_newer_opset`).
NEWER_OP_VERSIONS = {
    "Cast": 28, "CastLike": 25,    # 24: round_mode, for float8e8m0 only (refused); 25 and 28: more types
    "QuantizeLinear": 28,          # 25: int2 / uint2 (the documented ranges); 24 and 28: more types
    "Mod": 28,                     # fmod=0 on floats (the divisor's sign), which the Mod rule computes
    "SpaceToDepth": 28,            # mode: DCR or CRD
}


@dataclass(frozen=True)
class Layout:
    perm: tuple                    # logical = physical.transpose(perm)
    flat: tuple | None = None      # for a 2-D [1, K] value: logical[:, j] = physical[:, flat[j]]
    flat_source: str | None = None  # the 4-D value `flat` came from, to materialize it if needed

    @property
    def is_plain(self) -> bool:
        return self.flat is None and self.perm == tuple(range(len(self.perm)))


def plain(rank: int) -> Layout:
    return Layout(tuple(range(rank)))


def channels_last(rank: int) -> Layout:
    """NC... logical stored as N...C physical."""
    return Layout((0, rank - 1) + tuple(range(1, rank - 1)))


def inverse(perm) -> tuple:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


@dataclass
class QuantizedConst:
    """An integer initializer read through DequantizeLinear: real = scale * (values - zero_point), per channel
    along `axis` when `scale` is 1-D. uint8 data is already shifted to int8 (values and zero point - 128)."""
    values: np.ndarray        # int8 or int32
    scale: np.ndarray         # float32, 0-d or 1-D
    zero_point: np.ndarray    # int64, shaped like scale
    axis: int | None
    source: str               # the initializer's name, for messages

    def dequantized(self) -> np.ndarray:
        """The float32 array DequantizeLinear computes."""
        shape = [1] * self.values.ndim
        if self.axis is not None:
            shape[self.axis] = -1
        scale, zp = self.scale.reshape(shape), self.zero_point.reshape(shape)
        return ((self.values.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


def quantized_type(dtype, what: str) -> str:
    """'int8' or 'uint8' for the integer type of a QuantizeLinear / DequantizeLinear value; anything else
    (int16, int4, float8, ...) is refused."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name in ("int8", "uint8"):
        return name
    raise TinycError(f"{what} is quantized to {name}; tinyc compiles int8 and uint8 QDQ models only")


def shift_to_int8(values, qtype: str):
    """uint8 integers (values or zero points) as int8: q_i8 = q_u8 - 128. Applied to both the values and the
    zero point it leaves real = scale * (q - zero_point) unchanged, so the IR only ever holds int8."""
    values = np.asarray(values)
    if qtype == "uint8":
        return (values.astype(np.int16) - 128).astype(np.int8)
    return values


def _moved_axis(shape: tuple, axis: int, to_ir) -> int:
    """Where data movement `to_ir` takes axis `axis` of an array of `shape` (found by moving an index grid)."""
    n = shape[axis]
    grid = np.broadcast_to(np.arange(n).reshape([-1 if d == axis else 1 for d in range(len(shape))]), shape)
    moved = np.asarray(to_ir(grid))
    for k in range(moved.ndim):
        ref = np.arange(moved.shape[k]).reshape([-1 if d == k else 1 for d in range(moved.ndim)])
        if moved.shape[k] == n and np.array_equal(moved, np.broadcast_to(ref, moved.shape)):
            return k
    raise TinycError("internal: a per-channel weight axis does not survive the layout change")


class OnnxImporter:
    """Holds conversion state; the per-op rules live in onnx_ops.py."""

    def __init__(self, model, graph: Graph, io_layout: str):
        self.model = model
        self.g = graph
        self.io_layout = io_layout
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.consts: dict[str, np.ndarray] = {}
        self.qconsts: dict[str, QuantizedConst] = {}       # DequantizeLinear of an initializer (also in consts)
        self.qtypes: dict[str, str] = {}                   # onnx name of a quantized value -> 'int8' / 'uint8'
        self.values: dict[str, tuple[str, Layout]] = {}   # onnx name -> (ir tensor name, layout)
        self.shapes: dict[str, tuple] = {}                 # onnx name -> logical shape
        self.dtypes: dict[str, str] = {}                   # onnx name -> element type (from shape inference)
        self._materialized: dict[tuple, str] = {}
        self.consumers: dict[str, list] = {}
        for node in model.graph.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
        self.output_names = {o.name for o in model.graph.output}
        self.node = None     # the node being converted, for messages

    # -- values -----------------------------------------------------------------------------------------------
    def const(self, name: str, what: str = "") -> np.ndarray:
        if name not in self.consts:
            raise TinycError(f"{what or 'this input'} ('{name}') must be a constant in the model; "
                             "tinyc supports constant weights only")
        return self.consts[name]

    def opt_const(self, node, i: int):
        return self.consts.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    def logical_shape(self, name: str) -> tuple:
        if name in self.consts:
            return tuple(self.consts[name].shape)
        if name not in self.shapes:
            raise TinycError(f"cannot infer a static shape for tensor '{name}'; pass --input-shape or "
                             "simplify the model (e.g. onnxsim)")
        return self.shapes[name]

    def forget_shapes_after(self, name: str) -> None:
        """Drop the inferred shapes of everything computed from `name` (they are inferred again node by node)."""
        todo = [name]
        while todo:
            for node in self.consumers.get(todo.pop(), []):
                for out in node.output:
                    if out in self.shapes:
                        del self.shapes[out]
                        todo.append(out)

    def layout(self, name: str) -> Layout:
        return self.values[name][1]

    def define(self, onnx_name: str, layout: Layout, ir_name: str | None = None,
               source: bool = True, like: str | None = None) -> str:
        """Create the IR tensor for ONNX value `onnx_name` stored physically in `layout`; with `like` (an IR
        tensor), of that tensor's dtype and quantization (ops that only move quantized data). A uint8 value
        (shifted to int8) names no reference value: the two would differ by 128."""
        logical = self.logical_shape(onnx_name)
        if layout.flat is not None:
            phys = logical
        else:
            inv = inverse(layout.perm)
            phys = tuple(logical[i] for i in inv)
        ir_name = self.g.unique_name(ir_name or onnx_name)
        perm = None if layout.flat is not None or layout.is_plain else layout.perm
        source = source and layout.flat is None and self.qtypes.get(onnx_name) != "uint8"
        dtype = self.dtypes.get(onnx_name, "float32")   # integer and bool values keep their type
        t = self.g.add_tensor(ir_name, phys, dtype if dtype in RUNTIME_DTYPES else "float32",
                              source_name=onnx_name if source else None, source_perm=perm)
        if like is not None:
            t.dtype, t.quant = self.g.tensors[like].dtype, self.g.tensors[like].quant
        self.values[onnx_name] = (ir_name, layout)
        return ir_name

    def alias(self, out: str, inp: str, layout: Layout | None = None) -> None:
        """`out` is the same stored data as `inp` (possibly relabelled): no IR node at all."""
        self.values[out] = (self.values[inp][0], layout or self.values[inp][1])

    def get(self, name: str, want: Layout | None = None) -> str:
        """The IR tensor for `name` stored in layout `want` (default: as it is), copying once if needed."""
        if name not in self.values:
            if name in self.consts and np.size(self.consts[name]) == 0:
                where = f"ONNX {self.node.op_type} '{self.node.name or self.node.output[0]}'" if self.node else "an op"
                raise TinycError(f"{where} reads the zero-size tensor '{name}' {list(np.shape(self.consts[name]))} "
                                 "beside computed ones; tinyc computes an op on a zero-size tensor at compile time, "
                                 "which needs its other inputs constant")
            if name in self.consts:
                raise TinycError(f"constant '{name}' used where tinyc expects a computed tensor; "
                                 "fold constants before export (e.g. onnxsim)")
            raise TinycError(f"tensor '{name}' is used but never defined in the model")
        ir_name, have = self.values[name]
        if want is None or want == have:
            return ir_name
        key = (name, want)
        if key not in self._materialized:
            if have.flat is not None:   # back to the 4-D source first, then a plain flatten
                src = self.get(have.flat_source, plain(len(self.layout(have.flat_source).perm)))
                ir_name = self.g.unique_name(name + "_flat")
                self._add_copy_tensor(ir_name, self.logical_shape(name), src, name, None)
                self.g.add_node("Reshape", [src], [ir_name], name=ir_name)
                have = plain(2)
                if want == have:
                    self._materialized[key] = ir_name
                    return ir_name
            if want.flat is not None:
                raise TinycError(f"internal: cannot store '{name}' in a flattened layout")
            logical = self.logical_shape(name)
            phys = tuple(logical[i] for i in inverse(want.perm))
            out = self.g.unique_name(name + ("_nhwc" if want.perm != tuple(range(len(want.perm))) else "_t"))
            self._add_copy_tensor(out, phys, ir_name, name, None if want.is_plain else want.perm)
            self.g.add_node("Transpose", [ir_name], [out], name=out,
                            perm=tuple(have.perm[j] for j in inverse(want.perm)))
            self._materialized[key] = out
        return self._materialized[key]

    def _add_copy_tensor(self, ir_name, shape, src: str, onnx_name: str, perm) -> None:
        """The IR tensor of a layout copy of IR tensor `src`: same dtype and quantization."""
        s = self.g.tensors[src]
        self.g.add_tensor(ir_name, shape, s.dtype, quant=s.quant, source_perm=perm,
                          source_name=onnx_name if self.qtypes.get(onnx_name) != "uint8" else None)

    def add_quantized_const(self, qc: QuantizedConst, ir_name: str, to_ir, scale_by: float = 1.0) -> str:
        """An integer constant in IR layout plus the IR Dequantize reading it; returns the (float) output.
        `to_ir` only moves data (transpose, reshape, broadcast), so the integers move unchanged; the per-channel
        axis goes where `to_ir` takes it. `scale_by` > 0 folds a constant factor (Gemm alpha) into the scale."""
        values = np.ascontiguousarray(to_ir(qc.values))
        axis = None if qc.axis is None else _moved_axis(qc.values.shape, qc.axis, to_ir)
        scale = (qc.scale * np.float32(scale_by)).astype(np.float32)
        q_name = self.g.add_const(ir_name + "_q", values, str(values.dtype))
        self.g.tensors[q_name].quant = Quant(scale, qc.zero_point.copy(), axis)
        out = self.g.unique_name(ir_name)
        self.g.add_tensor(out, values.shape)
        self.g.add_node("Dequantize", [q_name], [out], name=out)
        return out

    def const_in_layout(self, arr: np.ndarray, rank: int, layout: Layout, dtype=np.float32) -> np.ndarray:
        """A broadcasting constant operand brought into the physical layout of a rank-`rank` value."""
        arr = np.asarray(arr, dtype=dtype)
        if layout.is_plain:
            return arr
        if layout.flat is not None:
            raise TinycError("internal: elementwise constant on a flattened value")
        full = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
        return np.ascontiguousarray(full.transpose(inverse(layout.perm)))


# ONNX ops that may read quantized (int8) values directly: the QDQ pair and pure data movement.
READS_QUANTIZED = frozenset({"QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                             "Transpose", "Identity", "Dropout"})


def _refuse_quantized_reads(imp, node) -> None:
    """A float op fed an int8 value would compute on the stored integers: say so instead."""
    if node.op_type in READS_QUANTIZED:
        return
    for name in node.input:
        if name in imp.values and imp.g.tensors[imp.values[name][0]].quant is not None:
            raise TinycError(f"ONNX {node.op_type} '{node.name or node.output[0]}' reads the quantized tensor "
                             f"'{name}' directly; tinyc reads quantized ONNX models in QDQ form (DequantizeLinear "
                             "before every float op)")


def _check_quantized_output(imp, name: str) -> None:
    if imp.qtypes.get(name) == "uint8":
        raise TinycError(f"model output '{name}' is uint8; tinyc's quantized outputs are int8: end the model with "
                         "DequantizeLinear or quantize activations as int8 (QInt8)")


# Ops evaluated at compile time when all their inputs are constants (the shape sub-graphs exporters emit).
CONST_ONLY_OPS = frozenset({
    "Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Reshape", "Constant",
    "ConstantOfShape", "Range", "Equal", "Where", "Expand", "Floor", "Ceil", "Div", "Mul", "Add", "Sub",
    "Identity", "Transpose", "Flatten", "Sqrt", "Neg", "Size", "ReduceProd", "Min", "Max", "Not",
})


def _one_node_model(node, input_infos, initializers, opset):
    """`node` alone as a model, for onnx's reference evaluator and shape inference."""
    from onnx import TensorProto, helper
    outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output if o]
    return helper.make_model(helper.make_graph([node], node.op_type, input_infos, outputs, initializers),
                             opset_imports=[helper.make_opsetid("", opset)])


def _static_shape(value_info) -> tuple | None:
    """The value's shape if every dimension is a known number, else None."""
    ttype = value_info.type.tensor_type
    if not ttype.HasField("shape") or not all(d.HasField("dim_value") for d in ttype.shape.dim):
        return None
    return tuple(int(d.dim_value) for d in ttype.shape.dim)


def _eval_const_node(node, inputs, opset):
    """Evaluate one ONNX node on constant numpy inputs with onnx's reference evaluator."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    names = [n for n in node.input if n]
    vi = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in names]
    try:
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # (log of an empty sum: -inf, as ONNX defines)
            return ReferenceEvaluator(_one_node_model(node, vi, [], opset)).run(None, dict(zip(names, inputs)))
    except Exception as e:  # the model's constants make no sense for this op
        raise TinycError(f"cannot evaluate constant node '{node.name or node.output[0]}' ({node.op_type}): "
                         f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")


# Reductions whose value over an empty set ONNX leaves undefined (onnxruntime and onnx's reference disagree): for
# every element type ("all"), or for the types without an infinity ("integer").
UNDEFINED_OVER_EMPTY = {"ReduceMean": "all", "ReduceLogSum": "integer", "ReduceLogSumExp": "integer"}


def _refuse_undefined_over_empty(node, inputs, outputs) -> None:
    """A reduction of a zero-size input to values (so over an empty set) that ONNX does not define."""
    kind = UNDEFINED_OVER_EMPTY.get(node.op_type)
    x = np.asarray(inputs[0]) if inputs else None
    if kind is None or x is None or x.size or not np.size(outputs[0]):
        return
    if kind == "all" or x.dtype.kind != "f":
        raise TinycError(f"ONNX {node.op_type} '{node.name or node.output[0]}' reduces an empty set ({x.dtype} input "
                         f"{list(x.shape)}), whose value ONNX leaves undefined; give the input a non-zero size or "
                         "remove the reduction")


def _infer_node_shapes(imp, node, opset) -> None:
    """Fill in static output shapes that the whole-model shape inference left unknown (e.g. a Reshape whose
    shape input is a Shape->Gather->Unsqueeze->Concat sub-graph that onnx's data propagation cannot follow at
    some opsets): infer this one node again, now that its shape inputs have been folded to constants."""
    outs = [o for o in node.output if o]
    if all(o in imp.shapes for o in outs):
        return
    from onnx import TensorProto, helper, numpy_helper, shape_inference
    names = list(dict.fromkeys(n for n in node.input if n))
    if any(n not in imp.consts and n not in imp.shapes for n in names):
        return
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(imp.shapes[n])) for n in names
          if n not in imp.consts]
    inits = [numpy_helper.from_array(np.asarray(imp.consts[n]), n) for n in names if n in imp.consts]
    try:
        inferred = shape_inference.infer_shapes(_one_node_model(node, vi, inits, opset), data_prop=True)
    except Exception:
        return   # the caller reports the missing shape
    for v in inferred.graph.output:
        shape = _static_shape(v)
        if v.name not in imp.shapes and shape is not None:
            imp.shapes[v.name] = shape


def _read_model(path: str):
    import onnx
    try:
        model = onnx.load(path)
    except Exception as e:
        raise TinycError(f"'{path}' is not a readable ONNX model ({type(e).__name__}); "
                         "check the file is complete and really .onnx")
    if not model.graph.node and not model.graph.output:
        raise TinycError(f"'{path}' holds no ONNX graph; check the file is a model, not another format")
    return model


def _input_dtype(elem_type: int):
    """The NumPy dtype of an ONNX tensor element type, None where NumPy has none (e.g. bfloat16, float8)."""
    from onnx import helper
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return None


def bind_inputs(model, bind: dict) -> None:
    """Turn the graph inputs named in `bind` ({name: array}) into initializers holding those values, in place:
    parameters a model takes as inputs (weights, biases, norm scales, clip bounds, pads, shapes, ...) become the
    constants tinyc needs; the other inputs stay runtime inputs. Refuses, in one line, a name that is not a graph
    input, and an array whose dtype or shape is not the input's."""
    from onnx import numpy_helper
    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in inits}
    for name, value in bind.items():
        if name not in inputs:
            what = "already a constant (initializer)" if name in inits else "not a graph input"
            raise TinycError(f"cannot bind '{name}': it is {what} of the model; bind one of its inputs: "
                             f"{', '.join(inputs) or '(none)'}")
        vi = inputs[name]
        if vi.type.WhichOneof("value") != "tensor_type":
            raise TinycError(f"cannot bind '{name}': it is a {vi.type.WhichOneof('value')} input, not a tensor")
        ttype = vi.type.tensor_type
        arr = np.asarray(value)
        want = _input_dtype(ttype.elem_type)
        if want is None or arr.dtype != want:
            wanted = want.name if want is not None else f"ONNX element type {ttype.elem_type}"
            raise TinycError(f"cannot bind '{name}': the model's input is {wanted} but the array is {arr.dtype}; "
                             f"save it as {wanted}")
        if ttype.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim]
            if len(dims) != arr.ndim or any(d is not None and d != s for d, s in zip(dims, arr.shape)):
                text = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
                raise TinycError(f"cannot bind '{name}': the model's input has shape {text} but the array has "
                                 f"shape {list(arr.shape)}")
    kept = [i for i in model.graph.input if i.name not in bind]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    for name, value in bind.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    model.ir_version = max(model.ir_version, 4)   # before IR 4 an initializer was also listed as a graph input


def bound_model_file(path: str, bind: dict, directory: str) -> str:
    """`path` with `bind` applied (see `bind_inputs`), written into `directory` under the same file name (so the
    default C name stays the model's); for running the reference runtime on the same constants."""
    import os

    import onnx
    model = _read_model(path)
    bind_inputs(model, bind)
    out = os.path.join(directory, os.path.basename(path))
    try:
        onnx.save(model, out)
    except (OSError, ValueError) as e:
        raise TinycError(f"cannot write the bound model to '{out}' ({type(e).__name__})")
    return out


def _static_inputs(model, input_shapes):
    """Fix every graph input's shape: an unknown first dimension (a dynamic batch) -> 1, other unknown dims from
    `input_shapes` (model layout). A fixed first dimension N is an ordinary dimension: the C API takes all of it."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if input_shapes is not None and len(input_shapes) != len(inputs):
        raise TinycError(f"--input-shape given {len(input_shapes)} time(s) but the model has {len(inputs)} "
                         "input(s); give one per input, in order")
    for k, inp in enumerate(inputs):
        ttype = inp.type.tensor_type
        dtype = _input_dtype(ttype.elem_type)
        if dtype is None or dtype.name not in RUNTIME_DTYPES:
            name = dtype.name if dtype is not None else f"ONNX element type {ttype.elem_type}"
            raise TinycError(f"input '{inp.name}' is {name}; tinyc's runtime tensors are float32, integers (int2 to "
                             "int64, uint2 to uint64) and bool (quantized models in QDQ form: float inputs, "
                             "QuantizeLinear inside)")
        dims = ttype.shape.dim
        given = input_shapes[k] if input_shapes is not None else None
        if given is not None and len(given) != len(dims):
            raise TinycError(f"--input-shape {given} has rank {len(given)} but input '{inp.name}' has rank "
                             f"{len(dims)}")
        for j, d in enumerate(dims):
            if given is not None:
                d.ClearField("dim_param")
                d.dim_value = int(given[j])
            if not d.HasField("dim_value") or d.dim_value < 0:   # (0 is a size: a zero-size input)
                if j == 0:
                    d.ClearField("dim_param")
                    d.dim_value = 1
                else:
                    shape = [x.dim_value if x.HasField("dim_value") else (x.dim_param or "?") for x in dims]
                    raise TinycError(f"input '{inp.name}' has a dynamic shape {shape}; pass --input-shape "
                                     "with the full static shape, e.g. --input-shape 1,3,96,96")
    return inputs


def _same_but_types(old, new) -> bool:
    """Two versions of an op schema that differ at most in the element types they take."""
    def signature(s):
        return (s.doc, sorted((k, a.type, a.required, str(a.default_value)) for k, a in s.attributes.items()),
                [(f.name, f.type_str, f.option) for f in s.inputs], [(f.name, f.type_str, f.option) for f in s.outputs])
    return signature(old) == signature(new)


def _reads_newer_opset(model, opset: int) -> bool:
    """Whether the op rules read a model of an opset above MAX_OPSET as it is: every op in it means what it meant
    at MAX_OPSET, for the types the rules take (each rule checks its types), or is at a version NEWER_OP_VERSIONS
    lists. (onnx's version converter cannot bring some of these down: int2 values, Mod fmod=0 on floats, ...)"""
    from onnx import defs
    for op in {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}:
        try:
            new = defs.get_schema(op, opset)
            if new.since_version <= max(MAX_OPSET, NEWER_OP_VERSIONS.get(op, 0)):
                continue
            if not _same_but_types(defs.get_schema(op, MAX_OPSET), new):
                return False
        except defs.SchemaError:     # an op that is not in these opsets: the converter says so
            return False
    return True


def _within_read_opsets(model):
    """The model in an opset the op rules read (MIN_OPSET-MAX_OPSET, or a newer one `_reads_newer_opset` accepts):
    other opsets are converted with onnx's version converter, whose adapters rewrite each op exactly (or refuse:
    then so does tinyc)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if MIN_OPSET <= opset <= MAX_OPSET:
        return model
    from onnx import defs, version_converter
    newest = defs.onnx_opset_version()
    if not 1 <= opset <= newest:
        raise TinycError(f"ONNX opset {opset} is unknown to the installed onnx (it knows 1-{newest}); re-export the "
                         f"model with an opset from {MIN_OPSET} to {newest}")
    if opset > MAX_OPSET and _reads_newer_opset(model, opset):
        return model
    target = MIN_OPSET if opset < MIN_OPSET else MAX_OPSET
    try:
        return version_converter.convert_version(model, target)
    except Exception as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise TinycError(f"ONNX opset {opset} cannot be converted to opset {target}, which tinyc reads ({reason}); "
                         f"re-export the model with an opset from {MIN_OPSET} to {MAX_OPSET}")


def _upsample_coordinates(original, converted):
    """Upsample and opset-10 Resize map output index o to input floor(o / scale) (asymmetric coordinates, floor);
    onnx's version converter turns them into Resize-11 nodes without saying so (half_pixel, round_prefer_floor by
    default, which differ for non-integer scales): the converted nodes get those attributes."""
    opset = next((o.version for o in original.opset_import if o.domain in ("", "ai.onnx")), 0)
    if converted is original or opset >= 11:
        return converted
    from onnx import helper
    older = {n.output[0] for n in original.graph.node if n.op_type in ("Upsample", "Resize")
             and n.domain in ("", "ai.onnx")}
    for node in converted.graph.node:
        if node.op_type == "Resize" and node.output[0] in older:
            given = {a.name for a in node.attribute}
            for name, value in (("coordinate_transformation_mode", "asymmetric"), ("nearest_mode", "floor")):
                if name not in given:
                    node.attribute.append(helper.make_attribute(name, value))
    return converted


def _per_channel_prelu_slopes(model):
    """Before opset 7, PRelu's slope is one value or one per channel (axis 1), where from opset 7 it broadcasts
    from the trailing axes and onnx's version converter keeps the node as it is: a slope of shape (C,) becomes
    (C, 1, ..., 1) by an Unsqueeze, so that the converted model means what the model means."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    prelus = [n for n in model.graph.node if n.op_type == "PRelu" and n.domain in ("", "ai.onnx")]
    if not 1 <= opset < 7 or not prelus:
        return model
    import onnx
    from onnx import helper, shape_inference
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    shapes = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    shapes.update({init.name: list(init.dims) for init in model.graph.initializer})
    names = ({i for n in model.graph.node for i in list(n.input) + list(n.output)} | set(shapes)
             | {i.name for i in model.graph.input})
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for node in model.graph.node:
        if node.op_type == "PRelu" and node.domain in ("", "ai.onnx"):
            where = f"ONNX PRelu '{node.name or node.output[0]}' (opset {opset})"
            x, slope = shapes.get(node.input[0]), shapes.get(node.input[1])
            if x is None or slope is None or None in slope:
                raise TinycError(f"{where}: the shapes of its input and slope are unknown, and before opset 7 the "
                                 "slope's shape says how it applies; re-export the model with opset 7 or later")
            if int(np.prod(slope)) != 1:
                if not (len(slope) == 1 and len(x) >= 2 and x[1] == slope[0]):
                    x_text = [d if d is not None else "?" for d in x]
                    raise TinycError(f"{where} has a slope of shape {slope} for an input of shape {x_text}; before "
                                     "opset 7 the slope is one value or one per channel (axis 1): the model is invalid")
                if len(x) > 2:
                    per_channel, k = f"{node.input[1]}_per_channel", 1
                    while per_channel in names:
                        per_channel, k = f"{node.input[1]}_per_channel_{k}", k + 1
                    names.add(per_channel)
                    out.graph.node.append(helper.make_node("Unsqueeze", [node.input[1]], [per_channel],
                                                           name=per_channel, axes=list(range(1, len(x) - 1))))
                    node = _with_input(node, 1, per_channel)
        out.graph.node.append(node)
    return out


def _with_input(node, i: int, name: str):
    """A copy of ONNX `node` reading `name` as its input `i`."""
    import onnx
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[i] = name
    return copy

def _check_graph(graph) -> None:
    """What onnxruntime refuses and shape inference lets through: two nodes of one name."""
    seen = set()
    for node in graph.node:
        if node.name and node.name in seen:
            raise TinycError(f"two ONNX nodes are named '{node.name}'; node names must be unique (the model is "
                             "invalid; onnxruntime refuses it too)")
        seen.add(node.name)


def _io_layout(imp, rank: int, of_input: bool) -> Layout:
    """The layout of a model input or output in the C API: NHWC for --io-layout nhwc (inputs of rank 3 and 4,
    outputs of rank 4), else the model's own."""
    nhwc = imp.io_layout == "nhwc" and (rank in (3, 4) if of_input else rank == 4)
    return channels_last(rank) if nhwc else plain(rank)


def _zero_size_input(imp, name: str) -> str:
    """A zero-size model input holds no values, so it is known: inside the graph it is the constant empty array;
    its IR tensor only keeps its place in the C API (the caller's pointer is never read)."""
    shape = imp.logical_shape(name)
    dtype = imp.dtypes.get(name, "float32")
    lay = _io_layout(imp, len(shape), of_input=True)
    ir_name = imp.g.unique_name(name)
    imp.g.add_tensor(ir_name, tuple(shape[i] for i in inverse(lay.perm)), dtype, source_name=name,
                     source_perm=None if lay.is_plain else lay.perm)
    imp.consts[name] = np.zeros(shape, dtype)
    return ir_name


def _output_dtype(imp, name: str, value: np.ndarray) -> str:
    if value.dtype.name not in RUNTIME_DTYPES:
        raise TinycError(f"model output '{name}' is a {value.dtype} constant; tinyc's outputs are float32, integers "
                         "or bool")
    return value.dtype.name


def _zero_size_output(imp, name: str) -> str:
    """A zero-size model output: a constant empty array that no layer writes (its C API pointer is never
    written)."""
    value = np.asarray(imp.consts[name])
    dtype = _output_dtype(imp, name, value)
    lay = _io_layout(imp, value.ndim, of_input=False)
    const = imp.g.add_const(f"{name}_value", np.zeros(tuple(value.shape[i] for i in inverse(lay.perm)), dtype), dtype)
    imp.g.tensors[const].source_name = name
    return const


def _zero_size_node(imp, node) -> bool:
    """A node reading runtime values whose outputs are all zero-size computes nothing at run time: each output is
    the constant empty array (a Slice starting past the end, a Split part of size 0). True when it was that.
    (Rules make the zero-size outputs of multi-output nodes constants themselves: `onnx_ops._zero_size_result`.)"""
    outs = [o for o in node.output if o]
    if not outs or not all(o in imp.shapes and 0 in imp.shapes[o] for o in outs):
        return False
    for o in outs:
        imp.consts[o] = np.zeros(imp.shapes[o], imp.dtypes.get(o, "float32"))
    return True


def _constant_output(imp, name: str) -> None:
    """A model output the compiler knows (Shape of a static input, a Constant, ...): the run copies it from a
    constant array into the output, like any other output."""
    value = np.asarray(imp.consts[name])
    _output_dtype(imp, name, value)
    const = imp.g.add_const(f"{name}_value", value, value.dtype.name)
    imp.shapes[name] = tuple(value.shape)
    imp.dtypes[name] = value.dtype.name
    out = imp.define(name, plain(value.ndim))
    imp.g.add_node("Identity", [const], [out], name=out)


def _convert(imp, node) -> None:
    """One node's converter. Where its assumptions about a well-formed node (attributes, input count and shapes)
    do not hold, say which node, not where in tinyc."""
    from .onnx_ops import ONNX_OPS
    imp.node = node
    try:
        ONNX_OPS[node.op_type](imp, node)
    except MALFORMED as e:
        raise TinycError(f"ONNX {node.op_type} '{node.name or node.output[0]}': malformed node ({type(e).__name__}: "
                         f"{e}); the model is corrupt or uses the op in a way tinyc does not support") from None


def load_onnx(path: str, input_shapes=None, io_layout: str = "nchw", bind: dict | None = None,
              state: dict | None = None) -> Graph:
    """`bind`: {graph input name: array} made constants before import (`bind_inputs`). `state`: {graph input name:
    graph output name}, streaming state pairs (`state_pairs`)."""
    import onnx
    from onnx import numpy_helper

    from .onnx_ops import ONNX_OPS, dequantize_constant
    model = _read_model(path)
    if bind:
        bind_inputs(model, bind)
    model = _upsample_coordinates(model, _within_read_opsets(_per_channel_prelu_slopes(model)))
    importer_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    inputs = _static_inputs(model, input_shapes)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:
        raise TinycError(f"the ONNX model is inconsistent: {str(e).splitlines()[0][:300]}")
    g = Graph(name=model.graph.name or "model", source_format="onnx")
    imp = OnnxImporter(model, g, io_layout)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shape = _static_shape(vi)
        if shape is not None:
            imp.shapes[vi.name] = shape
        dtype = _input_dtype(vi.type.tensor_type.elem_type) if vi.type.HasField("tensor_type") else None
        if dtype is not None:
            imp.dtypes[vi.name] = dtype.name
    for init in model.graph.initializer:
        try:
            imp.consts[init.name] = numpy_helper.to_array(init)
        except Exception:
            raise TinycError(f"initializer '{init.name}' cannot be read (external data missing or corrupt)")
        if imp.consts[init.name].dtype.kind in "OSU":       # strings (int4 and the like are named later)
            raise TinycError(f"initializer '{init.name}' holds {imp.consts[init.name].dtype} values; tinyc reads "
                             "numeric constants only")
    _check_graph(model.graph)
    pairs = state_pairs(model, state)
    for name in pairs:       # the model's own layout: the state is no part of the C API
        initial = imp.consts.pop(name, None)      # an input with an initializer: its initial value
        g.state[imp.define(name, plain(len(imp.logical_shape(name))))] = None
        if initial is not None:
            t = g.tensors[imp.get(name)]
            g.state_init[t.name] = np.asarray(initial, t.dtype).reshape(t.shape)
    for inp in inputs:
        if inp.name in pairs:
            continue
        shape = imp.logical_shape(inp.name)
        if 0 in shape:
            g.inputs.append(_zero_size_input(imp, inp.name))
            continue
        g.inputs.append(imp.define(inp.name, _io_layout(imp, len(shape), of_input=True)))
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise TinycError(f"ONNX op '{node.domain}.{node.op_type}' (node '{node.name}') is from a custom "
                             "domain tinyc does not support; run `tinyc ops` to see supported ops")
        ins = [n for n in node.input if n]
        if node.op_type == "DequantizeLinear" and ins[0] in imp.consts:
            dequantize_constant(imp, node)   # weights stay integer, not folded to float here
        elif node.op_type == "Constant" or (ins and all(n in imp.consts for n in ins) and
                                          node.op_type in CONST_ONLY_OPS | set(ONNX_OPS)):
            values = _eval_const_node(node, [imp.consts[n] for n in ins], importer_opset)
            _refuse_undefined_over_empty(node, [imp.consts[n] for n in ins], values)
            imp.consts.update(zip(node.output, values))
        elif node.op_type == "Shape" and ins[0] in imp.values:
            shape = np.array(imp.logical_shape(ins[0]), dtype=np.int64)
            values = _eval_const_node(node, [np.zeros(shape, np.float32)], importer_opset)
            imp.consts[node.output[0]] = values[0]
        elif node.op_type in ONNX_OPS:
            _refuse_quantized_reads(imp, node)
            _infer_node_shapes(imp, node, importer_opset)
            if not _zero_size_node(imp, node):
                _convert(imp, node)
        else:
            where = "on computed tensors " if node.op_type in CONST_ONLY_OPS else ""
            raise TinycError(f"unsupported ONNX op '{node.op_type}' {where}(node '{node.name or node.output[0]}'); "
                             "run `tinyc ops` to see supported ops")
    for out in model.graph.output:
        if out.name in imp.consts and out.name not in imp.values:   # (Shape of an input, a Constant, ...)
            if np.size(imp.consts[out.name]) == 0:
                g.outputs.append(_zero_size_output(imp, out.name))
                continue
            _constant_output(imp, out.name)
        _check_quantized_output(imp, out.name)
        g.outputs.append(imp.get(out.name, _io_layout(imp, len(imp.logical_shape(out.name)), of_input=False)))
    for name, out in pairs.items():
        g.state[imp.get(name)] = imp.get(out, plain(len(imp.logical_shape(out))))
    g.validate()
    return g


def state_pairs(model, pairs: dict | None) -> dict:
    """Checked streaming state pairs {graph input: graph output} (`--state IN=OUT`): the input becomes a state
    tensor (zeros at first, or the input's initializer when it has one: ONNX's default value) whose value after
    each inference is the output's; the output stays a model output. Refuses, in one line, names that are not a
    graph input / output and pairs of other shapes or types."""
    if not pairs:
        return {}
    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    seen = set()
    for name, out in pairs.items():
        if name not in inputs:
            raise TinycError(f"--state {name}={out}: '{name}' is not a graph input of the model (its inputs: "
                             f"{', '.join(inputs) or 'none'})")
        if out not in outputs:
            raise TinycError(f"--state {name}={out}: '{out}' is not a graph output of the model (its outputs: "
                             f"{', '.join(outputs) or 'none'})")
        if out in seen:
            raise TinycError(f"--state {name}={out}: output '{out}' is already the next value of another state")
        seen.add(out)
        a, b = inputs[name].type.tensor_type, outputs[out].type.tensor_type
        shape_a = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in a.shape.dim]
        shape_b = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in b.shape.dim]
        # symbolic dimensions (a dynamic batch) may differ by name: only two static sizes can disagree here; the
        # shapes tinyc fixes are compared again by Graph.validate
        static_differ = len(shape_a) != len(shape_b) or any(
            isinstance(x, int) and isinstance(y, int) and x != y and x > 0 and y > 0 for x, y in zip(shape_a, shape_b))
        if a.elem_type != b.elem_type or (b.HasField("shape") and static_differ):
            raise TinycError(f"--state {name}={out}: input '{name}' ({_elem_name(a.elem_type)} {shape_a}) and output "
                             f"'{out}' ({_elem_name(b.elem_type)} {shape_b}) differ; a state pair needs the same "
                             "shape and type")
    if not set(inputs) - inits - set(pairs):
        raise TinycError("--state names every graph input as state: the model has no input left for the C API")
    return dict(pairs)


def _elem_name(elem_type: int) -> str:
    import onnx
    return onnx.TensorProto.DataType.Name(elem_type).lower()
