"""Fully-integer TFLite models made by TFLiteConverter compile to C that is bit-exact with TFLite's reference
kernels (BUILTIN_REF): zero differing output bytes on 20 random inputs each, and on every layer."""
import re
import importlib.util
import json
import subprocess

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("int8 TFLite tests need tensorflow", allow_module_level=True)

import int8_zoo  # noqa: E402
from conftest import WARNINGS  # noqa: E402
from test_cli import tinyc  # noqa: E402

from tinyc.frontends.tflite_import import _op_name, _read, _schema  # noqa: E402
from tinyc.verify import verify  # noqa: E402

SAMPLES = 20

# Every TFLite op the int8 path accepts; the models together must contain each.
OPS_COVERED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "AVERAGE_POOL_2D",
               "MAX_POOL_2D", "MEAN", "RESHAPE", "SOFTMAX", "LOGISTIC", "TANH", "RELU", "LEAKY_RELU",
               "HARD_SWISH", "PAD", "CONCATENATION", "QUANTIZE", "DEQUANTIZE", "MAXIMUM", "MINIMUM",
               "SQUARED_DIFFERENCE", "PRELU", "GELU", "ABS", "EXP", "LOG", "SQRT", "RSQRT", "DIV", "LOG_SOFTMAX",
               "RELU6", "RELU_N1_TO_1", "BATCH_MATMUL"}


def model_ops(path) -> set:
    S = _schema()
    _, m = _read(S, path)
    return {_op_name(S, m, op) for op in m.subgraphs[0].operators}


@pytest.mark.parametrize("name", sorted(int8_zoo.BUILDERS))
def test_bit_exact_with_tflite_reference(int8_models, name):
    path = int8_models(name)
    report = verify(path, samples=SAMPLES, seed=7, per_layer=True)
    assert report["mismatched_bytes"] == 0, report["outputs"]
    bad = [row for row in report["layers"] if not row["ok"]]
    assert not bad, bad
    assert report["ok"] and len(report["layers"]) >= 3


@pytest.mark.parametrize("name", sorted(int8_zoo.BUILDERS))
def test_arena_within_two_percent_of_its_lower_bound(int8_models, name):
    from tinyc.compiler import compile_model
    plan = compile_model(int8_models(name)).plan
    assert plan.lower_bound <= plan.arena_bytes <= 1.02 * plan.lower_bound, plan.variants


