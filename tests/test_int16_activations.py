"""TFLite's 16x8 LOGISTIC, TANH and SOFTMAX (docs/int16-numerics.md §5): tinyc's numpy twin of each kernel
(tinyc/quant/int16_activations.py) against TF 2.21's BUILTIN_REF interpreter on single-op .tflite files written
by tinyc's writer — LOGISTIC and TANH on all 65,536 int16 inputs, SOFTMAX on rows of every kind — and the
parameters tinyc refuses."""
import importlib.util
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs tensorflow", allow_module_level=True)

from tinyc.errors import TinycError  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402
from tinyc.quant import int16_activations as A  # noqa: E402
from tinyc.quant.tflite_writer import write_tflite  # noqa: E402
from tinyc.reference import TFLiteRejected, run_tflite  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
EVERY_INT16 = np.arange(-32768, 32768, dtype=np.int16).reshape(1, -1)
# powers of two as TFLite reads them (2^-12 for both, 2^-11 for TANH only), scales within 1e-3 in log2 of one
# (taken as it) or just beyond, the converter's kind of scale (about 1e-4 .. 1e-3) and the extremes accepted
SIGMOID_SCALES = [2.0 ** -12, 2.0 ** -11, 2.0 ** -12 * 1.00068, 2.0 ** -12 * 1.0007, 2.0 ** -11 * 0.99932,
                  2.38e-4, 1e-3, 0.3, 5.3, 1e-13]
if FULL:
    SIGMOID_SCALES += [float(s) for s in np.exp(np.random.default_rng(20).uniform(np.log(1e-9), np.log(5.3), 24))]


def _quant(scale):
    return Quant(np.asarray(scale, np.float32), np.asarray(0, np.int64))


