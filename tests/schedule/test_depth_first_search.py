"""The fusion planner (schedule/depth_first_search.py): it lowers the arena of a MobileNet-like stem within the
instruction cap and the fused C computes what the unfused C computes; it never makes the arena larger (a plan it
cannot improve comes back unchanged, with the reason); budgets are honoured (the fastest plan that fits; the
layer-by-layer plan when it fits; a one-line refusal naming the smallest arena and its layer when nothing fits);
the cost model counts what the row schedule copies and calls; the compiler's fusion option. Patch mode: chosen
where column strips lower the arena (a wide residual stage), with its recompute in the cost; never chosen where it
does not (the plan is then the row-mode search's); budgets honoured with it."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from tinyc.codegen.scratch_fit import schedule_with_scratch
from tinyc.compiler import compile_graph, fusion_options
from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.passes import optimize
from tinyc.schedule import schedule
from tinyc.ops.fused_block import strips_of
from tinyc.frontends import load_model
from tinyc.schedule.column_strips import MIN_STRIP_GAIN, block_strips
from tinyc.schedule.depth_first_search import (M4, block_overhead, layer_instructions, layer_macs, plan_fusion,
                                               recompute_factor, strips_instructions)
from tinyc.schedule.fuse_block import fuse_block
from tinyc.schedule.row_schedule import row_schedule
from tinyc.verify import run_generated

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fused_chains import chains, float_graph     # noqa: E402  (tests/: the random chains of the fused-block tests)

EXAMPLES = 40 if os.environ.get("TINYC_FULL") else 8


def conv(g, x, name, out_c, k, s=1, pads=(0, 0, 0, 0), groups=1, rng=None):
    _, h, w, c = g.tensors[x].shape
    rng = rng or np.random.default_rng(0)
    weights = g.add_const(f"{name}_w", rng.standard_normal((out_c, k, k, c // groups)).astype(np.float32) * 0.3)
    bias = g.add_const(f"{name}_b", rng.standard_normal(out_c).astype(np.float32) * 0.1)
    t, left, b, r = pads
    g.add_tensor(name, (1, (h + t + b - k) // s + 1, (w + left + r - k) // s + 1, out_c))
    g.add_node("Conv2D", [x, weights, bias], [name], name=name, strides=(s, s), dilations=(1, 1), pads=pads,
               groups=groups, activation=dict(fn="relu"))
    return name


def stem(size=32) -> Graph:
    """MobileNetV2's first two blocks, small: conv 3x3 s2 -> depthwise -> project, expand -> depthwise s2 ->
    project, then a global mean (not row-streamed) and a dense head."""
    g = Graph("stem")
    g.add_tensor("x", (1, size, size, 3))
    g.inputs = ["x"]
    rng = np.random.default_rng(1)
    y = conv(g, "x", "c1", 8, 3, s=2, pads=(0, 0, 1, 1), rng=rng)
    y = conv(g, y, "dw1", 8, 3, pads=(1, 1, 1, 1), groups=8, rng=rng)
    y = conv(g, y, "pw1", 4, 1, rng=rng)
    y = conv(g, y, "ex2", 24, 1, rng=rng)
    y = conv(g, y, "dw2", 24, 3, s=2, pads=(0, 0, 1, 1), groups=24, rng=rng)
    y = conv(g, y, "pw2", 8, 1, rng=rng)
    g.add_tensor("m", (1, 8))
    g.add_node("Mean", [y], ["m"], name="m", axes=[1, 2], keepdims=False)
    g.outputs = ["m"]
    return g


def wide_stage(height=16, width=64, channels=16) -> Graph:
    """A wide image through a residual stage (conv 3x3 -> conv 3x3 -> conv 3x3, + the first conv's output), a 1x1
    projection to 4 channels, then a global mean: in row mode its 3-row line buffers of 64 x 16 floats are most of
    the fused block's step, so column strips lower it."""
    g = Graph("wide")
    g.add_tensor("x", (1, height, width, 3))
    g.inputs = ["x"]
    rng = np.random.default_rng(2)
    y = conv(g, "x", "c1", channels, 3, pads=(1, 1, 1, 1), rng=rng)
    z = conv(g, y, "c2", channels, 3, pads=(1, 1, 1, 1), rng=rng)
    z = conv(g, z, "c3", channels, 3, pads=(1, 1, 1, 1), rng=rng)
    g.add_tensor("sum", g.tensors[y].shape)
    g.add_node("Add", [y, z], ["sum"], name="sum")
    y = conv(g, "sum", "pw", 4, 1, rng=rng)
    g.add_tensor("m", (1, 4))
    g.add_node("Mean", [y], ["m"], name="m", axes=[1, 2], keepdims=False)
    g.outputs = ["m"]
    return g


def mlp() -> Graph:
    g = Graph("mlp")
    g.add_tensor("x", (1, 16))
    g.inputs = ["x"]
    g.add_const("w", np.ones((8, 16), np.float32))
    g.add_const("b", np.zeros(8, np.float32))
    g.add_tensor("y", (1, 8))
    g.add_node("Dense", ["x", "w", "b"], ["y"], name="fc", activation=None)
    g.outputs = ["y"]
    return g


def test_fused_stem_lowers_the_arena_and_computes_the_same(tmp_path):
    g = stem()
    h, fusion = plan_fusion(g)
    assert fusion.arena_after < fusion.arena_before == schedule(g).arena_bytes
    assert fusion.memory_plan.arena_bytes == fusion.arena_after
    assert fusion.blocks and fusion.reason == ""
    assert fusion.est_instr_after <= 1.15 * fusion.est_instr_before
    fused = [n for n in h.nodes if n.op == "FusedBlock"]
    assert [b.name for b in fusion.blocks] == [n.name for n in fused]
    for b, n in zip(fusion.blocks, fused):
        assert b.layers == [m.name for m in n.attrs["graph"].nodes]
        assert b.macs == sum(layer_macs(g, m) for m in g.nodes if m.name in b.layers) > 0
        assert b.line_bytes > 0 and (b.mode, b.rows_per_step, b.recompute) == ("rows", 1, 1.0)
    # the C of the chosen plan computes what the layer-by-layer C computes
    x = [np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)]
    before = compile_graph(g, "m", options=dict(fusion="none"))
    after = compile_graph(g, "m", options=dict(fusion="auto"))
    assert after.plan.arena_bytes == fusion.arena_after < before.plan.arena_bytes
    assert after.fusion.blocks and before.fusion is None
    ref, ours = run_generated(before, x)[0], run_generated(after, x)[0]
    assert np.max(np.abs(ours - ref)) <= 1e-4 * (1 + np.max(np.abs(ref)))


