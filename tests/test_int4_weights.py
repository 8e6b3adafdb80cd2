"""int4 weights (TFLite INT4 tensors, two values per byte, low nibble first) in int8 CONV_2D, DEPTHWISE_CONV_2D and
FULLY_CONNECTED: tinyc's TFLite writer stores them packed, the frontend reads them back, and the C (reference and
fast kernels, both code paths) equals TFLite's reference kernels running the same file byte for byte. The weights
stay packed in the C's flash tables."""
from __future__ import annotations

import importlib.util
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyc.compiler import codegen_options, compile_graph
from tinyc.errors import TinycError
from tinyc.frontends.geometry import conv_geometry
from tinyc.ir import Graph, Quant
from tinyc.nibbles import c_nibble, pack_int4, unpack_int4

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs tensorflow", allow_module_level=True)

from tinyc.quant.tflite_writer import graph_to_tflite, write_tflite  # noqa: E402
from tinyc.verify import verify  # noqa: E402

EXAMPLES = 30 if os.environ.get("TINYC_FULL") else 2
SETTINGS = dict(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ACTS = [None, {"fn": "relu"}, {"fn": "clip", "lo": 0.0, "hi": 6.0}]
KERNELS = ("fast", "reference")
# against TFLite: the fast set by default (the twin tests hold the reference set to it), both with TINYC_FULL
ORACLE_KERNELS = KERNELS if os.environ.get("TINYC_FULL") else ("fast",)


def _q(scale, zp=0):
    return Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))


def test_packing_is_tflites_low_nibble_first():
    """Value 2i in the low nibble of byte i, 2i + 1 in the high one; an odd count pads a zero nibble."""
    assert pack_int4([1, -2, 7]).tolist() == [0xE1, 0x07]
    assert pack_int4([-8, 7, 0, -1]).tolist() == [0x78, 0xF0]
    vals = np.arange(-8, 8).repeat(3)[:-1]
    np.testing.assert_array_equal(unpack_int4(pack_int4(vals), vals.size).astype(np.int8), vals)
    with pytest.raises(ValueError):
        pack_int4([8])


def test_c_nibble_reads_every_value(tmp_path):
    """The C expression the reference kernels use gives back every value of a packed table."""
    import subprocess
    vals = np.random.default_rng(0).integers(-8, 8, 37)
    body = ", ".join(str(b) for b in pack_int4(vals))
    src = tmp_path / "n.c"
    src.write_text("#include <stdint.h>\n#include <stdio.h>\nstatic const uint8_t t[] = {%s};\nint main(void) {\n"
                   "  for (int i = 0; i < %d; ++i) printf(\"%%d \", (int)%s);\n  return 0;\n}\n"
                   % (body, vals.size, c_nibble("t", "i")))
    exe = tmp_path / "n"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    assert [int(v) for v in out] == vals.tolist()


def _int4_weights(g, shape, rng, extreme=False):
    o = shape[0]
    w = rng.integers(-8, 8, shape)
    if extreme:
        w.reshape(o, -1)[0] = -8
        w.reshape(o, -1)[-1] = 7
    scales = rng.uniform(0.005, 0.08, o).astype(np.float32)
    g.add_tensor("w", shape, "int4", w.astype(ml_dtypes.int4), quant=Quant(scales, np.zeros(o, np.int64), 0))
    return scales


def _bias(g, o, in_scale, w_scales, rng):
    g.add_tensor("b", (o,), "int32", rng.integers(-3000, 3000, o).astype(np.int32),
                 quant=Quant((np.float32(in_scale) * w_scales).astype(np.float32), np.zeros(o, np.int64), 0))


