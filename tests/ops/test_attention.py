"""Matrix products of computed tensors and attention (issue 18): MatMul with transposed operands, in float32 and
int8 (TFLite's reference BATCH_MATMUL, docs/int8-numerics.md 4.34), the C (ASan + UBSan) against the interpreter
and the integer formula, reference and fast kernels byte for byte; TFLite BATCH_MATMUL in float32 against TFLite.
(The converter's int8 attention block is tests/int8_zoo.py's attention_block, checked by tests/test_int8_tflite.py.)"""
import importlib.util
import os

import numpy as np
import pytest

from c_runner import run_c
from tinyc.compiler import codegen_options, compile_graph
from tinyc.interp import run as interp_run
from tinyc.ir import Graph, Quant
from tinyc.quant.fixed_point import multiply_by_quantized_multiplier as mbqm
from tinyc.quant.params import multiplier
from tinyc.verify import run_generated, verify

RNG = np.random.default_rng(18)
HAS_TF = importlib.util.find_spec("tensorflow") is not None
FULL = bool(os.environ.get("TINYC_FULL"))


def sample(cases: list, keep) -> list:
    """Every case with TINYC_FULL (make test-full), else those at the indices `keep` (the file stays fast)."""
    return cases if FULL else [c for i, c in enumerate(cases) if i in keep]


def _stored(shape, transposed):
    return tuple(shape[:-2]) + (shape[-1], shape[-2]) if transposed else tuple(shape)


def _matmul_graph(a, b, ta, tb, dtype="float32", quant=None):
    """IR MatMul of logical operands a[..., M, K] @ b[..., K, N], stored transposed where asked."""
    g = Graph("mm")
    out = tuple(np.broadcast_shapes(a[:-2], b[:-2])) + (a[-2], b[-1])
    for name, shape in (("a", _stored(a, ta)), ("b", _stored(b, tb)), ("y", out)):
        g.add_tensor(name, shape, dtype, quant=None if quant is None else quant[name])
    g.add_node("MatMul", ["a", "b"], ["y"], name="mm", transpose_a=ta, transpose_b=tb)
    g.inputs, g.outputs = ["a", "b"], ["y"]
    g.validate()
    return g


CASES = [((3, 4), (4, 5), False, True), ((2, 1, 3, 4), (5, 4, 2), True, False), ((4, 3), (2, 3, 1), True, True),
         ((1, 2, 6, 4), (1, 2, 4, 6), False, True), ((2, 5, 8), (2, 8, 3), False, False)]


@pytest.mark.parametrize("a,b,ta,tb", CASES)
def test_transposed_matmul_matches_the_interpreter(tmp_path, a, b, ta, tb):
    g = _matmul_graph(a, b, ta, tb)
    xa = RNG.standard_normal(_stored(a, ta)).astype(np.float32)
    xb = RNG.standard_normal(_stored(b, tb)).astype(np.float32)
    (y,) = run_c(g, [xa, xb], tmp_path)
    ref = np.matmul(np.swapaxes(xa, -1, -2) if ta else xa, np.swapaxes(xb, -1, -2) if tb else xb)
    np.testing.assert_allclose(interp_run(g, [xa, xb])["y"], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def _q(scale, zp):
    return Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))


def int8_reference(xa, xb, ta, tb, qa, qb, qo):
    """TFLite's BATCH_MATMUL in integers (docs/int8-numerics.md 4.34)."""
    a = (np.swapaxes(xa, -1, -2) if ta else xa).astype(np.int64) - int(qa.zero_point)
    b = (np.swapaxes(xb, -1, -2) if tb else xb).astype(np.int64) - int(qb.zero_point)
    acc = np.matmul(a, b)
    real = float(np.float32(qa.scale) * np.float32(qb.scale)) / float(np.float32(qo.scale))
    m, s = multiplier(real)
    out = np.vectorize(lambda v: mbqm(int(v), m, s))(acc) + int(qo.zero_point)
    return np.clip(out, -128, 127).astype(np.int8)


# (a, b, y) parameters: ordinary ones, and extreme zero points with an output scale so fine that the multiplier
# exceeds 1 (TFLite's left shift; most outputs saturate)
QUANTS = [((0.05, 3), (0.11, -7), (0.09, -5)), ((0.02, -128), (0.5, 127), (0.0004, 100))]


@pytest.mark.parametrize("a,b,ta,tb,qs", sample([c + (q,) for c in CASES + [((1, 3, 41), (1, 41, 5), False, True)]
                                                  for q in QUANTS], keep={0, 3, 4, 7, 11}))
