"""Generated-C hygiene: the project's warning set on gcc and arm-none-eabi-gcc (Cortex-M0+ and M4) for a model
that uses every kernel, and the wheel ships what the compiler needs."""
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest

from tinyc.ops import REGISTRY
from tinyc.compiler import compile_graph
from tinyc.ir import Graph

ARM_CPUS = [("cortex-m0plus", []), ("cortex-m4", ["-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"])]


# C99 <math.h> float functions (the ones generated C may call)
MATH_H = {"expf", "expm1f", "logf", "log1pf", "powf", "sqrtf", "fabsf", "fmodf", "floorf", "ceilf", "rintf", "erff",
          "sinf", "cosf", "tanf", "asinf", "acosf", "atanf", "sinhf", "coshf", "tanhf", "asinhf", "acoshf", "atanhf"}


def every_kernel_graph() -> Graph:
    """A small graph in which every float kernel appears at least once (and Reshape as alias and as copy)."""
    rng = np.random.default_rng(0)
    g = Graph("all_kernels")
    g.add_tensor("x", (1, 6, 6, 3))
    g.inputs = ["x"]

    def t(name, shape):
        g.add_tensor(name, shape)
        return name

    def c(name, shape):
        return g.add_const(name, rng.standard_normal(shape).astype(np.float32))

    g.add_node("Pad", ["x"], [t("pad", (1, 7, 8, 3))], pads=((0, 0), (1, 0), (1, 1), (0, 0)), value=0.5)
    g.add_node("Conv2D", ["pad", c("w1", (4, 3, 3, 3)), c("b1", (4,))], [t("conv", (1, 3, 4, 4))], strides=(2, 2),
               dilations=(1, 1), pads=(1, 1, 0, 0), groups=1, activation={"fn": "clip", "lo": 0.0, "hi": 6.0})
    g.add_node("Conv2D", ["conv", c("w2", (8, 3, 3, 1))], [t("dw", (1, 3, 4, 8))], strides=(1, 1),
               dilations=(1, 1), pads=(1, 1, 1, 1), groups=4, activation={"fn": "hard_swish"})
    g.add_node("ConvTranspose2D", ["conv", c("wt", (8, 2, 3, 2)), c("bt", (8,))], [t("up", (1, 3, 4, 8))],
               strides=(2, 1), dilations=(1, 2), pads=(1, -1, 2, 5), groups=2, activation={"fn": "relu"})
    g.add_node("Add", ["dw", "up"], [t("dw_up", (1, 3, 4, 8))], activation=None)
    g.add_node("ScaleShift", ["dw_up", c("s", (8,)), c("h", (8,))], [t("ss", (1, 3, 4, 8))])
    g.add_node("MaxPool2D", ["ss"], [t("mp", (1, 2, 2, 8))], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 1, 0))
    g.add_node("AvgPool2D", ["ss"], [t("ap", (1, 2, 2, 8))], kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
               count_include_pad=False)
    g.add_node("Add", ["mp", "ap"], [t("sum", (1, 2, 2, 8))], activation={"fn": "leaky_relu", "alpha": 0.1})
    g.add_node("Mul", ["sum", c("m", (1, 1, 1, 8))], [t("mul", (1, 2, 2, 8))], activation=None)
    g.add_node("Sub", [c("k", ()), "mul"], [t("sub", (1, 2, 2, 8))], activation={"fn": "tanh"})
    g.add_node("Div", ["sub", c("d", (2, 1, 1))], [t("div", (1, 2, 2, 8))], activation={"fn": "sigmoid"})
    g.add_node("SquaredDifference", ["div", "mul"], [t("sqd", (1, 2, 2, 8))], activation=None)
    g.add_node("Pow", ["sqd", g.add_const("e", np.float32(1.5))], [t("pow", (1, 2, 2, 8))], activation=None)
    g.add_node("Max", ["pow", "mul"], [t("max", (1, 2, 2, 8))], activation=None)
    g.add_node("Min", ["max", c("mn", (1, 1, 8))], [t("min", (1, 2, 2, 8))], activation=None)
    g.add_node("Mod", ["min", c("md", (2, 1, 8))], [t("mod", (1, 2, 2, 8))], activation=None)
    g.add_node("PRelu", ["sub", c("slope", (8,))], [t("prelu", (1, 2, 2, 8))], activation={"fn": "mish"})
    g.add_node("Add", ["mod", "prelu"], [t("mixed", (1, 2, 2, 8))], activation=None)
    g.add_node("Concat", ["div", "mixed"], [t("cat", (1, 2, 2, 16))], axis=3)
    g.add_node("Transpose", ["cat"], [t("tr", (1, 16, 2, 2))], perm=(0, 3, 1, 2))
    g.add_node("Mean", ["cat"], [t("gap", (1, 1, 1, 16))], axes=(1, 2), keepdims=True)
    g.add_node("Activation", ["tr"], [t("act", (1, 16, 2, 2))], fn="elu", alpha=1.0)
    g.add_node("Reshape", ["gap"], [t("flat", (1, 16))])
    g.add_node("Dense", ["flat", c("wd", (5, 16)), c("bd", (5,))], [t("fc", (1, 5))], activation={"fn": "swish"})
    g.add_node("Reshape", ["flat"], [t("seq", (1, 4, 4))])
    g.add_node("LSTM", ["seq", c("lw", (12, 4)), c("lr", (12, 3)), c("lb", (12,)), c("lh", (1, 3)), c("lc", (1, 3)),
                        c("lp", (9,))], [t("lstm", (1, 4, 3))], output="sequence", clip=2.0, cell_clip=None,
               activations=({"fn": "sigmoid"}, {"fn": "tanh"}, {"fn": "tanh"}))
    g.add_node("GRU", ["lstm", c("gw", (12, 3)), c("gr", (12, 4)), c("gb", (12,)), c("grb", (12,)), c("gh", (1, 4))],
               [t("gru", (1, 4, 4))], output="sequence", reverse=True, linear_before_reset=True,
               activations=({"fn": "sigmoid"}, {"fn": "tanh"}))
    g.add_node("RNN", ["gru", c("rw", (5, 4)), c("rr", (5, 5)), c("rb", (5,)), c("rh", (1, 5))], [t("rnn", (1, 5))],
               output="last_h", activations=({"fn": "tanh"},))
    g.add_node("Add", ["fc", "rnn"], [t("fc_rnn", (1, 5))], activation=None)
    g.add_node("Dense", ["flat", c("svdf_mw", (16, 16))], [t("svdf_old", (1, 16))], activation=None)
    g.add_node("SvdfMemory", ["flat", c("svdf_wf", (4, 16)), "svdf_old"], [t("svdf_memory", (1, 16))])
    g.add_node("SvdfTimeFilter", ["svdf_memory", c("svdf_wt", (4, 4)), c("svdf_b", (2,))], [t("svdf", (1, 2))], rank=2,
               activation={"fn": "relu"})
    g.add_node("Dense", ["svdf", c("svdf_fc_w", (5, 2))], [t("svdf_fc", (1, 5))], activation=None)
    g.add_node("Add", ["fc_rnn", "svdf_fc"], [t("fc_rnn_svdf", (1, 5))], activation=None)
    g.add_node("LogSoftmax", ["fc_rnn_svdf"], [t("lsm", (1, 5))], axis=1)
    g.add_node("Hardmax", ["lsm"], [t("hm", (1, 5))], axis=1)
    g.add_node("Reduce", ["lsm"], [t("lse", (1, 1))], kind="logsumexp", axes=(1,), keepdims=True)
    g.add_node("Add", ["hm", "lse"], [t("hm_lse", (1, 5))], activation=None)
    g.add_node("Softmax", ["hm_lse"], [t("y", (1, 5))], axis=1)
    g.add_node("ArgMinMax", ["fc"], [t("am", (1,))], kind="max", axis=1, keepdims=False)
    g.tensors["am"].dtype = "int32"      # (int64 tensors: the arena aligns offsets to 4 bytes only)
    g.add_node("Slice", ["act"], [t("rev", (1, 16, 2, 2))], starts=(0, 0, 1, 0), steps=(1, 1, -1, 1), sizes=(1, 16, 2, 2))
    g.add_node("Tile", ["rev"], [t("tile", (1, 16, 2, 4))], reps=(1, 1, 1, 2))
    g.add_node("PadBorder", ["tile"], [t("mirror", (1, 16, 4, 4))], pads=((0, 0), (0, 0), (1, 1), (0, 0)),
               mode="reflect")
    g.add_node("Resize", ["mirror"], [t("resized", (1, 16, 6, 4))], sizes=(1, 16, 6, 4), mode="cubic",
               coord="half_pixel", scales=(1.0, 1.0, 1.5, 1.0), nearest_mode="floor", cubic_coeff_a=-0.75,
               exclude_outside=0)
    g.add_node("Gather", ["resized"], [t("gather", (1, 16, 2, 4))], axis=2, indices=np.array([3, 0]))
    g.add_node("GatherElements", ["gather"], [t("elements", (1, 16, 1, 2))], axis=3,
               indices=rng.integers(0, 4, (1, 16, 1, 2)))
    g.add_node("BroadcastTo", ["elements"], [t("bcast", (1, 16, 2, 2))], target=(1, 16, 2, 2))
    g.add_node("Compare", ["bcast", c("level", ())], [t("pos", (1, 16, 2, 2))], kind="greater")
    g.add_node("Logical", ["pos"], [t("neg", (1, 16, 2, 2))], kind="not")
    g.add_node("Logical", ["pos", "neg"], [t("either", (1, 16, 2, 2))], kind="xor")
    for name in ("pos", "neg", "either"):
        g.tensors[name].dtype = "bool"
    g.add_node("Where", ["neg", "bcast", c("other", (2, 1))], [t("sel", (1, 16, 2, 2))])
    g.add_node("Where", ["either", "sel", "bcast"], [t("sel2", (1, 16, 2, 2))])
    g.add_node("Cast", ["sel2"], [t("as_int", (1, 16, 2, 2))], to="int32")
    g.tensors["as_int"].dtype = "int32"
    g.add_node("Cast", ["as_int"], [t("as_float", (1, 16, 2, 2))], to="float32")
    g.add_node("MatMul", ["as_float", "bcast"], [t("product", (1, 16, 2, 2))])
    g.add_node("LinearQuantize", ["product", c("q_scale", (16, 1, 1)), g.add_const("q_zp", np.int16(3), "int16")],
               [t("q16", (1, 16, 2, 2))], to="int16")
    g.tensors["q_scale"].data = np.abs(g.tensors["q_scale"].data) / 1000 + 1e-3
    g.tensors["q16"].dtype = "int16"
    g.add_node("LinearDequantize", ["q16", "q_scale", "q_zp"], [t("dq", (1, 16, 2, 2))])
    g.add_node("Reshape", ["x"], [t("vol", (1, 3, 4, 3, 3))])
    g.add_node("Conv3D", ["vol", c("w3", (4, 2, 1, 2, 3))], [t("conv3", (1, 2, 5, 2, 4))], strides=(1, 1, 2),
               dilations=(2, 1, 1), pads=(0, 1, 0, 1, 0, 1), groups=1, activation={"fn": "relu"})
    g.add_node("MaxPool3D", ["conv3"], [t("mp3", (1, 2, 4, 2, 4))], kernel=(1, 2, 1), strides=(1, 1, 1),
               dilations=(1, 1, 1), pads=(0, 0, 0, 0, 0, 0))
    g.add_node("MaxPoolIndex", ["conv3"], [t("mpi3", (1, 2, 4, 2, 4))], kernel=(1, 2, 1), strides=(1, 1, 1),
               dilations=(1, 1, 1), pads=(0, 0, 0, 0, 0, 0), storage_order=0)
    g.tensors["mpi3"].dtype = "int64"
    g.add_node("AvgPool3D", ["conv3"], [t("ap3", (1, 2, 2, 2, 4))], kernel=(1, 3, 2), strides=(1, 2, 1),
               dilations=(1, 1, 1), pads=(0, 1, 0, 0, 0, 1), count_include_pad=False)
    g.add_node("Cast", ["mpi3"], [t("mpi3_float", (1, 2, 4, 2, 4))], to="float32")
    g.add_node("Add", ["mp3", "mpi3_float"], [t("sum3", (1, 2, 4, 2, 4))], activation=None)
    g.add_node("LpPool", ["sum3"], [t("lp3", (1, 2, 4, 2, 4))], kernel=(1, 2, 1), strides=(1, 1, 1),
               dilations=(1, 1, 1), pads=(0, 1, 0, 0, 0, 0), p=3)
    g.add_node("Reshape", ["lp3"], [t("sum3_4d", (1, 16, 2, 2))])
    g.add_node("Reshape", ["ap3"], [t("ap3_4d", (1, 16, 2, 1))])
    g.add_node("Add", ["sum3_4d", "ap3_4d"], [t("vol_out", (1, 16, 2, 2))], activation=None)
    g.add_node("Add", ["dq", "vol_out"], [t("dq_vol", (1, 16, 2, 2))], activation=None)
    g.add_node("Normalize", ["dq_vol", c("norm_s", (1, 1, 1, 2)), c("norm_b", (1, 16, 1, 1))],
               [t("normed", (1, 16, 2, 2))], axes=(1, 3), epsilon=1e-5, center=True)
    g.add_node("LpNormalize", ["normed"], [t("l2", (1, 16, 2, 2))], axis=2, p=2, epsilon=0.0)
    g.add_node("Identity", ["l2"], [t("y2", (1, 16, 2, 2))])
    g.outputs = ["y", "y2", "y", "am"]    # a repeated output needs its own copy
    g.validate()
    return g


