"""Keras frontend: a Keras 3 model (.keras or .h5) -> IR Graph.

The model's layer graph is walked in topological order from `model.outputs` back to `model.inputs`; each layer
is converted by the rule for its class in `keras_layers.SUPPORTED_LAYERS`. Keras is NHWC already, so tensors
keep their layout (`source_perm` None) and each layer's output tensor is named after the layer
(`source_name` = layer name, for per-layer verification).

Keras internals used (Keras 3): `KerasTensor._keras_history` (operation, node_index, tensor_index) and
`operation._inbound_nodes[node_index]` with `.input_tensors` / `.output_tensors` / `.arguments` (a `mask`
argument refuses the model: tinyc computes every step). TensorFlow and Keras are imported lazily, inside
`load_keras`.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager

import numpy as np

from ..errors import TinycError
from ..ir import Graph
from .keras_layers import SUPPORTED_LAYERS

__all__ = ["load_keras", "SUPPORTED_LAYERS"]


def _import_keras():
    from ..keras_runtime import import_keras
    return import_keras()


class Ctx:
    """What a layer converter sees: the graph, tensor shapes, and `emit` to add nodes for the current layer."""

    def __init__(self, keras, graph: Graph):
        self.keras = keras
        self.g = graph
        self.layer = None    # the Keras layer being converted
        self.out = ""        # IR name of its output tensor
        self.source = None   # that tensor's source_name (the Keras layer name, or None)
        self._consts = {}    # (id(layer), what) -> const name: a shared layer stores its weights once
        self._final = None   # while `inner` runs: the helper tensor that final nodes write instead of `out`
        self.used = (True,)  # per output of the current layer: whether anything reads it (a model output, a layer)

    def shape(self, name: str) -> tuple:
        return self.g.tensors[name].shape

    def numpy(self, value) -> np.ndarray:
        if hasattr(value, "numpy"):  # a Keras variable
            value = value.numpy()
        return np.asarray(value, dtype=np.float32)

    def const(self, what: str, value) -> str:
        key = (id(self.layer), what)
        if key not in self._consts:
            self._consts[key] = self.g.add_const(f"{self.out}_{what}", self.numpy(value))
        return self._consts[key]

    def activation_name(self, fn) -> str:
        name = self.keras.activations.serialize(fn) if fn is not None else "linear"
        if isinstance(name, dict):  # a custom (registered) function
            name = name.get("config", name.get("class_name", "custom"))
        return str(name)

    def emit(self, op: str, inputs, shape, final: bool = True, tag: str | None = None, **attrs) -> str:
        """Add one node. `final` writes the layer's output tensor; otherwise a helper tensor named
        '<layer>_<tag>' with no source_name."""
        if final and self._final is not None:
            final, tag = False, self._final
        name = self.out if final else self.g.unique_name(f"{self.out}_{tag or op.lower()}")
        self.g.add_tensor(name, shape, source_name=self.source if final else None)
        self.g.add_node(op, inputs, [name], name=name, **attrs)
        return name


    @contextmanager
    def inner(self, layer, tag: str):
        """Convert part of the current layer with another rule (a 1-D layer as its 2-D form, the layer wrapped by
        TimeDistributed): inside, `layer` is the one whose weights are read, and what that rule emits as its
        output goes to a helper tensor '<layer>_<tag>'."""
        saved = self.layer, self._final
        self.layer, self._final = layer, tag
        try:
            yield
        finally:
            self.layer, self._final = saved


# -- model walking -------------------------------------------------------------------------------------------
def _key(t) -> tuple:
    h = t._keras_history
    return id(h.operation), h.node_index, h.tensor_index


def _topo_nodes(model, known: set) -> list:
    """(operation, node) pairs needed to compute model.outputs from the `known` tensors, producers first."""
    order, done = [], set()
    stack = [(t._keras_history.operation, t._keras_history.node_index, False) for t in reversed(model.outputs)
             if _key(t) not in known]
    while stack:
        op, i, expanded = stack.pop()
        if (id(op), i) in done:
            continue
        node = op._inbound_nodes[i]
        if expanded:
            done.add((id(op), i))
            order.append((op, node))
            continue
        stack.append((op, i, True))
        for t in reversed(node.input_tensors):
            h = t._keras_history
            if _key(t) not in known and (id(h.operation), h.node_index) not in done:
                stack.append((h.operation, h.node_index, False))
    return order


def _check_shape(layer, ours: tuple, theirs) -> None:
    theirs = tuple(theirs)
    if len(ours) != len(theirs) or any(t is not None and t != o for o, t in zip(ours[1:], theirs[1:])):
        raise TinycError(f"internal: layer '{layer.name}' ({type(layer).__name__}) converted to shape {ours} "
                         f"but Keras says {theirs}; please report this model")


def _walk(cv: Ctx, model, names: dict, top: bool) -> list[str]:
    """Convert the layers of `model` whose inputs are mapped in `names` (key -> IR name); returns the IR
    names of model.outputs. `top`: layers of the loaded model itself (they get source names)."""
    keras = cv.keras
    order = _topo_nodes(model, set(names))
    _refuse_masks(order)
    uses: dict[int, int] = {}
    for op, _ in order:
        uses[id(op)] = uses.get(id(op), 0) + 1
    read = {_key(t) for t in model.outputs} | {_key(t) for _, node in order for t in node.input_tensors}
    for op, node in order:
        kind = type(op).__name__
        missing = [t for t in node.input_tensors if _key(t) not in names]
        if missing:
            raise TinycError(f"layer '{op.name}' ({kind}) reads a tensor that is not computed from the "
                             "model's inputs; tinyc supports models whose layers all depend on model.inputs")
        ins = [names[_key(t)] for t in node.input_tensors]
        outs = list(node.output_tensors)
        if isinstance(op, keras.Model):  # a nested model: flatten it into the graph
            inner = {_key(t): n for t, n in zip(op.inputs, ins)}
            results = _walk(cv, op, inner, top=False)
            for t, r in zip(outs, results):
                names[_key(t)] = r
                if top and uses[id(op)] == 1 and len(outs) == 1 and r not in ins:
                    cv.g.tensors[r].source_name = op.name
            continue
        if not isinstance(op, keras.layers.Layer):
            raise TinycError(f"'{op.name}' is a keras.ops operation ({kind}), not a Keras layer; tinyc converts "
                             "layers only: run `tinyc ops` to see supported layers")
        rule = SUPPORTED_LAYERS.get(kind)
        if rule is None:
            raise TinycError(f"layer '{op.name}' of type {kind} is not supported; "
                             "run `tinyc ops` to see supported layers")
        cv.layer, cv.out = op, cv.g.unique_name(op.name)
        cv.source = op.name if top and uses[id(op)] == 1 and len(outs) == 1 else None
        cv.used = tuple(_key(t) in read for t in outs)
        result = rule(cv, op, op.get_config(), ins)
        results = result if isinstance(result, list) else [result]   # a list: one IR name per output (None: unread)
        if len(results) != len(outs):
            raise TinycError(f"layer '{op.name}' ({kind}) has {len(outs)} outputs; tinyc converts it with one "
                             "output only")
        for t, r in zip(outs, results):
            if r is not None:
                _check_shape(op, cv.shape(r), t.shape)
                names[_key(t)] = r
    return [names[_key(t)] for t in model.outputs]


def _refuse_masks(order) -> None:
    """A layer called with a mask (from an Embedding with mask_zero=True or a Masking layer) skips the masked
    steps; tinyc computes every step, so such a model is refused at the first layer that reads a mask."""
    for op, node in order:
        kwargs = getattr(getattr(node, "arguments", None), "kwargs", None) or {}
        if any(hasattr(m, "_keras_history") for m in _leaves(kwargs.get("mask"))):
            raise TinycError(f"layer '{op.name}' ({type(op).__name__}) is called with a mask (from an Embedding with "
                             "mask_zero=True or a Masking layer); tinyc computes every step: remove the mask")


def _leaves(value) -> list:
    """The leaves of a nested list / tuple / dict (a Keras call argument)."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    return [] if value is None else [value]


