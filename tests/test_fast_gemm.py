"""The fast GEMM kernels (FULLY_CONNECTED, 1x1 conv, k x k conv via im2col) equal their reference twins byte
for byte, on both code paths (plain C and the DSP path emulated in C), for random layer shapes, strides, pads,
zero points, scales (fast and generic requantization), activations and odd channel counts."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tinyc.codegen import gemm_pack
from tinyc.compiler import codegen_options, compile_graph
from tinyc.ir import Graph, Quant
from tinyc.verify import run_generated

EXAMPLES = 60 if os.environ.get("TINYC_FULL") else 8
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _q(scale, zp):
    return dict(quant=Quant(np.float32(scale), np.int64(zp)))


def _weights(g, name, shape, rng, extreme):
    o = shape[0]
    w = rng.integers(-127, 128, shape).astype(np.int8)
    if extreme:
        w[0] = 127
        w[-1] = -127
    scales = rng.uniform(0.002, 0.05, o).astype(np.float32)
    return g.add_tensor(name, shape, "int8", w, quant=Quant(scales, np.zeros(o, np.int64), 0)).name


def _bias(g, name, o, rng):
    return g.add_tensor(name, (o,), "int32", rng.integers(-20000, 20000, o).astype(np.int32),
                        quant=Quant(np.ones(o, np.float32), np.zeros(o, np.int64), 0)).name


ACTIVATIONS = [None, {"fn": "relu"}, {"fn": "clip", "lo": 0.0, "hi": 6.0}]


@st.composite
def conv_case(draw):
    k = draw(st.sampled_from([1, 1, 3, 5, (1, 3), (10, 4)]))
    kh, kw = (k, k) if isinstance(k, int) else k
    s = draw(st.sampled_from([1, 2]))
    d = draw(st.sampled_from([1, 1, 2])) if kh > 1 else 1
    ic = draw(st.sampled_from([1, 3, 4, 8, 13, 32]))
    oc = draw(st.sampled_from([1, 2, 3, 4, 5, 8, 12, 17]))
    pads = draw(st.sampled_from(["valid", "same"]))
    h = draw(st.integers((kh - 1) * d + 1, (kh - 1) * d + 9))
    w = draw(st.integers((kw - 1) * d + 1, (kw - 1) * d + 9))
    return dict(kh=kh, kw=kw, s=s, d=d, ic=ic, oc=oc, pads=pads, h=h, w=w, seed=draw(st.integers(0, 10 ** 6)),
                in_zp=draw(st.sampled_from([-128, -7, 0, 5, 127])), out_zp=draw(st.sampled_from([-128, 0, 9])),
                out_scale=draw(st.sampled_from([0.05, 0.5, 0.0004])), act=draw(st.sampled_from(ACTIVATIONS)),
                extreme=draw(st.booleans()))


def conv_graph(c) -> Graph:
    rng = np.random.default_rng(c["seed"])
    g = Graph("conv")
    if c["pads"] == "same":
        oh, ow = -(-c["h"] // c["s"]), -(-c["w"] // c["s"])
        ph = max((oh - 1) * c["s"] + (c["kh"] - 1) * c["d"] + 1 - c["h"], 0)
        pw = max((ow - 1) * c["s"] + (c["kw"] - 1) * c["d"] + 1 - c["w"], 0)
        pads = (ph // 2, pw // 2, ph - ph // 2, pw - pw // 2)
    else:
        oh = (c["h"] - (c["kh"] - 1) * c["d"] - 1) // c["s"] + 1
        ow = (c["w"] - (c["kw"] - 1) * c["d"] - 1) // c["s"] + 1
        pads = (0, 0, 0, 0)
    g.add_tensor("x", (1, c["h"], c["w"], c["ic"]), "int8", **_q(0.03, c["in_zp"]))
    g.add_tensor("y", (1, oh, ow, c["oc"]), "int8", **_q(c["out_scale"], c["out_zp"]))
    w = _weights(g, "w", (c["oc"], c["kh"], c["kw"], c["ic"]), rng, c["extreme"])
    b = _bias(g, "b", c["oc"], rng)
    g.add_node("Conv2D", ["x", w, b], ["y"], strides=(c["s"], c["s"]), dilations=(c["d"], c["d"]), pads=pads,
               groups=1, activation=c["act"], name="conv")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@st.composite
def dense_case(draw):
    return dict(rows=draw(st.sampled_from([1, 1, 3])), k=draw(st.sampled_from([3, 4, 7, 16, 33, 128, 640])),
                o=draw(st.sampled_from([1, 2, 5, 8, 10, 128])), seed=draw(st.integers(0, 10 ** 6)),
                in_zp=draw(st.sampled_from([-128, 0, 31, 127])), out_zp=draw(st.sampled_from([-128, 3])),
                out_scale=draw(st.sampled_from([0.05, 0.7, 0.002])), act=draw(st.sampled_from(ACTIVATIONS[:2])),
                per_tensor=draw(st.booleans()), extreme=draw(st.booleans()))


def dense_graph(c) -> Graph:
    rng = np.random.default_rng(c["seed"])
    g = Graph("dense")
    g.add_tensor("x", (c["rows"], c["k"]), "int8", **_q(0.02, c["in_zp"]))
    g.add_tensor("y", (c["rows"], c["o"]), "int8", **_q(c["out_scale"], c["out_zp"]))
    w = _weights(g, "w", (c["o"], c["k"]), rng, c["extreme"])
    if c["per_tensor"]:
        g.tensors[w].quant = Quant(np.float32(0.01), np.int64(0))
    b = _bias(g, "b", c["o"], rng)
    g.add_node("Dense", ["x", w, b], ["y"], activation=c["act"], name="fc")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def _inputs(g, seed):
    rng = np.random.default_rng(seed)
    shape = (4, *g.tensors["x"].shape[1:]) if g.tensors["x"].shape[0] == 1 else g.tensors["x"].shape
    x = rng.integers(-128, 128, shape).astype(np.int8)
    x[0] = 127
    x[1] = -128
    return x


def assert_twins_agree(g, seed, kernel_prefix):
    fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
    ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
    kernels = [layer["kernel"] for layer in fast.library.layers if layer["kernel"]]
    assert all(k.startswith("int8/") for k in (layer["kernel"] for layer in ref.library.layers if layer["kernel"]))
    x = _inputs(g, seed)
    want = run_generated(ref, [x])[0]
    for dsp in (False, True):
        got = run_generated(fast, [x], dsp=dsp)[0]
        np.testing.assert_array_equal(got, want, err_msg=f"dsp={dsp} kernels={kernels}")
    return kernels


@settings(**SETTINGS)
@given(conv_case())
# regression: two pixels per step with an odd channel and the output over the input; the odd channel read its raw
# inputs after the pair loop had written the next pixel's outputs over them
@example(dict(kh=1, kw=1, s=1, d=1, ic=4, oc=3, pads="valid", h=1, w=2, seed=0, in_zp=-128, out_zp=-128,
              out_scale=0.05, act=None, extreme=False))
# the last pixel of an odd count on the two-pixel path, from its sign-extended inputs: with an odd channel and
# inputs past the last word of four (1x1, and a 3x3 window through im2col)
@example(dict(kh=1, kw=1, s=1, d=1, ic=13, oc=5, pads="valid", h=1, w=5, seed=1, in_zp=-7, out_zp=0,
              out_scale=0.05, act=None, extreme=True))
@example(dict(kh=3, kw=3, s=1, d=1, ic=3, oc=4, pads="same", h=3, w=5, seed=2, in_zp=5, out_zp=9,
              out_scale=0.5, act={"fn": "relu"}, extreme=False))
def test_fast_conv_equals_reference(c):
    g = conv_graph(c)
    kernels = assert_twins_agree(g, c["seed"], "int8_fast/gemm")
    w = g.tensors["w"].data.reshape(c["oc"], -1)
    if c["ic"] * c["kh"] * c["kw"] >= 4 and gemm_pack.pack(w) is not None:
        assert kernels[0].startswith("int8_fast/gemm"), kernels


def test_last_of_an_odd_number_of_pixels_reads_sign_extended_inputs():
    """Two pixels per step leave one pixel of an odd count (e.g. a 5-pixel row of a fused block): it sign-extends
    its inputs once too and takes PAIR_E steps (8 instructions per 8 multiply-accumulates, not 10 from raw bytes;
    KWS DS-CNN fused row by row on the M4: 4,015,200 -> 3,911,720 instructions)."""
    c = dict(kh=1, kw=1, s=1, d=1, ic=16, oc=8, pads="valid", h=1, w=5, seed=0, in_zp=0, out_zp=0, out_scale=0.05,
             act=None, extreme=False)
    code = compile_graph(conv_graph(c), "m", options=codegen_options(kernels="fast")).library.files["m.c"]
    assert "TINYC_GEMM_2PX_LOOP" in code
    last = code.split("the last pixel alone")[1].split("#else")[0]
    assert "TINYC_GEMM_PAIR_E_STEP" in last and "TINYC_GEMM_PAIR_STEP" not in last


@settings(**SETTINGS)
@given(dense_case())
def test_fast_dense_equals_reference(c):
    g = dense_graph(c)
    kernels = assert_twins_agree(g, c["seed"], "int8_fast/gemm")
    if c["k"] >= 4 and c["out_scale"] != 0.002 and gemm_pack.pack(g.tensors["w"].data) is not None:
        assert kernels[0].startswith("int8_fast/gemm"), kernels


def test_requantization_variants_are_all_exercised():
    """Fast MBQM, generic MBQM (an output scale below the input scale: a left shift) and the FC double path."""
    base = dict(kh=3, kw=3, s=1, d=1, ic=8, oc=6, pads="same", h=6, w=5, seed=3, in_zp=-7, out_zp=0,
                act=None, extreme=False)
    for out_scale in (0.5, 0.0004):
        g = conv_graph(dict(base, out_scale=out_scale))
        fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
        body = fast.library.files["m.c"]
        assert ("tinyc_requantize_fast(" in body) == (out_scale == 0.5)
        assert_twins_agree(g, 3, "int8_fast/gemm")


def test_breaking_the_overlap_contract_makes_verify_fail(tmp_path, monkeypatch):
    """The fast kernels keep the memory plan's read/write order: with the honest plan `tinyc verify` passes on an
    int8 DS-CNN whose convs write over their inputs; with every overlapped input placed two output pixels lower
    than the contract allows, outputs overwrite inputs still to be read and verify reports the mismatch (on the DSP
    path at least: the byte kernel copies each row before it writes, so it may survive a plan this wrong)."""
    import int8_zoo
    from tinyc.schedule import overlap
    from tinyc.verify import verify
    path = str(int8_zoo.to_int8_tflite(int8_zoo.build("ds_cnn"), tmp_path / "ds_cnn.tflite"))
    honest = verify(path, samples=1)
    assert honest["ok"] and honest["dsp_path_matches"]
    real = overlap._window_lead
    monkeypatch.setattr(overlap, "_window_lead", lambda min_read, unit, ei: real(min_read, unit, ei) - 2 * unit)
    broken = verify(path, samples=1)
    assert not broken["ok"] and (broken["mismatched_bytes"] > 0 or not broken["dsp_path_matches"])


def test_same_shaped_layers_keep_their_own_double_scales():
    """Regression: constant tables are shared by value; two FC layers with equal shapes but different double
    scales (~1e-3) once shared one table (the key rounded the doubles to integers), breaking the reference twin."""
    rng = np.random.default_rng(7)
    g = Graph("chain")
    g.add_tensor("x", (1, 16), "int8", **_q(0.02, 3))
    g.add_tensor("h", (1, 16), "int8", **_q(0.05, -2))
    g.add_tensor("y", (1, 16), "int8", **_q(0.3, 1))
    for name, src, dst in (("fc1", "x", "h"), ("fc2", "h", "y")):
        w = _weights(g, f"{name}_w", (16, 16), rng, False)
        g.add_node("Dense", [src, w, _bias(g, f"{name}_b", 16, rng)], [dst], activation=None, name=name)
    g.inputs, g.outputs = ["x"], ["y"]
    ref = compile_graph(g, "m", options=codegen_options(kernels="reference"))
    assert ref.library.files["m.c"].count("requantization scales") == 2
    assert_twins_agree(g, 7, "int8_fast/gemm")


def _full_scale(g, name):
    """Weights of magnitude 127 with random signs: the largest sums, so the rows need several segments."""
    w = g.tensors[name]
    sign = np.where(np.random.default_rng(w.size).random(w.shape) < 0.5, -1, 1)
    w.data = (127 * sign).astype(np.int8)


SEGMENTED = [
    ("dense", dict(rows=1, k=1568, o=10, seed=11, in_zp=-3, out_zp=5, out_scale=2.0, act=None, per_tensor=False,
                   extreme=False)),
    ("conv", dict(kh=3, kw=3, s=1, d=1, ic=128, oc=6, pads="same", h=3, w=4, seed=12, in_zp=-128, out_zp=0,
                  out_scale=3.0, act=None, extreme=False)),
]


def _segmented_graph(kind, case):
    g = (dense_graph if kind == "dense" else conv_graph)(case)
    _full_scale(g, "w")
    w2d = g.tensors["w"].data.reshape(g.tensors["w"].shape[0], -1)
    assert len(gemm_pack.pack(w2d).segments) >= 3
    return g


def test_segmented_rows_equal_the_reference():
    """Rows too long for one pair-packing segment (a 1,568-input Dense, a 3x3x128 conv on the two-pixel path)
    take the fast kernel and equal the reference twin on both code paths."""
    for kind, case in SEGMENTED:
        kernels = assert_twins_agree(_segmented_graph(kind, case), case["seed"], "int8_fast/gemm")
        assert kernels[0].startswith("int8_fast/gemm"), kernels


@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_segmented_rows_under_qemu(tmp_path):
    """The same layers on the emulated Cortex-M4 (the DSP asm loops with segment ends between them) and M0+ (the
    byte kernel) equal the host build."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    for kind, case in SEGMENTED:
        g = _segmented_graph(kind, case)
        fast = compile_graph(g, "m", options=codegen_options(kernels="fast"))
        x = _inputs(g, case["seed"])[:2]
        host = run_generated(fast, [x])[0]
        for board in ("nucleo-f412zg", "pico"):
            out = tmp_path / f"{kind}-{board}"
            write_library(fast.library, str(out), force=True)
            write_firmware(fast, load_board(board), str(out), [x])
            emulated = emulate(fast, load_board(board), out, profile=False)["outputs"][0]
            np.testing.assert_array_equal(emulated, host, err_msg=f"{kind} on {board}")
