"""Kernel scratch within a budget: the fast kernels' scratch (im2col windows, expanded inputs, depthwise row
buffers) is planned in the arena, and where it would make the arena larger than allowed, the layers concerned
get their least-scratch variant, then none (the reference kernel): speed is traded only where it costs SRAM.

Allowed: the arena without any kernel scratch plus SCRATCH_SLACK of it (at least SCRATCH_SLACK_MIN bytes), and
never more than `arena_limit` (e.g. what the target board has for the arena) unless the model alone needs more.
"""
from __future__ import annotations

from ..schedule import MemoryPlan, schedule
from . import int8_fast

LEVELS = ("small", "none")     # int8_fast.SCRATCH values, in the order they are tried
SCRATCH_SLACK = 1 / 16         # kernel scratch may grow the arena by this fraction ...
SCRATCH_SLACK_MIN = 2048       # ... or by this many bytes (noise on 256 KB+ boards), whichever is more
MAX_PLANS = 12                 # re-plans at most (each is a full schedule)


def allowed_arena(base: int, arena_limit: int | None = None) -> int:
    allowed = base + max(SCRATCH_SLACK_MIN, int(base * SCRATCH_SLACK))
    return allowed if arena_limit is None else max(base, min(allowed, arena_limit))


def _next_reductions(plan: MemoryPlan, allowed: int, level: str) -> list[str]:
    """Layers to reduce to `level` next: those whose step alone exceeds the budget; when none does (the arena is
    over only through placement), the one with the largest scratch."""
    # (only fast kernels' scratch can be reduced: an op's own, OpDef.work, is always needed)
    steps = [s for s in plan.work if int8_fast.work_bytes(plan.graph, plan.graph.nodes[s])
             and int8_fast.scratch_level(plan.graph.nodes[s]) not in (level, "none")]
    over = [s for s in steps if plan.live[s] > allowed]
    if not over and steps:
        over = [max(steps, key=lambda s: plan.work[s].nbytes)]
    return [plan.graph.nodes[s].name for s in over]


def _remembered(work):
    """`work(graph, node)` computed once per layer and scratch level: every variant `schedule` plans asks for every
    layer's (the graph copies it reorders have the same layers under the same names)."""
    known = {}

    def remembered(g, node):
        key = (node.name, int8_fast.scratch_level(node))
        if key not in known:
            known[key] = work(g, node)
        return known[key]
    return remembered


def schedule_full_scratch(g) -> MemoryPlan:
    """The memory plan with every fast kernel's full scratch, whatever it adds to the arena."""
    return schedule(g, work=_remembered(int8_fast.work_bytes))


def schedule_with_scratch(g, arena_limit: int | None = None) -> MemoryPlan:
    """The memory plan for the fast kernels: `schedule(g, work=int8_fast.work_bytes)`, with the scratch of the
    layers that push the arena over `allowed_arena` reduced (int8_fast.SCRATCH set on those nodes of g, the
    compiler's own copy; each plan keeps its own copy of the graph, so the chosen plan's nodes say what its
    kernels may use). When no reduction gets within the budget, the plan with the smallest arena."""
    work = _remembered(int8_fast.work_bytes)
    plan = schedule(g, work=work)
    allowed = allowed_arena(schedule(g).arena_bytes, arena_limit)
    best, plans = plan, 2
    nodes = {n.name: n for n in g.nodes}
    for level in LEVELS:
        while plan.arena_bytes > allowed and plans < MAX_PLANS:
            names = _next_reductions(plan, allowed, level)
            if not names:
                break
            for n in names:
                nodes[n].attrs[int8_fast.SCRATCH] = level
            plan = schedule(g, work=work)
            plans += 1
            if plan.arena_bytes < best.arena_bytes:
                best = plan
        if plan.arena_bytes <= allowed:
            return plan
    return best
