"""A node with two outputs (OpDef.outputs): an LSTM with `cell_output` gives its sequence (or final h) and its
final cell state. The interpreter's two values against the LSTM's single-output forms, the float C (ASan + UBSan)
against the interpreter for both outputs, the plan (each output its own buffer, live from the layer to its last
reader, never in place), the per-layer trace of both, the passes keeping both, the final c as a state's next
value carried frame by frame, and the one-line refusals."""
import numpy as np
import pytest

from c_runner import run_c
from tinyc import interp
from tinyc.compiler import compile_graph
from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.memory_report import format_report, memory_report
from tinyc.ops.recurrent import default_activations, evaluate_lstm
from tinyc.passes import PIPELINE, optimize

RNG = np.random.default_rng(7)


def lstm_inputs(g, B, I, H, states=False):
    ins = ["x", g.add_const("w", RNG.standard_normal((4 * H, I)) * 0.5),
           g.add_const("r", RNG.standard_normal((4 * H, H)) * 0.5), g.add_const("b", RNG.standard_normal(4 * H) * 0.3)]
    if states:
        ins += ["h0", "c0"]
    else:
        ins += [g.add_const("h0", RNG.standard_normal((B, H)) * 0.5), g.add_const("c0", RNG.standard_normal((B, H)))]
    return ins + [g.add_const("p", np.zeros(3 * H))]


def two_output_graph(B=2, T=4, I=3, H=5, output="sequence", reverse=False, readers=False, **attrs):
    """x[B,T,I] -> LSTM(cell_output) -> y, c. `readers`: both read by later layers (y's first step times c, and c
    plus one), so the plan must keep each live past the LSTM; else both are model outputs."""
    g = Graph("two")
    g.add_tensor("x", (B, T, I))
    g.add_tensor("y", (B, T, H) if output == "sequence" else (B, H))
    g.add_tensor("c", (B, H))
    g.add_node("LSTM", lstm_inputs(g, B, I, H), ["y", "c"], output=output, reverse=reverse, cell_output=True,
               activations=default_activations("LSTM"), **attrs)
    g.inputs, g.outputs = ["x"], ["y", "c"]
    if readers:
        g.add_tensor("last", (B, 1, H))
        for name in ("last2", "yc", "c1"):
            g.add_tensor(name, (B, H))
        # the first step: a read of the final step alone would make the node a last_h one (recurrent_last_step)
        g.add_node("Slice", ["y"], ["last"], starts=[0, 0, 0], sizes=[B, 1, H], steps=[1, 1, 1])
        g.add_node("Reshape", ["last"], ["last2"])
        g.add_node("Mul", ["last2", "c"], ["yc"], activation=None)
        g.add_node("Add", ["c", g.add_const("one", [1.0])], ["c1"], activation=None)
        g.outputs = ["yc", "c1"]
    g.validate()
    return g


def single_output_values(g, xs):
    """The meaning to match: the first output is the single-output node's, the final c the cell equations' own,
    written out again here (`_final_c`)."""
    n = g.nodes[0]
    ins = [xs[0]] + [g.tensors[i].data for i in n.inputs[1:]]
    attrs = {k: v for k, v in n.attrs.items() if k != "cell_output"}
    return evaluate_lstm(attrs, ins), _final_c(attrs, ins)


def _final_c(a, ins):
    """The final cell state by the cell equations of tinyc/ops/recurrent.py, written out here apart from
    evaluate_lstm."""
    x, w, r, b, h, c, p = (np.asarray(v, np.float64) for v in ins)
    H = r.shape[1]
    sig = lambda v: 1 / (1 + np.exp(-v))      # noqa: E731
    clip = (lambda v: np.clip(v, -a["clip"], a["clip"])) if a.get("clip") else (lambda v: v)      # noqa: E731
    for t in (range(x.shape[1] - 1, -1, -1) if a.get("reverse") else range(x.shape[1])):
        z = x[:, t] @ w.T + h @ r.T + b
        i = sig(clip(z[:, :H] + p[:H] * c))
        f = 1 - i if a.get("input_forget") else sig(clip(z[:, H:2 * H] + p[H:2 * H] * c))
        c = f * c + i * np.tanh(clip(z[:, 2 * H:3 * H]))
        if a.get("cell_clip"):
            c = np.clip(c, -a["cell_clip"], a["cell_clip"])
        h = sig(clip(z[:, 3 * H:] + p[2 * H:] * c)) * np.tanh(c)
    return c