def test_int8_matmul_is_tflites_formula_in_both_kernel_sets(tmp_path, a, b, ta, tb, qs):
    quant = dict(a=_q(*qs[0]), b=_q(*qs[1]), y=_q(qs[2][0] * max(a[-1], 1) ** 0.5, qs[2][1]))
    g = _matmul_graph(a, b, ta, tb, "int8", quant)
    xa = RNG.integers(-128, 128, _stored(a, ta), dtype=np.int8)
    xb = RNG.integers(-128, 128, _stored(b, tb), dtype=np.int8)
    want = int8_reference(xa, xb, ta, tb, quant["a"], quant["b"], quant["y"])
    (y,) = run_c(g, [xa, xb], tmp_path, options=codegen_options(kernels="reference"))
    np.testing.assert_array_equal(y, want)
    for level in ("full", "small"):     # right rows sign-extended once, or per block (less kernel scratch)
        g.nodes[0].attrs["kernel_scratch"] = level
        fast = compile_graph(g, "mm", options=codegen_options(kernels="fast"))
        assert [row["kernel"] for row in fast.library.layers] == ["int8_fast/matmul"]
        for dsp in (False, True):       # the plain path and the DSP path (its intrinsics' C twins), byte for byte
            got = run_generated(fast, [xa, xb], dsp=dsp)[0]
            np.testing.assert_array_equal(got.reshape(want.shape), want, err_msg=f"dsp={dsp} scratch={level}")


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
def test_tflite_float_batch_matmul_adjoints_and_broadcast(tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 5, 3), tf.float32), tf.TensorSpec((1, 2, 4, 5), tf.float32)])
    def f(a, b):
        s = tf.matmul(a, b, transpose_a=True, transpose_b=True)          # [1, 2, 3, 4], a broadcast
        return tf.matmul(tf.nn.relu(s), tf.transpose(s, (0, 1, 3, 2)))  # [1, 2, 3, 3]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    path = tmp_path / "bmm.tflite"
    path.write_bytes(conv.convert())
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]


def _onnx_model(tmp_path, nodes, inputs, name="m", opset=17):
    from onnx import TensorProto, helper
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
                     .SerializeToString())
    return str(path)


EINSUMS = [
    ("bij,bjk->bik", [(1, 3, 4), (1, 4, 5)], None), ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)], None),
    ("bhqk,bhkd->bhqd", [(1, 2, 3, 5), (1, 2, 5, 4)], None), ("bqhd,bkhd->bhqk", [(1, 3, 2, 4), (1, 5, 2, 4)], None),
    ("bij,bkj->bik", [(1, 3, 4), (1, 4, 5)], (0, 2, 1)), ("bji,bjk->bik", [(1, 3, 4), (1, 3, 5)], None),
    ("i,i->", [(4,), (4,)], None), ("ij,jk", [(3, 4), (4, 2)], None),
    ("...ij,...jk->...ik", [(1, 2, 3, 4), (1, 1, 4, 5)], None), ("abc,cd->abd", [(1, 3, 4), (4, 5)], None),
    ("ij,kl->ijkl", [(2, 3), (4, 5)], None), ("bij,bjk->bi", [(1, 3, 4), (1, 4, 5)], None),
    # the equations of ONNX's Einsum node tests (double there, out of the suite's scope), in float32
    ("ij->ji", [(3, 4)], None), ("ij->i", [(3, 4)], None), ("i,i", [(5,), (5,)], None),
    ("bij, bjk -> bik", [(5, 2, 3), (5, 3, 4)], None), ("->", [()], None)]


@pytest.mark.parametrize("eq,shapes,perm", sample(EINSUMS, keep={1, 3, 4, 8, 10, 13, 14, 15, 16}))
def test_onnx_einsum_against_onnxruntime(tmp_path, eq, shapes, perm):
    """Operands computed (a Relu each), the second one transposed first where `perm` says (a relabel the
    product reads in place)."""
    from onnx import helper
    nodes, names = [], []
    for i in range(len(shapes)):
        nodes.append(helper.make_node("Relu", [f"x{i}"], [f"r{i}"]))
        names.append(f"r{i}")
    if perm:
        nodes.append(helper.make_node("Transpose", [names[-1]], ["t"], perm=list(perm)))
        names[-1] = "t"
    nodes.append(helper.make_node("Einsum", names, ["y"], equation=eq))
    report = verify(_onnx_model(tmp_path, nodes, [(f"x{i}", s) for i, s in enumerate(shapes)]), samples=2)
    assert report["ok"], report["outputs"]


@pytest.mark.parametrize("eq,shapes", [("ii->i", [(3, 3)]), ("...ii ->...i", [(3, 5, 5)]),
                                       ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)])])
def test_onnx_einsum_outside_the_supported_forms_is_refused_in_one_line(tmp_path, eq, shapes):
    from onnx import helper
    from tinyc.errors import TinycError
    from tinyc.frontends import load_model
    path = _onnx_model(tmp_path, [helper.make_node("Einsum", [f"x{i}" for i in range(len(shapes))], ["y"],
                                                   equation=eq, name="ein")],
                       [(f"x{i}", s) for i, s in enumerate(shapes)])
    with pytest.raises(TinycError, match="Einsum 'ein': equation") as e:
        load_model(path)
    assert "\n" not in str(e.value)


GEMMS = [dict(), dict(transA=1), dict(transB=1), dict(transA=1, transB=1, alpha=0.5, beta=2.0)]


@pytest.mark.parametrize("attrs,c_shape,c_computed", sample(
    [(a,) + c for a in GEMMS for c in [(None, False), ((), False), ((5,), False), ((3, 1), False), ((3, 5), True),
                                       ((1, 5), True)]], keep={0, 8, 13, 19, 22, 23}))
