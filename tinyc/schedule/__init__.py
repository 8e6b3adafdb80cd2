"""Scheduling: operator order, buffers and lifetimes, in-place decisions, arena offsets.

`schedule(g)` plans the graph several ways (the model's order without in-place writes, then in place,
then with overlap, then reordered) and keeps the smallest arena; `MemoryPlan.variants` keeps each variant's
figures for reports. Definitions: lifetimes.py (lower bound), overlap.py (in place / overlap contracts).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import Graph
from ..ops import REGISTRY
from .buffers import Buffer, align, group_tensors, isolate_io, slice_view
from .lifetimes import set_lifetimes, step_bytes
from .order import best_order
from .overlap import KINDS, InPlace, options
from .plan_arena import plan_arena
from .state import isolate_state, layout, written_in_place
from .stream_input import streamed_inputs

# The variants planned, in order; each adds one technique to the one before.
VARIANTS = (("plain", (), False), ("in_place", ("elementwise", "depthwise"), False),
            ("overlap", KINDS, False), ("reordered", KINDS, True))


MAX_GREEDY = 120       # spare links tried one by one when the arena is still above 1.02 x the bound


@dataclass
class MemoryPlan:
    graph: Graph              # nodes in execution order; outputs isolated from inputs
    buffers: list             # list[Buffer]: activations and layer scratch
    buffer_of: dict           # tensor name -> Buffer
    arena_bytes: int
    lower_bound: int
    in_place: dict = field(default_factory=dict)    # step -> InPlace
    scratch: dict = field(default_factory=dict)     # step -> scratch Buffer (in-place depthwise plane)
    live: list = field(default_factory=list)        # live bytes per step (lifetimes.step_bytes)
    exact_order: bool = True
    variants: dict = field(default_factory=dict)    # name -> dict(arena_bytes, lower_bound)
    chosen: str = "plain"
    work: dict = field(default_factory=dict)        # step -> Buffer the layer's kernel needs: the op's own
                                                    # (OpDef.work), then the fast kernel's (e.g. im2col)

    # The state region (schedule/state.py): state tensor, or next value written in place -> byte offset there
    state: dict = field(default_factory=dict)
    state_bytes: int = 0
    state_copies: dict = field(default_factory=dict)   # state tensor -> the arena tensor copied into it at the end

    def offset_of(self, name: str) -> int:
        """Byte offset in the tensor's region: the arena, or the state region for those `in_state`."""
        if name in self.state:
            return self.state[name]
        buf = self.buffer_of[name]
        return buf.offset + buf.tensors[name]

    def in_state(self, name: str) -> bool:
        return name in self.state

    @property
    def peak_step(self) -> int:
        return max(range(len(self.live)), key=lambda s: self.live[s]) if self.live else 0


def _eligible(g: Graph, of: dict, choice: InPlace) -> bool:
    """Whole-buffer tensors only: no concat slices, one producer for the output; and the node reads no other part
    of the buffer it writes over (a Slice view or Concat slice of it, at another offset or size)."""
    node = g.nodes[choice.node]
    if choice.input not in of or node.outputs[0] not in of:       # in the state region
        return False
    x, y = of[choice.input], of[node.outputs[0]]
    other = [t for t in node.inputs if t != choice.input and of.get(t) is x]
    return (x is not y and x.tensors[choice.input] == 0 and y.tensors[node.outputs[0]] == 0
            and x.nbytes == g.tensors[choice.input].nbytes and y.nbytes == g.tensors[node.outputs[0]].nbytes
            and len(y.producers) == 1
            and all(x.tensors[t] == 0 and g.tensors[t].nbytes == x.nbytes for t in other))


