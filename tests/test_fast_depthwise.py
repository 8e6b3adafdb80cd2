"""The fast int8 depthwise kernels (tinyc/codegen/int8_depthwise.py: planar, and raster for overlapped outputs)
equal their reference twins byte for byte on both code paths (plain C and the DSP path emulated in C): Keras
models converted by TFLite (kernels 3/5/7, strides 1/2, same/valid, 3/8/13/64 channels, odd sizes, a layer
planned in place), checked against TFLite too; and random layers built directly, with every way of placing the
output (own buffer, in place channel by channel, overlapping at the smallest lead)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyc.codegen import int8_depthwise, int8_fast
from tinyc.codegen.emit import generate
from tinyc.compiler import Compiled, codegen_options, compile_model
from tinyc.ir import Graph, Quant
from tinyc.schedule import schedule
from tinyc.verify import reference_outputs, run_generated, verify

EXAMPLES = 40 if os.environ.get("TINYC_FULL") else 5
SETTINGS = dict(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
RUNTIME = Path(__file__).resolve().parent.parent / "runtime_c"


def _inputs(shape, n=4, seed=0):
    """Random int8 samples, the first all -128 and the second all 127."""
    x = np.random.default_rng(seed).integers(-128, 128, (n, *shape)).astype(np.int8)
    x[0], x[1] = -128, 127
    return x


def _same_bytes(fast: Compiled, ref: Compiled, x):
    want = run_generated(ref, [x])
    for dsp in (False, True):
        got = run_generated(fast, [x], dsp=dsp)
        for a, b in zip(want, got):
            assert a.dtype == b.dtype and np.array_equal(a, b), f"dsp={dsp}: {np.sum(a != b)} bytes differ"


def _depthwise_kernels(compiled):
    return [l["kernel"] for l in compiled.library.layers if l["op"] == "Conv2D"
            and compiled.plan.graph.nodes[l["index"]].attrs.get("groups", 1) > 1]


# -- Keras models converted to int8 TFLite --------------------------------------------------------------------

def _dw_model(shape, layers, name):
    """layers: (kernel, stride, padding, activation) depthwise layers; an int is a 1x1 conv to that many
    channels; ("conv", n) a 3x3 stride-2 conv; ("bn_relu", k) a depthwise k x k with BatchNorm, a separate
    ReLU and a 1x1 conv after it (the DS-CNN block, planned in place)."""
    from model_zoo import randomize
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    keras.utils.set_random_seed(3)
    L = keras.layers
    x = keras.Input(shape)
    h = x
    for layer in layers:
        if isinstance(layer, int):
            h = L.Conv2D(layer, 1)(h)
        elif layer[0] == "conv":
            h = L.Conv2D(layer[1], 3, strides=2, padding="same", activation="relu")(h)
        elif layer[0] == "bn_relu":
            h = L.DepthwiseConv2D(layer[1], padding="same", use_bias=False)(h)
            h = L.Activation("relu")(L.BatchNormalization()(h))
            h = L.Conv2D(h.shape[-1], 1, activation="relu")(h)
        else:
            k, s, pad, act = layer
            h = L.DepthwiseConv2D(k, strides=s, padding=pad, activation=act)(h)
    return randomize(keras.Model(x, h, name=name), 3)


MODELS = {
    # 3 channels, then 13, then 64: kernels 7 / 5 / 3, strides 1 / 2, valid / same, odd sizes
    "chain": ((19, 17, 3), [(7, 1, "valid", None), (5, 2, "same", "relu"), (3, 1, "valid", None), 13,
                            (3, 1, "same", "relu"), (3, 2, "valid", None), (5, 1, "same", "relu6"), 64,
                            (3, 1, "same", "relu"), (3, 2, "same", None)]),
    "in_place": ((22, 10, 1), [("conv", 8), ("bn_relu", 3), ("bn_relu", 5)]),
}


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory):
    import int8_zoo
    d = tmp_path_factory.mktemp("dw")
    return {n: int8_zoo.to_int8_tflite(_dw_model(shape, layers, n), d / f"{n}.tflite")
            for n, (shape, layers) in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_tflite_models_fast_equals_reference_and_tflite(tflite_models, name, tmp_path):
    path = tflite_models[name]
    fast = compile_model(path, options=codegen_options(kernels="fast"))
    ref = compile_model(path, options=codegen_options(kernels="reference"))
    kernels = _depthwise_kernels(fast)
    assert kernels and all(k.startswith("int8_fast/depthwise") for k in kernels), kernels
    g = fast.plan.graph
    if name == "in_place":
        dw = [i for i, n in enumerate(g.nodes) if n.op == "Conv2D" and n.attrs.get("groups", 1) > 1]
        assert any(fast.plan.in_place.get(i) is not None and fast.plan.in_place[i].kind == "depthwise"
                   for i in dw), fast.plan.in_place
    x = _inputs(g.tensors[g.inputs[0]].shape[1:])
    # the fast kernels' plain path against TFLite, bit for bit, and their DSP path against the plain one; then the
    # reference kernels against TFLite on the same inputs: all four give the same bytes
    report = verify(path, inputs=[x])
    assert report["ok"] and report["dsp_path_matches"], report
    tflite, _ = reference_outputs(ref, path, [x[:, None]], "nhwc", tmp_path)
    for a, b in zip(run_generated(ref, [x]), tflite):
        assert np.array_equal(a, b), f"{np.sum(a != b)} bytes differ"


# -- random layers, every placement of the output -------------------------------------------------------------

def dw_graph(p) -> Graph:
    rng = np.random.default_rng(p["seed"])
    kh, kw, s, d, c = p["kh"], p["kw"], p["s"], p["d"], p["c"]
    pt, pl, pb, pr = p["pads"]
    oh = (p["h"] + pt + pb - (kh - 1) * d - 1) // s + 1
    ow = (p["w"] + pl + pr - (kw - 1) * d - 1) // s + 1
    g = Graph("dw")
    g.add_tensor("x", (1, p["h"], p["w"], c), "int8", quant=Quant(np.float32(0.03), np.int64(p["in_zp"])))
    g.add_tensor("y", (1, oh, ow, c), "int8", quant=Quant(np.float32(p["out_scale"]), np.int64(p["out_zp"])))
    w = rng.integers(-127, 128, (c, kh, kw, 1)).astype(np.int8)
    if p["extreme"]:
        w[0], w[-1] = 127, -127
    wq = Quant(rng.uniform(0.002, 0.05, c).astype(np.float32), np.zeros(c, np.int64), 0)
    inputs = ["x", g.add_tensor("w", (c, kh, kw, 1), "int8", w, quant=wq).name]
    if p["bias"]:
        b = rng.integers(-20000, 20000, c).astype(np.int32)
        inputs.append(g.add_tensor("b", (c,), "int32", b, quant=Quant(np.ones(c, np.float32), np.zeros(c, np.int64),
                                                                      0)).name)
    g.add_node("Conv2D", inputs, ["y"], strides=(s, s), dilations=(d, d), pads=tuple(p["pads"]), groups=c,
               activation=p["act"], name="dw")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def build(g, kernels, kinds=None) -> Compiled:
    """kinds: the in-place decisions the planner may take (None: its usual variants, best arena)."""
    work = int8_fast.work_bytes if kernels == "fast" else None
    variants = (("forced", kinds, False),) if kinds is not None else None
    plan = schedule(g, variants=variants, work=work) if variants else schedule(g, work=work)
    return Compiled("test", g, plan, generate(plan, "m", "test", kernels=kernels))


ACTIVATIONS = [None, {"fn": "relu"}, {"fn": "clip", "lo": 0.0, "hi": 6.0}]


@st.composite
def dw_case(draw):
    k = draw(st.sampled_from([3, 3, 5, 7, (1, 5), (3, 1), 2]))
    kh, kw = (k, k) if isinstance(k, int) else k
    d = draw(st.sampled_from([1, 1, 1, 2]))
    pads = [draw(st.integers(0, max(kh // 2, 0) + (1 if d > 1 else 0))),
            draw(st.integers(0, max(kw // 2, 0) + (1 if d > 1 else 0)))]
    pads += [draw(st.integers(0, pads[0] + 1)), draw(st.integers(0, pads[1] + 1))]
    return dict(kh=kh, kw=kw, s=draw(st.sampled_from([1, 2, 2, 3])), d=d, pads=pads,
                c=draw(st.sampled_from([2, 3, 4, 8, 13, 64])),
                h=draw(st.integers(max(1, (kh - 1) * d + 1 - pads[0] - pads[2]), (kh - 1) * d + 8)),
                w=draw(st.integers(max(1, (kw - 1) * d + 1 - pads[1] - pads[3]), (kw - 1) * d + 10)),
                in_zp=draw(st.sampled_from([-128, -7, 0, 5, 127])), out_zp=draw(st.sampled_from([-128, 0, 9])),
                out_scale=draw(st.sampled_from([0.05, 0.5, 0.0004])), act=draw(st.sampled_from(ACTIVATIONS)),
                bias=draw(st.booleans()), extreme=draw(st.booleans()), seed=draw(st.integers(0, 10 ** 6)),
                kinds=draw(st.sampled_from([(), ("depthwise",), ("overlap",)])))


@settings(**SETTINGS)
@given(dw_case())
def test_random_layers_fast_equals_reference(p):
    g = dw_graph(p)
    fast = build(g, "fast", p["kinds"])
    assert _depthwise_kernels(fast)[0].startswith("int8_fast/depthwise"), p
    _same_bytes(fast, build(g, "reference", ()), _inputs(g.tensors["x"].shape[1:], n=3, seed=p["seed"]))


def _case(**kw):
    base = dict(kh=3, kw=3, s=1, d=1, pads=[1, 1, 1, 1], c=13, h=7, w=9, in_zp=3, out_zp=-5, out_scale=0.05,
                act=None, bias=True, extreme=False, seed=1)
    base.update(kw)
    return base


@pytest.mark.parametrize("kinds, kernel", [((), "planar"), (("depthwise",), "planar"), (("overlap",), "raster")])
def test_each_placement(kinds, kernel):
    """13 channels: the overlap's lead is not a whole number of pixels, so channel-by-channel writes would
    clobber other channels' inputs; the raster kernel takes it. In place, the planar kernel writes each output row
    as soon as the input rows it covers are in the ring."""
    g = dw_graph(_case())
    fast = build(g, "fast", kinds)
    assert {c.kind for c in fast.plan.in_place.values()} == set(kinds)
    assert _depthwise_kernels(fast) == [f"int8_fast/{'depthwise' if kernel == 'planar' else 'depthwise_raster'}"
                                        f"/{kernel}"]
    _same_bytes(fast, build(g, "reference", ()), _inputs((7, 9, 13)))


def test_in_place_through_the_plane():
    """Pads wider than the kernel's reach make output rows longer than input rows: with only some rows of a wide
    plane in the buffer, storing an output row straight into y would overwrite input rows not copied yet, so the
    kernel computes each channel into the plane `t` first."""
    g = dw_graph(_case(pads=[2, 2, 2, 2], c=2, h=7, w=60))
    fast = build(g, "fast", ("depthwise",))
    assert {c.kind for c in fast.plan.in_place.values()} == {"depthwise"}
    assert "in place via the plane t" in fast.library.files["m.c"]
    _same_bytes(fast, build(g, "reference", ()), _inputs((7, 60, 2)))


@pytest.mark.parametrize("kh, s, kinds", [(3, 1, ("depthwise",)), (5, 2, ()), (3, 3, ("depthwise",))])
def test_row_buffer_moves(kh, s, kinds):
    """Wide planes with few channels: the planar kernel keeps only some rows, and moves the ones still needed back
    to the start of its buffer when it is full (stride 3 > span: rows between windows are skipped)."""
    g = dw_graph(_case(kh=kh, kw=kh, s=s, pads=[kh // 2] * 4, c=2, h=9, w=37))
    geo = int8_depthwise.geometry(g, g.nodes[0])
    assert geo.buf_rows < geo.rows_total
    fast = build(g, "fast", kinds)
    assert _depthwise_kernels(fast) == ["int8_fast/depthwise/planar"] or s > 1
    _same_bytes(fast, build(g, "reference", ()), _inputs((9, 37, 2)))


def test_row_plan_3x3():
    """3x3 stride 1, two outputs: one load, two unpacks, two SMLAD, two halfword MACs and one LDRD of the two
    weight words per kernel row."""
    plan = int8_depthwise.row_plan(2, 1, 1, 3)
    assert plan.cost == 8 and len(plan.words) == 1
    assert sorted(op[0] for ops in plan.ops for op in ops) == ["hi", "lo", "pair", "pair"]


def test_smmulr_halves_is_exact(tmp_path):
    """The Cortex-M0+ rounding high multiply (two 16-bit halves) equals the 64-bit one on edge and random
    operands."""
    src = tmp_path / "t.c"
    src.write_text(r'''
#include <stdio.h>
#include "tinyc_simd.h"
int main(void) {
  static const int32_t e[] = {0, 1, -1, 2, 0x7FFF, 0x8000, -0x8000, -0x8001, 0xFFFF, 0x10000, -0x10000, 0x10001,
                              0x3FFFFFFF, -0x40000000, 0x40000000, 0x7FFFFFFF, -0x7FFFFFFF - 1};
  const int n = (int)(sizeof e / sizeof e[0]);
  uint32_t s = 12345u;
  long bad = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      if (e[j] >= 0 && tinyc_smmulr_halves(e[i], e[j]) != tinyc_smmulr(e[i], e[j])) ++bad;
  for (long k = 0; k < 3000000; ++k) {
    s = s * 1664525u + 1013904223u; const int32_t a = (int32_t)s >> (k % 17);
    s = s * 1664525u + 1013904223u; const int32_t b = (int32_t)(s >> 1) >> (k % 5);
    if (tinyc_smmulr_halves(a, b) != tinyc_smmulr(a, b)) ++bad;
  }
  printf("%ld\n", bad);
  return bad != 0;
}
''')
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-std=c99", "-O1", "-fsanitize=undefined", "-fno-sanitize-recover=all", "-I", str(RUNTIME),
                    str(src), "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout.strip() == "0"


# -- the DSP path's asm, as ARM code under QEMU -----------------------------------------------------------------

def chain_graph(layers, shape=(11, 9, 13)) -> Graph:
    """Depthwise layers one after another, (kernel, stride, dilation, pads, activation) each."""
    rng = np.random.default_rng(7)
    g = Graph("chain")
    h, w, c = shape
    g.add_tensor("x", (1, h, w, c), "int8", quant=Quant(np.float32(0.03), np.int64(-3)))
    prev = "x"
    for i, (k, s, d, pads, act) in enumerate(layers):
        kh, kw = (k, k) if isinstance(k, int) else k
        pt, pl, pb, pr = pads
        h, w = (h + pt + pb - (kh - 1) * d - 1) // s + 1, (w + pl + pr - (kw - 1) * d - 1) // s + 1
        out = g.add_tensor(f"y{i}", (1, h, w, c), "int8",
                           quant=Quant(np.float32(0.02 * (i + 1)), np.int64(5 * i - 9))).name
        wt = g.add_tensor(f"w{i}", (c, kh, kw, 1), "int8", rng.integers(-127, 128, (c, kh, kw, 1)).astype(np.int8),
                          quant=Quant(rng.uniform(0.002, 0.05, c).astype(np.float32), np.zeros(c, np.int64), 0)).name
        b = g.add_tensor(f"b{i}", (c,), "int32", rng.integers(-20000, 20000, c).astype(np.int32),
                         quant=Quant(np.ones(c, np.float32), np.zeros(c, np.int64), 0)).name
        g.add_node("Conv2D", [prev, wt, b], [out], strides=(s, s), dilations=(d, d), pads=pads, groups=c,
                   activation=act, name=f"dw{i}")
        prev = out
    g.inputs, g.outputs = ["x"], [prev]
    return g


QEMU_LAYERS = [(3, 1, 1, (1, 1, 1, 1), {"fn": "relu"}), (3, 2, 1, (0, 0, 1, 1), {"fn": "relu"}),
               (5, 1, 1, (2, 2, 2, 2), {"fn": "clip", "lo": 0.0, "hi": 6.0}), (7, 1, 1, (3, 3, 3, 3), None),
               ((1, 5), 1, 1, (0, 2, 0, 2), None), (3, 1, 2, (2, 2, 2, 2), None), (5, 2, 1, (2, 2, 2, 2), None)]


@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_dsp_asm_under_qemu(tmp_path):
    """The asm (only compiled for DSP cores: the planar kernel's groups, the raster kernel's interior pixels) on the
    emulated Cortex-M4 equals the host's plain path."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    g = chain_graph(QEMU_LAYERS)
    compiled = build(g, "fast", ())
    assert set(_depthwise_kernels(compiled)) == {"int8_fast/depthwise/planar", "int8_fast/depthwise_raster/raster"}
    assert "__asm__ volatile" in compiled.library.files["m.c"]
    x = _inputs(g.tensors["x"].shape[1:], n=3, seed=3)[2]
    x[0, :4], x[-1, -3:] = 127, -128                  # some extremes inside a random sample
    write_library(compiled.library, str(tmp_path), force=True)
    board = load_board("nucleo-f412zg")
    write_firmware(compiled, board, str(tmp_path), [x])
    emulated = emulate(compiled, board, tmp_path, profile=False)["outputs"]
    host = run_generated(compiled, [x[None]])
    assert np.array_equal(emulated[0], host[0])
