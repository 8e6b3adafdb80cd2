"""16x8 kernels: every placement and every kernel set computes the same values. The depthwise layer written in
place (the planner's "depthwise" decision: channel by channel through a plane) equals the layer with its own
output buffer, which tests/test_int16_properties.py holds to TFLite's reference kernels; the fast GEMM
(codegen/int16_fast.py) equals its reference twin on the host (plain and emulated DSP paths) and, with TINYC_FULL,
under QEMU on the Cortex-M4 and M0+."""
import os
import shutil

import numpy as np
import pytest

from tinyc.codegen.emit import generate
from tinyc.compiler import Compiled
from tinyc.ir import Graph, Quant
from tinyc.schedule import schedule
from tinyc.verify import run_generated


FULL = bool(os.environ.get("TINYC_FULL"))     # every case; the default run takes the first two of each list


def _quant(scale):
    return Quant(np.asarray(scale, np.float32), np.asarray(0, np.int64))


def _depthwise_graph(c=5, h=9, w=11, k=3, s=1, pads=(1, 1, 1, 1), seed=0, kw=None) -> Graph:
    rng = np.random.default_rng(seed)
    kw = k if kw is None else kw
    oh, ow = (h + pads[0] + pads[2] - k) // s + 1, (w + pads[1] + pads[3] - kw) // s + 1
    g = Graph("dw16")
    g.add_tensor("x0", (1, h, w, 1), "int16", quant=_quant(0.001))
    g.add_tensor("w0", (c, 1, 1, 1), "int8", rng.integers(-127, 128, (c, 1, 1, 1)).astype(np.int8),
                 quant=Quant(np.full(c, 0.004, np.float32), np.zeros(c, np.int64), 0))
    g.add_tensor("x", (1, h, w, c), "int16", quant=_quant(0.001))     # a graph input is never written over
    g.add_node("Conv2D", ["x0", "w0"], ["x"], strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1)
    g.add_tensor("w", (c, k, kw, 1), "int8", rng.integers(-127, 128, (c, k, kw, 1)).astype(np.int8),
                 quant=Quant(rng.uniform(0.002, 0.05, c).astype(np.float32), np.zeros(c, np.int64), 0))
    g.add_tensor("b", (c,), "int64", rng.integers(-1 << 20, 1 << 20, c).astype(np.int64),
                 quant=Quant(np.ones(c, np.float32), np.zeros(c, np.int64), 0))
    g.add_tensor("y", (1, oh, ow, c), "int16", quant=_quant(0.1))
    g.add_node("Conv2D", ["x", "w", "b"], ["y"], strides=(s, s), dilations=(1, 1), pads=pads, groups=c,
               activation={"fn": "relu"})
    g.inputs, g.outputs = ["x0"], ["y"]
    return g


def _build(g, kernels, kinds) -> Compiled:
    plan = schedule(g, variants=(("forced", kinds, False),))
    return Compiled("test", g, plan, generate(plan, "m", "test", kernels=kernels))


