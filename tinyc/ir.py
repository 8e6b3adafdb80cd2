"""The graph IR every frontend produces and every later stage consumes.

Tensors have a name, a static shape, a dtype, optional constant data and optional quantization. Nodes have an
op, input and output tensor names and attributes. A node has one output, except where its op defines more
(`OpDef.outputs`: an LSTM with `cell_output` gives its sequence or final h, and its final cell state); `validate`
checks the count, so a node of any other op has exactly one. Each output is a tensor of its own (its own buffer
and lifetime in the plan); generic code (the interpreter, constant folding, the planner, codegen, reports, passes
that rewire a node's outputs) handles every output. Layout is NHWC throughout (what embedded kernels and TFLite
use); frontends convert. A leading dimension is an ordinary one (N images for conv and pooling).

Op vocabulary: `tinyc.ops` defines every op (inputs, attributes, meaning, kernels); `tinyc ops` lists them.
`activation` attributes are None or a dict, see `tinyc.activations`.

Quantized (int8) graphs use the same ops with dtypes and `quant` on the tensors, following TFLite's int8 spec:
activations int8 with a per-tensor scale and zero point; Conv2D/Dense weights int8, symmetric (zero point 0),
per output channel (`Quant.axis` 0 in the IR weight layout) or per tensor; biases int32 with scale
input_scale * weight_scale and zero point 0. A fused `activation` becomes a clamp of the int8 output; Pad's
`value` is the stored int8 value. The fixed-point parameters kernels need are derived at codegen time
(`tinyc.quant.params`), exactly as TFLite's kernels derive them.

Each tensor may record how it maps back to the reference model (`source_name`, `source_perm`) so that
`tinyc verify --per-layer` can compare intermediates with the reference runtime.

Streaming state (docs/streaming-state.md): `Graph.state` maps each state tensor to the tensor holding its *next
value*. A state tensor has no producer, is neither a model input nor a constant, and is read by nodes like any
tensor; its value at the first inference is `Graph.state_init[name]` (zeros when absent). After an inference
every state tensor takes its next value, all at once: every read during an inference sees the value from
before it. The next value has the state's shape, dtype and quantization; it may be the state tensor itself (a
state nothing updates), a model output, an input or a constant.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .errors import TinycError
from .ops import REGISTRY, names_where
from .ops.opdef import output_count

OPS = tuple(REGISTRY)

# Ops whose kernels compute one NHWC image; codegen calls them once per image of an [N, H, W, C] input.
IMAGE_OPS = names_where(one_image=True)


@dataclass
class Quant:
    """Affine quantization: real = scale * (q - zero_point); per-channel along `axis` when arrays are 1-D."""
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None


@dataclass
class Tensor:
    name: str
    shape: tuple
    dtype: str = "float32"
    data: np.ndarray | None = None
    quant: Quant | None = None
    # How the reference runtime sees this tensor: its name there and the permutation p with
    # reference_array = our_array.transpose(p) (None: same layout). Used by per-layer verification.
    source_name: str | None = None
    source_perm: tuple | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    name: str = ""


def outputs_of(node: Node) -> int:
    """How many outputs the node's op and attributes give it (one for most ops; OpDef.outputs)."""
    return output_count(REGISTRY[node.op], node.attrs)


def _same_quant(a: Quant | None, b: Quant | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.axis == b.axis and np.array_equal(np.asarray(a.scale), np.asarray(b.scale))
            and np.array_equal(np.asarray(a.zero_point), np.asarray(b.zero_point)))


def mark_fused(node: Node, what: str) -> None:
    """Record that a pass merged `what` (BatchNorm, an activation, a Pad, ...) into `node`, for the reports; the
    kernels never read it."""
    node.attrs["fused"] = (*node.attrs.get("fused", ()), what)


