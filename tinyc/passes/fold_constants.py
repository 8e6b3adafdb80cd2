"""fold_constants: evaluate at compile time every node whose inputs are all constants.

Frontends leave constant subgraphs behind (ONNX weight Transposes/Reshapes, Keras weight arithmetic,
shape plumbing). Running them once here with the reference interpreter (`tinyc.interp.run_node`, the
executable meaning of every op) turns each into a constant tensor of the same name, so no code is generated
for them and later passes see plain constant weights. Folding proceeds in graph order, so chains fold too.

Not folded:
  * nodes writing a graph output (the output must still be produced by a node at run time);
  * arithmetic on quantized tensors: the interpreter ignores `quant` and computes on the stored integers,
    which only means the same thing for ops that move data unchanged (Reshape, Transpose, Identity).
"""
from __future__ import annotations

import numpy as np

from ..interp import run_node
from ..ir import Graph
from ..ops import names_where

_DATA_MOVEMENT = names_where(moves_data=True)


def _foldable(g: Graph, node) -> bool:
    if not node.inputs or any(o in g.outputs for o in node.outputs):
        return False
    if not all(i in g.tensors and g.tensors[i].is_const for i in node.inputs):
        return False
    quantized = any(g.tensors[t].quant is not None for t in node.inputs + node.outputs)
    return not quantized or node.op in _DATA_MOVEMENT


def fold_constants(g: Graph) -> Graph:
    """Replace nodes whose inputs are all constants by constant tensors (same names), computed by interp."""
    g = g.copy()
    kept = []
    for node in g.nodes:
        if not _foldable(g, node):
            kept.append(node)
            continue
        values = run_node(g, node, {})
        for name, value in zip(node.outputs, values):
            t = g.tensors[name]
            t.data = np.ascontiguousarray(np.asarray(value, dtype=t.dtype).reshape(t.shape))
    g.nodes = kept
    g.remove_unused_tensors()
    return g
