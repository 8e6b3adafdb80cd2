"""tinyc's ONNX backend (tinyc/onnx_backend.py) and the conformance bench (bench/onnx_conformance.py) on small
models of our own: parameter inputs bound and cached per value set, outputs in ONNX's layout, refusals as the
one-line TinycError, tinyc bugs as crashes, the suite's bookkeeping (scope, op type, reasons, tolerance)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tinyc import onnx_backend as ob
from tinyc.errors import TinycError
from tinyc.onnx_backend import (
    GeneratedCodeError,
    SuiteCase,
    TinycBackend,
    classify_error,
    compare_outputs,
    main_op,
    out_of_scope,
    parameter_inputs,
    refusal_reason,
)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "onnx_conformance.py"


def model(nodes, inputs, outputs, opset=13, inits=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


F = TensorProto.FLOAT


def conv_relu_model():
    """Conv (W, B graph inputs) -> Clip (min, max graph inputs) -> Reshape (shape a graph input)."""
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["k"]),
             helper.make_node("Reshape", ["k", "shape"], ["y"])]
    return model(nodes, [("x", F, [1, 2, 5, 5]), ("W", F, [3, 2, 3, 3]), ("B", F, [3]), ("lo", F, []),
                         ("hi", F, []), ("shape", TensorProto.INT64, [2])],
                 [("y", F, [1, 75])])


def ort_run(m, feeds):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_parameter_inputs_are_the_table_positions():
    m = conv_relu_model()
    assert parameter_inputs(m) == ["W", "B", "lo", "hi", "shape"]
    # an input feeding a data position stays data, initializers are not inputs to bind
    m2 = model([helper.make_node("Add", ["x", "b"], ["y"])], [("x", F, [1, 4]), ("b", F, [1, 4])], [("y", F, [1, 4])])
    assert parameter_inputs(m2) == []
    m3 = model([helper.make_node("Conv", ["x", "W"], ["y"])], [("x", F, [1, 1, 3, 3])], [("y", F, [1, 1, 3, 3])],
               inits=[onnx.numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "W")])
    assert parameter_inputs(m3) == []
    # an embedding: the indices are the data when the table is a constant; with a computed table, a parameter
    table = onnx.numpy_helper.from_array(np.ones((5, 2), np.float32), "table")
    m4 = model([helper.make_node("Gather", ["table", "i"], ["y"])], [("i", TensorProto.INT64, [3])],
               [("y", F, [3, 2])], inits=[table])
    assert parameter_inputs(m4) == []
    m5 = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Gather", ["r", "i"], ["y"])],
               [("x", F, [5, 2]), ("i", TensorProto.INT64, [3])], [("y", F, [3, 2])])
    assert parameter_inputs(m5) == ["i"]


def test_run_binds_parameters_caches_per_value_set_and_matches_onnxruntime():
    m = conv_relu_model()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    params = {"W": rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "B": rng.standard_normal(3).astype(np.float32),
              "lo": np.array(-0.5, np.float32), "hi": np.array(1.5, np.float32), "shape": np.array([1, 75], np.int64)}
    rep = TinycBackend.prepare(m)
    order = ["x", "W", "B", "lo", "hi", "shape"]
    feeds = {"x": x, **params}
    ours = rep.run([feeds[n] for n in order])
    ref = ort_run(m, feeds)[0]
    assert ours[0].shape == ref.shape == (1, 75) and ours[0].dtype == np.float32
    np.testing.assert_allclose(ours[0], ref, rtol=1e-5, atol=1e-5)
    assert ours["y"] is ours[0]                                # outputs by name too
    x2 = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(rep.run({**feeds, "x": x2})[0], ort_run(m, {**feeds, "x": x2})[0], rtol=1e-5, atol=1e-5)
    assert len(rep._programs) == 1                              # new data, same parameters: compiled once
    feeds3 = {**feeds, "hi": np.array(0.25, np.float32)}
    out3 = rep.run(feeds3)[0]
    assert len(rep._programs) == 2 and out3.max() <= 0.25
    np.testing.assert_allclose(out3, ort_run(m, feeds3)[0], rtol=1e-5, atol=1e-5)


def test_outputs_come_back_in_onnx_layout():
    """An NCHW conv output (NHWC inside tinyc) is returned NCHW, as the model declares it."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    m = model([helper.make_node("Conv", ["x", "W"], ["y"])], [("x", F, [1, 3, 2, 5]), ("W", F, [4, 3, 1, 1])],
              [("y", F, [1, 4, 2, 5])])
    x = rng.standard_normal((1, 3, 2, 5)).astype(np.float32)
    out = TinycBackend.run_model(m, [x, w])[0]
    assert out.shape == (1, 4, 2, 5)
    np.testing.assert_allclose(out, np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x), rtol=1e-5, atol=1e-5)


def test_run_node():
    x = np.array([[-1.0, 0.5, 2.0, -3.0]], np.float32)
    out = TinycBackend.run_node(helper.make_node("Relu", ["x"], ["y"]), [x], opset_version=13)
    np.testing.assert_array_equal(out[0], np.maximum(x, 0))