class Graph:
    """Nodes kept in a valid execution (topological) order; tensors by name."""

    def __init__(self, name: str = "model", source_format: str = ""):
        self.name = name
        self.source_format = source_format
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.state: dict[str, str] = {}                 # state tensor -> the tensor with its next value
        self.state_init: dict[str, np.ndarray] = {}     # state tensor -> initial value (absent: zeros)

    # -- building -------------------------------------------------------------------------------------------
    def add_tensor(self, name: str, shape, dtype: str = "float32", data=None, **kw) -> Tensor:
        if name in self.tensors:
            raise TinycError(f"duplicate tensor name '{name}' in the model; give every tensor a unique name")
        shape = tuple(int(d) for d in shape)
        if data is not None:
            data = np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape(shape))
        t = Tensor(name, shape, dtype, data, **kw)
        self.tensors[name] = t
        return t

    def add_const(self, name: str, data, dtype: str = "float32") -> str:
        data = np.asarray(data, dtype=dtype)
        name = self.unique_name(name)
        self.add_tensor(name, data.shape, dtype, data)
        return name

    def add_state(self, name: str, shape, dtype: str = "float32", initial=None, next_value: str | None = None,
                  **kw) -> Tensor:
        """A state tensor: read like any tensor, carried across inferences. `initial`: its value before the first
        inference (None: zeros). `next_value`: the tensor whose value it takes after each inference (may be set
        later, as `g.state[name] = ...`; `validate` refuses a state without one)."""
        t = self.add_tensor(name, shape, dtype, **kw)
        if initial is not None:
            self.state_init[name] = np.ascontiguousarray(np.asarray(initial, dtype=dtype).reshape(t.shape))
        self.state[name] = next_value
        return t

    def initial_state(self) -> dict:
        """Every state tensor's value before the first inference (a fresh array each call)."""
        out = {}
        for name in self.state:
            t = self.tensors[name]
            init = self.state_init.get(name)
            out[name] = np.zeros(t.shape, t.dtype) if init is None else init.copy()
        return out

    def live_out(self) -> set:
        """Tensors whose values outlive the inference: the model outputs and the next values of the state. Passes
        must keep their names and producers (as for an output); the planner keeps them live to the end."""
        return set(self.outputs) | {v for v in self.state.values() if v is not None}

    def add_node(self, op: str, inputs, outputs, name: str = "", **attrs) -> Node:
        node = Node(op, list(inputs), list(outputs), attrs, name or (outputs[0] if outputs else op))
        self.nodes.append(node)
        return node

    def unique_name(self, base: str) -> str:
        name, k = base, 1
        while name in self.tensors:
            name, k = f"{base}_{k}", k + 1
        return name

    # -- queries --------------------------------------------------------------------------------------------
    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def const(self, name: str) -> np.ndarray | None:
        t = self.tensors.get(name)
        return None if t is None else t.data

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    def remove_unused_tensors(self) -> None:
        used = set(self.inputs) | self.live_out() | set(self.state)
        for n in self.nodes:
            used.update(n.inputs)
            used.update(n.outputs)
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}

    def replace_uses(self, old: str, new: str) -> None:
        """Every consumer of `old` (and the graph outputs, and a state whose next value it is) reads `new`
        instead."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]
        self.state = {s: new if v == old else v for s, v in self.state.items()}

    def validate(self) -> None:
        """Check what every later stage assumes: known tensors, one producer each, topological order."""
        available = set(self.inputs) | {k for k, t in self.tensors.items() if t.is_const}
        for name in list(self.inputs) + list(self.outputs):
            if name not in self.tensors:
                raise TinycError(f"graph input/output '{name}' is not a tensor of the model")
        self._validate_state()
        available |= set(self.state)
        for n in self.nodes:
            if n.op not in OPS:
                raise TinycError(f"internal op '{n.op}' is unknown")
            for i in n.inputs:
                if i not in self.tensors:
                    raise TinycError(f"node '{n.name}' ({n.op}) reads tensor '{i}', which does not exist")
                if self.tensors[i].size == 0:
                    raise TinycError(f"node '{n.name}' ({n.op}) reads the zero-size tensor '{i}' (shape "
                                     f"{tuple(self.tensors[i].shape)}); tinyc evaluates an op on a zero-size tensor "
                                     "at compile time, which needs its other inputs constant")
                if i not in available:
                    raise TinycError(f"node '{n.name}' ({n.op}) reads '{i}' before it is computed "
                                     "(the graph has a cycle or a missing producer)")
            if len(n.outputs) != outputs_of(n):
                raise TinycError(f"node '{n.name}' ({n.op}) writes {len(n.outputs)} tensors, its op and attributes "
                                 f"give it {outputs_of(n)} outputs")
            check = REGISTRY[n.op].check
            if check is not None:
                check(self, n)
            for o in n.outputs:
                if o in available:
                    raise TinycError(f"tensor '{o}' is written twice (node '{n.name}'); names must be unique")
                if o not in self.tensors:
                    raise TinycError(f"node '{n.name}' writes unknown tensor '{o}'")
                available.add(o)
        # A zero-size tensor has no values, so nothing is computed from or into it (nodes reading one are refused
        # above): it may only be a model input (in the C API, never read) or a constant model output.
        written = {name for n in self.nodes for name in n.outputs}
        for t in self.tensors.values():
            if t.size == 0 and (t.name in written or not (t.name in self.inputs or t.is_const)):
                raise TinycError(f"tensor '{t.name}' has a zero-size dimension (shape {tuple(t.shape)}) and is "
                                 "computed at run time; tinyc makes zero-size tensors constants (empty arrays)")
        if not self.outputs:
            raise TinycError("the model has no outputs; there is nothing to compute")
        for o in self.outputs:
            if o not in available:
                raise TinycError(f"model output '{o}' is never computed")

    def _validate_state(self) -> None:
        """A state tensor: not an input or constant, no producer, not zero-size; its next value exists with the same
        shape, dtype and quantization (the C copies its bytes); initial values of that shape."""
        written = {o for n in self.nodes for o in n.outputs}
        for name, nxt in self.state.items():
            t = self.tensors.get(name)
            if t is None:
                raise TinycError(f"state tensor '{name}' is not a tensor of the model")
            if name in self.inputs or t.is_const or name in written:
                what = "a model input" if name in self.inputs else "a constant" if t.is_const else "written by a node"
                raise TinycError(f"state tensor '{name}' is {what}; a state tensor is carried across inferences and "
                                 "only takes its next value after one")
            if t.size == 0:
                raise TinycError(f"state tensor '{name}' is zero-size (shape {tuple(t.shape)}); remove it from the "
                                 "model's state")
            if nxt is None or nxt not in self.tensors:
                raise TinycError(f"state tensor '{name}' has no next value" if nxt is None else
                                 f"state tensor '{name}' takes its next value from '{nxt}', which does not exist")
            v = self.tensors[nxt]
            if (v.shape, v.dtype) != (t.shape, t.dtype) or not _same_quant(v.quant, t.quant):
                raise TinycError(f"state tensor '{name}' ({t.dtype} {tuple(t.shape)}) takes its next value from "
                                 f"'{nxt}' ({v.dtype} {tuple(v.shape)}"
                                 f"{', other quantization' if v.shape == t.shape and v.dtype == t.dtype else ''}); "
                                 "they must have the same shape, type and quantization")
            init = self.state_init.get(name)
            if init is not None and (init.shape != tuple(t.shape) or init.dtype != np.dtype(t.dtype)):
                raise TinycError(f"state tensor '{name}': its initial value is {init.dtype} {init.shape}, the tensor "
                                 f"{t.dtype} {tuple(t.shape)}")
        extra = set(self.state_init) - set(self.state)
        if extra:
            raise TinycError(f"'{sorted(extra)[0]}' has an initial value but is not a state tensor")

    def summary(self) -> str:
        lines = [f"graph {self.name}: inputs {self.inputs} outputs {self.outputs}"]
        if self.state:
            lines.append(f"  state (tensor -> next value): {self.state}")
        for n in self.nodes:
            shapes = [self.tensors[o].shape for o in n.outputs]
            lines.append(f"  {n.op:<10} {n.name}: {n.inputs} -> {n.outputs} {shapes} {n.attrs}")
        return "\n".join(lines)