# -- inputs --------------------------------------------------------------------------------------------------
def _static_shape(name: str, shape: tuple, given) -> tuple:
    if given is not None:
        given = tuple(None if d is None else int(d) for d in given)
        if len(given) != len(shape) or any(m is not None and g is not None and m != g and i > 0
                                           for i, (m, g) in enumerate(zip(shape, given))):
            raise TinycError(f"--input-shape {given} for input '{name}' does not fit the model's shape {shape}")
        if given[0] not in (None, 1):
            raise TinycError(f"input '{name}': batch size {given[0]} is not supported; use batch 1")
        shape = tuple(m if g is None else g for m, g in zip(shape, given))
    dims = (1,) + tuple(shape[1:])
    if any(d is None for d in dims):
        raise TinycError(f"input '{name}' has a dynamic shape {shape}; pass --input-shape with the static "
                         "shape of every input (model layout, batch included)")
    if any(d <= 0 for d in dims):
        raise TinycError(f"input '{name}' has a zero-size dimension (shape {shape}); tinyc handles zero-size "
                         "tensors in ONNX models only")
    return dims


def _check_container(path: str) -> None:
    """A .keras file is a zip archive, an .h5 file HDF5: say so plainly when it is not (Keras would answer
    "file not found" for a truncated archive)."""
    if path.lower().endswith(".keras"):
        import zipfile
        if not zipfile.is_zipfile(path):
            raise TinycError(f"'{path}' is not a .keras archive (a zip file): it is truncated, corrupt or of another "
                             "format")
    else:
        import h5py
        if not h5py.is_hdf5(path):
            raise TinycError(f"'{path}' is not an HDF5 file: it is truncated, corrupt or of another format")