@pytest.mark.parametrize("output,reverse,attrs", [
    ("sequence", False, {}), ("last_h", False, {}), ("sequence", True, {}), ("last_h", True, {}),
    ("sequence", True, dict(cell_clip=0.3)), ("last_h", False, dict(input_forget=True, clip=0.8))])
def test_both_outputs_are_the_single_output_forms_and_the_c_computes_them(tmp_path, output, reverse, attrs):
    g = two_output_graph(output=output, reverse=reverse, **attrs)
    xs = [RNG.standard_normal(g.tensors["x"].shape).astype(np.float32)]
    env = interp.run(g, xs)
    want_y, want_c = single_output_values(g, xs)
    np.testing.assert_allclose(env["y"], want_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(env["c"], want_c, rtol=1e-6, atol=1e-6)
    y, c = run_c(g, xs, tmp_path)
    for got, ref in ((y, env["y"]), (c, env["c"])):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * (1 + np.abs(ref).max()))


def test_each_output_is_planned_live_and_traced(tmp_path):
    """Both outputs read by later layers: two buffers of their own, disjoint, live from the LSTM's step to their
    last readers; the layer is not in place; its kernel gets y and y1; the trace records both; the report shows
    both shapes and bytes; the C computes what the interpreter does."""
    g = two_output_graph(B=1, readers=True)
    compiled = compile_graph(g, "two")
    plan = compiled.plan
    pg = plan.graph
    step = next(s for s, n in enumerate(pg.nodes) if n.op == "LSTM")
    by, bc = plan.buffer_of["y"], plan.buffer_of["c"]
    assert by is not bc and by.start == step == bc.start
    assert bc.end == max(s for s, n in enumerate(pg.nodes) if "c" in n.inputs)
    lo_y, lo_c = plan.offset_of("y"), plan.offset_of("c")
    assert lo_y + pg.tensors["y"].nbytes <= lo_c or lo_c + pg.tensors["c"].nbytes <= lo_y
    assert step not in plan.in_place
    assert plan.live[step] >= sum(pg.tensors[t].nbytes for t in ("x", "y", "c")) + plan.work[step].nbytes
    assert plan.work[step].nbytes == 4 * 4 * 5      # the gates; h and c live in the outputs
    body = compiled.library.files["two.c"]
    assert "float *restrict y1" in body and "float *c = y1 + b * 5;" in body
    assert {"y", "c"} <= set(compiled.library.traced)
    assert body.count("\n  TWO_TRACE(") == len(compiled.library.traced)
    row = memory_report(compiled)["layers"][step]
    assert row["output_shapes"] == [[1, 4, 5], [1, 5]] and row["output_bytes"] == 4 * (20 + 5)
    assert "1x4x5+1x5" in format_report(memory_report(compiled))
    xs = [RNG.standard_normal(g.tensors["x"].shape).astype(np.float32)]
    ref = interp.run(g, xs)
    for got, name in zip(run_c(g, xs, tmp_path), g.outputs):
        np.testing.assert_allclose(got, ref[name], rtol=0, atol=1e-5 * (1 + np.abs(ref[name]).max()))


def test_the_per_layer_trace_holds_both_outputs(tmp_path):
    """The C's per-layer trace (tinyc verify --per-layer) records each output of the two-output layer under its own
    tensor: the bytes equal the interpreter's sequence and final c."""
    from tinyc.verify import _run_in
    g = two_output_graph(B=1, readers=True)
    x = RNG.standard_normal(g.tensors["x"].shape).astype(np.float32)
    env = interp.run(g, [x], keep_all=True)
    _, traces = _run_in(compile_graph(g, "two"), [x[None]], tmp_path, per_layer=True)
    for name in ("y", "c"):
        got = traces[0][name].reshape(g.tensors[name].shape)
        np.testing.assert_allclose(got, env[name], rtol=0, atol=1e-5 * (1 + np.abs(env[name]).max()))


