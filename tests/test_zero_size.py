"""Zero-size tensors (a dimension of 0) in ONNX models: they hold no values, so they are constants (empty arrays).
A zero-size model input stays in the C API (never read); a node reading one with constant other inputs is evaluated
at compile time (a reduction over an empty set gives its identity: 0, 1, -inf, ...); a node whose outputs are
zero-size makes no kernel; a zero-size output is written as nothing. Checked against onnxruntime with the C built
under the sanitizers (`tinyc.verify`)."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyc.boards import load_board
from tinyc.compiler import compile_model
from tinyc.errors import TinycError
from tinyc.firmware.project import firmware_files
from tinyc.verify import verify

F = TensorProto.FLOAT
REDUCTIONS = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
              "ReduceMax", "ReduceMin", "ReduceProd")


def _save(tmp_path, name, nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], list(inits))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
                     .SerializeToString())
    return str(path)


def _verified(path, **kw):
    report = verify(path, samples=2, **kw)
    assert report["ok"], report
    return report


def test_every_reduction_of_an_empty_input_is_its_identity(tmp_path):
    """Each ReduceX of a [2, 0, 3] model input over axis 1, keepdims 0 and 1: constant outputs (0, 1, -inf, +inf)
    beside an output computed from another input; the empty input is never read."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("Relu", ["x"], ["relu"])]
    outputs = [("relu", F, [2, 3])]
    for op in REDUCTIONS:
        for keep in (0, 1):
            nodes.append(helper.make_node(op, ["e", "axes"], [f"{op}_{keep}"], keepdims=keep))
            outputs.append((f"{op}_{keep}", F, [2, 1, 3] if keep else [2, 3]))
    path = _save(tmp_path, "reductions", nodes, [("x", F, [2, 3]), ("e", F, [2, 0, 3])], outputs, [axes])
    _verified(path)
    c = compile_model(path)
    text = c.library.files["reductions.c"]
    assert "-INFINITY" in text and "(void)input1;" in text
    assert [n.op for n in c.graph.nodes if n.op not in ("Reshape",)] == ["Activation"]


def test_integer_reductions_of_an_empty_input_give_the_type_extremes(tmp_path):
    axes = numpy_helper.from_array(np.array([0, 2], np.int64), "axes")
    nodes = [helper.make_node(op, ["e", "axes"], [op], keepdims=0) for op in ("ReduceMax", "ReduceMin", "ReduceSum")]
    path = _save(tmp_path, "int_reductions", nodes, [("e", TensorProto.INT32, [0, 2, 0])],
                 [(op, TensorProto.INT32, [2]) for op in ("ReduceMax", "ReduceMin", "ReduceSum")], [axes])
    _verified(path)


def test_empty_slice_and_split_parts_beside_normal_ones(tmp_path):
    """A Slice starting past the end and a Split part of size 0 of a runtime input: constant empty outputs, no
    kernel; the other parts are computed as usual."""
    i64 = np.int64
    inits = [numpy_helper.from_array(np.array(v, i64), n) for n, v in
             (("starts", [10]), ("ends", [20]), ("axes", [1]), ("split", [2, 0, 3]), ("s2", [1]), ("e2", [4]))]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["past_end"]),
             helper.make_node("Slice", ["x", "s2", "e2", "axes"], ["middle"]),
             helper.make_node("Split", ["x", "split"], ["a", "b", "c"], axis=1)]
    path = _save(tmp_path, "slices", nodes, [("x", F, [3, 5])],
                 [("past_end", F, [3, 0]), ("middle", F, [3, 3]), ("a", F, [3, 2]), ("b", F, [3, 0]),
                  ("c", F, [3, 3])], inits)
    _verified(path)
    c = compile_model(path)
    assert [c.graph.tensors[o].shape for o in c.graph.outputs] == [(3, 0), (3, 3), (3, 2), (3, 0), (3, 3)]
    text = c.library.files["slices.c"]
    assert "(void)output0;" in text and "(void)output3;" in text


