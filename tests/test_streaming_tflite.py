"""Streaming state from TFLite resource variables (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, CALL_ONCE): models
made by TF's converter from a tf.Module whose tf.Variables each call updates, verified frame by frame against
TFLite's interpreter (whose variables persist across invoke())."""
import os

import numpy as np
import pytest

from tinyc import interp
from tinyc.errors import TinycError

tf = pytest.importorskip("tensorflow")


class Stream(tf.Module):
    """s: a leaky running projection (initial value not zero); t: zeros at first, assigned from s's new value.
    The output reads s before and after its assignment (the second read sees the assigned value) and t after."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.s = tf.Variable(tf.constant([[0.5, -1.0, 2.0, 0.0]]), name="s")
        self.t = tf.Variable(tf.zeros([1, 4]), name="t")
        self.w = tf.constant(rng.standard_normal((4, 4)).astype(np.float32) * 0.5)

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def __call__(self, x):
        before = self.s.read_value()
        self.s.assign(0.8 * before + tf.matmul(x, self.w))
        after = self.s.read_value()
        self.t.assign(0.5 * self.t + after)
        return tf.nn.relu(after) + 0.25 * before + self.t.read_value()


def convert(path, int8=False):
    m = Stream()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    conv.experimental_enable_resource_variables = True
    if int8:
        rng = np.random.default_rng(1)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.standard_normal((1, 4)).astype(np.float32)] for _ in range(40))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return str(path)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    return convert(tmp_path_factory.mktemp("tflite") / "stream.tflite")


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
def test_resource_variables_verified_frame_by_frame(tmp_path, float_model, int8):
    from tinyc.verify import verify
    path = convert(tmp_path / "stream8.tflite", True) if int8 else float_model
    report = verify(path, samples=50)
    assert report["ok"] and report["frames"] == 50 and report["oracle"] == "tflite", report
    if int8:
        assert report["mismatched_bytes"] == 0
    assert sorted(r["name"] for r in report["state"]) == ["s", "t"]


def test_the_state_matters_and_starts_at_call_once_values(float_model):
    """The IR: CALL_ONCE's constant is s's initial value, t starts at zeros; 20 frames carried differ from 20
    frames each on the initial state (so a verify that dropped the state would fail)."""
    from tinyc.frontends import load_model
    g = load_model(float_model)
    init = {g.tensors[s].source_name: v for s, v in g.initial_state().items()}
    np.testing.assert_array_equal(init["s"], [[0.5, -1.0, 2.0, 0.0]])
    assert not init["t"].any()
    frames = [{g.inputs[0]: x} for x in np.random.default_rng(2).standard_normal((20, 1, 4)).astype(np.float32)]
    carried, _ = interp.run_frames(g, frames)
    fresh = [interp.run(g, f) for f in frames]
    assert not np.allclose(carried[-1][g.outputs[0]], fresh[-1][g.outputs[0]])


def test_an_init_subgraph_with_other_ops_is_refused(tmp_path, float_model):
    """CALL_ONCE's subgraph is evaluated at compile time: only VAR_HANDLE and ASSIGN_VARIABLE of constants."""
    from tinyc.frontends import load_model
    from tinyc.frontends.tflite_import import _schema
    path = float_model
    S = _schema()
    model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(open(path, "rb").read(), 0))
    add = next(k for k, c in enumerate(model.operatorCodes) if max(c.builtinCode, c.deprecatedBuiltinCode) ==
               S.BuiltinOperator.ADD)
    model.subgraphs[1].operators[-1].opcodeIndex = add
    import flatbuffers
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(b.Output()))
    with pytest.raises(TinycError, match=r"init subgraph 1 has a ADD operator \(#\d\); tinyc evaluates") as e:
        load_model(str(bad))
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="two sanitizer builds (~10 s): TINYC_FULL=1; the "
                    "int8 accumulator below covers PTQ with state in the default run")
def test_ptq_of_a_stateful_model_is_bit_exact_with_tflite_frame_by_frame(tmp_path):
    """--quantize int8 of ONNX state pairs: each state shares its next value's scale (calibrated over the frames
    carried); the int8 graph written as .tflite keeps the state as resource variables (CALL_ONCE with the
    quantized initial values), which TFLite carries across invoke() and tinyc reads back."""
    from test_streaming_state import PAIRS, gru_cell_onnx
    from tinyc.frontends import load_model
    from tinyc.quant.calibrate import random_calibration
    from tinyc.quant.tflite_writer import write_tflite
    from tinyc.verify import verify
    from tinyc.compiler import compile_model
    path = gru_cell_onnx(tmp_path / "gru.onnx")
    calib = random_calibration(load_model(path, state=PAIRS), samples=16)
    report = verify(path, samples=20, quantize="int8", calib=calib, state=PAIRS)
    assert report["ok"] and report["mismatched_bytes"] == 0 and report["frames"] == 20, report
    assert {r["dtype"] for r in report["state"]} == {"int8"}
    q = compile_model(path, quantize="int8", calib=calib, state=PAIRS).quantized
    for s, v in q.state.items():
        assert q.tensors[s].quant.scale == q.tensors[v].quant.scale
    write_tflite(q, str(tmp_path / "q.tflite"))
    back = load_model(str(tmp_path / "q.tflite"))
    assert sorted(back.tensors[s].source_name for s in back.state) == sorted(q.state)


def test_int8_accumulator_written_in_place_is_bit_exact(tmp_path):
    """An int8 state updated in place by the Add that reads it (the fast kernels' same-bytes path): tinyc's PTQ of
    the accumulator, written as .tflite with resource variables, read back, compiled and run frame by frame
    against TFLite: 0 differing bytes."""
    from test_streaming_state import accumulator
    from tinyc.passes import optimize
    from tinyc.quant.ptq import quantize_graph
    from tinyc.quant.tflite_writer import write_tflite
    from tinyc.verify import verify
    from tinyc.compiler import compile_model
    g = optimize(accumulator(shape=(1, 16), initial=np.linspace(-1, 1, 16).reshape(1, 16)))
    calib = [np.random.default_rng(6).standard_normal((12, 1, 16)).astype(np.float32) * 0.5]
    path = str(tmp_path / "acc8.tflite")
    write_tflite(quantize_graph(g, calib), path)
    c = compile_model(path)
    assert not c.plan.state_copies and "writes over its input (elementwise)" in c.library.files["acc8.c"]
    report = verify(path, samples=40)
    assert report["ok"] and report["mismatched_bytes"] == 0 and report["frames"] == 40, report
