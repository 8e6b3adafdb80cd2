"""Resize (tinyc/ops/resize.py): ONNX Resize / Upsample, TFLite RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR, Keras
UpSampling2D / Resizing.

The C of every mode against the interpreter (ASan + UBSan); the int8 bilinear kernel against an emulation of
TFLite's ResizeBilinearInteger; ONNX models against onnxruntime, Keras layers against Keras, and converter-made
TFLite models (float32, and int8 byte for byte) against TFLite's reference kernels. The ONNX backend suite's
Resize / Upsample cases run in tests/onnx_backend/."""
import importlib.util
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from c_runner import run_c  # noqa: E402
from onnx_check import onnx_tools as _onnx, verify_onnx as _verify_onnx  # noqa: E402

from tinyc import interp  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402
from tinyc.ops.resize import tflite_integer_taps  # noqa: E402

RNG = np.random.default_rng(11)
DEFAULTS = dict(nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0)


def _resize(g, x, out, mode, coord, scales=None, dtype="float32", quant=None, **attrs):
    name = f"r{len(g.nodes)}_{mode}_{coord}"
    g.add_tensor(name, out, dtype, quant=quant)
    shape = g.tensors[x].shape
    scales = scales or tuple(o / i for o, i in zip(out, shape))
    g.add_node("Resize", [x], [name], sizes=tuple(out), mode=mode, coord=coord, scales=tuple(scales),
               **{**DEFAULTS, **attrs})
    g.outputs.append(name)