def test_an_empty_input_concatenated_with_a_tensor_is_that_tensor(tmp_path):
    nodes = [helper.make_node("Concat", ["e", "x"], ["cat"], axis=1), helper.make_node("Relu", ["cat"], ["y"]),
             helper.make_node("Concat", ["x", "e", "x"], ["twice"], axis=1)]
    path = _save(tmp_path, "concat", nodes, [("e", F, [2, 0]), ("x", F, [2, 3])],
                 [("y", F, [2, 3]), ("twice", F, [2, 6])])
    _verified(path)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    _verified(path, inputs=[np.zeros((2, 0), np.float32), x])     # the caller's arrays: one sample
    c = compile_model(path)
    assert sorted(n.op for n in c.graph.nodes) == ["Activation", "Concat"]


def test_only_zero_size_tensors_make_an_arena_of_one_byte(tmp_path):
    """Every tensor zero-size (as ONNX's split_zero_size_splits case): no layer, no zero-length C array."""
    split = numpy_helper.from_array(np.array([0, 0], np.int64), "split")
    path = _save(tmp_path, "nothing", [helper.make_node("Split", ["e", "split"], ["a", "b"])],
                 [("e", F, [0])], [("a", F, [0]), ("b", F, [0])], [split])
    _verified(path)
    c = compile_model(path)
    assert c.library.arena_bytes == 1 and not c.graph.nodes
    assert "bytes[1]" in c.library.files["nothing.c"] and "_copy" not in c.library.files["nothing.c"]


def test_zero_size_input_in_nhwc_io_layout_has_its_nhwc_shape(tmp_path):
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    path = _save(tmp_path, "nhwc", [helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1)],
                 [("e", F, [1, 3, 0, 4])], [("s", F, [1, 3, 1, 1])], [axes])
    c = compile_model(path, io_layout="nhwc")
    assert c.graph.tensors[c.graph.inputs[0]].shape == (1, 0, 4, 3)
    assert c.graph.tensors[c.graph.outputs[0]].shape == (1, 1, 1, 3)
    assert "#define NHWC_INPUT0_SHAPE { 1, 0, 4, 3 }" in c.library.files["nhwc.h"]


def test_what_is_not_covered_is_refused_in_one_line(tmp_path):
    """ReduceMean over an empty set (undefined in ONNX: onnxruntime says 0, onnx's reference NaN), a runtime lookup
    in an empty table, naming the node; --quantize int8 and the firmware image of a model with a zero-size input."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    mean = _save(tmp_path, "mean", [helper.make_node("ReduceMean", ["e", "axes"], ["m"], name="avg")],
                 [("e", F, [2, 0])], [("m", F, [2, 1])], [axes])
    table = numpy_helper.from_array(np.zeros((0, 3), np.float32), "table")
    lookup = _save(tmp_path, "lookup", [helper.make_node("Gather", ["table", "i"], ["y"], name="lookup")],
                   [("i", TensorProto.INT64, [2])], [("y", F, [2, 3])], [table])
    for path, match in ((mean, r"ReduceMean 'avg' reduces an empty set"), (lookup, r"'lookup'.*zero-size")):
        with pytest.raises(TinycError, match=match) as e:
            compile_model(path)
        assert "\n" not in str(e.value)
    split = numpy_helper.from_array(np.array([1, 0], np.int64), "split")
    path = _save(tmp_path, "part", [helper.make_node("Split", ["x", "split"], ["a", "b"])],
                 [("x", F, [1])], [("a", F, [1]), ("b", F, [0])], [split])
    with pytest.raises(TinycError, match=r"--quantize int8: 'b' of .* is zero-size") as e:
        compile_model(path, quantize="int8", calib=[np.ones((4, 1), np.float32)])
    assert "\n" not in str(e.value)
    with pytest.raises(TinycError, match=r"'b' is zero-size; the firmware image") as e:
        firmware_files(compile_model(path), load_board("pico"), [np.ones(1, np.float32)])
    assert "\n" not in str(e.value)


def test_tflite_and_keras_inputs_of_zero_size_are_refused_as_such():
    from tinyc.frontends.keras_import import _static_shape
    from tinyc.frontends.tflite_import import _input_shape
    for check, shape in ((_input_shape, (1, 0, 3)), (_static_shape, (None, 0, 3))):
        with pytest.raises(TinycError, match=r"input 'x' has a zero-size dimension .* in ONNX models only"):
            check("x", shape, None)
