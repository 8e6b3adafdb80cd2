"""SVDF (TFLite's keyword-spotting layer): float32 and int8 with an int16 memory, the memory carried across
invocations as TFLite and TFLite Micro keep their variable tensor (tinyc/ops/svdf.py, docs/int8-numerics.md §4.39).

No converter writes SVDF, so the models are written here with TF's flatbuffer schema module (object API), the
memory a variable tensor, in the shapes of TFLite Micro's keyword model's SVDF layers (40 features, rank 1 and 2,
memory 10). The oracle is TFLite's interpreter with its reference kernels, whose variables persist across
invoke(); TFLite Micro's interpreter is checked to agree with it.
"""
import importlib.util
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("the TFLite tests need tensorflow", allow_module_level=True)

from tinyc import interp  # noqa: E402
from tinyc.compiler import compile_graph, compile_model  # noqa: E402
from tinyc.codegen.literals import c_storage_dtype  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.frontends.tflite_import import load_tflite  # noqa: E402
from tinyc.verify import build_host_runner, run_generated, tolerance  # noqa: E402

RELU = 1    # ActivationFunctionType
# Two stacked SVDF layers in the shape of TFLite Micro's keyword model's: 40 features -> 64 filters of rank 1 ->
# 32 filters of rank 2, memory 10 each
KWS_LAYERS = [(64, 10, 1), (32, 10, 2)]