def _single_op(tmp_path, op, shape, s_in, s_out, **attrs) -> str:
    g = Graph(op.lower())
    g.add_tensor("x", shape, "int16", quant=_quant(s_in))
    g.add_tensor("y", shape, "int16", quant=_quant(s_out))
    g.add_node(op, ["x"], ["y"], **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    path = str(tmp_path / f"{g.name}.tflite")
    write_tflite(g, path)
    return path


def _tflite(path, x):
    return run_tflite(path, [[x]])[0][0][0]


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
@pytest.mark.parametrize("s_in", SIGMOID_SCALES)
def test_sigmoid_tanh_every_input(tmp_path, fn, s_in):
    s_in = float(np.float32(s_in))
    mult, shift = A.sigmoid_tanh_rescale(fn, s_in, "test")
    ours = A.sigmoid_tanh(fn, EVERY_INT16, mult, shift)
    ref = _tflite(_single_op(tmp_path, "Activation", EVERY_INT16.shape, s_in, A.OUT_SCALE, fn=fn), EVERY_INT16)
    assert np.count_nonzero(ours != ref) == 0
    if s_in > 1e-6:     # (below, every input rounds to 0 at the table's scale: a constant output)
        assert len(np.unique(ours)) > 2


def test_power_of_two_reading():
    """2^-11 is a power of two for TANH (x * 6) but not for LOGISTIC (multiplier 24576 >> 12); a scale 0.07 %
    off 2^-12 is still 2^-12 (CheckedLog2's tolerance is 1e-3 in log2)."""
    assert A.sigmoid_tanh_rescale("tanh", 2.0 ** -11, "t") == (6, 0)
    assert A.sigmoid_tanh_rescale("sigmoid", 2.0 ** -11, "t") == (24576, 12)
    assert A.sigmoid_tanh_rescale("sigmoid", float(np.float32(2.0 ** -12 * 1.00068)), "t") == (3, 0)
    assert A.sigmoid_tanh_rescale("sigmoid", float(np.float32(2.0 ** -12 * 1.0007)), "t")[0] != 3


@pytest.mark.parametrize("fn, s_in, s_out, words", [
    ("sigmoid", 5.34, A.OUT_SCALE, "below 5.3"),
    ("tanh", 3e-14, A.OUT_SCALE, "below 4e-14"),
    ("sigmoid", 1e-3, A.OUT_SCALE * 1.0005, "requires 1/32768"),
    ("tanh", 1e-3, A.OUT_SCALE * 1.001, "requires 1/32768"),
])
def test_sigmoid_tanh_refusals(fn, s_in, s_out, words):
    with pytest.raises(TinycError, match=words):
        A.sigmoid_tanh_rescale(fn, float(np.float32(s_in)), "node 'n'")
        A.check_sigmoid_tanh_output(fn, float(np.float32(s_out)), "node 'n'")


def test_tanh_output_scale_tolerance_is_tflites(tmp_path):
    """TANH accepts an output scale 0.05 % off 1/32768 (and computes the same integers); LOGISTIC does not."""
    s_out = float(np.float32(A.OUT_SCALE * 1.0005))
    A.check_sigmoid_tanh_output("tanh", s_out, "t")
    with pytest.raises(TinycError):
        A.check_sigmoid_tanh_output("sigmoid", s_out, "t")
    x = EVERY_INT16[:, ::97]
    ref = _tflite(_single_op(tmp_path, "Activation", x.shape, 1e-3, s_out, fn="tanh"), x)
    assert np.array_equal(ref, A.sigmoid_tanh("tanh", x, *A.sigmoid_tanh_rescale("tanh", 1e-3, "t")))
    with pytest.raises(TFLiteRejected):
        _tflite(_single_op(tmp_path, "Activation", x.shape, 1e-3, s_out, fn="sigmoid"), x)


def _softmax_rows(rng, rows: int, n: int) -> np.ndarray:
    """Random rows, then rows that are near-equal, all maximum, all minimum, one-hot, and spanning the range."""
    x = rng.integers(-32768, 32768, (rows, n))
    kinds = [rng.integers(-100, 100, n), np.full(n, 32767), np.full(n, -32768),
             np.where(np.arange(n) == rng.integers(n), 32767, -32768), rng.integers(-3000, 3000, n)]
    for i, row in enumerate(kinds[:rows]):
        x[i] = row
    return x.astype(np.int16)


@settings(max_examples=40 if FULL else 8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log_scale=st.floats(np.log(1e-12), np.log(4.9)), n=st.integers(1, 300), rows=st.integers(1, 7),
       lead=st.sampled_from([(), (2,), (1, 2)]), seed=st.integers(0, 2 ** 16))
def test_softmax_rows(tmp_path, log_scale, n, rows, lead, seed):
    s_in = float(np.float32(np.exp(log_scale)))
    shape = lead + (rows, n)
    x = _softmax_rows(np.random.default_rng(seed), int(np.prod(shape[:-1])), n).reshape(shape)
    mult, shift = A.softmax_rescale(s_in, 1.0, "test")
    exp_lut, recip_lut = A.softmax_tables()
    ref = _tflite(_single_op(tmp_path, "Softmax", shape, s_in, A.OUT_SCALE, axis=len(shape) - 1), x)
    assert np.count_nonzero(A.softmax(x, mult, shift, exp_lut, recip_lut) != ref) == 0


@pytest.mark.parametrize("beta", [0.001, 0.37, 2.0, 7.3])
def test_softmax_beta(tmp_path, beta):
    """beta scales the logits in float32 before the rescale (TFLite's f32(s_in * beta))."""
    s_in = float(np.float32(1.3e-4))
    x = _softmax_rows(np.random.default_rng(7), 6, 50)
    ref = _tflite(_single_op(tmp_path, "Softmax", x.shape, s_in, A.OUT_SCALE, axis=1, beta=beta), x)
    ours = A.softmax(x, *A.softmax_rescale(s_in, beta, "t"), *A.softmax_tables())
    assert np.count_nonzero(ours != ref) == 0


def test_softmax_tables_are_tflites_double_ones():
    """The two tables TF 2.21 builds in double: e^0 saturates to 32767; e^-10 (1.49 in Q0.15) is 2 after the
    midpoint correction; 1/(1+0) is 32767 and 1/(1+1) 16384."""
    exp_lut, recip_lut = A.softmax_tables()
    assert len(exp_lut) == len(recip_lut) == A.LUT_SIZE
    assert (exp_lut[0], exp_lut[-1], recip_lut[0], recip_lut[-1]) == (2, 32767, 32767, 16384)
    assert all(a <= b for a, b in zip(exp_lut, exp_lut[1:])) and all(a >= b for a, b in zip(recip_lut, recip_lut[1:]))


@pytest.mark.parametrize("s_in, beta, s_out, words", [
    (5.001, 1.0, A.OUT_SCALE, "below 5"),
    (1.0, 7.3, A.OUT_SCALE, "below 5"),
    (1e-3, 1.0, A.OUT_SCALE * 1.002, "requires 1/32768"),
    (1e-3, 1.0, 1.0 / 256, "requires 1/32768"),
])
def test_softmax_refusals(s_in, beta, s_out, words):
    with pytest.raises(TinycError, match=words):
        A.softmax_rescale(float(np.float32(s_in)), beta, "node 'n'")
        A.check_softmax_output(float(np.float32(s_out)), "node 'n'")


# -- tinyc's C: every int16 input (LOGISTIC / TANH) and rows of every kind (SOFTMAX), both kernel sets ------------
C_SCALES = [2.0 ** -12, 2.0 ** -11, 2.38e-4, 0.3] + ([1e-13, 5.3, 2.0 ** -12 * 1.0007, 0.0117] if FULL else [])
SOFTMAX_CASES = [((1, 7, 33), 1e-3), ((1, 2, 2, 300), 3e-5), ((1, 3, 1), 4.9), ((1, 2, 64), 1e-12), ((1, 10), 2.38e-4)]
if FULL:
    SOFTMAX_CASES += [((1, 4096), 1e-4), ((1, 3, 5, 7), 0.05)]


def _activations_graph(scales, softmax_cases, width: int = 65536) -> Graph:
    """Per scale an input of `width` int16 values (every one by default) into a sigmoid and a tanh; per softmax case
    an input and a softmax."""
    g = Graph("activations16")
    for i, s in enumerate(scales):
        g.add_tensor(f"x{i}", (1, width), "int16", quant=_quant(s))
        for fn in ("sigmoid", "tanh"):
            g.add_tensor(f"{fn}{i}", (1, width), "int16", quant=_quant(A.OUT_SCALE))
            g.add_node("Activation", [f"x{i}"], [f"{fn}{i}"], fn=fn)
            g.outputs.append(f"{fn}{i}")
        g.inputs.append(f"x{i}")
    for i, (shape, s) in enumerate(softmax_cases):
        g.add_tensor(f"s{i}", shape, "int16", quant=_quant(s))
        g.add_tensor(f"softmax{i}", shape, "int16", quant=_quant(A.OUT_SCALE))
        g.add_node("Softmax", [f"s{i}"], [f"softmax{i}"], axis=len(shape) - 1)
        g.inputs.append(f"s{i}")
        g.outputs.append(f"softmax{i}")
    return g


def _activations_inputs(scales, softmax_cases, samples: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    every = [np.repeat(EVERY_INT16[None], samples, axis=0)] * len(scales)
    return every + [_softmax_rows(rng, samples * int(np.prod(shape[:-1])), shape[-1]).reshape((samples, *shape))
                    for shape, _ in softmax_cases]


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_c_every_input_and_row(tmp_path, kernels):
    """tinyc's C (host, ASan/UBSan): LOGISTIC and TANH on all 65,536 inputs at each scale, SOFTMAX on rows of every
    kind (3 samples), equal to TFLite's."""
    from tinyc.compiler import codegen_options
    from tinyc.verify import verify
    scales = [float(np.float32(s)) for s in C_SCALES]
    cases = [(shape, float(np.float32(s))) for shape, s in SOFTMAX_CASES]
    path = tmp_path / "activations16.tflite"
    write_tflite(_activations_graph(scales, cases), str(path))
    report = verify(str(path), inputs=_activations_inputs(scales, cases, 3, 11),
                    options=codegen_options(kernels=kernels))
    assert report["mismatched_bytes"] == 0 and report["ok"], report["outputs"]


def _compile_refused(tmp_path, g):
    from tinyc.compiler import compile_model
    path = tmp_path / f"{g.name}.tflite"
    write_tflite(g, str(path))
    with pytest.raises(TinycError) as e:
        compile_model(str(path))
    assert "\n" not in str(e.value) and "node '" in str(e.value)
    return str(e.value)


def _one_op_graph(op, in_dtype, out_dtype, out_scale=A.OUT_SCALE, **attrs) -> Graph:
    g = Graph(f"{op.lower()}_{in_dtype}_{out_dtype}")
    g.add_tensor("x", (1, 8), in_dtype, quant=_quant(1e-3))
    g.add_tensor("y", (1, 8), out_dtype, quant=_quant(out_scale))
    g.add_node(op, ["x"], ["y"], **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def test_c_refusals_name_the_node(tmp_path):
    assert "5.3" in _compile_refused(tmp_path, _activations_graph([5.4], []))
    assert "1 to 4 dimensions" in _compile_refused(tmp_path, _activations_graph([], [((1, 2, 2, 2, 3), 1e-3)]))
    assert "below 5" in _compile_refused(tmp_path, _activations_graph([], [((1, 8), 6.0)]))
    assert "int16 in and out" in _compile_refused(tmp_path, _one_op_graph("Softmax", "int8", "int16", axis=1))
    assert "int16 in and out" in _compile_refused(tmp_path, _one_op_graph("Activation", "int16", "int8", fn="tanh"))
    assert "requires 1/32768" in _compile_refused(tmp_path, _one_op_graph("Softmax", "int16", "int16", 1 / 256,
                                                                          axis=1))
    assert "16x8 activations are" in _compile_refused(tmp_path, _one_op_graph("Activation", "int16", "int16",
                                                                              fn="exp"))


@settings(max_examples=20 if FULL else 3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log_scales=st.lists(st.floats(np.log(1e-12), np.log(4.9)), min_size=2, max_size=2),
       n=st.integers(1, 300), lead=st.sampled_from([(1,), (1, 3), (1, 2, 2)]),
       kernels=st.sampled_from(["fast", "reference"]), seed=st.integers(0, 2 ** 16))
def test_c_property(tmp_path, log_scales, n, lead, kernels, seed):
    """Random 16x8 softmax shapes and scales, a sigmoid and a tanh at another scale, compiled from the written
    .tflite: 0 differing values against TFLite (host C under ASan/UBSan, DSP paths emulated)."""
    from tinyc.compiler import codegen_options
    from tinyc.verify import verify
    s_act, s_soft = (float(np.float32(np.exp(v))) for v in log_scales)
    cases = [(lead + (n,), s_soft)]
    path = tmp_path / "property16.tflite"
    write_tflite(_activations_graph([s_act], cases, width=4095), str(path))     # odd: the DSP paths' last value
    x = np.random.default_rng(seed).integers(-32768, 32768, (2, 1, 4095)).astype(np.int16)
    report = verify(str(path), inputs=[x] + _activations_inputs([], cases, 2, seed),
                    options=codegen_options(kernels=kernels))
    assert report["mismatched_bytes"] == 0 and report["ok"], report["outputs"]


def test_fast_softmax_is_chosen(tmp_path):
    """The fast kernel set takes int8_fast/softmax_int16 and int8_fast/sigmoid_tanh_int16 (their DSP paths run on
    the host in the verifies above)."""
    from tinyc.compiler import codegen_options, compile_model
    path = tmp_path / "activations16.tflite"
    write_tflite(_activations_graph([2.38e-4], SOFTMAX_CASES[:2]), str(path))
    kernels = {row["op"]: row["kernel"] for row in compile_model(str(path), options=codegen_options()).library.layers}
    assert kernels["Softmax"] == "int8_fast/softmax_int16" and kernels["Activation"] == "int8_fast/sigmoid_tanh_int16"


@pytest.mark.skipif(not FULL or not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="TINYC_FULL=1 with arm-none-eabi-gcc and qemu-system-arm")
def test_fast_and_reference_under_qemu(tmp_path):
    """Every 16th int16 value through LOGISTIC and TANH, softmax rows of every kind, on the emulated Cortex-M4
    (mps2-an386: the DSP paths) and M0+ (mps2-an385): both kernel sets equal the host build, which equals TFLite."""
    from tinyc.boards import load_board
    from tinyc.compiler import codegen_options, compile_graph, write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.verify import run_generated
    x = np.arange(-32768, 32768, 16, dtype=np.int16).reshape(1, -1)
    cases = [((1, 7, 33), float(np.float32(1e-3))), ((1, 3, 64), float(np.float32(3e-5))),
             ((1, 2, 9), float(np.float32(4.9)))]
    g = _activations_graph([float(np.float32(2.38e-4))], cases, width=x.size)
    inputs = [np.repeat(x[None], 2, axis=0)] + _activations_inputs([], cases, 2, 5)
    host = None
    for kernels in ("fast", "reference"):
        compiled = compile_graph(g, "m", options=codegen_options(kernels=kernels))
        outputs = run_generated(compiled, inputs)
        host = outputs if host is None else host
        for k, (a, b) in enumerate(zip(outputs, host)):
            np.testing.assert_array_equal(a, b, err_msg=f"{kernels} output {k} on the host")
        for board in ("nucleo-f412zg", "pico"):
            out = tmp_path / f"{kernels}-{board}"
            write_library(compiled.library, str(out), force=True)
            write_firmware(compiled, load_board(board), str(out), inputs)
            run = emulate(compiled, load_board(board), out, profile=True)
            for k, (a, b) in enumerate(zip(run["outputs"], host)):
                np.testing.assert_array_equal(a, b, err_msg=f"{kernels} output {k} on {board}")
            per_op = {row["op"]: 0 for row in run["layers"]}
            for row in run["layers"]:
                per_op[row["op"]] += row["instructions"]
            print(f"{kernels} on {board}: {run['instructions']:,} instructions; per op {per_op}")
