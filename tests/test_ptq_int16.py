"""tinyc's 16x8 post-training quantization (`--quantize int16x8 --calib`): the parameters it picks equal those of TF
2.21's converter (EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8) on the same Keras model and
calibration data, the C is bit-exact with TFLite's reference kernels running tinyc's own 16x8 .tflite, and what
tinyc cannot quantize to 16x8 is refused in one line naming the node. QEMU runs with TINYC_FULL."""
import importlib.util
import os
import shutil

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("PTQ tests need tensorflow (TFLite is the oracle)", allow_module_level=True)

from model_zoo import randomize  # noqa: E402
from test_cli import tinyc  # noqa: E402

from tinyc.compiler import codegen_options, compile_model  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.ir import Graph  # noqa: E402
from tinyc.quant.ptq_int16 import activation_scale, quantize_graph_int16, widen_in_place_inputs  # noqa: E402
from tinyc.verify import verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
CALIB = 32
# tinyc calibrates with its own float interpreter, the converter with TFLite's optimized float kernels: the ranges
# (and so the scales) can differ in the last bits. Given TFLite's float ranges the scales are equal (checked by
# hand on every tensor of the models below: 0 ulps); through tinyc's interpreter they are within this many ulps.
SCALE_ULPS = 4


def _keras():
    from tinyc.keras_runtime import import_keras
    return import_keras()


def mlp():
    """Dense with relu, relu6 and none, a Reshape between."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((4, 6))
    h = L.Dense(24, activation="relu")(L.Reshape((24,))(x))
    h = L.Dense(16, activation="relu6")(h)
    return keras.Model(x, L.Reshape((2, 4))(L.Dense(8)(h)), name="mlp")


def cnn():
    """Conv2D relu (stride 2), depthwise relu6, a 1x1 Conv2D with tanh, Flatten, Dense + softmax and Dense +
    sigmoid."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu6")(h)
    c = L.Flatten()(L.Conv2D(4, 1, activation="tanh")(h))
    return keras.Model(x, [L.Softmax()(L.Dense(10)(c)), L.Activation("sigmoid")(L.Dense(5)(c))], name="cnn")


def residual():
    """Conv2D relu, a residual Add of it and its depthwise (the depthwise output overwritten in place by TFLite's
    calibrator), max then average pooling, a 1x1 Conv2D with tanh, a Concatenation of two inputs of other scales
    (requantized first), Dense + softmax and Dense + sigmoid."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = L.Add()([h, L.DepthwiseConv2D(3, padding="same")(h)])
    h = L.AveragePooling2D(2)(L.MaxPooling2D(2)(h))
    c = L.Concatenate()([L.Flatten()(h), L.Flatten()(L.Conv2D(4, 1, activation="tanh")(h))])
    return keras.Model(x, [L.Softmax()(L.Dense(10)(c)), L.Activation("sigmoid")(L.Dense(5)(c))], name="residual")


def elementwise():
    """ZeroPadding2D, LeakyReLU, Sub and Mul of computed tensors (each input overwritten in place by TFLite's
    calibrator), Rescaling (MUL and ADD of int16 constants), Conv2DTranspose, global average pooling (MEAN), Dense
    + tanh."""
    keras = _keras()
    L = keras.layers
    x = keras.Input((8, 8, 3))
    h = L.LeakyReLU(negative_slope=0.2)(L.Conv2D(8, 3)(L.ZeroPadding2D(1)(x)))
    d = L.Subtract()([L.Conv2D(8, 1)(h), L.Conv2D(8, 1, activation="relu")(h)])
    h = L.Rescaling(0.5, offset=0.25)(L.Multiply()([d, h]))
    h = L.Conv2DTranspose(4, 3, strides=2, padding="same")(h)
    return keras.Model(x, L.Dense(4, activation="tanh")(L.GlobalAveragePooling2D()(h)), name="elementwise")


BUILDERS = {f.__name__: f for f in (mlp, cnn, residual, elementwise)}
DEFAULT = ("mlp", "residual")     # the others with TINYC_FULL (the file's default run stays near 15 s)


def _names():
    return [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.skipif(not FULL, reason="TINYC_FULL"))
            for n in sorted(BUILDERS)]


def _calibration(model, n=CALIB, seed=1):
    shape = tuple(model.inputs[0].shape[1:])
    return (np.random.default_rng(seed).standard_normal((n, *shape)) * 1.5).astype(np.float32)


def _converted(model, calib, path) -> str:
    import tensorflow as tf

    def representative():
        for i in range(len(calib)):
            yield [calib[i:i + 1]]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int16
    path.write_bytes(conv.convert())
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (.keras path, calibration data, the converter's 16x8 .tflite of the same model and data)."""
    directory, made = tmp_path_factory.mktemp("ptq16"), {}

    def get(name):
        if name not in made:
            keras = _keras()
            keras.utils.set_random_seed(0)
            model = randomize(BUILDERS[name](), 0)
            path = directory / f"{name}.keras"
            model.save(path)
            calib = _calibration(model)
            made[name] = (str(path), calib, _converted(model, calib, directory / f"{name}_16x8.tflite"))
        return made[name]
    return get


