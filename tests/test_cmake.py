"""The library drops into users' own CMake builds: `tinyc compile` writes a CMakeLists.txt that defines one
static library target per model (codegen/cmake.py).

- A host CMake project (written here) takes an int8 model compiled twice into one directory (fast kernels,
  and reference kernels under another name: two targets in one CMakeLists.txt) with add_subdirectory inside its
  source tree, and a float model with --arena external from a directory outside it (add_subdirectory with a
  binary directory); its main.c reads inputs from a file, invokes the three models and writes the outputs,
  which must equal TFLite's reference kernels / the host build bit for bit (int8) and Keras within `tinyc
  verify`'s tolerance (float). CMake's default build type (no optimisation) and the warning set with -Werror.
- The same directories build for Cortex-M0+ and Cortex-M33 with arm-none-eabi-gcc through a CMake toolchain
  file (CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY) in CMake's build types: static libraries, plus an
  executable linked with newlib (libm resolved); the M33's int8 library uses the DSP instructions, the M0+'s
  does not, at -O0, -O3 and -Os.
- Reserved target names, merging and byte-identical output.
"""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import int8_zoo
import model_zoo

from tinyc.codegen import cmake
from tinyc.compiler import codegen_options, compile_model, write_library
from tinyc.errors import TinycError
from tinyc.verify import reference_outputs, run_generated, tolerance

if shutil.which("cmake") is None:
    pytest.fail("cmake is not installed: the CMake tests need it (apt-get install cmake; CI installs it)",
                pytrace=False)

SAMPLES = 5
WARNINGS = "-Wall -Wextra -Wshadow -Werror"

MAIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include "int8m.h"
#include "int8ref.h"
#include "floatm.h"

/* --arena external: the application owns the float model's arena. */
static union { double align; unsigned char bytes[FLOATM_ARENA_BYTES]; } arena;

static FILE *open_or_die(const char *path, const char *mode) {
  FILE *f = fopen(path, mode);
  if (f == NULL) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
  return f;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: app SAMPLES IN_INT8 IN_FLOAT OUT\n"); return 2; }
  int n = atoi(argv[1]);
  FILE *qin = open_or_die(argv[2], "rb"), *fin = open_or_die(argv[3], "rb"), *out = open_or_die(argv[4], "wb");
  for (int s = 0; s < n; ++s) {
    int8_t x[INT8M_INPUT0_SIZE], y[INT8M_OUTPUT0_SIZE], y_ref[INT8REF_OUTPUT0_SIZE];
    float a[FLOATM_INPUT0_SIZE], b[FLOATM_INPUT1_SIZE], f0[FLOATM_OUTPUT0_SIZE], f1[FLOATM_OUTPUT1_SIZE];
    if (fread(x, sizeof x, 1, qin) != 1 || fread(a, sizeof a, 1, fin) != 1 || fread(b, sizeof b, 1, fin) != 1)
      return 3;
    if (int8m_invoke(x, y) != 0 || int8ref_invoke(x, y_ref) != 0) return 4;
    if (floatm_invoke_with_arena(&arena, a, b, f0, f1) != 0) return 5;
    fwrite(y, sizeof y, 1, out);
    fwrite(y_ref, sizeof y_ref, 1, out);
    fwrite(f0, sizeof f0, 1, out);
    fwrite(f1, sizeof f1, 1, out);
  }
  fclose(out);
  return 0;
}
"""

# The firmware side: every model called once from a function the executable keeps.
APP_C = r"""
#include "int8m.h"
#include "int8ref.h"
#include "floatm.h"

static union { double align; unsigned char bytes[FLOATM_ARENA_BYTES]; } arena;
static int8_t x[INT8M_INPUT0_SIZE], y[INT8M_OUTPUT0_SIZE];
static float a[FLOATM_INPUT0_SIZE], b[FLOATM_INPUT1_SIZE], f0[FLOATM_OUTPUT0_SIZE], f1[FLOATM_OUTPUT1_SIZE];

