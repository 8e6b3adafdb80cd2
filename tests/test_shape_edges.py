"""Edges of model shapes (issue 17's regressions).

Conv and pooling kernels compute one image; a layer whose input holds N images calls its kernel N times, whether
the batch is a model input's first dimension or made inside the model by a Reshape.

Regression (issue 17): Conv / AveragePool / MaxPool, 1-D, 2-D, depthwise and grouped, gave max errors of 1.7-5.9
against onnxruntime when a Reshape put a batch of 2 in front of them (the kernel computed one image). Ops that
are correct for any leading dimension (global pooling as a mean, elementwise, Dense rows) compile as before. Also
a model with no compute layer at all, and rank-0 (scalar) inputs.
"""
import shutil
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyc.compiler import codegen_options, compile_model
from tinyc.errors import TinycError
from tinyc.frontends import load_model
from tinyc.quant.calibrate import random_calibration
from tinyc.verify import verify

RNG = np.random.default_rng(3)


def _save(tmp_path, name, shape_after_reshape, op_nodes, inits, out_shape) -> str:
    size = int(np.prod(shape_after_reshape))
    target = numpy_helper.from_array(np.array(shape_after_reshape, np.int64), "target_shape")
    nodes = [helper.make_node("Reshape", ["x", "target_shape"], ["r"], name="reshape")] + op_nodes
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], [target, *inits])
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    return str(path)


def _w(name, *shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


CASES = {
    "conv2d": ([2, 3, 8, 8], [helper.make_node("Conv", ["r", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
               [_w("w", 4, 3, 3, 3)], [2, 4, 8, 8]),
    "conv1d": ([2, 3, 16], [helper.make_node("Conv", ["r", "w"], ["y"], name="conv", pads=[1, 1])],
               [_w("w", 4, 3, 3)], [2, 4, 16]),
    "depthwise": ([2, 4, 8, 8], [helper.make_node("Conv", ["r", "w"], ["y"], name="conv", group=4, pads=[1] * 4)],
                  [_w("w", 4, 1, 3, 3)], [2, 4, 8, 8]),
    "grouped": ([2, 4, 8, 8], [helper.make_node("Conv", ["r", "w"], ["y"], name="conv", group=2)],
                [_w("w", 6, 2, 3, 3)], [2, 6, 6, 6]),
    "maxpool": ([2, 3, 8, 8], [helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2],
                                                strides=[2, 2])], [], [2, 3, 4, 4]),
    "avgpool": ([2, 3, 8, 8], [helper.make_node("AveragePool", ["r"], ["y"], name="pool", kernel_shape=[3, 3])],
                [], [2, 3, 6, 6]),
    "maxpool1d": ([2, 3, 16], [helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2],
                                                strides=[2])], [], [2, 3, 8]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_batch_made_inside_the_model_runs_image_by_image(tmp_path, case):
    path = _save(tmp_path, case, *CASES[case])
    report = verify(path, samples=3)
    assert report["ok"], report["outputs"]
    c = compile_model(path)
    conv_or_pool = [r for r in c.library.layers if r["op"] in ("Conv2D", "MaxPool2D", "AvgPool2D")]
    assert conv_or_pool and all("for (int n = 0; n < 2; ++n)" in c.library.files[f"{c.library.prefix}.c"]
                                for _ in conv_or_pool)


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_a_batch_of_images_in_int8(tmp_path, kernels):
    """tinyc's quantizer on a batch-3 conv/depthwise/pool model: bit-exact with TFLite (the written .tflite keeps
    the batch), with the fast and the reference kernels; no layer is planned over its input."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w3"], ["y"], name="pw")]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n) for n, s in
             (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (8, 1, 3, 3)), ("w3", (4, 8, 1, 1)))]
    g = helper.make_graph(nodes, "batch3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "batch3.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    calib = random_calibration(load_model(str(path)))
    report = verify(str(path), quantize="int8", calib=calib, options=codegen_options(kernels=kernels))
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]


def test_ops_that_take_any_leading_dimension_still_compile(tmp_path):
    """Global average pooling (a mean over H, W) and a Relu on [2, 3, 8, 8] are right for any leading dimension."""
    nodes = [helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
             helper.make_node("Relu", ["p"], ["y"], name="relu")]
    path = _save(tmp_path, "gap", [2, 3, 8, 8], nodes, [], [2, 3, 1, 1])
    assert verify(path, samples=3)["ok"]


SHAPE_12 = numpy_helper.from_array(np.array([1, 12], np.int64), "shape")
AXES_0 = numpy_helper.from_array(np.array([0], np.int64), "axes")
RENAMES = {   # nodes, initializers, output shape: models that only rename their input
    "identity": ([helper.make_node("Identity", ["x"], ["y"], name="id")], [], [1, 3, 4]),
    "identity_flatten": ([helper.make_node("Identity", ["x"], ["t"], name="id"),
                          helper.make_node("Flatten", ["t"], ["y"], name="flat")], [], [1, 12]),
    "dropout_reshape": ([helper.make_node("Dropout", ["x"], ["t"], name="drop"),
                         helper.make_node("Reshape", ["t", "shape"], ["y"], name="reshape")], [SHAPE_12], [1, 12]),
    "squeeze": ([helper.make_node("Squeeze", ["x", "axes"], ["y"], name="squeeze")], [AXES_0], [3, 4]),
}


@pytest.mark.parametrize("case", sorted(RENAMES))
def test_a_model_without_a_compute_layer_compiles_cleanly(tmp_path, case):
    """Regression (issue 17): a model of renames only (Identity / Flatten / Reshape / Squeeze / Dropout) gave C
    that did not compile under the warning set (`unused parameter 'arena'`); it verifies now, and its C builds
    with -Werror for the host and the Cortex-M0+."""
    nodes, inits, out_shape = RENAMES[case]
    g = helper.make_graph(nodes, case, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    assert verify(str(path), samples=2)["ok"]
    lib = compile_model(str(path), "renames").library
    for name, text in lib.files.items():
        (tmp_path / name).write_text(text)
    flags = ["-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-c", str(tmp_path / "renames.c"), "-o"]
    subprocess.run(["gcc", *flags, str(tmp_path / "host.o")], check=True)
    assert shutil.which("arm-none-eabi-gcc"), "arm-none-eabi-gcc is not installed (make setup-system)"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-O2", *flags, str(tmp_path / "m0.o")],
                   check=True)


@pytest.mark.parametrize("out_shape", [[], [3]])
def test_verify_feeds_a_rank0_input_to_onnxruntime(tmp_path, out_shape):
    """Regression (issue 17): a scalar input's sample went to onnxruntime as a NumPy scalar, which it refuses
    ("Unable to handle object of type numpy.float32"); random samples and a stack from --input both verify."""
    if out_shape:
        inits = [numpy_helper.from_array(np.array([1.0, -2.0, 3.0], np.float32), "c")]
        nodes = [helper.make_node("Mul", ["x", "c"], ["y"], name="mul")]
    else:
        inits, nodes = [], [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "scalar", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    path = tmp_path / "scalar.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    assert verify(str(path), samples=3)["ok"]
    r = verify(str(path), inputs=[np.array([1.5, -2.0, 0.25], np.float32)])
    assert r["ok"] and r["samples"] == 3


def test_zero_size_tensors_are_constants(tmp_path):
    """A zero-size input (an input's 0 used to be called dynamic), and a Reshape with allowzero of one: the outputs
    are constant empty arrays, no layer computes (tests/test_zero_size.py has the rest)."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "zero_in",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 0, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 0, 4])])
    path = tmp_path / "zero_in.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    c = compile_model(str(path))
    assert not c.graph.nodes and c.graph.tensors[c.graph.outputs[0]].shape == (1, 0, 4)
    shape = numpy_helper.from_array(np.array([0, 3], np.int64), "shape")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=1)], "zero_inside",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [0, 3])], [shape])
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    c = compile_model(str(path))
    assert not c.graph.nodes and c.graph.tensors[c.graph.outputs[0]].shape == (0, 3)


