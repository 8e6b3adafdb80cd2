"""Un-quantized integer and bool tensors (issue 17 §2): ONNX models whose inputs and outputs are int8..int64,
uint8..uint64 or bool compile, their values move exactly through the ops whose kernels take them
(OpDef.plain_dtypes), and an op whose kernel computes in float only refuses them in one line."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyc.codegen.literals import c_int_literal
from tinyc.compiler import compile_model
from tinyc.errors import TinycError
from tinyc.verify import run_generated, verify

TYPES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16,
         "uint16": TensorProto.UINT16, "int32": TensorProto.INT32, "uint32": TensorProto.UINT32,
         "int64": TensorProto.INT64, "uint64": TensorProto.UINT64, "bool": TensorProto.BOOL}


def _save(tmp_path, name, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    return str(path)


@pytest.mark.parametrize("dtype", sorted(TYPES))
def test_integer_values_move_exactly(tmp_path, dtype):
    """Transpose, a Concat with a constant of extreme values, Reshape: verified against onnxruntime, and the
    extremes come back bit for bit."""
    info = np.iinfo(dtype) if dtype != "bool" else None
    extremes = np.array([[info.min, info.max, 0]] if info else [[True, False, True]], dtype=dtype)
    t = TYPES[dtype]
    nodes = [helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0]),
             helper.make_node("Reshape", ["t", "shape"], ["r"]),
             helper.make_node("Concat", ["r", "extremes"], ["y"], axis=0)]
    path = _save(tmp_path, f"move_{dtype}", nodes, [helper.make_tensor_value_info("a", t, [3, 2])],
                 [helper.make_tensor_value_info("y", t, None)],
                 [numpy_helper.from_array(np.array([2, 3], np.int64), "shape"),
                  numpy_helper.from_array(extremes, "extremes")])
    report = verify(path, samples=3)
    assert report["ok"], report["outputs"]
    a = (np.arange(6).reshape(1, 3, 2) % 2).astype(dtype)
    (y,) = run_generated(compile_model(path), [a])
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y[0], np.concatenate([a[0].T.reshape(2, 3), extremes]))


def test_a_float_only_kernel_refuses_integers_in_one_line(tmp_path):
    path = _save(tmp_path, "int_matmul", [helper.make_node("MatMul", ["a", "a"], ["y"], name="matmul")],
                 [helper.make_tensor_value_info("a", TensorProto.INT32, [3, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
    with pytest.raises(TinycError, match=r"node 'matmul' \(MatMul\) computes on int32 tensors; tinyc's MatMul kernel "
                                         r"takes float32") as e:
        compile_model(path)
    assert "\n" not in str(e.value)


def test_unsupported_input_types_are_refused_in_one_line(tmp_path):
    path = _save(tmp_path, "half", [helper.make_node("Identity", ["a"], ["y"])],
                 [helper.make_tensor_value_info("a", TensorProto.FLOAT16, [2])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
    with pytest.raises(TinycError, match=r"input 'a' is float16; tinyc's runtime tensors are float32, integers"):
        compile_model(path)


def test_integer_literals_keep_their_value():
    assert c_int_literal(-(1 << 31)) == "(-2147483647 - 1)"
    assert c_int_literal(-(1 << 63)) == "(-9223372036854775807LL - 1)"
    assert c_int_literal((1 << 64) - 1) == "18446744073709551615ULL"
    assert c_int_literal(1 << 40) == "1099511627776LL"
    assert c_int_literal(-7) == "-7"


def test_64_bit_tensors_are_8_byte_aligned(tmp_path):
    """int64 values between tensors of odd byte sizes: every 64-bit tensor sits at a multiple of 8 in an arena
    aligned to 8 (AAPCS and C require it; UBSan checks it in verify), and nothing is written over them in
    place at a 4-byte lead."""
    nodes = [helper.make_node("Cast", ["small"], ["wide"], to=TensorProto.INT64),
             helper.make_node("Transpose", ["wide"], ["wide_t"], perm=[1, 0]),
             helper.make_node("Cast", ["wide_t"], ["back"], to=TensorProto.UINT8),
             helper.make_node("Concat", ["back", "back"], ["twice"], axis=0),
             helper.make_node("Cast", ["twice"], ["y"], to=TensorProto.INT64)]
    path = _save(tmp_path, "wide", nodes, [helper.make_tensor_value_info("small", TensorProto.UINT8, [3, 1])],
                 [helper.make_tensor_value_info("y", TensorProto.INT64, None),
                  helper.make_tensor_value_info("back", TensorProto.UINT8, None)])
    report = verify(path, samples=2)
    assert report["ok"], report["outputs"]
    c = compile_model(path)
    g = c.plan.graph
    wide = [n for n, t in g.tensors.items() if not t.is_const and t.dtype == "int64"]
    assert len(wide) >= 3 and all(c.plan.offset_of(n) % 8 == 0 for n in wide)
    assert f"union {{ uint64_t align; unsigned char bytes[{c.plan.arena_bytes}]; }}" in c.library.files["wide.c"]
    assert "#define WIDE_ARENA_ALIGN 8" in c.library.files["wide.h"]
