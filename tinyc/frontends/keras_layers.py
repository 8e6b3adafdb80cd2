"""The Keras frontend's rules: one small converter per Keras layer class, collected in `SUPPORTED_LAYERS`.

A converter is `fn(cv, layer, cfg, ins)`: `cv` is the conversion context (`keras_import.Ctx`), `cfg` the layer's
`get_config()`, `ins` the IR names of its inputs. It emits IR nodes through `cv.emit`; the node emitted with
`final=True` (the default) writes the layer's output tensor, whose name it returns. A layer with several outputs
(a recurrent layer's return_state) returns a list, one IR name per output, None for an output nothing reads
(`cv.used`). Nothing here imports Keras.
"""
from __future__ import annotations


import numpy as np

from ..activations import relu6
from ..errors import TinycError
from .geometry import conv_geometry

# Keras activation name (keras.activations.serialize) -> IR activation dict. softmax is a separate node.
ACTIVATIONS = {
    "linear": None,
    "relu": {"fn": "relu"},
    "relu6": relu6(),
    "sigmoid": {"fn": "sigmoid"},
    "tanh": {"fn": "tanh"},
    "leaky_relu": {"fn": "leaky_relu", "alpha": 0.2},        # Keras 3 default negative_slope
    "hard_sigmoid": {"fn": "hard_sigmoid", "alpha": 1 / 6, "beta": 0.5},  # Keras 3: relu6(x + 3) / 6
    "silu": {"fn": "swish"},
    "swish": {"fn": "swish"},
    "hard_silu": {"fn": "hard_swish"},
    "hard_swish": {"fn": "hard_swish"},
    "elu": {"fn": "elu", "alpha": 1.0},
    "selu": {"fn": "selu", "alpha": 1.6732632423543772848170429916717, "gamma": 1.0507009873554804934193349852946},
    "celu": {"fn": "celu", "alpha": 1.0},
    "gelu": {"fn": "gelu"},                                    # Keras 3 default approximate=False
    "softplus": {"fn": "softplus"},
    "softsign": {"fn": "softsign"},
    "mish": {"fn": "mish"},
    "exponential": {"fn": "exp"},
    "log_sigmoid": {"fn": "log_sigmoid"},
    "hard_tanh": {"fn": "clip", "lo": -1.0, "hi": 1.0},
    "tanh_shrink": {"fn": "tanh_shrink"},
    "hard_shrink": {"fn": "shrink", "lambd": 0.5, "bias": 0.0},   # Keras 3 default threshold 0.5
    "soft_shrink": {"fn": "shrink", "lambd": 0.5, "bias": 0.5},
}


def activation_of(cv, layer, fn) -> tuple[dict | None, bool]:
    """(IR activation dict or None, is_softmax) for a Keras activation function."""
    name = cv.activation_name(fn)
    if name == "softmax":
        return None, True
    if name not in ACTIVATIONS:
        raise TinycError(f"activation '{name}' of layer '{layer.name}' ({type(layer).__name__}) is not supported; "
                         f"supported: softmax, {', '.join(sorted(ACTIVATIONS))}")
    act = ACTIVATIONS[name]
    return (dict(act) if act else None), False


def emit_with_activation(cv, layer, op, inputs, shape, fn=None, **attrs) -> str:
    """`op` with the layer's activation fused; softmax becomes a separate Softmax node on the last axis."""
    act, softmax = activation_of(cv, layer, layer.activation if fn is None else fn)
    if not softmax:
        return cv.emit(op, inputs, shape, activation=act, **attrs)
    pre = cv.emit(op, inputs, shape, final=False, tag=op.lower(), activation=None, **attrs)
    return cv.emit("Softmax", [pre], shape, axis=len(shape) - 1)


# -- geometry ------------------------------------------------------------------------------------------------
def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def _geometry_2d(cv, layer, cfg, x, kernel, strides, dilations):
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise TinycError(f"layer '{layer.name}' ({type(layer).__name__}) uses data_format="
                         f"'{cfg['data_format']}'; only channels_last is supported")
    n, h, w, c = cv.shape(x)
    oh, t, b = conv_geometry(h, kernel[0], strides[0], dilations[0], cfg["padding"])
    ow, lft, r = conv_geometry(w, kernel[1], strides[1], dilations[1], cfg["padding"])
    if oh <= 0 or ow <= 0:
        raise TinycError(f"layer '{layer.name}' gets an input {cv.shape(x)} smaller than its window")
    return (n, oh, ow), (t, lft, b, r)


# -- convolutions --------------------------------------------------------------------------------------------
def _bias(cv, layer):
    return [cv.const("bias", cv.numpy(layer.bias))] if layer.use_bias else []


def _kernel_2d(cv, kernel) -> np.ndarray:
    """A Keras kernel as [KH, KW, I, O]: a 1-D layer's [K, I, O] is one row (KH = 1)."""
    w = cv.numpy(kernel)
    return w[None] if w.ndim == 3 else w


def conv2d(cv, layer, cfg, ins):
    k, s, d = _pair(cfg["kernel_size"]), _pair(cfg["strides"]), _pair(cfg["dilation_rate"])
    nhw, pads = _geometry_2d(cv, layer, cfg, ins[0], k, s, d)
    w = _kernel_2d(cv, layer.kernel).transpose(3, 0, 1, 2)    # [KH,KW,I/g,O] -> [O,KH,KW,I/g]
    return emit_with_activation(cv, layer, "Conv2D", [ins[0], cv.const("kernel", w)] + _bias(cv, layer),
                                nhw + (cfg["filters"],), strides=s, dilations=d, pads=pads,
                                groups=cfg.get("groups", 1))


def _depthwise(cv, layer, cfg, x, kernel, final, fuse):
    k, s, d = _pair(cfg["kernel_size"]), _pair(cfg["strides"]), _pair(cfg["dilation_rate"])
    nhw, pads = _geometry_2d(cv, layer, cfg, x, k, s, d)
    kh, kw, c, mult = kernel.shape                          # output channel c*mult + m, as TF
    w = kernel.transpose(2, 3, 0, 1).reshape(c * mult, kh, kw, 1)
    inputs = [x, cv.const("depthwise_kernel", w)] + (_bias(cv, layer) if fuse else [])
    attrs = dict(strides=s, dilations=d, pads=pads, groups=c)
    if fuse:
        return emit_with_activation(cv, layer, "Conv2D", inputs, nhw + (c * mult,), **attrs)
    return cv.emit("Conv2D", inputs, nhw + (c * mult,), final=final, tag="depthwise", activation=None, **attrs)


def depthwise_conv2d(cv, layer, cfg, ins):
    return _depthwise(cv, layer, cfg, ins[0], _kernel_2d(cv, layer.kernel), final=True, fuse=True)


def separable_conv2d(cv, layer, cfg, ins):
    dw = _depthwise(cv, layer, cfg, ins[0], _kernel_2d(cv, layer.depthwise_kernel), final=False, fuse=False)
    w = _kernel_2d(cv, layer.pointwise_kernel).transpose(3, 0, 1, 2)
    n, h, wd, _ = cv.shape(dw)
    return emit_with_activation(cv, layer, "Conv2D", [dw, cv.const("pointwise_kernel", w)] + _bias(cv, layer),
                                (n, h, wd, cfg["filters"]), strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0),
                                groups=1)


_WINDOW_KEYS = ("kernel_size", "strides", "dilation_rate", "pool_size")


