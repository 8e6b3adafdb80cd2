"""Random chains of row-streamable layers for the fused-block tests (no tests here).

A chain is (height, width, channels, layers); a layer is one of
  ("conv", k, stride, dilation, same, out_channels)
  ("dw", k, stride, dilation, same, multiplier)          depthwise
  ("pool", "max" | "avg", k, stride[, same])            no vertical padding (same: only when none is needed)
  ("act", fn)                                            a standalone activation
  ("residual", expand, k)    inverted residual: 1x1 expand, relu -> depthwise k x k same, relu -> 1x1 project, + x
  ("join",)                  + another model input of the same shape (a block with two external inputs)
  ("scale",)                 * a constant per channel (broadcast over the rows; float IR only)
`chains()` draws them (hypothesis); `float_graph` builds chains as one float32 IR graph (a branch per chain: input
`x<i>` (and `x<i>_<j>` for a join) -> output i), `keras_model` as one Keras model of the same branches.
`branch_nodes` (the layers an output depends on) and `longest_block` find the longest run of layers that a fused
block accepts; `longest_strip_block`, in column strips (patch mode).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.schedule.column_strips import block_strips
from tinyc.schedule.row_schedule import row_schedule

ACTIVATIONS = ("relu", "tanh")


def out_size(size: int, k: int, s: int, d: int, same: bool) -> int:
    span = (k - 1) * d + 1
    return -(-size // s) if same else (size - span) // s + 1


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (the odd row/column goes below/right)."""
    span = (k - 1) * d + 1
    total = max((out_size(size, k, s, d, True) - 1) * s + span - size, 0)
    return total // 2, total - total // 2


def next_shape(shape, layer):
    h, w, c = shape
    if layer[0] in ("conv", "dw"):
        _, k, s, d, same, n = layer
        return out_size(h, k, s, d, same), out_size(w, k, s, d, same), n if layer[0] == "conv" else c * n
    if layer[0] == "pool":
        k, s, same = layer[2], layer[3], layer[4:] == (True,)
        return out_size(h, k, s, 1, same), out_size(w, k, s, 1, same), c
    return shape


@st.composite
def chains(draw, max_layers: int = 4, max_size: int = 12, max_channels: int = 17, keras: bool = False):
    """A chain whose every layer fits its input. `keras`: no dilation (TFLiteConverter turns a dilated
    convolution into SpaceToBatchND, convolution, BatchToSpaceND: not a row-streamed layer)."""
    first = (draw(st.integers(3, max_size)), draw(st.integers(1, max_size)), draw(st.integers(1, max_channels)))
    shape, layers = first, []
    for _ in range(draw(st.integers(1, max_layers))):
        h, w, c = shape
        kind = draw(st.sampled_from(("conv", "dw", "pool", "act", "residual", "join") + ((), ("scale",))[not keras]))
        k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        if k == 1 or keras:
            d = 1
        same = draw(st.booleans()) or min(h, w) < (k - 1) * d + 1
        if kind == "conv":
            layer = ("conv", k, s, d, same, draw(st.integers(1, max_channels)))
        elif kind == "dw":
            layer = ("dw", k, s, d, same, draw(st.sampled_from((1, 1, 2))))
        elif kind == "pool":
            k = min(k, 3, h, w)
            s = min(s, k)
            same = draw(st.booleans()) and same_pads(h, k, s, 1) == (0, 0)      # (horizontal pads only)
            layer = ("pool", draw(st.sampled_from(("max", "avg"))), k, s) + ((True,) if same else ())
        elif kind == "act":
            layer = ("act", draw(st.sampled_from(ACTIVATIONS)))
        elif kind in ("join", "scale"):
            layer = (kind,)
        else:
            layer = ("residual", draw(st.integers(1, max_channels)), min(k, 3) | 1)
        layers.append(layer)
        shape = next_shape(shape, layer)
    return first + (layers,)


# -- float32 IR ------------------------------------------------------------------------------------------------

