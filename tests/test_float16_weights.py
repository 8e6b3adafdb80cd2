"""float16 weights: TFLite's float16 models (converter, `supported_types=[tf.float16]`) compile and match TFLite;
`--weights float16` keeps a float model's weights as float16 bits in flash, widened per use in the kernels
(runtime_c/tinyc_half.h: exact for all 65,536 halves), and the C equals the model with its weights rounded to
float16 (the oracle runs that rounded copy, frontends/rounded_weights.py). QEMU runs (M0+ integer widening, M4
VCVTB) and whole converter models (DS-CNN, MobileNet-style) with TINYC_FULL=1."""
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinyc import interp
from tinyc.compiler import codegen_options, compile_graph, compile_model
from tinyc.errors import TinycError
from tinyc.frontends.rounded_weights import round_to_half
from tinyc.ir import Graph
from tinyc.resources import resource_dir
from tinyc.schedule.fuse_block import inline_blocks
from tinyc.verify import run_generated, verify

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "ops"))
from c_runner import run_c  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
SLOW = "a few seconds more (a Keras save, a conversion, another core): TINYC_FULL=1"
HALF = {"weights": "float16"}
ARM = shutil.which("arm-none-eabi-gcc") is not None
QEMU = ARM and shutil.which("qemu-system-arm") is not None
needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror"]
ARM_CORES = {"m0plus": ["-mcpu=cortex-m0plus", "-mfloat-abi=soft"],
             "m4": ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"],
             "m7": ["-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"],
             "m33": ["-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"]}


# -- the widening itself ------------------------------------------------------------------------------------------
HALF_PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include "tinyc_half.h"
int main(int argc, char **argv) {
  FILE *f = fopen(argc > 1 ? argv[1] : "halves.bin", "wb");
  if (!f) return 1;
  for (uint32_t h = 0; h < 65536u; ++h) {
    const float x = tinyc_half_to_float((uint16_t)h);
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    fwrite(&bits, sizeof bits, 1, f);
  }
  return fclose(f);
}
"""


def every_half_as_float_bits() -> np.ndarray:
    """numpy's float16 -> float32 of every 16-bit pattern, as float32 bits (numpy keeps NaN payloads)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32)


