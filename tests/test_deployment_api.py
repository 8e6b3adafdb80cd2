"""The deployment API an embedded engineer integrates: zero-copy input/output pointers into the arena, the
copying invoke, an external arena shared by two models in one program, and linker sections for the arena and the
weights. Each C program is built with the project's warning set and ASan/UBSan and checked against tinyc's
float interpreter."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from tinyc import interp
from tinyc.compiler import codegen_options, compile_graph, write_library
from tinyc.errors import TinycError
from tinyc.ir import Graph

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-O1", "-g", "-fsanitize=address,undefined",
          "-fno-sanitize-recover=all"]


def small_cnn(seed: int, channels: int) -> Graph:
    """conv 3x3 -> depthwise 3x3 (in place) -> relu (in place): inputs and outputs share the arena."""
    rng = np.random.default_rng(seed)
    g = Graph(f"cnn{seed}")
    g.add_tensor("x", (1, 6, 6, 3))
    g.add_tensor("a", (1, 6, 6, channels))
    g.add_tensor("b", (1, 6, 6, channels))
    g.add_tensor("y", (1, 6, 6, channels))
    w1 = g.add_const("w1", rng.standard_normal((channels, 3, 3, 3)))
    w2 = g.add_const("w2", rng.standard_normal((channels, 3, 3, 1)))
    conv = dict(strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), activation=None)
    g.add_node("Conv2D", ["x", w1], ["a"], groups=1, **conv)
    g.add_node("Conv2D", ["a", w2], ["b"], groups=channels, **conv)
    g.add_node("Activation", ["b"], ["y"], fn="relu")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def _input(g):
    return (np.arange(g.tensors["x"].size, dtype=np.float32) % 7 * 0.25 - 0.75).reshape(g.tensors["x"].shape)


def _build_and_run(tmp_path, main_c: str, libs) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    sources = []
    for lib in libs:
        write_library(lib, str(tmp_path), force=True)
        sources.append(str(tmp_path / f"{lib.prefix}.c"))
    (tmp_path / "main.c").write_text(main_c)
    exe = tmp_path / "prog"
    subprocess.run(["gcc", *CFLAGS, "-I", str(tmp_path), *sources, str(tmp_path / "main.c"), "-o", str(exe), "-lm"],
                   check=True)
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout


def _floats(text: str, tag: str) -> np.ndarray:
    line = next(ln for ln in text.splitlines() if ln.startswith(tag + ":"))
    return np.array([float(v) for v in line.split(":")[1].split()], np.float32)


PRINT = """
static void show(const char *tag, const float *v, int n) {
  printf("%s:", tag);
  for (int i = 0; i < n; ++i) printf(" %.9g", v[i]);
  printf("\\n");
}
static void fill(float *x, int n) { for (int i = 0; i < n; ++i) x[i] = (float)(i % 7) * 0.25f - 0.75f; }
"""


def test_static_arena_zero_copy_and_copying_invoke_agree(tmp_path):
    g = small_cnn(0, 4)
    c = compile_graph(g, "m")
    assert any(b in c.library.files["m.h"] for b in ("m_input(void)", "m_run(void)"))
    main = """#include <stdio.h>
#include "m.h"
""" + PRINT + """
int main(void) {
  float in[M_INPUT0_SIZE], out[M_OUTPUT0_SIZE];
  fill(in, M_INPUT0_SIZE);
  if (m_invoke(in, out) != 0) return 1;
  show("copy", out, M_OUTPUT0_SIZE);
  fill(m_input(), M_INPUT0_SIZE);            /* zero copy: straight into the arena */
  if (m_run() != 0) return 1;
  show("zero", m_output(), M_OUTPUT0_SIZE);
  return 0;
}
"""
    out = _build_and_run(tmp_path, main, [c.library])
    ref = interp.run(g, [_input(g)])["y"].reshape(-1)
    for tag in ("copy", "zero"):
        np.testing.assert_allclose(_floats(out, tag), ref, atol=1e-4)


def test_two_models_share_one_external_arena(tmp_path):
    ga, gb = small_cnn(1, 4), small_cnn(2, 8)
    opts = codegen_options("external")
    a, b = compile_graph(ga, "ma", options=opts), compile_graph(gb, "mb", options=opts)
    header = a.library.files["ma.h"]
    assert "ma_invoke_with_arena(void *arena" in header and "MA_ARENA_ALIGN 4" in header
    assert "static union" not in a.library.files["ma.c"]          # no arena of its own
    main = """#include <stdio.h>
#include "ma.h"
#include "mb.h"
""" + PRINT + """
#define SHARED (MA_ARENA_BYTES > MB_ARENA_BYTES ? MA_ARENA_BYTES : MB_ARENA_BYTES)
static union { uint32_t align; unsigned char bytes[SHARED]; } shared;
int main(void) {
  float in[MA_INPUT0_SIZE], outa[MA_OUTPUT0_SIZE];
  fill(in, MA_INPUT0_SIZE);
  if (ma_invoke_with_arena(shared.bytes, in, outa) != 0) return 1;
  fill(mb_input(shared.bytes), MB_INPUT0_SIZE);
  if (mb_run_with_arena(shared.bytes) != 0) return 1;
  show("a", outa, MA_OUTPUT0_SIZE);
  show("b", mb_output(shared.bytes), MB_OUTPUT0_SIZE);
  return 0;
}
"""
    out = _build_and_run(tmp_path, main, [a.library, b.library])
    np.testing.assert_allclose(_floats(out, "a"), interp.run(ga, [_input(ga)])["y"].reshape(-1), atol=1e-4)
    np.testing.assert_allclose(_floats(out, "b"), interp.run(gb, [_input(gb)])["y"].reshape(-1), atol=1e-4)


def test_sections_put_arena_and_weights_where_asked(tmp_path):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("needs arm-none-eabi-gcc")
    c = compile_graph(small_cnn(3, 4), "m", options=codegen_options("static", ".dtcm_bss", ".ext_weights"))
    write_library(c.library, str(tmp_path), force=True)
    obj = tmp_path / "m.o"
    subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-mcpu=cortex-m7",
                    "-mthumb", "-I", str(tmp_path), "-c", str(tmp_path / "m.c"), "-o", str(obj)], check=True)
    heads = subprocess.run(["arm-none-eabi-objdump", "-h", str(obj)], capture_output=True, text=True,
                           check=True).stdout
    sizes = {m.group(1): int(m.group(2), 16) for m in re.finditer(r"^\s*\d+\s+(\S+)\s+([0-9a-f]+)", heads, re.M)}
    assert sizes[".dtcm_bss"] == c.library.arena_bytes
    assert sizes[".ext_weights"] >= c.library.weight_bytes


@pytest.mark.parametrize("args, message", [
    (("heap",), "--arena heap is not supported"),
    (("static", "bad section"), "not a valid linker section name"),
    (("static", None, '.x"; evil'), "not a valid linker section name"),
    (("external", ".dtcm"), "with --arena external the caller places it"),
])
def test_bad_codegen_options_are_one_line(args, message):
    with pytest.raises(TinycError, match=re.escape(message)):
        codegen_options(*args)