def _conv(g, x, name, weights, s, d, same, groups, activation, rng):
    _, h, w, c = g.tensors[x].shape
    o, k = weights.shape[0], weights.shape[1]
    wt = g.add_const(f"{name}_w", weights)
    b = g.add_const(f"{name}_b", rng.standard_normal(o) * 0.1)
    if same:
        (t, bottom), (left, right) = same_pads(h, k, s, d), same_pads(w, k, s, d)
    else:
        t = bottom = left = right = 0
    g.add_tensor(name, (1, out_size(h, k, s, d, same), out_size(w, k, s, d, same), o))
    g.add_node("Conv2D", [x, wt, b], [name], name=name, strides=(s, s), dilations=(d, d),
               pads=(t, left, bottom, right), groups=groups, activation=activation)
    return name


def _float_layer(g, x, name, layer, rng):
    c = g.tensors[x].shape[3]
    kind = layer[0]
    if kind == "conv":
        _, k, s, d, same, o = layer
        return _conv(g, x, name, rng.standard_normal((o, k, k, c)) / np.sqrt(k * k * c), s, d, same, 1, None, rng)
    if kind == "dw":
        _, k, s, d, same, mult = layer
        return _conv(g, x, name, rng.standard_normal((c * mult, k, k, 1)) / k, s, d, same, c, None, rng)
    if kind == "pool":
        op, k, s, same = layer[1], layer[2], layer[3], layer[4:] == (True,)
        _, h, w, _ = g.tensors[x].shape
        (t, bottom), (left, right) = (same_pads(h, k, s, 1), same_pads(w, k, s, 1)) if same else ((0, 0), (0, 0))
        g.add_tensor(name, (1, out_size(h, k, s, 1, same), out_size(w, k, s, 1, same), c))
        g.add_node("MaxPool2D" if op == "max" else "AvgPool2D", [x], [name], name=name, kernel=(k, k),
                   strides=(s, s), dilations=(1, 1), pads=(t, left, bottom, right))
        return name
    if kind == "act":
        g.add_tensor(name, g.tensors[x].shape)
        g.add_node("Activation", [x], [name], name=name, fn=layer[1])
        return name
    if kind == "join":
        other = f"x{name[1:].replace('_l', '_')}"          # b<i>_l<j> -> x<i>_<j>
        g.add_tensor(other, g.tensors[x].shape)
        g.inputs.append(other)
        g.add_tensor(name, g.tensors[x].shape)
        g.add_node("Add", [x, other], [name], name=name)
        return name
    if kind == "scale":
        g.add_tensor(name, g.tensors[x].shape)
        g.add_node("Mul", [x, g.add_const(f"{name}_scale", rng.standard_normal(c))], [name], name=name)
        return name
    _, expand, k = layer
    relu = {"fn": "relu"}
    e = _conv(g, x, f"{name}_expand", rng.standard_normal((expand, 1, 1, c)) / np.sqrt(c), 1, 1, True, 1, relu,
              rng)
    dw = _conv(g, e, f"{name}_dw", rng.standard_normal((expand, k, k, 1)) / k, 1, 1, True, expand, relu, rng)
    p = _conv(g, dw, f"{name}_project", rng.standard_normal((c, 1, 1, expand)) / np.sqrt(expand), 1, 1, True, 1,
              None, rng)
    g.add_tensor(name, g.tensors[x].shape)
    g.add_node("Add", [x, p], [name], name=name)
    return name


def float_graph(chains_, seed: int = 0) -> Graph:
    """The chains as branches of one float32 graph: input `x<i>` -> layers `b<i>_l<j>` -> output i."""
    rng = np.random.default_rng(seed)
    g = Graph("chains")
    for i, (h, w, c, layers) in enumerate(chains_):
        t = f"x{i}"
        g.add_tensor(t, (1, h, w, c))
        g.inputs.append(t)
        for j, layer in enumerate(layers):
            t = _float_layer(g, t, f"b{i}_l{j}", layer, rng)
        g.outputs.append(t)
    return g


# -- Keras ---------------------------------------------------------------------------------------------------