def _float_graph():
    g = Graph("resize_float")
    g.add_tensor("x", (2, 5, 7, 3))
    g.add_tensor("v", (2, 6, 3))
    g.add_tensor("z", (1, 3, 4, 2, 2))
    g.add_tensor("i", (1, 4, 3, 2), "int32")
    g.inputs = ["x", "v", "z", "i"]
    for nearest in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        _resize(g, "x", (2, 9, 4, 3), "nearest", "half_pixel", nearest_mode=nearest)
    for k, coord in enumerate(("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                               "asymmetric")):
        if k % 2:
            _resize(g, "x", (2, 8, 11, 3), "linear", coord, scales=(1.0, 1.6, 1.6, 1.0))
        else:
            _resize(g, "x", (2, 3, 4, 3), "cubic", coord, scales=(1.0, 0.6, 0.6, 1.0))
    _resize(g, "x", (2, 10, 5, 3), "cubic", "half_pixel", cubic_coeff_a=-0.5, exclude_outside=1)
    _resize(g, "x", (2, 1, 1, 3), "linear", "pytorch_half_pixel")
    _resize(g, "x", (2, 5, 7, 3), "linear", "half_pixel", scales=(1.0, 1.2, 1.1, 1.0))   # same size, resampled
    _resize(g, "x", (2, 11, 13, 3), "nearest", "tf_half_pixel_for_nn")
    for coord in ("tflite_asymmetric", "tflite_align_corners", "tflite_half_pixel"):
        _resize(g, "x", (2, 11, 4, 3), "nearest", coord)
        _resize(g, "x", (2, 11, 4, 3), "linear", coord)
    _resize(g, "v", (2, 13, 3), "linear", "asymmetric", scales=(1.0, 2.2, 1.0))            # rank 3
    _resize(g, "v", (3, 4, 3), "nearest", "asymmetric")                                  # the batch axis too
    _resize(g, "z", (1, 5, 7, 3, 2), "linear", "half_pixel")                             # rank 5, 3 axes
    _resize(g, "i", (1, 8, 5, 2), "nearest", "asymmetric", dtype="int32")
    g.validate()
    return g


def test_float_kernels_match_the_interpreter(tmp_path):
    g = _float_graph()
    xs = [RNG.standard_normal(g.tensors[n].shape).astype(np.float32) for n in g.inputs[:3]]
    xs.append(RNG.integers(-1000, 1000, g.tensors["i"].shape).astype(np.int32))
    ref = interp.run(g, xs)
    for name, ours in zip(g.outputs, run_c(g, xs, tmp_path)):
        if ours.dtype == np.int32:
            np.testing.assert_array_equal(ours, ref[name], err_msg=name)
        else:
            np.testing.assert_allclose(ours, ref[name], rtol=1e-5, atol=1e-5, err_msg=name)


def _tflite_bilinear_int8(x, out_hw, coord):
    """reference_ops::ResizeBilinearInteger on int8 NHWC values."""
    (iy, wy), (ix, wx) = (tflite_integer_taps(n, o, coord) for n, o in zip(x.shape[1:3], out_hw))
    x = x.astype(np.int64)
    acc = sum(x[:, iy[:, a]][:, :, ix[:, b]] * (wy[:, a][:, None] * wx[:, b][None, :])[None, :, :, None]
              for a in range(2) for b in range(2))
    return np.trunc((acc + np.where(acc > 0, 1 << 19, -(1 << 19))) / (1 << 20)).astype(np.int8)


def test_int8_kernels(tmp_path):
    q = Quant(np.float32(0.05), np.int64(-3))
    g = Graph("resize_int8")
    g.add_tensor("x", (2, 5, 7, 3), "int8", quant=q)
    g.inputs = ["x"]
    cases = [((2, 11, 13, 3), c) for c in ("tflite_asymmetric", "tflite_align_corners", "tflite_half_pixel")]
    cases += [((2, 3, 4, 3), "tflite_half_pixel"), ((2, 5, 16, 3), "tflite_align_corners")]
    for out, coord in cases:
        _resize(g, "x", out, "linear", coord, dtype="int8", quant=q)
    # ONNX's coordinates that mean TFLite's (scale = out / in) run TFLite's integer arithmetic too
    onnx_cases = [((2, 11, 13, 3), "half_pixel", "tflite_half_pixel"), ((2, 3, 4, 3), "asymmetric",
                  "tflite_asymmetric"), ((2, 8, 9, 3), "align_corners", "tflite_align_corners"),
                  ((2, 10, 14, 3), "pytorch_half_pixel", "tflite_half_pixel")]
    for out, coord, _ in onnx_cases:
        _resize(g, "x", out, "linear", coord, dtype="int8", quant=q)
    cases += [(out, same) for out, _, same in onnx_cases]
    _resize(g, "x", (2, 9, 4, 3), "nearest", "half_pixel", dtype="int8", quant=q)
    g.validate()
    x = RNG.integers(-128, 128, (2, 5, 7, 3)).astype(np.int8)
    ours = run_c(g, [x], tmp_path)
    for (out, coord), y in zip(cases, ours):
        np.testing.assert_array_equal(y, _tflite_bilinear_int8(x, out[1:3], coord), err_msg=f"{out} {coord}")
    np.testing.assert_array_equal(ours[-1], interp.run(g, [x])[g.outputs[-1]])


@pytest.mark.parametrize("attrs,dtype,match", [
    (dict(mode="cubic", coord="half_pixel"), "int8", "int8 cubic interpolation"),
    (dict(mode="linear", coord="half_pixel", scales=(1, 2.1, 2.1, 1)), "int8",
     "tinyc's int8 Resize is nearest, or TFLite's bilinear"),
    (dict(mode="linear", coord="asymmetric"), "int32", "linear interpolation of int32 values"),
])
def test_refusals_are_one_line(tmp_path, attrs, dtype, match):
    q = Quant(np.float32(0.1), np.int64(0)) if dtype == "int8" else None
    g = Graph("bad")
    g.add_tensor("x", (1, 4, 4, 2), dtype, quant=q)
    g.inputs = ["x"]
    _resize(g, "x", (1, 8, 8, 2), dtype=dtype, quant=q, **attrs)
    with pytest.raises(TinycError, match=match) as e:
        run_c(g, [np.zeros((1, 4, 4, 2), dtype)], tmp_path)
    assert "\n" not in str(e.value)


# -- ONNX against onnxruntime ---------------------------------------------------------------------------------
def test_onnx_resize_after_a_conv(tmp_path):
    """Resize of a Conv's output (stored NHWC): scales and sizes, axes, every mode against onnxruntime."""
    _, Builder, _ = _onnx()
    b = Builder()
    c = b.node("Conv", ["img", b.weights(4, 3, 3, 3)], pads=[1, 1, 1, 1])             # [1, 4, 5, 6]
    sc = b.const([1, 1, 1.5, 2.5])
    outs = [
        b.node("Resize", [c, "", sc], mode="nearest", coordinate_transformation_mode="asymmetric",
               nearest_mode="floor"),
        b.node("Resize", [c, "", sc], mode="nearest", nearest_mode="round_prefer_ceil"),
        b.node("Resize", [c, "", sc], mode="linear"),
        b.node("Resize", [c, "", b.const([1, 1, 2, 2.5])], mode="linear",
               coordinate_transformation_mode="align_corners"),
        b.node("Resize", [c, "", b.const([1, 1, 0.6, 0.7])], mode="cubic"),
        b.node("Resize", [c, "", "", b.const([1, 4, 9, 4], np.int64)], mode="cubic", exclude_outside=1,
               cubic_coeff_a=-0.5),
        b.node("Resize", [c, "", "", b.const([7, 3], np.int64)], mode="linear", axes=[3, 2],
               coordinate_transformation_mode="pytorch_half_pixel"),
        b.node("Resize", ["img", "", "", b.const([8, 8], np.int64)], mode="nearest", axes=[2, 3],
               keep_aspect_ratio_policy="not_larger"),
    ]
    _verify_onnx(tmp_path, b.model({"img": [1, 3, 5, 6]}, outs, 19), "resize19")


@pytest.mark.parametrize("opset", [9, 10])
def test_onnx_upsample_and_resize_10(tmp_path, opset):
    """Upsample (opset 9) and Resize-10: asymmetric coordinates, floor, also with non-integer scales."""
    _, Builder, _ = _onnx()
    b = Builder()
    op = "Upsample" if opset == 9 else "Resize"
    outs = [b.node(op, ["img", b.const([1, 1, 2.5, 1.5])], mode=m) for m in ("nearest", "linear")]
    _verify_onnx(tmp_path, b.model({"img": [1, 2, 4, 5]}, outs, opset), f"upsample{opset}")


@pytest.mark.parametrize("opset", [11, 13])
def test_onnx_resize_11_and_13(tmp_path, opset):
    """roi (empty) before scales / sizes; opset 11's tf_half_pixel_for_nn."""
    _, Builder, _ = _onnx()
    b = Builder()
    roi = b.const([], np.float32)
    outs = [b.node("Resize", ["img", roi, b.const([1, 1, 1.5, 2])], mode="linear"),
            b.node("Resize", ["img", roi, b.const([], np.float32), b.const([1, 2, 3, 7], np.int64)], mode="cubic",
                   coordinate_transformation_mode="asymmetric"),
            b.node("Resize", ["img", roi, b.const([1, 1, 2, 0.6])], mode="nearest",
                   coordinate_transformation_mode="tf_half_pixel_for_nn" if opset == 11 else "half_pixel",
                   nearest_mode="ceil")]
    _verify_onnx(tmp_path, b.model({"img": [1, 2, 4, 5]}, outs, opset), f"resize{opset}")


def test_onnx_refusals_are_one_line(tmp_path):
    from tinyc.frontends.onnx_import import load_onnx
    onnx, Builder, _ = _onnx()
    cases = [
        (dict(mode="linear", antialias=1), "antialias=1"),
        (dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"), "tf_crop_and_resize"),
        (dict(mode="linear", coordinate_transformation_mode="align_corners"), "give the output sizes"),
    ]
    for k, (attrs, match) in enumerate(cases):
        b = Builder()
        y = b.node("Resize", ["x", "", b.const([1, 1, 0.6, 0.6])], **attrs)
        path = str(tmp_path / f"r{k}.onnx")
        onnx.save(b.model({"x": [1, 2, 4, 4]}, [y], 19), path)
        with pytest.raises(TinycError, match=match) as e:
            load_onnx(path)
        assert "\n" not in str(e.value)
    b = Builder()
    shape = b.node("Shape", ["x"])
    y = b.node("Resize", ["x", "", "", b.node("Cast", [b.node("Mul", [b.node("Cast", [shape], to=1),
                                                                       b.const([1, 1, 2, 2])])], to=7)])
    model = onnx.helper.make_model(onnx.helper.make_graph(
        b.nodes, "m", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, "w"])],
        [onnx.helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT, None)], b.inits),
        opset_imports=[onnx.helper.make_opsetid("", 19)])
    path = str(tmp_path / "computed.onnx")
    onnx.save(model, path)
    with pytest.raises(TinycError) as e:
        load_onnx(path)
    assert "\n" not in str(e.value)


