"""A numpy interpreter for the IR: runs each op's `evaluate` (tinyc/ops/), the executable definition of what
the op means.

Used by tests (a pass must not change what a graph computes; a frontend must compute what its reference
runtime computes) and by constant folding. Plain and slow on purpose: clarity over speed.
"""
from __future__ import annotations

import numpy as np

from . import activations
from .errors import TinycError
from .ir import Graph, Node
from .ops import REGISTRY


def run_node(g: Graph, node: Node, env: dict) -> list:
    ins = [env[i] if i in env else g.tensors[i].data for i in node.inputs]
    op = node.op
    definition = REGISTRY.get(op)
    if definition is None or definition.evaluate is None:
        raise TinycError(f"the interpreter has no rule for op '{op}'")
    y = definition.evaluate(node.attrs, ins)
    act = node.attrs.get("activation")
    if act is not None and op != "Activation":
        y = activations.apply(act, y)
    out = g.tensors[node.outputs[0]]
    y = np.asarray(y, dtype=out.dtype)
    if definition.memory == "alias":
        y = y.reshape(out.shape)
    elif y.shape != tuple(out.shape):
        raise TinycError(f"node '{node.name}' ({op}) computes shape {y.shape} but its output is declared "
                         f"{tuple(out.shape)}")
    return [y]


def run(g: Graph, inputs: dict | list, keep_all: bool = False) -> dict:
    """Evaluate the graph on `inputs` (dict by name, or list in g.inputs order). Returns outputs by name
    (every tensor when `keep_all`)."""
    if not isinstance(inputs, dict):
        inputs = dict(zip(g.inputs, inputs))
    env = {k: np.asarray(v, dtype=g.tensors[k].dtype).reshape(g.tensors[k].shape) for k, v in inputs.items()}
    for node in g.nodes:
        for name, val in zip(node.outputs, run_node(g, node, env)):
            env[name] = val
    return env if keep_all else {o: env[o] if o in env else g.tensors[o].data for o in g.outputs}