def test_float_io_model_keeps_a_float_api(int8_models, tmp_path):
    path = int8_models("residual_cnn", float_io=True)
    assert {"QUANTIZE", "DEQUANTIZE"} <= model_ops(path)
    report = verify(path, samples=SAMPLES, seed=3)
    assert report["ok"] and report["max_abs_err"] == 0.0, report
    res = tinyc("compile", path, "-o", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    header = (tmp_path / "o" / "residual_cnn_float_io.h").read_text()
    assert "const float *input0, float *output0" in header


def test_ops_covered(int8_models):
    seen = set()
    for name in int8_zoo.BUILDERS:
        seen |= model_ops(int8_models(name))
    seen |= model_ops(int8_models("residual_cnn", float_io=True))
    assert OPS_COVERED <= seen, OPS_COVERED - seen


def test_int8_api_and_helpers(int8_models, tmp_path):
    """The header declares int8 pointers, scale/zero-point macros and the conversion helpers; a C program using
    the helpers gets the same bytes as the CLI's verify (quantize in C == quantize in Python)."""
    path = int8_models("residual_cnn")
    out = tmp_path / "o"
    assert tinyc("compile", path, "-o", out, "--name", "net").returncode == 0
    h = (out / "net.h").read_text()
    for needle in ("int net_invoke(const int8_t *input0, int8_t *output0);", "#define NET_INPUT0_SCALE",
                   "#define NET_INPUT0_ZERO_POINT", "#define NET_OUTPUT0_SCALE", "#define NET_OUTPUT0_ZERO_POINT",
                   "void net_quantize_input(const float *x, int8_t *q);",
                   "void net_dequantize_output(const int8_t *q, float *x);"):
        assert needle in h, needle
    main = out / "main.c"
    main.write_text("""#include <stdio.h>
#include "net.h"
int main(void) {
  static float x[NET_INPUT0_SIZE]; static int8_t q[NET_INPUT0_SIZE]; int8_t y[NET_OUTPUT0_SIZE];
  float f[NET_OUTPUT0_SIZE];
  for (int i = 0; i < NET_INPUT0_SIZE; ++i) x[i] = (float)((i * 37) % 101) / 25.0f - 2.0f;
  net_quantize_input(x, q);
  if (net_invoke(q, y) != 0) return 1;
  net_dequantize_output(y, f);
  for (int i = 0; i < NET_OUTPUT0_SIZE; ++i) printf("%d %.9g\\n", y[i], f[i]);
  return 0;
}
""")
    exe = tmp_path / "prog"
    res = subprocess.run(["gcc", *WARNINGS, "-O1", "-fsanitize=address,undefined", "-I", str(out), str(out / "net.c"),
                          str(main), "-o", str(exe), "-lm"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    got = np.array([int(v.split()[0]) for v in lines if v])
    x = ((np.arange(16 * 16 * 3) * 37) % 101).astype(np.float32) / np.float32(25.0) - np.float32(2.0)
    xin = tmp_path / "x.npy"
    np.save(xin, x.reshape(1, 16, 16, 3))
    res = tinyc("verify", path, "--input", xin, "--json", "--keep", tmp_path / "k")
    report = json.loads(res.stdout)
    assert report["ok"] and report["mismatched_bytes"] == 0
    ours = np.fromfile(tmp_path / "k" / "output0.bin", np.int8)
    assert np.array_equal(got, ours)


HYGIENE_MODELS = ("mlp_heads", "activations_cnn", "ds_cnn", "two_inputs_arith", "mean_keepdims_head")


def api_pointers(name, lib):
    """<name>_run and the zero-copy pointers <name>_input[k] / <name>_output[k] into the arena."""
    header = lib.files[f"{name}.h"]
    return {f"{name}_run"} | set(re.findall(rf"\b({name}_(?:input|output)\d*)\(void\)", header))


@pytest.mark.parametrize("cc,flags", [("gcc", ("-O2",)),
                                      ("arm-none-eabi-gcc", ("-mcpu=cortex-m0plus", "-mthumb", "-O2")),
                                      ("arm-none-eabi-gcc", ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16",
                                                             "-mfloat-abi=hard", "-O2"))])
def test_int8_code_hygiene(int8_models, tmp_path, c_compile, cc, flags):
    """Warning set on host gcc and arm-none-eabi-gcc (M0+, M4F) for every int8 kernel variant; only the API is
    exported; nothing from libc but round/roundf (FULLY_CONNECTED's double rounding, the quantize helper)."""
    import shutil
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    from tinyc.compiler import compile_model
    nm_tool = "arm-none-eabi-nm" if cc.startswith("arm") else "nm"
    for name in HYGIENE_MODELS:
        lib = compile_model(int8_models(name)).library
        objs = c_compile(lib, tmp_path / name, cc, flags)
        nm = subprocess.run([nm_tool, *map(str, objs)], capture_output=True, text=True, check=True).stdout
        exported = {line.split()[-1] for line in nm.splitlines() if " T " in line}
        assert exported == {f"{name}_invoke", f"{name}_quantize_input{'0' if name == 'two_inputs_arith' else ''}",
                            *[f"{name}_dequantize_output{k if name == 'mlp_heads' else ''}"
                              for k in (range(3) if name == "mlp_heads" else [""])],
                            *([f"{name}_quantize_input1"] if name == "two_inputs_arith" else []),
                            *api_pointers(name, lib)}, exported
        undefined = {line.split()[-1] for line in nm.splitlines() if " U " in line and "__aeabi_" not in line}
        assert undefined <= {"round", "roundf", "memcpy", "memmove", "memset"}, (name, undefined)


@pytest.mark.parametrize("kernels", ["fast", "reference"])
@pytest.mark.parametrize("board", ["pico", "nucleo-f412zg", "stm32f746g-disco", "pico2"])   # M0+, M4, M7, M33
def test_every_int8_model_builds_cleanly_for_every_core(int8_models, tmp_path, c_compile, board, kernels):
    """Every int8 test model, with both kernel sets (the fast kernels' DSP paths on M4/M7/M33, their plain paths
    on the M0+), compiles with the warning set (-Werror) under arm-none-eabi-gcc with the board's flags."""
    import shutil
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    from tinyc.boards import load_board
    from tinyc.compiler import codegen_options, compile_model
    flags = (*load_board(board).cflags, "-O2", "-ffunction-sections", "-fdata-sections")
    for name in int8_zoo.BUILDERS:
        lib = compile_model(int8_models(name), options=codegen_options(kernels=kernels)).library
        c_compile(lib, tmp_path / name, "arm-none-eabi-gcc", flags)


def test_int8_output_is_reproducible(int8_models):
    from tinyc.compiler import compile_model
    path = int8_models("ds_cnn")
    assert compile_model(path).library.files == compile_model(path).library.files


def test_asymmetric_weights_are_refused(tmp_path):
    from test_cli import one_line_error

    from tinyc.ir import Graph, Quant
    from tinyc.quant.tflite_writer import write_tflite
    g = Graph("asym")
    q = lambda s, z: Quant(np.asarray(s, np.float32), np.asarray(z, np.int64))  # noqa: E731
    g.add_tensor("x", (1, 8), "int8", quant=q(0.1, 0))
    g.add_tensor("w", (4, 8), "int8", np.ones((4, 8), np.int8), quant=q(0.01, 3))
    g.add_tensor("y", (1, 4), "int8", quant=q(0.2, 0))
    g.add_node("Dense", ["x", "w"], ["y"], activation=None)
    g.inputs, g.outputs = ["x"], ["y"]
    path = tmp_path / "asym.tflite"
    write_tflite(g, str(path))
    one_line_error(tinyc("compile", path, "-o", tmp_path / "o"), "asymmetric")
