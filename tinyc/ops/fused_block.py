"""FusedBlock: layers executed depth-first, row by row (issue 21). Not an op of any model format: the planner
makes it (schedule/fuse_block.py) from a chain or residual block of layers, the `graph` attribute holds them, and
schedule/row_schedule.py says in which order their rows are computed and where they are held.

It computes exactly what its layers compute, row by row: the same kernels (codegen/fused_block.py specializes each
for a window of rows), so int8 stays bit-exact. Inputs: the block's runtime inputs, then every constant its
layers read (so the library stores them once, under the same names). Its arena scratch holds the line
buffers and running pools' accumulators (`work`), then the largest kernel scratch of one layer.
"""
from __future__ import annotations

from ..errors import TinycError
from .opdef import OpDef

SCRATCH_ATTR = "kernel_scratch"    # codegen/int8_fast.SCRATCH: passed on to the layers


def evaluate(a, ins):
    from ..interp import run      # (the interpreter imports the ops)
    sub = a["graph"]
    return run(sub, dict(zip(sub.inputs, ins[:len(sub.inputs)])))[sub.outputs[0]]


def schedule_of(node):
    """The block's RowSchedule (schedule/row_schedule.py), computed once per node."""
    from ..schedule.row_schedule import row_schedule
    key = ("row_schedule", node.attrs.get("slack_rows", 0))
    cached = node.attrs.get("_cache")
    if cached is None or cached[0] != key:
        sub = node.attrs["graph"]
        cached = (key, row_schedule(sub, [n.name for n in sub.nodes], node.attrs.get("slack_rows", 0)))
        node.attrs["_cache"] = cached
    return cached[1]


def strips_of(node) -> list:
    """The block's column strips (schedule/column_strips.py), computed once per node: in row mode (no `strips`
    attribute) one strip, the whole width, whose row schedule is `schedule_of(node)`."""
    from ..schedule.column_strips import Strip, block_strips
    count = node.attrs.get("strips", 1)
    sub = node.attrs["graph"]
    if count <= 1:
        sched = schedule_of(node)
        y = sub.tensors[sched.output]
        ranges = {t: (0, sub.tensors[t].shape[2]) for t in list(sched.buffers) + [sched.output]}
        return [Strip((0, y.shape[2]), sub, ranges, sched)]
    key = ("strips", count, node.attrs.get("slack_rows", 0))
    cached = node.attrs.get("_strips")
    if cached is None or cached[0] != key:
        cached = (key, block_strips(sub, [n.name for n in sub.nodes], count, node.attrs.get("slack_rows", 0)))
        node.attrs["_strips"] = cached
    return cached[1]


def check(g, node):
    sub = node.attrs.get("graph")
    if sub is None or len(sub.outputs) != 1 or node.outputs != sub.outputs:
        raise TinycError(f"internal: fused block '{node.name}' does not hold its layers")
    runtime = [t for t in node.inputs if not g.tensors[t].is_const]
    if runtime != list(sub.inputs):
        raise TinycError(f"internal: fused block '{node.name}' reads {runtime}, its layers {sub.inputs}")
    strips_of(node)


def work(g, node) -> int:
    """Line buffers and running pools' accumulators (its layers' ops have no scratch of their own: a block takes
    convolutions, pooling and elementwise ops only)."""
    from ..codegen.fused_block import own_work_offset
    return own_work_offset(node)


DEFINITIONS = (OpDef(
    "FusedBlock", "runtime inputs..., constants... -> y[1,H,W,C]  [graph: the layers; stream: the first input "
    "comes from the user's row callback; slack_rows]",
    evaluate, check, None, None, None, None, memory="windowed", quantize=None, work=work),)
