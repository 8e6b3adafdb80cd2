"""ONNX LSTM, GRU and RNN (tinyc/frontends/onnx_ops.py recurrent_layer) against onnxruntime with `verify`:
directions, outputs read or not (Y, Y_h, Y_c), peepholes, clip, input_forget, linear_before_reset, initial states as
constants, model inputs or absent, explicit activations with their alpha / beta; layout 1 (batch first, which
onnxruntime does not run) against onnx's reference evaluator; a one-step LSTM streamed frame by frame with its
states as streaming state; the refusals (sequence_lens, activations); with TINYC_FULL, ONNX's node tests of the
three ops under QEMU on the Cortex-M0+ and M33."""
import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from c_runner import run_c
from onnx_check import verify_onnx
from tinyc.errors import TinycError
from tinyc.frontends import load_model

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(op, direction="forward", layout=0, outputs=("Y", "Y_h"), T=5, B=2, I=3, H=4, peepholes=False,
                    states="constant", seq_lens=None, seed=0, **attrs):
    """One ONNX `op` node; `states`: initial_h (and initial_c) "constant", "input" (model inputs) or "absent"."""
    rng = np.random.default_rng(seed)
    G, D = GATES[op], 2 if direction == "bidirectional" else 1

    def const(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.7).astype(np.float32), name)
    inits = [const("W", (D, G * H, I)), const("R", (D, G * H, H)), const("B", (D, 2 * G * H))]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [B, T, I] if layout else [T, B, I])]
    names = ["X", "W", "R", "B", ""]
    if seq_lens is not None:
        inits.append(numpy_helper.from_array(np.asarray(seq_lens, np.int32), "L"))
        names[4] = "L"
    state_shape = [B, D, H] if layout else [D, B, H]
    for state in ("h0", "c0") if op == "LSTM" else ("h0",):
        if states == "constant":
            inits.append(const(state, state_shape))
        elif states == "input":
            inputs.append(helper.make_tensor_value_info(state, TensorProto.FLOAT, state_shape))
        names.append(state if states != "absent" else "")
    if peepholes:
        inits.append(const("P", (D, 3 * H)))
        names.append("P")
    node = helper.make_node(op, names, list(outputs), name="rec", hidden_size=H, direction=direction, layout=layout,
                            **attrs)
    graph = helper.make_graph([node], "rec", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                      for o in outputs if o], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