# -- Keras against Keras, TFLite against TFLite -----------------------------------------------------------------
needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")


def _resizing_model(repeat=True):
    """Every TFLite resize mode (and, with `repeat`, UpSampling2D nearest: TILE v3, which BUILTIN_REF lacks)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import int8_zoo
    keras = int8_zoo._keras()
    import tensorflow as tf
    L = keras.layers
    x = keras.Input((5, 7, 3))
    h = L.Conv2D(4, 1)(x)
    outs = [L.UpSampling2D((2, 3))(h)] if repeat else []
    outs += [L.UpSampling2D(2, interpolation="bilinear")(h), L.Resizing(9, 4)(h),
             L.Resizing(3, 11, interpolation="nearest")(h),
             L.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, (11, 13), align_corners=True))(h),
             L.Lambda(lambda t: tf.compat.v1.image.resize_nearest_neighbor(t, (4, 13), align_corners=True))(h),
             L.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, (8, 3)))(h),
             L.Lambda(lambda t: tf.compat.v1.image.resize_nearest_neighbor(t, (8, 3)))(h)]
    keras.utils.set_random_seed(3)
    return int8_zoo, keras.Model(x, outs, name="resizing")


@needs_tf
def test_keras_layers_against_keras(tmp_path):
    int8_zoo, _ = _resizing_model()
    keras = int8_zoo._keras()
    L = keras.layers
    x = keras.Input((5, 6, 2))
    outs = [L.UpSampling2D((2, 3))(x), L.UpSampling2D(2, interpolation="bilinear")(x), L.Resizing(9, 4)(x),
            L.Resizing(3, 11, interpolation="nearest")(x), L.Resizing(12, 5)(x)]
    path = tmp_path / "resizing.keras"
    keras.Model(x, outs).save(path)
    from tinyc.verify import verify
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]
    bad = keras.Model(x, L.Resizing(3, 3, crop_to_aspect_ratio=True)(x))
    bad.save(tmp_path / "crop.keras")
    from tinyc.frontends.keras_import import load_keras
    with pytest.raises(TinycError, match="crop_to_aspect_ratio") as e:
        load_keras(str(tmp_path / "crop.keras"))
    assert "\n" not in str(e.value)


@needs_tf
@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_tflite_against_the_reference_kernels(tmp_path, kind):
    """RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR in every coordinate mode; int8: zero differing bytes."""
    int8_zoo, model = _resizing_model(repeat=kind == "float32")
    from tinyc.verify import verify
    if kind == "int8":
        path = int8_zoo.to_int8_tflite(model, tmp_path / "resize_int8.tflite")
    else:
        import tensorflow as tf
        path = tmp_path / "resize.tflite"
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    report = verify(str(path), samples=5, seed=3, per_layer=True)
    assert report["ok"], report["outputs"]
    if kind == "int8":
        assert report["mismatched_bytes"] == 0, report["outputs"]
        assert all(row["ok"] for row in report["layers"])


@needs_tf
def test_tinyc_quantizer_against_tflite(tmp_path):
    """tinyc's own int8 quantization of a Keras model and an ONNX model with resizes: the C is byte-exact with
    TFLite's reference kernels running the same int8 graph (written by tinyc's TFLite writer)."""
    int8_zoo, _ = _resizing_model()
    keras = int8_zoo._keras()
    L = keras.layers
    x = keras.Input((5, 6, 2))
    h = L.Conv2D(3, 1)(x)
    y = L.Conv2D(2, 3)(L.Concatenate()([L.UpSampling2D(2, interpolation="bilinear")(h), L.UpSampling2D(2)(h),
                                        L.Resizing(10, 12, interpolation="nearest")(h)]))
    keras.utils.set_random_seed(4)
    path = tmp_path / "up.keras"
    keras.Model(x, y).save(path)
    from tinyc.verify import verify
    calib = [np.random.default_rng(0).standard_normal((32, 5, 6, 2)).astype(np.float32)]
    report = verify(str(path), samples=4, quantize="int8", calib=calib, per_layer=True)
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]
    assert all(row["ok"] for row in report["layers"])
    _, Builder, _ = _onnx()
    b = Builder()
    c = b.node("Conv", ["img", b.weights(3, 2, 1, 1)])
    outs = [b.node("Resize", [c, "", b.const([1, 1, 2, 2])], mode="linear"),
            b.node("Resize", [c, "", "", b.const([1, 3, 7, 9], np.int64)], mode="linear",
                   coordinate_transformation_mode="align_corners")]
    path = tmp_path / "up.onnx"
    import onnx
    onnx.save(b.model({"img": [1, 2, 5, 6]}, outs, 19), str(path))
    calib = [np.random.default_rng(0).standard_normal((32, 2, 5, 6)).astype(np.float32)]
    report = verify(str(path), samples=4, quantize="int8", calib=calib, per_layer=True)
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="PyTorch's exporters are slow: TINYC_FULL=1")
@pytest.mark.parametrize("dynamo", [False, True])
def test_pytorch_interpolate_against_onnxruntime(tmp_path, dynamo):
    """F.interpolate nearest, bilinear (align_corners False and True, scale_factor and size) and bicubic, as
    PyTorch's exporters write them."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import torch.nn.functional as F
    from tinyc.verify import verify

    class Up(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            h = self.conv(x)
            return (F.interpolate(h, scale_factor=2, mode="nearest"),
                    F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False),
                    F.interpolate(h, size=(9, 7), mode="bilinear", align_corners=True),
                    F.interpolate(h, scale_factor=1.5, mode="bicubic", align_corners=False))

    torch.manual_seed(0)
    path = str(tmp_path / "up.onnx")
    x = torch.randn(1, 3, 6, 5)
    if dynamo:
        torch.onnx.export(Up().eval(), (x,), path, input_names=["input"], dynamo=True, verbose=False)
    else:
        torch.onnx.export(Up().eval(), (x,), path, input_names=["input"], opset_version=17, dynamo=False)
    report = verify(path, samples=2)
    assert report["ok"], report["outputs"]


