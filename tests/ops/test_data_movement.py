"""Data movement (issue 17 section 3): Slice, Gather, GatherElements, Tile, BroadcastTo, PadBorder and the framework
ops lowered to them (ONNX Slice / Split / Gather / GatherElements / Tile / Expand / Pad modes / DepthToSpace /
SpaceToDepth, TFLite SPLIT / SPLIT_V / SLICE / STRIDED_SLICE / GATHER / TILE / BROADCAST_TO / PACK /
UNPACK / TRANSPOSE / DEPTH_TO_SPACE / SPACE_TO_DEPTH / MIRROR_PAD / CAST, Keras Cropping / UpSampling1D / RepeatVector
/ Concatenate / Permute).

The C of every kernel against the interpreter (ASan + UBSan), float32 and int8; each frontend against its
framework with `verify`; the converter's int8 models bit-exact with TFLite's reference kernels."""
import importlib.util
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from c_runner import run_c  # noqa: E402
from onnx_check import onnx_tools as _onnx, verify_onnx as _verify_onnx  # noqa: E402

from tinyc import interp  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402

RNG = np.random.default_rng(7)


def _kernel_graph(dtype="float32"):
    """Every data-movement kernel on rank 1-5 inputs with first dimensions above 1, negative steps and indices."""
    q = Quant(np.float32(0.05), np.int64(-3)) if dtype == "int8" else None
    g = Graph(f"moves_{dtype}")
    g.add_tensor("x", (2, 3, 4, 5), dtype, quant=q)
    g.add_tensor("v", (7,), dtype, quant=q)
    g.add_tensor("z", (2, 1, 3, 1, 2), dtype, quant=q)
    g.inputs = ["x", "v", "z"]

    def node(op, x, shape, **attrs):
        name = f"t{len(g.nodes)}_{op.lower()}"
        g.add_tensor(name, shape, dtype, quant=q)
        g.add_node(op, [x], [name], **attrs)
        g.outputs.append(name)

    node("Slice", "x", (2, 2, 2, 2), starts=(0, 2, 3, 1), steps=(1, -1, -2, 2), sizes=(2, 2, 2, 2))
    node("Slice", "x", (1, 3, 4, 5), starts=(1, 0, 0, 0), steps=(1, 1, 1, 1), sizes=(1, 3, 4, 5))
    node("Slice", "v", (3,), starts=(6,), steps=(-3,), sizes=(3,))
    node("Gather", "x", (2, 3, 2, 2, 5), axis=2, indices=np.array([[0, -1], [3, 1]]))
    node("Gather", "x", (2, 3, 1, 5), axis=2, indices=np.array([2]))
    node("Gather", "x", (2, 3, 4, 3), axis=3, indices=np.array([4, 0, -2]))
    node("Gather", "v", (4,), axis=0, indices=np.array([6, 0, 0, 3]))
    node("Tile", "x", (2, 6, 4, 10), reps=(1, 2, 1, 2))
    node("Tile", "z", (4, 1, 6, 2, 2), reps=(2, 1, 2, 2, 1))
    node("BroadcastTo", "z", (3, 2, 4, 3, 5, 2), target=(3, 2, 4, 3, 5, 2))
    node("BroadcastTo", "v", (2, 7), target=(2, 7))
    for m in ("reflect", "symmetric", "edge", "wrap"):
        node("PadBorder", "x", (2, 8, 4, 8), pads=((0, 0), (2, 3), (0, 0), (1, 2)), mode=m)
    node("PadBorder", "v", (19,), pads=((9, 3),), mode="reflect")          # pads beyond the size reflect again
    node("PadBorder", "z", (2, 3, 3, 1, 4), pads=((0, 0), (1, 1), (0, 0), (0, 0), (1, 1)), mode="edge")
    if dtype == "float32":
        node("GatherElements", "x", (2, 3, 4, 2), axis=3, indices=RNG.integers(-5, 5, (2, 3, 4, 2)))
        node("GatherElements", "z", (2, 1, 3, 1, 2), axis=0, indices=RNG.integers(0, 2, (2, 1, 3, 1, 2)))
        node("GatherElements", "x", (1, 2, 6, 3), axis=2, indices=RNG.integers(-4, 4, (1, 2, 6, 3)))  # a corner
    g.validate()
    return g


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_kernels_match_the_interpreter(tmp_path, dtype):
    g = _kernel_graph(dtype)
    if dtype == "int8":
        xs = [RNG.integers(-128, 128, g.tensors[n].shape).astype(np.int8) for n in g.inputs]
    else:
        xs = [RNG.standard_normal(g.tensors[n].shape).astype(np.float32) for n in g.inputs]
    ref = interp.run(g, xs)
    for name, ours in zip(g.outputs, run_c(g, xs, tmp_path, options={"kernels": "reference"})):
        np.testing.assert_array_equal(ours, ref[name], err_msg=name)