def svdf_model(int8: bool, features=40, filters=16, memory=10, rank=2, bias=True, activation=RELU, seed=0,
               scales=None, memory_type="INT16", memory_zero_point=0, variable=True, feature_type=None,
               layers=None) -> bytes:
    """An SVDF .tflite: input [1, features] through `layers` (filters, memory, rank) one after another, each
    layer's output the next one's input (default: one layer of `filters`, `memory`, `rank`). int8: int8 input,
    feature weights and outputs, int16 time weights and memories, int32 biases; `scales` overrides the default
    scales (x, wf, mem, wt, y) and zero points (x_zp, y_zp), the same for every layer."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S
    rng = np.random.default_rng(seed)
    s = dict(x=0.05, wf=0.01, mem=0.0017, wt=1.4e-6, y=0.03, x_zp=3, y_zp=-5) | (scales or {})
    buffers, tensors, operators = [S.BufferT()], [], []

    def tensor(name, shape, kind, data=None, scale=None, zero_point=0, is_variable=False):
        buf = S.BufferT()
        if data is not None:
            buf.data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        buffers.append(buf)
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer, t.isVariable = name, list(shape), getattr(S.TensorType, kind), \
            len(buffers) - 1, is_variable
        if scale is not None:
            q = S.QuantizationParametersT()
            q.scale, q.zeroPoint = np.asarray([scale], np.float32), np.asarray([zero_point], np.int64)
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    def layer(k, x, width, filters, memory, rank):
        units = filters // rank
        if int8:
            wf = tensor(f"w_feature{k}", [filters, width], feature_type or "INT8",
                        rng.integers(-127, 128, (filters, width)).astype(np.int8), s["wf"])
            wt_type = np.int8 if memory_type == "INT8" else np.int16
            info = np.iinfo(wt_type)
            wt = tensor(f"w_time{k}", [filters, memory], memory_type,
                        rng.integers(info.min + 1, info.max + 1, (filters, memory)).astype(wt_type), s["wt"])
            b = tensor(f"bias{k}", [units], "INT32", rng.integers(-20000, 20000, units).astype(np.int32),
                       float(np.float32(s["mem"]) * np.float32(s["wt"])))
            mem = tensor(f"memory{k}", [1, filters * memory], memory_type, scale=s["mem"],
                         zero_point=memory_zero_point, is_variable=variable)
            y = tensor(f"y{k}", [1, units], "INT8", scale=s["y"], zero_point=s["y_zp"])
        else:
            if feature_type == "INT8":
                wf = tensor(f"w_feature{k}", [filters, width], "INT8",
                            rng.integers(-127, 128, (filters, width)).astype(np.int8), 0.01)
            else:
                wf = tensor(f"w_feature{k}", [filters, width], "FLOAT32",
                            (rng.normal(size=(filters, width)) / np.sqrt(width)).astype(np.float32))
            wt = tensor(f"w_time{k}", [filters, memory], "FLOAT32",
                        rng.normal(size=(filters, memory)).astype(np.float32))
            b = tensor(f"bias{k}", [units], "FLOAT32", rng.normal(size=units).astype(np.float32))
            mem = tensor(f"memory{k}", [1, filters * memory], "FLOAT32", is_variable=variable)
            y = tensor(f"y{k}", [1, units], "FLOAT32")
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, [x, wf, wt, b if bias else -1, mem], [y]
        op.builtinOptionsType = S.BuiltinOptions.SVDFOptions
        op.builtinOptions = S.SVDFOptionsT()
        op.builtinOptions.rank, op.builtinOptions.fusedActivationFunction = rank, activation
        operators.append(op)
        return y, units

    x = tensor("x", [1, features], "INT8" if int8 else "FLOAT32", scale=s["x"] if int8 else None,
               zero_point=s["x_zp"])
    y, width = x, features
    for k, (f, m, r) in enumerate(layers or [(filters, memory, rank)]):
        y, width = layer(k, y, width, f, m, r)
    sg = S.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = tensors, [x], [y], operators, "main"
    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.SVDF
    code.version = 1
    model = S.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sg], buffers
    model.description = "svdf test model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def frames(int8: bool, n: int, features=40, seed=1) -> list:
    rng = np.random.default_rng(seed)
    if int8:
        return [rng.integers(-128, 128, (1, features)).astype(np.int8) for _ in range(n)]
    return [rng.normal(size=(1, features)).astype(np.float32) for _ in range(n)]


def tflite_frames(data: bytes, xs: list, tensor: str | None = None) -> list:
    """TFLite's reference kernels, one invoke() per frame on one interpreter (its variables carry the memory):
    the output of each frame, or (output, the value of `tensor` after the frame)."""
    import warnings

    import tensorflow as tf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=data,
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    t = next((d["index"] for d in it.get_tensor_details() if d["name"] == tensor), None)
    out = []
    for x in xs:
        it.set_tensor(i, x)
        it.invoke()
        out.append(it.get_tensor(o).copy() if tensor is None else (it.get_tensor(o).copy(), it.get_tensor(t).copy()))
    return out


def write(tmp_path, data: bytes, name="svdf.tflite") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("rank,activation", [(1, 0), (2, RELU), (4, 4)])
def test_float_frames_match_tflite_in_the_interpreter(tmp_path, rank, activation):
    """The IR (SvdfMemory then SvdfTimeFilter, the memory a state tensor) means what TFLite computes, frame after
    frame: 50 invocations, the memory carried."""
    data = svdf_model(False, rank=rank, activation=activation)
    g = load_tflite(write(tmp_path, data))
    assert [n.op for n in g.nodes] == ["SvdfMemory", "SvdfTimeFilter"] and len(g.state) == 1
    xs = frames(False, 50)
    ref = tflite_frames(data, xs)
    ours, _ = interp.run_frames(g, [[x] for x in xs])
    for k, (o, r) in enumerate(zip(ours, ref)):
        assert np.abs(o[g.outputs[0]] - r).max() <= tolerance(r), f"frame {k}"


@pytest.mark.parametrize("int8", [True, False], ids=["int8", "float32"])
def test_stacked_svdf_c_carries_its_memories_over_50_frames(tmp_path, int8):
    """The generated C (ASan + UBSan), 50 consecutive invocations in one process, its two memories in the
    persistent state region, against TFLite's interpreter invoked 50 times: int8 every output byte of every frame,
    float32 within 1e-4 * (1 + max |reference|)."""
    data = svdf_model(int8, layers=KWS_LAYERS, seed=3)
    compiled = compile_model(write(tmp_path, data), "kws_svdf")
    g = compiled.plan.graph
    width = 2 if int8 else 4
    assert len(g.state) == 2 and compiled.plan.state_bytes == (64 * 10 + 32 * 10) * width
    xs = frames(int8, 50, seed=4)
    ref = tflite_frames(data, xs)
    for dsp in (False, True) if int8 else (False,):     # the fast kernels' plain and (emulated) DSP paths
        ours = run_generated(compiled, [np.stack(xs)], dsp=dsp)[0]
        for k, r in enumerate(ref):
            if int8:
                assert np.array_equal(ours[k], r), f"dsp {dsp}, frame {k}: {int((ours[k] != r).sum())} differ"
            else:
                assert np.abs(ours[k] - r).max() <= tolerance(r), f"frame {k}"
    if int8:
        assert len(np.unique(np.stack(ref))) > 100     # not a saturated output


def test_verify_runs_the_samples_as_frames_of_one_stream(tmp_path):
    """`tinyc verify` of the stacked int8 SVDF: 50 frames, TFLite's interpreter keeping its variables, the C its
    state region; bit-exact, the state reported in place."""
    from tinyc.verify import verify
    r = verify(write(tmp_path, svdf_model(True, layers=KWS_LAYERS, seed=3)), samples=50, seed=2)
    assert r["ok"] and r["oracle"] == "tflite" and r["mismatched_bytes"] == 0 and r["frames"] == 50
    assert r["dsp_path_matches"]
    assert [(s["name"], s["bytes"], s["update"]) for s in r["state"]] == [("memory0", 1280, "in place"),
                                                                       ("memory1", 640, "in place")]


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2"])
def test_stacked_int8_svdf_under_qemu_for_50_frames(tmp_path, board_name):
    """The firmware runs 50 frames in order from the initial state on the M0+ (pico, mps2-an385) and the M33
    (pico2, mps2-an505): every output byte equal to the host build and to TFLite carrying its variables."""
    from tinyc.boards import load_board
    from tinyc.firmware.run import run_emulated
    path = write(tmp_path, svdf_model(True, layers=KWS_LAYERS, seed=3))
    compiled = compile_model(path, "kws_svdf")
    xs = np.stack(frames(True, 50, seed=6))
    r = run_emulated(compiled, load_board(board_name), path, str(tmp_path / "fw"), inputs=[xs], profile=True)
    assert r["outputs_match"], r
    print(board_name, r["instructions"], "instructions per inference,", r["macs"], "MACs")


def test_int8_multipliers_flushed_to_zero(tmp_path):
    """Scales whose ratios fall below 2^-32 give QuantizeMultiplier 0 (TFLite flushes them): the memory's newest
    column is 0 and every output the output zero point, in both code paths."""
    data = svdf_model(True, scales=dict(x=1e-4, wf=1e-4, mem=1e3, wt=1e-8, y=1e4), seed=5)
    compiled = compile_model(write(tmp_path, data), "svdf_zero")
    xs = frames(True, 3, seed=5)
    ref = np.stack(tflite_frames(data, xs))
    assert np.all(ref == -5)        # the default output zero point
    for dsp in (False, True):
        assert np.array_equal(run_generated(compiled, [np.stack(xs)], dsp=dsp)[0], ref)


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("cpu", ["cortex-m0plus", "cortex-m4"])
def test_int8_c_compiles_for_cortex_m_with_the_warning_set(tmp_path, c_compile, cpu):
    """The int8 library (the M4 compiles the SMLAD paths, the M0+ the reference loops) under the project's
    warnings with -Werror, memories of 1 and of 3 steps (odd: the time filter's last step alone)."""
    data = svdf_model(True, features=6, layers=[(4, 1, 2), (6, 3, 3)])
    lib = compile_model(write(tmp_path, data), "svdf").library
    flags = ("-O2", f"-mcpu={cpu}", "-mthumb") + (("-mfloat-abi=hard", "-mfpu=fpv4-sp-d16") if cpu == "cortex-m4"
                                                   else ())
    c_compile(lib, tmp_path, "arm-none-eabi-gcc", flags)


def _memory_as_io(g):
    """The graph with its memory state turned into an input and its next value into an output, so a test can
    carry the memory itself (the kernels alone, without the state machinery)."""
    (state, nxt), = g.state.items()
    g.state.clear()
    g.inputs.append(state)
    g.outputs.append(nxt)
    return g


@pytest.mark.parametrize("rank", [1, 2])
def test_int8_kernels_bit_exact_with_the_memory_carried_by_hand(tmp_path, rank):
    """The int8 kernels alone (plain C, ASan + UBSan) against TFLite over 12 frames, the int16 memory fed back by
    the test: every output byte equal, and the memory after each frame equal to TFLite's variable tensor."""
    data = svdf_model(True, rank=rank)
    g = _memory_as_io(load_tflite(write(tmp_path, data)))
    exe = build_host_runner(compile_graph(g, "svdf"), tmp_path, 1, False)
    xs = frames(True, 12)
    ref = tflite_frames(data, xs, tensor="memory0")
    mem = np.zeros(g.tensors[g.inputs[1]].shape, np.int16)
    for k, (x, (r, r_mem)) in enumerate(zip(xs, ref)):
        files = [tmp_path / "x.bin", tmp_path / "mem.bin", tmp_path / "y.bin", tmp_path / "mem_next.bin"]
        x.tofile(files[0])
        mem.tofile(files[1])
        subprocess.run([str(exe), *map(str, files), str(tmp_path / "trace.bin")], check=True)
        y = np.fromfile(files[2], c_storage_dtype("int8")).reshape(r.shape)
        mem = np.fromfile(files[3], np.int16).reshape(mem.shape)
        assert np.array_equal(y, r), f"frame {k}: {int((y != r).sum())} differing bytes"
        assert np.array_equal(mem, r_mem), f"frame {k}: the memory differs from TFLite's variable"


def test_tflite_micro_agrees_with_tflite(tmp_path):
    """TFLite Micro's SVDF (svdf_common.cc) and TFLite's reference kernel give the same bytes on these models
    (memory zero point 0), so either is the oracle."""
    if importlib.util.find_spec("tflite_micro") is None:
        pytest.skip("tflite-micro is not installed")
    from tflite_micro import runtime as tflm
    for rank in (1, 2):
        data = svdf_model(True, rank=rank, seed=rank)
        xs = frames(True, 50, seed=rank)
        ref = tflite_frames(data, xs)
        micro = tflm.Interpreter.from_bytes(data, arena_size=1 << 20)
        for k, (x, r) in enumerate(zip(xs, ref)):
            micro.set_input(x, 0)
            micro.invoke()
            assert np.array_equal(np.array(micro.get_output(0)), r), f"rank {rank}, frame {k}"


@pytest.mark.parametrize("change,message", [
    (dict(activation=0), "must declare the fused activation RELU"),
    (dict(memory_type="INT8"), "keeps both int16"),
    (dict(variable=False), "must be a variable tensor"),
    (dict(rank=3), "rank 3 must be a positive divisor of the 16 filters"),
])
def test_int8_variants_tinyc_does_not_cover_are_refused(tmp_path, change, message):
    with pytest.raises(TinycError, match=message) as e:
        load_tflite(write(tmp_path, svdf_model(True, **change)))
    assert "\n" not in str(e.value) and "SVDF" in str(e.value)


def test_memory_zero_point_and_hybrid_are_refused(tmp_path):
    g = load_tflite(write(tmp_path, svdf_model(True, memory_zero_point=4)))
    with pytest.raises(TinycError, match="zero point 0") as e:
        compile_graph(g, "svdf")
    assert "\n" not in str(e.value)
    with pytest.raises(TinycError, match="hybrid SVDF") as e:
        load_tflite(write(tmp_path, svdf_model(False, feature_type="INT8"), "hybrid.tflite"))
    assert "\n" not in str(e.value)


EXAMPLES = 40 if os.environ.get("TINYC_FULL") else 3


def _log_scale(lo: int, hi: int):
    return st.floats(lo, hi).map(lambda e: float(np.float32(10.0 ** e)))


@st.composite
def svdf_cases(draw):
    """Shapes, and scales extreme in size (1e-8 and up) but chosen relative to each other, so that most outputs
    are neither constant nor saturated, the requantization multipliers spread over 1e-5 to 1e3 around that."""
    features, filters = draw(st.integers(1, 48)), draw(st.integers(1, 12))
    rank = draw(st.sampled_from([r for r in range(1, filters + 1) if filters % r == 0]))
    memory = draw(st.integers(1, 12))
    zero_points = st.sampled_from([-128, -1, 0, 1, 127]) | st.integers(-128, 127)
    x, wf, wt = draw(_log_scale(-4, 0)), draw(_log_scale(-4, 0)), draw(_log_scale(-8, 0))
    typical_dot, typical_time = 6000 * np.sqrt(features), 1e8 * np.sqrt(rank * memory)
    mem = float(np.float32(x * wf * typical_dot / 8000 * 10.0 ** draw(st.floats(-3, 2))))
    y = float(np.float32(mem * wt * typical_time / 50 * 10.0 ** draw(st.floats(-2, 2))))
    scales = dict(x=x, wf=wf, mem=mem, wt=wt, y=y, x_zp=draw(zero_points), y_zp=draw(zero_points))
    return dict(features=features, filters=filters, rank=rank, memory=memory, bias=draw(st.booleans()),
                scales=scales, seed=draw(st.integers(0, 2**16)))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=svdf_cases())
def test_int8_bit_exact_with_extreme_scales_and_shapes(tmp_path_factory, case):
    """Scales from 1e-8 up (requantization multipliers with shifts of both signs), zero points at the int8
    extremes, full-range int16 time weights (time sums that wrap), memory 1 to 12, any rank: 8 frames of the C (the
    memory carried) against TFLite, every byte. TINYC_FULL=1: 40 examples."""
    tmp = tmp_path_factory.mktemp("svdf_case")
    data = svdf_model(True, **case)
    compiled = compile_model(write(tmp, data), "svdf_case")
    xs = frames(True, 8, features=case["features"], seed=case["seed"])
    ref = tflite_frames(data, xs)
    for dsp in (False, True):     # the fast kernels' plain and (emulated) DSP paths
        ours = run_generated(compiled, [np.stack(xs)], dsp=dsp)[0]
        for k, r in enumerate(ref):
            assert np.array_equal(ours[k], r), f"dsp {dsp}, frame {k}: {int((ours[k] != r).sum())} differing bytes"