@st.composite
def conv_case(draw, depthwise: bool):
    k = draw(st.sampled_from([(1, 1), (3, 3), (5, 5), (1, 3), (3, 1)]))
    s = draw(st.sampled_from([(1, 1), (2, 2), (1, 2)]))
    c = draw(st.sampled_from([1, 3, 5, 8, 13]))
    mult = draw(st.sampled_from([1, 1, 2])) if depthwise else 1
    o = c * mult if depthwise else draw(st.sampled_from([1, 3, 5, 7, 8, 16]))
    return dict(k=k, s=s, c=c, o=o, depthwise=depthwise, h=draw(st.integers(k[0], k[0] + 6)),
                w=draw(st.integers(k[1], k[1] + 6)), mode=draw(st.sampled_from(["same", "valid"])),
                in_zp=draw(st.sampled_from([-128, -5, 0, 17, 127])), out_zp=draw(st.sampled_from([-128, -3, 0, 40])),
                out_scale=draw(st.sampled_from([0.02, 0.1, 0.6])), act=draw(st.sampled_from(ACTS)),
                extreme=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


def conv_graph(c) -> Graph:
    rng = np.random.default_rng(c["seed"])
    (oh, t, b), (ow, left, r) = (conv_geometry(n, c["k"][i], c["s"][i], 1, c["mode"])
                                 for i, n in enumerate((c["h"], c["w"])))
    g = Graph("dw4" if c["depthwise"] else "conv4")
    g.add_tensor("x", (1, c["h"], c["w"], c["c"]), "int8", quant=_q(0.04, c["in_zp"]))
    w_scales = _int4_weights(g, (c["o"], *c["k"], 1 if c["depthwise"] else c["c"]), rng, c["extreme"])
    _bias(g, c["o"], 0.04, w_scales, rng)
    g.add_tensor("y", (1, oh, ow, c["o"]), "int8", quant=_q(c["out_scale"], c["out_zp"]))
    g.add_node("Conv2D", ["x", "w", "b"], ["y"], strides=c["s"], dilations=(1, 1), pads=(t, left, b, r),
               groups=c["c"] if c["depthwise"] else 1, activation=c["act"], name="conv")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@st.composite
def dense_case(draw):
    return dict(k=draw(st.sampled_from([1, 3, 7, 8, 9, 16, 33, 100])), o=draw(st.sampled_from([1, 2, 3, 5, 8, 11])),
                rows=draw(st.sampled_from([1, 1, 3])), in_zp=draw(st.sampled_from([-128, -9, 0, 100])),
                out_zp=draw(st.sampled_from([-128, 0, 12])), out_scale=draw(st.sampled_from([0.05, 0.3, 2.0])),
                act=draw(st.sampled_from(ACTS)), extreme=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)),
                per_tensor=draw(st.booleans()))


def dense_graph(c) -> Graph:
    rng = np.random.default_rng(c["seed"])
    g = Graph("fc4")
    g.add_tensor("x", (1, c["rows"], c["k"]), "int8", quant=_q(0.03, c["in_zp"]))
    w_scales = _int4_weights(g, (c["o"], c["k"]), rng, c["extreme"])
    if c["per_tensor"]:
        w_scales = np.full(c["o"], w_scales[0], np.float32)
        g.tensors["w"].quant = _q(w_scales[0])
    _bias(g, c["o"], 0.03, w_scales, rng)
    if c["per_tensor"]:
        g.tensors["b"].quant = _q(np.float32(0.03) * w_scales[0])
    g.add_tensor("y", (1, c["rows"], c["o"]), "int8", quant=_q(c["out_scale"], c["out_zp"]))
    g.add_node("Dense", ["x", "w", "b"], ["y"], activation=c["act"], name="fc")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def assert_matches_tflite(tmp_path, g):
    """Written with INT4 weights, the file runs in TFLite's reference kernels and in tinyc's C (both kernel sets,
    DSP path emulated): zero differing bytes."""
    path = tmp_path / f"{g.name}.tflite"
    write_tflite(g, str(path))
    for kernels in ORACLE_KERNELS:
        report = verify(str(path), samples=3, seed=1, options=codegen_options(kernels=kernels))
        assert report["oracle"] == "tflite", report
        assert report["mismatched_bytes"] == 0, (kernels, report["outputs"])
        assert report.get("dsp_path_matches", True), kernels


@settings(**SETTINGS)
@given(c=conv_case(False))
def test_conv_int4_matches_tflite(tmp_path, c):
    assert_matches_tflite(tmp_path, conv_graph(c))


@settings(**SETTINGS)
@given(c=conv_case(True))
def test_depthwise_int4_matches_tflite(tmp_path, c):
    assert_matches_tflite(tmp_path, conv_graph(c))


@settings(**SETTINGS)
@given(c=dense_case())
def test_fully_connected_int4_matches_tflite(tmp_path, c):
    assert_matches_tflite(tmp_path, dense_graph(c))


def _file_weights(data: bytes):
    from tensorflow.lite.python import schema_py_generated as S
    model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(data, 0))
    sg = model.subgraphs[0]
    return [(t, model.buffers[t.buffer]) for t in sg.tensors if t.type == S.TensorType.INT4]


