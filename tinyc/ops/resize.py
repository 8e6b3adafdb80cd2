"""Resize: x resampled to the output shape `sizes`, each axis on its own (separable), by nearest neighbour, linear
or cubic interpolation (ONNX Resize / Upsample, TFLite RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR, Keras
UpSampling2D / Resizing). Any rank; the frontends give NHWC images.

An output index o of an axis of input length n maps to a source coordinate by `coord`:
- ONNX's coordinate_transformation_mode, with the axis' `scales` value s (sizes given: s = out / in), in double:
  half_pixel (o + 0.5) / s - 0.5, half_pixel_symmetric, pytorch_half_pixel, align_corners
  o * (n - 1) / (out - 1), asymmetric o / s, tf_half_pixel_for_nn (o + 0.5) / s (opset 11);
  nearest then picks a neighbour by `nearest_mode`, linear takes 2 taps, cubic 4 (coefficient `cubic_coeff_a`,
  `exclude_outside` drops the taps outside the input and renormalizes); taps outside clamp to the edge.
- TFLite's, in float32 as its reference kernels compute it: tflite_asymmetric, tflite_align_corners and
  tflite_half_pixel (align_corners / half_pixel_centers of resize_nearest_neighbor.h and resize_bilinear.h).

The source indices and weights of every axis are compile-time tables (`axis_taps`); the C reads
x[sum of tap offsets] weighted by the product of the axes' weights. int8: nearest is a copy; linear is TFLite's
ResizeBilinearInteger (10-bit fixed-point weights, docs/int8-numerics.md 4.36) of H and W of NHWC tensors, with
TFLite's coordinates or ONNX's that mean the same (`tflite_coord`).
"""
from __future__ import annotations

import numpy as np

from ..codegen.loops import dense_strides
from ..errors import TinycError
from .int8_common import in_quant, out_quant, same_quant
from .opdef import ALL_DTYPES, OpDef

MODES = ("nearest", "linear", "cubic")
ONNX_COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn")
TFLITE_COORDS = ("tflite_asymmetric", "tflite_align_corners", "tflite_half_pixel")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MAX_TAP_PRODUCT = 256     # loads per output value of the unrolled C expression


def _onnx_source(coord: str, n: int, out: int, scale: float, length: float | None = None) -> np.ndarray:
    """Source coordinate of every output index (onnx/reference/ops/op_resize.py's _compute_x_ori). `length`: the
    output length align_corners and pytorch_half_pixel read: the integer `out` (the spec's length_resized, and
    onnxruntime), or onnx's reference's fractional scale * n (`ambiguous_scale` finds where they differ)."""
    y = np.arange(out, dtype=np.float64)
    width = scale * n                       # output_width: fractional when it comes from a scale
    length = out if length is None else length
    if coord == "align_corners":
        return np.zeros(out) if length == 1 else y * (n - 1) / (length - 1)
    if coord == "asymmetric":
        return y / scale
    if coord == "pytorch_half_pixel":
        return np.zeros(out) if length == 1 else (y + 0.5) / scale - 0.5
    if coord == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if coord == "half_pixel_symmetric":
        offset = n / 2 * (1 - out / width)
        return offset + (y + 0.5) / scale - 0.5
    if coord == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    raise TinycError(f"internal: Resize coordinate mode '{coord}'")


def _nearest_pick(ratio: float, mode: str) -> int:
    """0 (the left tap) or 1 (the right) of a pair whose right tap is at distance 1 - ratio, ratio in (0, 1]."""
    if ratio == 1.0:
        return 1
    return {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5, "floor": False,
            "ceil": True}[mode]