def test_never_worse():
    g = mlp()
    h, fusion = plan_fusion(g)
    assert h is g and not fusion.blocks and fusion.arena_after == fusion.arena_before
    assert "stream rows" in fusion.reason
    # no block within the instruction cap: the layer-by-layer plan, and why
    g = stem()
    h, fusion = plan_fusion(g, max_ratio=1.0)
    assert h is g and not fusion.blocks and fusion.arena_after == fusion.arena_before
    assert "within 1x the instructions" in fusion.reason


def test_budgets():
    g = stem()
    _, smallest = plan_fusion(g, max_ratio=10.0)
    base = smallest.arena_before
    # the layer-by-layer plan fits: nothing fused
    h, fusion = plan_fusion(g, budget=base)
    assert h is g and not fusion.blocks and "fits the budget" in fusion.reason
    # a budget between: honoured, and no slower than the smallest plan
    budget = (base + smallest.arena_after) // 2
    h, fusion = plan_fusion(g, budget=budget)
    assert smallest.arena_after <= fusion.arena_after <= budget < base
    assert fusion.est_instr_after <= smallest.est_instr_after
    # a budget nothing meets: one line, the smallest arena and where its peak is
    with pytest.raises(TinycError) as e:
        plan_fusion(g, budget=smallest.arena_after // 4)
    text = str(e.value)
    assert "\n" not in text and "no plan fits it" in text and "smallest arena" in text and "layer '" in text


def test_cost_model_counts_copies_and_calls():
    g = stem()
    c1 = g.nodes[0]
    assert layer_macs(g, c1) == 16 * 16 * 8 * 3 * 3 * 3
    assert layer_instructions(g, c1, M4, "fast") == layer_macs(g, c1) * 8.5      # float: plain C per MAC
    sched = row_schedule(g, ["c1", "dw1", "pw1"])
    loads = sum(sched.buffers[a.tensor].row_bytes for a in sched.actions if a.kind == "load")
    moves = sum(a.rows * sched.buffers[a.tensor].row_bytes for a in sched.actions if a.kind == "move")
    fills = sum(sched.buffers[a.tensor].row_bytes for a in sched.actions if a.kind == "fill")
    calls = sum(a.kind == "compute" for a in sched.actions)
    assert loads == 32 * 32 * 3 * 4 and calls == 3 * 16 and moves > 0 and fills > 0
    copies = (loads + moves) * M4.copy_per_byte + fills * M4.fill_per_byte + calls * M4.call
    # float layers run plain C: no fast-kernel terms
    assert block_overhead(g, sched, M4) == pytest.approx(copies)
    # int8 fast kernels, rows of 16 pixels: no tail; the depthwise layer's MACs
    for n in g.nodes:
        g.tensors[n.outputs[0]].dtype = "int8"
    assert block_overhead(g, sched, M4) == pytest.approx(copies + 16 * 16 * 8 * 9 * M4.depthwise_rows)
    assert block_overhead(g, sched, M4, "reference") == pytest.approx(copies)
    # rows of 15 pixels (a 30-pixel input): per row call, one output pixel's MACs on the tail path
    narrow = stem(30)
    for n in narrow.nodes:
        narrow.tensors[n.outputs[0]].dtype = "int8"
    sched = row_schedule(narrow, ["c1", "dw1", "pw1"])
    tails = 15 * (3 * 3 * 3 * 8 + 3 * 3 * 8 + 8 * 4)
    extra = block_overhead(narrow, sched, M4) - sum(
        sched.buffers[a.tensor].row_bytes * (a.rows if a.kind == "move" else 1) for a in sched.actions
        if a.kind in ("load", "move")) * M4.copy_per_byte
    fills = sum(sched.buffers[a.tensor].row_bytes for a in sched.actions if a.kind == "fill")
    assert extra == pytest.approx(fills * M4.fill_per_byte + 3 * 15 * M4.call + tails * M4.tail_per_pixel_mac
                                  + 15 * 15 * 8 * 9 * M4.depthwise_rows)


def test_fusion_none_is_the_layer_by_layer_plan():
    g = stem()
    none = compile_graph(g, "m", options=dict(fusion="none"))
    assert none.fusion is None and not any(n.op == "FusedBlock" for n in none.plan.graph.nodes)
    assert none.plan.arena_bytes == schedule_with_scratch(optimize(g)).arena_bytes
    default = compile_graph(g, "m")          # --fusion auto is the default
    assert default.fusion.blocks and default.plan.arena_bytes < none.plan.arena_bytes
    with pytest.raises(TinycError, match="--fusion"):
        fusion_options(fusion="rows")
    with pytest.raises(TinycError, match="--arena-budget"):
        compile_graph(g, "m", options=dict(fusion="none", arena_budget=1000))


def test_full_scratch_plan_is_tried_where_the_planner_gave_a_block_less():
    g = stem()
    calls = []

    def least_scratch(h):           # as codegen/scratch_fit does when kernel scratch would grow the arena
        for n in h.nodes:
            if n.op == "FusedBlock":
                n.attrs["kernel_scratch"] = "small"
        return schedule(h)

    def full(h):
        assert not any(n.attrs.get("kernel_scratch") for n in h.nodes)     # a fresh copy, not the marked one
        calls.append(h)
        return schedule(h)

    h, fusion = plan_fusion(g, planner=least_scratch, full_planner=full)
    assert fusion.blocks and calls and fusion.plans_tried > len(calls)
    calls.clear()
    plan_fusion(g, full_planner=full)
    assert not calls


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="TINYC_FULL: converts a model, builds it three times, "
                    "runs QEMU (~40 s)")