def test_depthwise_in_place_equals_its_own_buffer():
    g = _depthwise_graph()
    x = np.random.default_rng(1).integers(-32768, 32768, (4, 9, 11, 1)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    apart = _build(g, "reference", ())
    in_place = _build(g, "reference", ("depthwise",))
    assert {c.kind for c in in_place.plan.in_place.values()} == {"depthwise"}
    assert "int8/depthwise_in_place_16x8" in [layer["kernel"] for layer in in_place.library.layers]
    want, got = run_generated(apart, [x])[0], run_generated(in_place, [x])[0]
    assert want.dtype == np.int16 and np.array_equal(want, got)
    assert len(np.unique(want)) > 100       # not a saturated constant


def _gemm_graph(op: str, k: int, o: int, rows: int, seed: int) -> Graph:
    """A 16x8 FC ([1, rows, k]) or 1x1 conv ([1, rows, 1, k]) the fast GEMM takes (codegen/int16_fast.py)."""
    rng = np.random.default_rng(seed)
    g = Graph(f"{op.lower()}16")
    shape = (1, rows, k) if op == "Dense" else (1, rows, 1, k)
    g.add_tensor("x", shape, "int16", quant=_quant(1e-4))
    wshape = (o, k) if op == "Dense" else (o, 1, 1, k)
    g.add_tensor("w", wshape, "int8", rng.integers(-127, 128, wshape).astype(np.int8),
                 quant=Quant(rng.uniform(0.002, 0.02, o).astype(np.float32), np.zeros(o, np.int64), 0))
    g.add_tensor("b", (o,), "int64", rng.integers(-1 << 20, 1 << 20, o).astype(np.int64),
                 quant=Quant(np.ones(o, np.float32), np.zeros(o, np.int64), 0))
    g.add_tensor("y", shape[:-1] + (o,), "int16", quant=_quant(0.002 * np.sqrt(k)))
    if op == "Dense":
        g.add_node("Dense", ["x", "w", "b"], ["y"], activation=None)
    else:
        g.add_node("Conv2D", ["x", "w", "b"], ["y"], strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


# (op, k, o, rows): channel blocks of 4/2/1, odd rows, a tail of k % 4 inputs, several int32 runs (k >= 1,100)
GEMMS = [("Dense", 64, 7, 1), ("Dense", 30, 5, 3), ("Conv2D", 16, 6, 9), ("Dense", 1100, 3, 2),
         ("Conv2D", 3, 4, 4), ("Dense", 1400, 5, 1)]     # (the last: the M4 asm's second weight pointer)


def test_fast_gemm_equals_reference():
    from tinyc.compiler import codegen_options, compile_graph
    for op, k, o, rows in GEMMS if FULL else GEMMS[:2]:
        g = _gemm_graph(op, k, o, rows, seed=k)
        fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
        assert fast.library.layers[0]["kernel"] == "int8_fast/gemm_16x8", (op, k, o, rows)
        ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
        x = np.random.default_rng(2).integers(-32768, 32768, (3, *g.tensors["x"].shape)).astype(np.int16)
        x[0] = -32768
        want = run_generated(ref, [x])[0]
        for dsp in (False, True):
            assert np.array_equal(run_generated(fast, [x], dsp=dsp)[0], want), (op, k, o, rows, dsp)


@pytest.mark.skipif(not (os.environ.get("TINYC_FULL") and shutil.which("arm-none-eabi-gcc")
                         and shutil.which("qemu-system-arm")),
                    reason="QEMU runs: TINYC_FULL with arm-none-eabi-gcc and qemu-system-arm")
def test_fast_gemm_under_qemu(tmp_path):
    """The 16x8 fast GEMM (SMLAD asm path) and depthwise (SMLABB path) on the emulated Cortex-M4 and their plain
    paths on the M0+ equal the host build."""
    from tinyc.boards import load_board
    from tinyc.compiler import codegen_options, compile_graph, write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    graphs = [_gemm_graph(op, k, o, rows, seed=k) for op, k, o, rows in GEMMS]
    graphs += [_depthwise_graph(), _depthwise_graph(k=5, s=2, pads=(2, 1, 2, 2), h=11, w=7)]
    graphs += [_conv_graph(**case) for case in CONVS] + [_transpose_graph(case) for case in TRANSPOSES]
    for n, g in enumerate(graphs):
        fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
        x = np.random.default_rng(3).integers(-32768, 32768, (2, *g.tensors[g.inputs[0]].shape)).astype(np.int16)
        host = run_generated(fast, [x])[0]
        for board in ("nucleo-f412zg", "pico"):
            out = tmp_path / f"{n}-{board}"
            write_library(fast.library, str(out), force=True)
            write_firmware(fast, load_board(board), str(out), [x])
            emulated = emulate(fast, load_board(board), out, profile=False)["outputs"][0]
            np.testing.assert_array_equal(emulated, host, err_msg=f"{g.name} #{n} on {board}")


DEPTHWISE = [dict(), dict(k=5, s=2, pads=(2, 1, 2, 2), h=11, w=7), dict(k=3, pads=(0, 0, 0, 0)),
             dict(c=3, h=4, w=3, k=3, pads=(1, 1, 1, 1)),
             # 6 and 7 taps: the taps past the last word of four (2 and 3) widen one register each
             dict(k=2, kw=3, pads=(1, 1, 0, 1)), dict(c=4, k=1, kw=7, pads=(0, 3, 0, 3), w=12),
             # an image smaller than the kernel: taps no pixel reaches (their registers were unused: -Werror)
             dict(c=3, h=2, w=2, k=5, pads=(2, 2, 2, 2))]


@pytest.mark.parametrize("case", DEPTHWISE if FULL else DEPTHWISE[:2])
def test_fast_depthwise_equals_reference(case):
    """The 16x8 fast depthwise (int16_fast.depthwise): inner pixel pairs, odd inner columns, edge pixels, strides,
    tap counts of every residue mod 4 (int8 weights widened in registers), in place through the plane and with its
    own buffer, plain and emulated DSP paths."""
    g = _depthwise_graph(**case)
    x = np.random.default_rng(4).integers(-32768, 32768, (3, *g.tensors["x0"].shape[1:])).astype(np.int16)
    want = run_generated(_build(g, "reference", ()), [x])[0]
    for kinds in ((), ("depthwise",)):
        fast = _build(g, "fast", kinds)
        assert "int8_fast/depthwise_16x8" in [layer["kernel"] for layer in fast.library.layers], kinds
        for dsp in (False, True):
            assert np.array_equal(run_generated(fast, [x], dsp=dsp)[0], want), (case, kinds, dsp)


def _conv_graph(h=9, w=7, c=3, o=5, kh=3, kw=3, s=(1, 1), d=(1, 1), pads=(1, 1, 1, 1), seed=0) -> Graph:
    rng = np.random.default_rng(seed)
    oh = (h + pads[0] + pads[2] - (kh - 1) * d[0] - 1) // s[0] + 1
    ow = (w + pads[1] + pads[3] - (kw - 1) * d[1] - 1) // s[1] + 1
    g = Graph("conv16")
    g.add_tensor("x", (1, h, w, c), "int16", quant=_quant(0.001))
    g.add_tensor("w", (o, kh, kw, c), "int8", rng.integers(-127, 128, (o, kh, kw, c)).astype(np.int8),
                 quant=Quant(rng.uniform(0.002, 0.02, o).astype(np.float32), np.zeros(o, np.int64), 0))
    g.add_tensor("b", (o,), "int64", rng.integers(-1 << 20, 1 << 20, o).astype(np.int64),
                 quant=Quant(np.ones(o, np.float32), np.zeros(o, np.int64), 0))
    g.add_tensor("y", (1, oh, ow, o), "int16", quant=_quant(0.02 * np.sqrt(kh * kw * c)))
    g.add_node("Conv2D", ["x", "w", "b"], ["y"], strides=s, dilations=d, pads=pads, groups=1,
               activation={"fn": "relu"})
    g.inputs, g.outputs = ["x"], ["y"]
    return g


CONVS = [dict(), dict(h=49, w=10, c=1, o=8, kh=10, kw=4, s=(2, 2), pads=(4, 1, 5, 2)),     # DS-CNN's first conv
         dict(c=2, o=3, kh=5, kw=2, s=(2, 1), d=(2, 1), pads=(2, 0, 3, 1)), dict(c=5, o=1, pads=(0, 0, 0, 0)),
         # runs of 90 (two bytes past the last word of four); a window of 540 bytes: edge pixels without the copy
         dict(h=5, w=6, c=30, o=3)]


@pytest.mark.parametrize("case", CONVS if FULL else CONVS[:2])
def test_fast_conv_equals_reference(case):
    """The 16x8 fast k x k conv (int16_fast.conv): inner and edge pixels, odd runs (kw * C), channel pairs and an
    odd channel, strides and row dilation, plain and emulated DSP paths."""
    from tinyc.compiler import codegen_options, compile_graph
    g = _conv_graph(**case)
    fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
    assert fast.library.layers[0]["kernel"] == "int8_fast/conv_16x8"
    ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
    x = np.random.default_rng(5).integers(-32768, 32768, (3, *g.tensors["x"].shape)).astype(np.int16)
    want = run_generated(ref, [x])[0]
    assert len(np.unique(want)) > 20
    for dsp in (False, True):
        assert np.array_equal(run_generated(fast, [x], dsp=dsp)[0], want), (case, dsp)


@pytest.mark.skipif(not (os.environ.get("TINYC_FULL") and shutil.which("arm-none-eabi-gcc")
                         and shutil.which("qemu-system-arm")),
                    reason="QEMU runs: TINYC_FULL with arm-none-eabi-gcc and qemu-system-arm")
def test_ds_cnn_16x8_within_one_and_a_half_int8_on_m4(tmp_path):
    """Issue 20's goal for the fast 16x8 kernels: a converter-made DS-CNN (MLPerf Tiny's shape, 64 channels) in 16x8
    runs at most 1.5x the instructions of its int8 twin on the emulated Cortex-M4, both equal to TFLite."""
    import importlib.util
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("needs tensorflow")
    import int8_zoo
    import int16_zoo
    from model_zoo import randomize
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model, write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.verify import verify
    keras = int8_zoo._keras()
    L = keras.layers
    keras.utils.set_random_seed(0)
    x = keras.Input((49, 10, 1))
    h = int8_zoo._conv_bn(L, x, 64, (10, 4), strides=2)
    for _ in range(4):
        h = L.Activation("relu")(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(h)))
        h = int8_zoo._conv_bn(L, h, 64, 1)
    model = randomize(keras.Model(x, L.Dense(12, activation="softmax")(L.GlobalAveragePooling2D()(h))), 0)
    counts = {}
    for kind, convert in (("int8", int8_zoo.to_int8_tflite), ("int16", int16_zoo.to_int16_tflite)):
        path = convert(model, tmp_path / f"ds_cnn_{kind}.tflite")
        assert verify(path, samples=3, per_layer=True)["mismatched_bytes"] == 0
        compiled = compile_model(path)
        t = compiled.plan.graph.tensors[compiled.plan.graph.inputs[0]]
        data = np.random.default_rng(0).integers(np.iinfo(kind).min, np.iinfo(kind).max + 1, (1, *t.shape))
        out = tmp_path / kind
        write_library(compiled.library, str(out), force=True)
        write_firmware(compiled, load_board("nucleo-f412zg"), str(out), [data.astype(kind)])
        counts[kind] = emulate(compiled, load_board("nucleo-f412zg"), out, profile=False)["instructions"]
    assert counts["int16"] <= 1.5 * counts["int8"], counts


TRANSPOSES = [dict(h=5, w=4, c=3, o=4, kh=3, kw=3, s=(2, 2), pads=(1, 1, 0, 0)),
              dict(h=3, w=6, c=8, o=3, kh=4, kw=2, s=(3, 1), pads=(0, 0, 1, 1)),
              # a pass of four output channels and one of three; 10 input channels: two past the last word of four
              dict(h=4, w=3, c=10, o=7, kh=3, kw=3, s=(2, 2), pads=(1, 1, 1, 1))]


def _transpose_graph(case) -> Graph:
    rng = np.random.default_rng(6)
    h, w, c, o, kh, kw, (sh, sw), pads = (case[n] for n in ("h", "w", "c", "o", "kh", "kw", "s", "pads"))
    oh, ow = (h - 1) * sh + kh - pads[0] - pads[2], (w - 1) * sw + kw - pads[1] - pads[3]
    g = Graph("tconv16")
    g.add_tensor("x", (1, h, w, c), "int16", quant=_quant(0.001))
    g.add_tensor("w", (o, kh, kw, c), "int8", rng.integers(-127, 128, (o, kh, kw, c)).astype(np.int8),
                 quant=Quant(rng.uniform(0.002, 0.02, o).astype(np.float32), np.zeros(o, np.int64), 0))
    g.add_tensor("b", (o,), "int64", rng.integers(-1 << 20, 1 << 20, o).astype(np.int64),
                 quant=Quant(np.ones(o, np.float32), np.zeros(o, np.int64), 0))
    g.add_tensor("y", (1, oh, ow, o), "int16", quant=_quant(0.05))
    g.add_node("ConvTranspose2D", ["x", "w", "b"], ["y"], strides=(sh, sw), dilations=(1, 1), pads=pads, groups=1,
               activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@pytest.mark.parametrize("case", TRANSPOSES)
def test_fast_transpose_conv_equals_reference(case):
    """The 16x8 fast TRANSPOSE_CONV (int16_fast.conv_transpose): odd and even channel counts, input channels past
    the last word of four weights, passes of four and fewer output channels, strides, crops."""
    from tinyc.compiler import codegen_options, compile_graph
    g = _transpose_graph(case)
    h, w, c = g.tensors["x"].shape[1:]
    fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
    assert fast.library.layers[0]["kernel"] == "int8_fast/conv_transpose_16x8"
    ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
    assert fast.library.macs == ref.library.macs
    x = np.random.default_rng(7).integers(-32768, 32768, (3, h, w, c)).astype(np.int16)
    want = run_generated(ref, [x])[0]
    assert len(np.unique(want)) > 20
    for dsp in (False, True):
        assert np.array_equal(run_generated(fast, [x], dsp=dsp)[0], want), (case, dsp)