def _as_1d(convert_2d, tag: str):
    """A 1-D layer (Conv1D, SeparableConv1D, DepthwiseConv1D, MaxPooling1D, AveragePooling1D) as its 2-D form:
    [N,L,C] -> Reshape [N,1,L,C] -> the 2-D rule with window 1 x k (stride 1 x s, dilation 1 x d; 'causal'
    pads only the row's start) -> Reshape [N,L',O]. The reshapes are free aliases."""
    def convert(cv, layer, cfg, ins):
        _check_channels_last(layer, cfg)
        n, length, c = cv.shape(ins[0])
        x4 = cv.emit("Reshape", ins, (n, 1, length, c), final=False, tag="as_2d")
        cfg_2d = {key: (v if key not in _WINDOW_KEYS or v is None
                        else (1,) + (tuple(v) if isinstance(v, (list, tuple)) else (v,)))
                  for key, v in cfg.items()}
        with cv.inner(layer, tag):
            y4 = convert_2d(cv, layer, cfg_2d, [x4])
        n, _, out, o = cv.shape(y4)
        return cv.emit("Reshape", [y4], (n, out, o))
    return convert


def _transposed_length(size: int, k: int, s: int, d: int, padding: str, output_padding) -> tuple[int, int, int]:
    """(output length, crop before, crop after) of a Keras transposed convolution along one axis: Keras' output
    length (its _get_output_shape_given_tf_padding), then tf.nn.conv_transpose's padding for it (conv padding of
    an input that long, the odd pixel after)."""
    eff = (k - 1) * d + 1
    if output_padding is None:
        out = size * s if padding == "same" else size * s + max(eff - s, 0)
    else:
        out = (size - 1) * s + (eff % 2 if padding == "same" else eff) + output_padding
    before = max((size - 1) * s + eff - out, 0) // 2 if padding == "same" else 0
    return out, before, (size - 1) * s + eff - before - out


def conv2d_transpose(cv, layer, cfg, ins):
    """Conv2DTranspose (and, through `_as_1d`, Conv1DTranspose): the IR's ConvTranspose2D."""
    _check_channels_last(layer, cfg)
    if cfg["padding"] not in ("same", "valid"):
        raise TinycError(f"layer '{layer.name}' ({type(layer).__name__}) uses padding '{cfg['padding']}'; "
                         "transposed convolutions take same or valid")
    k, s, d = _pair(cfg["kernel_size"]), _pair(cfg["strides"]), _pair(cfg["dilation_rate"])
    op = cfg.get("output_padding")
    op = (None, None) if op is None else (tuple(op) if isinstance(op, (list, tuple)) else (op, op))
    op = (None,) + op if len(op) == 1 else op                 # a 1-D layer's, for its single row
    n, h, wd, _ = cv.shape(ins[0])
    geo = [_transposed_length(size, k[i], s[i], d[i], cfg["padding"], op[i]) for i, size in enumerate((h, wd))]
    w = _kernel_2d(cv, layer.kernel).transpose(2, 0, 1, 3)   # [KH,KW,O,I] -> [O,KH,KW,I]
    return emit_with_activation(cv, layer, "ConvTranspose2D", [ins[0], cv.const("kernel", w)] + _bias(cv, layer),
                                (n, geo[0][0], geo[1][0], cfg["filters"]), strides=s, dilations=d,
                                pads=(geo[0][1], geo[1][1], geo[0][2], geo[1][2]), groups=1)


def dense(cv, layer, cfg, ins):
    if getattr(layer, "quantization_mode", None):
        raise TinycError(f"Dense layer '{layer.name}' is Keras-quantized ({layer.quantization_mode}); "
                         "export the float model instead")
    w = cv.numpy(layer.kernel).T                               # [K,O] -> [O,K]
    shape = cv.shape(ins[0])[:-1] + (cfg["units"],)
    return emit_with_activation(cv, layer, "Dense", [ins[0], cv.const("kernel", w)] + _bias(cv, layer), shape)


def batch_norm(cv, layer, cfg, ins):
    shape = cv.shape(ins[0])
    axis = cfg["axis"][0] if isinstance(cfg["axis"], (list, tuple)) and len(cfg["axis"]) == 1 else cfg["axis"]
    if axis not in (-1, len(shape) - 1):
        raise TinycError(f"BatchNormalization '{layer.name}' normalizes axis {cfg['axis']}; only the last "
                         "(channels) axis is supported")
    c = shape[-1]
    gamma = cv.numpy(layer.gamma) if layer.scale else np.ones(c, np.float32)
    beta = cv.numpy(layer.beta) if layer.center else np.zeros(c, np.float32)
    consts = [cv.const(n, v) for n, v in (("gamma", gamma), ("beta", beta), ("moving_mean", layer.moving_mean),
                                          ("moving_variance", layer.moving_variance))]
    return cv.emit("BatchNorm", [ins[0]] + consts, shape, epsilon=float(cfg["epsilon"]))



# -- normalizations (tinyc/ops/normalize.py) ------------------------------------------------------------------
def _keras_axes(layer, axis, rank: int) -> tuple:
    axes = sorted({int(a) % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])})
    if 0 in axes:
        raise TinycError(f"{type(layer).__name__} '{layer.name}' normalizes over the batch axis; tinyc compiles one "
                         "sample at a time")
    return tuple(axes)


def _on_axes(value, shape, axes) -> np.ndarray:
    """A weight over `axes` of `shape` (Keras stores it with the sizes of those axes only) at the input's rank."""
    return np.asarray(value, np.float32).reshape([d if i in axes else 1 for i, d in enumerate(shape)])


def layer_norm(cv, layer, cfg, ins):
    """LayerNormalization: (x - mean) / sqrt(var + epsilon) * gamma + beta over `axis` (one or several)."""
    shape = cv.shape(ins[0])
    axes = _keras_axes(layer, cfg["axis"], len(shape))
    if cfg.get("rms_scaling"):
        raise TinycError(f"LayerNormalization '{layer.name}' uses rms_scaling (deprecated in Keras: it scales by the "
                         "variance, not the root mean square); use keras.layers.RMSNormalization")
    gamma = cv.numpy(layer.gamma) if layer.gamma is not None else np.ones(1, np.float32)
    params = [cv.const("gamma", _on_axes(gamma, shape, axes) if layer.gamma is not None
                       else gamma.reshape((1,) * len(shape)))]
    if layer.beta is not None:
        params.append(cv.const("beta", _on_axes(cv.numpy(layer.beta), shape, axes)))
    return cv.emit("Normalize", [ins[0]] + params, shape, axes=axes, epsilon=float(cfg["epsilon"]), center=True)


def rms_norm(cv, layer, cfg, ins):
    """RMSNormalization: x / sqrt(mean(x^2) + epsilon) * scale over `axis`."""
    shape = cv.shape(ins[0])
    axes = _keras_axes(layer, cfg["axis"], len(shape))
    scale = cv.const("scale", _on_axes(cv.numpy(layer.scale), shape, axes))
    return cv.emit("Normalize", [ins[0], scale], shape, axes=axes, epsilon=float(cfg["epsilon"]), center=False)


