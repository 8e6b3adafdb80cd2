"""Arena offsets: place every buffer so that buffers live at the same step never share bytes.

Buffers tied by an in-place decision (a dying input and the output written over it, at a fixed lead) move
together as one *group*. Groups are placed one at a time, each at the lowest offset where none of its members
collides with an already placed buffer of overlapping lifetime (first fit). The result depends on the order in
which groups are placed, so several orders are tried (largest first, longest-lived first, those live at the peak
step first, ...) and the smallest arena wins; planning stops early once an order reaches the lower bound.
"""
from __future__ import annotations

from .buffers import Buffer, align
from .lifetimes import step_bytes


def groups_of(buffers: list[Buffer]) -> list[list[tuple[Buffer, int]]]:
    """Chains of anchored buffers as lists of (buffer, offset relative to the group's base), base = 0."""
    rel: dict[int, int] = {}
    root_of: dict[int, Buffer] = {}

    def resolve(b):
        if id(b) not in rel:
            if b.anchor is None:
                rel[id(b)], root_of[id(b)] = 0, b
            else:
                y, d = b.anchor
                resolve(y)
                rel[id(b)], root_of[id(b)] = rel[id(y)] + d, root_of[id(y)]
    members: dict[int, list] = {}
    for b in buffers:
        resolve(b)
        members.setdefault(id(root_of[id(b)]), []).append(b)
    out = []
    for group in members.values():
        base = min(rel[id(b)] for b in group)
        out.append([(b, rel[id(b)] - base) for b in group])
    return out


def _first_fit(groups, key) -> int:
    placed: list[tuple[int, int, int, int]] = []      # (start, end, lo, hi)
    top = 0
    for group in sorted(groups, key=key):
        # candidate bases: 0, or just above a placed buffer that some member meets in time
        cands = {0}
        step = max(b.alignment for b, _ in group)
        # only the placed buffers alive at the same time as a member can collide with it
        meets = [(b, r, [(lo, hi) for s, e, lo, hi in placed if s <= b.end and b.start <= e]) for b, r in group]
        for b, r, spans in meets:
            for lo, hi in spans:
                if hi - r >= 0:
                    cands.add(align(hi - r, step))
        for base in sorted(cands):
            if all(not (lo < base + r + b.size and base + r < hi) for b, r, spans in meets for lo, hi in spans):
                break
        for b, r in group:
            b.offset = base + r
            placed.append((b.start, b.end, b.offset, b.offset + b.size))
            top = max(top, b.offset + b.size)
    return top


def plan_arena(buffers: list[Buffer], steps: int, small_first: bool = False) -> int:
    """Assign `offset` to every buffer; returns the arena size in bytes. `small_first` also tries the peak's
    smallest groups first (schedule() asks for it only when the usual orders leave the arena more than 2% above
    its bound, so plans within 2% stay as they are)."""
    if not buffers:
        return 0
    groups = groups_of(buffers)
    live = step_bytes(buffers, steps)
    bound = max(live)
    peaks = {s for s, v in enumerate(live) if v == bound}

    def height(g):
        return max(r + b.size for b, r in g)

    def first(g):
        return min(b.start for b, _ in g)

    def last(g):
        return max(b.end for b, _ in g)

    def at_peak(g):
        return any(b.start <= s <= b.end for b, _ in g for s in peaks)

    keys = [
        lambda g: (-height(g), first(g)),
        lambda g: (not at_peak(g), -height(g), first(g)),
        lambda g: (-(last(g) - first(g)), -height(g), first(g)),
        lambda g: (-sum(b.size * (b.end - b.start + 1) for b, _ in g), first(g)),
        lambda g: (first(g), -height(g)),
        lambda g: (-max(live[b.start:b.end + 1] and max(live[b.start:b.end + 1]) for b, _ in g), -height(g),
                   first(g)),
    ]
    if small_first:
        # the small buffers of the peak first, at the bottom: a chain that drifts down over later steps (overlap
        # links) can then start above a layer's kernel scratch instead of pushing it above the chain's top
        keys.append(lambda g: (not at_peak(g), height(g), first(g)))
    best, best_offsets = None, None
    for key in keys:
        size = _first_fit(groups, key)
        if best is None or size < best:
            best, best_offsets = size, [b.offset for b in buffers]
        if best <= bound:
            break
    for b, off in zip(buffers, best_offsets):
        b.offset = off
    return best
