"""The streamed model input (issue 21, `--stream-input`, schedule/stream_input.py): the first fused block pulls
the input's rows from the application's `<name>_input_rows(row, count, dst)`, so the frame is never in the arena.

On the host (gcc, ASan/UBSan): a program linking the streamed library and the ordinary one (another prefix) feeds
the same frames to both, the streamed one through a callback serving rows from an array that logs every call;
the outputs are the same bytes, and the calls are what the header promises (rows 0 .. STREAM_ROWS - 1, in
increasing order, each once) and what the row schedule loads. The plan holds no byte of the input: the live
bytes while the block runs are those of the unstreamed block minus the frame. Refusals are one line. With
TINYC_FULL: a TFLite int8 model's streamed firmware under QEMU (Cortex-M4) equals the host build and TFLite.

Several passes (`--stream-passes N`, codegen_options(stream_passes=N)): the streamed block may run in 2 .. N column
strips (patch mode, schedule/column_strips.py); the callback is then asked for rows 0 .. STREAM_ROWS - 1 once per
strip, in order (the header's STREAM_PASSES), the outputs are the unstreamed library's bytes, the arena is the
smallest of every candidate block in every allowed strip count and holds no byte of the frame; QEMU (TINYC_FULL)
on the Cortex-M0+.
"""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from tinyc.cli import main as cli_main
from tinyc.codegen.scratch_fit import schedule_with_scratch
from tinyc.compiler import codegen_options, compile_graph, write_library
from tinyc.errors import TinycError
from tinyc.ir import Graph, Quant
from tinyc.ops.fused_block import schedule_of
from tinyc.passes import optimize
from tinyc.schedule import VARIANTS, schedule
from tinyc.schedule.fuse_block import fuse_block
from tinyc.ops.fused_block import strips_of
from tinyc.schedule.stream_input import (input_row_loads, stream_input, stream_passes, streamed_block,
                                         streamed_blocks)
from tinyc.verify import run_generated

FULL = bool(os.environ.get("TINYC_FULL"))
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-O1", "-g", "-fsanitize=address,undefined",
          "-fno-sanitize-recover=all"]
STREAM = codegen_options(stream_input=True)

# (kernel, stride, out channels, depthwise) per layer: a strided stem, depthwise 3x3, pointwise, strided depthwise
LAYERS = [(3, 2, 8, False), (3, 1, 8, True), (1, 1, 16, False), (3, 2, 16, True), (1, 1, 12, False)]