def _cubic(r: float, a: float) -> list:
    s = 1 - r
    return [((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
            ((a + 2) * r - (a + 3)) * r * r + 1,
            ((a + 2) * s - (a + 3)) * s * s + 1,
            ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a]


def _onnx_taps(attrs, n: int, out: int, scale: float, length: float | None = None):
    mode = attrs["mode"]
    x = _onnx_source(attrs["coord"], n, out, scale, length)
    taps = 4 if mode == "cubic" else 2
    left = np.floor(x).astype(np.int64)
    exact = x == left
    ratio = np.where(exact, 1.0, x - left)
    # the `taps` neighbours of x, the left ones preferred: at an integer x the window ends at x
    start = np.where(exact, left - taps // 2, left - taps // 2 + 1)
    idx = start[:, None] + np.arange(taps)[None, :]
    if mode == "nearest":
        pick = np.array([_nearest_pick(float(r), attrs["nearest_mode"]) for r in ratio], np.int64)
        return np.clip(idx[np.arange(out), pick], 0, n - 1)[:, None], np.ones((out, 1))
    if mode == "linear":
        w = np.stack([1 - ratio, ratio], axis=1)
    else:
        w = np.array([_cubic(float(r), float(attrs["cubic_coeff_a"])) for r in ratio])
    if attrs.get("exclude_outside"):
        w = np.where((idx < 0) | (idx >= n), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, n - 1), w


def ambiguous_scale(attrs, n: int, out: int, scale: float) -> bool:
    """Whether the taps differ between the integer output length (the spec, onnxruntime) and the fractional
    scale * n (onnx's reference, whose data the backend tests hold): align_corners or pytorch_half_pixel with a
    scale that does not give a whole output length. The frontend refuses those."""
    if attrs["coord"] not in ("align_corners", "pytorch_half_pixel") or scale * n == out:
        return False
    a, b = _onnx_taps(attrs, n, out, scale), _onnx_taps(attrs, n, out, scale, scale * n)
    return not (np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], rtol=0, atol=1e-12))


def _tflite_scale(n: int, out: int, align: bool) -> np.float32:
    if align and out > 1:
        return np.float32(n - 1) / np.float32(out - 1)
    return np.float32(n) / np.float32(out)


def _tflite_taps(attrs, n: int, out: int):
    """resize_nearest_neighbor.h GetNearestNeighbor / resize_bilinear.h ComputeInterpolationValues, in float32."""
    align, half = attrs["coord"] == "tflite_align_corners", attrs["coord"] == "tflite_half_pixel"
    scale = _tflite_scale(n, out, align)
    y = np.arange(out, dtype=np.float32)
    if attrs["mode"] == "nearest":
        v = (y + np.float32(0.5 if half else 0.0)) * scale
        if align:      # TfLiteRound (std::round): half away from zero; v - trunc(v) is exact in float32
            whole = np.trunc(v)
            i = whole + np.where(np.abs(v - whole) >= np.float32(0.5), np.sign(v), np.float32(0))
        else:
            i = np.floor(v)
        i = np.minimum(i.astype(np.int64), n - 1)
        return (np.maximum(i, 0) if half else i)[:, None], np.ones((out, 1))
    v = (y + np.float32(0.5)) * scale - np.float32(0.5) if half else y * scale
    lo = np.maximum(np.floor(v).astype(np.int64), 0)
    hi = np.minimum(np.ceil(v).astype(np.int64), n - 1)
    frac = (v - lo.astype(np.float32)).astype(np.float32)
    return np.stack([lo, hi], axis=1), np.stack([np.float32(1) - frac, frac], axis=1).astype(np.float64)


def axis_taps(attrs, axis: int, n: int, out: int):
    """(source indices [out, T], weights [out, T]) of one axis, or None when the axis is copied unchanged."""
    scale = float(attrs["scales"][axis])
    if n == out and scale == 1.0:
        return None
    if attrs["coord"] in TFLITE_COORDS:
        idx, w = _tflite_taps(attrs, n, out)
    else:
        idx, w = _onnx_taps(attrs, n, out, scale)
    if n == out and np.array_equal(idx[:, :1], np.arange(n)[:, None]) and np.all(w[:, 0] == 1) and np.all(
            w[:, 1:] == 0):
        return None
    return idx, w


def tflite_coord(a, x, y) -> str | None:
    """The TFLite coordinates of a Resize of H and W of an NHWC tensor: its own; for linear, those ONNX's mean
    for this layer (align_corners; half_pixel, half_pixel_symmetric, pytorch_half_pixel and asymmetric with scale
    = out / in); for nearest, the first whose source indices are the same. None otherwise: no TFLite kernel
    computes it."""
    if a["mode"] not in ("nearest", "linear") or len(x) != 4 or x[0] != y[0] or x[3] != y[3] or \
            a["scales"][0] != 1 or a["scales"][3] != 1:
        return None
    if a["mode"] == "nearest":
        def same(coord):
            b = dict(a, coord=coord)
            return all(np.array_equal(_taps_or_identity(a, ax, x[ax], y[ax]),
                                      _taps_or_identity(b, ax, x[ax], y[ax])) for ax in (1, 2))
        return next((c for c in ((a["coord"],) if a["coord"] in TFLITE_COORDS else TFLITE_COORDS) if same(c)), None)
    if a["coord"] in TFLITE_COORDS or a["coord"] == "align_corners":
        return {"align_corners": "tflite_align_corners"}.get(a["coord"], a["coord"])
    if any(abs(a["scales"][ax] - y[ax] / x[ax]) > 1e-6 * y[ax] / x[ax] for ax in (1, 2)):
        return None
    if a["coord"] in ("half_pixel", "half_pixel_symmetric") or (a["coord"] == "pytorch_half_pixel" and min(y[1:3]) > 1):
        return "tflite_half_pixel"
    return "tflite_asymmetric" if a["coord"] == "asymmetric" else None


def _taps_or_identity(a, axis: int, n: int, out: int) -> np.ndarray:
    taps = axis_taps(a, axis, n, out)
    return np.arange(n)[:, None] if taps is None else taps[0]


def tflite_integer_taps(n: int, out: int, coord: str):
    """ResizeBilinearInteger's (y0, y1, weight of y0, weight of y1) per output index: 10-bit fixed point."""
    align, half = coord == "tflite_align_corners", coord == "tflite_half_pixel"
    scale = ((1 << 10) * n + out // 2) // out
    if align and out > 1:
        scale = ((1 << 10) * (n - 1) + (out - 1) // 2) // (out - 1)
    idx, w = [], []
    for o in range(out):
        v = o * scale + scale // 2 - (1 << 9) if half else o * scale
        lo = max(int(v / (1 << 10)), 0)                        # C division: toward zero
        hi = min(int((v + (1 << 10) - 1) / (1 << 10)), n - 1)
        idx.append((lo, hi))
        w.append(((1 << 10) - (v - (1 << 10) * lo), v - (1 << 10) * lo))
    return np.array(idx, np.int64), np.array(w, np.int64)


def evaluate(a, ins):
    x = np.asarray(ins[0])
    y = x if a["mode"] == "nearest" else x.astype(np.float64)      # nearest: values move unchanged
    for axis, out in enumerate(a["sizes"]):
        taps = axis_taps(a, axis, y.shape[axis], out)
        if taps is None:
            continue
        idx, w = taps
        if a["mode"] == "nearest":
            y = np.take(y, idx[:, 0], axis=axis)
            continue
        picked = np.take(y, idx, axis=axis)                            # [..., out, T, ...]
        shape = [1] * y.ndim
        shape[axis:axis + 1] = list(w.shape)
        y = (picked * w.reshape(shape)).sum(axis=axis + 1)
    return y.astype(x.dtype)


def check(g, n) -> None:
    a = n.attrs
    x, y = g.tensors[n.inputs[0]], g.tensors[n.outputs[0]]
    if (a["mode"] not in MODES or a["coord"] not in ONNX_COORDS + TFLITE_COORDS
            or a.get("nearest_mode", "round_prefer_floor") not in NEAREST_MODES
            or tuple(a["sizes"]) != tuple(y.shape) or len(a["scales"]) != len(x.shape)):
        raise TinycError(f"internal: Resize '{n.name}' has attributes {a} for {x.shape} -> {y.shape}; report this")
    if min(x.shape, default=1) < 1 or min(y.shape, default=1) < 1:
        raise TinycError(f"Resize '{n.name}': zero-size input or output {x.shape} -> {y.shape}; not supported")
    if a["mode"] != "nearest" and x.dtype != "float32" and x.quant is None:
        raise TinycError(f"Resize '{n.name}': {a['mode']} interpolation of {x.dtype} values; tinyc interpolates "
                         "float32 (and int8 quantized) tensors, and resizes other types with mode 'nearest'")
    product = 1
    for axis, (i, o) in enumerate(zip(x.shape, y.shape)):
        taps = axis_taps(a, axis, i, o)
        product *= 1 if taps is None else taps[0].shape[1]
    if product > MAX_TAP_PRODUCT:
        raise TinycError(f"Resize '{n.name}' reads {product} input values per output value ({a['mode']} on every "
                         f"axis of {x.shape}); tinyc supports at most {MAX_TAP_PRODUCT}: resize fewer axes")


def _axis_groups(x, y, taps):
    """[(output length, input stride, taps or None)], adjacent unchanged axes merged into one."""
    strides = dense_strides(x)
    groups = []
    for axis, t in enumerate(taps):
        if t is None and groups and groups[-1][2] is None:
            n, _, _ = groups[-1]
            groups[-1] = (n * y[axis], strides[axis], None)
        else:
            groups.append((y[axis], strides[axis], t))
    return groups


def _loops(k, taps, weights_dtype: str, value):
    """The loop nest over the output in row-major order; `value(loads)` makes the C of one output value from
    the nested tap structure `loads`: [(level, T)] of the resized axes, outermost first. Per resized axis, a
    table of input offsets d<level> and of weights w<level> (weights_dtype, None for nearest)."""
    x, y = k.in_shape(0), k.out_shape
    groups = _axis_groups(x, y, taps)
    lines, pad, base, resized = ["  int o = 0;"], "  ", None, []
    for level, (n, stride, t) in enumerate(groups):
        lines.append(f"{pad}for (int i{level} = 0; i{level} < {n}; ++i{level}) {{")
        pad += "  "
        if t is None:
            term = f"i{level}" if stride == 1 else f"i{level} * {stride}"
            lines.append(f"{pad}const int b{level} = {base + ' + ' if base else ''}{term};")
            base = f"b{level}"
            continue
        idx, w = t
        width = idx.shape[1]
        offsets = k.table((idx * stride).astype(np.int32), "int32", f"{k.node.name}: input offsets, axis {level}")
        lines.append(f"{pad}const int32_t *d{level} = {offsets} + i{level} * {width};")
        if weights_dtype is not None:
            table = k.table(w.astype(weights_dtype), weights_dtype, f"{k.node.name}: weights, axis {level}")
            ctype = "float" if weights_dtype == "float32" else "int32_t"
            lines.append(f"{pad}const {ctype} *w{level} = {table} + i{level} * {width};")
        resized.append((level, width))
    lines.append(pad + value(resized, base))
    for _ in groups:
        pad = pad[:-2]
        lines.append(f"{pad}}}")
    return "\n".join(lines)


def _load(base, parts) -> str:
    return "x0[" + " + ".join(([base] if base else []) + parts) + "]"


def _weighted(resized, base, parts=()) -> str:
    """sum over the taps of the first resized axis of its weight times the same sum over the others."""
    if not resized:
        return _load(base, list(parts))
    (level, width), rest = resized[0], resized[1:]
    if width == 1:
        return _weighted(rest, base, parts + (f"d{level}[0]",))
    return "(" + " + ".join(f"w{level}[{t}] * {_weighted(rest, base, parts + (f'd{level}[{t}]',))}"
                            for t in range(width)) + ")"


def _all_taps(k):
    return [axis_taps(k.node.attrs, axis, i, o) for axis, (i, o) in enumerate(zip(k.in_shape(0), k.out_shape))]


def _comment(k) -> str:
    a = k.node.attrs
    return f"resize {k.in_shape(0)} -> {k.out_shape}, {a['mode']}, {a['coord']}"


def float_kernel(k):
    taps = _all_taps(k)
    nearest = k.node.attrs["mode"] == "nearest"
    loops = _loops(k, taps, None if nearest else "float32",
                   lambda resized, base: f"y[o++] = {_weighted(resized, base)};")
    macs = 0 if nearest else k.out_size * int(np.prod([t[0].shape[1] for t in taps if t is not None]))
    return "elementwise.c.j2", dict(comment=_comment(k), loops=loops), macs


def int8_kernel(k):
    a = k.node.attrs
    if not same_quant(in_quant(k), out_quant(k)):
        # TFLite interpolates the stored values: the converter gives input and output one scale and zero point
        raise TinycError(f"node '{k.node.name}' (Resize): input and output have different quantization "
                         "parameters; TFLite's int8 resize needs them equal")
    if a["mode"] == "nearest":
        return float_kernel(k)
    if k.out.dtype == "int16":
        raise TinycError(f"node '{k.node.name}' (Resize): 16x8 {a['mode']} interpolation; tinyc's int16 Resize is "
                         "nearest (TFLite's int16 bilinear sums in int64, which tinyc does not compute): keep this "
                         "layer float")
    x, y = k.in_shape(0), k.out_shape
    coord = tflite_coord(a, x, y)
    if coord is None:
        raise TinycError(f"node '{k.node.name}' (Resize): int8 {a['mode']} interpolation with {a['coord']} "
                         f"coordinates (scales {a['scales']}, {x} -> {y}); tinyc's int8 Resize is nearest, or "
                         "TFLite's bilinear of H and W of an NHWC tensor (keep this layer float)")
    taps = [None, tflite_integer_taps(x[1], y[1], coord), tflite_integer_taps(x[2], y[2], coord), None]
    for t, n in zip(taps[1:3], x[1:3]):
        if t[0].max() >= n:
            raise TinycError(f"node '{k.node.name}' (Resize): TFLite's 10-bit scale reads past the input "
                             f"({x} -> {y}); the model is outside what its int8 kernel computes correctly")

    def value(resized, base):
        acc = _weighted(resized, base)
        return ("{ const int32_t acc = %s; y[o++] = (int8_t)((acc + (acc > 0 ? (1 << 19) : -(1 << 19))) / "
                "(1 << 20)); }" % acc)
    # |acc| <= 128 * 2048 * 2048 < 2^31: int32 holds TFLite's int64 sum exactly
    return "elementwise.c.j2", dict(comment=_comment(k) + " (TFLite ResizeBilinearInteger)",
                                    loops=_loops(k, taps, "int32", value)), 0


SIGNATURE = ("x  [sizes (output shape), mode=nearest|linear|cubic, coord (ONNX coordinate_transformation_mode or "
             "tflite_asymmetric|tflite_align_corners|tflite_half_pixel), scales (per axis), nearest_mode, "
             "cubic_coeff_a, exclude_outside]")

DEFINITIONS = (OpDef("Resize", SIGNATURE, evaluate, check, float_kernel, None, int8_kernel, None, memory=None,
                     quantize="shared", qdq_rule="resize", plain_dtypes=ALL_DTYPES, int16_activations=True),)
