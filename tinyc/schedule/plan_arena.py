"""Arena offsets: greedy by size (largest buffer first, lowest offset that fits among the buffers it overlaps
in time). The baseline planner; it reports how far it is from the lower bound."""
from __future__ import annotations

from .lifetimes import Buffer

ALIGN = 8


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def plan_arena(buffers: list[Buffer]) -> int:
    """Assign `offset` to every arena buffer; returns the arena size in bytes."""
    placed: list[Buffer] = []
    for buf in sorted((b for b in buffers if b.pinned is None), key=lambda b: (-b.nbytes, b.start)):
        overlapping = sorted((p for p in placed if p.start <= buf.end and buf.start <= p.end),
                             key=lambda p: p.offset)
        offset = 0
        for p in overlapping:
            if offset + buf.nbytes <= p.offset:
                break
            offset = max(offset, align(p.offset + p.nbytes))
        buf.offset = offset
        placed.append(buf)
    return max((align(b.offset + b.nbytes) for b in placed), default=0)