def test_a_refusal_is_the_one_line_tinyc_error():
    m = model([helper.make_node("Erf", ["x"], ["y"])], [("x", F, [3, 4])], [("y", F, [3, 4])])
    m.opset_import[0].version = 99
    rep = TinycBackend.prepare(m)
    with pytest.raises(TinycError, match="opset 99 is unknown") as e:
        rep.run([np.zeros((3, 4), np.float32)])
    assert "\n" not in str(e.value)
    assert classify_error(e.value)[0] == "refused"
    with pytest.raises(TinycError, match="1 input"):
        rep.run([np.zeros((3, 4), np.float32)] * 2)
    assert not TinycBackend.supports_device("CUDA") and TinycBackend.supports_device("CPU")


def test_generated_code_failures_are_crashes(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [1, 4])], [("y", F, [1, 4])])
    rep = TinycBackend.prepare(m)
    compiled = rep.compile({}, [(1, 4)])
    c_file = f"{compiled.library.prefix}.c"
    compiled.library.files[c_file] += "\nstatic int unused_thing;\n"      # -Werror: unused variable
    with pytest.raises(GeneratedCodeError, match="does not compile") as e:
        ob.build_program(compiled, str(tmp_path / "a"))
    assert classify_error(e.value)[0] == "crash"
    # an out-of-bounds write before the model runs (as a wrong arena size would make one): the sanitizers stop it
    compiled = rep.compile({}, [(1, 4)])
    compiled.library.files[c_file] = "#include <string.h>\n" + compiled.library.files[c_file] + \
        "\nvoid tinyc_oob(float *p);\nvoid tinyc_oob(float *p) { memset(p, 0, 4096); }\n"
    prog = ob.build_program(compiled, str(tmp_path / "b"))
    runner = Path(prog.workdir, f"{ob._RUNNER}.c")
    invoke = f"  int rc = {compiled.library.prefix}_invoke("
    runner.write_text(runner.read_text().replace(invoke, f"  void tinyc_oob(float *p);\n  tinyc_oob(out0);\n{invoke}"))
    sources = [str(Path(prog.workdir, n)) for n in sorted(compiled.library.files) if n.endswith(".c")]
    subprocess.run([shutil.which("gcc"), *ob.HOST_CFLAGS, "-I", prog.workdir, *sources, str(runner), "-o", prog.exe,
                    "-lm"], check=True)
    with pytest.raises(GeneratedCodeError, match="failed at run time") as e:
        ob.run_program(prog, [np.zeros((1, 4), np.float32)])
    assert classify_error(e.value)[0] == "crash"
    assert classify_error(TinycError("internal: a Reshape changes the number of values"))[0] == "crash"
    assert classify_error(TinycError("ONNX Gemm 'g': malformed node (IndexError: x)"))[0] == "crash"
    assert classify_error(ValueError("boom")) == ("crash", "ValueError: boom")
    assert classify_error(AssertionError("Not equal\n mismatch"))[0] == "wrong"


def test_out_of_scope():
    def one(inputs, outputs, node=None):
        return out_of_scope(model([node or helper.make_node("Identity", ["x"], ["y"])], inputs, outputs))
    assert one([("x", F, [1])], [("y", F, [1])]) is None
    assert one([("x", TensorProto.INT64, [1])], [("y", TensorProto.INT64, [1])]) is None
    assert one([("x", TensorProto.FLOAT16, [1])], [("y", TensorProto.FLOAT16, [1])]) == "float16"
    assert one([("x", TensorProto.DOUBLE, [1])], [("y", F, [1])]) == "double"
    assert one([("x", F, [1])], [("y", TensorProto.STRING, [1])]) == "string"
    assert one([("x", F, [1]), ("r", F, []), ("t", TensorProto.BOOL, [])], [("y", F, [1])],
               helper.make_node("Dropout", ["x", "r", "t"], ["y"])) == "training"
    seq = helper.make_graph([helper.make_node("SequenceConstruct", ["x"], ["s"])], "g",
                            [helper.make_tensor_value_info("x", F, [1])],
                            [helper.make_tensor_sequence_value_info("s", F, [1])])
    assert out_of_scope(helper.make_model(seq)) == "sequence"


