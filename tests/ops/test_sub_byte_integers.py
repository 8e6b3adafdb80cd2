"""The 4- and 2-bit integers (ONNX INT4, UINT4, INT2, UINT2; one value per byte in the C): Cast to and from them and
LinearQuantize / LinearDequantize into and out of them. The C (ASan + UBSan) against the numpy definition, the
definition against onnx's reference implementation (ml_dtypes' conversions), and ONNX models against onnxruntime
where it computes these types as ONNX defines them (QuantizeLinear, DequantizeLinear, casts from them), else
against onnx's reference evaluator (onnxruntime's Cast from float to them rounds and wraps; ONNX's reference
truncates and gives 0 out of range)."""
import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from c_runner import run_c
from tinyc.compiler import compile_model
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.verify import run_generated, verify

SUB_BYTE = ("int4", "uint4", "int2", "uint2")
ONNX = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4, "int2": TensorProto.INT2, "uint2": TensorProto.UINT2,
        "float32": TensorProto.FLOAT, "int8": TensorProto.INT8, "uint8": TensorProto.UINT8}
RANGE = {"int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1), "uint2": (0, 3)}
OTHER = ("float32", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool")
FLOATS = np.array([np.nan, np.inf, -np.inf, 1e10, -1e10, 17.0, 16.0, 15.99, 15.0, 8.5, 8.0, 7.99, 7.5, 3.0, 2.5,
                   2.0, 1.99, 1.5, 1.0, 0.7, 0.5, 0.0, -0.0, -0.5, -0.99, -1.0, -1.5, -2.0, -2.5, -2.99, -3.0,
                   -7.5, -8.0, -8.5, -8.99, -9.0, -16.5], np.float32)


def _cast_graph(src: str, n: int, targets) -> Graph:
    g = Graph("cast_sub_byte")
    g.add_tensor("x", (n,), src)
    for dst in targets:
        g.add_tensor(f"y_{dst}", (n,), dst)
        g.add_node("Cast", ["x"], [f"y_{dst}"], to=dst)
    g.inputs, g.outputs = ["x"], [f"y_{dst}" for dst in targets]
    g.validate()
    return g


def _as_ints(a) -> list:
    return np.asarray(a).astype(np.int64).tolist()


def test_float_to_sub_byte_truncates_and_gives_zero_out_of_range(tmp_path):
    """onnx's reference (ml_dtypes): toward zero, and 0 for NaN, infinities and values whose truncation does not
    fit (no saturation): int4 -8.99 -> -8, 7.99 -> 7, 8 -> 0, -9 -> 0."""
    g = _cast_graph("float32", FLOATS.size, SUB_BYTE)
    want = interp_run(g, [FLOATS])
    for dst, y in zip(SUB_BYTE, run_c(g, [FLOATS], tmp_path)):
        assert y.dtype == np.dtype(dst)
        assert _as_ints(y) == _as_ints(want[f"y_{dst}"]), dst
        with np.errstate(invalid="ignore"):
            reference = FLOATS.astype(getattr(ml_dtypes, dst))
        assert _as_ints(y) == _as_ints(reference), dst
    assert _as_ints(want["y_int4"][[7, 9, 10, 11, 23, 32, 33, 34, 35]]) == [0, 0, 0, 7, 0, -8, -8, -8, 0]


@pytest.mark.parametrize("src", ["int8", "uint8", "int32", "int64", "uint64", "bool"])
def test_integers_to_sub_byte_keep_the_low_bits(tmp_path, src):
    """ONNX: an integer out of range keeps its low bits, two's complement for the signed types (as ml_dtypes)."""
    if src == "bool":
        x = np.array([True, False, True])
    else:
        info = np.iinfo(src)
        x = np.array([0, 1, 2, 3, 7, 8, 9, 15, 16, 100, info.max, info.min, info.max - 5, info.min + 9], src)
        if info.min < 0:
            x = np.concatenate([x, np.array([-1, -2, -3, -8, -9, -100], src)])
    g = _cast_graph(src, x.size, SUB_BYTE)
    for dst, y in zip(SUB_BYTE, run_c(g, [x], tmp_path)):
        lo, hi = RANGE[dst]
        wrapped = (x.astype(np.int64) - lo) % (hi - lo + 1) + lo
        assert _as_ints(y) == wrapped.tolist(), (src, dst)
        assert _as_ints(y) == _as_ints(x.astype(getattr(ml_dtypes, dst))), (src, dst)


@pytest.mark.parametrize("src", SUB_BYTE)
def test_sub_byte_to_every_type(tmp_path, src):
    """Every value of a 4- or 2-bit type to every type: widening is exact, into the other sub-byte types and the
    unsigned ones it wraps (int4 -1 -> uint8 255, uint4 15 -> int2 -1), to bool != 0."""
    lo, hi = RANGE[src]
    x = np.arange(lo, hi + 1).astype(src)
    targets = OTHER + tuple(t for t in SUB_BYTE if t != src)
    g = _cast_graph(src, x.size, targets)
    want = interp_run(g, [x])
    values = np.arange(lo, hi + 1)
    for dst, y in zip(targets, run_c(g, [x], tmp_path)):
        np.testing.assert_array_equal(np.asarray(y).astype(np.float64), want[f"y_{dst}"].astype(np.float64), dst)
        if dst == "bool":
            expected = values != 0
        elif dst == "float32":
            expected = values.astype(np.float32)
        elif dst in RANGE:
            expected = (values - RANGE[dst][0]) % (RANGE[dst][1] - RANGE[dst][0] + 1) + RANGE[dst][0]
        else:
            expected = values.astype(dst)
        assert _as_ints(y) == _as_ints(expected), dst


@pytest.mark.parametrize("dtype", SUB_BYTE)
def test_quantize_to_sub_byte_edges(tmp_path, dtype):
    """Ties to even, saturation to the 4- or 2-bit range (not the byte's), NaN -> the zero point."""
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 1e9, -1e9, np.nan, np.inf, -np.inf, 3.49, -7.51, 0.75], np.float32)
    lo, hi = RANGE[dtype]
    zp = 1 if lo == 0 else -1
    g = Graph("q4")
    g.add_tensor("x", x.shape)
    g.add_tensor("scale", (), data=np.float32(1.0))
    g.add_tensor("zp", (), dtype, data=np.array(zp, dtype))
    g.add_tensor("y", x.shape, dtype)
    g.add_tensor("back", x.shape)
    g.add_node("LinearQuantize", ["x", "scale", "zp"], ["y"], to=dtype)
    g.add_node("LinearDequantize", ["y", "scale", "zp"], ["back"])
    g.inputs, g.outputs = ["x"], ["y", "back"]
    g.validate()
    y, back = run_c(g, [x], tmp_path)
    want = interp_run(g, [x])
    assert _as_ints(y) == _as_ints(want["y"])
    np.testing.assert_array_equal(back, want["back"])
    big = 1000
    expected = np.clip(np.array([0, 2, 2, 0, -2, big, -big, 0, big, -big, 3, -8, 1]) + zp, lo, hi)
    expected[7] = zp                                      # NaN
    assert _as_ints(y) == expected.tolist()
    np.testing.assert_array_equal(back, (expected - zp).astype(np.float32))


