"""Fast int8 pooling, Add/Sub/Mul, MEAN and unary (activation / requantize) kernels (tinyc/codegen/int8_fast_misc.py)
against their reference twins: each model is compiled with kernels="fast" and kernels="reference", both run on
the host (the fast one on its plain-C and on its DSP path), and the bytes must be identical; `tinyc verify`
checks the fast build against TFLite's reference kernels as well.

Inputs are exhaustive where that is possible: every int8 value through each unary op (so the compile-time
tables equal the reference C on all 256 inputs), every pair of int8 values through Add, Sub and Mul (with the
rescale tables and with the computed rescale)."""
import importlib.util
import subprocess

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs tensorflow", allow_module_level=True)

from tinyc.codegen import int8_fast_misc  # noqa: E402
from tinyc.compiler import codegen_options, compile_model  # noqa: E402
from tinyc.frontends.geometry import conv_geometry  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402
from tinyc.quant.fixed_point import multiply_by_quantized_multiplier, quantize_multiplier  # noqa: E402
from tinyc.quant.tflite_writer import write_tflite  # noqa: E402
from tinyc.resources import resource_dir  # noqa: E402
from tinyc.verify import run_generated, verify  # noqa: E402

ALL = np.arange(-128, 128, dtype=np.int8)
FAST_OPS = ("MaxPool2D", "AvgPool2D", "Add", "Sub", "Mul", "Activation", "Quantize", "Mean")


def _q(scale, zp=0):
    return Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))


def _compile_both(path):
    return (compile_model(str(path), options=codegen_options(kernels="fast")),
            compile_model(str(path), options=codegen_options(kernels="reference")))


def _same_bytes(fast, ref, inputs, expected=None, dsp_too=True):
    """fast (plain path, and DSP path if `dsp_too`) == reference, byte for byte; returns the reference outputs.
    (`verify(path, inputs)` runs the DSP path on the same inputs and requires it to equal the plain path.)"""
    want = expected if expected is not None else run_generated(ref, inputs)
    for dsp in (False, True) if dsp_too else (False,):
        got = run_generated(fast, inputs, dsp=dsp)
        for k, (a, b) in enumerate(zip(got, want)):
            bad = np.flatnonzero(a.reshape(-1) != b.reshape(-1))
            assert bad.size == 0, (f"output {k} ({fast.plan.graph.outputs[k]}), dsp={dsp}: {bad.size} bytes differ, "
                                   f"first at {bad[0]}: {a.reshape(-1)[bad[0]]} vs {b.reshape(-1)[bad[0]]}")
    return want


def _fast_layers(compiled, except_names=()):
    """Every pooling / elementwise / unary layer took a fast kernel (except the named ones); their rows."""
    rows = [r for r in compiled.library.layers if r["op"] in FAST_OPS and not r["alias"]]
    for r in rows:
        fast = (r["kernel"] or "").startswith("int8_fast/")
        assert fast != (r["name"] in except_names), r
    return rows


# -- unary ops on every int8 input --------------------------------------------------------------------------------
UNARY_INPUTS = {"u1": (0.05, -3), "u2": (0.3, 120), "u3": (0.0123, -128)}
UNARY_OPS = [  # (input, name, op, attrs, output scale / input scale, output zero point or None: the input's)
    ("u1", "relu", "Activation", dict(fn="relu"), 1.7, -128),
    ("u2", "relu_same", "Activation", dict(fn="relu"), 1.0, None),            # a clamp: SIMD max on DSP
    ("u3", "relu6", "Activation", dict(fn="clip", lo=0.0, hi=6.0), 0.8, -100),
    ("u1", "relu1", "Activation", dict(fn="clip", lo=-1.0, hi=1.0), 1.0, None),  # a clamp on both sides
    ("u2", "leaky", "Activation", dict(fn="leaky_relu", alpha=0.2), 0.9, 10),
    ("u3", "hswish", "Activation", dict(fn="hard_swish"), 0.6, -20),
    ("u1", "hswish2", "Activation", dict(fn="hard_swish"), 1.3, 40),
    ("u2", "sigmoid", "Activation", dict(fn="sigmoid"), None, -128),          # scale 1/256
    ("u3", "tanh", "Activation", dict(fn="tanh"), None, 0),                   # scale 1/128
    ("u1", "requant", "Quantize", {}, 0.37, 17),
]
# (a graph of at most 11 independent layers keeps the scheduler's order search exact and quick)


UNARY_SHAPE = (1, 7, 37, 1)    # 259 values: all 256, and a tail after the 4- and 8-element steps