def test_main_op_of_expanded_and_multi_node_cases():
    base = SuiteCase("test_softmax_axis_0", "node", model([helper.make_node("Softmax", ["x"], ["y"])],
                                                         [("x", F, [1])], [("y", F, [1])]))
    expanded = SuiteCase("test_softmax_axis_0_expanded_ver18", "node",
                         model([helper.make_node("ReduceMax", ["x"], ["m"]), helper.make_node("Sub", ["x", "m"], ["y"])],
                               [("x", F, [1])], [("y", F, [1])]))
    by_name = {c.name: c for c in (base, expanded)}
    assert main_op(expanded, by_name) == "Softmax"
    torch_like = SuiteCase("test_PixelShuffle_like", "pytorch-operator",
                           model([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
                                 [("x", F, [1]), ("s", TensorProto.INT64, [1])], [("y", F, [1])]))
    assert main_op(torch_like) == "Relu"


def test_refusal_reasons():
    assert refusal_reason("unsupported ONNX op 'Resize' (node 'n'); run `tinyc ops` to see supported ops") == \
        "op Resize unsupported"
    assert refusal_reason("unsupported ONNX op 'Shape' on computed tensors (node 'n'); run `tinyc ops`") == \
        "op Shape on computed tensors"
    assert refusal_reason("input 'x' has batch size 3; tinyc compiles batch 1") == "batch"
    assert refusal_reason("ONNX opset 6 is not supported (tinyc reads opsets 11-23); convert it") == "opset"
    assert refusal_reason("input 'x' is float16; tinyc's runtime tensors are float32, ...") == "dtype: input type"
    assert refusal_reason("node 'y' (Add) computes on int32 tensors; tinyc's Add kernel takes float32: run") == \
        "dtype: Add on int32"
    assert refusal_reason("node 'n' (MaxPool) has a rank-5 input; tinyc supports 1-D and 2-D spatial ops") == "rank"
    # anything else: the first clause with names and numbers blanked, so that alike messages group
    assert refusal_reason("pooling node 'p1' uses dilations [2, 2]; not supported") == \
        refusal_reason("pooling node 'other' uses dilations [3, 1]; not supported")


def test_compare_outputs_is_tinyc_s_criterion():
    ref = np.array([[1.0, -2.0, 100.0]], np.float32)
    tol = 1e-4 * 101
    assert compare_outputs([ref + np.float32(0.9 * tol)], [ref]) is None
    assert "max abs error" in compare_outputs([ref + np.float32(1.1 * tol)], [ref])
    assert "shape" in compare_outputs([ref.reshape(3, 1)], [ref])
    assert compare_outputs([np.array([1, 2], np.int32)], [np.array([1, 2], np.int64)]) is None
    assert "integer" in compare_outputs([np.array([1, 3], np.int64)], [np.array([1, 2], np.int64)])
    nan = np.array([np.nan, np.inf, 1.0], np.float32)
    assert compare_outputs([nan.copy()], [nan]) is None
    assert "NaN" in compare_outputs([np.array([0.0, np.inf, 1.0], np.float32)], [nan])
    assert "NaN" in compare_outputs([np.array([np.nan, -np.inf, 1.0], np.float32)], [nan])


def _bench():
    spec = importlib.util.spec_from_file_location("onnx_conformance", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_isolates_hangs_and_dying_cases(monkeypatch):
    """Each case runs in a forked child: one that hangs is killed at the time-out, one that dies is a crash, and
    the others are still classified."""
    bench = _bench()

    def fake_run_case(case):
        if case.name == "hang":
            time.sleep(60)
        if case.name == "die":
            os._exit(7)
        return "pass", ""
    monkeypatch.setattr(ob, "run_case", fake_run_case)
    cases = [SuiteCase(n, "node", op="Relu") for n in ("ok1", "hang", "die", "ok2")]
    t0 = time.monotonic()
    results = bench.run_all(cases, jobs=2, timeout=2)
    assert time.monotonic() - t0 < 30
    got = {r["name"]: (r["status"], r["detail"]) for r in results}
    assert got["ok1"] == got["ok2"] == ("pass", "")
    assert got["hang"][0] == "crash" and "time-out" in got["hang"][1]
    assert got["die"][0] == "crash" and "exit code 7" in got["die"][1]


def test_bench_table_and_json(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "r.json"
    assert bench.main(["--ops", "GlobalAveragePool,DFT", "--kinds", "node", "--jobs", "2", "--json", str(out),
                       "--quiet"]) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    by_name = {r["name"]: r for r in data["cases"]}
    assert by_name["test_globalaveragepool"]["status"] == "pass"
    assert by_name["test_dft"]["status"] == "refused" and by_name["test_dft"]["detail"] == "op DFT unsupported"
    s = data["summary"]
    assert s["cases"] == len(data["cases"]) == sum(s["counts"].values())
    assert "GlobalAveragePool" in s["op_types_passing"]
    assert "*GlobalAveragePool" in text and "refused, by reason:" in text and "WRONG" in text


def test_run_case_classifies_pass_wrong_refused_and_scope():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [1, 4])], [("y", F, [1, 4])])
    x = np.array([[-1.0, 0.5, 2.0, -3.0]], np.float32)
    assert ob.run_case(SuiteCase("ok", "node", m, data_sets=[([x], [np.maximum(x, 0)])])) == ("pass", "")
    status, detail = ob.run_case(SuiteCase("bad", "node", m, data_sets=[([x], [np.maximum(x, 0) + 0.01])]))
    assert status == "wrong" and "max abs error" in detail
    m3 = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [3, 0])], [("y", F, [3, 0])])
    x3 = np.zeros((3, 0), np.float32)
    assert ob.run_case(SuiteCase("empty", "node", m3, data_sets=[([x3], [x3])])) == ("pass", "")   # (constant)
    m16 = model([helper.make_node("Relu", ["x"], ["y"])], [("x", TensorProto.FLOAT16, [1])],
                [("y", TensorProto.FLOAT16, [1])])
    assert ob.run_case(SuiteCase("half", "node", m16)) == ("out-of-scope", "float16")
