"""16x8 TFLite models (int16 activations, int8 weights) made by TFLiteConverter compile to C that is bit-exact with
TFLite's reference kernels (BUILTIN_REF): zero differing values on 20 random inputs, on every layer; the C API
takes and gives int16_t, its quantize/dequantize helpers convert from/to float; schemes tinyc does not cover are
refused in one line naming the tensor (docs/int16-numerics.md 1)."""
import importlib.util
import subprocess
import threading

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("16x8 TFLite tests need tensorflow", allow_module_level=True)

import int16_zoo  # noqa: E402
from test_cli import tinyc  # noqa: E402

from tinyc.compiler import compile_model  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402
from tinyc.quant.tflite_writer import write_tflite  # noqa: E402
from tinyc.verify import verify  # noqa: E402

SAMPLES = 20


@pytest.fixture(scope="session")
def int16_models(tmp_path_factory):
    """Session-wide lazy 16x8 zoo: `int16_models("mlp_reshape", float_io=False)` -> a .tflite made once."""
    directory, cache, lock = tmp_path_factory.mktemp("int16"), {}, threading.Lock()

    def get(name, float_io=False):
        with lock:
            key = (name, float_io)
            if key not in cache:
                path = directory / f"{name}{'_float_io' if float_io else ''}.tflite"
                cache[key] = int16_zoo.to_int16_tflite(int16_zoo.build(name), path, float_io)
            return cache[key]
    return get


@pytest.mark.parametrize("kernels", ["fast", "reference"])
@pytest.mark.parametrize("name", sorted(int16_zoo.BUILDERS))
def test_bit_exact_with_tflite_reference(int16_models, name, kernels):
    from tinyc.compiler import codegen_options
    report = verify(int16_models(name), samples=SAMPLES, seed=7, per_layer=True,
                    options=codegen_options(kernels=kernels))
    assert report["mismatched_bytes"] == 0, report["outputs"]
    bad = [row for row in report["layers"] if not row["ok"]]
    assert not bad, bad
    assert report["ok"] and len(report["layers"]) >= 3


def test_float_io_model_quantizes_and_dequantizes_int16(int16_models):
    """QUANTIZE float32 -> int16 and DEQUANTIZE int16 -> float32 at the model's ends: equal floats."""
    path = int16_models("mlp_reshape", float_io=True)
    g = compile_model(path).plan.graph
    assert {"Quantize", "Dequantize"} <= {n.op for n in g.nodes}
    report = verify(path, inputs=int16_zoo.sample_inputs(path, SAMPLES), per_layer=True)
    assert report["ok"] and report["max_abs_err"] == 0.0, report
    assert all(row["ok"] for row in report["layers"])


def test_int16_api_and_helpers(int16_models, tmp_path):
    """The header declares int16_t pointers, the scale macros and the helpers; a C program quantizing with the
    helper gets the bytes TFLite's QUANTIZE gives, and the dequantize helper gives scale * q."""
    path = int16_models("mlp_reshape")
    out = tmp_path / "o"
    assert tinyc("compile", path, "-o", out, "--name", "net").returncode == 0
    h = (out / "net.h").read_text()
    for needle in ("int net_invoke(const int16_t *input0, int16_t *output0);", "#define NET_INPUT0_ZERO_POINT 0",
                   "void net_quantize_input(const float *x, int16_t *q);",
                   "void net_dequantize_output(const int16_t *q, float *x);", "int16 inputs and outputs"):
        assert needle in h, needle
    g = compile_model(path).plan.graph
    q_in, q_out = g.tensors[g.inputs[0]].quant, g.tensors[g.outputs[0]].quant
    s_in = float(np.float32(q_in.scale))
    x = np.array([0.0, 1.5, -1.5, 0.5 * s_in, -0.5 * s_in, 1e9, -1e9, 2.5 * s_in] + [0.0] * 16, np.float32)
    main = out / "main.c"
    main.write_text("""#include <stdio.h>
#include "net.h"
int main(void) {
  static const float x[24] = {%s};
  int16_t q[24]; float back[16]; int16_t raw[16];
  net_quantize_input(x, q);
  for (int i = 0; i < 24; ++i) printf("%%d ", q[i]);
  for (int i = 0; i < 16; ++i) raw[i] = (int16_t)(i * 4000 - 32768);
  net_dequantize_output(raw, back);
  for (int i = 0; i < 16; ++i) printf("%%.9g ", back[i]);
  return 0;
}
""" % ", ".join(f"{v!r}f" for v in x.tolist()))
    exe = out / "main"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(main), str(out / "net.c"), "-I", str(out), "-lm"], check=True)
    vals = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    q_expect = np.clip(np.trunc(x / np.float32(s_in) + np.copysign(0.5, x / np.float32(s_in))), -32768, 32767)
    assert [int(v) for v in vals[:24]] == q_expect.astype(int).tolist()
    raw = np.arange(16) * 4000 - 32768
    expect = (np.float32(q_out.scale) * raw.astype(np.float32)).astype(np.float32)
    assert np.array_equal(np.array(vals[24:], np.float32), expect)