def test_old_and_new_opsets_are_converted(tmp_path):
    """Opset 7 (as the pytorch-converted sets) is converted up with onnx's version converter and verified; an
    opset the installed onnx does not know is refused in one line."""
    w = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "old",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6]),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3])],  # IR 3: listed
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 6, 6])], [w])
    path = tmp_path / "old.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)], ir_version=3)
                     .SerializeToString())
    assert verify(str(path), samples=2)["ok"]
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 99)], ir_version=9)
                     .SerializeToString())
    with pytest.raises(TinycError, match=r"opset 99 is unknown to the installed onnx") as e:
        compile_model(str(path))
    assert "\n" not in str(e.value)


def test_an_output_the_compiler_knows_is_copied_from_a_constant(tmp_path):
    """Shape of a static input and a Constant as model outputs (ONNX backend cases test_shape*, test_constant):
    the run copies them from constant arrays; a model whose only output is constant has no inputs at all."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Relu", ["x"], ["y"])]
    g = helper.make_graph(nodes, "shape_out", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("shape", TensorProto.INT64, None)])
    path = tmp_path / "shape_out.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]
    value = numpy_helper.from_array(np.array([[1.5, -2.0]], np.float32), "value")
    g = helper.make_graph([helper.make_node("Constant", [], ["y"], value=value)], "const_out", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    report = verify(str(path), samples=1)
    assert report["ok"], report["outputs"]


@pytest.mark.parametrize("rank", [0, 1, 5, 6])
def test_elementwise_reduction_and_data_movement_at_any_rank(tmp_path, rank):
    """Ranks 0 to 6 (issue 17 §2): a broadcast Add, a Transpose, a ReduceSum over negative axes with keepdims, a
    Softmax on an inner axis and a Concat, against onnxruntime."""
    shape = [2, 3, 1, 2, 3, 2][:rank]
    perm = list(reversed(range(rank)))
    nodes = [helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"])]
    outs = [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)]
    if rank:
        nodes += [helper.make_node("Transpose", ["r"], ["t"], perm=perm),
                  helper.make_node("ReduceSum", ["t", "axes"], ["sum"], keepdims=1),
                  helper.make_node("Softmax", ["x"], ["sm"], axis=rank // 2),
                  helper.make_node("Concat", ["sm", "x"], ["cat"], axis=-1)]
        outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("sum", "cat")]
    b = numpy_helper.from_array(RNG.standard_normal(shape[1:]).astype(np.float32), "b")
    axes = numpy_helper.from_array(np.array([-1, 0][:min(rank, 2)], np.int64), "axes")
    g = helper.make_graph(nodes, f"rank{rank}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          outs, [b, axes])
    path = tmp_path / f"rank{rank}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]