def _plan(g: Graph, order: list[int], kinds, work=None, views=True, small_first=False, outside=()) -> MemoryPlan:
    """Plan `g` executed in `order` (node ids), writing in place with the given kinds of decisions; when
    depthwise layers are in place, also with them shifted to undo the drift of overlapped chains; when some Slice
    is a view of its input's bytes, also with every Slice a copy (a view keeps its whole input live). The first
    of equally small plans is kept: views before copies. `small_first`, `outside`: as _plan_with."""
    plans = []
    for view in {True: (True, False), False: (False,), "always": (True,)}[views]:
        plans.append(_plan_with(g, order, kinds, False, work, view, small_first, outside))
        if plans[-1].in_place and any(c.kind == "depthwise" for c in plans[-1].in_place.values()):
            plans.append(_plan_with(g, order, kinds, True, work, view, small_first, outside))
        if not _has_views(plans[0]):
            break
    return min(plans, key=lambda p: (p.arena_bytes, p.lower_bound))


def _has_views(plan: MemoryPlan) -> bool:
    return any(is_view(plan, n) for n in plan.graph.nodes)


def is_view(plan: MemoryPlan, node) -> bool:
    """A Slice whose output the plan placed inside its input's bytes at exactly the slice's offset: it needs no
    code (codegen/emit.py)."""
    offset = slice_view(plan.graph, node)
    x = plan.buffer_of.get(node.inputs[0]) if offset is not None else None     # None: a constant input
    return (x is not None and x is plan.buffer_of[node.outputs[0]]
            and x.tensors[node.outputs[0]] == x.tensors[node.inputs[0]] + offset)