int app_step(void) {
  float real[INT8M_INPUT0_SIZE];
  for (int i = 0; i < INT8M_INPUT0_SIZE; ++i) real[i] = a[i % FLOATM_INPUT0_SIZE];
  int8m_quantize_input(real, x);
  return int8m_invoke(x, y) | int8ref_invoke(x, y) | floatm_invoke_with_arena(&arena, a, b, f0, f1);
}

int main(void) { return app_step(); }
"""


def run(cmd, **kw):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Models compiled into a host project's tree (two int8 targets in one directory) and outside it (float)."""
    root = tmp_path_factory.mktemp("cmake")
    tflite = int8_zoo.to_int8_tflite(int8_zoo.build("residual_cnn"), root / "residual_cnn.tflite")
    keras_model = model_zoo.export("multi_io", root)["keras"]
    src = root / "proj"
    int8_dir, float_dir = src / "models" / "int8", root / "float_out"
    fast = compile_model(tflite, "int8m")
    ref = compile_model(tflite, "int8ref", options=codegen_options(kernels="reference"))
    flt = compile_model(keras_model, "floatm", options=codegen_options(arena="external"))
    write_library(fast.library, str(int8_dir))
    write_library(ref.library, str(int8_dir))
    write_library(flt.library, str(float_dir))
    (src / "main.c").write_text(MAIN_C)
    (src / "app.c").write_text(APP_C)
    return dict(root=root, src=src, int8_dir=int8_dir, float_dir=float_dir, tflite=tflite, keras=keras_model,
                fast=fast, ref=ref, flt=flt)


def test_cmakelists_defines_each_model_as_a_target(project):
    text = (project["int8_dir"] / "CMakeLists.txt").read_text()
    assert text.startswith(cmake.FIRST_LINE)
    assert "add_library(int8m STATIC int8m.c int8m.h tinyc_float.h tinyc_int8.h tinyc_simd.h)" in text
    assert "add_library(int8ref STATIC int8ref.c int8ref.h tinyc_float.h tinyc_int8.h)" in text   # no SIMD header
    assert text.index("model int8m") < text.index("model int8ref")
    assert text.count("target_link_libraries(int8m PRIVATE m)") == 1            # libm for every target
    float_text = (project["float_dir"] / "CMakeLists.txt").read_text()
    assert "the caller's arena (floatm_invoke_with_arena)" in float_text
    assert "target_link_libraries(floatm PRIVATE m)" in float_text
    for t in (text, float_text):
        assert "C_STANDARD 99" in t and "COMPILE_OPTIONS" not in t and "compile_options" not in t
        assert "compile_definitions" not in t and str(project["root"]) not in t