def _model(tmp_path, name, nodes, inputs, outputs, inits=(), opset=21):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, ONNX[t], s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, ONNX[t], s) for n, t, s in outputs], list(inits))
    path = tmp_path / f"{name}.onnx"
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=11)
    path.write_bytes(model.SerializeToString())
    return str(path), model


@pytest.mark.parametrize("dtype", SUB_BYTE)
def test_onnx_quantize_dequantize_against_onnxruntime(tmp_path, dtype):
    """QuantizeLinear per axis into the type, read back as int8 by a Cast and dequantized per block with a zero
    point of the type (int2 / uint2: opset 25, read as it is)."""
    wide = "int8" if dtype.startswith("i") else "uint8"
    lo, hi = RANGE[dtype]
    rng = np.random.default_rng(4)
    zp = rng.integers(lo, hi + 1, 3).astype(dtype)
    zp_blocks = rng.integers(lo, hi + 1, (1, 3, 2, 2)).astype(dtype)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("Cast", ["q"], ["q_wide"], to=ONNX[wide]),
             helper.make_node("DequantizeLinear", ["q", "s_blocks", "z_blocks"], ["d"], axis=3, block_size=3)]
    inits = [numpy_helper.from_array(np.array([0.5, 0.25, 1.0], np.float32), "s"), numpy_helper.from_array(zp, "z"),
             numpy_helper.from_array(rng.uniform(0.1, 2.0, (1, 3, 2, 2)).astype(np.float32), "s_blocks"),
             numpy_helper.from_array(zp_blocks, "z_blocks")]
    shape = [1, 3, 2, 5]
    path, model = _model(tmp_path, f"qdq_{dtype}", nodes, [("x", "float32", shape)],
                         [("q_wide", wide, shape), ("d", "float32", shape)], inits, 25 if "2" in dtype else 21)
    x = (rng.standard_normal((3, *shape)) * 4).astype(np.float32)
    x[0, 0, 0, 0, :3] = [0.25, 0.75, -0.25]               # ties at scale 0.5
    ours = run_generated(compile_model(path), [x])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for s in range(x.shape[0]):
        q_wide, d = session.run(None, {"x": x[s]})
        np.testing.assert_array_equal(ours[0][s], q_wide)
        np.testing.assert_allclose(ours[1][s], d, rtol=1e-6, atol=1e-6)


