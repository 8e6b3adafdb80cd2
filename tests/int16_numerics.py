"""docs/int16-numerics.md §3-4 as numpy (no tests here): what TFLite's 16x8 reference kernels compute for ADD, SUB,
MUL, LEAKY_RELU, RELU*, QUANTIZE, MAXIMUM, MINIMUM, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, REDUCE_MAX/MIN, written
from the document and not from tinyc's kernels, so that tests can hold the document to TF 2.21's BUILTIN_REF
interpreter (`layer_mismatches`), and single-op 16x8 models made by TF's converter (`OP_MODELS`, `convert`).

Integers are int64 numpy arrays throughout; values stay in the int32 range where TFLite computes in int32.
"""
from __future__ import annotations

import math

import numpy as np

from tinyc.quant.fixed_point import quantize_multiplier

f32 = np.float32
INT16 = (-32768, 32767)
INT8 = (-128, 127)


# -- fixed-point primitives (docs/int8-numerics.md 2.3), vectorised -----------------------------------------------
def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul on int32 values."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    s = a * b + np.where(a * b >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(s >= 0, s >> 31, -((-s) >> 31))         # C division: toward zero
    return np.where((a == -2 ** 31) & (b == -2 ** 31), 2 ** 31 - 1, q)


def rdbpot(x, e: int):
    """RoundingDivideByPOT on int32 values, 0 <= e <= 31."""
    x = np.asarray(x, np.int64)
    mask = (1 << e) - 1
    return (x >> e) + ((x & mask) > (mask >> 1) + (x < 0))


def wrap(v, bits: int):
    """Two's complement wrap-around to `bits` bits."""
    half = 1 << (bits - 1)
    return ((np.asarray(v, np.int64) + half) % (2 * half)) - half


def rdbpot16(x, e: int):
    """gemmlowp's RoundingDivideByPOT instantiated on int16: the mask (1 << e) - 1 is cut to 16 bits (-1 for
    e >= 16: every x >= 0 gives 1, every x < 0 gives -1)."""
    x = np.asarray(x, np.int64)
    mask = int(wrap((1 << e) - 1, 16))
    return wrap((x >> e) + ((x & mask) > wrap((mask >> 1) + (x < 0), 16)), 16)


def mbqm(x, m: int, shift: int):
    """MultiplyByQuantizedMultiplier(int32): a positive shift moves x left in 32 bits, wrapping."""
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot(srdhm(wrap(np.asarray(x, np.int64) << left, 32), m), right)


