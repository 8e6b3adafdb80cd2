"""fuse_activation: merge a standalone Activation into the op that produces its input.

Conv2D, Dense, Add, Sub, Mul and Div carry an `activation` attribute (see `tinyc.activations`) applied to
each result as it is stored, so a separate Activation node, which would cost a second pass over memory
and a buffer, folds into its producer when the producer has no activation yet and its output is read only
by the Activation and is not a graph output. The producer then writes the Activation's output tensor.

Clamps in a row compose: relu/clip after relu/clip (fused or standalone) becomes one clip, e.g.
Conv2D+relu -> clip(0, 6) gives Conv2D+clip(0, 6). Softmax is an op of its own and is never fused.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, mark_fused
from ..ops import names_where

FUSABLE = names_where(fuses_activation=True)
_FLOAT_MAX = float(np.finfo(np.float32).max)


def activation_of(node) -> dict | None:
    """The activation dict a node applies: its `activation` attr, or for an Activation node its attrs
    (flattening a nested `params` dict if a frontend wrote one)."""
    if node.op != "Activation":
        return node.attrs.get("activation")
    a = dict(node.attrs)
    a.update(a.pop("params", None) or {})
    return a


def _bounds(act: dict):
    if act["fn"] == "relu":
        return 0.0, math.inf
    if act["fn"] == "clip":
        return float(act["lo"]), float(act["hi"])
    return None


def compose(first: dict, second: dict) -> dict | None:
    """One activation equal to `second` applied after `first`, when both are clamps (relu or clip)."""
    b1, b2 = _bounds(first), _bounds(second)
    if b1 is None or b2 is None:
        return None
    lo, hi = (min(max(v, b2[0]), b2[1]) for v in b1)  # the composition is clip(x, clamp(lo1), clamp(hi1))
    if lo == 0.0 and hi >= _FLOAT_MAX:  # frontends write an unbounded clip as +-FLT_MAX
        return {"fn": "relu"}
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return {"fn": "clip", "lo": lo, "hi": hi}


def _set_activation(node, act: dict) -> None:
    if node.op == "Activation":
        node.attrs = dict(act)
    else:
        node.attrs["activation"] = dict(act)


def _merge(g: Graph, node) -> bool:
    """Merge Activation `node` into its producer if allowed; True if the node is now gone."""
    x = node.inputs[0]
    p = g.producer(x)
    if p is None or len(p.outputs) != 1 or x in g.live_out() or sum(i == x for n in g.nodes for i in n.inputs) != 1:
        return False     # (a node with several outputs: its activation would apply to only one of them)
    if any(g.tensors[t].quant is not None for t in (x, node.outputs[0])):
        return False  # int8: a standalone activation may rescale; fusing it would change the result
    if g.tensors[x].dtype != "float32":
        return False  # a clamp of plain integers: the producers' fused activations are float expressions
    act, prev = activation_of(node), (activation_of(p) if p.op in FUSABLE + ("Activation",) else None)
    if p.op in FUSABLE and prev is None:
        merged = act
    elif prev is not None:
        merged = compose(prev, act)
    else:
        return False
    if merged is None:
        return False
    _set_activation(p, merged)
    if p.op != "Activation":     # an Activation's attrs are the activation itself
        mark_fused(p, act["fn"])
    p.outputs = [node.outputs[0]]
    return True


def fuse_activation(g: Graph) -> Graph:
    """Fuse each Activation into its Conv2D/Dense/Add/Sub/Mul/Div producer; compose consecutive clamps."""
    g = g.copy()
    for node in list(g.nodes):  # in order, so chains (conv -> relu -> clip) collapse in one sweep
        if node.op == "Activation" and _merge(g, node):
            g.nodes = [n for n in g.nodes if n is not node]
    g.remove_unused_tensors()
    return g