def _keras_layer(keras, L, t, layer, inputs):
    kind = layer[0]
    if kind == "conv":
        _, k, s, d, same, o = layer
        return L.Conv2D(o, k, strides=s, dilation_rate=d, padding="same" if same else "valid")(t)
    if kind == "dw":
        _, k, s, d, same, mult = layer
        return L.DepthwiseConv2D(k, strides=s, dilation_rate=d, depth_multiplier=mult,
                                 padding="same" if same else "valid")(t)
    if kind == "pool":
        op, k, s, same = layer[1], layer[2], layer[3], layer[4:] == (True,)
        return (L.MaxPooling2D if op == "max" else L.AveragePooling2D)(k, s, padding="same" if same else "valid")(t)
    if kind == "act":
        return L.Activation(layer[1])(t)
    if kind == "join":
        inputs.append(keras.Input(tuple(t.shape[1:]), name=f"{inputs[0].name}_{len(inputs)}"))
        return L.Add()([t, inputs[-1]])
    _, expand, k = layer
    h = L.Conv2D(expand, 1, activation="relu")(t)
    h = L.DepthwiseConv2D(k, padding="same", activation="relu")(h)
    return L.Add()([t, L.Conv2D(t.shape[-1], 1)(h)])


def keras_model(chains_, name: str = "chains"):
    """The chains as branches of one Keras model (seeded weights: tests/model_zoo.randomize)."""
    from model_zoo import randomize
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs, outputs = [], []
    for i, (h, w, c, layers) in enumerate(chains_):
        x = keras.Input((h, w, c), name=f"x{i}")
        t, branch = x, [x]
        for layer in layers:
            t = _keras_layer(keras, L, t, layer, branch)
        inputs.extend(branch)
        outputs.append(L.Identity(name=f"y{i}")(t) if t is x else t)
    model = keras.Model(inputs, outputs, name=name)
    randomize(model, 0)
    return model


# -- blocks ----------------------------------------------------------------------------------------------------

def fusable(g, names) -> bool:
    try:
        row_schedule(g, names)
    except TinycError:
        return False
    return True


def branch_nodes(g, output: str) -> list:
    """The names of the nodes tensor `output` depends on, in graph order."""
    wanted, out = {output}, []
    for n in reversed(g.nodes):
        if wanted & set(n.outputs):
            wanted.update(n.inputs)
            out.append(n.name)
    return out[::-1]


def longest_block(g, names) -> list:
    """The longest run of consecutive `names` that fuses (the first of equal length); [] when none does."""
    best = []
    for i in range(len(names)):
        for j in range(len(names), i + len(best), -1):
            if fusable(g, names[i:j]):
                best = names[i:j]
                break
    return best


def to_int8_tflite(model, path, int16: bool = False) -> str:
    """tests/int8_zoo.to_int8_tflite for a model of several inputs: the representative samples by input name
    (the converter's calibrator does not order several inputs as model.inputs). `int16`: 16x8 (int16 activations,
    int8 weights; int16 input and output), as tests/int16_zoo.to_int16_tflite."""
    import tensorflow as tf
    shapes = {i.name: tuple(i.shape[1:]) for i in model.inputs}

    def samples():
        rng = np.random.default_rng(1)
        for _ in range(32):
            yield {name: rng.standard_normal((1, *s)).astype(np.float32) for name, s in shapes.items()}
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = samples
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
                                      if int16 else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int16 if int16 else tf.int8
    path.write_bytes(conv.convert())
    return str(path)


def in_strips(g, names, strips: int = 2) -> bool:
    """Does the block of layers `names` run in `strips` column strips (patch mode, schedule/column_strips.py)?"""
    try:
        block_strips(g, names, strips)
    except TinycError:
        return False
    return True


def longest_strip_block(g, names, strips: int = 2) -> list:
    """The longest run of consecutive `names` that runs in `strips` column strips (the first of equal length); []
    when none does."""
    best = []
    for i in range(len(names)):
        for j in range(len(names), i + max(len(best), 1), -1):
            if in_strips(g, names[i:j], strips):
                best = names[i:j]
                break
    return best