def _load_model(keras, path: str):
    if not os.path.isfile(path):
        raise TinycError(f"model file '{path}' not found")
    _check_container(path)
    try:
        return keras.models.load_model(path, compile=False)  # safe_mode: no arbitrary code from the file
    except Exception as e:  # Keras raises many kinds; give the user one line
        msg = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())   # no terminal colour codes
        if "Lambda" in msg or "lambda" in msg:
            raise TinycError(f"'{path}' contains a Lambda layer (arbitrary Python code), which tinyc cannot "
                             "convert; run `tinyc ops` to see supported layers") from None
        if "time_major" in msg:   # Keras 2 recurrent layers' config, which Keras 3 does not take
            raise TinycError(f"cannot load Keras model '{path}': it is a Keras 2 (tf_keras) model with recurrent "
                             "layers (time_major), which Keras 3 cannot read: build it with Keras 3 (its weights set "
                             "from the tf_keras model), or convert it to .tflite") from None
        raise TinycError(f"cannot load Keras model '{path}': {type(e).__name__}: {msg[:300]}") from None


def load_keras(path: str, input_shapes: list[tuple] | None = None) -> Graph:
    """Load a Keras 3 model (.keras / .h5) as an IR Graph (NHWC, batch 1, float32)."""
    keras = _import_keras()
    model = _load_model(keras, path)
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise TinycError(f"Keras model '{model.name}' has no defined inputs/outputs (a subclassed or unbuilt "
                         "model); save a Sequential or functional model built with keras.Input")
    if input_shapes is not None and len(input_shapes) != len(inputs):
        raise TinycError(f"the model has {len(inputs)} input(s) but {len(input_shapes)} --input-shape "
                         "value(s) were given")
    g = Graph(model.name, source_format="keras")
    cv = Ctx(keras, g)
    names = {}
    for i, t in enumerate(inputs):
        layer_name = t._keras_history.operation.name
        shape = _static_shape(layer_name, tuple(t.shape), input_shapes[i] if input_shapes else None)
        name = g.unique_name(layer_name)
        dtype = str(getattr(t, "dtype", "float32"))      # integer inputs: indices (Embedding)
        g.add_tensor(name, shape, dtype if dtype in ("int32", "int64") else "float32", source_name=layer_name)
        g.inputs.append(name)
        names[_key(t)] = name
    g.outputs = _walk(cv, model, names, top=True)
    g.validate()
    return g