def test_written_file_holds_packed_int4():
    """The writer gives the weights TFLite's INT4 type and (n + 1) / 2 bytes, low nibble first."""
    c = dict(k=7, o=3, rows=1, in_zp=0, out_zp=0, out_scale=0.3, act=None, extreme=False, seed=3, per_tensor=False)
    g = dense_graph(c)
    (t, buf), = _file_weights(graph_to_tflite(g))
    assert list(t.shape) == [3, 7] and len(buf.data) == 11
    assert bytes(np.asarray(buf.data, np.uint8)) == pack_int4(g.tensors["w"].data).tobytes()


def test_weights_stay_packed_in_flash():
    """The C holds the int4 weights as (n + 1) / 2 bytes, no unpacked int8 copy, and the library's weight bytes
    count them so (the same layer with int8 weights: twice as many)."""
    c = dict(k=100, o=11, rows=1, in_zp=-9, out_zp=0, out_scale=0.3, act=None, extreme=False, seed=3,
             per_tensor=False)
    g4 = dense_graph(c)
    g8 = dense_graph(c)
    g8.tensors["w"].dtype = "int8"
    g8.tensors["w"].data = g8.tensors["w"].data.astype(np.int8)
    for kernels in KERNELS:
        lib4 = compile_graph(g4, "m", options=codegen_options(kernels=kernels)).library
        lib8 = compile_graph(g8, "m", options=codegen_options(kernels=kernels)).library
        assert "int4 weights, two per byte" in lib4.files["m.c"] or kernels == "fast"
        assert lib8.weight_bytes - lib4.weight_bytes >= 11 * 100 // 2 - 8, (kernels, lib4.weight_bytes,
                                                                             lib8.weight_bytes)


def test_asymmetric_int4_is_refused(tmp_path):
    c = dict(k=8, o=3, rows=1, in_zp=0, out_zp=0, out_scale=0.3, act=None, extreme=False, seed=3, per_tensor=False)
    g = dense_graph(c)
    g.tensors["w"].quant = Quant(g.tensors["w"].quant.scale, np.asarray([0, 2, 0], np.int64), 0)
    path = tmp_path / "asym.tflite"
    write_tflite(g, str(path))
    with pytest.raises(TinycError, match=r"int4 weights 'w' are asymmetric \(zero point 2\).*symmetric"):
        verify(str(path), samples=1)


def test_int4_elsewhere_is_refused_naming_the_tensor(tmp_path):
    """TRANSPOSE_CONV with INT4 weights: TFLite's converter never makes one; tinyc refuses it in one line."""
    rng = np.random.default_rng(0)
    g = Graph("tconv4")
    g.add_tensor("x", (1, 3, 3, 2), "int8", quant=_q(0.04, 0))
    w_scales = _int4_weights(g, (3, 2, 2, 2), rng)
    _bias(g, 3, 0.04, w_scales, rng)
    g.add_tensor("y", (1, 6, 6, 3), "int8", quant=_q(0.1, 0))
    g.add_node("ConvTranspose2D", ["x", "w", "b"], ["y"], strides=(2, 2), dilations=(1, 1), pads=(0, 0, 0, 0),
               groups=1, activation=None, name="tconv")
    g.inputs, g.outputs = ["x"], ["y"]
    path = tmp_path / "tconv4.tflite"
    write_tflite(g, str(path))
    with pytest.raises(TinycError, match=r"constant 'w' has type INT4"):
        verify(str(path), samples=1)


# -- the fast kernels (tinyc/codegen/int4_gemm.py) ----------------------------------------------------------------
def _x(g, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (4, *g.tensors["x"].shape[1:])).astype(np.int8)
    x[0], x[1] = 127, -128
    return x


def assert_twins_agree(g, seed):
    """The fast int4 kernels equal the reference twins on both code paths (DSP emulated in C); returns the fast
    kernels' names."""
    from tinyc.verify import run_generated
    fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
    ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
    x = _x(g, seed)
    want = run_generated(ref, [x])[0]
    kernels = [layer["kernel"] for layer in fast.library.layers if layer["kernel"]]
    for dsp in (False, True):
        np.testing.assert_array_equal(run_generated(fast, [x], dsp=dsp)[0], want, err_msg=f"dsp={dsp} {kernels}")
    return kernels


@settings(**SETTINGS)
@given(c=conv_case(False))
def test_fast_int4_conv_equals_reference(c):
    kernels = assert_twins_agree(conv_graph(c), c["seed"])
    if c["c"] * c["k"][0] * c["k"][1] >= 8:
        assert kernels[0].startswith("int8_fast/gemm_int4/"), kernels


@settings(**SETTINGS)
@given(c=conv_case(True))
def test_fast_int4_depthwise_equals_reference(c):
    kernels = assert_twins_agree(conv_graph(c), c["seed"])
    if c["c"] > 1 and c["o"] == c["c"]:
        assert kernels[0].startswith("int8_fast/depthwise_int4/"), kernels