def test_every_kernel_is_exercised():
    ops = {n.op for n in every_kernel_graph().nodes}
    float_ops = {name for name, d in REGISTRY.items() if d.float_kernel is not None}
    assert float_ops - ops == set(), "add the missing ops to every_kernel_graph"


def test_every_kernel_matches_interpreter(tmp_path):
    """The C of every kernel against the numpy interpreter (the IR's definition), under ASan+UBSan."""
    from tinyc import interp
    from tinyc.verify import build_host_runner
    g = every_kernel_graph()
    compiled = compile_graph(g, "allk")
    exe = build_host_runner(compiled, tmp_path, 2, False)
    x = np.random.default_rng(1).standard_normal((2, 1, 6, 6, 3)).astype(np.float32)
    x.tofile(tmp_path / "in.bin")
    outs = [tmp_path / f"o{k}.bin" for k in range(len(g.outputs))]
    subprocess.run([str(exe), str(tmp_path / "in.bin"), *map(str, outs), str(tmp_path / "t.bin")], check=True)
    for s in range(2):
        ref = [interp.run(g, [x[s]])[o] for o in g.outputs]
        for k, o in enumerate(outs):
            ours = np.fromfile(o, g.tensors[g.outputs[k]].dtype).reshape(2, -1)[s]
            np.testing.assert_allclose(ours, ref[k].ravel(), rtol=1e-5, atol=1e-5 * (1 + np.abs(ref[k]).max()))