def _same(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def net(dtype="int8", h=24, w=9, c=3, valid_stem=False, seed=0) -> Graph:
    """LAYERS on an h x w x c input, then a global mean (which no block streams). `valid_stem`: the first layer
    unpadded, so with an even height its stride skips the last input row."""
    rng = np.random.default_rng(seed)
    q = (lambda scale, zp: Quant(np.float32(scale), np.int64(zp))) if dtype == "int8" else (lambda *_: None)
    g = Graph("net")
    g.add_tensor("x", (1, h, w, c), dtype, quant=q(0.03, -3))
    prev, (hh, ww, cc) = "x", (h, w, c)
    for i, (k, s, o, dw) in enumerate(LAYERS):
        (oh, pt, pb), (ow, pl, pr) = _same(hh, k, s), _same(ww, k, s)
        if i == 0 and valid_stem:
            oh, ow, pt, pb, pl, pr = (hh - k) // s + 1, (ww - k) // s + 1, 0, 0, 0, 0
        o = cc if dw else o
        wshape = (o, k, k, 1) if dw else (o, k, k, cc)
        if dtype == "int8":
            wt = g.add_tensor(f"w{i}", wshape, "int8", rng.integers(-127, 128, wshape).astype(np.int8),
                              quant=Quant(rng.uniform(0.002, 0.05, o).astype(np.float32), np.zeros(o, np.int64),
                                          0)).name
            b = g.add_tensor(f"b{i}", (o,), "int32", rng.integers(-2000, 2000, o).astype(np.int32),
                             quant=Quant(np.ones(o, np.float32), np.zeros(o, np.int64), 0)).name
        else:
            wt = g.add_const(f"w{i}", rng.standard_normal(wshape) / np.sqrt(k * k * (1 if dw else cc)))
            b = g.add_const(f"b{i}", rng.standard_normal(o) * 0.1)
        out = g.add_tensor(f"y{i}", (1, oh, ow, o), dtype, quant=q(0.02 * (i + 1), 5 * i - 9)).name
        g.add_node("Conv2D", [prev, wt, b], [out], strides=(s, s), dilations=(1, 1), pads=(pt, pl, pb, pr),
                   groups=cc if dw else 1, activation={"fn": "relu"} if i % 2 == 0 else None, name=f"l{i}")
        prev, (hh, ww, cc) = out, (oh, ow, o)
    g.add_tensor("m", (1, cc), dtype, quant=q(0.05, 2))
    g.add_node("Mean", [prev], ["m"], axes=[1, 2], keepdims=False, name="mean")
    g.inputs, g.outputs = ["x"], ["m"]
    return g


def _frames(g, n=2, seed=1):
    t = g.tensors["x"]
    rng = np.random.default_rng(seed)
    if t.dtype == "int8":
        return rng.integers(-128, 128, (n, *t.shape)).astype(np.int8)
    return rng.standard_normal((n, *t.shape)).astype(np.float32)


def _block(compiled):
    blocks = [n for n in compiled.plan.graph.nodes if n.op == "FusedBlock"]
    assert len(blocks) == 1 and blocks[0].attrs["stream"]
    return blocks[0]


# -- the plan ----------------------------------------------------------------------------------------------------

def test_streamed_input_is_not_in_the_arena():
    g = optimize(net())
    streamed = compile_graph(g, "s", options=STREAM)
    block = _block(streamed)
    plan = streamed.plan
    assert "x" not in plan.buffer_of and not any("x" in b.tensors for b in plan.buffers)
    # The same block, its input in the arena: while the block runs, the live bytes differ by exactly the frame
    # (planned without in-place writes, which would put the block's output over the frame's dead rows).
    names = [n.name for n in block.attrs["graph"].nodes]
    step = next(i for i, n in enumerate(plan.graph.nodes) if n.op == "FusedBlock")
    live = [schedule(fuse_block(g, names, stream=s), variants=VARIANTS[:1]).live[step] for s in (False, True)]
    assert live[0] - live[1] == g.tensors["x"].nbytes
    assert plan.arena_bytes < schedule_with_scratch(fuse_block(g, names)).arena_bytes
    assert plan.arena_bytes < compile_graph(g, "a").plan.arena_bytes
    text = streamed.library.files["s.h"]
    assert f"#define S_ARENA_BYTES {plan.arena_bytes}\n" in text


def test_stream_input_chooses_the_smallest_arena():
    """Every block that can stream the input is a prefix of the layers; the one chosen has the smallest arena."""
    g = optimize(net())
    blocks = streamed_blocks(g)
    assert blocks[-1] == streamed_block(g) == ["l0", "l1", "l2", "l3", "l4"]
    assert all(b == blocks[-1][:len(b)] for b in blocks)
    arenas = {len(b): schedule_with_scratch(fuse_block(g, b, stream=True)).arena_bytes for b in blocks}
    h, plan = stream_input(g, schedule_with_scratch)
    chosen = next(n for n in h.nodes if n.op == "FusedBlock")
    assert plan.arena_bytes == min(arenas.values()) == arenas[len(chosen.attrs["graph"].nodes)]


# -- the C API on the host ---------------------------------------------------------------------------------------

MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "a.h"
#include "s.h"

#define FRAMES %(frames)d
static %(ctype)s frames[FRAMES][A_INPUT0_SIZE] = { %(data)s };
static int frame, calls, log_row[4096], log_count[4096];

void s_input_rows(int row, int count, %(ctype)s *dst) {
  if (calls < 4096) { log_row[calls] = row; log_count[calls] = count; }
  ++calls;
  memcpy(dst, frames[frame] + row * S_INPUT0_ROW_SIZE, (size_t)count * S_INPUT0_ROW_SIZE * sizeof *dst);
}

int main(void) {
  for (frame = 0; frame < FRAMES; ++frame) {
    %(ctype)s ya[A_OUTPUT0_SIZE], ys[S_OUTPUT0_SIZE];
    a_invoke(frames[frame], ya);
    calls = 0;
    if (frame %% 2) {             /* the copying invoke, then the zero-copy run */
      s_invoke(ys);
    } else {
      s_run();
      memcpy(ys, s_output(), sizeof ys);
    }
    printf("frame %%d same %%d calls", frame, memcmp(ya, ys, sizeof ya) == 0);
    for (int i = 0; i < calls && i < 4096; ++i) printf(" %%d:%%d", log_row[i], log_count[i]);
    printf("\n");
  }
#ifdef S_INPUT0_STREAM_PASSES
  printf("passes %%d\n", S_INPUT0_STREAM_PASSES);
#endif
  printf("rows %%d row_size %%d\n", S_INPUT0_STREAM_ROWS, S_INPUT0_ROW_SIZE);
  return 0;
}
"""


def _run_both(tmp_path, g, options=STREAM):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    plain = compile_graph(g, "a")
    streamed = compile_graph(g, "s", options=options)
    frames = _frames(g)
    for lib in (plain.library, streamed.library):
        write_library(lib, str(tmp_path), force=True)
    fmt = (lambda v: str(int(v))) if frames.dtype == np.int8 else (lambda v: f"{float(v)!r}f")
    data = ", ".join("{" + ", ".join(fmt(v) for v in f.reshape(-1)) + "}" for f in frames)
    ctype = "int8_t" if frames.dtype == np.int8 else "float"
    (tmp_path / "main.c").write_text(MAIN % dict(frames=len(frames), ctype=ctype, data=data))
    exe = tmp_path / "prog"
    subprocess.run(["gcc", *CFLAGS, "-I", str(tmp_path), str(tmp_path / "a.c"), str(tmp_path / "s.c"),
                    str(tmp_path / "main.c"), "-o", str(exe), "-lm"], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    return streamed, out


@pytest.mark.parametrize("dtype,valid_stem", [("int8", True), ("float32", False)])
def test_callback_rows_and_same_bytes(tmp_path, dtype, valid_stem):
    g = net(dtype, valid_stem=valid_stem)
    streamed, lines = _run_both(tmp_path, g)
    height = g.tensors["x"].shape[1]
    rows = int(re.fullmatch(r"rows (\d+) row_size (\d+)", lines[-1]).group(1))
    assert rows == (height - 1 if valid_stem else height)      # (a valid stride-2 stem never reads the last row)
    block = _block(streamed)
    loads = input_row_loads(schedule_of(block), "x")
    for line in lines[:-1]:
        m = re.fullmatch(r"frame (\d+) same (\d) calls((?: \d+:\d+)*)", line)
        assert m and m.group(2) == "1", line              # the same output bytes as the unstreamed library
        calls = [tuple(map(int, c.split(":"))) for c in m.group(3).split()]
        served = [r for row, count in calls for r in range(row, row + count)]
        assert served == list(range(rows)) == loads       # increasing, each row once, as the schedule loads them
        assert all(count >= 1 for _, count in calls) and any(count > 1 for _, count in calls)
    header = streamed.library.files["s.h"]
    assert "void s_input_rows(int row, int count, " in header
    assert "STREAM_PASSES" not in header and "once. dst points into the arena" in header    # (one pass)
    assert "int s_invoke(" + ("int8_t" if dtype == "int8" else "float") + " *output0);" in header
    assert "s_input(void)" not in header and "s_input(void)" not in streamed.library.files["s.c"]
    if dtype == "int8":     # (no whole-frame conversion: there is no frame)
        assert "void s_quantize_input_rows(const float *x, int8_t *q, int count);" in header
        assert "s_quantize_input(" not in header


def test_verify_runner_serves_rows(tmp_path):
    """tinyc's own host runner (`tinyc verify`, run_generated) feeds a streamed library through the callback and
    checks the order of the calls (here rows 0 .. height - 2: the last is never read): the same outputs as the
    unstreamed library."""
    g = net("float32", valid_stem=True)
    frames = _frames(g)
    plain, streamed = compile_graph(g, "m"), compile_graph(g, "m", options=STREAM)
    assert "#define M_INPUT0_STREAM_ROWS 23\n" in streamed.library.files["m.h"]
    a, b = run_generated(plain, [frames]), run_generated(streamed, [frames])
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


# -- several passes: the streamed block in column strips ---------------------------------------------------------

def _passes(n):
    return codegen_options(stream_input=True, stream_passes=n)


def _calls(line):
    m = re.fullmatch(r"frame (\d+) same (\d) calls((?: \d+:\d+)*)", line)
    assert m and m.group(2) == "1", line                  # the same output bytes as the unstreamed library
    return [tuple(map(int, c.split(":"))) for c in m.group(3).split()]


@pytest.mark.parametrize("dtype,passes", [("int8", 2), pytest.param(
    "float32", 3, marks=pytest.mark.skipif(not FULL, reason="TINYC_FULL: 3 passes run by test_verify_runner too"))])
def test_passes_callback_rows_and_same_bytes(tmp_path, dtype, passes):
    """With N passes allowed the block runs in N strips here (each one lowers this arena): the callback is asked
    for rows 0 .. STREAM_ROWS - 1 in increasing order, each once, in each of the N passes, as each strip's row
    schedule loads them; the outputs are the unstreamed library's bytes; the header says so."""
    g = net(dtype, h=16, w=24, valid_stem=dtype == "int8")
    streamed, lines = _run_both(tmp_path, g, _passes(passes))
    block = _block(streamed)
    assert stream_passes(block) == len(strips_of(block)) == block.attrs["strips"] == passes
    assert lines[-2] == f"passes {passes}"
    rows = int(re.fullmatch(r"rows (\d+) row_size (\d+)", lines[-1]).group(1))
    assert rows == (15 if dtype == "int8" else 16)        # (a valid stride-2 stem never reads the last row)
    per_strip = [input_row_loads(strip.sched, "x") for strip in strips_of(block)]
    assert per_strip == [list(range(rows))] * passes
    for line in lines[:-2]:
        served = [r for row, count in _calls(line) for r in range(row, row + count)]
        assert served == list(range(rows)) * passes       # pass after pass, each the rows in order, each once
    header = streamed.library.files["s.h"]
    assert f"#define S_INPUT0_STREAM_PASSES {passes}\n" in header
    words = " ".join(line.lstrip(" */") for line in header.splitlines())
    again = ", and so on" if passes > 2 else ""
    assert (f"each row exactly once per pass, in S_INPUT0_STREAM_PASSES = {passes} passes one after the other (the "
            f"first layers run in {passes} column strips, each reading every row again): rows 0 .. {rows - 1}, then "
            f"rows 0 .. {rows - 1} again{again}.") in words


def test_passes_input_is_not_in_the_arena():
    """In strips too the plan holds no byte of the frame: while the block runs, the live bytes are those of the
    same block in strips with its input in the arena minus the frame; the arena is below the one-pass one."""
    g = optimize(net(h=16, w=24))
    streamed = compile_graph(g, "s", options=_passes(3))
    block = _block(streamed)
    plan = streamed.plan
    assert "x" not in plan.buffer_of and not any("x" in b.tensors for b in plan.buffers)
    names = [n.name for n in block.attrs["graph"].nodes]
    step = next(i for i, n in enumerate(plan.graph.nodes) if n.op == "FusedBlock")
    live = [schedule(fuse_block(g, names, stream=s, strips=3), variants=VARIANTS[:1]).live[step]
            for s in (False, True)]
    # (streamed, the block's scratch also holds the one whole input row the callback writes)
    row = g.tensors["x"].nbytes // g.tensors["x"].shape[1]
    assert live[0] - live[1] == g.tensors["x"].nbytes - -(-row // 4) * 4
    assert plan.arena_bytes < compile_graph(g, "o", options=STREAM).plan.arena_bytes
    assert f"#define S_ARENA_BYTES {plan.arena_bytes}\n" in streamed.library.files["s.h"]
    # the planner's estimate is against the model layer by layer (not the streamed graph it starts from): the
    # strips' recompute shows
    assert streamed.fusion.est_instr_before == compile_graph(g, "a").fusion.est_instr_before > 0
    assert streamed.fusion.instr_ratio > 1.0


@pytest.mark.parametrize("h,w,counts", [(24, 9, (1, 2, 3, 5)), (16, 24, (4,))])
def test_passes_choose_the_smallest_arena(h, w, counts):
    """Of every streamable block in row mode and in 2 .. N strips, the smallest arena, of equal ones the fewest
    strips (16 x 24, N = 4: 3 and 4 strips tie). N beyond what the output's width allows is no error: the 24 x 9
    input's output is 3 columns wide, so 3 strips at most."""
    g = optimize(net(h=h, w=w))
    arenas = {}
    for names in streamed_blocks(g):
        for strips in range(1, max(counts) + 1):
            try:
                fused = fuse_block(g, names, stream=True, strips=strips)
            except TinycError:
                continue
            arenas[len(names), strips] = schedule_with_scratch(fused).arena_bytes
    assert any(strips > 1 for _, strips in arenas)
    for passes in counts:
        streamed, plan = stream_input(g, schedule_with_scratch, passes)
        chosen = next(n for n in streamed.nodes if n.op == "FusedBlock")
        allowed = {k: v for k, v in arenas.items() if k[1] <= passes}
        best = min(allowed.values())
        assert plan.arena_bytes == best
        key = (len(chosen.attrs["graph"].nodes), chosen.attrs.get("strips", 1))
        assert allowed[key] == best and key[1] == min(k[1] for k, v in allowed.items() if v == best)


def test_verify_runner_serves_passes(tmp_path):
    """`tinyc verify`'s runner serves every pass and checks their order: the outputs of the streamed library in
    strips are the unstreamed one's."""
    g = net("float32", h=16, w=24, valid_stem=True)
    frames = _frames(g)
    plain, streamed = compile_graph(g, "m"), compile_graph(g, "m", options=_passes(3))
    assert "#define M_INPUT0_STREAM_PASSES 3\n" in streamed.library.files["m.h"]
    a, b = run_generated(plain, [frames]), run_generated(streamed, [frames])
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("options,words", [
    (dict(stream_input=True, stream_passes=0), "--stream-passes 0: the number of times the application can serve "
                                               "the input frame per inference must be a whole number >= 1"),
    (dict(stream_input=True, stream_passes=-2), "--stream-passes -2: "),
    (dict(stream_input=True, stream_passes=2.5), "--stream-passes 2.5: "),
    (dict(stream_passes=2), "--stream-passes 2 says how often the streamed input's rows may be asked for; add "
                            "--stream-input"),
])
def test_passes_refusals_are_one_line(options, words):
    with pytest.raises(TinycError) as e:
        codegen_options(**options)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert codegen_options(stream_input=True, stream_passes=np.int64(2))["stream_passes"] == 2


# -- refusals ----------------------------------------------------------------------------------------------------

def _two_inputs():
    g = net("float32")
    g.add_tensor("x2", (1, 4))
    g.add_tensor("z", (1, 4))
    g.add_node("Activation", ["x2"], ["z"], fn="relu", name="act")
    g.inputs.append("x2")
    g.outputs.append("z")
    return g


def _flat_input():
    g = Graph("flat")
    g.add_tensor("x", (1, 20))
    g.add_tensor("y", (1, 20))
    g.add_node("Activation", ["x"], ["y"], fn="relu", name="act")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def _also_flattened():
    g = net("float32")
    g.add_tensor("flat", (1, g.tensors["x"].size))
    g.add_node("Reshape", ["x"], ["flat"], name="flatten")
    g.outputs.append("flat")
    return g


def _padded_pool_first():
    g = Graph("pool")
    g.add_tensor("x", (1, 8, 8, 2))
    g.add_tensor("y", (1, 8, 8, 2))
    g.add_node("AvgPool2D", ["x"], ["y"], kernel=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1),
               name="pool")
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def _saves_nothing():
    """A 3x3 convolution keeping the input's size: unstreamed, it writes its output over its dying input (a row
    apart); streamed, the input's three-row line buffer sits beside the whole output."""
    g = Graph("same_size")
    g.add_tensor("x", (1, 8, 8, 2))
    w = g.add_const("w", np.random.default_rng(0).standard_normal((2, 3, 3, 2)))
    g.add_tensor("y", (1, 8, 8, 2))
    g.add_node("Conv2D", ["x", w], ["y"], strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1,
               activation=None, name="conv")
    g.add_tensor("m", (1, 2))
    g.add_node("Mean", ["y"], ["m"], axes=[1, 2], keepdims=False, name="mean")
    g.inputs, g.outputs = ["x"], ["m"]
    return g


@pytest.mark.parametrize("make,words", [
    (_two_inputs, "the model has 2 inputs"),
    (_flat_input, "has shape (1, 20); only a batch-1 NHWC image"),
    (_also_flattened, "is read by layer 'flatten' (Reshape), which cannot run row by row"),
    (_padded_pool_first, "is read by layer 'pool' (AvgPool2D), which cannot run row by row: layer 'pool' "
                         "(AvgPool2D) pads rows"),
    (_saves_nothing, "saves no memory: the arena would be 704 B (its peak at layer 'fused_conv' (FusedBlock)), "
                     "592 B with the input in it"),
])
def test_refusals_are_one_line(make, words):
    with pytest.raises(TinycError) as e:
        compile_graph(make(), "m", options=STREAM)
    text = str(e.value)
    assert words in text and "--stream-input" in text and "\n" not in text


# -- the command line --------------------------------------------------------------------------------------------

def _onnx_conv(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["c"], ["r"])
    pool = helper.make_node("GlobalAveragePool", ["r"], ["y"])
    graph = helper.make_graph([conv, relu, pool], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                      [1, 3, 16, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_cli_stream_input(tmp_path):
    model = tmp_path / "conv.onnx"
    _onnx_conv(model)
    runner = CliRunner()
    nchw = runner.invoke(cli_main, ["compile", str(model), "-o", str(tmp_path / "a"), "--stream-input"])
    assert nchw.exit_code != 0 and "--io-layout nhwc" in str(nchw.exception)
    ok = runner.invoke(cli_main, ["compile", str(model), "-o", str(tmp_path / "b"), "--stream-input",
                                  "--io-layout", "nhwc"])
    assert ok.exit_code == 0, ok.output
    assert "your application defines conv_input_rows(row, count, dst)" in ok.output
    header = (tmp_path / "b" / "conv.h").read_text()
    assert "void conv_input_rows(int row, int count, float *dst);" in header
    assert "#define CONV_INPUT0_STREAM_ROWS 16" in header and "#define CONV_INPUT0_ROW_SIZE 36" in header
    assert "asks for the rows" not in ok.output


def test_cli_stream_passes(tmp_path):
    """--stream-passes on the command line: compile says the passes; without --stream-input, or below 1, it is
    refused in one line."""
    model = tmp_path / "conv.onnx"
    _onnx_conv(model)
    runner = CliRunner()
    base = ["compile", str(model), "--io-layout", "nhwc"]
    ok = runner.invoke(cli_main, base + ["-o", str(tmp_path / "b"), "--stream-input", "--stream-passes", "2"])
    assert ok.exit_code == 0, ok.output
    assert ("it asks for the rows 2 times per inference, rows 0 .. 15 in increasing order in each pass (the first "
            "layers run in 2 column strips)") in ok.output
    assert "#define CONV_INPUT0_STREAM_PASSES 2" in (tmp_path / "b" / "conv.h").read_text()
    for extra, words in ((["--stream-passes", "2"], "add --stream-input"),
                         (["--stream-input", "--stream-passes", "0"], "--stream-passes 0: ")):
        bad = runner.invoke(cli_main, base + ["-o", str(tmp_path / "c")] + extra)
        assert bad.exit_code != 0 and words in str(bad.exception) and "\n" not in str(bad.exception)


# -- on target ---------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not (FULL and shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="QEMU: TINYC_FULL=1 and arm-none-eabi-gcc + qemu-system-arm")
def test_streamed_firmware_under_qemu(tmp_path):
    """A TFLite int8 CNN compiled with --stream-input: its emulation image (the firmware's main.c serves the rows
    from the baked-in samples) on the Cortex-M4 gives the host build's bytes and TFLite's; the unstreamed image
    gives the same."""
    from int8_zoo import build, to_int8_tflite

    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    path = str(to_int8_tflite(build("residual_cnn"), tmp_path / "cnn.tflite"))
    board = load_board("nucleo-f412zg")
    assert board.qemu_machine == "mps2-an386"
    frames = [_frames_for(path, 3)]
    streamed = compile_model(path, "cnn", options=codegen_options(stream_input=True))
    plain = compile_model(path, "cnn")
    r = run_emulated(streamed, board, path, str(tmp_path / "s"), frames, profile=False)
    assert r["outputs_match"], r["outputs"]
    q = run_emulated(plain, board, path, str(tmp_path / "a"), frames, profile=False)
    assert [o["data"] for o in r["outputs"]] == [o["data"] for o in q["outputs"]]
    assert streamed.library.arena_bytes < plain.library.arena_bytes
    main_c = (tmp_path / "s" / "firmware" / "main.c").read_text()
    assert "void cnn_input_rows(int row, int count, int8_t *dst)" in main_c


@pytest.mark.skipif(not (FULL and shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="QEMU: TINYC_FULL=1 and arm-none-eabi-gcc + qemu-system-arm")
def test_streamed_passes_firmware_under_qemu(tmp_path):
    """--stream-passes 2: the streamed block of a TFLite int8 CNN in 2 column strips, its emulation image (main.c
    serves each pass from the baked-in samples) on the Cortex-M0+ gives the host build's bytes and TFLite's, and
    the unstreamed image's."""
    from int8_zoo import build, to_int8_tflite

    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    path = str(to_int8_tflite(build("residual_cnn"), tmp_path / "cnn.tflite"))
    board = load_board("pico")
    assert board.qemu_machine == "mps2-an385"
    frames = [_frames_for(path, 3)]
    streamed = compile_model(path, "cnn", options=_passes(2))
    assert stream_passes(_block(streamed)) == 2
    assert "#define CNN_INPUT0_STREAM_PASSES 2\n" in streamed.library.files["cnn.h"]
    plain = compile_model(path, "cnn")
    r = run_emulated(streamed, board, path, str(tmp_path / "s"), frames, profile=False)
    assert r["outputs_match"], r["outputs"]
    q = run_emulated(plain, board, path, str(tmp_path / "a"), frames, profile=False)
    assert [o["data"] for o in r["outputs"]] == [o["data"] for o in q["outputs"]]
    assert streamed.library.arena_bytes < compile_model(path, "cnn", options=STREAM).library.arena_bytes


def _frames_for(path, n):
    from tinyc.frontends import load_model
    g = load_model(path)
    t = g.tensors[g.inputs[0]]
    return np.random.default_rng(2).integers(-128, 128, (n, *t.shape)).astype(np.int8)