def _plan_with(g: Graph, order: list[int], kinds, climb: bool, work=None, views=True,
               small_first=False, outside=()) -> MemoryPlan:
    """One plan of `g` in `order`. `small_first`: when the arena stays above the bound, place the offsets again
    with plan_arena's small_first orders too (kernel scratch under a chain of overlapped layers). `outside`:
    tensors of the state region, not planned in the arena."""
    g = _reordered(g, order)
    buffers, of = group_tensors(g, views, outside)
    set_lifetimes(g, buffers, list(range(len(g.nodes))))
    # Kernel scratch: the op's own (OpDef.work), then the fast kernel's (work=callable(graph, node) -> bytes);
    # live during its layer only, never dropped.
    kernel_work = {}
    for step, node in enumerate(g.nodes):
        nbytes = kernel_work_bytes(g, node, work)
        if nbytes:
            kernel_work[step] = Buffer(nbytes=nbytes, kind="scratch", start=step, end=step,
                                       label=f"kernel scratch of layer {step}")
    buffers = buffers + list(kernel_work.values())
    outputs = set(g.outputs)
    in_place, scratch = {}, {}
    pos, top = {}, {}      # a buffer's position in its chain (first buffer at 0); the chain's highest end so far
    for step, node in enumerate(g.nodes):
        y = of.get(node.outputs[0])
        for choice in options(g, step, kinds):
            if not _eligible(g, of, choice):
                continue
            x = of[choice.input]
            if (x.end == step and y.start == step and x.anchor is None
                    and not outputs & x.tensors.keys()):
                px = pos.get(id(x), 0)
                tx = top.get(id(x), px + x.size)
                if climb and choice.kind == "depthwise" and tx - y.size - px >= choice.unit:
                    choice = choice.shifted(x.size, y.size, (tx - y.size - px) // choice.unit)
                pos[id(y)] = px - choice.lead
                top[id(y)] = max(tx, pos[id(y)] + y.size)
                x.anchor = (y, choice.lead)
                in_place[step] = choice
                if choice.scratch:
                    scratch[step] = Buffer(nbytes=choice.scratch, kind="scratch", start=step, end=step,
                                           label=f"scratch of layer {step}")
                break
    steps = len(g.nodes)
    live = step_bytes(buffers + list(scratch.values()), steps)
    bound = max(live)
    # A chain of links fixes its members' relative offsets and can stack them above the bound. Links at steps
    # whose live bytes stay within the bound without them are spare: plan with all links, without the spare
    # ones, and without the spare ones that move data (lead != 0); keep the smallest arena.
    spare = [s for s, c in in_place.items() if live[s] + c.saving <= bound]
    anchors = {s: (of[c.input], of[c.input].anchor) for s, c in in_place.items()}
    best = None

    def attempt(drop, small_first=False):
        nonlocal best
        for s, (x, anchor) in anchors.items():
            x.anchor = None if s in drop else anchor
        bufs = buffers + [b for s, b in scratch.items() if s not in drop]
        arena = plan_arena(bufs, steps, small_first)
        if best is None or arena < best[0]:
            best = (arena, list(drop), [(b, b.offset, b.anchor) for b in bufs])
        return arena

    for small in (False, True) if small_first else (False,):
        for drop in ([], spare, [s for s in spare if in_place[s].lead != 0]):
            if attempt(drop, small) <= bound:
                break
        # Still above the bound: give spare links back one at a time, keeping each that helps.
        if best[0] > bound * 1.02 and len(best[1]) <= MAX_GREEDY:
            for s in list(best[1]):
                attempt([d for d in best[1] if d != s], small)
        if best[0] <= bound:
            break
    arena, drop, placed = best
    for b, offset, anchor in placed:
        b.offset, b.anchor = offset, anchor
    for s in drop:
        in_place.pop(s)
        scratch.pop(s, None)
    buffers = [b for b, _, _ in placed]
    live = step_bytes(buffers, steps)
    return MemoryPlan(g, buffers, of, arena, max(live), in_place, scratch, live, work=kernel_work)


def op_work_bytes(g: Graph, node) -> int:
    """Arena scratch every kernel of the node's op needs (OpDef.work; 0 for most ops), rounded up to the alignment:
    a fast kernel's own scratch follows it."""
    rule = REGISTRY[node.op].work
    return align(rule(g, node)) if rule else 0


def kernel_work_bytes(g: Graph, node, work=None) -> int:
    """The layer's kernel scratch: the op's own, then what `work(graph, node)` asks for (the fast kernels')."""
    return op_work_bytes(g, node) + (work(g, node) if work else 0)


def _reordered(g: Graph, order: list[int]) -> Graph:
    if order == list(range(len(g.nodes))):
        return g
    h = g.copy()
    h.nodes = [h.nodes[i] for i in order]
    return h


def schedule(g: Graph, variants=VARIANTS, work=None, views=True) -> MemoryPlan:
    """`work(graph, node)`: bytes of scratch the node's fast kernel needs during its step (0 for none), after the
    scratch the op itself needs (OpDef.work), which every plan has. `views`: True
    plans each variant with Slice views (buffers.slice_view) and with copies and keeps the smaller; False: every
    Slice copies; "always": views wherever they apply (tests)."""
    g = isolate_io(isolate_state(g))
    direct = written_in_place(g)
    outside = set(g.state) | set(direct.values()) | streamed_inputs(g)    # (a streamed input: the user's rows)
    plain = list(range(len(g.nodes)))
    best, figures = None, {}
    for name, kinds, reorder in variants:
        order, exact = plain, True
        if reorder:
            buffers, of = group_tensors(g, bool(views), outside)
            savings = {(o.node, o.input): o.saving for i in plain for o in options(g, i, kinds)
                       if _eligible(g, of, o)}
            order, exact = best_order(g, buffers, savings)
        plan = _plan(g, order, kinds, work, views, outside=outside)
        plan.exact_order = exact
        figures[name] = dict(arena_bytes=plan.arena_bytes, lower_bound=plan.lower_bound)
        if best is None or (plan.arena_bytes, plan.lower_bound) < (best.arena_bytes, best.lower_bound):
            best, best_order_kinds = plan, (order, kinds)
            best.chosen = name
    if best.arena_bytes > 1.02 * best.lower_bound:
        # More than 2% above the bound: the chosen variant again with kernel scratch tried under overlapped chains
        # (plan_arena's small_first); only here, so every plan within 2% stays as it is (a tighter plan may
        # overlap more layers, and an overlapped convolution can run slower).
        retry = _plan(g, *best_order_kinds, work, views, small_first=True, outside=outside)
        if retry.arena_bytes < best.arena_bytes:
            retry.exact_order, retry.chosen = best.exact_order, best.chosen
            figures[best.chosen] = dict(arena_bytes=retry.arena_bytes, lower_bound=retry.lower_bound)
            best = retry
    best.variants = figures
    best.state, best.state_bytes = layout(g)
    best.state.update({v: best.state[s] for s, v in direct.items()})
    best.state_copies = {s: v for s, v in g.state.items() if v != s and s not in direct}
    return best