def test_host_gcc_warning_set(tmp_path, c_compile):
    c_compile(compile_graph(every_kernel_graph(), "allk").library, tmp_path, "gcc", ("-O2",))


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("cpu,extra", ARM_CPUS)
def test_arm_gcc_warning_set(tmp_path, c_compile, cpu, extra):
    objs = c_compile(compile_graph(every_kernel_graph(), "allk").library, tmp_path, "arm-none-eabi-gcc",
                     (f"-mcpu={cpu}", "-mthumb", "-O2", "-ffunction-sections", "-fdata-sections", *extra))
    nm = subprocess.run(["arm-none-eabi-nm", *map(str, objs)], capture_output=True, text=True, check=True).stdout
    exported = sorted(line.split()[-1] for line in nm.splitlines() if " T " in line)
    # the API only (copying invoke, zero-copy run and arena pointers); everything else is static, so several
    # models link together
    assert exported == ["allk_input", "allk_invoke", "allk_output0", "allk_output1", "allk_output2", "allk_output3",
                        "allk_run"]
    # __aeabi_* are libgcc's soft-float routines (the M0+ has no FPU), not libc.
    undefined = {line.split()[-1] for line in nm.splitlines() if " U " in line and "__aeabi_" not in line}
    # Nothing from libc but <math.h>; gcc itself turns copy/fill loops into memcpy/memmove/memset calls,
    # which GCC requires of every environment, freestanding included.
    assert undefined <= MATH_H | {"memcpy", "memmove", "memset"}, undefined


