"""Streaming state (docs/streaming-state.md): the IR's state tensors, the interpreter carrying them frame by frame,
and the graph passes keeping what the state update needs."""
import os

import numpy as np
import pytest

from tinyc import interp
from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.passes import optimize


def accumulator(shape=(1, 4), initial=None):
    """y = relu(s + x); the state s takes s + x (before the relu): a running sum."""
    g = Graph("acc")
    g.add_tensor("x", shape)
    g.add_state("s", shape, initial=initial)
    g.add_tensor("sum", shape)
    g.add_tensor("y", shape)
    g.add_node("Add", ["s", "x"], ["sum"], activation=None)
    g.add_node("Activation", ["sum"], ["y"], fn="relu")
    g.inputs, g.outputs = ["x"], ["y"]
    g.state["s"] = "sum"
    return g


def frames(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def test_interpreter_carries_the_state_across_frames():
    g = accumulator(initial=np.full((1, 4), 0.5))
    g.validate()
    xs = frames((1, 4), 6)
    outs, last = interp.run_frames(g, xs)
    running = 0.5 + np.cumsum([f["x"] for f in xs], axis=0)
    for out, want in zip(outs, running):
        np.testing.assert_allclose(out["y"], np.maximum(want, 0), rtol=1e-6)
    np.testing.assert_allclose(last["s"], running[-1], rtol=1e-6)
    # one step from a given state; `run` alone does not advance anything
    y, after = interp.step(g, xs[0], {"s": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(after["s"], 1 + xs[0]["x"])
    np.testing.assert_allclose(interp.run(g, xs[0])["y"], np.maximum(0.5 + xs[0]["x"], 0))


def test_the_update_is_simultaneous():
    """a takes b's value and b takes a's: each reads the value from before the inference."""
    g = Graph("swap")
    g.add_tensor("x", (3,))
    g.add_state("a", (3,), initial=[1, 2, 3])
    g.add_state("b", (3,), initial=[10, 20, 30])
    g.add_tensor("y", (3,))
    g.add_node("Add", ["a", "x"], ["y"], activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    g.state.update(a="b", b="a")
    g.validate()
    zero = {"x": np.zeros(3, np.float32)}
    outs, last = interp.run_frames(g, [zero] * 3)
    assert [list(o["y"]) for o in outs] == [[1, 2, 3], [10, 20, 30], [1, 2, 3]]
    assert list(last["a"]) == [10, 20, 30] and list(last["b"]) == [1, 2, 3]


def test_a_state_nothing_updates_keeps_its_initial_value():
    g = accumulator()
    g.state["s"] = "s"
    g.validate()
    outs, last = interp.run_frames(g, frames((1, 4), 2))
    assert not last["s"].any()


@pytest.mark.parametrize("spoil, message", [
    (lambda g: g.inputs.append("s"), "state tensor 's' is a model input"),
    (lambda g: g.state.update(s=None), "state tensor 's' has no next value"),
    (lambda g: g.state.update(s="nowhere"), "takes its next value from 'nowhere', which does not exist"),
    (lambda g: g.state.update(s="x5"), "must have the same shape, type and quantization"),
    (lambda g: g.state.update(x="sum"), "state tensor 'x' is a model input"),
    (lambda g: g.state.update(y="sum"), "state tensor 'y' is written by a node"),
    (lambda g: g.state_init.update(s=np.zeros(3, np.float32)), "its initial value is float32 (3,)"),
])
def test_bad_state_is_refused_in_one_line(spoil, message):
    g = accumulator()
    g.add_tensor("x5", (1, 5))
    spoil(g)
    with pytest.raises(TinycError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        g.validate()
    assert "\n" not in str(e.value)


def test_passes_keep_the_next_value():
    """`sum` is read once, by the relu: without the state, fuse_activation would merge the two and drop `sum`."""
    g = accumulator()
    out = optimize(g)
    assert out.state == {"s": "sum"} and "sum" in out.tensors
    assert [n.op for n in out.nodes] == ["Add", "Activation"]
    xs = frames((1, 4), 5)
    for a, b in zip(interp.run_frames(g, xs)[0], interp.run_frames(out, xs)[0]):
        np.testing.assert_array_equal(a["y"], b["y"])


def test_identity_next_value_and_unread_state_survive_the_passes():
    g = accumulator()
    g.add_tensor("copy", (1, 4))
    g.add_node("Identity", ["sum"], ["copy"])
    g.state["s"] = "copy"
    g.add_state("idle", (2,), initial=[7, 8])
    g.state["idle"] = "idle"
    out = optimize(g)
    assert out.state == {"s": "sum", "idle": "idle"}
    assert list(out.initial_state()["idle"]) == [7, 8]


def test_a_constant_next_value_folds_and_still_updates():
    g = accumulator()
    g.add_tensor("k", (1, 4))
    g.add_node("Activation", [g.add_const("c", np.full((1, 4), -2.0))], ["k"], fn="relu")
    g.state["s"] = "k"
    out = optimize(g)
    assert out.tensors[out.state["s"]].is_const
    _, last = interp.run_frames(out, frames((1, 4), 2))
    assert not last["s"].any()


# -- the generated C ---------------------------------------------------------------------------------------------

def recurrent_cell():
    """A small GRU-like cell with three states: h (next value a model output: copied at the end), c (initial
    value not zero, next value written in place by the Add that reads it), and a pair that swaps (copies)."""
    rng = np.random.default_rng(3)
    g = Graph("cell")
    g.add_tensor("x", (1, 3))
    g.add_state("h", (1, 4))
    g.add_state("c", (1, 4), initial=rng.uniform(-1, 1, (1, 4)))
    g.add_state("a", (2,), initial=[1, 2])
    g.add_state("b", (2,), initial=[-3, 4])
    for name in ("xw", "hr", "pre", "z", "zh", "hn", "h2", "y", "cx", "c2", "ab"):
        g.add_tensor(name, (2,) if name == "ab" else (1, 4))
    w = g.add_const("w", rng.standard_normal((4, 3)))
    r = g.add_const("r", rng.standard_normal((4, 4)))
    g.add_node("Dense", ["x", w], ["xw"], activation=None)
    g.add_node("Dense", ["h", r], ["hr"], activation=None)
    g.add_node("Add", ["xw", "hr"], ["pre"], activation=None)
    g.add_node("Activation", ["pre"], ["z"], fn="sigmoid")
    g.add_node("Mul", ["z", "h"], ["zh"], activation=None)
    g.add_node("Activation", ["xw"], ["hn"], fn="tanh")
    g.add_node("Add", ["zh", "hn"], ["h2"], activation=None)
    g.add_node("Mul", ["c", g.add_const("decay", [0.5])], ["cx"], activation=None)
    g.add_node("Add", ["cx", "xw"], ["c2"], activation=None)
    g.add_node("Add", ["h2", "c2"], ["y"], activation=None)
    g.add_node("Add", ["a", "b"], ["ab"], activation=None)
    g.inputs, g.outputs = ["x"], ["y", "h2", "ab"]
    g.state.update(h="h2", c="c2", a="b", b="a")
    g.validate()
    return g


def test_the_c_carries_the_state_like_the_interpreter():
    from tinyc.compiler import compile_graph
    from tinyc.verify import run_generated
    g = recurrent_cell()
    compiled = compile_graph(g, "cell")
    plan = compiled.plan
    # c's next value is written in place (its Add reads c's bytes element by element); h's is a model output
    # (copied at the end); the swapped pair through copies of their own
    assert plan.in_state("c2") and plan.offset_of("c2") == plan.offset_of("c")
    assert set(plan.state_copies) == {"h", "a", "b"}
    assert plan.state_bytes == 4 * (4 + 4 + 2 + 2)
    xs = np.random.default_rng(0).standard_normal((12, 1, 3)).astype(np.float32)
    ours = run_generated(compiled, [xs])
    want, _ = interp.run_frames(g, [{"x": x} for x in xs])
    for k, name in enumerate(g.outputs):
        got = ours[k]
        ref = np.stack([w[name] for w in want])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * (1 + np.abs(ref).max()))
    h = compiled.library.files["cell.h"]
    assert "#define CELL_STATE_BYTES 48" in h and "void cell_reset_state(void);" in h


def test_the_state_is_outside_the_arena():
    """Planner: no state tensor (nor in-place next value) in an arena buffer, slots disjoint inside the region.
    C: with an external arena filled with garbage between frames, the outputs stay the interpreter's."""
    from tinyc.compiler import codegen_options, compile_graph
    g = recurrent_cell()
    compiled = compile_graph(g, "cell", options=codegen_options(arena="external"))
    plan = compiled.plan
    assert not set(plan.state) & set(plan.buffer_of)
    slots = sorted((plan.offset_of(s), plan.graph.tensors[s].nbytes) for s in plan.graph.state)
    assert all(a + n <= b for (a, n), (b, _) in zip(slots, slots[1:])) and slots[-1][0] + slots[-1][1] <= 48
    assert "static struct cell_state_t cell_state_storage" in compiled.library.files["cell.c"]


HARNESS = r"""
#include <stdio.h>
#include <string.h>
#include "cell.h"
static unsigned char arena[CELL_ARENA_BYTES] __attribute__((aligned(8)));
int main(void) {
  float x[3], y[4], h[4], ab[2];
  unsigned char saved[CELL_STATE_BYTES];
  for (int pass = 0; pass < 3; ++pass) {
    for (int f = 0; f < FRAMES; ++f) {
      for (int i = 0; i < 3; ++i) x[i] = (float)((f * 7 + i * 3) % 11) / 5.0f - 1.0f;
      memset(arena, 0xA5, sizeof arena);     /* nothing of the state may live here */
      if (cell_invoke_with_arena(arena, x, y, h, ab) != 0) return 1;
      printf("%.9g %.9g %.9g %.9g %.9g %.9g %.9g\n", y[0], y[1], y[2], y[3], h[0], ab[0], ab[1]);
      if (pass == 2 && f == 2) {          /* pause the stream: another one runs, then this one resumes */
        memcpy(saved, cell_state(), sizeof saved);
        cell_reset_state();
        for (int g = 0; g < 3; ++g) cell_invoke_with_arena(arena, x, y, h, ab);
        memcpy(cell_state(), saved, sizeof saved);
      }
    }
    cell_reset_state();
  }
  return 0;
}
"""


def test_reset_state_pause_and_garbage_in_the_arena(tmp_path):
    import subprocess
    from tinyc.compiler import codegen_options, compile_graph, write_library
    from tinyc.verify import HOST_CFLAGS
    g = recurrent_cell()
    frames_n = 6
    compiled = compile_graph(g, "cell", options=codegen_options(arena="external"))
    write_library(compiled.library, str(tmp_path), force=True)
    (tmp_path / "main.c").write_text(HARNESS)
    exe = tmp_path / "run"
    subprocess.run(["gcc", *HOST_CFLAGS, f"-DFRAMES={frames_n}", "-I", str(tmp_path), str(tmp_path / "cell.c"),
                    str(tmp_path / "main.c"), "-o", str(exe), "-lm"], check=True)
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    got = np.array([[float(v) for v in line.split()] for line in lines if line])
    assert got.shape == (3 * frames_n, 7)
    np.testing.assert_array_equal(got[:frames_n], got[frames_n:2 * frames_n])    # reset_state: the same stream
    np.testing.assert_array_equal(got[:frames_n], got[2 * frames_n:])    # paused and resumed via cell_state()
    xs = [{"x": np.array([[((f * 7 + i * 3) % 11) / 5.0 - 1.0 for i in range(3)]], np.float32)}
          for f in range(frames_n)]
    want, _ = interp.run_frames(g, xs)
    ref = np.array([[*w["y"][0], w["h2"][0, 0], *w["ab"]] for w in want])
    np.testing.assert_allclose(got[:frames_n], ref, rtol=0, atol=1e-5 * (1 + np.abs(ref).max()))


# -- ONNX: state input/output pairs named by an option ----------------------------------------------------------

def gru_cell_onnx(path, hidden=8, features=5, seed=1):
    """A GRU cell from elementary ONNX ops (h_in -> h_out, same shape) beside a running sum (acc_in -> acc_out),
    outputs y = h_out @ V (a projection), h_out and acc_out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "Wz"], ["xz"]), helper.make_node("MatMul", ["h_in", "Uz"], ["hz"]),
        helper.make_node("Add", ["xz", "hz"], ["z0"]), helper.make_node("Sigmoid", ["z0"], ["z"]),
        helper.make_node("MatMul", ["x", "Wr"], ["xr"]), helper.make_node("MatMul", ["h_in", "Ur"], ["hr"]),
        helper.make_node("Add", ["xr", "hr"], ["r0"]), helper.make_node("Sigmoid", ["r0"], ["r"]),
        helper.make_node("Mul", ["r", "h_in"], ["rh"]), helper.make_node("MatMul", ["rh", "Uh"], ["rhu"]),
        helper.make_node("MatMul", ["x", "Wh"], ["xh"]), helper.make_node("Add", ["xh", "rhu"], ["n0"]),
        helper.make_node("Tanh", ["n0"], ["n"]), helper.make_node("Sub", ["one", "z"], ["zc"]),
        helper.make_node("Mul", ["zc", "n"], ["a"]), helper.make_node("Mul", ["z", "h_in"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["h_out"]), helper.make_node("MatMul", ["h_out", "V"], ["y"]),
        helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
    ]
    inits = [w("Wz", features, hidden), w("Uz", hidden, hidden), w("Wr", features, hidden), w("Ur", hidden, hidden),
             w("Wh", features, hidden), w("Uh", hidden, hidden), w("V", hidden, 3),
             numpy_helper.from_array(np.ones((1, hidden), np.float32), "one")]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "gru_stream",
        [helper.make_tensor_value_info("x", f, [1, features]), helper.make_tensor_value_info("h_in", f, [1, hidden]),
         helper.make_tensor_value_info("acc_in", f, [1, features])],
        [helper.make_tensor_value_info("y", f, [1, 3]), helper.make_tensor_value_info("h_out", f, [1, hidden]),
         helper.make_tensor_value_info("acc_out", f, [1, features])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


PAIRS = {"h_in": "h_out", "acc_in": "acc_out"}


def test_onnx_state_pairs_verified_frame_by_frame_for_50_frames(tmp_path):
    pytest.importorskip("onnxruntime")
    from tinyc.verify import verify
    path = gru_cell_onnx(tmp_path / "gru.onnx")
    report = verify(path, samples=50, state=PAIRS)
    assert report["ok"] and report["frames"] == 50, report
    rows = {r["name"]: r for r in report["state"]}
    assert rows["h_in"]["next"] == "h_out" and rows["h_in"]["update"] == "copied"   # h_out is a model output too
    assert rows["acc_in"]["bytes"] == 20
    # a frame-carried reference: the running sum after 50 frames is far from one frame's value, so a C (or an
    # oracle) that dropped the state would fail the comparison above
    assert len(report["outputs"]) == 3


def test_onnx_state_pairs_drive_the_ir_and_the_c_api(tmp_path):
    pytest.importorskip("onnx")
    from tinyc.compiler import compile_model
    path = gru_cell_onnx(tmp_path / "gru.onnx")
    c = compile_model(path, state=PAIRS)
    g = c.plan.graph
    assert len(g.inputs) == 1 and len(g.outputs) == 3 and len(g.state) == 2
    assert "#define GRU_STATE_BYTES 52" in c.library.files["gru.h"]


@pytest.mark.parametrize("pairs, message", [
    ({"h_in": "acc_out"}, "input 'h_in' (float [1, 8]) and output 'acc_out' (float [1, 5]) differ"),
    ({"nope": "h_out"}, "'nope' is not a graph input"),
    ({"h_in": "nope"}, "'nope' is not a graph output"),
    ({"h_in": "h_out", "acc_in": "h_out"}, "output 'h_out' is already the next value of another state"),
    ({"h_in": "h_out", "acc_in": "acc_out", "x": "y"}, "'x' .* and output 'y' .* differ"),
])
def test_onnx_bad_state_pairs_are_refused_in_one_line(tmp_path, pairs, message):
    pytest.importorskip("onnx")
    from tinyc.frontends import load_model
    path = gru_cell_onnx(tmp_path / "gru.onnx")
    with pytest.raises(TinycError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)").replace(r"\.\*", ".*")) as e:
        load_model(path, state=pairs)
    assert "\n" not in str(e.value)


def test_report_shows_the_state_beside_the_arena(tmp_path):
    pytest.importorskip("onnx")
    from tinyc.compiler import compile_model
    from tinyc.memory_report import format_report, memory_report
    c = compile_model(gru_cell_onnx(tmp_path / "gru.onnx"), state=PAIRS)
    r = memory_report(c)
    assert r["state_bytes"] == 52 and r["arena_bytes"] == c.plan.arena_bytes
    assert [(row["name"], row["bytes"], row["next"]) for row in r["state"]] == [("h_in", 32, "h_out"),
                                                                             ("acc_in", 20, "acc_out")]
    assert "state 52 B (static, not in the arena; reset with gru_reset_state)" in format_report(r)
    assert "state" not in memory_report(compile_model(gru_cell_onnx(tmp_path / "g2.onnx")))


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2"])
def test_onnx_state_pairs_under_qemu_for_50_frames(tmp_path, board_name):
    """The firmware runs the 50 frames in order from the initial state (M0+ and M33 under QEMU), the reference
    onnxruntime fed back its paired outputs."""
    pytest.importorskip("onnxruntime")
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    path = gru_cell_onnx(tmp_path / "gru.onnx")
    compiled = compile_model(path, state=PAIRS)
    xs = np.random.default_rng(5).standard_normal((50, 1, 5)).astype(np.float32)
    r = run_emulated(compiled, load_board(board_name), path, str(tmp_path / "fw"), inputs=[xs], profile=False)
    assert r["outputs_match"], r


@pytest.mark.parametrize("pass_name", ["drop_identity", "fold_constants", "fuse_activation", "alias_reshape"])
def test_each_pass_keeps_a_stateful_graph_computing_the_same(pass_name):
    """Every pass on the recurrent cell (with an Identity on a next value and a Reshape chain on a state read):
    the same outputs frame after frame and the same state (tests/passes/pass_checks.py)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent / "passes"))
    from pass_checks import checked
    from tinyc import passes
    g = recurrent_cell()
    g.add_tensor("h2_id", (1, 4))
    g.add_node("Identity", ["h2"], ["h2_id"])
    g.state["h"] = "h2_id"
    g.add_tensor("c_flat", (4,))
    g.add_tensor("c_back", (1, 4))
    g.add_tensor("c_relu", (1, 4))
    g.add_node("Reshape", ["c"], ["c_flat"])
    g.add_node("Reshape", ["c_flat"], ["c_back"])
    g.add_node("Activation", ["c_back"], ["c_relu"], fn="relu")
    g.outputs.append("c_relu")
    g.validate()
    out = checked(getattr(passes, pass_name), g)
    assert set(out.state) == set(g.state)


def test_a_next_value_written_over_the_state_it_reads():
    """The accumulator's Add reads s and writes s + x straight into s's slot (elementwise, same offset): no copy,
    no restrict on that layer, and the C equals the interpreter frame by frame."""
    from tinyc.compiler import compile_graph
    from tinyc.verify import run_generated
    g = accumulator(shape=(2, 3), initial=np.arange(6).reshape(2, 3) - 2.5)
    compiled = compile_graph(g, "acc")
    plan = compiled.plan
    assert plan.in_state("sum") and plan.offset_of("sum") == plan.offset_of("s") and not plan.state_copies
    c = compiled.library.files["acc.c"]
    assert ("acc_l0_add(acc_state_storage.s0, (float *)(arena + 0), acc_state_storage.s0); /* writes over its "
            "input") in c
    assert "const float *x0, const float *x1, float *y)" in c          # that layer: no restrict
    xs = np.random.default_rng(4).standard_normal((9, 2, 3)).astype(np.float32)
    ours = run_generated(compiled, [xs])[0]
    want = np.stack([o["y"] for o in interp.run_frames(g, [{"x": x} for x in xs])[0]])
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-5 * (1 + np.abs(want).max()))


def test_onnx_state_input_with_an_initializer_starts_at_it(tmp_path):
    """A state input that has an initializer (ONNX's default value for an input) starts at that value, in tinyc
    and in onnxruntime (which applies the initializer until the input is fed)."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tinyc.frontends import load_model
    from tinyc.verify import verify
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Add", ["s", "x"], ["acc"]), helper.make_node("Relu", ["acc"], ["y"])], "acc",
        [helper.make_tensor_value_info("x", f, [1, 3]), helper.make_tensor_value_info("s", f, [1, 3])],
        [helper.make_tensor_value_info("y", f, [1, 3]), helper.make_tensor_value_info("acc", f, [1, 3])],
        [numpy_helper.from_array(np.array([[2.0, -3.0, 0.5]], np.float32), "s")])
    path = str(tmp_path / "acc.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    g = load_model(path, state={"s": "acc"})
    assert [list(v.ravel()) for v in g.initial_state().values()] == [[2.0, -3.0, 0.5]]
    report = verify(path, samples=12, state={"s": "acc"})
    assert report["ok"] and report["frames"] == 12, report


def test_a_copied_next_value_stays_live_to_the_end():
    """v is computed first and read by nothing; the state it updates is read last (so v cannot go into the slot
    early). Without v live to the end, the chain of large layers after it would reuse its bytes before the copy."""
    from tinyc.compiler import compile_graph
    from tinyc.verify import run_generated
    rng = np.random.default_rng(7)
    g = Graph("late")
    g.add_tensor("x", (1, 64))
    g.add_state("s", (1, 64), initial=rng.standard_normal((1, 64)))
    g.add_tensor("v", (1, 64))
    g.add_node("Dense", ["x", g.add_const("w", rng.standard_normal((64, 64)) * 0.1)], ["v"], activation=None)
    prev = "x"
    for k in range(4):
        g.add_tensor(f"t{k}", (1, 96))
        w = g.add_const(f"w{k}", rng.standard_normal((96, g.tensors[prev].shape[1])) * 0.1)
        g.add_node("Dense", [prev, w], [f"t{k}"], activation={"fn": "relu"})
        prev = f"t{k}"
    g.add_tensor("back", (1, 64))
    g.add_node("Dense", [prev, g.add_const("wb", rng.standard_normal((64, 96)) * 0.1)], ["back"], activation=None)
    g.add_tensor("y", (1, 64))
    g.add_node("Add", ["back", "s"], ["y"], activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    g.state["s"] = "v"
    g.validate()
    compiled = compile_graph(g, "late")
    plan = compiled.plan
    assert plan.state_copies == {"s": "v"}
    assert plan.buffer_of["v"].end == len(plan.graph.nodes) - 1
    xs = rng.standard_normal((6, 1, 64)).astype(np.float32)
    ours = run_generated(compiled, [xs])[0]
    want = np.stack([o["y"] for o in interp.run_frames(g, [{"x": x} for x in xs])[0]])
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-5 * (1 + np.abs(want).max()))


def test_the_state_counts_in_the_boards_sram():
    """A tiny arena beside 280,000 B of state does not fit the pico's 256 KB arena region: refused in one line."""
    from tinyc.boards import load_board
    from tinyc.compiler import compile_graph
    from tinyc.firmware.project import check_firmware_fits
    g = Graph("big")
    g.add_tensor("x", (4,))
    g.add_tensor("y", (4,))
    g.add_state("memory", (70000,))
    g.state["memory"] = "memory"
    g.add_node("Add", ["x", "x"], ["y"], activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    compiled = compile_graph(g, "big")
    assert compiled.plan.state_bytes == 280000 and compiled.plan.arena_bytes < 100
    with pytest.raises(TinycError, match=r"and 280,000 B of streaming state, the board's SRAM0-3 has") as e:
        check_firmware_fits(compiled, load_board("pico"))
    assert "\n" not in str(e.value)
