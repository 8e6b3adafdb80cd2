"""A numpy interpreter for the IR: runs each op's `evaluate` (tinyc/ops/), the executable definition of what
the op means.

Used by tests (a pass must not change what a graph computes; a frontend must compute what its reference
runtime computes) and by constant folding. Plain and slow on purpose: clarity over speed.
"""
from __future__ import annotations

import numpy as np

from . import activations
from .errors import TinycError
from .ir import Graph, Node, outputs_of
from .ops import REGISTRY


def run_node(g: Graph, node: Node, env: dict) -> list:
    """The node's output values, one array per output (`evaluate` returns a tuple for a node with several)."""
    ins = [env[i] if i in env else g.tensors[i].data for i in node.inputs]
    op = node.op
    definition = REGISTRY.get(op)
    if definition is None or definition.evaluate is None:
        raise TinycError(f"the interpreter has no rule for op '{op}'")
    y = definition.evaluate(node.attrs, ins)
    several = outputs_of(node) > 1
    ys = list(y) if several else [y]
    if len(ys) != len(node.outputs):
        raise TinycError(f"node '{node.name}' ({op}) computes {len(ys)} outputs but writes {len(node.outputs)} "
                         "tensors")
    act = node.attrs.get("activation")
    if act is not None and op != "Activation":
        if several:
            raise TinycError(f"node '{node.name}' ({op}) has several outputs and a fused activation; a fused "
                             "activation applies to single-output nodes only")
        ys = [activations.apply(act, ys[0])]
    return [_as_declared(g, node, name, value) for name, value in zip(node.outputs, ys)]


def _as_declared(g: Graph, node: Node, name: str, y) -> np.ndarray:
    out = g.tensors[name]
    y = np.asarray(y, dtype=out.dtype)
    if REGISTRY[node.op].memory == "alias":
        return y.reshape(out.shape)
    if y.shape != tuple(out.shape):
        raise TinycError(f"node '{node.name}' ({node.op}) computes shape {y.shape} for '{name}' but it is declared "
                         f"{tuple(out.shape)}")
    return y


def run(g: Graph, inputs: dict | list, keep_all: bool = False, state: dict | None = None) -> dict:
    """Evaluate the graph on `inputs` (dict by name, or list in g.inputs order). Returns outputs by name
    (every tensor when `keep_all`). A stateful graph reads `state` (by state tensor name; default: the initial
    state); `step` also returns the next state."""
    return step(g, inputs, state, keep_all)[0]


def step(g: Graph, inputs: dict | list, state: dict | None = None, keep_all: bool = False) -> tuple[dict, dict]:
    """One inference of a (possibly stateful) graph: (outputs by name, or every tensor when `keep_all`; the next
    state by state tensor name). `state`: the state before it (None: `g.initial_state()`)."""
    if not isinstance(inputs, dict):
        inputs = dict(zip(g.inputs, inputs))
    env = {k: np.asarray(v, dtype=g.tensors[k].dtype).reshape(g.tensors[k].shape) for k, v in inputs.items()}
    env.update(_state_values(g, state))
    for node in g.nodes:
        for name, val in zip(node.outputs, run_node(g, node, env)):
            env[name] = val

    def value(name):
        return env[name] if name in env else g.tensors[name].data

    # every next value is read before any state changes: the update is simultaneous
    after = {s: np.array(value(v), dtype=g.tensors[s].dtype) for s, v in g.state.items()}
    return (env if keep_all else {o: value(o) for o in g.outputs}), after


def run_frames(g: Graph, frames: list, state: dict | None = None) -> tuple[list, dict]:
    """Inferences one after another, each on the state the previous one left: (outputs of each frame, the state
    after the last). `frames`: a list of `inputs` as for `run`."""
    outs = []
    for inputs in frames:
        out, state = step(g, inputs, state)
        outs.append(out)
    return outs, state if state is not None else g.initial_state()


def _state_values(g: Graph, state: dict | None) -> dict:
    values = g.initial_state()
    for name, v in (state or {}).items():
        if name not in g.state:
            raise TinycError(f"'{name}' is not a state tensor of the model (its state: {sorted(g.state) or 'none'})")
        t = g.tensors[name]
        values[name] = np.asarray(v, dtype=t.dtype).reshape(t.shape)
    return values