def test_two_models_link_into_one_program(tmp_path, c_compile):
    a = c_compile(compile_graph(every_kernel_graph(), "first").library, tmp_path / "a")
    b = c_compile(compile_graph(every_kernel_graph(), "second").library, tmp_path / "b")
    main = tmp_path / "main.c"
    main.write_text('#include "first.h"\n#include "second.h"\n'
                    "int main(void) { static float x[108], y[5], y2[64], y3[5]; static int32_t y4[1];\n"
                    "  return first_invoke(x, y, y2, y3, y4) | second_invoke(x, y, y2, y3, y4); }\n")
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", "-I", str(tmp_path / "a"), "-I", str(tmp_path / "b"),
                    str(main), *map(str, a + b), "-o", str(tmp_path / "both"), "-lm"], check=True)
    assert subprocess.run([str(tmp_path / "both")]).returncode == 0


def test_output_is_reproducible():
    a = compile_graph(every_kernel_graph(), "allk").library.files
    b = compile_graph(every_kernel_graph(), "allk").library.files
    assert a == b


@pytest.mark.skipif(os.environ.get("TINYC_SKIP_WHEEL") == "1", reason="TINYC_SKIP_WHEEL=1")
def test_wheel_ships_templates_runtime_and_boards(tmp_path):
    """`pip install .` (not editable) must work from any directory: non-Python files are inside the wheel."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), root],
                   check=True, capture_output=True)
    venv.create(tmp_path / "env", with_pip=True)
    py = tmp_path / "env" / "bin" / "python"
    # tinyc's dependencies from the running environment (a venv's "system" site-packages would be the base
    # interpreter's, without them), after the new environment's own site-packages, where the wheel goes.
    inner = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(inner) / "outer_environment.pth").write_text("".join(f"{p}\n" for p in sorted(outer)))
    wheel = next((tmp_path / "dist").glob("tinyc-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True)
    code = ("import tinyc, sys; from tinyc.resources import resource_dir as r; "
            "assert 'site-packages' in tinyc.__file__, tinyc.__file__; "
            "assert (r('templates') / 'model.c.j2').is_file(); assert (r('runtime_c') / 'tinyc_float.h').is_file(); "
            "assert (r('templates') / 'int8' / 'conv2d.c.j2').is_file(); assert (r('runtime_c') / 'tinyc_int8.h').is_file(); "
            "import tinyc.compiler, tinyc.quant.ptq, tinyc.verify")
    res = subprocess.run([str(py), "-c", code], cwd=str(tmp_path), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("board", ["pico", "pico2"])       # soft-float M0+, hard-float M33
def test_every_float_test_model_builds_cleanly_on_arm(zoo, tmp_path, c_compile, board):
    """Every float model of the test zoo (as Keras and as ONNX, the two frontends' code paths) compiles with the
    warning set under arm-none-eabi-gcc with the board's flags."""
    import model_zoo

    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    flags = (*load_board(board).cflags, "-O2", "-ffunction-sections", "-fdata-sections")
    for name in model_zoo.ZOO:
        for fmt in ("keras", "onnx"):
            c_compile(compile_model(zoo.path(name, fmt)).library, tmp_path / f"{name}-{fmt}", "arm-none-eabi-gcc",
                      flags)