def _ulps(a, b) -> int:
    a, b = np.asarray(a, np.float32).reshape(-1), np.asarray(b, np.float32).reshape(-1)
    return int(np.max(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))))


def _matched_nodes(ours: Graph, theirs: Graph):
    """Pairs (our node, the converter's node) of the same op, output shape and (matched) runtime inputs."""
    tensor = dict(zip(ours.inputs, theirs.inputs))
    free, pairs = list(theirs.nodes), []
    for m in ours.nodes:
        want = [tensor.get(i) for i in m.inputs if not ours.tensors[i].is_const]
        shape = ours.tensors[m.outputs[0]].shape
        found = [n for n in free if n.op == m.op and theirs.tensors[n.outputs[0]].shape == shape
                 and [i for i in n.inputs if not theirs.tensors[i].is_const] in (want, want[::-1])]
        assert found, f"no converter node for {m.op} '{m.name}'"
        free.remove(found[0])
        tensor[m.outputs[0]] = found[0].outputs[0]
        pairs.append((m, found[0]))
    assert not free, [n.name for n in free]
    return pairs


@pytest.mark.parametrize("name", _names())
def test_parameters_equal_the_converters(models, name):
    """Every activation scale within SCALE_ULPS of the converter's (the input's and the fixed outputs' exactly),
    zero points 0, weights and their scales equal, int64 biases equal."""
    path, calib, converted = models(name)
    ours = compile_model(path, quantize="int16x8", calib=[calib]).plan.graph
    theirs = compile_model(converted).plan.graph
    assert _ulps(ours.tensors[ours.inputs[0]].quant.scale, theirs.tensors[theirs.inputs[0]].quant.scale) == 0
    for m, n in _matched_nodes(ours, theirs):
        o, t = ours.tensors[m.outputs[0]], theirs.tensors[n.outputs[0]]
        assert o.dtype == t.dtype == "int16" and int(o.quant.zero_point) == 0
        assert _ulps(o.quant.scale, t.quant.scale) <= SCALE_ULPS, (m.name, float(o.quant.scale), float(t.quant.scale))
        if m.op == "Softmax" or m.attrs.get("fn") in ("sigmoid", "tanh"):
            assert float(o.quant.scale) == float(t.quant.scale) == 1 / 32768
        if m.op in ("Conv2D", "Dense", "ConvTranspose2D"):
            (ow, ob), (tw, tb) = ([g.tensors[i] for i in node.inputs[1:3]] for g, node in ((ours, m), (theirs, n)))
            assert ow.dtype == tw.dtype == "int8" and np.array_equal(ow.data, tw.data), m.name
            assert _ulps(ow.quant.scale, tw.quant.scale) == 0, m.name
            assert ob.dtype == tb.dtype == "int64", m.name
            assert np.max(np.abs(ob.data - tb.data)) <= 1, (m.name, ob.data, tb.data)
            assert _ulps(ob.quant.scale, tb.quant.scale) <= SCALE_ULPS, m.name


@pytest.mark.parametrize("kernels", ["fast", "reference"])
@pytest.mark.parametrize("name", _names())
def test_bit_exact_with_tflite_on_tinycs_file(models, name, kernels):
    """The C equals TFLite's reference kernels running the 16x8 .tflite tinyc wrote, on every layer."""
    path, calib, _ = models(name)
    report = verify(path, samples=8, seed=3, per_layer=True, quantize="int16x8", calib=[calib],
                    options=codegen_options(kernels=kernels))
    assert report["mismatched_bytes"] == 0, report["outputs"]
    assert all(row["ok"] for row in report["layers"]), [row for row in report["layers"] if not row["ok"]]
    assert report["ok"]


def _in_place_case(nodes, outputs) -> tuple[dict, dict]:
    """The ranges after widen_in_place_inputs on a graph of `nodes` (op, inputs, output) over input x."""
    g = Graph("inplace")
    g.add_tensor("x", (1, 4))
    for op, ins, out in nodes:
        g.add_tensor(out, (1, 1) if out.startswith("scalar") else (1, 4))
        attrs = {"Reshape": dict(shape=(1, 4)), "Activation": dict(fn="relu"), "Mean": dict(axes=(1,), keepdims=True)}
        g.add_node(op, ins, [out], **attrs.get(op, {}))
    g.inputs, g.outputs = ["x"], outputs
    ranges = {name: (-float(k + 1), float(k + 1)) for k, name in enumerate(g.tensors)}
    before = dict(ranges)
    widen_in_place_inputs(g, ranges)
    return before, {k: v for k, v in ranges.items() if v != before[k]}


