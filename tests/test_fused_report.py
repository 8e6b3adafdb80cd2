"""Reports of fused blocks (docs/depth-first.md): `tinyc report`'s blocks, their line buffers and the peak before
and after fusion (text, JSON, SVG/HTML picture), and the other walkers of a plan's layers on a fused graph:
`verify --per-layer`, the firmware project and the emulator's per-layer profile (TINYC_FULL)."""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from tinyc.codegen.emit import generate
from tinyc.codegen.scratch_fit import schedule_with_scratch
from tinyc.compiler import Compiled
from tinyc.frontends import load_model
from tinyc.memory_report import format_report, memory_report, plan_picture_data
from tinyc.passes import optimize
from tinyc.plan_picture import render_html, render_svg
from tinyc.quant.ptq import quantize_graph
from tinyc.schedule import schedule
from tinyc.schedule.fuse_block import fuse_block, inline_blocks

SVG = "{http://www.w3.org/2000/svg}"
SIZE, WIDE = 24, 16         # input height/width, channels of the expansion


def inverted_residual_onnx(path, project_stride=1, pool="GlobalAveragePool"):
    """expand 3x3 (3 -> WIDE, relu) -> depthwise 3x3 stride 2 (relu) -> project 1x1 (WIDE -> 8, stride
    `project_stride`) -> global average pool (or an AveragePool over the whole image: pool="AveragePool"); NCHW
    float, SIZE x SIZE input."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n) for n, s in
             (("w1", (WIDE, 3, 3, 3)), ("w2", (WIDE, 1, 3, 3)), ("w3", (8, WIDE, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="expand"),
             helper.make_node("Relu", ["a"], ["ar"], name="relu1"),
             helper.make_node("Conv", ["ar", "w2"], ["b"], pads=[1, 1, 1, 1], strides=[2, 2], group=WIDE, name="dw"),
             helper.make_node("Relu", ["b"], ["br"], name="relu2"),
             helper.make_node("Conv", ["br", "w3"], ["p"], strides=[project_stride] * 2, name="project"),
             helper.make_node(pool, ["p"], ["y"], name="gap",
                              **({"kernel_shape": [SIZE // 2 // project_stride] * 2} if pool == "AveragePool" else {}))]
    g = helper.make_graph(nodes, "ir", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return str(path)


def layer_graph(path, int8=False):
    g = optimize(load_model(path, io_layout="nhwc"))
    if int8:
        g = quantize_graph(g, [np.random.default_rng(1).standard_normal((4, SIZE, SIZE, 3)).astype(np.float32)])
    return g


def compile_as_the_compiler(g, fused=None, kernels="fast", strips=1, stream=False):
    """A compile with the first `fused` layers as one block (in `strips` column strips; its input streamed): the
    plan and library of the fused graph, and as `Compiled.graph` the graph before fusion (the compiler's own is the
    fused graph: the report inlines the blocks of either)."""
    h = fuse_block(g, [n.name for n in g.nodes[:fused]], stream=stream, strips=strips) if fused else g
    plan = schedule_with_scratch(h) if kernels == "fast" else schedule(h)
    return Compiled("ir.onnx", g, plan, generate(plan, "m", "ir.onnx", kernels=kernels))


@pytest.fixture(scope="module")
def int8_pair(tmp_path_factory):
    """(layer by layer, first three layers fused) of the int8 inverted residual, fast kernels."""
    g = layer_graph(inverted_residual_onnx(tmp_path_factory.mktemp("ir") / "ir.onnx"), int8=True)
    return compile_as_the_compiler(g), compile_as_the_compiler(g, fused=3)


def test_report_names_the_block_its_line_buffers_and_the_peak_before_and_after(int8_pair):
    plain, fused = int8_pair
    r = memory_report(fused)
    json.dumps(r)                                         # JSON-ready
    f = r["fusion"]
    (block,) = f["blocks"]
    assert block["index"] == 0 and block["mode"] == "rows" and block["output_rows_per_step"] == 1
    assert [row["name"] for row in block["layers"]] == ["expand", "dw", "project"]
    assert [(row["rows_computed"], row["rows"]) for row in block["layers"]] == [(24, 24), (12, 12), (12, 12)]
    assert all(row["columns_computed"] == row["columns"] == row["output_shape"][2] for row in block["layers"])
    assert block["strips"] == [dict(output_columns=[0, SIZE // 2], line_buffer_bytes=block["line_buffer_bytes"])]
    assert block["widest_strip"] == 0 and block["input_row"] is None      # (row mode: one strip, the whole width)
    # the same layers layer by layer: the same MACs each, so no recomputation
    whole = {info["name"]: info["macs"] for info in plain.library.layers}
    assert [row["macs"] for row in block["layers"]] == [whole["expand"], whole["dw"], whole["project"]]
    assert block["macs"] == sum(whole[n] for n in ("expand", "dw", "project")) == r["layers"][0]["macs"]
    assert block["recompute_factor"] == 1.0
    # int8 rows: a 3x3 stride-1 window needs 3 input rows (one a padding row at the edges), the 3x3 stride-2
    # depthwise 3 rows of the expansion, the 1x1 projection one row of the depthwise output
    rows = {lb["tensor"]: (lb["rows"], lb["row_bytes"], lb["role"]) for lb in block["line_buffers"]}
    expand, dw = fused.graph.nodes[0], fused.graph.nodes[1]      # (Compiled.graph: before fusion)
    assert rows == {expand.inputs[0]: (3, SIZE * 3, "input"), expand.outputs[0]: (3, SIZE * WIDE, "intermediate"),
                    dw.outputs[0]: (1, SIZE // 2 * WIDE, "intermediate")}
    assert block["line_buffer_bytes"] >= max(lb["bytes"] for lb in block["line_buffers"])
    step = fused.plan.work[0]
    assert block["scratch_bytes"] == step.size == r["layers"][0]["scratch_bytes"]
    assert block["kernel_scratch_bytes"] > 0          # the expansion's im2col rows: the fast kernel's scratch
    assert block["line_buffer_bytes"] + block["accumulator_bytes"] + block["kernel_scratch_bytes"] <= step.size
    # before: the layer-by-layer plan of the same graph (as compiled without fusion); after: the fused plan
    assert f["arena_before_bytes"] == plain.plan.arena_bytes
    assert f["peak_before"]["layer"] == plain.plan.graph.nodes[plain.plan.peak_step].name
    assert f["arena_after_bytes"] == fused.plan.arena_bytes == r["arena_bytes"] < plain.plan.arena_bytes
    assert f["peak_after"]["op"] == fused.plan.graph.nodes[fused.plan.peak_step].op
    assert r["layers"][0]["block_layers"] == ["expand", "dw", "project"]
    assert "fusion" not in memory_report(plain)       # no block, no fusion plan: the report is as before


def test_report_of_the_compilers_fusion(tmp_path):
    """--fusion auto: the planner's blocks and estimates; its layer-by-layer arena is the report's before."""
    from tinyc.compiler import codegen_options, compile_graph, fusion_options
    g = layer_graph(inverted_residual_onnx(tmp_path / "ir.onnx"), int8=True)
    c = compile_graph(g, "m", options={**codegen_options(), **fusion_options("auto")})
    f = memory_report(c)["fusion"]
    assert f["blocks"] and f["arena_before_bytes"] == c.fusion.arena_before
    assert f["arena_after_bytes"] == c.fusion.arena_after == c.plan.arena_bytes
    assert f["planner"]["est_instructions_after"] == c.fusion.est_instr_after > 0
    assert "planner: estimated instructions x" in "\n".join(format_report(memory_report(c)).splitlines()[-2:])
    m0 = compile_graph(g, "m", options={**codegen_options(), **fusion_options("auto", core="cortex-m0plus")})
    assert memory_report(m0)["fusion"]["planner"]["core"] == "cortex-m0plus"
    budget = compile_graph(g, "m", options={**codegen_options(), **fusion_options("auto", arena_budget=5000)})
    f = memory_report(budget)["fusion"]
    assert f["planner"]["budget_bytes"] == 5000 and f["arena_after_bytes"] <= 5000
    assert f["arena_before_bytes"] == budget.fusion.arena_before


def test_report_of_a_streamed_input(tmp_path):
    from tinyc.compiler import codegen_options, compile_graph
    g = layer_graph(inverted_residual_onnx(tmp_path / "ir.onnx"), int8=True)
    c = compile_graph(g, "m", options=codegen_options(stream_input=True))
    r = memory_report(c)
    (block,) = r["fusion"]["blocks"]
    assert block["streamed_input"] and block["line_buffers"][0]["role"] == "streamed input"
    assert block["line_buffers"][0]["tensor"] == g.inputs[0]
    assert r["fusion"]["arena_after_bytes"] < r["fusion"]["arena_before_bytes"]      # (the frame is not in it)
    assert "its input streamed from the row callback" in format_report(r)


def test_report_says_why_nothing_was_fused(tmp_path):
    """A 16x16 float conv -> depthwise: no block lowers its arena; the report says so, in the planner's words."""
    from test_memory_report import conv_onnx

    from tinyc.compiler import codegen_options, compile_graph, fusion_options
    g = optimize(load_model(str(conv_onnx(tmp_path / "c.onnx")), io_layout="nhwc"))
    c = compile_graph(g, "m", options={**codegen_options(), **fusion_options("auto")})
    r = memory_report(c)
    assert r["fusion"]["blocks"] == [] and r["fusion"]["arena_before_bytes"] == r["arena_bytes"]
    assert r["fusion"]["planner"]["reason"] == c.fusion.reason != ""
    last = format_report(r).splitlines()[-1]
    assert last == f"fused blocks (depth-first, docs/depth-first.md): none ({c.fusion.reason})"


