"""repeat_as_resize: a chain of Reshape / Tile / BroadcastTo that repeats every element along some axes becomes one
nearest Resize.

TFLiteConverter lowers Keras UpSampling2D (nearest) to RESHAPE -> TILE -> RESHAPE -> TILE -> RESHAPE (or
BROADCAST_TO), and Keras UpSampling1D is a BroadcastTo between Reshapes: two copies and an intermediate buffer
for what one nearest Resize does in one copy. A chain is a run of those ops, each value read only by the next
node and not a graph output, with at least one Tile or BroadcastTo, whose input x and output y have the same rank
and y.shape = x.shape * f with whole factors f, and at least two nodes (a lone Tile of size-1 axes is one copy
already). It is replaced when the element every output position reads —
computed by running the chain on the indices of x — is the element x[o // f] (a nearest Resize with asymmetric
coordinates and floor); anything else (tiling whole blocks, a rank change, a flatten at the end) is left alone.
On int8 tensors, input and output must share their quantization (a copy), as the chain's moves already require.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, mark_fused
from ..ops import REGISTRY
from ..ops.int8_common import same_quant

MOVES = ("Reshape", "Tile", "BroadcastTo")
MAX_ELEMENTS = 1 << 20          # the index map is computed in numpy at compile time


def _single_reader(g: Graph, name: str):
    readers = g.consumers(name)
    return readers[0] if len(readers) == 1 and name not in g.live_out() else None


def _chain_around(g: Graph, core) -> list:
    """The longest run of MOVES through `core` in which each value is read only by the next node."""
    chain = [core]
    while True:
        before = g.producer(chain[0].inputs[0])
        if before is None or before.op not in MOVES or _single_reader(g, before.outputs[0]) is not chain[0]:
            break
        chain.insert(0, before)
    while True:
        after = _single_reader(g, chain[-1].outputs[0])
        if after is None or after.op not in MOVES:
            break
        chain.append(after)
    return chain


def _factors(g: Graph, chain) -> tuple | None:
    """The whole factors f with y.shape = x.shape * f if the chain repeats each element of x f times per axis."""
    x, y = g.tensors[chain[0].inputs[0]], g.tensors[chain[-1].outputs[0]]
    if len(x.shape) != len(y.shape) or y.size > MAX_ELEMENTS or tuple(x.shape) == tuple(y.shape):
        return None
    if any(o % i for i, o in zip(x.shape, y.shape)):
        return None
    if (x.quant is None) != (y.quant is None) or (x.quant is not None and not same_quant(x.quant, y.quant)):
        return None
    index = np.arange(x.size, dtype=np.int64).reshape(x.shape)
    for node in chain:
        if node.op == "Reshape":
            index = index.reshape(g.tensors[node.outputs[0]].shape)
        else:
            index = REGISTRY[node.op].evaluate(node.attrs, [index])
    factors = tuple(o // i for i, o in zip(x.shape, y.shape))
    nearest = np.arange(x.size, dtype=np.int64).reshape(x.shape)[
        np.ix_(*[np.arange(o) // f for o, f in zip(y.shape, factors)])]
    return factors if np.array_equal(index.reshape(y.shape), nearest) else None


def repeat_as_resize(g: Graph) -> Graph:
    """Replace Reshape / Tile / BroadcastTo chains that repeat elements per axis by one nearest Resize."""
    g = g.copy()
    for core in list(g.nodes):
        if core.op not in ("Tile", "BroadcastTo") or all(core is not n for n in g.nodes):
            continue
        chain = _chain_around(g, core)
        # the longest sub-chain through `core` that is a repeat (a trailing flatten, say, stays outside)
        spans = sorted(((i, j) for i in range(chain.index(core) + 1) for j in range(chain.index(core), len(chain))),
                       key=lambda s: s[0] - s[1])
        for i, j in spans:
            part = chain[i:j + 1]
            if len(part) < 2:       # a lone Tile of size-1 axes already is one copy
                break
            factors = _factors(g, part)
            if factors is None:
                continue
            x, y = part[0].inputs[0], part[-1].outputs[0]
            at = next(k for k, n in enumerate(g.nodes) if n is part[-1])
            resize = g.add_node("Resize", [x], [y], name=part[-1].name, sizes=tuple(g.tensors[y].shape),
                                mode="nearest", coord="asymmetric", scales=tuple(float(f) for f in factors),
                                nearest_mode="floor", cubic_coeff_a=-0.75, exclude_outside=0)
            g.nodes.remove(resize)
            mark_fused(resize, "+".join(n.op for n in part))
            g.nodes.insert(at, resize)
            g.nodes = [n for n in g.nodes if all(n is not p for p in part)]
            break
    g.remove_unused_tensors()
    return g