def test_int8_moves_need_equal_quantization(tmp_path):
    g = Graph("requant")
    g.add_tensor("x", (1, 4, 3), "int8", quant=Quant(np.float32(0.1), np.int64(0)))
    g.add_tensor("y", (1, 2, 3), "int8", quant=Quant(np.float32(0.2), np.int64(0)))
    g.add_node("Slice", ["x"], ["y"], starts=(0, 1, 0), steps=(1, 2, 1), sizes=(1, 2, 3))
    g.inputs, g.outputs = ["x"], ["y"]
    with pytest.raises(TinycError, match="different quantization parameters"):
        run_c(g, [np.zeros((1, 4, 3), np.int8)], tmp_path)


@pytest.mark.parametrize("op,attrs,match", [
    ("Slice", dict(starts=(0, 3), steps=(1, 1), sizes=(1, 2)), "reads outside its input"),
    ("Gather", dict(axis=1, indices=np.array([0, 4])), "go outside the 4 values"),
])
def test_checks_refuse_in_one_line(op, attrs, match):
    g = Graph("bad")
    g.add_tensor("x", (1, 4))
    g.add_tensor("y", (1, 2))
    g.add_node(op, ["x"], ["y"], **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    with pytest.raises(TinycError, match=match) as e:
        g.validate()
    assert "\n" not in str(e.value)


# -- ONNX against onnxruntime ---------------------------------------------------------------------------------
def test_onnx_on_a_channels_last_value(tmp_path):
    """Each op reading a Conv's output (stored NHWC): logical ONNX axes map through the layout."""
    _, Builder, _ = _onnx()
    b = Builder()
    i64 = np.int64
    c = b.node("Conv", ["img", b.weights(6, 3, 3, 3)], pads=[1, 1, 1, 1])           # [2, 6, 5, 8]
    outs = [
        b.node("Slice", [c, b.const([1, 7], i64), b.const([-1, 0], i64), b.const([1, 3], i64),
                         b.const([2, -2], i64)]),
        b.node("Gather", [c, b.const(4, i64)], axis=1),
        b.node("Gather", [c, b.const([4, -1, 0], i64)], axis=-1),
        b.node("Gather", [c, b.const([[1, 1], [0, 2]], i64)], axis=2),
        b.node("GatherElements", [c, b.const(RNG.integers(-6, 6, (2, 3, 5, 8)), i64)], axis=1),
        b.node("Tile", [c, b.const([1, 2, 1, 3], i64)]),
        b.node("Expand", [c, b.const([3, 1, 1, 1, 1], i64)]),
        b.node("Pad", [c, b.const([0, 1, 2, 0, 0, 0, 1, 3], i64)], mode="reflect"),
        b.node("Pad", [c, b.const([1, 2, -1, 0], i64), b.const(0.5), b.const([2, -1], i64)],
               mode="constant"),
        b.node("Pad", [c, b.const([2, 3], i64), b.const(0.0), b.const([3], i64)], mode="wrap"),
        b.node("Pad", [c, b.const([0, 0, 3, 1, 0, 0, 0, 4], i64)], mode="edge"),
        b.node("DepthToSpace", [c], blocksize=1),
        b.node("SpaceToDepth", [b.node("Slice", [c, b.const([0], i64), b.const([4], i64), b.const([2], i64)])],
               blocksize=2),
    ]
    y0, y1 = f"split_a{len(b.nodes)}", f"split_b{len(b.nodes)}"
    b.node("Split", [c, b.const([2, 4], i64)], [y0, y1], axis=1)
    outs += [y0, y1]
    _verify_onnx(tmp_path, b.model({"img": [2, 3, 5, 8]}, outs, 18), "nhwc_moves")


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_onnx_depth_to_space(tmp_path, mode):
    _, Builder, _ = _onnx()
    b = Builder()
    c = b.node("Conv", ["img", b.weights(8, 3, 1, 1)])
    outs = [b.node("DepthToSpace", [c], blocksize=2, mode=mode),
            b.node("DepthToSpace", ["img2"], blocksize=2, mode=mode),      # a plain (NCHW) value
            b.node("SpaceToDepth", ["img2"], blocksize=3)]
    _verify_onnx(tmp_path, b.model({"img": [1, 3, 3, 6], "img2": [2, 12, 3, 6]}, outs, 13), f"d2s_{mode}")


@pytest.mark.parametrize("opset", [10, 11, 18])
def test_onnx_split_and_slice_forms(tmp_path, opset):
    """Split's sizes as attribute (before 13), input (13+) or num_outputs (18, uneven); Slice as attributes (opset
    1-9 form is read too, here the input form with clamped and negative-step bounds); rank 5 and rank 1."""
    _, Builder, _ = _onnx()
    b = Builder()
    i64 = np.int64
    ys = [f"part{k}" for k in range(3)]
    if opset < 13:
        b.node("Split", ["x"], ys, axis=-1, split=[1, 3, 2])
    else:
        b.node("Split", ["x"], ys, axis=-1, num_outputs=3)
    big = np.iinfo(np.int64).max
    outs = ys + [b.node("Slice", ["x", b.const([-100, big, 1], i64), b.const([big, -big, 2], i64),
                                  b.const([0, 2, 3], i64), b.const([1, -2, 1], i64)]),
                 b.node("Slice", ["v", b.const([-2], i64), b.const([-big], i64), b.const([0], i64),
                                  b.const([-1], i64)])]
    _verify_onnx(tmp_path, b.model({"x": [2, 1, 5, 3, 6], "v": [7]}, outs, opset), f"split_{opset}")


def test_onnx_refusals_are_one_line(tmp_path):
    from tinyc.compiler import compile_model
    onnx, Builder, _ = _onnx()
    cases = [
        (lambda b: b.node("GatherElements", ["x", b.node("Cast", ["x"], to=7)], axis=1), "runtime indices"),
    ]
    for k, (make, match) in enumerate(cases):
        b = Builder()
        y = make(b)
        model = onnx.helper.make_model(onnx.helper.make_graph(
            b.nodes, "m", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
            [onnx.helper.make_tensor_value_info(y, onnx.TensorProto.UNDEFINED, None)], b.inits),
            opset_imports=[onnx.helper.make_opsetid("", 13)])
        path = str(tmp_path / f"r{k}.onnx")
        onnx.save(model, path)
        with pytest.raises(TinycError, match=match) as e:
            compile_model(path)
        assert "\n" not in str(e.value)


# -- TFLite: converter-made float32 and int8 models ----------------------------------------------------------
TF = importlib.util.find_spec("tensorflow") is not None


def _tf():
    from tinyc.keras_runtime import import_keras
    import_keras()
    import tensorflow as tf
    return tf


def _tflite_cases(tf):
    """name -> (input shapes, function, the TFLite ops the converter must have made)."""
    def moves(x, v):
        parts = tf.split(x, 3, axis=1) + tf.split(x, [1, 3, 2], axis=1)
        return parts + [tf.slice(x, [0, 1, 1], [1, 3, -1]), x[:, 1:5:2, ::-1], x[0, ..., 2:4],
                        x[:, tf.newaxis, 1, :], tf.gather(x, [3, 0, 5, 5], axis=1),
                        tf.gather(x, [[3, 0], [1, 2]], axis=2), tf.gather(x, 2, axis=1),
                        tf.transpose(x, [2, 0, 1]), tf.broadcast_to(v, [2, 3, 4]),
                        tf.stack([x, x, x], axis=2)] + tf.unstack(x, axis=1)
    return {
        "moves": ([(1, 6, 4), (1, 3, 1)], moves,
                  {"SPLIT", "SPLIT_V", "SLICE", "STRIDED_SLICE", "GATHER", "TRANSPOSE", "BROADCAST_TO", "PACK",
                   "UNPACK"}),
        "image": ([(1, 4, 6, 8)], lambda x: [tf.nn.depth_to_space(x, 2), tf.nn.space_to_depth(x, 2),
                                             tf.pad(x, [[0, 0], [1, 2], [3, 1], [0, 0]], mode="REFLECT"),
                                             tf.pad(x, [[0, 0], [2, 2], [0, 1], [0, 0]], mode="SYMMETRIC")],
                  {"DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "MIRROR_PAD"}),
        "tile": ([(1, 3, 4)], lambda x: [tf.tile(x, [2, 2, 3])], {"TILE"}),
    }


def _convert(tf, shapes, fn, path, int8):
    f = tf.function(fn, input_signature=[tf.TensorSpec(s, tf.float32) for s in shapes])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if int8:
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.standard_normal(s).astype(np.float32) for s in shapes]
                                               for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return str(path)


def _op_names(path):
    from tinyc.frontends.tflite_import import _op_name, _read, _schema
    S = _schema()
    _, model = _read(S, path)
    return {_op_name(S, model, op) for op in model.subgraphs[0].operators}


@pytest.mark.skipif(not TF, reason="needs tensorflow")
@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
@pytest.mark.parametrize("name", ["moves", "image", "tile"])
def test_tflite_converter_models(tmp_path, name, int8):
    """float32 within tolerance of TFLite; int8 bit-exact with TFLite's reference kernels. The converter's int8 TILE
    is version 3, which BUILTIN_REF registers only up to version 2, and TFLite Micro has no TILE; kernels/tile.cc
    is one kernel (a copy) whatever the resolver, so the default resolver without delegates, which registers
    version 3 of it, is the oracle there."""
    from tinyc.compiler import compile_model
    from tinyc.verify import verify
    tf = _tf()
    shapes, fn, ops = _tflite_cases(tf)[name]
    path = _convert(tf, shapes, fn, tmp_path / f"{name}.tflite", int8)
    assert ops <= _op_names(path)
    if int8 and name == "tile":
        from tensorflow.lite.python.interpreter import OpResolverType
        g = compile_model(path).plan.graph
        interpreter = tf.lite.Interpreter(model_path=path,
                                          experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
        for _ in range(3):
            x = RNG.integers(-128, 128, g.tensors[g.inputs[0]].shape).astype(np.int8)
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
            interpreter.invoke()
            theirs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            np.testing.assert_array_equal(run_c(g, [x], tmp_path)[0].ravel(), theirs.ravel())
        return
    report = verify(path, samples=2, per_layer=int8)
    assert report["ok"], report
    if int8:
        assert report["mismatched_bytes"] == 0
        assert all(row["ok"] for row in report["layers"]), report["layers"]


@pytest.mark.skipif(not TF, reason="needs tensorflow")
def test_tflite_cast_to_integer_is_refused(tmp_path):
    from tinyc.compiler import compile_model
    tf = _tf()
    path = _convert(tf, [(1, 4)], lambda x: tf.cast(x, tf.int32) + 1, tmp_path / "cast.tflite", False)
    with pytest.raises(TinycError, match="INT32") as e:
        compile_model(path)
    assert "\n" not in str(e.value)


# -- Keras against Keras -------------------------------------------------------------------------------------
@pytest.mark.skipif(not TF, reason="needs tensorflow")
def test_keras_layers(tmp_path):
    from tinyc.keras_runtime import import_keras
    from tinyc.verify import verify
    keras = import_keras()
    L = keras.layers
    x, v = keras.Input((6, 5, 4), name="img"), keras.Input((7, 3), name="seq")
    a = L.Cropping2D(((1, 2), (0, 1)))(x)
    b = L.Concatenate(axis=1)([a, L.Cropping2D(((0, 3), (1, 0)))(x)])
    c = L.Concatenate(axis=-2)([b, b])
    r = L.Reshape((-1, 8))(L.Flatten()(L.Permute((3, 1, 2))(c)))
    s = L.Cropping1D((2, 1))(v)
    u = L.UpSampling1D(3)(s)
    rv = L.RepeatVector(4)(L.Flatten()(u))
    model = keras.Model([x, v], [r, u, rv, L.Concatenate(axis=1)([s, L.Cropping1D((1, 2))(v)])])
    path = str(tmp_path / "moves.keras")
    model.save(path)
    report = verify(path, samples=2)
    assert report["ok"], report