def group_norm(cv, layer, cfg, ins):
    """GroupNormalization: the channel axis split into (groups, channels per group), then a normalization over
    every axis but the batch and the group one, with gamma and beta per channel; a free Reshape on each side."""
    shape = cv.shape(ins[0])
    rank = len(shape)
    axis, groups = int(cfg["axis"]) % rank, int(cfg["groups"])
    if axis == 0 or shape[axis] % groups:
        raise TinycError(f"GroupNormalization '{layer.name}': axis {cfg['axis']} of {list(shape)} does not split into "
                         f"{groups} groups")
    grouped = shape[:axis] + (groups, shape[axis] // groups) + shape[axis + 1:]
    view = cv.emit("Reshape", ins, grouped, final=False, tag="groups")
    per_channel = [groups if i == axis else shape[axis] // groups if i == axis + 1 else 1 for i in range(rank + 1)]
    params = [cv.const("gamma", (cv.numpy(layer.gamma) if layer.gamma is not None
                                 else np.ones(shape[axis], np.float32)).reshape(per_channel))]
    if layer.beta is not None:
        params.append(cv.const("beta", cv.numpy(layer.beta).reshape(per_channel)))
    axes = tuple(i for i in range(1, rank + 1) if i != axis)
    normed = cv.emit("Normalize", [view] + params, grouped, final=False, tag="normalized", axes=axes,
                     epsilon=float(cfg["epsilon"]), center=True)
    return cv.emit("Reshape", [normed], shape)


def unit_norm(cv, layer, cfg, ins):
    """UnitNormalization: x / max(||x||_2, 1e-12) along one axis."""
    shape = cv.shape(ins[0])
    axes = _keras_axes(layer, cfg["axis"], len(shape))
    if len(axes) != 1:
        raise TinycError(f"UnitNormalization '{layer.name}' over several axes {cfg['axis']}; tinyc normalizes along "
                         "one axis")
    return cv.emit("LpNormalize", ins, shape, axis=axes[0], p=2, epsilon=1e-12)


def normalization(cv, layer, cfg, ins):
    """The Normalization preprocessing layer, adapted: (x - mean) / max(sqrt(var), epsilon) folded into x * s + t
    (invert: x * max(sqrt(var), epsilon) + mean); a ScaleShift when mean and var vary along the last axis only."""
    shape = cv.shape(ins[0])
    mean = np.asarray(cv.numpy(layer.mean), np.float64)
    std = np.maximum(np.sqrt(np.asarray(cv.numpy(layer.variance), np.float64)), float(cv.keras.backend.epsilon()))
    scale, shift = (std, mean) if cfg.get("invert") else (1.0 / std, -mean / std)
    full = (1,) * (len(shape) - scale.ndim) + scale.shape
    if any(d not in (1, n) for d, n in zip(full, shape)):
        raise TinycError(f"Normalization '{layer.name}': mean of shape {list(mean.shape)} does not broadcast to the "
                         f"input {list(shape)}")
    if all(d == 1 for d in full[:-1]):
        vector = [np.broadcast_to(v.reshape(-1), (shape[-1],)) for v in (scale, shift)]
        return cv.emit("ScaleShift", [ins[0], cv.const("scale", vector[0]), cv.const("shift", vector[1])], shape)
    y = cv.emit("Mul", [ins[0], cv.const("scale", scale.reshape(full))], shape, final=False, tag="scale",
                activation=None)
    return cv.emit("Add", [y, cv.const("shift", shift.reshape(full))], shape, activation=None)

# -- activations ---------------------------------------------------------------------------------------------
def _act_node(cv, ins, act):
    if act is None:
        return cv.emit("Identity", ins, cv.shape(ins[0]))
    return cv.emit("Activation", ins, cv.shape(ins[0]), **act)


def activation(cv, layer, cfg, ins):
    act, softmax = activation_of(cv, layer, layer.activation)
    if softmax:
        return cv.emit("Softmax", ins, cv.shape(ins[0]), axis=len(cv.shape(ins[0])) - 1)
    return _act_node(cv, ins, act)


def relu(cv, layer, cfg, ins):
    """Keras 3 ReLU(max_value, negative_slope, threshold); the common cases are the plain activations (which
    also have int8 kernels), the others Keras' full formula (`keras_relu`)."""
    slope, top, thr = float(cfg.get("negative_slope") or 0), cfg.get("max_value"), float(cfg.get("threshold") or 0)
    if top is not None and float(top) < 0:
        raise TinycError(f"ReLU '{layer.name}' has max_value={top}; Keras requires max_value >= 0")
    if thr == 0 and slope and top is None:
        return _act_node(cv, ins, {"fn": "leaky_relu", "alpha": slope})
    if thr == 0 and not slope:
        return _act_node(cv, ins, {"fn": "relu"} if top is None else {"fn": "clip", "lo": 0.0, "hi": float(top)})
    return _act_node(cv, ins, {"fn": "keras_relu", "threshold": thr, "slope": slope,
                               "hi": float(top) if top is not None else float(np.finfo(np.float32).max)})


def elu(cv, layer, cfg, ins):
    return _act_node(cv, ins, {"fn": "elu", "alpha": float(cfg.get("alpha", 1.0))})


def prelu(cv, layer, cfg, ins):
    """PReLU: x < 0 ? alpha * x : x, alpha of the input's shape without the batch (1 on the shared axes)."""
    alpha = cv.numpy(layer.alpha)
    shape = cv.shape(ins[0])
    return cv.emit("PRelu", [ins[0], cv.const("alpha", alpha.reshape((1,) + alpha.shape))], shape, activation=None)


def leaky_relu(cv, layer, cfg, ins):
    return _act_node(cv, ins, {"fn": "leaky_relu", "alpha": float(cfg.get("negative_slope", 0.3))})


def softmax(cv, layer, cfg, ins):
    axis, rank = cfg.get("axis", -1), len(cv.shape(ins[0]))
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise TinycError(f"Softmax '{layer.name}' over several axes {axis} is not supported")
        axis = axis[0]
    return cv.emit("Softmax", ins, cv.shape(ins[0]), axis=axis % rank)


# -- pooling -------------------------------------------------------------------------------------------------
def _pool(op, **extra):
    """MaxPooling2D / AveragePooling2D (and, through `_as_1d`, the 1-D ones)."""
    def convert(cv, layer, cfg, ins):
        k = _pair(cfg["pool_size"])
        s = _pair(cfg["strides"] if cfg.get("strides") is not None else k)
        nhw, pads = _geometry_2d(cv, layer, cfg, ins[0], k, s, (1, 1))
        return cv.emit(op, ins, nhw + (cv.shape(ins[0])[3],), kernel=k, strides=s, pads=pads, **extra)
    return convert


def _check_channels_last(layer, cfg):
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise TinycError(f"layer '{layer.name}' ({type(layer).__name__}) uses data_format="
                         f"'{cfg['data_format']}'; only channels_last is supported")


def _global_pool(op, **attrs):
    """A reduction over the spatial axes: GlobalAveragePooling1D/2D/3D (Mean), GlobalMaxPooling3D (Reduce max;
    1-D and 2-D are a whole-image MaxPool2D below, which tinyc's quantizer takes)."""
    def convert(cv, layer, cfg, ins):
        _check_channels_last(layer, cfg)
        shape = cv.shape(ins[0])
        axes = tuple(range(1, len(shape) - 1))
        keep = bool(cfg.get("keepdims", False))
        out = tuple(1 if (i in axes) else d for i, d in enumerate(shape) if keep or i not in axes)
        return cv.emit(op, ins, out, axes=axes, keepdims=keep, **attrs)
    return convert


global_avg_pool = _global_pool("Mean")
global_max_pool = _global_pool("Reduce", kind="max")


def global_max_pool_2d(cv, layer, cfg, ins):
    _check_channels_last(layer, cfg)
    n, h, w, c = cv.shape(ins[0])
    attrs = dict(kernel=(h, w), strides=(1, 1), pads=(0, 0, 0, 0))
    if cfg.get("keepdims", False):
        return cv.emit("MaxPool2D", ins, (n, 1, 1, c), **attrs)
    pooled = cv.emit("MaxPool2D", ins, (n, 1, 1, c), final=False, tag="maxpool", **attrs)
    return cv.emit("Reshape", [pooled], (n, c))


def global_max_pool_1d(cv, layer, cfg, ins):
    """GlobalMaxPooling1D: a MaxPool2D over the whole row of [N, 1, L, C]."""
    _check_channels_last(layer, cfg)
    n, length, c = cv.shape(ins[0])
    x4 = cv.emit("Reshape", ins, (n, 1, length, c), final=False, tag="as_2d")
    pooled = cv.emit("MaxPool2D", [x4], (n, 1, 1, c), final=False, tag="maxpool", kernel=(1, length), strides=(1, 1),
                     pads=(0, 0, 0, 0))
    return cv.emit("Reshape", [pooled], (n, 1, c) if cfg.get("keepdims", False) else (n, c))


# -- shape and merge layers ----------------------------------------------------------------------------------
def flatten(cv, layer, cfg, ins):
    shape = cv.shape(ins[0])
    if cfg.get("data_format", "channels_last") != "channels_last" and len(shape) > 2:
        raise TinycError(f"Flatten '{layer.name}' uses data_format='channels_first'; not supported")
    return cv.emit("Reshape", ins, (shape[0], int(np.prod(shape[1:], dtype=np.int64))))


def reshape(cv, layer, cfg, ins):
    shape = cv.shape(ins[0])
    target = [int(d) for d in cfg["target_shape"]]
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
        target[target.index(-1)] = int(np.prod(shape[1:], dtype=np.int64)) // max(known, 1)
    return cv.emit("Reshape", ins, (shape[0],) + tuple(target))


def permute(cv, layer, cfg, ins):
    perm = (0,) + tuple(int(d) for d in cfg["dims"])
    shape = cv.shape(ins[0])
    return cv.emit("Transpose", ins, tuple(shape[p] for p in perm), perm=perm)


def _chain(op, average=False):
    """Add / Subtract / Multiply / Maximum / Minimum of any number of inputs (a chain of binary ops, numpy
    broadcasting); Average: their sum divided by their count, as Keras computes it."""
    def convert(cv, layer, cfg, ins):
        acc = ins[0]
        for i, other in enumerate(ins[1:]):
            shape = tuple(np.broadcast_shapes(cv.shape(acc), cv.shape(other)))
            last = i == len(ins) - 2 and not average
            acc = cv.emit(op, [acc, other], shape, final=last, tag=op.lower(), activation=None)
        if average:
            acc = cv.emit("Div", [acc, cv.const("count", len(ins))], cv.shape(acc), activation=None)
        return acc
    return convert


def concatenate(cv, layer, cfg, ins):
    shapes = [cv.shape(i) for i in ins]
    axis = int(cfg.get("axis", -1)) % len(shapes[0])
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return cv.emit("Concat", ins, tuple(out), axis=axis)


def cropping(cv, layer, cfg, ins):
    """Cropping1D / Cropping2D / Cropping3D: a Slice of the spatial axes."""
    shape = cv.shape(ins[0])
    nsp = len(shape) - 2
    crops = cfg["cropping"]
    crops = [tuple(int(v) for v in _pair(c)) for c in (crops if nsp > 1 else [crops])]
    first = cfg.get("data_format", "channels_last") == "channels_first"
    axes = range(2, 2 + nsp) if first else range(1, 1 + nsp)
    starts, sizes = [0] * len(shape), list(shape)
    for ax, (b, e) in zip(axes, crops):
        starts[ax], sizes[ax] = b, shape[ax] - b - e
    if any(n <= 0 for n in sizes):
        raise TinycError(f"{type(layer).__name__} '{layer.name}' crops {shape} to nothing (zero-size); "
                         "tinyc handles zero-size tensors in ONNX models only")
    if tuple(sizes) == tuple(shape):
        return cv.emit("Identity", ins, shape)
    return cv.emit("Slice", ins, tuple(sizes), starts=tuple(starts), steps=(1,) * len(shape), sizes=tuple(sizes))


def upsampling_1d(cv, layer, cfg, ins):
    """UpSampling1D: every step repeated `size` times: [N, L, C] -> [N, L, size, C] broadcast -> [N, L*size, C]."""
    n, length, c = cv.shape(ins[0])
    size = int(cfg["size"])
    x = cv.emit("Reshape", ins, (n, length, 1, c), final=False, tag="steps")
    y = cv.emit("BroadcastTo", [x], (n, length, size, c), final=False, tag="repeated", target=(n, length, size, c))
    return cv.emit("Reshape", [y], (n, length * size, c))


def _resize_images(cv, layer, cfg, ins, out_hw, interpolation, nearest_coord):
    """Resize of the two spatial axes of a 4-D image batch (either data_format) as Keras' TF backend computes it:
    tf.image.resize (half-pixel centers) for bilinear, `nearest_coord` for nearest."""
    shape = cv.shape(ins[0])
    if len(shape) != 4:
        raise TinycError(f"{type(layer).__name__} '{layer.name}' has a rank-{len(shape)} input; tinyc resizes 4-D "
                         "image batches")
    if interpolation not in ("nearest", "bilinear"):
        raise TinycError(f"{type(layer).__name__} '{layer.name}' uses interpolation '{interpolation}'; tinyc "
                         "supports nearest and bilinear")
    hw = (2, 3) if cfg.get("data_format", "channels_last") == "channels_first" else (1, 2)
    out, scales = list(shape), [1.0] * 4
    for ax, n in zip(hw, out_hw):
        out[ax], scales[ax] = int(n), int(n) / shape[ax]
    if tuple(out) == tuple(shape):
        return cv.emit("Identity", ins, tuple(out))
    mode, coord = ("linear", "tflite_half_pixel") if interpolation == "bilinear" else ("nearest", nearest_coord)
    return cv.emit("Resize", ins, tuple(out), sizes=tuple(out), mode=mode, coord=coord, scales=tuple(scales),
                   nearest_mode="floor", cubic_coeff_a=-0.75, exclude_outside=0)


def upsampling_2d(cv, layer, cfg, ins):
    """UpSampling2D: nearest repeats every pixel (ops.repeat: source index o // size), bilinear is tf.image.resize
    to size times the input."""
    shape = cv.shape(ins[0])
    size = [int(v) for v in _pair(cfg["size"])]
    hw = (2, 3) if cfg.get("data_format", "channels_last") == "channels_first" else (1, 2)
    return _resize_images(cv, layer, cfg, ins, [shape[ax] * k for ax, k in zip(hw, size)],
                          cfg.get("interpolation", "nearest"), "asymmetric")


def resizing(cv, layer, cfg, ins):
    """Resizing (the preprocessing layer): tf.image.resize to (height, width), half-pixel centers."""
    what = f"Resizing '{layer.name}'"
    for flag in ("crop_to_aspect_ratio", "pad_to_aspect_ratio"):
        if cfg.get(flag):
            raise TinycError(f"{what} uses {flag}=True; tinyc resizes the whole image (crop or pad with "
                             "Cropping2D / ZeroPadding2D before a plain Resizing)")
    shape = cv.shape(ins[0])
    hw = (2, 3) if cfg.get("data_format", "channels_last") == "channels_first" else (1, 2)
    out_hw = [int(cfg["height"]), int(cfg["width"])]
    if cfg.get("antialias") and any(o < shape[ax] for ax, o in zip(hw, out_hw)):
        raise TinycError(f"{what} downsamples with antialias=True; tinyc resizes without antialiasing")
    return _resize_images(cv, layer, cfg, ins, out_hw, cfg.get("interpolation", "bilinear"), "tflite_half_pixel")


def repeat_vector(cv, layer, cfg, ins):
    """RepeatVector: [N, F] -> [N, 1, F] -> broadcast to [N, n, F]."""
    n, f = cv.shape(ins[0])
    k = int(cfg["n"])
    x = cv.emit("Reshape", ins, (n, 1, f), final=False, tag="row")
    return cv.emit("BroadcastTo", [x], (n, k, f), target=(n, k, f))


def zero_padding(cv, layer, cfg, ins):
    _check_channels_last(layer, cfg)
    shape = cv.shape(ins[0])
    spatial = cfg["padding"] if len(shape) == 4 else (cfg["padding"],)
    pads = ((0, 0),) + tuple(tuple(int(v) for v in _pair(p)) for p in spatial) + ((0, 0),)
    out = tuple(d + b + e for d, (b, e) in zip(shape, pads))
    return cv.emit("Pad", ins, out, pads=pads, value=0.0)


def identity(cv, layer, cfg, ins):
    return cv.emit("Identity", ins, cv.shape(ins[0]))


def rescaling(cv, layer, cfg, ins):
    shape = cv.shape(ins[0])
    scale, offset = np.asarray(cfg["scale"], np.float32), np.asarray(cfg["offset"], np.float32)
    has_offset = bool(np.any(offset != 0))
    y = cv.emit("Mul", [ins[0], cv.const("scale", scale)], shape, final=not has_offset, tag="scale",
                activation=None)
    if has_offset:
        y = cv.emit("Add", [y, cv.const("offset", offset)], shape, activation=None)
    return y


def embedding(cv, layer, cfg, ins):
    """Embedding: a Gather of rows of the constant table by int32/int64 indices (negative ones wrap, out-of-range
    ones clamp; Keras fails on them)."""
    if cv.g.tensors[ins[0]].dtype not in ("int32", "int64"):
        raise TinycError(f"Embedding '{layer.name}' reads {cv.g.tensors[ins[0]].dtype} indices; give the model an "
                         "integer input (keras.Input(..., dtype='int32'))")
    if getattr(layer, "quantization_mode", None):
        raise TinycError(f"Embedding '{layer.name}' is Keras-quantized; export the float model instead")
    table = cv.const("embeddings", layer.embeddings)
    return cv.emit("Gather", [table, ins[0]], cv.shape(ins[0]) + (cfg["output_dim"],), axis=0)


def time_distributed(cv, layer, cfg, ins):
    """TimeDistributed(inner): the inner layer on every step, as one call on a batch of N*T samples between free
    reshapes ([N,T,...] -> [N*T,...] -> inner -> [N,T,...]). Every layer tinyc converts computes each sample
    on its own, so the steps never mix."""
    inner = layer.layer
    rule = SUPPORTED_LAYERS.get(type(inner).__name__)
    if rule is None or rule is input_layer:
        raise TinycError(f"TimeDistributed '{layer.name}' wraps a {type(inner).__name__}, which tinyc does not "
                         "convert; run `tinyc ops` to see supported layers")
    shape = cv.shape(ins[0])
    steps = cv.emit("Reshape", ins, (shape[0] * shape[1],) + tuple(shape[2:]), final=False, tag="steps")
    with cv.inner(inner, "per_step"):
        y = rule(cv, inner, inner.get_config(), [steps])
    return cv.emit("Reshape", [y], tuple(shape[:2]) + tuple(cv.shape(y)[1:]))


# -- recurrent layers (tinyc/ops/recurrent.py) ---------------------------------------------------------------
# Keras cell class -> (IR op, the states the cell carries, as return_state gives them)
_CELLS = {"LSTMCell": ("LSTM", ("h", "c")), "GRUCell": ("GRU", ("h",)), "SimpleRNNCell": ("RNN", ("h",))}


def _cells_of(layer) -> list:
    """[(cell, IR op, state names)] of a recurrent layer: its one cell (LSTM, GRU, SimpleRNN, RNN of one cell), or
    an RNN's stacked cells (StackedRNNCells), bottom first."""
    cell = getattr(layer, "cell", None)
    cells = list(cell.cells) if type(cell).__name__ == "StackedRNNCells" else [cell]
    for c in cells:
        if type(c).__name__ not in _CELLS:
            raise TinycError(f"{type(layer).__name__} '{layer.name}' runs a {type(c).__name__}; tinyc converts "
                             "recurrent layers of LSTMCell, GRUCell and SimpleRNNCell")
    return [(c,) + _CELLS[type(c).__name__] for c in cells]


def _flat(value) -> list:
    """A layer's states as one list (a stacked RNN's are a list per cell)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListWrapper":
        return [leaf for v in value for leaf in _flat(v)]
    return [value]


def _cell_activations(cv, layer, cell, op) -> tuple:
    """The IR op's activations (f, g, h) / (f, g) / (f,) from the cell's recurrent_activation and activation."""
    fns = {"LSTM": ("recurrent_activation", "activation", "activation"),
           "GRU": ("recurrent_activation", "activation"), "RNN": ("activation",)}[op]
    acts = []
    for fn in fns:
        act, softmax = activation_of(cv, layer, getattr(cell, fn))
        if softmax:
            raise TinycError(f"{type(layer).__name__} '{layer.name}' uses softmax inside its cell; tinyc's recurrent "
                             "layers take elementwise activations")
        acts.append(act)
    return tuple(acts)


class _Direction:
    """One direction of a recurrent layer (a whole LSTM / GRU / SimpleRNN, or one half of a Bidirectional): its IR
    node's inputs and attributes, and the outputs built so far ("sequence", "last_h", "last_c")."""

    def __init__(self, op, states, inputs, attrs, shape, prefix, flip, carried, joint):
        self.op, self.states, self.inputs, self.attrs, self.shape = op, states, inputs, attrs, shape
        self.prefix = prefix    # of its constants and helper tensors: '' or 'forward_' / 'backward_'
        self.flip = flip        # its sequence is wanted in the reverse of the node's order (input order)
        self.carried = carried  # stateful=True: state name ('h', 'c') -> the IR state tensor it starts from
        self.joint = joint      # an LSTM whose final c is read: the kind ("sequence" / "last_h") of its one node,
                                # which gives its final c as a second output (cell_output); else None
        self.made = {}          # its outputs built so far, by kind, as Keras gives them
        self.sequence = None    # the node's own sequence output (input order), once built
        self.node_outputs = None    # a joint direction's node's two outputs, once built


def _needs(layer, used) -> list:
    """Per cell of a recurrent layer (bottom first), the outputs its direction gives: the sequence below the top
    cell, the top's sequence or final h when read (`used[0]`), the final states return_state gives that are read
    (`used[1:]`, the cells' in order) and those a stateful layer carries."""
    cells = _cells_of(layer)
    needs = [{"sequence"} for _ in cells[:-1]] + [set()]
    if used[0]:
        needs[-1].add("sequence" if layer.return_sequences else "last_h")
    states = [(k, f"last_{s}") for k, (_, _, names) in enumerate(cells) for s in names]
    for (k, kind), read in zip(states, used[1:] if layer.return_state else ()):
        if read:
            needs[k].add(kind)
    for k, kind in states if layer.stateful else ():
        needs[k].add(kind)
    return needs


def _directions(cv, layer, x, initial, prefix, flip, needs) -> list:
    """The directions of a recurrent layer, one per cell, bottom first: each stacked cell runs over the sequence of
    the one below (in input order, whichever way they all run); `initial`: the states given at the call, the
    cells' in order, or none; `needs`: what each gives (`_needs`)."""
    cells = _cells_of(layer)
    counts = [len(states) for _, _, states in cells]
    if initial and len(initial) != sum(counts):
        raise TinycError(f"{type(layer).__name__} '{layer.name}' is given {len(initial)} initial states; it "
                         f"carries {sum(counts)}")
    # stateful=True: the carried states start from the layer's; initial states given at the call replace them
    values = _flat(layer.states) if layer.stateful and not initial else None
    if values is not None and len(cv.layer._inbound_nodes) > 1:
        raise TinycError(f"{type(cv.layer).__name__} '{cv.layer.name}' is stateful and called "
                         f"{len(cv.layer._inbound_nodes)} times; tinyc carries the state of a layer called once")
    dirs, at = [], 0
    for k, (cell, op, states) in enumerate(cells):
        top = k == len(cells) - 1
        own = slice(at, at + len(states))
        at += len(states)
        joint = ("sequence" if "sequence" in needs[k] else "last_h") if op == "LSTM" and "last_c" in needs[k] else None
        d = _direction(cv, layer, cell, op, states, x, initial[own] if initial else [],
                       prefix + ("" if len(cells) == 1 else f"cell{k}_"), flip and top,
                       values[own] if values is not None else None, joint)
        dirs.append(d)
        if not top:
            x = _direction_output(cv, d, "sequence", final=False)
    return dirs


def _direction(cv, layer, cell, op, states, x, initial, prefix, flip, carry_from, joint) -> _Direction:
    """The node inputs of one recurrent cell: weights transposed to [gates*H, I] and [gates*H, H] (Keras's gate
    order is the op's), zeros for an absent bias, peepholes and initial states not given as inputs. GRU
    reset_after=True: the [2, 3H] bias is the input bias and the recurrent one (linear_before_reset);
    reset_after=False: one bias, the recurrent bias zero. `carry_from`: stateful=True, the layer's state values
    this cell's state tensors start from."""
    shape = cv.shape(x)
    if len(shape) != 3:
        raise TinycError(f"{type(layer).__name__} '{layer.name}' gets an input of shape {shape}; recurrent layers "
                         "take [batch, steps, features]")
    B, T, _ = shape
    H = int(cell.units)
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    zeros = np.zeros(G * H, np.float32)
    bias = cv.numpy(cell.bias) if cell.use_bias else zeros
    if op == "GRU" and cell.reset_after:
        b, rb = (bias[0], bias[1]) if cell.use_bias else (zeros, zeros)
        biases = [cv.const(f"{prefix}input_bias", b), cv.const(f"{prefix}recurrent_bias", rb)]
    elif op == "GRU":
        biases = [cv.const(f"{prefix}bias", bias), cv.const(f"{prefix}recurrent_bias", zeros)]
    else:
        biases = [cv.const(f"{prefix}bias", bias)]
    carried = {}
    for s, value in zip(states, carry_from or ()):
        if tuple(value.shape) != (B, H):
            raise TinycError(f"{type(layer).__name__} '{layer.name}' is stateful with batch size {value.shape[0]}; "
                             "tinyc compiles one sample at a time: build the model with batch_size=1")
        name = cv.g.unique_name(f"{cv.out}_{prefix}state_{s}")
        cv.g.add_state(name, (B, H), initial=cv.numpy(value))
        carried[s] = name
    if carried:
        initial = [carried[s] for s in states]
    if not initial:
        initial = [cv.const(f"{prefix}initial_{s}", np.zeros((B, H), np.float32)) for s in states]
    inputs = [x, cv.const(f"{prefix}kernel", cv.numpy(cell.kernel).T),
              cv.const(f"{prefix}recurrent_kernel", cv.numpy(cell.recurrent_kernel).T)] + biases + list(initial)
    attrs = dict(activations=_cell_activations(cv, layer, cell, op), clip=None, reverse=bool(layer.go_backwards))
    if op == "LSTM":
        inputs.append(cv.const(f"{prefix}peepholes", np.zeros(3 * H, np.float32)))
        attrs.update(cell_clip=None, input_forget=False)
    if op == "GRU":
        attrs.update(linear_before_reset=bool(cell.reset_after))
    return _Direction(op, states, inputs, attrs, (B, T, H), prefix, flip, carried, joint)


def _direction_output(cv, d: _Direction, kind: str, final: bool) -> str:
    """Output `kind` of direction `d`, built on first use. A node of the op gives it, but the final h of a direction
    whose sequence is built is its last processed step (a Slice and a Reshape, no second pass over the sequence),
    and a joint direction's final c is the second output of its one node (cell_output; a Reshape of it, which
    costs nothing, when it is the layer's output). A flipped sequence is a Slice stepping back over the node's
    (Keras returns a go_backwards layer's sequence in processing order)."""
    if kind in d.made:
        return d.made[kind]
    B, T, H = d.shape
    tag = f"{d.prefix}{kind}"
    if d.joint and d.node_outputs is None:
        main = d.joint
        out = cv.emit(d.op, d.inputs, (B, T, H) if main == "sequence" else (B, H), final=False,
                      tag=f"{d.prefix}{main}", output=main, cell_output=True, **d.attrs)
        c = cv.g.unique_name(f"{cv.out}_{d.prefix}last_c")
        cv.g.add_tensor(c, (B, H))
        cv.g.nodes[-1].outputs.append(c)
        d.node_outputs = {main: out, "last_c": c}
        if main == "sequence":
            d.sequence = out
    if d.joint and kind in d.node_outputs and not (kind == "sequence" and d.flip):
        y = d.node_outputs[kind]
        if final:
            y = cv.emit("Reshape", [y], cv.g.tensors[y].shape, final=True, tag=tag)
    elif kind == "last_h" and d.sequence is not None:
        step = 0 if d.attrs["reverse"] else T - 1
        last = cv.emit("Slice", [d.sequence], (B, 1, H), final=False, tag=f"{d.prefix}{kind}_step",
                       starts=(0, step, 0), steps=(1, 1, 1), sizes=(B, 1, H))
        y = cv.emit("Reshape", [last], (B, H), final=final, tag=tag)
    elif kind == "sequence" and d.flip:
        if d.sequence is None:
            d.sequence = cv.emit(d.op, d.inputs, (B, T, H), final=False, tag=tag, output=kind, **d.attrs)
        y = cv.emit("Slice", [d.sequence], (B, T, H), final=final, tag=f"{tag}_reversed",
                    starts=(0, T - 1, 0), steps=(1, -1, 1), sizes=(B, T, H))
    elif kind == "sequence":
        y = d.sequence = cv.emit(d.op, d.inputs, (B, T, H), final=final, tag=tag, output=kind, **d.attrs)
    else:
        y = cv.emit(d.op, d.inputs, (B, H), final=final, tag=tag, output=kind, **d.attrs)
    d.made[kind] = y
    return y


def _carry(cv, d: _Direction) -> None:
    """stateful=True: each carried state takes the layer's final state after every inference."""
    for s, name in d.carried.items():
        cv.g.state[name] = _direction_output(cv, d, f"last_{s}", final=False)


def _distinct(cv, names: list) -> list:
    """A layer's outputs, each its own tensor: an output with the value of an earlier one (the last output and the
    final h) is an Identity copy of it, so that a model may return both."""
    seen, out = set(), []
    for name in names:
        if name is not None and name in seen:
            name = cv.emit("Identity", [name], cv.shape(name), final=False, tag="copy")
        seen.add(name)
        out.append(name)
    return out


def recurrent(cv, layer, cfg, ins):
    """LSTM, GRU, SimpleRNN, RNN of one such cell or of stacked ones: a node for each read output — the sequence
    (return_sequences) or the last output of the top cell, and the final states (return_state: each cell's h, and
    c for an LSTM cell). Initial states passed at the call are inputs of the nodes. stateful=True: the initial
    states are state tensors of the graph (docs/streaming-state.md), starting from the layer's states, and take
    the final states after each inference. Dropout, unroll and the cuDNN choice do not change what inference
    computes."""
    dirs = _directions(cv, layer, ins[0], ins[1:], "", bool(layer.go_backwards), _needs(layer, cv.used))
    wanted = [(dirs[-1], "sequence" if layer.return_sequences else "last_h")]
    wanted += [(d, f"last_{s}") for d in dirs for s in d.states] if layer.return_state else []
    outs = [_direction_output(cv, d, kind, final=i == 0) if used else None
            for i, ((d, kind), used) in enumerate(zip(wanted, cv.used))]
    for d in dirs:
        _carry(cv, d)
    return _distinct(cv, outs) if len(outs) > 1 else outs[0]


def _merge(cv, mode: str, ys: list) -> str:
    """Bidirectional's merge of the two directions' outputs, as Keras computes it."""
    shape = cv.shape(ys[0])
    if mode == "concat":
        return cv.emit("Concat", ys, shape[:-1] + (shape[-1] + cv.shape(ys[1])[-1],), axis=len(shape) - 1)
    if mode in ("sum", "mul"):
        return cv.emit("Add" if mode == "sum" else "Mul", ys, shape, activation=None)
    total = cv.emit("Add", ys, shape, final=False, tag="sum", activation=None)
    return cv.emit("Div", [total, cv.const("count", np.float32(2))], shape, activation=None)


def bidirectional(cv, layer, cfg, ins):
    """Bidirectional: its forward and backward layers' directions (the backward one's sequence back in input order,
    as Keras flips it), merged by concat / sum / ave / mul, or both returned (merge_mode None); with return_state,
    the forward layer's final states, then the backward one's."""
    subs = (("forward_", layer.forward_layer), ("backward_", layer.backward_layer))
    counts = [sum(len(states) for _, _, states in _cells_of(sub)) for _, sub in subs]
    initial = ins[1:]
    if initial and len(initial) != sum(counts):
        raise TinycError(f"Bidirectional '{layer.name}' is given {len(initial)} initial states; its layers carry "
                         f"{sum(counts)}")
    parts = (initial[:counts[0]], initial[counts[0]:])
    mode = cfg.get("merge_mode")
    n_heads = 2 if mode is None else 1
    reads = [(cv.used[0], cv.used[n_heads:n_heads + counts[0]]),        # per side: its head, its states
             (cv.used[1] if mode is None else cv.used[0], cv.used[n_heads + counts[0]:])]
    sides = [_directions(cv, sub, ins[0], part, prefix, bool(sub.go_backwards) != (prefix == "backward_"),
                         _needs(sub, (head, *states)))
             for (prefix, sub), part, (head, states) in zip(subs, parts, reads)]
    main = "sequence" if layer.return_sequences else "last_h"
    if mode is None:
        heads = [_direction_output(cv, dirs[-1], main, final=i == 0) if used else None
                 for i, (dirs, used) in enumerate(zip(sides, cv.used))]
    else:
        heads = [_merge(cv, mode, [_direction_output(cv, dirs[-1], main, final=False) for dirs in sides])
                 if cv.used[0] else None]
    states = [(d, f"last_{s}") for dirs in sides for d in dirs for s in d.states] if layer.return_state else []
    outs = heads + [_direction_output(cv, d, kind, final=False) if used else None
                    for (d, kind), used in zip(states, cv.used[len(heads):])]
    for dirs in sides:
        for d in dirs:
            _carry(cv, d)
    return _distinct(cv, outs) if len(outs) > 1 else outs[0]


def input_layer(cv, layer, cfg, ins):
    raise TinycError(f"InputLayer '{layer.name}' is not one of the model's inputs")


_DROPOUT_LIKE = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                 "AlphaDropout", "ActivityRegularization")

# -- matrix products of computed tensors (tinyc/ops/matmul.py) ----------------------------------------------
def dot(cv, layer, cfg, ins):
    """Dot (batch_dot) of two 2-D or 3-D inputs: axes[0] of the first contracted with axes[1] of the second, as
    one MatMul (an operand whose contracted axis is not where the product wants it is read transposed)."""
    if cfg.get("normalize"):
        raise TinycError(f"Dot '{layer.name}' with normalize=True (cosine proximity) is not supported; use "
                         "normalize=False, or normalize the inputs with UnitNormalization layers first")
    ranks = [len(cv.shape(i)) for i in ins]
    axes = cfg["axes"] if isinstance(cfg["axes"], (list, tuple)) else (cfg["axes"], cfg["axes"])
    axes = [int(ax) % r for ax, r in zip(axes, ranks)]
    if len(ins) != 2 or any(r not in (2, 3) for r in ranks) or 0 in axes:
        raise TinycError(f"Dot '{layer.name}' of inputs of ranks {ranks} over axes {cfg['axes']}; tinyc takes two "
                         "2-D or 3-D inputs contracted over non-batch axes")
    a, b = ins
    if ranks[0] == 2:       # [B, K] as [B, 1, K]
        a = cv.emit("Reshape", [a], cv.shape(a)[:1] + (1,) + cv.shape(a)[1:], final=False, tag="row")
        axes[0] = 2
    if ranks[1] == 2:       # [B, K] as [B, K, 1]
        b = cv.emit("Reshape", [b], cv.shape(b) + (1,), final=False, tag="column")
        axes[1] = 1
    ta, tb = axes[0] == 1, axes[1] == 2
    sa, sb = cv.shape(a), cv.shape(b)
    if sa[axes[0]] != sb[axes[1]]:
        raise TinycError(f"Dot '{layer.name}': contracted axes of sizes {sa[axes[0]]} and {sb[axes[1]]} differ")
    out = (sa[0], sa[2] if ta else sa[1], sb[1] if tb else sb[2])
    # Keras drops the unit axis of a 2-D operand (two 2-D operands give [B, 1])
    want = out if ranks == [3, 3] else (out[0], out[2]) if ranks == [2, 3] else out[:2]
    if want == out:
        return cv.emit("MatMul", [a, b], out, transpose_a=ta, transpose_b=tb)
    y = cv.emit("MatMul", [a, b], out, final=False, tag="product", transpose_a=ta, transpose_b=tb)
    return cv.emit("Reshape", [y], want)


def _projection(cv, dense_layer, what: str, scale: float = 1.0):
    """An EinsumDense of MultiHeadAttention as Dense weights [O, K] and bias [O] (heads x head size flattened),
    times `scale`."""
    eq = dense_layer.get_config()["equation"]
    w = cv.numpy(dense_layer.kernel)
    if eq == "abc,cde->abde":           # query / key / value: [dim, heads, size]
        w2 = w.reshape(w.shape[0], -1).T
    elif eq == "abcd,cde->abe":         # output: [heads, size, dim]
        w2 = w.reshape(-1, w.shape[-1]).T
    else:
        raise TinycError(f"MultiHeadAttention '{cv.layer.name}': projection '{dense_layer.name}' computes '{eq}'; "
                         "tinyc reads the projections of attention over one sequence axis (rank-3 inputs)")
    bias = getattr(dense_layer, "bias", None)
    ins = [cv.const(f"{what}_kernel", w2 * np.float32(scale))]
    if bias is not None:
        ins.append(cv.const(f"{what}_bias", cv.numpy(bias).reshape(-1) * np.float32(scale)))
    return ins


def multi_head_attention(cv, layer, cfg, ins):
    """Keras MultiHeadAttention over one sequence axis: Dense projections of query, key and value (the query's
    scaled by 1/sqrt(key_dim)), heads split by Reshape + Transpose, q @ k^T and p @ v as MatMuls batched over the
    heads, Softmax on the last axis, heads merged, the output Dense. Masks, causal masking, gates and sliding
    windows are refused in one line."""
    node = layer._inbound_nodes[0]
    kwargs = getattr(getattr(node, "arguments", None), "kwargs", {}) or {}
    used = [k for k in ("attention_mask", "query_mask", "value_mask", "key_mask", "use_causal_mask")
            if kwargs.get(k) is not None and kwargs.get(k) is not False]
    if used or cfg.get("use_gate") or cfg.get("sliding_window") or len(ins) not in (2, 3):
        raise TinycError(f"MultiHeadAttention '{layer.name}' uses {', '.join(used) or 'a gate, a sliding window'} "
                         "or a mask; tinyc compiles unmasked attention (query, value and optional key) only")
    q_in, v_in = ins[0], ins[1]
    k_in = ins[2] if len(ins) > 2 else v_in
    if len(cv.shape(q_in)) != 3 or len(cv.shape(v_in)) != 3 or tuple(cfg.get("attention_axes") or (1,)) != (1,):
        raise TinycError(f"MultiHeadAttention '{layer.name}' attends over axes {cfg.get('attention_axes')} of "
                         f"inputs {cv.shape(q_in)}; tinyc takes rank-3 inputs [batch, sequence, features]")
    heads, key_dim = int(cfg["num_heads"]), int(cfg["key_dim"])
    value_dim = int(cfg.get("value_dim") or key_dim)
    n, tq, tk = cv.shape(q_in)[0], cv.shape(q_in)[1], cv.shape(v_in)[1]

    def split(x, proj, what, size, steps, scale=1.0):
        flat = cv.emit("Dense", [x] + _projection(cv, proj, what, scale), (n, steps, heads * size), final=False,
                       tag=what, activation=None)
        four = cv.emit("Reshape", [flat], (n, steps, heads, size), final=False, tag=f"{what}_heads")
        return cv.emit("Transpose", [four], (n, heads, steps, size), final=False, tag=f"{what}_by_head",
                       perm=(0, 2, 1, 3))
    q = split(q_in, layer._query_dense, "query", key_dim, tq, 1.0 / float(np.sqrt(key_dim)))
    k = split(k_in, layer._key_dense, "key", key_dim, tk)
    v = split(v_in, layer._value_dense, "value", value_dim, tk)
    scores = cv.emit("MatMul", [q, k], (n, heads, tq, tk), final=False, tag="scores", transpose_a=False,
                     transpose_b=True)
    probs = cv.emit("Softmax", [scores], (n, heads, tq, tk), final=False, tag="probs", axis=3)
    ctx = cv.emit("MatMul", [probs, v], (n, heads, tq, value_dim), final=False, tag="context", transpose_a=False,
                  transpose_b=False)
    ctx = cv.emit("Transpose", [ctx], (n, tq, heads, value_dim), final=False, tag="context_by_step",
                  perm=(0, 2, 1, 3))
    ctx = cv.emit("Reshape", [ctx], (n, tq, heads * value_dim), final=False, tag="context_flat")
    out_w = _projection(cv, layer._output_dense, "output")
    return cv.emit("Dense", [ctx] + out_w, (n, tq, int(np.shape(cv.g.tensors[out_w[0]].data)[0])), activation=None)


SUPPORTED_LAYERS = {
    "InputLayer": input_layer,
    "Embedding": embedding,
    "Dense": dense,
    "Conv1D": _as_1d(conv2d, "conv2d"),
    "SeparableConv1D": _as_1d(separable_conv2d, "as_separable_2d"),
    "DepthwiseConv1D": _as_1d(depthwise_conv2d, "as_depthwise_2d"),
    "Conv2D": conv2d,
    "Conv1DTranspose": _as_1d(conv2d_transpose, "conv_transpose_2d"),
    "Conv2DTranspose": conv2d_transpose,
    "DepthwiseConv2D": depthwise_conv2d,
    "SeparableConv2D": separable_conv2d,
    "BatchNormalization": batch_norm,
    "LayerNormalization": layer_norm, "RMSNormalization": rms_norm, "GroupNormalization": group_norm,
    "UnitNormalization": unit_norm, "Normalization": normalization,
    "Activation": activation,
    "ReLU": relu,
    "LeakyReLU": leaky_relu,
    "Softmax": softmax,
    "MaxPooling2D": _pool("MaxPool2D"),
    "AveragePooling2D": _pool("AvgPool2D", count_include_pad=False),  # Keras 'same' excludes the padding
    "MaxPooling1D": _as_1d(_pool("MaxPool2D"), "maxpool"),
    "AveragePooling1D": _as_1d(_pool("AvgPool2D", count_include_pad=False), "avgpool"),
    "GlobalAveragePooling1D": global_avg_pool,
    "GlobalAveragePooling2D": global_avg_pool,
    "GlobalAveragePooling3D": global_avg_pool,
    "GlobalMaxPooling1D": global_max_pool_1d,
    "GlobalMaxPooling2D": global_max_pool_2d,
    "GlobalMaxPooling3D": global_max_pool,
    "Flatten": flatten,
    "Reshape": reshape,
    "Permute": permute,
    "Add": _chain("Add"),
    "Subtract": _chain("Sub"),
    "Multiply": _chain("Mul"),
    "Maximum": _chain("Max"),
    "Minimum": _chain("Min"),
    "Average": _chain("Add", average=True),
    "PReLU": prelu,
    "ELU": elu,
    "Concatenate": concatenate,
    "Cropping1D": cropping,
    "Cropping2D": cropping,
    "Cropping3D": cropping,
    "UpSampling1D": upsampling_1d,
    "UpSampling2D": upsampling_2d,
    "Resizing": resizing,
    "RepeatVector": repeat_vector,
    "ZeroPadding1D": zero_padding,
    "ZeroPadding2D": zero_padding,
    "Rescaling": rescaling,
    "TimeDistributed": time_distributed,
    "Dot": dot,
    "MultiHeadAttention": multi_head_attention,
    "LSTM": recurrent, "GRU": recurrent, "SimpleRNN": recurrent, "RNN": recurrent,
    "Bidirectional": bidirectional,
    **{name: identity for name in _DROPOUT_LIKE},
}