def round_away(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def checked_log2(x: float) -> tuple[int, bool]:
    """TFLite's CheckedLog2 in float32 (docs/int16-numerics.md 5.1)."""
    l2 = f32(f32(math.log(f32(x))) * f32(f32(1.0) / f32(math.log(f32(2.0)))))
    r = f32(round_away(float(l2)))
    return int(r), abs(float(f32(l2 - r))) < 1e-3


def activation_range(act: str | None, s_out: float, lo: int = INT16[0], hi: int = INT16[1]) -> tuple[int, int]:
    """CalculateActivationRangeQuantized on an int16 output (zero point 0)."""
    q = lambda v: round_away(float(f32(f32(v) / f32(s_out))))     # noqa: E731
    bounds = {None: (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0)}[act]
    return (lo if bounds[0] is None else max(lo, q(bounds[0])), hi if bounds[1] is None else min(hi, q(bounds[1])))


# -- the ops (docs/int16-numerics.md 3, 4) ------------------------------------------------------------------------
def add_sub(op: str, a, b, s1: float, s2: float, s_out: float, act=None, pot_option: bool = False):
    """ADD / SUB of int16 a, b (broadcast already): the power-of-two path when the option asks for it and all three
    scales are powers of two (3.2), else the general one (3.1)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    lo, hi = activation_range(act, s_out)
    logs = [checked_log2(s) for s in (s1, s2, s_out)]
    if pot_option and all(pot for _, pot in logs):
        sh1, sh2 = logs[0][0] - logs[2][0], logs[1][0] - logs[2][0]
        assert (sh1 == 0 or sh2 == 0) and sh1 <= 0 and sh2 <= 0, "TFLite refuses these scales"
        x1, x2 = rdbpot16(a, -sh1), rdbpot16(b, -sh2)
        return np.clip(np.clip(x1 + x2 if op == "add" else x1 - x2, *INT16), lo, hi)
    twice_max = 2.0 * float(max(f32(s1), f32(s2)))
    (m1, e1), (m2, e2) = (quantize_multiplier(float(f32(s)) / twice_max) for s in (s1, s2))
    mo, eo = quantize_multiplier(twice_max / (float(1 << 15) * float(f32(s_out))))
    x1, x2 = rdbpot(srdhm(a << 15, m1), -e1), rdbpot(srdhm(b << 15, m2), -e2)
    return np.clip(rdbpot(srdhm(x1 + x2 if op == "add" else x1 - x2, mo), -eo), lo, hi)


def mul(a, b, s1: float, s2: float, s_out: float, act=None):
    m, e = quantize_multiplier(float(f32(f32(f32(s1) * f32(s2)) / f32(s_out))))
    return np.clip(mbqm(np.asarray(a, np.int64) * np.asarray(b, np.int64), m, e), *activation_range(act, s_out))


def leaky_relu(x, s_in: float, s_out: float, alpha: float):
    m_a, e_a = quantize_multiplier(float(f32(f32(f32(s_in) * f32(alpha)) / f32(s_out))))
    m_i, e_i = quantize_multiplier(float(f32(f32(s_in) / f32(s_out))))
    x = np.asarray(x, np.int64)
    return np.clip(np.where(x >= 0, mbqm(x, m_i, e_i), mbqm(x, m_a, e_a)), *INT16)


def relu(x, s_in: float, s_out: float, act: str):
    m, e = quantize_multiplier(float(f32(f32(s_in) / f32(s_out))))
    return np.clip(mbqm(np.asarray(x, np.int64), m, e), *activation_range(act, s_out))


def requantize(x, s_in: float, s_out: float, z_out: int, out_dtype: str):
    m, e = quantize_multiplier(float(f32(s_in)) / float(f32(s_out)))
    return np.clip(mbqm(np.asarray(x, np.int64), m, e) + z_out, *(INT8 if out_dtype == "int8" else INT16))


def pool(x, kind: str, kernel, strides, pads_before, out_hw, lo: int = INT16[0], hi: int = INT16[1]):
    """AVERAGE_POOL_2D / MAX_POOL_2D of NHWC int16 `x`: windows clipped to the input (4.3)."""
    x = np.asarray(x, np.int64)
    _, h, w, _ = x.shape
    y = np.zeros((x.shape[0], *out_hw, x.shape[3]), np.int64)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            y0, x0 = i * strides[0] - pads_before[0], j * strides[1] - pads_before[1]
            win = x[:, max(0, y0):min(h, y0 + kernel[0]), max(0, x0):min(w, x0 + kernel[1]), :]
            if kind == "max":
                v = win.max(axis=(1, 2))
            else:
                n, s = win.shape[1] * win.shape[2], win.sum(axis=(1, 2))
                v = np.where(s > 0, (s + n // 2) // n, -((n // 2 - s) // n))      # C division toward zero
            y[:, i, j, :] = np.clip(v, lo, hi)
    return y


def mean(x, axes, s_in: float, s_out: float):
    x = np.asarray(x, np.int64)
    n = int(np.prod([x.shape[a] for a in axes]))
    m, e = quantize_multiplier(float(f32(s_in)) / float(f32(s_out)))
    k = min(n.bit_length() - 1, 32, 31 + e)
    return np.clip(mbqm(x.sum(axis=tuple(axes)), (m << k) // n, e - k), *INT16)


# -- holding the document to the interpreter ----------------------------------------------------------------------
FUSED = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
RELUS = {"RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu_n1_to_1"}


def expected(name: str, opts, ins: list, in_q: list, out: np.ndarray, out_q) -> np.ndarray | None:
    """What the document says TFLite op `name` (builtin options `opts`) outputs for inputs `ins` of quantization
    `in_q` ((scale, zero point) each) into `out` (shape and type) of `out_q`; None for ops it does not model
    (copies, float ones)."""
    act = FUSED.get(getattr(opts, "fusedActivationFunction", 0))
    s = [q[0] for q in in_q]
    if name in ("ADD", "SUB"):
        a, b = np.broadcast_arrays(ins[0], ins[1])
        return add_sub(name.lower(), a, b, s[0], s[1], out_q[0], act, bool(opts.potScaleInt16))
    if name == "MUL":
        return mul(*np.broadcast_arrays(ins[0], ins[1]), s[0], s[1], out_q[0], act)
    if name == "LEAKY_RELU":
        return leaky_relu(ins[0], s[0], out_q[0], opts.alpha)
    if name in RELUS:
        return relu(ins[0], s[0], out_q[0], RELUS[name])
    if name == "QUANTIZE" and ins[0].dtype == np.int16:
        return requantize(ins[0], s[0], out_q[0], out_q[1], out.dtype.name)
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        k, st = (opts.filterHeight, opts.filterWidth), (opts.strideH, opts.strideW)
        same = opts.padding == 0
        pads = [max((o - 1) * st_ + k_ - i, 0) // 2 if same else 0
                for o, st_, k_, i in zip(out.shape[1:3], st, k, ins[0].shape[1:3])]
        return pool(ins[0], "avg" if name.startswith("AVERAGE") else "max", k, st, pads, out.shape[1:3],
                    *activation_range(act, out_q[0]))
    if name in ("MAXIMUM", "MINIMUM"):     # the stored values compared (inputs and output share their scale)
        return (np.maximum if name == "MAXIMUM" else np.minimum)(*np.broadcast_arrays(ins[0], ins[1]))
    if name in ("REDUCE_MAX", "REDUCE_MIN"):
        axes = tuple(int(a) % ins[0].ndim for a in ins[1].reshape(-1))
        return (np.max if name == "REDUCE_MAX" else np.min)(ins[0], axis=axes)
    if name == "MEAN":
        return mean(ins[0], [int(a) % ins[0].ndim for a in ins[1].reshape(-1)], s[0], out_q[0])
    return None


def layer_mismatches(path: str, seeds: int = 3) -> tuple[dict, int]:
    """Run the .tflite under BUILTIN_REF on uniformly random int16 inputs, every tensor kept; for each op the
    document models, count the outputs that differ from `expected` on the op's own inputs. Returns ({op name:
    differing values}, values compared)."""
    import tensorflow as tf

    from tinyc.frontends.tflite_import import _op_name, _read, _schema
    S = _schema()
    _, model = _read(S, path)
    ops = model.subgraphs[0].operators
    differing, compared = {}, 0
    for seed in range(seeds):
        it = tf.lite.Interpreter(model_path=path, experimental_preserve_all_tensors=True,
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
        rng = np.random.default_rng(seed)
        for d in it.get_input_details():
            info = np.iinfo(d["dtype"])
            it.set_tensor(d["index"], rng.integers(info.min, info.max + 1, d["shape"]).astype(d["dtype"]))
        it.invoke()
        quant = {d["index"]: d["quantization"] for d in it.get_tensor_details()}
        for op in ops:
            name = _op_name(S, model, op)
            out = it.get_tensor(op.outputs[0])
            want = expected(name, op.builtinOptions, [it.get_tensor(i) for i in op.inputs],
                            [quant[i] for i in op.inputs], out, quant[op.outputs[0]])
            if want is None:
                continue
            differing[name] = differing.get(name, 0) + int(np.sum(np.asarray(want).reshape(out.shape) != out))
            compared += out.size
    return differing, compared


# -- single-op 16x8 models made by TF's converter -----------------------------------------------------------------
def _ops():
    import tensorflow as tf
    return {   # name: (function of the inputs, input shapes, each input's spread in the representative data)
        "add": (lambda a, b: a + b, [(4, 4, 3), (4, 4, 3)], [1.0, 3.0]),
        "add_broadcast": (lambda a, b: tf.nn.relu(a + b), [(4, 4, 3), (1, 1, 3)], [1.0, 0.3]),
        "sub": (lambda a, b: a - b, [(4, 4, 3), (4, 4, 3)], [1.0, 3.0]),
        "sub_broadcast": (lambda a, b: b - a, [(4, 4, 3), (4, 1, 3)], [1.0, 0.3]),
        "mul": (lambda a, b: a * b, [(4, 4, 3), (4, 4, 3)], [1.0, 3.0]),
        "mul_broadcast": (lambda a, b: a * b, [(4, 4, 3), (1, 4, 1)], [1.0, 0.3]),
        "leaky_relu": (lambda a: tf.nn.leaky_relu(a, 0.2), [(4, 4, 3)], [1.0]),
        "relu": (lambda a: tf.nn.relu(a), [(4, 4, 3)], [1.0]),
        "mul_relu6": (lambda a: tf.nn.relu6(a * 4.0), [(4, 4, 3)], [1.0]),
        "avg_pool": (lambda a: tf.nn.avg_pool2d(a, 3, 2, "SAME"), [(7, 7, 3)], [1.0]),
        "max_pool": (lambda a: tf.nn.max_pool2d(a, 3, 2, "SAME"), [(7, 7, 3)], [1.0]),
        "mean": (lambda a: tf.reduce_mean(a, axis=[1, 2]), [(5, 5, 3)], [1.0]),
        "concat": (lambda a, b: tf.concat([a, b], axis=-1), [(4, 4, 3), (4, 4, 2)], [1.0, 3.0]),
        "pad": (lambda a: tf.pad(a, [[0, 0], [1, 2], [0, 1], [0, 0]]), [(4, 4, 3)], [1.0]),
        "transpose": (lambda a: tf.transpose(a, [0, 2, 1, 3]), [(4, 5, 3)], [1.0]),
        "strided_slice": (lambda a: a[:, 1:4:2, ::-1, :2], [(5, 5, 3)], [1.0]),
        "reshape": (lambda a: tf.reshape(a, (1, 12, 4)), [(4, 4, 3)], [1.0]),
        "mirror_pad": (lambda a: tf.pad(a, [[0, 0], [1, 2], [2, 1], [0, 0]], mode="REFLECT"), [(4, 4, 3)], [1.0]),
        "broadcast_to": (lambda a: tf.broadcast_to(a, (1, 4, 4, 3)), [(1, 4, 3)], [1.0]),
        "tile": (lambda a: tf.tile(a, [1, 2, 1, 1]), [(4, 4, 3)], [1.0]),     # TF 2.21's TILE refuses int16
        "reduce_max_min": (lambda a: (tf.reduce_max(a, axis=[1, 2]), tf.reduce_min(a, axis=2, keepdims=True)),
                           [(4, 5, 3)], [1.0]),
        "sum": (lambda a: tf.reduce_sum(a, axis=[1]), [(4, 4, 3)], [1.0]),
        "resize_nearest": (lambda a: tf.image.resize(a, (7, 9), method="nearest"), [(4, 4, 3)], [1.0]),
        "resize_bilinear": (lambda a: tf.image.resize(a, (8, 8)), [(4, 4, 3)], [1.0]),
        # TF 2.21's converter leaves PADV2's constant float32 beside int16 data, which TFLite then refuses
        "padv2_float_constant": (lambda a: tf.pad(a, [[0, 0], [1, 1], [2, 0], [0, 0]], constant_values=0.5),
                                 [(4, 4, 3)], [1.0]),
        "elementwise_mix": (_elementwise_mix, [(4, 4, 3), (4, 4, 3), (1, 1, 3)], [1.0, 3.0, 0.3]),
        "movement_mix": (_movement_mix, [(7, 7, 3)], [1.0]),
    }


def _elementwise_mix(a, b, c):
    """ADD, SUB (a broadcast operand), MUL, LEAKY_RELU, RELU, MUL with fused RELU6, a CONCATENATION of inputs of
    other ranges (int16 -> int16 QUANTIZE before it), MAXIMUM and MINIMUM (requantized operands, a constant)."""
    import tensorflow as tf
    m = (a + b) * (a - c)
    leaky = tf.nn.leaky_relu(m, 0.1)
    return (tf.concat([leaky, b], axis=-1), tf.nn.relu(leaky - b), tf.nn.relu6(m * 2.0),
            tf.minimum(tf.maximum(a, b), 0.5))


def _movement_mix(a):
    """PAD, AVERAGE_POOL_2D (SAME, stride 2), MAX_POOL_2D (VALID), MEAN keeping dims plus a broadcast ADD,
    TRANSPOSE, a STRIDED_SLICE walking backwards, RESHAPE."""
    import tensorflow as tf
    p = tf.nn.avg_pool2d(tf.pad(a, [[0, 0], [1, 0], [0, 2], [0, 0]]), 3, 2, "SAME")
    s = tf.transpose(p, [0, 2, 1, 3])[:, ::-1, 1:, :2]
    pooled = tf.nn.max_pool2d(a, 2, 2, "VALID") + tf.reduce_mean(a, axis=[1, 2], keepdims=True)
    return tf.reshape(s, (1, -1)), pooled


OP_MODELS = ("add", "add_broadcast", "sub", "sub_broadcast", "mul", "mul_broadcast", "leaky_relu", "relu",
             "mul_relu6", "avg_pool", "max_pool", "mean", "concat", "pad", "transpose", "strided_slice", "reshape",
             "mirror_pad", "broadcast_to", "reduce_max_min", "resize_nearest", "elementwise_mix", "movement_mix")


def convert(name: str, path, samples: int = 32) -> str:
    """The single-op model `name` as a 16x8 .tflite (int16 inputs and outputs) by TF's converter."""
    from tinyc.keras_runtime import import_keras
    import_keras()
    import tensorflow as tf
    fn, shapes, spreads = _ops()[name]
    cf = tf.function(fn, autograph=False).get_concrete_function(*[tf.TensorSpec((1, *s), tf.float32)
                                                                    for s in shapes])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], tf.Module())
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        rng = np.random.default_rng(1)
        for _ in range(samples):
            yield [(rng.standard_normal((1, *s)) * k).astype(np.float32) for s, k in zip(shapes, spreads)]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int16
    with open(path, "wb") as f:
        f.write(conv.convert())
    return str(path)