def test_onnx_casts_from_sub_byte_against_onnxruntime(tmp_path):
    """int8 -> int4 -> float, int8 and uint8 (wraps), and uint8 -> uint2 -> float: onnxruntime agrees."""
    nodes = [helper.make_node("Cast", ["a"], ["a4"], to=TensorProto.INT4),
             helper.make_node("Cast", ["a4"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["a4"], ["i8"], to=TensorProto.INT8),
             helper.make_node("Cast", ["a4"], ["u8"], to=TensorProto.UINT8),
             helper.make_node("Cast", ["b"], ["b2"], to=TensorProto.UINT2),
             helper.make_node("Cast", ["b2"], ["g"], to=TensorProto.FLOAT)]
    path, model = _model(tmp_path, "casts_from", nodes, [("a", "int8", [16]), ("b", "uint8", [4])],
                         [("f", "float32", [16]), ("i8", "int8", [16]), ("u8", "uint8", [16]), ("g", "float32", [4])],
                         opset=25)
    a, b = np.arange(-8, 8, dtype=np.int8), np.arange(4, dtype=np.uint8)
    ours = run_generated(compile_model(path), [a[None], b[None]])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for mine, ref in zip(ours, session.run(None, {"a": a, "b": b})):
        np.testing.assert_array_equal(mine[0], ref)


def test_onnx_sub_byte_inputs_outputs_and_weights_with_verify(tmp_path):
    """A model taking an int4 and a uint2 input, returning int4 and uint4 values and holding blocked int4 weights:
    `tinyc verify` feeds and reads them one value per byte and checks them against onnx's reference evaluator."""
    rng = np.random.default_rng(5)
    w = rng.integers(-8, 8, (6, 4)).astype(ml_dtypes.int4)
    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["fq"], axis=1),
             helper.make_node("DequantizeLinear", ["w", "s_w", "z_w"], ["fw"], axis=0, block_size=4),
             helper.make_node("MatMul", ["fq", "fw"], ["m"]),
             helper.make_node("Cast", ["m"], ["m4"], to=TensorProto.INT4),
             helper.make_node("QuantizeLinear", ["m", "s_out", "z_out"], ["mq"]),
             helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT)]
    inits = [numpy_helper.from_array(np.array([0.5, 1.0, 0.25, 2.0, 1.5, 0.75], np.float32), "s"),
             numpy_helper.from_array(rng.integers(-8, 8, 6).astype(ml_dtypes.int4), "z"),
             numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(rng.uniform(0.05, 0.3, (2, 4)).astype(np.float32), "s_w"),
             numpy_helper.from_array(rng.integers(-2, 3, (2, 4)).astype(ml_dtypes.int4), "z_w"),
             numpy_helper.from_array(np.float32(0.75), "s_out"),
             numpy_helper.from_array(np.array(3, ml_dtypes.uint4), "z_out")]
    path, _ = _model(tmp_path, "sub_byte_io", nodes, [("q", "int4", [2, 6]), ("c", "uint2", [3])],
                     [("m4", "int4", [2, 4]), ("mq", "uint4", [2, 4]), ("cf", "float32", [3])], inits, opset=25)
    report = verify(path, samples=4)
    assert report["oracle"] == "onnx-reference"
    assert report["ok"], report["outputs"]
    header = next(text for name, text in compile_model(path).library.files.items() if name.endswith(".h"))
    assert "input 0 'q': int4, shape 2x6, 12 values, unpacked: one value per int8_t (-8 to 7" in header


def test_onnx_backend_takes_and_returns_ml_dtypes_arrays():
    """tinyc's ONNX backend: int4 arrays in, uint4 arrays out, as onnx's reference evaluator computes them."""
    from tinyc.onnx_backend import TinycBackend
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["f"]),
             helper.make_node("QuantizeLinear", ["f", "s2", "z2"], ["y"])]
    inits = [numpy_helper.from_array(np.float32(0.5), "s"), numpy_helper.from_array(np.array(-3, ml_dtypes.int4), "z"),
             numpy_helper.from_array(np.float32(0.25), "s2"),
             numpy_helper.from_array(np.array(2, ml_dtypes.uint4), "z2")]
    g = helper.make_graph(nodes, "backend", [helper.make_tensor_value_info("x", TensorProto.INT4, [16])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT4, [16])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    x = np.arange(-8, 8).astype(ml_dtypes.int4)
    (y,) = TinycBackend.run_model(model, [x])
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    assert y.dtype == np.dtype(ml_dtypes.uint4)
    assert _as_ints(y) == _as_ints(want)