@settings(**SETTINGS)
@given(c=dense_case())
def test_fast_int4_dense_equals_reference(c):
    kernels = assert_twins_agree(dense_graph(c), c["seed"])
    if c["k"] >= 8 and c["out_scale"] != 2.0:
        assert kernels[0] == "int8_fast/gemm_int4/int4-fc", kernels


def test_fast_int4_weights_stay_packed():
    """The fast kernel's tables hold the weights as nibbles: one build stores O * K / 2 bytes of them (plus the
    per-channel tables), about half of the int8 layer's."""
    c = dict(k=256, o=64, rows=1, in_zp=-9, out_zp=0, out_scale=0.3, act=None, extreme=True, seed=3,
             per_tensor=False)
    g4 = dense_graph(c)
    g8 = g4.copy()
    g8.tensors["w"].dtype, g8.tensors["w"].data = "int8", g8.tensors["w"].data.astype(np.int8)
    lib4 = compile_graph(g4, "m", options=codegen_options(kernels="fast")).library
    lib8 = compile_graph(g8, "m", options=codegen_options(kernels="fast")).library
    assert lib4.layers[0]["kernel"] == "int8_fast/gemm_int4/int4-fc"
    assert "int4 weights + 8, 8 nibbles per word (DSP path): 2048" in lib4.files["m.c"]
    assert "int4 weights + 8, per 4 channels and input: 16x256x2" in lib4.files["m.c"]
    assert lib4.weight_bytes == 64 * 256 // 2 + 64 * 16 + 64 * 8 < lib8.weight_bytes


def _qemu_cases():
    return {
        "fc": dense_graph(dict(k=100, o=11, rows=1, in_zp=-9, out_zp=0, out_scale=0.3, act=None, extreme=True,
                               seed=3, per_tensor=False)),
        "conv3x3": conv_graph(dict(k=(3, 3), s=(1, 1), c=5, o=7, depthwise=False, h=6, w=7, mode="same", in_zp=-5,
                                   out_zp=3, out_scale=0.1, act=None, extreme=True, seed=1)),
        "conv1x1s2": conv_graph(dict(k=(1, 1), s=(2, 2), c=16, o=9, depthwise=False, h=5, w=5, mode="valid",
                                     in_zp=17, out_zp=3, out_scale=0.6, act={"fn": "relu"}, extreme=False, seed=2)),
        "depthwise": conv_graph(dict(k=(3, 3), s=(1, 1), c=13, o=13, depthwise=True, h=6, w=5, mode="same",
                                     in_zp=4, out_zp=-3, out_scale=0.1, act=None, extreme=True, seed=5)),
        "depthwise_s2": conv_graph(dict(k=(3, 3), s=(2, 2), c=10, o=10, depthwise=True, h=7, w=8, mode="same",
                                        in_zp=-128, out_zp=5, out_scale=0.1, act=None, extreme=True, seed=6)),
    }


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="QEMU runs: set TINYC_FULL=1")
def test_int4_kernels_under_qemu(tmp_path):
    """The int4 layers on the emulated Cortex-M4 (the DSP asm loop) and Cortex-M0+ (the Thumb-1 nibble loop) equal
    the host build, which equals the reference kernels."""
    import shutil
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.verify import run_generated
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm")
    for name, g in _qemu_cases().items():
        fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
        ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
        assert fast.library.layers[0]["kernel"].startswith("int8_fast/"), (name, fast.library.layers[0]["kernel"])
        x = _x(g, 0)[:2]
        host = run_generated(ref, [x])[0]
        for board in ("nucleo-f412zg", "pico"):
            out = tmp_path / f"{name}-{board}"
            write_library(fast.library, str(out), force=True)
            write_firmware(fast, load_board(board), str(out), [x])
            emulated = emulate(fast, load_board(board), out, profile=False)["outputs"][0]
            np.testing.assert_array_equal(emulated, host, err_msg=f"{name} on {board}")


# -- producers: tinyc's quantizer (--quantize int8 --weights int4) and ai-edge-quantizer --------------------------
def _small_keras(path):
    import keras
    from keras import layers
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 1))
    y = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same")(y)
    y = layers.Conv2D(13, 1)(y)
    y = layers.Flatten()(y)
    y = layers.Dense(10)(y)
    keras.Model(x, y).save(path)
    return path