def test_host_project_matches_the_reference(project, tmp_path):
    src = project["src"]
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\n"
        "project(host_app C)\n"
        f"add_compile_options({WARNINGS})\n"
        "add_subdirectory(models/int8)\n"
        f'add_subdirectory("{project["float_dir"].as_posix()}" float_model)\n'
        "add_executable(app main.c)\n"
        "target_link_libraries(app PRIVATE int8m tinyc::int8ref floatm)\n")
    build = tmp_path / "build"
    run(["cmake", "-S", src, "-B", build, "-DCMAKE_C_COMPILER=gcc", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"])
    run(["cmake", "--build", build, "-j", "2"])
    # the libraries get -std=c99 and their include directory, nothing else beyond the user's flags
    for entry in json.loads((build / "compile_commands.json").read_text()):
        if entry["file"].endswith("main.c"):
            continue
        extra = [w for w in entry["command"].split()[1:] if w not in WARNINGS.split() and not w.startswith("-I")
                 and w not in ("-o", "-c") and not w.endswith((".o", ".obj", ".c"))]
        assert extra == ["-std=c99"], entry["command"]
    assert "-lm" in (build / "CMakeFiles" / "app.dir" / "link.txt").read_text().split()

    rng = np.random.default_rng(5)
    g8, gf = project["fast"].plan.graph, project["flt"].plan.graph
    x = rng.integers(-128, 128, (SAMPLES, *g8.tensors[g8.inputs[0]].shape)).astype(np.int8)
    fin = [rng.standard_normal((SAMPLES, *gf.tensors[i].shape)).astype(np.float32) for i in gf.inputs]
    x.tofile(tmp_path / "q.bin")
    np.concatenate([f.reshape(SAMPLES, -1) for f in fin], axis=1).tofile(tmp_path / "f.bin")
    run([build / "app", SAMPLES, tmp_path / "q.bin", tmp_path / "f.bin", tmp_path / "out.bin"])

    shapes = [(np.int8, g8.tensors[g8.outputs[0]].shape), (np.int8, g8.tensors[g8.outputs[0]].shape)] + \
             [(np.float32, gf.tensors[o].shape) for o in gf.outputs]
    raw, pos, got = (tmp_path / "out.bin").read_bytes(), 0, [[] for _ in shapes]
    for _ in range(SAMPLES):
        for k, (dt, shape) in enumerate(shapes):
            n = int(np.prod(shape)) * np.dtype(dt).itemsize
            got[k].append(np.frombuffer(raw, dt, n // np.dtype(dt).itemsize, pos).reshape(shape))
            pos += n
    assert pos == len(raw)
    got = [np.stack(g) for g in got]

    tflite_ref, _ = reference_outputs(project["fast"], project["tflite"], [x], "nhwc", tmp_path)
    np.testing.assert_array_equal(got[0], tflite_ref[0])                  # bit-exact with TFLite
    np.testing.assert_array_equal(got[1], tflite_ref[0])                  # reference kernels too
    np.testing.assert_array_equal(got[0], run_generated(project["fast"], [x])[0])     # = the host build
    keras_ref, _ = reference_outputs(project["flt"], project["keras"], fin, "nhwc", tmp_path)
    host = run_generated(compile_model(project["keras"], "floatm"), fin)   # the host runner wants a static arena
    for k in range(2):
        assert np.max(np.abs(got[2 + k] - keras_ref[k])) <= tolerance(keras_ref[k])   # verify's criterion
        assert np.max(np.abs(got[2 + k] - host[k])) <= tolerance(host[k])


CORES = {"cortex-m0plus": "-mcpu=cortex-m0plus -mthumb",
         "cortex-m33": "-mcpu=cortex-m33 -mthumb -mfpu=fpv5-sp-d16 -mfloat-abi=hard"}


# CMake's build types set the optimisation: Debug -O0 (the CubeMX default), Release -O3, MinSizeRel -Os.
ARM_BUILDS = [("cortex-m0plus", "Debug"), ("cortex-m0plus", "Release"), ("cortex-m33", "MinSizeRel"),
              ("cortex-m0plus", "MinSizeRel")]


@pytest.mark.parametrize("core,build_type", ARM_BUILDS)
def test_arm_static_libraries_and_newlib_link(project, tmp_path, core, build_type):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.fail("arm-none-eabi-gcc is not installed (make setup-system installs it)", pytrace=False)
    toolchain = tmp_path / "arm-none-eabi.cmake"
    toolchain.write_text(
        "set(CMAKE_SYSTEM_NAME Generic)\n"
        "set(CMAKE_SYSTEM_PROCESSOR arm)\n"
        "set(CMAKE_C_COMPILER arm-none-eabi-gcc)\n"
        "set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)\n"
        f'set(CMAKE_C_FLAGS_INIT "{CORES[core]}")\n'
        'set(CMAKE_EXE_LINKER_FLAGS_INIT "--specs=nosys.specs -Wl,--gc-sections")\n')
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(project["src"] / "app.c", proj / "app.c")
    (proj / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\n"
        "project(firmware C)\n"
        f"add_compile_options({WARNINGS})\n"
        f'add_subdirectory("{project["int8_dir"].as_posix()}" int8)\n'
        f'add_subdirectory("{project["float_dir"].as_posix()}" float)\n'
        "add_library(app STATIC app.c)\n"
        "target_link_libraries(app PRIVATE int8m int8ref floatm)\n"
        "add_executable(app.elf app.c)\n"
        "target_link_libraries(app.elf PRIVATE int8m int8ref floatm)\n")
    build = tmp_path / "build"
    run(["cmake", "-S", proj, "-B", build, f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", f"-DCMAKE_BUILD_TYPE={build_type}"])
    run(["cmake", "--build", build, "-j", "2"])
    for lib in ("int8/libint8m.a", "int8/libint8ref.a", "float/libfloatm.a", "libapp.a"):
        assert (build / lib).is_file(), lib
    elf = build / "app.elf"
    header = run(["arm-none-eabi-readelf", "-h", "-A", elf]).stdout
    assert "ARM" in header and ("VFP registers" in header) == (core == "cortex-m33")
    symbols = run(["arm-none-eabi-nm", elf]).stdout
    assert re.search(r" T expf\b", symbols)     # from newlib's libm (roundf is one VRINTA on the M33)
    code = run(["arm-none-eabi-objdump", "-d", build / "int8" / "libint8m.a"]).stdout
    assert ("smlad" in code) == (core == "cortex-m33")                                # DSP path from -mcpu


def test_reserved_names_become_model_targets(tmp_path, zoo):
    """`m` (the model file m.onnx) must not shadow libm, `test`/`all`/`install` are CMake's: `<name>_model`,
    with the alias tinyc::<name>; two names that would share a target in one directory are refused."""
    assert cmake.target_name("kws") == "kws" and cmake.target_name("test") == "test_model"
    assert all(cmake.target_name(n) == n + "_model" for n in ("all", "install", "clean", "help", "m", "c"))
    path = zoo.path("mlp_relu", "onnx")
    out = tmp_path / "out"
    write_library(compile_model(path, "test").library, str(out))
    text = (out / "CMakeLists.txt").read_text()
    assert "add_library(test_model STATIC test.c" in text and "add_library(tinyc::test ALIAS test_model)" in text
    with pytest.raises(TinycError, match="would both be CMake target 'test_model'"):
        write_library(compile_model(path, "test_model").library, str(out))
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "main.c").write_text('#include "test.h"\nint main(void) { return test_run(); }\n')
    (proj / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(p C)\n"
        f'add_subdirectory("{out.as_posix()}" models)\n'
        "enable_testing()\nadd_executable(app main.c)\ntarget_link_libraries(app PRIVATE tinyc::test)\n")
    run(["cmake", "-S", proj, "-B", tmp_path / "build"])
    run(["cmake", "--build", tmp_path / "build"])


def test_cmakelists_is_reproducible_and_merges_in_any_order(tmp_path, zoo):
    """Byte-identical across compiles (other hash seeds, directories) and the same file whichever of two models
    is compiled first into a directory; a model whose C file is gone loses its target."""
    path = zoo.path("mlp_relu", "onnx")

    def cli(out, name, seed):
        res = subprocess.run([sys.executable, "-m", "tinyc.cli", "compile", path, "-o", out, "--name", name],
                             capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                              "PYTHONHASHSEED": str(seed)})
        assert res.returncode == 0, res.stderr
        return res.stdout
    first = cli(tmp_path / "a", "alpha", 1)
    assert f"CMake: add_subdirectory({tmp_path / 'a'}), target_link_libraries(your_app PRIVATE alpha)" in first
    cli(tmp_path / "a", "beta", 2)
    cli(tmp_path / "b" / "deeper", "beta", 3)
    cli(tmp_path / "b" / "deeper", "alpha", 4)
    one, two = (tmp_path / "a" / "CMakeLists.txt").read_bytes(), (tmp_path / "b" / "deeper" / "CMakeLists.txt").read_bytes()
    assert one == two and one.count(b"add_library(") == 4 and b"/tmp" not in one
    assert compile_model(path, "alpha").library.files["CMakeLists.txt"] == \
        compile_model(path, "alpha").library.files["CMakeLists.txt"]
    (tmp_path / "a" / "beta.c").unlink()
    write_library(compile_model(path, "alpha").library, str(tmp_path / "a"))
    assert b"beta" not in (tmp_path / "a" / "CMakeLists.txt").read_bytes()