def test_report_text(int8_pair):
    _, fused = int8_pair
    text = format_report(memory_report(fused))
    assert "(3 layers row by row, below)" in text and "fused blocks (depth-first, docs/depth-first.md): 1" in text
    assert "3 layers, rows mode (1 output row per step), recompute x1.00" in text
    assert any(line.split()[:1] == ["dw"] and "12/12 rows" in line for line in text.splitlines())
    assert "layer by layer: arena" in text and "fused: arena" in text and "peak at layer" in text


def test_rows_no_window_reads_are_not_computed(tmp_path):
    """A 1x1 stride-2 projection reads every other row of the depthwise output: those are all the depthwise
    computes, so the block runs fewer MACs than the layers do (recompute factor below 1)."""
    g = layer_graph(inverted_residual_onnx(tmp_path / "s2.onnx", project_stride=2))
    plain, fused = compile_as_the_compiler(g), compile_as_the_compiler(g, fused=3)
    (block,) = memory_report(fused)["fusion"]["blocks"]
    dw = block["layers"][1]
    assert (dw["rows_computed"], dw["rows"]) == (6, 12)
    assert dw["macs"] * 2 == dw["layer_macs"] == {i["name"]: i["macs"] for i in plain.library.layers}["dw"]
    assert block["macs"] == fused.library.layers[0]["macs"] < sum(row["layer_macs"] for row in block["layers"])
    assert block["recompute_factor"] < 1