def _unary_graph() -> tuple[Graph, list]:
    g = Graph("unary")
    for name, (s, zp) in UNARY_INPUTS.items():
        g.add_tensor(name, UNARY_SHAPE, "int8", quant=_q(s, zp))
        g.inputs.append(name)
    for src, name, op, attrs, ratio, zo in UNARY_OPS:
        s, zp = UNARY_INPUTS[src]
        so = ratio * s if ratio else {"sigmoid": 1 / 256, "tanh": 1 / 128}[attrs["fn"]]
        g.add_tensor(name, UNARY_SHAPE, "int8", quant=_q(so, zp if zo is None else zo))
        g.add_node(op, [src], [name], **attrs)
        g.outputs.append(name)
    # the same quantization again: written over its dying input, nothing to do
    g.add_tensor("again", UNARY_SHAPE, "int8", quant=g.tensors["requant"].quant)
    g.add_node("Quantize", ["requant"], ["again"])
    g.outputs[g.outputs.index("requant")] = "again"
    rng = np.random.default_rng(3)
    samples = 3
    inputs = [np.stack([np.concatenate([rng.permutation(ALL), rng.integers(-128, 128, 3).astype(np.int8)])
                        for _ in range(samples)]).reshape(samples, *UNARY_SHAPE) for _ in UNARY_INPUTS]
    return g, inputs


@pytest.fixture(scope="module")
def unary(tmp_path_factory):
    g, inputs = _unary_graph()
    path = tmp_path_factory.mktemp("unary") / "unary.tflite"
    write_tflite(g, str(path))
    return path, inputs


def test_unary_tables_equal_reference_on_all_inputs(unary):
    path, inputs = unary
    fast, ref = _compile_both(path)
    rows = _fast_layers(fast)
    assert len(rows) == len(UNARY_OPS) + 1
    kernels = {r["kernel"] for r in rows}
    assert {"int8_fast/lut/table", "int8_fast/lut/clamp", "int8_fast/lut/identity"} <= kernels
    _same_bytes(fast, ref, inputs, dsp_too=False)
    report = verify(str(path), inputs=inputs)                              # DSP path == plain path too
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]


