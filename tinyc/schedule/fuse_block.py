"""fuse_block: a rewrite of the graph that replaces a block of layers by one FusedBlock node (tinyc/ops/
fused_block.py) executed row by row (schedule/row_schedule.py). It computes the same values; the planner
(schedule/depth_first_search.py) decides where to use it."""
from __future__ import annotations

import copy

from ..ir import Graph, Node
from .column_strips import block_strips
from .row_schedule import block_nodes, row_schedule


def fuse_block(g: Graph, names, stream: bool = False, slack_rows: int = 0, strips: int = 1) -> Graph:
    """A copy of `g` with the layers `names` as one FusedBlock node, placed where the last of them was.
    `stream`: its first input, a model input, comes from the user's row callback. `strips` >= 2: patch mode, the
    output computed in that many column strips (schedule/column_strips.py)."""
    nodes, inputs, output = block_nodes(g, names)
    if strips > 1:
        block_strips(g, names, strips, slack_rows)      # refuses what cannot run in strips
    else:
        row_schedule(g, names, slack_rows)          # refuses what cannot run row by row
    h = g.copy()
    wanted = {n.name for n in nodes}
    sub = Graph(f"{nodes[0].name}..{nodes[-1].name}", g.source_format)
    consts = []
    for n in nodes:
        for t in n.inputs + n.outputs:
            if t not in sub.tensors:
                sub.tensors[t] = copy.deepcopy(g.tensors[t])
            if g.tensors[t].is_const and t not in consts:
                consts.append(t)
    sub.nodes = [copy.deepcopy(n) for n in nodes]
    sub.inputs, sub.outputs = list(inputs), [output]
    attrs = dict(graph=sub, stream=bool(stream), slack_rows=int(slack_rows))
    if strips > 1:
        attrs["strips"] = int(strips)
    block = Node("FusedBlock", list(inputs) + consts, [output], attrs, name=h.unique_name(f"fused_{nodes[0].name}"))
    last = max(i for i, n in enumerate(h.nodes) if n.name in wanted)
    h.nodes = [n for n in h.nodes[:last] if n.name not in wanted] + [block] + h.nodes[last + 1:]
    h.remove_unused_tensors()
    return h


def inline_blocks(g: Graph) -> Graph:
    """A copy of `g` with every FusedBlock node replaced by its layers: the graph layer by layer, as it was before
    `fuse_block` (what `tinyc report` plans to show the peak without fusion)."""
    h = g.copy()
    nodes = []
    for n in h.nodes:
        if n.op != "FusedBlock":
            nodes.append(n)
            continue
        sub = n.attrs["graph"]
        for name, t in sub.tensors.items():
            h.tensors.setdefault(name, t)
        nodes += sub.nodes
    h.nodes = nodes
    return h