def test_running_pool_accumulators(tmp_path):
    """A pool over every row in the block runs on each row as it arrives: its int32 accumulators are scratch."""
    g = layer_graph(inverted_residual_onnx(tmp_path / "avg.onnx", pool="AveragePool"), int8=True)
    assert [n.op for n in g.nodes][-1] == "AvgPool2D"
    fused = compile_as_the_compiler(g, fused=4)
    r = memory_report(fused)
    (block,) = r["fusion"]["blocks"]
    assert block["accumulator_bytes"] == 4 * 8                       # one int32 per output value (1x1x8)
    assert [(row["rows_computed"], row["rows"]) for row in block["layers"]][-1] == (1, 1)
    assert block["line_buffers"][-1]["rows"] == 1                    # the pool's input: one row at a time
    _, _, rects, _, _ = _picture(fused)
    assert any(rect["kind"] == "linebuffer" and rect["label"] == "gap: accumulators" for rect in rects)
    assert "accumulators 32 B" in format_report(r)


@pytest.fixture(scope="module")
def int8_strips(tmp_path_factory):
    """(layer by layer, the first three layers fused in 3 column strips) of the int8 inverted residual."""
    g = layer_graph(inverted_residual_onnx(tmp_path_factory.mktemp("strips") / "ir.onnx"), int8=True)
    return compile_as_the_compiler(g), compile_as_the_compiler(g, fused=3, strips=3)


