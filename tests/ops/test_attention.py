"""Matrix products of computed tensors and attention (issue 18): MatMul with transposed operands, in float32 and
int8 (TFLite's reference BATCH_MATMUL, docs/int8-numerics.md 4.34), the C (ASan + UBSan) against the interpreter
and the integer formula, reference and fast kernels byte for byte; TFLite BATCH_MATMUL in float32 against TFLite.
(The converter's int8 attention block is tests/int8_zoo.py's attention_block, checked by tests/test_int8_tflite.py.)"""
import importlib.util

import numpy as np
import pytest

from c_runner import run_c
from tinyc.compiler import codegen_options
from tinyc.interp import run as interp_run
from tinyc.ir import Graph, Quant
from tinyc.quant.fixed_point import multiply_by_quantized_multiplier as mbqm
from tinyc.quant.params import multiplier
from tinyc.verify import verify

RNG = np.random.default_rng(18)
HAS_TF = importlib.util.find_spec("tensorflow") is not None


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


@pytest.mark.parametrize("a,b,ta,tb", CASES)
def test_int8_matmul_is_tflites_formula_in_both_kernel_sets(tmp_path, a, b, ta, tb):
    quant = dict(a=_q(0.05, 3), b=_q(0.11, -7), y=_q(0.09 * max(a[-1], 1) ** 0.5, -5))
    g = _matmul_graph(a, b, ta, tb, "int8", quant)
    xa = RNG.integers(-128, 128, _stored(a, ta), dtype=np.int8)
    xb = RNG.integers(-128, 128, _stored(b, tb), dtype=np.int8)
    want = int8_reference(xa, xb, ta, tb, quant["a"], quant["b"], quant["y"])
    for kernels in ("reference", "fast"):
        (y,) = run_c(g, [xa, xb], tmp_path / kernels, options=codegen_options(kernels=kernels))
        np.testing.assert_array_equal(y, want)


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