def test_compile_time_helpers():
    """Clamp detection and the choice of requantization expression (each form's exactness is what the
    model tests above check)."""
    assert int8_fast_misc._clamp_of([max(v, -5) for v in range(-128, 128)]) == (-5, 127)
    assert int8_fast_misc._clamp_of([v // 2 for v in range(-128, 128)]) is None
    m = 1 << 30
    # right shift: fast form, zero point folded into the rounding constant 4 + 5 * 8
    assert int8_fast_misc.requant_expr("a", 100, m, -3, 5) == "tinyc_requantize_fast2((a) * 2, 1073741824, 3, 44)"
    assert int8_fast_misc.requant_expr("a", 1 << 30, m, -3) == "tinyc_requantize(a, 1073741824, -3)"
    assert int8_fast_misc.requant_expr("a", 1000, m, 2) == "tinyc_mulhr((a) * 8, 1073741824)"
    assert int8_fast_misc.requant_expr("a", 1 << 28, m, 2) == "tinyc_requantize(a, 1073741824, 2)"
    assert int8_fast_misc.requant_expr("a", 1000, 0, 2, 7) == "7"
    assert int8_fast_misc._pure_shift([(x - 3) * 2 ** 19 for x in range(-128, 128)], 3) == 19


def test_average_pool_reciprocals_are_exact_for_every_window_size():
    assert all(int8_fast_misc.avg_reciprocal(n) is not None for n in range(1, 256))


# -- the C helpers against the Python models the code generator relies on ------------------------------------------
HARNESS = r"""
#include <stdio.h>
#include "tinyc_int8.h"
#include "tinyc_simd.h"
int main(void) {
  char op[8];
  long long a, b, c, d, e, f, g;
  while (scanf("%7s %lld %lld %lld %lld %lld %lld %lld", op, &a, &b, &c, &d, &e, &f, &g) == 8) {
    if (op[0] == 'h') {          /* hard swish: x, in_zp, out_mult, out_exp, relu_mult, relu_exp, out_zp */
      printf("%d\n", tinyc_hard_swish((int32_t)a, (int32_t)b, (int16_t)c, (int)d, (int16_t)e, (int)f, (int32_t)g));
    } else if (op[0] == 'a') {   /* average: s, neg_adjust, recip, offset */
      printf("%d\n", tinyc_avg_div((int32_t)a, (int32_t)b, (uint32_t)c, (uint32_t)d));
    } else {                     /* requantize: acc2, multiplier, rshift, round */
      printf("%d %d\n", tinyc_requantize_fast2((int32_t)a, (int32_t)b, (int32_t)c, (int32_t)d),
             tinyc_mulhr((int32_t)a, (int32_t)b));
    }
  }
  return 0;
}
"""


def _helper_cases(rng) -> tuple[list, list]:
    """(input lines, expected outputs) for the harness."""
    lines, want = [], []
    for _ in range(60):                           # hard swish: random scales, every input
        s_in = float(np.exp(rng.uniform(np.log(1e-3), np.log(10.0))))
        p = int8_fast_misc.hard_swish_params(s_in, s_in * float(np.exp(rng.uniform(-2, 2))))
        if p is None:
            continue
        zi, zo = (int(v) for v in rng.integers(-128, 128, 2))
        for x in range(-128, 128):
            lines.append(f"h {x} {zi} {p[0]} {p[1]} {p[2]} {p[3]} {zo}")
            want.append(str(int8_fast_misc.hard_swish_value(x, zi, *p, zo)))
    for n in list(range(1, 40)) + [64, 100, 127, 128, 200, 254, 255]:    # average: sums at the ends and random
        recip, offset = int8_fast_misc.avg_reciprocal(n)
        sums = np.concatenate([np.arange(-128 * n, -128 * n + 40), np.arange(-40, 41),
                               np.arange(127 * n - 40, 127 * n + 1), rng.integers(-128 * n, 127 * n + 1, 100)])
        for sm in sums.tolist():
            num = sm + n // 2 if sm > 0 else sm - n // 2
            lines.append(f"a {sm} {-1 if n % 2 == 0 else 0} {recip} {offset} 0 0 0")
            want.append(str(int(num / n)))                                 # C division truncates
    for _ in range(3000):                         # requantize: |acc| < 2^30, right shift >= 1, zero point folded
        m, sh = quantize_multiplier(float(np.exp(rng.uniform(np.log(1e-6), np.log(0.99)))))
        if m == 0 or sh > -1:
            continue
        acc, zp, r = int(rng.integers(-(1 << 30) + 1, 1 << 30)), int(rng.integers(-128, 128)), -sh
        bound = abs(acc)
        fold = bound + 2 + (1 << (r - 1)) + abs(zp) * (1 << r) < (1 << 31)
        rnd = (1 << (r - 1)) + (zp * (1 << r) if fold else 0)
        lines.append(f"r {2 * acc} {m} {r} {rnd} 0 0 0")
        want.append(f"{multiply_by_quantized_multiplier(acc, m, sh) + (zp if fold else 0)} "
                    f"{(2 * acc * m + (1 << 31)) >> 32}")
    return lines, want


@pytest.mark.parametrize("dsp", [False, True])
def test_c_helpers_equal_python_models(tmp_path, dsp):
    """tinyc_hard_swish against the model its tables come from (every input, random scales); tinyc_avg_div and
    tinyc_requantize_fast2 / tinyc_mulhr (plain: 16-bit halves; DSP: SMMULR's C twin) against exact integers.
    Built with UBSan: no overflow or undefined shift on the way."""
    (tmp_path / "h.c").write_text(HARNESS)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", *(["-DTINYC_SIMD_EMULATE"] if dsp else []),
                    "-I", str(resource_dir("runtime_c")), str(tmp_path / "h.c"), "-o", str(tmp_path / "h"), "-lm"],
                   check=True)
    lines, want = _helper_cases(np.random.default_rng(13))
    res = subprocess.run([str(tmp_path / "h")], input="\n".join(lines), capture_output=True, text=True, check=True)
    got = res.stdout.splitlines()
    assert len(got) == len(want)
    bad = [(line, g, w) for line, g, w in zip(lines, got, want) if g != w]
    assert not bad, bad[:5]


# -- Add / Sub / Mul on every pair of int8 values -------------------------------------------------------------------
BINARY_SETS = [  # (scale a, zp a, scale b, zp b, {op: (out scale, out zp, fused activation)})
    (0.02, -128, 0.05, 127, {"Add": (0.06, 3, {"fn": "relu"}), "Sub": (0.07, -5, None),
                             "Mul": (0.004, -128, None)}),
    (0.1, 5, 0.1, 5, {"Add": (0.15, -7, None), "Sub": (0.2, 0, {"fn": "clip", "lo": 0.0, "hi": 6.0}),
                      "Mul": (0.5, 20, {"fn": "clip", "lo": -1.0, "hi": 1.0})}),
    (0.9, 127, 0.003, -100, {"Add": (1.1, 0, None), "Sub": (0.8, -128, None),
                             "Mul": (0.001, 9, None)}),                      # Mul multiplier > 1: left shift
]