def test_int8_model_fast_kernels(int8_models):
    """A converter-made int8 model through the compiler: the planner plans with the fast kernels' scratch, and the
    fused C gives the unfused C's bytes on the host and on the emulated Cortex-M4 (and TFLite's)."""
    from tinyc.compiler import compile_model
    path = int8_models("residual_cnn")
    before = compile_model(path, options=dict(fusion="none"))
    after = compile_model(path, options=dict(fusion="auto"))
    fusion = after.fusion
    assert fusion.arena_before == before.plan.arena_bytes > fusion.arena_after == after.plan.arena_bytes
    assert fusion.blocks and fusion.est_instr_after <= 1.15 * fusion.est_instr_before
    g = before.plan.graph
    rng = np.random.default_rng(0)
    x = [rng.integers(-128, 128, size=g.tensors[n].shape).astype(np.int8) for n in g.inputs]
    for ref, ours in zip(run_generated(before, x), run_generated(after, x)):
        assert np.array_equal(ref, ours)
    from tinyc.boards import load_board
    from tinyc.firmware.run import run_emulated
    run = run_emulated(after, load_board("nucleo-f412zg"), path, profile=False)
    assert run["outputs_match"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(chains(max_layers=5, max_size=14, max_channels=8))
def test_never_worse_and_budgets_on_random_chains(chain):
    g = float_graph([chain])
    base = schedule(g).arena_bytes
    h, fusion = plan_fusion(g)
    assert fusion.arena_before == base and fusion.memory_plan.arena_bytes == fusion.arena_after <= base
    assert bool(fusion.blocks) == (fusion.arena_after < base) == (h is not g)
    assert fusion.est_instr_after <= 1.15 * fusion.est_instr_before
    # patch mode: a plan with strips only where it is smaller than the row-mode search's; else that very plan
    _, rows = plan_fusion(g, strip_counts=())
    if any(b.mode == "strips" for b in fusion.blocks):
        assert fusion.arena_after < rows.arena_after
        assert all(b.recompute >= 1.0 and (b.mode == "strips") == (b.strips > 1) for b in fusion.blocks)
    else:
        assert fusion.blocks == rows.blocks and fusion.arena_after == rows.arena_after
    # a budget is honoured, or refused in one line
    for budget in (fusion.arena_after, max(1, fusion.arena_after * 3 // 4)):
        try:
            _, fit = plan_fusion(g, budget=budget)
        except TinycError as e:
            assert budget < fusion.arena_after and "\n" not in str(e) and "no plan fits it" in str(e)
            continue
        assert fit.arena_after <= budget


def test_patch_mode_wins_on_a_wide_residual_stage():
    """Column strips lower the arena below the best row-mode plan, within the instruction cap; the report says the
    mode, the strips and the recompute; the fused C computes what the layer-by-layer C computes."""
    g = wide_stage()
    _, rows = plan_fusion(g, strip_counts=())
    h, fusion = plan_fusion(g)
    assert fusion.arena_after < rows.arena_after < fusion.arena_before
    assert fusion.est_instr_before < rows.est_instr_after < fusion.est_instr_after <= 1.15 * fusion.est_instr_before
    [block] = fusion.blocks
    [node] = [n for n in h.nodes if n.op == "FusedBlock"]
    assert block.mode == "strips" and block.strips == node.attrs["strips"] >= 2
    assert block.layers == ["c1", "c2", "c3", "sum", "pw"] == [n.name for n in node.attrs["graph"].nodes]
    strips = strips_of(node)
    assert block.line_bytes == max(s.sched.line_bytes for s in strips) < rows.blocks[0].line_bytes
    assert 1.0 < block.recompute == recompute_factor(strips, g, g.nodes[:5]) < 1.15
    d = fusion.as_dict()["blocks"][0]
    assert (d["mode"], d["strips"], d["recompute"]) == ("strips", block.strips, block.recompute)
    x = [np.random.default_rng(0).standard_normal((1, 16, 64, 3)).astype(np.float32)]
    before = compile_graph(g, "m", options=dict(fusion="none"))
    after = compile_graph(g, "m")
    assert after.plan.arena_bytes == fusion.arena_after and after.fusion.blocks[0].strips == block.strips
    ref, ours = run_generated(before, x)[0], run_generated(after, x)[0]
    assert np.max(np.abs(ours - ref)) <= 1e-4 * (1 + np.max(np.abs(ref)))


def test_strips_cost_counts_the_recompute():
    """A block in strips costs each strip's layers on its columns (more MACs than the block's: the shared columns)
    and each strip's copies and calls; the plan's estimate is that, and more than the same block in rows."""
    g = wide_stage()
    names = ["c1", "c2", "c3", "sum", "pw"]
    for count in (2, 3, 4):
        strips = block_strips(g, names, count)
        macs = sum(layer_macs(s.graph, n) for s in strips for n in s.graph.nodes)
        block_macs = sum(layer_macs(g, n) for n in g.nodes[:5])
        assert macs > block_macs and recompute_factor(strips, g, g.nodes[:5]) == macs / block_macs
        layers = sum(layer_instructions(s.graph, n, M4) for s in strips for n in s.graph.nodes)
        assert layers == pytest.approx(macs * 8.5 + sum(s.graph.tensors["sum"].size for s in strips) * M4.add)
        overhead = sum(block_overhead(s.graph, s.sched, M4) for s in strips)
        assert overhead > 0 and strips_instructions(strips, M4) == pytest.approx(layers + overhead)
        # the fused node's estimate (layer_instructions of a FusedBlock) counts every strip's layers
        node = next(n for n in fuse_block(g, names, strips=count).nodes if n.op == "FusedBlock")
        assert layer_instructions(g, node, M4) == pytest.approx(layers)
    row_node = next(n for n in fuse_block(g, names).nodes if n.op == "FusedBlock")
    assert layer_instructions(g, row_node, M4) == pytest.approx(sum(layer_instructions(g, n, M4) for n in g.nodes[:5]))
    # the chosen plan's estimate: the layers outside the block, and the block's strips
    h, fusion = plan_fusion(g)
    [node] = [n for n in h.nodes if n.op == "FusedBlock"]
    outside = sum(layer_instructions(h, n, M4) for n in h.nodes if n.op != "FusedBlock")
    assert fusion.est_instr_after == round(outside + strips_instructions(strips_of(node), M4))


def test_patch_mode_budgets():
    """With a budget the row-mode plan meets, no strips (they are slower); one only strips meet: strips; below the
    smallest: refused in one line."""
    g = wide_stage()
    _, rows = plan_fusion(g, strip_counts=())
    _, smallest = plan_fusion(g)
    h, fusion = plan_fusion(g, budget=rows.arena_after)
    assert fusion.arena_after <= rows.arena_after and all(b.mode == "rows" for b in fusion.blocks)
    h, fusion = plan_fusion(g, budget=rows.arena_after - 1)
    assert fusion.arena_after < rows.arena_after and any(b.mode == "strips" for b in fusion.blocks)
    with pytest.raises(TinycError) as e:
        plan_fusion(g, budget=smallest.arena_after // 2)
    assert "\n" not in str(e.value) and "no plan fits it" in str(e.value)


def test_strips_only_for_a_real_gain(zoo):
    """Without a budget, patch mode is taken only where it lowers the arena by MIN_STRIP_GAIN: conv1d_net in 4
    strips saves 16 of 1,984 B (0.8%) for its recompute, so the default stays layer by layer; a budget only the
    strips meet takes them."""
    g = optimize(load_model(zoo.path("conv1d_net", "keras")))
    _, default = plan_fusion(g)
    assert default.blocks == [] and default.arena_after == default.arena_before
    _, fitted = plan_fusion(g, budget=default.arena_before - 1)
    assert default.arena_before * (1 - MIN_STRIP_GAIN) < fitted.arena_after < default.arena_before
    assert [b.mode for b in fitted.blocks] == ["strips"]