def test_half_to_float_is_exact_for_every_half(tmp_path):
    """The integer widening (hosts and the M0+) against numpy on all 65,536 patterns, bit for bit: zeros, the
    1,023 x 2 subnormals, normals, infinities and NaNs (payload and sign kept), under ASan and UBSan."""
    (tmp_path / "halves.c").write_text(HALF_PROGRAM)
    exe = tmp_path / "halves"
    subprocess.run(["gcc", *WARNINGS, "-O2", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-I", str(resource_dir("runtime_c")), str(tmp_path / "halves.c"), "-o", str(exe)], check=True)
    subprocess.run([str(exe), str(tmp_path / "out.bin")], check=True)
    ours = np.fromfile(tmp_path / "out.bin", np.uint32)
    ref = every_half_as_float_bits()
    bad = np.nonzero(ours != ref)[0]
    assert bad.size == 0, [(hex(b), hex(ours[b]), hex(ref[b])) for b in bad[:8]]


@pytest.mark.skipif(not ARM, reason="needs arm-none-eabi-gcc")
def test_fpu_cores_widen_with_one_vcvtb_and_the_m0plus_with_integers(tmp_path):
    """What arm-none-eabi-gcc makes of the widening in a dot product: VCVTB.F32.F16 on the FPU cores, no
    floating-point conversion call on the M0+ (its integer code), the warning set clean on every core."""
    src = tmp_path / "dot.c"
    src.write_text('#include "tinyc_half.h"\nfloat dot(const uint16_t *w, const float *x, int n) {\n'
                   "  float acc = 0.0f;\n  for (int i = 0; i < n; ++i) acc += x[i] * tinyc_half_to_float(w[i]);\n"
                   "  return acc;\n}\n")
    for core, flags in ARM_CORES.items():
        asm = subprocess.run(["arm-none-eabi-gcc", "-mthumb", *flags, *WARNINGS, "-O2", "-S", "-o", "-",
                              "-I", str(resource_dir("runtime_c")), str(src)], capture_output=True, text=True)
        assert asm.returncode == 0, (core, asm.stderr)
        if core == "m0plus":
            assert "vcvt" not in asm.stdout and "__aeabi_h2f" not in asm.stdout and "__gnu_h2f" not in asm.stdout
        else:
            assert asm.stdout.count("vcvtb.f32.f16") == 1, (core, asm.stdout)


# -- kernels: the C of every weighted float kernel with float16 weights -------------------------------------------
def rounded_graph(g: Graph) -> Graph:
    """`g` with its float constants of rank >= 2 rounded to float16 (what frontends/rounded_weights.py does to a
    model file)."""
    for t in g.tensors.values():
        if t.is_const and t.dtype == "float32" and t.data.ndim >= 2:
            t.data = round_to_half(t.data, t.name)
    return g


def weighted_graph() -> Graph:
    """The weighted kernels every_kernel_graph lacks: Gather from a constant table at run-time indices (an
    embedding), MatMul with a constant operand of rank 3 (TFLite's BATCH_MATMUL), a grouped Conv2D."""
    rng = np.random.default_rng(7)
    g = Graph("weighted")
    g.add_tensor("ids", (1, 5), "int32")
    g.add_tensor("x", (1, 6, 6, 4), "float32")
    g.inputs = ["ids", "x"]
    table = g.add_const("table", rng.standard_normal((30, 4)).astype(np.float32))
    g.add_tensor("emb", (1, 5, 4), "float32")
    g.add_node("Gather", [table, "ids"], ["emb"], axis=0)
    b = g.add_const("b3", rng.standard_normal((2, 4, 3)).astype(np.float32))
    g.add_tensor("emb2", (2, 5, 4), "float32")
    g.add_node("BroadcastTo", ["emb"], ["emb2"], target=(2, 5, 4))
    g.add_tensor("mm", (2, 5, 3), "float32")
    g.add_node("MatMul", ["emb2", b], ["mm"])
    w = g.add_const("wg", rng.standard_normal((6, 3, 3, 2)).astype(np.float32))
    g.add_tensor("grouped", (1, 4, 4, 6), "float32")
    g.add_node("Conv2D", ["x", w], ["grouped"], strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=2,
               activation=None)
    g.outputs = ["mm", "grouped"]
    return g


def _every_kernel_graph():
    sys.path.insert(0, os.path.dirname(__file__))
    from test_generated_c import every_kernel_graph
    return every_kernel_graph()


def _assert_close(ours, ref):
    ref = np.asarray(ref, np.float32)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * (1 + float(np.abs(ref).max())))


def test_weighted_kernels_read_float16_weights_and_equal_the_interpreter(tmp_path):
    """The C (ASan+UBSan) with --weights float16 equals the interpreter on the rounded graph, every weighted float
    kernel reads uint16_t weights through tinyc_half_to_float, and the library keeps no float32 copy of them."""
    rng = np.random.default_rng(3)
    for name, g in (("allk", _every_kernel_graph()), ("weighted", weighted_graph())):
        g = rounded_graph(g)
        inputs = [rng.integers(-30, 30, g.tensors[n].shape).astype(np.int32) if g.tensors[n].dtype == "int32"
                  else rng.standard_normal(g.tensors[n].shape).astype(np.float32) for n in g.inputs]
        compiled = compile_graph(g, name, options=codegen_options(weights="float16"))
        ours = run_generated(compiled, [x[None] for x in inputs])
        ref = interp.run(g, inputs)
        for k, o in enumerate(g.outputs):
            _assert_close(ours[k][0], ref[o])
        c = compiled.library.files[f"{name}.c"]
        assert "#include \"tinyc_half.h\"" in c
        kernels = {"Conv2D", "Dense", "ConvTranspose2D", "LSTM", "GRU", "RNN", "MatMul", "Gather", "PRelu"}
        for node in compiled.graph.nodes:
            if node.op in kernels and any(compiled.graph.tensors[t].is_const and compiled.graph.tensors[t].data.ndim
                                          >= 2 for t in node.inputs):
                stored = [t for t in node.inputs if t in compiled.library.stored_tensors]
                assert stored, (node.op, node.name)
        for t, nbytes in compiled.library.stored_tensors.items():
            assert nbytes == 2 * compiled.graph.tensors[t].size, t
        assert sum(compiled.library.stored_tensors.values()) == compiled.library.stored_weights["float16"]


@pytest.mark.skipif(not ARM, reason="needs arm-none-eabi-gcc")
@pytest.mark.parametrize("core", ["m0plus", "m4", *[pytest.param(c, marks=pytest.mark.skipif(not FULL, reason=SLOW))
                                                  for c in ("m7", "m33")]])
def test_float16_library_builds_cleanly_on_every_core(tmp_path, c_compile, core):
    """The every-kernel library with float16 weights under the project's warning set and -Werror on the M0+, M4,
    M7 and M33 (hard-float ABI on the FPU cores: the VCVTB path)."""
    g = rounded_graph(_every_kernel_graph())
    lib = compile_graph(g, "allk", options=codegen_options(weights="float16")).library
    assert lib.stored_weights
    c_compile(lib, tmp_path, "arm-none-eabi-gcc", ("-mthumb", "-O2", *ARM_CORES[core]))


def test_a_constant_float16_cannot_hold_stays_float32(tmp_path):
    """A weight that is not a float16 value (here 0.1) is not rounded by codegen: it stays float32, and the C
    equals the interpreter exactly as without --weights."""
    g = Graph("inexact")
    g.add_tensor("x", (1, 3), "float32")
    g.inputs = ["x"]
    g.add_tensor("y", (1, 2), "float32")
    g.add_node("Dense", ["x", g.add_const("w", np.full((2, 3), 0.1, np.float32))], ["y"], activation=None)
    g.outputs = ["y"]
    lib = compile_graph(g, "inexact", options=codegen_options(weights="float16")).library
    assert lib.stored_weights == {} and "tinyc_half.h" not in lib.files
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(run_c(g, [x], tmp_path, "inexact", options=HALF)[0], interp.run(g, [x])["y"])


# -- converter-made models -----------------------------------------------------------------------------------------
def _keras():
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    import tensorflow as tf
    return keras, tf


def _convert(model, path, float16: bool) -> str:
    _, tf = _keras()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    path.write_bytes(conv.convert())
    return str(path)


def image_model():
    """CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, PRELU, FULLY_CONNECTED in one Keras model. (Every layer of this
    file's models is named: Keras numbers unnamed ones process-wide, and tests after this file should see the
    numbers they see alone.)"""
    keras, _ = _keras()
    L = keras.layers
    keras.utils.set_random_seed(5)
    x = keras.Input((8, 8, 3), batch_size=1, name="img")
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="img_conv")(x)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="img_dw")(h)
    h = L.PReLU(alpha_initializer=keras.initializers.RandomUniform(0.05, 0.3), name="img_prelu")(h)
    h = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="img_up")(h)
    h = L.Flatten(name="img_flat")(L.AveragePooling2D(4, name="img_pool")(h))
    return keras.Model(x, L.Dense(5, name="img_fc")(h), name="img_model")