def _dense_graph(x_quant, w_dtype="int8", b_dtype="int64") -> Graph:
    g = Graph("refused")
    g.add_tensor("x", (1, 8), "int16", quant=x_quant)
    g.add_tensor("w", (4, 8), w_dtype, np.ones((4, 8), w_dtype), quant=Quant(np.full(4, 0.01, np.float32),
                                                                               np.zeros(4, np.int64), 0))
    g.add_tensor("b", (4,), b_dtype, np.zeros(4, b_dtype), quant=Quant(np.full(4, 1e-5, np.float32),
                                                                        np.zeros(4, np.int64), 0))
    g.add_tensor("y", (1, 4), "int16", quant=Quant(np.float32(0.002), np.int64(0)))
    g.add_node("Dense", ["x", "w", "b"], ["y"])
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@pytest.mark.parametrize("case, message", [
    ("zero_point", "int16 tensor 'x' has zero point 5; tinyc takes TFLite's 16x8 scheme"),
    ("per_channel", "int16 tensor 'x' is quantized per channel .axis 1.; tinyc takes TFLite's 16x8 scheme"),
    ("int16_weights", "constant 'w' is int16 .int16 weights.; tinyc takes TFLite's 16x8 scheme"),
    ("int32_bias", "bias 'b' is int32; a 16x8 layer takes a constant int64 bias"),
])
def test_refusals_name_the_tensor(tmp_path, case, message):
    x_quant = {"zero_point": Quant(np.float32(0.001), np.int64(5)),
               "per_channel": Quant(np.full(8, 0.001, np.float32), np.zeros(8, np.int64), 1)}.get(
        case, Quant(np.float32(0.001), np.int64(0)))
    g = _dense_graph(x_quant, "int16" if case == "int16_weights" else "int8",
                     "int32" if case == "int32_bias" else "int64")
    path = tmp_path / f"{case}.tflite"
    write_tflite(g, str(path))
    with pytest.raises(TinycError, match=message) as e:
        compile_model(str(path))
    assert "\n" not in str(e.value)


def test_op_without_16x8_kernel_is_refused(tmp_path):
    """An op whose int8 rules do not take int16 activations (OpDef.int16_activations) is named, in one line."""
    q = Quant(np.float32(0.001), np.int64(0))
    g = Graph("log_softmax16")     # (TFLite has no 16x8 LOG_SOFTMAX either)
    g.add_tensor("x", (1, 8), "int16", quant=q)
    g.add_tensor("y", (1, 8), "int16", quant=Quant(np.float32(16 / 32768), np.int64(0)))
    g.add_node("LogSoftmax", ["x"], ["y"], axis=1)
    g.inputs, g.outputs = ["x"], ["y"]
    path = tmp_path / "log_softmax16.tflite"
    write_tflite(g, str(path))
    with pytest.raises(TinycError, match=r"\(LogSoftmax\) computes on int16 activations \(16x8\) and tinyc's "
                                         r"LogSoftmax has no 16x8 kernel") as e:
        compile_model(str(path))
    assert "\n" not in str(e.value)