def test_report_of_a_block_in_column_strips(int8_strips):
    """Patch mode: the strips' output columns, the widest strip's line buffers (the strips share their bytes), the
    rows and columns each layer computes summed over the strips, and the recompute factor of the overlap."""
    from tinyc.ops.fused_block import strips_of
    from tinyc.schedule.depth_first_search import layer_macs
    plain, fused = int8_strips
    r = memory_report(fused)
    json.dumps(r)
    (block,) = r["fusion"]["blocks"]
    assert block["mode"] == "strips" and block["output_rows_per_step"] == 1
    assert [s["output_columns"] for s in block["strips"]] == [[0, 4], [4, 8], [8, 12]]
    # output columns [4, 8) of the 12: the stride-2 depthwise reads expansion columns 7..15 (9 of 24), the 3x3
    # expansion input columns 6..16 (11), the 1x1 projection its 4 columns: the widest strip (the others read
    # 8 / 9 expansion columns and 9 / 10 input columns)
    assert block["widest_strip"] == 1
    rows = {lb["tensor"]: (lb["rows"], lb["row_bytes"], lb["role"]) for lb in block["line_buffers"]}
    expand, dw = fused.graph.nodes[0], fused.graph.nodes[1]
    assert rows == {expand.inputs[0]: (3, 11 * 3, "input"), expand.outputs[0]: (3, 9 * WIDE, "intermediate"),
                    dw.outputs[0]: (1, 4 * WIDE, "intermediate")}
    strips = strips_of(fused.plan.graph.nodes[0])
    assert [s["line_buffer_bytes"] for s in block["strips"]] == [s.sched.line_bytes for s in strips]
    assert block["line_buffer_bytes"] == max(s.sched.line_bytes for s in strips) == strips[1].sched.line_bytes
    assert block["line_buffer_bytes"] < 1560                  # row mode's: 3 x 72 + 3 x 384 + 192 B
    offsets = [lb["offset"] for lb in block["line_buffers"]]
    assert all(o + lb["bytes"] <= block["line_buffer_bytes"] for o, lb in zip(offsets, block["line_buffers"]))
    # every row of every layer in each strip; the expansion's columns 8 + 9 + 9 of 24, the others' exactly theirs
    assert [(row["rows_computed"], row["rows"]) for row in block["layers"]] == [(72, 24), (36, 12), (36, 12)]
    assert [(row["columns_computed"], row["columns"]) for row in block["layers"]] == [(26, 24), (12, 12), (12, 12)]
    whole = {info["name"]: info["macs"] for info in plain.library.layers}
    assert [row["layer_macs"] for row in block["layers"]] == [whole["expand"], whole["dw"], whole["project"]]
    assert [row["macs"] for row in block["layers"]] == [whole["expand"] * 26 // 24, whole["dw"], whole["project"]]
    # the library's MACs of the block are the strip graphs' (each row computed): the recompute factor's numerator
    assert block["macs"] == fused.library.layers[0]["macs"] == sum(
        layer_macs(s.graph, n) for s in strips for n in s.graph.nodes)
    unfused = whole["expand"] + whole["dw"] + whole["project"]
    assert block["recompute_factor"] == round(block["macs"] / unfused, 4) > 1
    assert block["scratch_bytes"] == fused.plan.work[0].size == r["layers"][0]["scratch_bytes"]
    assert block["input_row"] is None and block["input_passes"] == 0 and block["kernel_scratch_bytes"] > 0
    assert block["line_buffer_bytes"] + block["kernel_scratch_bytes"] <= block["scratch_bytes"]


def test_report_text_of_a_block_in_column_strips(int8_strips):
    _, fused = int8_strips
    r = memory_report(fused)
    text = format_report(r)
    f = r["fusion"]["blocks"][0]["recompute_factor"]
    assert f"3 layers in 3 column strips, each row by row (1 output row per step), recompute x{f:.2f}" in text
    assert "(3 layers in 3 column strips, below)" in text and "rows mode" not in text
    assert "strips' output columns 0..3, 4..7, 8..11: line buffers " in text and "(strip 1's below)" in text
    lines = text.splitlines()
    assert any(line.split()[:1] == ["expand"] and "72/3x24 rows, 26/24 columns" in line for line in lines)
    assert any(line.split()[:1] == ["project"] and "36/3x12 rows, 12/12 columns" in line for line in lines)
    assert "the widest strip's" in text and f"'{fused.graph.inputs[0]}' 3 x 33 B" in text


def test_plan_picture_of_a_block_in_column_strips(int8_strips):
    _, fused = int8_strips
    r, steps, rects, svg, page = _picture(fused)
    (block,) = r["fusion"]["blocks"]
    assert steps[0]["name"].endswith("(in 3 column strips, each row by row: expand, dw, project)")
    bands = [rect for rect in rects if rect["kind"] == "linebuffer"]
    assert sorted(b["label"] for b in bands) == sorted(
        f"{lb['tensor']}: {lb['rows']} row{'s' * (lb['rows'] > 1)} x {lb['row_bytes']} B"
        for lb in block["line_buffers"])
    work = fused.plan.work[0]
    assert all(work.offset <= b["offset"] and b["offset"] + b["nbytes"] <= work.offset + work.size for b in bands)
    root = ET.fromstring(svg)
    assert len([e for e in root.iter(SVG + "rect") if "linebuffer" in (e.get("class") or "").split()]) == len(bands)
    assert "<td>strips \u00d73<br>output columns 0\u20133, 4\u20137, 8\u201311<br>line buffers of strip 1</td>" in page
    assert f"{fused.graph.inputs[0]}: 3 rows \u00d7 33 B" in page


def test_report_of_a_streamed_input_in_column_strips(tmp_path):
    """Patch mode with the input streamed: the callback is asked once per strip (passes) and its whole row is held
    in the block's scratch after the line buffers; each strip copies its columns out of it."""
    g = layer_graph(inverted_residual_onnx(tmp_path / "ir.onnx"), int8=True)
    fused = compile_as_the_compiler(g, fused=3, strips=2, stream=True)
    r = memory_report(fused)
    (block,) = r["fusion"]["blocks"]
    x = g.inputs[0]
    assert block["mode"] == "strips" and block["streamed_input"] and block["input_passes"] == 2
    assert [s["output_columns"] for s in block["strips"]] == [[0, 6], [6, 12]]
    assert {lb["tensor"]: lb["role"] for lb in block["line_buffers"]}[x] == "streamed input"
    line = -(-block["line_buffer_bytes"] // 4) * 4          # (the row starts word-aligned)
    assert block["input_row"] == dict(tensor=x, bytes=SIZE * 3, offset=line)
    assert block["kernel_scratch_bytes"] == block["scratch_bytes"] - line - SIZE * 3 > 0
    text = format_report(r)
    assert "its input streamed from the row callback, once per strip (2 passes)" in text
    assert f"streamed input row {SIZE * 3} B, kernel scratch" in text
    assert f"'{x}' 1 whole row, {SIZE * 3} B at +{line}: the callback's rows, each strip copies its columns" in text
    _, _, rects, svg, page = _picture(fused)
    work = fused.plan.work[0]
    (band,) = [rect for rect in rects if rect["label"] == f"{x}: 1 whole row x {SIZE * 3} B, streamed"]
    assert band["offset"] == work.offset + line and band["nbytes"] == SIZE * 3 and band["kind"] == "linebuffer"
    assert f"{x}: 1 whole input row, {SIZE * 3} B" in page


def test_inline_blocks_gives_back_the_layers(int8_pair):
    plain, fused = int8_pair
    back = inline_blocks(fused.plan.graph)
    assert [(n.name, n.op, n.inputs, n.outputs) for n in back.nodes] == \
        [(n.name, n.op, n.inputs, n.outputs) for n in plain.plan.graph.nodes]
    assert all(back.tensors[t].shape == plain.plan.graph.tensors[t].shape for n in back.nodes for t in n.outputs)
    assert [n.op for n in fused.plan.graph.nodes][0] == "FusedBlock"     # (a copy: the fused graph stays)


def _picture(compiled):
    r = memory_report(compiled)
    steps, rects = plan_picture_data(compiled)
    kw = dict(arena_bytes=r["arena_bytes"], lower_bound=r["arena_lower_bound_bytes"], peak_step=r["peak_step"],
              title="ir")
    return r, steps, rects, render_svg(steps, rects, **kw), render_html(steps, rects, **kw, fusion=r.get("fusion"))


def test_plan_picture_draws_the_block_as_one_step_with_its_line_buffers(int8_pair):
    _, fused = int8_pair
    r, steps, rects, svg, page = _picture(fused)
    (block,) = r["fusion"]["blocks"]
    assert steps[0]["name"].endswith("(row by row: expand, dw, project)")
    bands = [rect for rect in rects if rect["kind"] == "linebuffer"]
    assert len(bands) == len(block["line_buffers"])
    work = fused.plan.work[0]
    assert all(work.offset <= b["offset"] and b["offset"] + b["nbytes"] <= work.offset + work.size for b in bands)
    scratch = [rect for rect in rects if rect["kind"] == "scratch" and rect["first_step"] == 0]
    assert [s["nbytes"] for s in scratch] == [block["kernel_scratch_bytes"]]
    # no intermediate of the block is a buffer of the plan
    inside = {n.outputs[0] for n in fused.graph.nodes[:2]}
    assert not inside & {rect["label"] for rect in rects}
    root = ET.fromstring(svg)
    drawn = [e for e in root.iter(SVG + "rect") if "linebuffer" in (e.get("class") or "").split()]
    assert len(drawn) == len(bands)
    callouts = [e.text for e in root.iter(SVG + "text") if e.get("class") == "callout"]
    for lb in block["line_buffers"]:
        assert any(f"{lb['tensor']}: {lb['rows']} row" in text for text in callouts), lb
    assert any(e.text == "line buffer" for e in root.iter(SVG + "text"))          # the legend
    assert '<table class="fusion">' in page and "<td>expand<br>dw<br>project</td>" in page
    assert f"{block['line_buffers'][-1]['tensor']}: 1 row \u00d7 {SIZE // 2 * WIDE} B" in page


def test_report_command_json_svg_html(tmp_path):
    from tinyc.cli import main
    model = inverted_residual_onnx(tmp_path / "ir.onnx")
    svg, page = tmp_path / "p.svg", tmp_path / "p.html"
    args = ["report", model, "--io-layout", "nhwc", "--quantize", "int8", "--calib", "random", "--fusion", "auto"]
    res = CliRunner().invoke(main, args + ["--json", "--svg", str(svg), "--html", str(page)])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output[res.output.index("{"):])          # (after the calibration's progress lines)
    (block,) = r["fusion"]["blocks"]
    assert [row["name"] for row in block["layers"]] == ["expand", "dw", "project"]
    assert r["fusion"]["arena_after_bytes"] == r["arena_bytes"] < r["fusion"]["arena_before_bytes"]
    assert "linebuffer" in svg.read_text() and '<table class="fusion">' in page.read_text()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "fused blocks (depth-first, docs/depth-first.md): 1" in res.output



def test_report_command_of_a_streamed_input_in_column_strips(tmp_path):
    """`tinyc report --stream-input --stream-passes 3`: the streamed block in 3 column strips (the smallest arena
    of this model's streamed plans), shown as such in the text, the JSON and the HTML page."""
    from tinyc.cli import main
    model = inverted_residual_onnx(tmp_path / "ir.onnx")
    page = tmp_path / "p.html"
    args = ["report", model, "--io-layout", "nhwc", "--quantize", "int8", "--calib", "random", "--stream-input",
            "--stream-passes", "3"]
    res = CliRunner().invoke(main, args + ["--json", "--html", str(page)])
    assert res.exit_code == 0, res.output
    (block,) = json.loads(res.output[res.output.index("{"):])["fusion"]["blocks"]
    assert block["mode"] == "strips" and len(block["strips"]) == 3 and block["input_passes"] == 3
    assert block["input_row"]["bytes"] == SIZE * 3 and block["streamed_input"]
    assert "strips \u00d73<br>output columns 0\u20133, 4\u20137, 8\u201311" in page.read_text()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "3 layers in 3 column strips, each row by row (1 output row per step), recompute x" in res.output
    assert "its input streamed from the row callback, once per strip (3 passes)" in res.output


def test_compile_summary_counts_the_blocks(int8_pair):
    from tinyc.cli import _blocks_text
    plain, fused = int8_pair
    assert _blocks_text(fused.library) == "; 1 fused block(s) (3 layers) run row by row (`tinyc report` shows them)"
    assert _blocks_text(plain.library) == ""


def test_verify_per_layer_traces_the_block_output_and_says_so(tmp_path):
    from tinyc.cli import main
    model = inverted_residual_onnx(tmp_path / "ir.onnx")
    args = ["verify", model, "--io-layout", "nhwc", "--fusion", "auto", "--per-layer", "--samples", "1"]
    res = CliRunner().invoke(main, args + ["--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    rows = {row["layer"]: row for row in report["layers"]}
    (block,) = [row for row in report["layers"] if row["op"] == "FusedBlock"]
    assert block["ok"] and block["block_layers"] == ["expand", "dw", "project"] and "not traced" in block["note"]
    assert not {"expand", "dw", "project"} & rows.keys()      # inside the block: never whole, not traced
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "(3 layers 'expand' .. 'project' run row by row: only the block's output is " \
        "traced)" in res.output


def test_firmware_project_of_a_fused_graph(int8_pair, tmp_path):
    from tinyc.boards import load_board
    from tinyc.firmware.project import firmware_files
    _, fused = int8_pair
    x = np.zeros((1, SIZE, SIZE, 3), np.int8)
    files = firmware_files(fused, load_board("nucleo-f412zg"), [x])
    assert f"#define NUM_LAYERS {len(fused.library.layers)}" in files["main.c"]


def test_code_size_by_layer_counts_the_row_kernels(int8_pair):
    """bench/speed.py's code size per layer: a block's function and its row kernels are the block's code."""
    import importlib.util
    import re
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parent.parent / "bench" / "speed.py"
    spec = importlib.util.spec_from_file_location("bench_speed", bench)
    speed = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = speed
    spec.loader.exec_module(speed)
    _, fused = int8_pair
    names = re.findall(r"^TINYC_LAYER void (\w+)\(", fused.library.files["m.c"], re.M)
    functions = {n: 10 for n in names} | {"m_l0_fused_r1.constprop.0": 5, "m_run": 7, "m_rows_copy4": 3}
    per, other = speed.code_by_layer(functions, "m", fused.library.layers)
    assert sorted(n for n in names if n.startswith("m_l0_")) == ["m_l0_fused"] + [f"m_l0_fused_r{k}" for k in range(3)]
    assert per[0] == 4 * 10 + 5 and per[1] == 10 and other == 7 + 3


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
def test_stack_depth_goes_through_the_row_kernels(int8_pair):
    """The report's stack figure (gcc's call graph): a block's function calls its row kernels, one frame deeper."""
    from tinyc.boards import load_board
    _, fused = int8_pair
    stack = memory_report(fused, load_board("pico"))["stack"]
    assert stack["bounded"] and stack["fits"]
    path = [name.split(".")[0] for name in stack["path"]]
    assert "m_l0_fused" in path and any(name.startswith("m_l0_fused_r") for name in path)


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="a QEMU run: TINYC_FULL=1")
def test_emulated_profile_of_a_fused_graph(int8_pair, tmp_path):
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import write_firmware
    from tinyc.firmware.run import format_run
    from tinyc.verify import run_generated
    plain, fused = int8_pair
    x = np.random.default_rng(2).integers(-128, 128, (1, SIZE, SIZE, 3)).astype(np.int8)
    board = load_board("nucleo-f412zg")
    write_library(fused.library, str(tmp_path), force=True)
    write_firmware(fused, board, str(tmp_path), [x])
    run = emulate(fused, board, tmp_path, profile=True)
    assert np.array_equal(run["outputs"][0], run_generated(plain, [x])[0])
    block = run["layers"][0]
    assert block["op"] == "FusedBlock" and block["block_layers"] == ["expand", "dw", "project"]
    assert block["instructions"] > 0
    shown = format_run(dict(run, model="ir.onnx", outputs=[], outputs_match=True, note="", samples=1))
    assert any("(row by row: expand, dw, project)" in line for line in shown)
