"""Fast int8 depthwise conv rules (templates/int8_fast/depthwise*.c.j2). Placeholder: no fast depthwise kernel
yet, so every depthwise layer uses the reference kernel."""
from __future__ import annotations


def depthwise(k):
    """(template, variables, MACs) for a depthwise int8 Conv2D, or None (reference kernel)."""
    return None


def work_bytes(g, node) -> int:
    """Kernel scratch bytes the fast depthwise kernel needs for `node` (0: none, or no fast kernel)."""
    return 0
