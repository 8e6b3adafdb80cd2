"""Edges of model shapes (issue 17's regressions).

Conv and pooling kernels compute one image: a batch made inside the model (a Reshape to a leading dimension
above 1, past the frontends' batch-1 check on inputs) is refused in one line, never computed as one image.

Regression (issue 17): Conv / AveragePool / MaxPool, 1-D, 2-D, depthwise and grouped, gave max errors of 1.7-5.9
against onnxruntime when a Reshape put a batch of 2 in front of them. Ops that are correct for any leading
dimension (global pooling as a mean, elementwise, Dense rows) still compile. Also a model with no compute layer
at all, and rank-0 (scalar) inputs.
"""
import shutil
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyc.compiler import compile_model
from tinyc.errors import TinycError
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
def test_a_batch_made_inside_the_model_is_refused_in_one_line(tmp_path, case):
    path = _save(tmp_path, case, *CASES[case])
    with pytest.raises(TinycError, match=r"holds a batch of 2 images .*export the model with batch 1") as e:
        compile_model(path)
    assert "\n" not in str(e.value)


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