CASES = {
    "lstm_bidirectional_all_outputs_peepholes": ("LSTM", dict(direction="bidirectional", outputs=("Y", "Y_h", "Y_c"),
                                                              peepholes=True)),
    "lstm_reverse_states_only_state_inputs": ("LSTM", dict(direction="reverse", outputs=("", "Y_h", "Y_c"),
                                                           states="input")),
    "lstm_clip_input_forget_explicit_activations": (
        "LSTM", dict(clip=0.8, input_forget=1, peepholes=True, activations=["HardSigmoid", "LeakyRelu", "ScaledTanh"],
                     activation_alpha=[0.3, 0.1, 0.8], activation_beta=[0.4, 1.2])),
    "gru_bidirectional_sequence_only_full_sequence_lens": ("GRU", dict(direction="bidirectional", outputs=("Y",),
                                                                       seq_lens=[5, 5])),
    "gru_linear_before_reset_no_states_clip": ("GRU", dict(linear_before_reset=1, states="absent", clip=0.6,
                                                           outputs=("", "Y_h"))),
    "gru_bidirectional_activations": ("GRU", dict(direction="bidirectional", activations=["Sigmoid", "Elu",
                                                                                           "HardSigmoid", "Softsign"])),
    "rnn_bidirectional_state_input": ("RNN", dict(direction="bidirectional", states="input")),
    "rnn_reverse_affine": ("RNN", dict(direction="reverse", activations=["Affine"], activation_alpha=[0.5],
                                       activation_beta=[0.2])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_recurrent_layer_matches_onnxruntime(tmp_path, case):
    op, kw = CASES[case]
    verify_onnx(tmp_path, recurrent_model(op, **kw), case)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_batch_first_layout_matches_the_reference_evaluator(tmp_path, op):
    """layout=1 (X [B,T,I], Y [B,T,D,H], states [B,D,H]): onnxruntime refuses it, onnx's reference runs it."""
    from onnx.reference import ReferenceEvaluator
    model = recurrent_model(op, direction="bidirectional", layout=1, states="input", outputs=("Y", "Y_h"))
    path = tmp_path / "rec.onnx"
    path.write_bytes(model.SerializeToString())
    g = load_model(str(path))
    rng = np.random.default_rng(3)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    ours = run_c(g, [feeds[i.name] for i in model.graph.input], tmp_path)
    for got, want in zip(ours, ReferenceEvaluator(model).run(None, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("outputs", [("Y", "Y_h", "Y_c"), ("", "Y_h", "Y_c"), ("Y", "", "Y_c"), ("", "", "Y_c"),
                                     ("Y", "Y_h")])
def test_one_node_per_direction_whatever_is_read(tmp_path, outputs):
    """Y_h comes out of Y, and Y_c is the LSTM node's second output (cell_output): the layer runs once per
    direction."""
    path = tmp_path / "rec.onnx"
    path.write_bytes(recurrent_model("LSTM", direction="bidirectional", outputs=outputs).SerializeToString())
    lstms = [n for n in load_model(str(path)).nodes if n.op == "LSTM"]
    assert len(lstms) == 2
    assert all(len(n.outputs) == (2 if "Y_c" in outputs else 1) for n in lstms)


def _load(tmp_path, model):
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    return load_model(str(path))


@pytest.mark.parametrize("op,kw,words", [
    ("LSTM", dict(seq_lens=[5, 3]), "sequence_lens [5, 3] differs from the full length 5"),
    ("RNN", dict(activations=["ThresholdedRelu"]), "activation ThresholdedRelu without its activation_alpha"),
    ("GRU", dict(activations=["Sigmoid", "Gelu"]), "activation 'Gelu' is not one of"),
    ("RNN", dict(activations=["Tanh", "Tanh"]), "2 activations for 1 direction(s)"),
    ("LSTM", dict(clip=-1.0), "clip -1.0; ONNX's clip threshold must be positive"),
    ("GRU", dict(seq_lens=[5]), "sequence_lens has 1 values for a batch of 2"),
])
def test_refusals_name_the_node_and_the_attribute(tmp_path, op, kw, words):
    with pytest.raises(TinycError) as e:
        _load(tmp_path, recurrent_model(op, **kw))
    assert f"{op} 'rec'" in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_a_runtime_sequence_lens_is_refused(tmp_path):
    model = recurrent_model("LSTM")
    model.graph.input.append(helper.make_tensor_value_info("L", TensorProto.INT32, [2]))
    model.graph.node[0].input[4] = "L"
    with pytest.raises(TinycError, match="LSTM 'rec': sequence_lens 'L' is computed at run time"):
        _load(tmp_path, model)


# ONNX's recurrent activations, with the parameters each takes (alpha, beta)
ONNX_ACTIVATIONS = {"Relu": 0, "Tanh": 0, "Sigmoid": 0, "Affine": 2, "LeakyRelu": 1, "ThresholdedRelu": 1,
                    "ScaledTanh": 2, "HardSigmoid": 2, "Elu": 1, "Softsign": 0, "Softplus": 0}


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="a random sweep: TINYC_FULL=1")
@pytest.mark.parametrize("seed", range(30))
def test_random_layers_match_onnxruntime(tmp_path, seed):
    """Random op, direction, outputs read, sizes, clip and activations with explicit or default parameters: the
    alphas and betas are consumed across both directions' activations in order."""
    rng = np.random.default_rng(seed)
    op = ["LSTM", "GRU", "RNN"][seed % 3]
    direction = str(rng.choice(["forward", "reverse", "bidirectional"]))
    per = {"LSTM": 3, "GRU": 2, "RNN": 1}[op] * (2 if direction == "bidirectional" else 1)
    names = [str(n) for n in rng.choice(sorted(ONNX_ACTIVATIONS), per)]
    wanted = sum(ONNX_ACTIVATIONS[n] >= 1 for n in names), sum(ONNX_ACTIVATIONS[n] == 2 for n in names)
    attrs = dict(activations=names)
    if wanted[0]:
        attrs["activation_alpha"] = [float(v) for v in rng.uniform(0.2, 1.2, wanted[0])]
    if wanted[1]:
        attrs["activation_beta"] = [float(v) for v in rng.uniform(-0.5, 0.5, wanted[1])]
    if rng.random() < 0.5:
        attrs["clip"] = float(rng.uniform(0.5, 3))
    if op == "LSTM" and rng.random() < 0.3:
        attrs["input_forget"] = 1
    if op == "GRU":
        attrs["linear_before_reset"] = int(rng.integers(2))
    outputs = [["Y", "Y_h", "Y_c"][k] if rng.random() < 0.7 else "" for k in range(3 if op == "LSTM" else 2)]
    if not any(outputs):
        outputs[0] = "Y"
    model = recurrent_model(op, direction, outputs=tuple(outputs), T=int(rng.integers(1, 6)),
                            B=int(rng.integers(1, 3)), I=int(rng.integers(1, 6)), H=int(rng.integers(1, 7)),
                            peepholes=op == "LSTM" and rng.random() < 0.5,
                            states=str(rng.choice(["constant", "input", "absent"])), seed=seed, **attrs)
    verify_onnx(tmp_path, model, f"random{seed}")


def test_streaming_lstm_carries_its_state_frame_by_frame(tmp_path):
    """One time step per inference, initial_h / initial_c paired with Y_h / Y_c as streaming state (--state): 50
    frames, every frame's outputs equal onnxruntime's carrying the same state."""
    from tinyc.verify import verify
    path = tmp_path / "stream.onnx"
    path.write_bytes(recurrent_model("LSTM", T=1, B=1, states="input", outputs=("Y", "Y_h", "Y_c"),
                                     peepholes=True).SerializeToString())
    report = verify(str(path), samples=50, state={"h0": "Y_h", "c0": "Y_c"})
    assert report["ok"], [(o["max_abs_err"], o["tolerance"]) for o in report["outputs"]]


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2"])     # Cortex-M0+ (mps2-an385), Cortex-M33 (mps2-an505)
def test_node_tests_under_qemu(tmp_path, board_name):
    """ONNX's LSTM / GRU / RNN node tests (their weights bound as constants, as the backend does) compiled for the
    board's core and run under QEMU: every output within the float tolerance of the test's expected values."""
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model, write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.frontends.onnx_import import bound_model_file
    from tinyc.onnx_backend import load_suite, parameter_inputs

    board = load_board(board_name)
    cases = [c for c in load_suite(("node",)) if c.op in GATES]
    assert len(cases) == 18
    for case in cases:
        model, (inputs, expected) = case.model, case.data_sets[0]
        values = dict(zip([i.name for i in model.graph.input], inputs))
        params = parameter_inputs(model)
        work = tmp_path / case.name
        work.mkdir()
        src = work / "model.onnx"
        src.write_bytes(model.SerializeToString())
        path = bound_model_file(str(src), {n: values[n] for n in params}, str(work))
        compiled = compile_model(path)
        data = [values[i.name][None] for i in model.graph.input if i.name not in params]
        write_library(compiled.library, str(work / "out"))
        write_firmware(compiled, board, str(work / "out"), data)
        outs = emulate(compiled, board, work / "out")["outputs"]
        assert len(outs) == len(expected) > 0
        for got, want in zip(outs, expected):
            np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-4 * (1 + np.abs(want).max()),
                                       err_msg=f"{case.name} on {board_name}")