@pytest.mark.parametrize("name", [p.__name__ for p in PIPELINE])
def test_each_pass_keeps_both_outputs(name):
    g = two_output_graph(B=1, readers=True)
    xs = [RNG.standard_normal(g.tensors["x"].shape).astype(np.float32)]
    before = interp.run(g, xs)
    p = next(p for p in PIPELINE if p.__name__ == name)
    h = p(g)
    h.validate()
    (lstm,) = [n for n in h.nodes if n.op == "LSTM"]
    assert len(lstm.outputs) == 2
    after = interp.run(h, xs)
    for k in g.outputs:
        np.testing.assert_allclose(after[k], before[k], rtol=1e-6, atol=1e-6)
    assert len([n for n in optimize(g).nodes if n.op == "LSTM"]) == 1


def test_constant_folding_folds_both_outputs():
    """An LSTM over a constant sequence folds into two constants, each read by its own node."""
    g = two_output_graph(B=1, readers=True)
    x = RNG.standard_normal(g.tensors["x"].shape)
    g.tensors["x"].data = x.astype(np.float32)
    g.inputs = []
    want = interp.run(g, [])
    h = optimize(g)
    assert [n.op for n in h.nodes] == ["Mul", "Add"] and h.tensors["c"].is_const
    for k in g.outputs:
        np.testing.assert_allclose(interp.run(h, [])[k], want[k], rtol=1e-6)


def stateful_lstm(T=3, I=3, H=4):
    """Streaming: h0 and c0 are state; h takes the sequence's last step, c the LSTM's second output."""
    g = Graph("stream")
    g.add_tensor("x", (1, T, I))
    g.add_state("h0", (1, H))
    g.add_state("c0", (1, H), initial=RNG.uniform(-1, 1, (1, H)))
    g.add_tensor("y", (1, T, H))
    g.add_tensor("cT", (1, H))
    g.add_node("LSTM", lstm_inputs(g, 1, I, H, states=True), ["y", "cT"], output="sequence", cell_output=True,
               activations=default_activations("LSTM"))
    g.add_tensor("last", (1, 1, H))
    g.add_tensor("hT", (1, H))
    g.add_node("Slice", ["y"], ["last"], starts=[0, T - 1, 0], sizes=[1, 1, H], steps=[1, 1, 1])
    g.add_node("Reshape", ["last"], ["hT"])
    g.inputs, g.outputs = ["x"], ["y"]
    g.state.update(h0="hT", c0="cT")
    g.validate()
    return g


def test_the_second_output_as_a_states_next_value_frame_by_frame():
    from tinyc.verify import run_generated
    g = stateful_lstm()
    compiled = compile_graph(g, "stream")
    assert "c0" in compiled.plan.state_copies or compiled.plan.in_state("cT")
    xs = RNG.standard_normal((8, 1, 3, 3)).astype(np.float32)
    ours = run_generated(compiled, [xs])
    want, _ = interp.run_frames(g, [{"x": x} for x in xs])
    ref = np.stack([w["y"] for w in want])
    np.testing.assert_allclose(ours[0], ref, rtol=0, atol=1e-5 * (1 + np.abs(ref).max()))
    # the carried c matters: a model without it differs from the second frame on
    g2 = stateful_lstm()
    g2.state["c0"] = "c0"
    other, _ = interp.run_frames(g2, [{"x": x} for x in xs])
    assert not np.allclose(np.stack([w["y"] for w in other])[1:], ref[1:])


@pytest.mark.parametrize("spoil,message", [
    (lambda g: g.nodes[0].outputs.pop(), "writes 1 tensors, its op and attributes give it 2 outputs"),
    (lambda g: g.nodes[0].attrs.update(output="last_c"), "output 'last_c' is not one of ('sequence', 'last_h')"),
    (lambda g: setattr(g.tensors["c"], "shape", (2, 4)), "final cell state 'c' has shape (2, 4)"),
])
def test_bad_two_output_nodes_are_refused_in_one_line(spoil, message):
    g = two_output_graph()
    spoil(g)
    with pytest.raises(TinycError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        g.validate()
    assert "\n" not in str(e.value)