def _binary_graph() -> tuple[Graph, list]:
    g = Graph("binary")
    a = np.repeat(ALL, 256).reshape(1, 1, 256, 256, 1)
    b = np.tile(ALL, 256).reshape(1, 1, 256, 256, 1)
    inputs = []
    for k, (sa, za, sb, zb, ops) in enumerate(BINARY_SETS):   # 9 layers, then 2 broadcasts
        g.add_tensor(f"a{k}", (1, 256, 256, 1), "int8", quant=_q(sa, za))
        g.add_tensor(f"b{k}", (1, 256, 256, 1), "int8", quant=_q(sb, zb))
        g.inputs += [f"a{k}", f"b{k}"]
        inputs += [a, b]
        for op, (so, zo, act) in ops.items():
            out = f"{op.lower()}{k}"
            g.add_tensor(out, (1, 256, 256, 1), "int8", quant=_q(so, zo))
            g.add_node(op, [f"a{k}", f"b{k}"], [out], activation=act)
            g.outputs.append(out)
    # broadcasts and an odd element count
    rng = np.random.default_rng(5)
    g.add_tensor("c", (1, 4, 5, 7), "int8", quant=_q(0.04, -9))
    g.add_tensor("d", (1, 1, 1, 7), "int8", quant=_q(0.03, 11))
    g.inputs += ["c", "d"]
    inputs += [rng.integers(-128, 128, (1, 1, 4, 5, 7)).astype(np.int8),
               rng.integers(-128, 128, (1, 1, 1, 1, 7)).astype(np.int8)]
    for op in ("Sub", "Mul"):
        out = f"{op.lower()}_bc"
        g.add_tensor(out, (1, 4, 5, 7), "int8", quant=_q(0.05, 2))
        g.add_node(op, ["c", "d"], [out], activation=None)
        g.outputs.append(out)
    return g, inputs


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    g, inputs = _binary_graph()
    path = tmp_path_factory.mktemp("binary") / "binary.tflite"
    write_tflite(g, str(path))
    fast, ref = _compile_both(path)
    return path, inputs, fast, ref


def test_add_sub_mul_equal_reference_on_all_pairs(binary, monkeypatch):
    path, inputs, fast, ref = binary
    rows = _fast_layers(fast)
    assert len(rows) == 3 * len(BINARY_SETS) + 2
    assert {r["kernel"] for r in rows} >= {"int8_fast/binary/table", "int8_fast/binary/compute",
                                           "int8_fast/binary/mul"}
    want = _same_bytes(fast, ref, inputs)
    # the same Add/Sub layers with the rescale computed instead of looked up
    monkeypatch.setattr(int8_fast_misc, "ADD_TABLE_MIN_ELEMENTS", 1 << 30)
    computed = compile_model(str(path), options=codegen_options(kernels="fast"))
    assert "int8_fast/binary/table" not in {r["kernel"] for r in _fast_layers(computed)}
    _same_bytes(computed, ref, inputs, want)


def test_add_sub_mul_verify_against_tflite(binary):
    path, inputs, _, _ = binary
    report = verify(str(path), inputs=inputs)
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]


# -- pooling and MEAN -----------------------------------------------------------------------------------------------
POOL_INPUTS = {"p13": ((1, 9, 11, 13), 0.07, -11), "p3": ((1, 7, 6, 3), 0.2, 100),
               "p8": ((1, 12, 10, 8), 0.01, -128), "p5": ((1, 17, 16, 5), 0.05, 3)}
POOLS = [  # (input, op, kernel, strides, padding, fused activation)
    ("p13", "MaxPool2D", (3, 3), (2, 2), "same", None),
    ("p13", "AvgPool2D", (3, 3), (1, 1), "same", {"fn": "relu"}),
    ("p13", "MaxPool2D", (4, 2), (3, 3), "same", {"fn": "clip", "lo": 0.0, "hi": 6.0}),
    ("p3", "MaxPool2D", (2, 2), (1, 1), "valid", {"fn": "clip", "lo": 0.0, "hi": 6.0}),
    ("p3", "AvgPool2D", (2, 3), (2, 1), "valid", None),
    ("p8", "AvgPool2D", (3, 3), (2, 2), "same", {"fn": "clip", "lo": -1.0, "hi": 1.0}),
    ("p8", "AvgPool2D", (5, 5), (1, 1), "same", None),
    ("p5", "MaxPool2D", (9, 8), (1, 2), "same", None),                     # 72 cells: not unrolled
    ("p5", "AvgPool2D", (16, 16), (1, 1), "valid", None),                  # 256 cells: reference kernel
]