def test_onnx_gemm_of_computed_operands(tmp_path, attrs, c_shape, c_computed):
    """Gemm whose B (and C) are computed: A [3, 4] @ B [4, 5] stored transposed where transA / transB say."""
    from onnx import helper, numpy_helper
    a_shape = (4, 3) if attrs.get("transA") else (3, 4)
    b_shape = (5, 4) if attrs.get("transB") else (4, 5)
    inputs = [("a", a_shape), ("b", b_shape)]
    nodes = [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Tanh", ["b"], ["rb"])]
    ins = ["ra", "rb"]
    inits = []
    if c_shape is not None and c_computed:
        inputs.append(("c", c_shape))
        nodes.append(helper.make_node("Neg", ["c"], ["rc"]))
        ins.append("rc")
    elif c_shape is not None:
        inits.append(numpy_helper.from_array(RNG.standard_normal(c_shape).astype(np.float32), "c"))
        ins.append("c")
    nodes.append(helper.make_node("Gemm", ins, ["y"], **attrs))
    path = _onnx_model(tmp_path, nodes, inputs)
    if inits:
        import onnx
        m = onnx.load(path)
        m.graph.initializer.extend(inits)
        onnx.save(m, path)
    report = verify(path, samples=2)
    assert report["ok"], report["outputs"]


# -- Keras Dot and MultiHeadAttention against Keras -----------------------------------------------------------
def _keras_model(tmp_path, name, build):
    import model_zoo
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    keras.utils.set_random_seed(0)
    path = tmp_path / f"{name}.keras"
    model_zoo.randomize(build(keras, keras.layers), 0).save(path)
    return str(path)


def _dots(keras, L):
    a, b = keras.Input((3, 4)), keras.Input((5, 4))
    s = L.Dot(axes=(2, 2))([a, b])                                         # [3, 5]: b read transposed
    return keras.Model([a, b], [L.Dot(axes=(1, 1))([s, L.Dense(5)(a)]),    # a read transposed
                                L.Dot(axes=(2, 1))([a, L.Dense(4)(L.Flatten()(b))]),     # 3-D . 2-D
                                L.Dot(axes=1)([L.Flatten()(a), L.Dense(12)(L.Flatten()(b))]),
                                L.Dot(axes=(1, 1))([L.Dense(3)(L.Flatten()(b)), a])])    # 2-D . 3-D


def _mha(keras, L):
    """Cross-attention (value_dim != key_dim), then self-attention with its own output size and no biases."""
    x, c = keras.Input((5, 8)), keras.Input((7, 6))
    y = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=4)(x, c)
    z = L.MultiHeadAttention(num_heads=2, key_dim=4, output_shape=6, use_bias=False)(y, y, y)
    return keras.Model([x, c], [L.Add()([x, y]), z])


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("build", [_dots, _mha])
def test_keras_dot_and_multi_head_attention_against_keras(tmp_path, build):
    report = verify(_keras_model(tmp_path, build.__name__, build), samples=2)
    assert report["ok"], report["outputs"]


def _cosine(keras, L):
    a, b = keras.Input((4,)), keras.Input((4,))
    return keras.Model([a, b], L.Dot(axes=1, normalize=True)([a, b]))


def _causal(keras, L):
    x = keras.Input((5, 8))
    return keras.Model(x, L.MultiHeadAttention(num_heads=2, key_dim=4)(x, x, use_causal_mask=True))


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
@pytest.mark.parametrize("build,match", [(_cosine, "normalize=True"), (_causal, "use_causal_mask")])
def test_keras_attention_forms_tinyc_does_not_compile_are_refused(tmp_path, build, match):
    from tinyc.errors import TinycError
    from tinyc.frontends import load_model
    with pytest.raises(TinycError, match=match) as e:
        load_model(_keras_model(tmp_path, build.__name__, build))
    assert "\n" not in str(e.value)


# -- PyTorch nn.MultiheadAttention exported to ONNX, against onnxruntime ------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
@pytest.mark.parametrize("dynamo", sample([False, True], keep={0}))
def test_pytorch_multihead_attention_export(tmp_path, dynamo):
    """Self-attention in a residual block (TorchScript exporter: MatMul, Transpose, Reshape, Softmax, Div) and
    cross-attention with other key and value sizes (torch.export-based exporter: Split, Mul, Gemm)."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.self_att = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.cross_att = torch.nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=5)
            self.head = torch.nn.Linear(8, 4)

        def forward(self, x, k, v):
            y = torch.relu(self.self_att(x, x, x, need_weights=False)[0] + x)
            return self.head(self.cross_att(y, k, v, need_weights=False)[0])

    torch.manual_seed(0)
    path = tmp_path / "mha.onnx"
    args = (torch.randn(1, 4, 8), torch.randn(1, 7, 6), torch.randn(1, 7, 5))
    if dynamo and importlib.util.find_spec("onnxscript") is None:
        pytest.skip("the torch.export-based exporter needs onnxscript")
    torch.onnx.export(Block().eval(), args, str(path), opset_version=18, dynamo=dynamo)
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]
