"""ONNX models of opsets above the directly-read range (MAX_OPSET): read as they are where every op means what it
meant at MAX_OPSET, apart from the types it takes, or is a newer version the rules implement (Cast / CastLike 24-25,
QuantizeLinear 25, Mod 28's fmod=0 on floats, SpaceToDepth 28's CRD mode); else converted down as before. The C
against onnx's reference evaluator (onnxruntime does not read opset 28)."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tinyc.compiler import compile_model
from tinyc.frontends.onnx_import import MAX_OPSET, _reads_newer_opset
from tinyc.verify import run_generated


def _model(ops, opset):
    nodes = [helper.make_node(op, ["x"], ["y"]) for op in ops]
    return helper.make_model(helper.make_graph(nodes, "g", [], []), opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("ops, opset, direct", [
    (["Cast", "CastLike", "QuantizeLinear", "DequantizeLinear"], 28, True),
    (["Mod", "SpaceToDepth", "DepthToSpace"], 28, True),
    (["Reshape", "Transpose", "Conv", "Relu", "Pad", "Flatten"], 25, True),   # only types added since 23
    (["Attention"], 24, False),                   # changed: converted (or refused by the converter)
    (["Relu", "Swish"], 24, False),               # an op newer than MAX_OPSET
])
def test_which_newer_opsets_are_read_directly(ops, opset, direct):
    assert opset > MAX_OPSET
    assert _reads_newer_opset(_model(ops, opset), opset) == direct


def _run(tmp_path, name, nodes, inputs, outputs, feeds, inits=()):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], list(inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 28)])
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    ours = run_generated(compile_model(str(path)), [f[None] for f in feeds])
    refs = ReferenceEvaluator(model).run(None, dict(zip([n for n, _, _ in inputs], feeds)))
    return [o[0] for o in ours], refs


def test_mod_28_on_floats_takes_the_divisors_sign(tmp_path):
    """Mod-28 fmod=0 on floats: the special cases of its definition, signed zeros included (a zero remainder has
    the divisor's sign); fmod=1 alongside."""
    x = np.array([0, -0.0, 0, -0.0, -3, 3, -1, 1, np.inf, -np.inf, 1, 1, np.nan, 2, -4.3, 7.2, 4.0, -4.0, -1e-30,
                  5.5], np.float32)
    y = np.array([-2, 2, 2, -2, np.inf, np.inf, -np.inf, -np.inf, 2, 2, 0, -0.0, 2, np.nan, 2.1, -3.4, -2.0, 2.0,
                  1.0, -0.5], np.float32)
    vi = [("x", TensorProto.FLOAT, [x.size]), ("y", TensorProto.FLOAT, [x.size])]
    nodes = [helper.make_node("Mod", ["x", "y"], ["z0"], fmod=0), helper.make_node("Mod", ["x", "y"], ["z1"], fmod=1)]
    ours, refs = _run(tmp_path, "mod28", nodes, vi, [("z0", TensorProto.FLOAT, [x.size]),
                                                    ("z1", TensorProto.FLOAT, [x.size])], [x, y])
    for mine, ref in zip(ours, refs):
        np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.signbit(ours[0]), np.signbit(refs[0]))
    assert list(np.signbit(ours[0][:4])) == [True, False, False, True]


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_28_modes(tmp_path, mode):
    """SpaceToDepth-28's mode on a plain NCHW value and on a convolution's (stored NHWC) output."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((3, 2, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["a"], blocksize=2, mode=mode),
             helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("SpaceToDepth", ["c"], ["b"], blocksize=2, mode=mode)]
    x = rng.standard_normal((1, 2, 4, 6)).astype(np.float32)
    ours, refs = _run(tmp_path, f"s2d_{mode}", nodes, [("x", TensorProto.FLOAT, [1, 2, 4, 6])],
                      [("a", TensorProto.FLOAT, [1, 8, 2, 3]), ("b", TensorProto.FLOAT, [1, 12, 2, 3])], [x], [w])
    for mine, ref in zip(ours, refs):
        np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-5)