def sequence_model():
    """Keras 3 Embedding (GATHER at run-time indices, with the LESS / ADD / SELECT_V2 that wrap negative ones), GRU
    and SimpleRNN (WHILE loops whose bodies DEQUANTIZE their float16 weights), FULLY_CONNECTED."""
    keras, _ = _keras()
    L = keras.layers
    keras.utils.set_random_seed(6)
    ids = keras.Input((6,), batch_size=1, dtype="int32", name="ids")
    h = L.Embedding(40, 5, name="seq_embedding")(ids)
    h = L.GRU(8, return_sequences=True, name="seq_gru")(h)
    h = L.SimpleRNN(6, name="seq_rnn")(h)
    return keras.Model(ids, L.Dense(3, name="seq_fc")(h), name="seq_model")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(name, fmt) -> the model file: fmt "keras" (.keras), "f32" (float32 .tflite), "f16" (float16 .tflite), each
    made once per module, when first asked for."""
    d, built, files = tmp_path_factory.mktemp("f16"), {}, {}

    def get(name, fmt):
        if name not in built:
            built[name] = {"image": image_model, "sequence": sequence_model}[name]()
        if (name, fmt) not in files:
            m, base = built[name], d / name
            if fmt == "keras":
                m.save(f"{base}.keras")
                files[(name, fmt)] = f"{base}.keras"
            else:
                files[(name, fmt)] = _convert(m, d / f"{name}_{fmt}.tflite", fmt == "f16")
        return files[(name, fmt)]
    return get


def _ids(shape=(3, 6), seed=0):
    return [np.random.default_rng(seed).integers(-40, 40, shape).astype(np.int32)]


@needs_tf
@pytest.mark.parametrize("name", ["image", "sequence"])
def test_converter_float16_model_matches_tflite(models, name):
    """The converter's float16 model, as it is and with --weights float16 (its weights are float16 values: the
    oracle is TFLite on the file itself), per layer."""
    inputs = _ids() if name == "sequence" else None
    for options in (None, codegen_options(weights="float16")):
        r = verify(models(name, "f16"), inputs, per_layer=True, options=options)
        assert r["ok"] and r["first_divergence"] is None, (options, r["outputs"], r["layers"])
    assert "already" in r["oracle_weights"]


@needs_tf
@pytest.mark.parametrize("name,fmt", [("image", "f32"),
                                      pytest.param("image", "keras", marks=pytest.mark.skipif(not FULL, reason=SLOW)),
                                      pytest.param("sequence", "f32", marks=pytest.mark.skipif(not FULL, reason=SLOW)),
                                      pytest.param("sequence", "keras", marks=pytest.mark.skipif(not FULL,
                                                                                                 reason=SLOW))])
def test_weights_float16_equals_the_rounded_model(models, name, fmt):
    """--weights float16 on a float32 model: the C equals the reference runtime on the model with its weights
    rounded to float16 (not the float32 model: the rounding moves the outputs by more than the tolerance), and the
    weights take about half the flash."""
    path = models(name, fmt)
    inputs = _ids(seed=1) if name == "sequence" else None
    r = verify(path, inputs, options=codegen_options(weights="float16"))
    assert r["ok"], r["outputs"]
    assert "rounded to float16" in r["oracle_weights"]
    half = compile_model(path, options=codegen_options(weights="float16"))
    full = compile_model(path)
    g = half.plan.graph
    x = [inputs[0][:1]] if inputs else [np.random.default_rng(2).standard_normal((1, *g.tensors[g.inputs[0]].shape))
                                        .astype(np.float32)]
    moved = np.abs(run_generated(half, x)[0] - run_generated(full, x)[0]).max()
    assert moved > 0, "rounding the weights changed nothing: the test would not see a float32 copy"
    assert half.library.weight_bytes < 0.6 * full.library.weight_bytes, (half.library.weight_bytes,
                                                                          full.library.weight_bytes)


@needs_tf
def test_batch_matmul_with_float16_constant(tmp_path):
    """BATCH_MATMUL of the input by a constant of rank 3 (broadcast over the input's two leading axes), from the
    converter's float16 path (DEQUANTIZE folded): TFLite's numbers, and with --weights float16 the constant is
    stored as float16 (MatMul reads it through the widening)."""
    _, tf = _keras()
    w = tf.constant(np.random.default_rng(9).standard_normal((2, 4, 5)).astype(np.float32))

    @tf.function
    def product(x):
        return tf.linalg.matmul(x, w)
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [product.get_concrete_function(tf.TensorSpec([1, 2, 3, 4], tf.float32))], product)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    path = tmp_path / "bmm.tflite"
    path.write_bytes(conv.convert())
    for options in (None, codegen_options(weights="float16")):
        assert verify(str(path), options=options)["ok"]
    c = compile_model(str(path), options=codegen_options(weights="float16"))
    assert [n.op for n in c.graph.nodes] == ["MatMul"] and c.library.stored_weights == {"float16": 2 * 40}


@needs_tf
def test_keras_batchnorm_is_folded_before_rounding(tmp_path):
    """A Keras Conv2D / DepthwiseConv2D / Dense followed by BatchNormalization (what fold_batchnorm folds): the
    rounded copy folds the BatchNormalization's scale into the kernel before rounding, as TFLite's converter does,
    so tinyc stores every such kernel as float16 and Keras runs the same numbers; a Conv2D whose output has a
    second reader keeps its BatchNormalization apart (not folded) and still verifies."""
    keras, _ = _keras()
    sys.path.insert(0, os.path.dirname(__file__))
    import model_zoo
    L = keras.layers
    keras.utils.set_random_seed(8)
    x = keras.Input((6, 6, 3), name="bn_in")
    h = L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, use_bias=False, name="bn_conv")(x))
    h = L.Activation("relu", name="bn_relu")(h)
    h = L.BatchNormalization(name="bn2")(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="bn_dw")(h))
    shared = L.Conv2D(4, 1, name="bn_shared")(h)
    h = L.Add(name="bn_add")([L.BatchNormalization(name="bn3")(shared), shared])
    h = L.BatchNormalization(name="bn4")(L.Dense(5, name="bn_fc")(L.Flatten(name="bn_flat")(h)))
    m = model_zoo.randomize(keras.Model(x, h, name="bn_model"), 3)
    m.save(tmp_path / "bn.keras")
    half = codegen_options(weights="float16")
    r = verify(str(tmp_path / "bn.keras"), options=half)
    assert r["ok"], r["outputs"]
    c = compile_model(str(tmp_path / "bn.keras"), options=half)
    layers = inline_blocks(c.graph).nodes       # (the layers of fused blocks too)
    kernels = [n.inputs[1] for n in layers if n.op in ("Conv2D", "Dense")]
    assert len(kernels) == 4 and all(k in c.library.stored_tensors for k in kernels), \
        (kernels, c.library.stored_tensors)
    assert sum(n.op == "ScaleShift" for n in layers) == 1     # the shared conv's BatchNormalization


def test_onnx_model_with_weights_float16(tmp_path):
    """ONNX initializers (Conv, Gemm, MatMul) rounded in the copy onnxruntime runs; a rank-1 bias stays float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("W", (4, 3, 3, 3)), ("B", (4,)), ("G", (5, 16)), ("M", (5, 2)))]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "G"], ["g"], transB=1),
             helper.make_node("MatMul", ["g", "M"], ["y"])]
    graph = helper.make_graph(nodes, "f16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    path = tmp_path / "f16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    r = verify(str(path), options=codegen_options(weights="float16"))
    assert r["ok"] and "3 weight tensor(s)" in r["oracle_weights"], (r["outputs"], r["oracle_weights"])
    lib = compile_model(str(path), options=codegen_options(weights="float16")).library
    assert lib.stored_weights["float16"] == 2 * (4 * 27 + 5 * 16 + 5 * 2)


def test_onnx_conv_mul_add_is_folded_before_rounding(tmp_path):
    """tf2onnx's BatchNormalization after a depthwise conv (Conv -> Mul(c[1,O,1,1]) -> Add): the rounded copy folds
    c into W before rounding (c becomes ones), so tinyc's fold_affine leaves W a float16 value, stored as such, and
    onnxruntime runs the same numbers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in
             (("W", rng.standard_normal((6, 1, 3, 3))), ("B", rng.standard_normal(6)),
              ("C", rng.uniform(0.5, 1.5, (1, 6, 1, 1))), ("T", rng.standard_normal((1, 6, 1, 1))))]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], group=6, pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "C"], ["m"]), helper.make_node("Add", ["m", "T"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 5, 5])], inits)
    path = tmp_path / "bn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    half = codegen_options(weights="float16")
    assert verify(str(path), options=half)["ok"]
    c = compile_model(str(path), options=half)
    assert [n.op for n in c.graph.nodes if n.op != "Transpose"] == ["Conv2D"]   # (NCHW in and out: transposes)
    assert c.library.stored_weights == {"float16": 2 * 54}


# -- refusals -----------------------------------------------------------------------------------------------------
def test_refusals_are_one_line(tmp_path):
    from test_cli import one_line_error, tinyc
    g = Graph("big")
    g.add_tensor("x", (1, 2), "float32")
    g.inputs = ["x"]
    with pytest.raises(TinycError, match="beyond float16's range"):
        round_to_half(np.array([[1e5, 0.0]], np.float32), "w")
    res = tinyc("compile", "nope.tflite", "--weights", "float8", "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "float8" in one_line_error(res)


@needs_tf
def test_float16_on_int8_models_is_refused(tmp_path):
    """An int8 .tflite (tinyc's PTQ of a tiny ONNX model, written by its TFLite writer) and --quantize int8: one
    line each, naming the option, the model's kind and what to do."""
    from tinyc.quant.tflite_writer import write_tflite
    onnx_path = _tiny_onnx(tmp_path)
    calib = [np.random.default_rng(0).standard_normal((4, 1, 2)).astype(np.float32)]
    write_tflite(compile_model(onnx_path, quantize="int8", calib=calib).quantized, str(tmp_path / "int8.tflite"))
    with pytest.raises(TinycError) as e:
        compile_model(str(tmp_path / "int8.tflite"), options=codegen_options(weights="float16"))
    line = str(e.value)
    assert "\n" not in line and "--weights float16" in line and "is an int8 model" in line and \
        "without --weights" in line, line
    with pytest.raises(TinycError, match="--quantize int8 makes an int8 model"):
        compile_model(onnx_path, quantize="int8", calib=calib, options=codegen_options(weights="float16"))


def _tiny_onnx(tmp_path) -> str:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return str(path)


def test_cli_compile_summary_and_report_show_the_float16_bytes(tmp_path):
    from test_cli import tinyc
    from tinyc.memory_report import format_report, memory_report
    path = _tiny_onnx(tmp_path)
    res = tinyc("compile", path, "--weights", "float16", "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert "weights 12 bytes, of which float16 12 B" in res.stdout, res.stdout
    r = memory_report(compile_model(path, options=codegen_options(weights="float16")))
    assert r["stored_weights"] == {"float16": 12} and r["layers"][0]["weight_bytes"] == 12
    assert "weights 12 B (flash, of which float16 12 B)" in format_report(r)
    res = tinyc("verify", path, "--weights", "float16")
    assert res.returncode == 0 and "weights: the oracle runs the model with its 1 weight tensor(s)" in res.stdout, \
        res.stdout


# -- on target (QEMU), TINYC_FULL ------------------------------------------------------------------------------------
COLUMNS = 8


def finite_halves() -> np.ndarray:
    """Every finite float16 value (63,488 of them), as float32."""
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    return h[np.isfinite(h)].astype(np.float32)


def finite_halves_graph() -> Graph:
    """A Dense whose weights are every finite float16 value, COLUMNS per row: the one-hot input e_k gives column k
    of them exactly (one product by 1, the others by 0)."""
    values = finite_halves()
    g = Graph("halves")
    g.add_tensor("x", (1, COLUMNS), "float32")
    g.inputs = ["x"]
    g.add_tensor("y", (1, values.size // COLUMNS), "float32")
    g.add_node("Dense", ["x", g.add_const("w", values.reshape(COLUMNS, -1).T.copy())], ["y"], activation=None)
    g.outputs = ["y"]
    return g


@pytest.mark.skipif(not (FULL and QEMU), reason="QEMU: TINYC_FULL=1 and arm-none-eabi-gcc + qemu-system-arm")
@pytest.mark.parametrize("board", ["pico", "nucleo-f412zg"])
def test_every_finite_half_widens_exactly_on_target(tmp_path, board):
    """On the emulated M0+ (integer code) and M4 (VCVTB), a Dense holding the 63,488 finite halves gives each back
    exactly, one column per one-hot sample (infinities and NaNs cannot be weights: the host test covers them; a
    product by 0 may turn -0 into +0, so zeros compare by value, every other half bit for bit)."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    g = finite_halves_graph()
    compiled = compile_graph(g, "halves", options=codegen_options(weights="float16"))
    assert compiled.library.stored_weights["float16"] == 2 * 63488
    x = np.eye(COLUMNS, dtype=np.float32).reshape(COLUMNS, 1, COLUMNS)
    write_library(compiled.library, str(tmp_path), force=True)
    write_firmware(compiled, load_board(board), str(tmp_path), [x])
    out = np.asarray(emulate(compiled, load_board(board), tmp_path, profile=False)["outputs"][0], np.float32)
    got = out.reshape(COLUMNS, -1).ravel()
    want = finite_halves()
    zero = want == 0
    np.testing.assert_array_equal(got[~zero].view(np.uint32), want[~zero].view(np.uint32))
    assert np.all(got[zero] == 0)


@needs_tf
@pytest.mark.skipif(not FULL, reason="whole converter models: TINYC_FULL=1")
@pytest.mark.parametrize("builder", ["ds_cnn", "mobilenet_v3_small"])
def test_whole_models_float16(tmp_path, builder):
    """A KWS DS-CNN and a MobileNetV3-style CNN: the converter's float16 model verifies against TFLite, and the
    float32 model with --weights float16 against TFLite on its rounded copy; under QEMU (M0+, M4) too."""
    keras, _ = _keras()
    sys.path.insert(0, os.path.dirname(__file__))
    import int8_zoo
    import layer_zoo
    import model_zoo
    keras.utils.set_random_seed(1)
    m = int8_zoo.ds_cnn() if builder == "ds_cnn" else layer_zoo.mobilenet_v3_small(keras)
    model_zoo.randomize(m, 2)
    f16 = _convert(m, tmp_path / "f16.tflite", True)
    f32 = _convert(m, tmp_path / "f32.tflite", False)
    assert verify(f16, per_layer=True)["ok"]
    half = codegen_options(weights="float16")
    for path in (f16, f32):
        r = verify(path, options=half)
        assert r["ok"], (path, r["outputs"])
    if not QEMU:
        return
    from tinyc.boards import load_board
    from tinyc.firmware.run import run_emulated
    for board in ("pico", "nucleo-f412zg"):
        target = load_board(board)
        c = compile_model(f32, options=codegen_options(weights="float16"))
        r = run_emulated(c, target, f32, str(tmp_path / board), None, 0, "nchw", False, "-O2")
        assert r["outputs_match"], (board, r["outputs"])
