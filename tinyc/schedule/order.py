"""Operator order: the topological order with the smallest peak of live bytes.

Dynamic programming over the sets of executed nodes: the bytes live after a set S has run do not depend on the
order within S, so the best peak to reach S is min over its last node n of max(best(S - n), bytes during n).
States are explored layer by layer (|S| = 0, 1, ...). On graphs with many parallel branches the number of
states explodes; then each layer keeps only the most promising states (lowest peak, then lowest live bytes) and
the result is a heuristic, reported as such. How many it keeps shrinks with the graph's size and width so that
the search evaluates about WORK candidate steps in all (a few seconds of Python): BEAM states on small graphs,
never fewer than MIN_BEAM. The caller also keeps the model's own order when that plans better, so the result is
never worse than the plain order.

Bytes during node n = bytes live before it + its new output buffers - the in-place saving of the best dying
input it can write over (overlap.py), the same definition as the lower bound (lifetimes.py).
"""
from __future__ import annotations

from ..ir import Graph
from .buffers import Buffer

BEAM = 4000
MIN_BEAM = 16
WORK = 400_000


def best_order(g: Graph, buffers: list[Buffer], savings: dict) -> tuple[list[int], bool]:
    """(order of node ids, exact?). `savings[(node id, input tensor)]` = bytes saved when that input dies at
    that node and the node writes over it."""
    n = len(g.nodes)
    if n == 0:
        return [], True
    produced_by = {o: i for i, node in enumerate(g.nodes) for o in node.outputs}
    preds, succs = [0] * n, [0] * n
    for i, node in enumerate(g.nodes):
        for t in node.inputs:
            if t in produced_by:
                preds[i] |= 1 << produced_by[t]
                succs[produced_by[t]] |= 1 << i
    ids = {id(b): k for k, b in enumerate(buffers)}
    size = [b.size for b in buffers]
    prod_mask = [sum(1 << p for p in b.producers) for b in buffers]
    cons_mask = [sum(1 << c for c in b.consumers) for b in buffers]
    inputs, outputs = set(g.inputs), g.live_out()
    is_in = [bool(inputs & b.tensors.keys()) for b in buffers]
    is_out = [bool(outputs & b.tensors.keys()) for b in buffers]
    of = {name: ids[id(b)] for b in buffers for name in b.tensors}
    outs = [sorted({of[t] for t in node.outputs if t in of}) for node in g.nodes]
    ins = [[(t, of[t]) for t in dict.fromkeys(node.inputs) if t in of] for node in g.nodes]

    def live(mask, k):
        return (is_in[k] or prod_mask[k] & mask) and (is_out[k] or cons_mask[k] & ~mask)

    start_bytes = sum(size[k] for k in range(len(buffers)) if live(0, k))
    # state -> (peak, live bytes after it, parent state, last node, nodes ready to run after it)
    layer = {0: (start_bytes, start_bytes, None, None, sum(1 << i for i in range(n) if not preds[i]))}
    history, exact = [], True
    full = (1 << n) - 1
    for _ in range(n):
        nxt, steps = {}, 0
        for mask, (peak, mem, _, _, ready) in layer.items():
            todo = ready
            while todo:
                bit = todo & -todo
                todo ^= bit
                i = bit.bit_length() - 1
                after = mask | bit
                steps += 1
                new = [k for k in outs[i] if not live(mask, k)]
                dying = [(t, k) for t, k in ins[i] if not is_out[k] and not cons_mask[k] & ~after]
                saving = max((savings.get((i, t), 0) for t, _ in dying), default=0)
                grown = mem + sum(size[k] for k in new)
                during = grown - saving
                mem_after = grown - sum(size[k] for k in {k for _, k in dying}) \
                    - sum(size[k] for k in new if not live(after, k))
                unlocked = succs[i]
                now_ready = ready ^ bit
                while unlocked:
                    low = unlocked & -unlocked
                    unlocked ^= low
                    if not preds[low.bit_length() - 1] & ~after:
                        now_ready |= low
                cand = (max(peak, during), mem_after, mask, i, now_ready)
                old = nxt.get(after)
                if old is None or cand[:2] < old[:2]:
                    nxt[after] = cand
        # steps per kept state ~ the graph's width here; n layers of beam * width steps stay near WORK
        beam = max(MIN_BEAM, min(BEAM, WORK * len(layer) // max(1, n * steps)))
        if len(nxt) > beam:
            exact = False
            nxt = dict(sorted(nxt.items(), key=lambda kv: kv[1][:2])[:beam])
        history.append(layer)
        layer = nxt
    order, mask = [], full
    history.append(layer)
    for depth in range(n, 0, -1):
        _, _, parent, node, _ = history[depth][mask]
        order.append(node)
        mask = parent
    return order[::-1], exact
