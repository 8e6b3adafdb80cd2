"""Scheduling: operator order (as given, for now), buffers and lifetimes, arena offsets."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import Graph
from .lifetimes import find_buffers, isolate_io, lower_bound
from .plan_arena import plan_arena


@dataclass
class MemoryPlan:
    graph: Graph              # the graph the plan is for (outputs isolated from inputs)
    buffers: list             # list[Buffer]
    buffer_of: dict           # tensor name -> Buffer
    arena_bytes: int
    lower_bound: int


def schedule(g: Graph) -> MemoryPlan:
    g = isolate_io(g)
    buffers, of = find_buffers(g)
    size = plan_arena(buffers)
    return MemoryPlan(g, buffers, of, size, lower_bound(buffers, len(g.nodes)))
