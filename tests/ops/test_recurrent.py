"""LSTM, GRU and RNN (tinyc/ops/recurrent.py): the float C (ASan + UBSan) against the interpreter on small graphs
covering each attribute's corners (reverse, every output, clip, cell_clip, input_forget, peepholes,
linear_before_reset, non-default activations, initial states as constants or model inputs, zero biases that the
kernel skips), and the kernel scratch the planner gives them (OpDef.work: in the arena, counted in the lower
bound, shown by the report)."""
import numpy as np
import pytest

from c_runner import run_c
from tinyc.compiler import compile_graph
from tinyc.interp import run as interp_run
from tinyc.ir import Graph
from tinyc.memory_report import memory_report
from tinyc.ops.recurrent import GATES, STATE_INPUTS, default_activations

RNG = np.random.default_rng(19)


def recurrent_graph(op, B=2, T=3, I=4, H=5, output="sequence", state_inputs=(), zero=(), **attrs):
    """One `op` node over x[B,T,I]; `state_inputs`: inputs among h0/c0 that are model inputs (else constants);
    `zero`: inputs among b/rb/p that are zero constants."""
    g = Graph(op.lower())
    g.add_tensor("x", (B, T, I))
    G = GATES[op]
    shapes = dict(b=(G * H,), rb=(G * H,), h0=(B, H), c0=(B, H), p=(3 * H,))
    ins = ["x", g.add_const("w", RNG.standard_normal((G * H, I)) * 0.5),
           g.add_const("r", RNG.standard_normal((G * H, H)) * 0.5)]
    for name in STATE_INPUTS[op]:
        if name in state_inputs:
            g.add_tensor(name, shapes[name])
            ins.append(name)
        else:
            data = np.zeros(shapes[name]) if name in zero else RNG.standard_normal(shapes[name]) * 0.5
            ins.append(g.add_const(name, data))
    g.add_tensor("y", (B, T, H) if output == "sequence" else (B, H))
    attrs.setdefault("activations", default_activations(op))
    g.add_node(op, ins, ["y"], output=output, **attrs)
    g.inputs, g.outputs = ["x", *state_inputs], ["y"]
    g.validate()
    return g


def check(g, tmp_path):
    xs = [RNG.standard_normal(g.tensors[n].shape).astype(np.float32) for n in g.inputs]
    (y,) = run_c(g, xs, tmp_path)
    ref = interp_run(g, xs)["y"]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * (1 + np.abs(ref).max()))


LSTM_CASES = {
    "defaults": {},
    "reverse_last_h": dict(reverse=True, output="last_h"),
    "reverse_last_h_peepholes": dict(reverse=True, output="last_h"),
    "clip_cell_clip": dict(clip=0.7, cell_clip=0.4),
    "input_forget": dict(input_forget=True),
    "no_bias_no_peepholes": dict(zero=("b", "p")),
    "state_inputs": dict(state_inputs=("h0", "c0")),
    "activations": dict(activations=({"fn": "hard_sigmoid", "alpha": 0.2, "beta": 0.5}, {"fn": "relu"},
                                     {"fn": "softsign"})),
    "one_step_one_unit": dict(T=1, H=1, B=1),
    "reverse_cell_clip_state_inputs": dict(reverse=True, cell_clip=0.3,
                                                          state_inputs=("h0", "c0")),
}


@pytest.mark.parametrize("case", sorted(LSTM_CASES))
def test_lstm_kernel_matches_the_interpreter(tmp_path, case):
    check(recurrent_graph("LSTM", **LSTM_CASES[case]), tmp_path)


GRU_CASES = {
    "defaults": {},
    "linear_before_reset": dict(linear_before_reset=True),
    "reverse_last_h": dict(reverse=True, output="last_h"),
    "linear_before_reset_last_h_state_input": dict(linear_before_reset=True, output="last_h", state_inputs=("h0",)),
    "clip_no_biases": dict(clip=0.5, zero=("b", "rb")),
    "activations": dict(activations=({"fn": "hard_sigmoid", "alpha": 0.3, "beta": 0.4}, {"fn": "elu", "alpha": 0.8})),
}


@pytest.mark.parametrize("case", sorted(GRU_CASES))
def test_gru_kernel_matches_the_interpreter(tmp_path, case):
    check(recurrent_graph("GRU", **GRU_CASES[case]), tmp_path)


RNN_CASES = {
    "defaults": {},
    "reverse_last_h_clip": dict(reverse=True, output="last_h", clip=0.6),
    "relu_no_bias_state_input": dict(activations=({"fn": "relu"},), zero=("b",), state_inputs=("h0",)),
}


@pytest.mark.parametrize("case", sorted(RNN_CASES))
def test_rnn_kernel_matches_the_interpreter(tmp_path, case):
    check(recurrent_graph("RNN", **RNN_CASES[case]), tmp_path)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("B,T,I,H", [(3, 2, 1, 2), (1, 4, 7, 9)])
def test_sizes_around_the_unrolled_products(tmp_path, op, B, T, I, H):
    """Input and hidden sizes below four and with a remainder after the products' four-wide steps."""
    check(recurrent_graph(op, B=B, T=T, I=I, H=H, output="last_h", reverse=True), tmp_path)


@pytest.mark.parametrize("op,floats", [("LSTM", 5), ("GRU", 4), ("RNN", 1)])
def test_kernel_scratch_is_in_the_arena_and_in_the_bound(op, floats):
    """The per-step buffers are arena scratch of the layer (no static or stack arrays in the kernel): the plan, its
    lower bound and `tinyc report` count them."""
    H = 6
    c = compile_graph(recurrent_graph(op, H=H, output="last_h"), "rec")
    step = next(s for s, n in enumerate(c.plan.graph.nodes) if n.op == op)
    assert c.plan.work[step].nbytes == 4 * floats * H
    x, y = (c.plan.graph.tensors[n].nbytes for n in ("x", "y"))
    assert c.plan.lower_bound == x + y + 4 * floats * H == c.plan.live[step]
    report = memory_report(c)
    assert report["layers"][step]["scratch_bytes"] == 4 * floats * H
    body = c.library.files["rec.c"]
    assert "static float" not in body and "float z[" not in body and "float g[" not in body