def test_quantize_int8_weights_int4(tmp_path):
    """tinyc's quantizer gives conv, depthwise and dense int4 weights (scale max|w| / 7 per channel, values in
    -7..7); the C equals TFLite's reference kernels running the .tflite tinyc writes (INT4 tensors), with half the
    weight bytes of --quantize int8."""
    from tinyc.compiler import compile_model
    from tinyc.quant.calibrate import random_calibration
    from tinyc.frontends import load_model
    path = str(_small_keras(tmp_path / "small.keras"))
    calib = random_calibration(load_model(path))
    report = verify(path, samples=3, quantize="int8", calib=calib, options=codegen_options(weights="int4"))
    assert report["oracle"] == "tflite" and report["mismatched_bytes"] == 0, report["outputs"]
    c4 = compile_model(path, quantize="int8", calib=calib, options=codegen_options(weights="int4"))
    c8 = compile_model(path, quantize="int8", calib=calib)
    weights = [c4.quantized.tensors[n.inputs[1]] for n in c4.quantized.nodes if n.op in ("Conv2D", "Dense")]
    assert len(weights) == 4 and all(t.dtype == "int4" for t in weights)
    for t in weights:
        q = t.data.astype(np.int8).reshape(t.shape[0], -1)
        assert np.abs(q).max(axis=1).tolist() == [7] * t.shape[0]
    assert c4.library.weight_bytes < 0.6 * c8.library.weight_bytes
    # tinyc report: a layer's int4 weights count packed, two per byte (plus its int32 bias)
    from tinyc.memory_report import memory_report
    rows = {row["name"]: row for row in memory_report(c4)["layers"]}
    for n in c4.quantized.nodes:
        if n.op in ("Conv2D", "Dense"):
            w, b = (c4.quantized.tensors[i] for i in n.inputs[1:3])
            assert rows[n.name]["weight_bytes"] == (w.size + 1) // 2 + b.nbytes, n.name


def test_weights_int4_needs_quantize_int8(tmp_path):
    from tinyc.compiler import compile_model
    path = str(_small_keras(tmp_path / "small.keras"))
    with pytest.raises(TinycError, match=r"--weights int4 .*use it with --quantize int8"):
        compile_model(path, options=codegen_options(weights="int4"))


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_quantizer") is None, reason="needs ai-edge-quantizer")
def test_ai_edge_quantizer_int4_model(tmp_path):
    """A float .tflite quantized by ai-edge-quantizer (static recipe: int8 activations, int4 channelwise weights)
    compiles bit-exact against TFLite's reference kernels; its conv and FC weights are INT4 in the file."""
    import tensorflow as tf
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    import keras
    model = keras.models.load_model(_small_keras(tmp_path / "small.keras"))
    float_path = tmp_path / "float.tflite"
    float_path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rm = recipe_manager.RecipeManager()
    rm.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                         weight_num_bits=4)
    qt = quantizer.Quantizer(str(float_path), rm.get_quantization_recipe())
    interp = tf.lite.Interpreter(model_path=str(float_path))
    (key, sig), = interp.get_signature_list().items()
    rng = np.random.default_rng(0)
    calib = {key: [{sig["inputs"][0]: rng.uniform(0, 1, (1, 8, 8, 1)).astype(np.float32)} for _ in range(8)]}
    int4_path = tmp_path / "int4.tflite"
    qt.quantize(qt.calibrate(calib)).export_model(str(int4_path), overwrite=True)
    assert len(_file_weights(int4_path.read_bytes())) >= 2
    for kernels in ORACLE_KERNELS:
        report = verify(str(int4_path), samples=3, options=codegen_options(kernels=kernels))
        assert report["oracle"] == "tflite" and report["mismatched_bytes"] == 0, (kernels, report["outputs"])
    # its weight-only int4 recipe (DEQUANTIZE of INT4 weights) compiles as the float model it computes; its dynamic
    # one (int4 weights, float activations: hybrid) is refused in one line naming the weights
    from ai_edge_quantizer import recipe
    for kind, rp in (("weight_only", recipe.weight_only_wi4_afp32()), ("dynamic", recipe.dynamic_wi4_afp32())):
        out = tmp_path / f"{kind}.tflite"
        quantizer.Quantizer(str(float_path), rp).quantize().export_model(str(out), overwrite=True)
        if kind == "weight_only":
            report = verify(str(out), samples=2)
            assert report["oracle"] == "tflite" and report["ok"], report["outputs"]
        else:
            with pytest.raises(TinycError, match=r"int4 weights '.*' with float activations \(a hybrid layer\)"):
                verify(str(out), samples=1)