def _pool_graph() -> tuple[Graph, list]:
    g = Graph("pools")
    rng = np.random.default_rng(7)
    inputs = []
    for name, (shape, s, zp) in POOL_INPUTS.items():
        g.add_tensor(name, shape, "int8", quant=_q(s, zp))
        g.inputs.append(name)
        x = rng.integers(-128, 128, (3, *shape)).astype(np.int8)
        x[0].reshape(-1)[:min(256, x[0].size)] = ALL[:x[0].size]              # extremes
        inputs.append(x)
    for k, (src, op, kernel, strides, padding, act) in enumerate(POOLS):
        shape, s, zp = POOL_INPUTS[src]
        (oh, t, b), (ow, left, r) = (conv_geometry(shape[1 + i], kernel[i], strides[i], 1, padding) for i in (0, 1))
        out = f"pool{k}"
        g.add_tensor(out, (1, oh, ow, shape[3]), "int8", quant=_q(s, zp))
        g.add_node(op, [src], [out], kernel=kernel, strides=strides, pads=(t, left, b, r), count_include_pad=False,
                   activation=act)
        g.outputs.append(out)
    for src, keepdims in (("p13", False), ("p5", True)):
        shape = POOL_INPUTS[src][0]
        out = f"mean_{src}"
        g.add_tensor(out, (1, 1, 1, shape[3]) if keepdims else (1, shape[3]), "int8", quant=_q(0.03, -20))
        g.add_node("Mean", [src], [out], axes=[1, 2], keepdims=keepdims)
        g.outputs.append(out)
    return g, inputs


def test_pools_and_mean_equal_reference(tmp_path):
    g, inputs = _pool_graph()
    path = tmp_path / "pools.tflite"
    write_tflite(g, str(path))
    fast, ref = _compile_both(path)
    rows = _fast_layers(fast, except_names={f"pool{len(POOLS) - 1}"})
    assert len(rows) == len(POOLS) + 2
    assert {r["kernel"] for r in rows} >= {"int8_fast/pool/max", "int8_fast/pool/avg", "int8_fast/mean"}
    _same_bytes(fast, ref, inputs, dsp_too=False)
    report = verify(str(path), inputs=inputs)                              # DSP path == plain path too
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]


# -- a converted Keras model: residual Add, pools, standalone activations -------------------------------------------
def _keras_model():
    from int8_zoo import _keras
    keras = _keras()
    L = keras.layers
    x = keras.Input((12, 10, 6))
    h = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    h = L.Add()([h, L.Conv2D(6, 1)(h)])                                   # residual Add, written in place
    h = L.LeakyReLU(negative_slope=0.1)(h)
    p = L.MaxPooling2D(3, strides=2, padding="same")(h)
    q = L.AveragePooling2D(2, strides=1, padding="valid")(L.Conv2D(5, 1)(h))
    q = L.ReLU()(L.Concatenate()([q, L.Conv2D(3, 1)(q)]))                # standalone RELU
    q = L.Activation("hard_swish")(L.MaxPooling2D(2)(q))
    s = L.Multiply()([L.GlobalAveragePooling2D()(p), L.Dense(6, activation="sigmoid")(L.Flatten()(q))])
    return keras.Model(x, L.Dense(4)(s), name="fast_misc")


def test_keras_model_fast_equals_reference(tmp_path):
    import int8_zoo
    keras = int8_zoo._keras()
    keras.utils.set_random_seed(0)
    from model_zoo import randomize
    path = int8_zoo.to_int8_tflite(randomize(_keras_model(), 0), tmp_path / "fast_misc.tflite")
    fast, ref = _compile_both(path)
    rows = _fast_layers(fast)
    ops = {r["op"] for r in rows}
    assert {"Add", "MaxPool2D", "AvgPool2D", "Activation", "Mean", "Mul"} <= ops
    assert any(r["in_place"] == "elementwise" for r in rows)
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (4, 1, 12, 10, 6)).astype(np.int8)
    x[0] = 127
    x[1] = -128
    _same_bytes(fast, ref, [x], dsp_too=False)
    report = verify(path, inputs=[x])                                      # DSP path == plain path too
    assert report["ok"] and report["mismatched_bytes"] == 0, report["outputs"]