@pytest.mark.parametrize("act", ["s8", "u8"])
def test_onnx_qdq_resizes_run_int8(tmp_path, act):
    """quantize_static's QDQ Resize (nearest; bilinear with and without align_corners) becomes the int8 Resize
    (fold_qdq) and agrees with onnxruntime within one LSB of each output."""
    torch = pytest.importorskip("torch")
    qdq = pytest.importorskip("test_onnx_qdq")
    import torch.nn.functional as F
    from tinyc.codegen.emit import kernel_family
    from tinyc.compiler import compile_model
    from tinyc.verify import verify

    class Up(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return (F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(h, scale_factor=2, mode="bilinear"),
                    F.interpolate(h, size=(13, 11), mode="bilinear", align_corners=True))

    torch.manual_seed(0)
    src = str(tmp_path / "up.onnx")
    torch.onnx.export(Up().eval(), torch.randn(qdq.SHAPE), src, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["a", "b", "c"])
    path = qdq.quantize(src, tmp_path / "q.onnx", qdq.ACTIVATIONS[act])
    g = compile_model(path).graph
    assert [kernel_family(g, n) for n in g.nodes if n.op == "Resize"] == ["int8"] * 3
    report = verify(path, samples=10)
    assert report["ok"], report["outputs"]


@needs_tf
def test_int8_sweep_against_tflite_written_directly(tmp_path):
    """Up- and downsampling of odd sizes (1 to 39, a single row or column included) in every TFLite mode, the
    .tflite written by tinyc's writer: zero differing bytes against BUILTIN_REF."""
    from tinyc.quant.tflite_writer import write_tflite
    from tinyc.verify import verify
    rng = np.random.default_rng(5)
    q = Quant(np.float32(0.07), np.int64(5))
    g = Graph("resize_sweep")
    inputs = (("a", (1, 7, 9, 3)), ("b", (1, 1, 3, 2)), ("c", (1, 13, 2, 4)), ("d", (1, 30, 17, 1)))
    for name, shape in inputs if os.environ.get("TINYC_FULL") else inputs[:2]:
        g.add_tensor(name, shape, "int8", quant=q)
        g.inputs.append(name)
        for coord in ("tflite_asymmetric", "tflite_align_corners", "tflite_half_pixel"):
            for mode in ("nearest", "linear"):
                out = (shape[0], int(rng.integers(1, 40)), int(rng.integers(1, 40)), shape[3])
                _resize(g, name, out, mode, coord, dtype="int8", quant=q)
    g.validate()
    path = tmp_path / "sweep.tflite"
    write_tflite(g, str(path))
    report = verify(str(path), samples=3, seed=2)
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]


@pytest.mark.parametrize("cc,flags", [("gcc", ("-O2",)), ("arm-none-eabi-gcc", ("-O2", "-mcpu=cortex-m0plus",
                                                                              "-mthumb")),
                                      ("arm-none-eabi-gcc", ("-O2", "-mcpu=cortex-m4", "-mthumb",
                                                             "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"))])
def test_int8_and_integer_kernels_build_cleanly(tmp_path, c_compile, cc, flags):
    """The int8 bilinear and nearest kernels under the project's warning set, host and Cortex-M0+ / M4."""
    import shutil
    from tinyc.compiler import compile_graph
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    q = Quant(np.float32(0.05), np.int64(-3))
    g = Graph("resize_build")
    g.add_tensor("x", (1, 5, 7, 3), "int8", quant=q)
    g.inputs = ["x"]
    _resize(g, "x", (1, 11, 4, 3), "linear", "tflite_half_pixel", dtype="int8", quant=q)
    _resize(g, "x", (1, 9, 14, 3), "nearest", "asymmetric", dtype="int8", quant=q)
    c_compile(compile_graph(g, "rb").library, tmp_path, cc, flags)