def test_in_place_inputs_take_the_outputs_range():
    """TFLite's calibrator logs an op's inputs again after it ran, when an in-place ADD / SUB / MUL has overwritten
    one of them (the first of the output's size that nothing else reads and that is no graph input) with its
    output, unless that output is a graph output: that input's range takes the union with the output's."""
    relu = [("Activation", ["x"], "a"), ("Activation", ["x"], "b")]
    before, widened = _in_place_case(relu + [("Add", ["a", "b"], "y"), ("Mul", ["y", "y"], "z")], ["z"])
    assert widened == {"a": before["y"]}                  # y is read twice: the Mul has nothing to overwrite
    assert _in_place_case(relu + [("Add", ["a", "b"], "y")], ["y"])[1] == {}      # y is a graph output
    tail = [("Activation", ["z"], "w")]
    before, widened = _in_place_case(relu + [("Sub", ["a", "b"], "y"), ("Mul", ["a", "y"], "z")] + tail, ["w"])
    assert widened == {"b": before["y"], "y": before["z"]}   # a is read twice; the Mul overwrites y (b's buffer)
    before, widened = _in_place_case(relu + [("Reshape", ["a"], "r"), ("Add", ["r", "b"], "y"),
                                             ("Mul", ["y", "x"], "z")] + tail, ["w"])
    assert widened == {"r": before["y"], "y": before["z"]}   # r is a's buffer, which nothing else reads
    before, widened = _in_place_case(relu + [("Reshape", ["a"], "r"), ("Add", ["r", "a"], "y"),
                                             ("Mul", ["x", "y"], "z")] + tail, ["w"])
    assert widened == {"y": before["z"]}      # r's buffer is a's, read by the Add too; x is a graph input
    before, widened = _in_place_case([("Mean", ["x"], "scalar"), ("Mul", ["scalar", "x"], "y"),
                                      ("Add", ["y", "x"], "z")], ["z"])
    assert widened == {}      # the Mul's operand of another size, then its graph input x; the Add's output


def test_activation_scale():
    assert activation_scale(-1.5, 0.5) == float(np.float32(1.5 / 32767))
    assert activation_scale(0.25, 3.0) == float(np.float32(3.0 / 32767))
    assert activation_scale(0.0, 0.0) > 0


def _graph(op: str, **attrs) -> Graph:
    g = Graph("refused")
    g.add_tensor("x", (1, 8))
    g.add_tensor("y", (1, 8))
    g.add_node(op, ["x"], ["y"], name="the_node", **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@pytest.mark.parametrize("op, attrs, message", [
    ("Activation", dict(fn="hard_swish"), "node 'the_node' to 16x8: activation 'hard_swish' has no 16x8 kernel"),
    ("LpNormalize", dict(axis=1, p=2, epsilon=1e-12), "node 'the_node' to 16x8: tinyc's LpNormalize has no 16x8"),
])
def test_refusals_name_the_node(op, attrs, message):
    with pytest.raises(TinycError, match=message) as e:
        quantize_graph_int16(_graph(op, **attrs), [np.zeros((2, 1, 8), np.float32)])
    assert "\n" not in str(e.value)


def test_lstm_is_refused(tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 3), batch_size=1)
    model = keras.Model(x, keras.layers.LSTM(4)(x))
    path = tmp_path / "lstm.keras"
    model.save(path)
    with pytest.raises(TinycError, match=r"\(LSTM\) to 16x8: TFLite has no 16x8 LSTM") as e:
        compile_model(str(path), quantize="int16x8", calib=[np.zeros((2, 5, 3), np.float32)])
    assert "\n" not in str(e.value)


def test_cli(models, tmp_path):
    """`tinyc compile --quantize int16x8`: an int16 API, the error against float printed; no --calib: one line."""
    path, calib, _ = models("mlp")
    np.save(tmp_path / "calib.npy", calib)
    res = tinyc("compile", path, "-o", tmp_path / "out", "--name", "net", "--quantize", "int16x8",
                "--calib", tmp_path / "calib.npy")
    assert res.returncode == 0, res.stderr
    assert "int16x8 vs float on the 32 calibration sample(s), output 0: max abs error" in res.stdout
    assert "one int16 step" in res.stdout
    assert "int net_invoke(const int16_t *input0, int16_t *output0);" in (tmp_path / "out" / "net.h").read_text()
    with pytest.raises(TinycError, match="--quantize int16x8 needs calibration data"):
        compile_model(path, quantize="int16x8")


@pytest.mark.skipif(not FULL or not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="TINYC_FULL=1 with arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_on_target_m4_and_m0plus(models, name, tmp_path):
    """tinyc's 16x8 C as firmware under QEMU on the Cortex-M4 (DSP fast kernels) and M0+: every output value equal
    to the host build, which equals TFLite (above)."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.verify import quantize_array, run_generated
    path, calib, _ = models(name)
    compiled = compile_model(path, quantize="int16x8", calib=[calib])
    g = compiled.plan.graph
    x = quantize_array(calib[:4], g.tensors[g.inputs[0]].quant, "int16")
    host = run_generated(compiled, [x])
    for board in ("nucleo-f412zg", "pico"):
        out = tmp_path / f"{name}-{board}"
        write_library(compiled.library, str(out), force=True)
        write_firmware(compiled, load_board(board), str(out), [x])
        run = emulate(compiled, load_board(board), out, profile=False)
        for emulated, expected in zip(run["outputs"], host):
            np.testing.assert_array_equal(emulated, expected, err_msg=f"{name} on {board}")
        print(f"{name} on {board}: {run['instructions']:,} instructions per inference")
