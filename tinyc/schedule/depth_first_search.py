"""Where to cut the network into fused blocks (issue 21): the planner that chooses them, never worse.

A fused block (schedule/row_schedule.py, schedule/fuse_block.py) runs consecutive layers row by row so their
intermediate tensors are never whole. `plan_fusion` chooses which blocks, if any:

**Candidates.** Maximal runs of consecutive layers (graph order) that can stream rows (`row_schedule.windows`
accepts them) and every sub-run of 2 .. MAX_BLOCK_LAYERS of them that `row_schedule` accepts as a block (one output
read after it; residual Adds inside are fine).

**Search.** A greedy on the real memory plan: take the current plan's peak step, try the candidate blocks covering
its layers (replacing blocks they overlap; the parts of an overlapped block outside the new one stay fused when
they still form a block, so a block can also be split), rank them by a cheap estimate of the peak (with a budget:
those estimated within it by their row-kernel calls), simulate the best SIMULATED_PER_ROUND, plan the best
MOVES_PER_ROUND of them in full (the caller's `planner`, e.g. codegen/scratch_fit.schedule_with_scratch, with the
fast kernels' scratch; where it gave a block's kernels less scratch, `full_planner` too: a larger arena, faster
kernels) and keep the best; repeat until the peak stops falling (at most MAX_PLANS full plans).
Estimated peak of a set of blocks: the layer-by-layer plan's live bytes at every step outside them, and per block
the tensors live across it + its inputs that die in it + its output (less the part that may overlap its first
input) + its line buffers.

**Objective.** With a budget (`--arena-budget`, or the board's SRAM for the arena): the plan with the fewest
estimated instructions whose arena fits it (the layer-by-layer plan when it fits); a budget no plan meets is a
one-line TinycError naming the smallest arena found and the layer at its peak. Without: the smallest arena whose
estimated instructions are at most `max_ratio` x the layer-by-layer plan's. Either way a fused plan is used only if
its arena is smaller than the layer-by-layer plan's.

**Cost model** (instructions, per core). A layer costs MACs x the per-MAC figure of its kernel kind (convolution
k x k, pointwise 1x1, pointwise strided, depthwise, dense), or per output element for elementwise ops (Add) and
per window element for pooling. The figures are the fast kernels' on the MLPerf Tiny models and MobileNetV2-0.35
measured by bench/speed.py under QEMU (bench/RESULTS.md at tinyc 46b1750, "Instructions per layer kind": per-MAC of
`int8_fast/gemm/im2col`, `gemm/1x1`, `gemm/1x1-strided`, `depthwise/planar` + `depthwise_raster`, `gemm/fc`; Add =
`binary/table` instructions / elements added: IC ResNet-8 322,640 / 28,672 on the M4, 1,468,200 / 28,672 on the
M0+; pooling = `pool/avg` of KWS 18,160 / 8,000 window elements). The Cortex-M7 and M33 figures are within 1% of
the M4's and use them. The plain-C kernels (`kernels="reference"`) cost REFERENCE_PER_MAC per MAC on every core
(the M4 "plain C" column: 6.9-10.1 per MAC over the models; not measured on the other cores, whose ratios it only
serves), and so do float layers (plain C too), and a convolution whose fast kernel the memory plan left the least
scratch ("small") costs `least_scratch` more per MAC. A fused block computes the same layers, one output row per
call, and adds: the bytes its "load" and "move" actions copy x `copy_per_byte` (a word loop, `<p>_rows_copy4`:
under 3 instructions per word as compiled), the bytes of its "fill" rows x `fill_per_byte` (a byte loop), `call` per
row-kernel call, and where a row is not a multiple of 4 pixels `tail_per_pixel_mac` x the MACs of one output pixel
per call (the lone pixel of an odd row loads each weight for one pixel where a pair shares it), and
`depthwise_rows` per MAC of its depthwise layers (negative: a depthwise row kernel reading channel-major rows costs
less than the whole layer, bench/depth_first.py --rows: MobileNetV2's strided one 0.81x, VWW's 0.93-0.94x, KWS's
0.99x). The fused-block terms and `least_scratch` are fitted to QEMU instruction counts on the M4 at 353a306
(bench/depth_first.py, `run_emulated`, whole models; estimated vs measured instructions / layer by layer): KWS
layers 0-9 with the running global pool (the planner's choice) 1.041 vs 1.050 (3,416,200 -> 3,585,340),
MobileNetV2-0.35@144 layers 0-2 and 3-12 (the planner's) 1.005 vs 0.998 (42,915,360 -> 42,845,320), layers 0-5
1.003 vs 0.995 (-> 42,697,400), IC ResNet-8 layers 0-7 (the planner's) 1.009 vs 0.988 (13,334,480 ->
13,181,080), layers 0-3 1.006 vs 0.994 (-> 13,260,800), layers 0-12 at "small" scratch 1.171 vs 1.175 (->
15,665,040), VWW conv_dw_1 .. conv_dw_2 (the planner's) 1.003 vs 1.010 (10,994,240 -> 11,103,840), layers 0-3 1.006
vs 0.969 (-> 10,649,800: its first convolution costs 1,299,240 whole and 937,080 as rows, which the per-kind figure,
the same for both, cannot tell apart). `copy_per_byte` and `fill_per_byte` are solved from the --rows "row copies" of
the ResNet-8 and VWW blocks (61,240 and 75,280 instructions), `tail_per_pixel_mac` from KWS's pointwise rows (1.043x
their layers: 24.2K per layer over 25 rows of 5 pixels).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import TinycError
from ..ir import Graph
from ..ops import REGISTRY
from .buffers import align
from .fuse_block import fuse_block
from .row_schedule import block_nodes, row_schedule, windows

MAX_BLOCK_LAYERS = 16      # longest candidate block (the candidates per peak layer grow as its square)
MOVES_PER_ROUND = 3        # candidate plans planned in full per greedy round
SIMULATED_PER_ROUND = 12   # candidates whose row schedules are simulated per round (the best by the quick estimate)
MAX_PLANS = 18             # full plans per search at most, the layer-by-layer one included

CORES = ("cortex-m0plus", "cortex-m4", "cortex-m7", "cortex-m33")


@dataclass(frozen=True)
class CoreCosts:
    """Instructions per MAC of each kernel kind (fast kernels), per element of Add, per pooled window element, per
    output element of other ops, and the fused-block overheads (module docstring)."""
    conv: float                # k x k, fewer than 8 input channels (first layers)
    conv_deep: float           # k x k, 8 or more
    pointwise: float
    pointwise_strided: float
    depthwise: float
    dense: float
    add: float
    pool: float
    other: float
    copy_per_byte: float
    fill_per_byte: float
    call: float                # per row-kernel call ...
    tail_per_pixel_mac: float  # ... and, when its row is not a multiple of 4 pixels, per MAC of one output pixel
    depthwise_rows: float      # per MAC more for a depthwise layer in a block
    least_scratch: float       # per MAC more for a convolution whose fast kernel got the least scratch ("small")


# bench/RESULTS.md at 46b1750 (module docstring). Per MAC: conv = MobileNetV2's 3-channel first layer (1.69; KWS's
# 1-channel 1.37, VWW's 2.61), conv_deep = ResNet-8's (1.04), pointwise = VWW's 1x1 layers (KWS 1.09, MobileNetV2
# 1.44), depthwise = MobileNetV2's planar layers (2.81; KWS 2.53, raster 3.61-3.68), dense = the FC autoencoder.
# (M0+: 7.49, 3.99, 4.67, 11.09, 3.90.)
# The fused-block terms are fitted to QEMU counts (module docstring). On the M0+ blocks cost little relative to
# their layers (bench/depth_first.py at 100dde2, one block from the input: KWS 1.021x, MobileNetV2 1.000x, VWW
# 0.990x, ResNet-8 0.991x): no tail or depthwise term, 400 per call fits KWS (est. 1.014x); at 353a306 the planner's
# plans measure KWS 1.021x (est. 1.014x), VWW 0.995x (1.004x), ResNet-8 0.992x (1.005x), so the figures stand;
# least_scratch is the M4's x 4 (not measured).
M4 = CoreCosts(conv=1.69, conv_deep=1.04, pointwise=1.17, pointwise_strided=1.60, depthwise=2.81, dense=1.07,
               add=11.3, pool=2.3, other=2.0, copy_per_byte=0.7, fill_per_byte=4.5, call=200.0,
               tail_per_pixel_mac=0.2, depthwise_rows=-0.2, least_scratch=0.18)
M0PLUS = CoreCosts(conv=7.49, conv_deep=3.99, pointwise=4.67, pointwise_strided=6.16, depthwise=11.09, dense=3.90,
                   add=51.2, pool=7.5, other=6.0, copy_per_byte=1.5, fill_per_byte=6.0, call=400.0,
                   tail_per_pixel_mac=0.0, depthwise_rows=0.0, least_scratch=0.72)
COSTS = {"cortex-m0plus": M0PLUS, "cortex-m4": M4, "cortex-m7": M4, "cortex-m33": M4}
REFERENCE_PER_MAC = 8.5


@dataclass
class BlockChoice:
    """One fused block of the chosen plan, as `tinyc report` shows it."""
    name: str                  # the FusedBlock node
    layers: list               # its layers' names, in order
    mode: str = "rows"         # row-streamed (the only mode so far; patches would recompute)
    rows_per_step: int = 1     # output rows computed per step
    line_bytes: int = 0        # its line buffers
    kernel_scratch_bytes: int = 0   # the largest fast-kernel scratch of one of its layers (the planner's)
    recompute: float = 1.0     # MACs computed / MACs of the layers (row streaming computes each row once)
    macs: int = 0


@dataclass
class FusionPlan:
    """What `plan_fusion` chose (Compiled.fusion): the blocks, the arena and estimated instructions before (layer
    by layer) and after, the budget, and why nothing was fused when nothing was."""
    blocks: list = field(default_factory=list)        # list[BlockChoice]
    arena_before: int = 0
    arena_after: int = 0
    est_instr_before: int = 0
    est_instr_after: int = 0
    budget: int | None = None
    core: str = "cortex-m4"
    reason: str = ""           # why no block was fused ("" when some were)
    peak_layer: str = ""       # the layer at the chosen plan's peak
    plans_tried: int = 0       # full memory plans the search made
    memory_plan: object = field(default=None, repr=False, compare=False)   # the chosen MemoryPlan (not reported)

    @property
    def instr_ratio(self) -> float:
        return self.est_instr_after / self.est_instr_before if self.est_instr_before else 1.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("memory_plan")
        d["instr_ratio"] = round(self.instr_ratio, 4)
        return d


# ---- cost model -------------------------------------------------------------------------------------------------

def layer_macs(g: Graph, node) -> int:
    """Multiply-accumulates of a convolution or dense layer (0 for other ops)."""
    if node.op == "Conv2D":
        y, w = g.tensors[node.outputs[0]].shape, g.tensors[node.inputs[1]].shape
        return int(np.prod(y)) * int(np.prod(w[1:]))
    if node.op in ("Dense", "MatMul"):
        y = g.tensors[node.outputs[0]]
        return y.size * int(g.tensors[node.inputs[0]].shape[-1])
    return 0


def _kind(g: Graph, node) -> str:
    if node.op in ("Dense", "MatMul"):
        return "dense"
    x, w = g.tensors[node.inputs[0]].shape, g.tensors[node.inputs[1]].shape
    groups = node.attrs.get("groups", 1)
    if groups > 1 and groups == x[-1]:
        return "depthwise"
    if w[1] == w[2] == 1:
        return "pointwise" if tuple(node.attrs.get("strides", (1, 1))) == (1, 1) else "pointwise_strided"
    return "conv" if x[-1] < 8 else "conv_deep"


def layer_instructions(g: Graph, node, costs: CoreCosts, kernels: str = "fast", scratch: str = "full") -> float:
    """Estimated instructions of one layer (module docstring); `scratch`: the scratch level the memory plan left
    its fast kernel (codegen/int8_fast.SCRATCH: "full", "small", "none": the plain-C kernel)."""
    from ..ops.fused_block import SCRATCH_ATTR
    scratch = node.attrs.get(SCRATCH_ATTR, scratch)
    if node.op == "FusedBlock":
        sub = node.attrs["graph"]
        return sum(layer_instructions(sub, n, costs, kernels, scratch) for n in sub.nodes)
    macs = layer_macs(g, node)
    if macs:
        plain = kernels == "reference" or scratch == "none" or g.tensors[node.outputs[0]].dtype.startswith("float")
        if plain:
            return macs * REFERENCE_PER_MAC
        kind = _kind(g, node)
        small = scratch == "small" and kind in ("conv", "conv_deep")
        return macs * (getattr(costs, kind) + (costs.least_scratch if small else 0))
    y = g.tensors[node.outputs[0]] if node.outputs else None
    elements = y.size if y is not None else 0
    if node.op in ("Add", "Sub", "Mul"):
        return elements * costs.add
    if node.op in ("AvgPool2D", "MaxPool2D"):
        kh, kw = node.attrs["kernel"]
        return elements * kh * kw * costs.pool
    if REGISTRY[node.op].memory == "alias":
        return 0.0
    return elements * costs.other


def block_overhead(g: Graph, sched, costs: CoreCosts, kernels: str = "fast") -> float:
    """Instructions a block of `g` adds to its layers' own (module docstring): copied and filled rows, row-kernel
    calls (the tail and depthwise terms for fast kernels only)."""

    def fast(node) -> bool:
        return kernels == "fast" and not g.tensors[node.outputs[0]].dtype.startswith("float")

    copied = filled = calls = tail_macs = depthwise_macs = 0
    for a in sched.actions:
        if a.kind == "load":
            copied += sched.buffers[a.tensor].row_bytes
        elif a.kind == "move":
            copied += a.rows * sched.buffers[a.tensor].row_bytes
        elif a.kind == "fill":
            filled += sched.buffers[a.tensor].row_bytes
        elif a.kind in ("compute", "accumulate"):
            calls += 1
            node = sched.layers[a.layer]
            y = g.tensors[node.outputs[0]].shape
            if a.kind == "compute" and y[2] % 4 and fast(node):
                tail_macs += layer_macs(g, node) // (y[1] * y[2])
    for node in sched.layers:
        if layer_macs(g, node) and _kind(g, node) == "depthwise" and fast(node):
            depthwise_macs += layer_macs(g, node)
    return (copied * costs.copy_per_byte + filled * costs.fill_per_byte + calls * costs.call
            + tail_macs * costs.tail_per_pixel_mac + depthwise_macs * costs.depthwise_rows)


# ---- the search -------------------------------------------------------------------------------------------------

@dataclass
class _Evaluated:
    ranges: tuple              # ((first, end) node indexes of g), sorted
    graph: Graph
    plan: object               # MemoryPlan
    instr: float

    @property
    def arena(self) -> int:
        return self.plan.arena_bytes


class _Search:
    def __init__(self, g: Graph, planner, full_planner, costs: CoreCosts, kernels: str):
        self.g, self.planner, self.full_planner, self.costs, self.kernels = g, planner, full_planner, costs, kernels
        self.index = {n.name: i for i, n in enumerate(g.nodes)}
        self.layer_cost = [self.node_instructions(g, n) for n in g.nodes]
        self.schedules = {}    # (first, end) -> RowSchedule or None (not a block)
        self.blocks = {}       # (first, end) -> do the layers form a block (row_schedule.block_nodes)
        self.windows = {}      # layer name -> its Windows, None when it cannot stream rows
        self.plans = 0
        self._lifetimes()
        self.runs = self._streamable_runs()

    def _lifetimes(self):
        """First producing and last reading step of every runtime tensor, in graph order (-1: a model input;
        len(nodes): read after the last step)."""
        g = self.g
        self.made, self.last = {t: -1 for t in g.inputs}, {}
        for i, n in enumerate(g.nodes):
            for t in n.outputs:
                self.made[t] = i
            for t in n.inputs:
                if not g.tensors[t].is_const:
                    self.last[t] = i
        for t in g.live_out():
            self.last[t] = len(g.nodes)

    def _streamable_runs(self) -> list:
        runs, start = [], None
        for i, n in enumerate(self.g.nodes + [None]):
            ok = n is not None and self._streams(n)
            if ok and start is None:
                start = i
            elif not ok and start is not None:
                if i - start >= 2:
                    runs.append((start, i))
                start = None
        return runs

    def _streams(self, node) -> bool:
        if node.name not in self.windows:
            try:
                self.windows[node.name] = windows(self.g, node)
            except TinycError:
                self.windows[node.name] = None
        return self.windows[node.name] is not None

    def is_block(self, r) -> bool:
        """Do layers r form a block (one output, streamable layers)? Cheap: no row schedule."""
        if r not in self.blocks:
            try:
                block_nodes(self.g, [n.name for n in self.g.nodes[r[0]:r[1]]])
                self.blocks[r] = all(self._streams(n) for n in self.g.nodes[r[0]:r[1]])
            except TinycError:
                self.blocks[r] = False
        return self.blocks[r]

    def line_guess(self, r) -> int:
        """Line-buffer bytes before the row schedule is simulated: each tensor the block reads, the most rows one
        window of it spans (the simulation may need a row more or fewer)."""
        g, rows = self.g, {}
        for n in g.nodes[r[0]:r[1]]:
            for t, w in zip(n.inputs, self.windows[n.name]):
                if w is not None:       # (a running pool takes its input row by row)
                    rows[t] = max(rows.get(t, 0), 1 if getattr(w, "running", False) else w.span)
        return sum(align(k * g.tensors[t].nbytes // g.tensors[t].shape[1]) for t, k in rows.items())

    def schedule(self, r):
        if r not in self.schedules:
            try:
                self.schedules[r] = row_schedule(self.g, [n.name for n in self.g.nodes[r[0]:r[1]]])
            except TinycError:
                self.schedules[r] = None
        return self.schedules[r]

    def block_estimate(self, r) -> int:
        """Bytes live while the block runs (module docstring): crossing tensors, dying inputs, the output less
        what may overlap its first input, its line buffers."""
        g, (a, b) = self.g, r
        sched = self.schedules.get(r)
        total = sched.line_bytes if sched is not None else self.line_guess(r)
        output = g.nodes[b - 1].outputs[0]
        out = align(g.tensors[output].nbytes)
        total += out
        for t, made in self.made.items():
            if made < a and self.last.get(t, -1) >= a:
                total += align(g.tensors[t].nbytes)
        first = next((t for n in g.nodes[a:b] for t in n.inputs if self.made.get(t, b) < a), None)
        if first is not None and self.last.get(first, 0) < b:
            total -= min(out, align(g.tensors[first].nbytes))
        return total

    def instructions(self, ranges) -> float:
        """Estimated before planning (every fast kernel with its full scratch)."""
        return sum(self.layer_cost) + sum(self.overhead(r) for r in ranges)

    def overhead(self, r) -> float:
        return block_overhead(self.g, self.schedule(r), self.costs, self.kernels)

    def planned_instructions(self, plan) -> float:
        """Estimated with the scratch the memory plan left each fast kernel."""
        return sum(self.node_instructions(plan.graph, n) for n in plan.graph.nodes)

    def node_instructions(self, g: Graph, node) -> float:
        """A layer's estimate; a fused block's: its layers' and its overhead."""
        own = layer_instructions(g, node, self.costs, self.kernels)
        if node.op != "FusedBlock":
            return own
        from ..ops.fused_block import schedule_of
        return own + block_overhead(node.attrs["graph"], schedule_of(node), self.costs, self.kernels)

    def estimated_peak(self, ranges, live: dict) -> int:
        covered = {i for a, b in ranges for i in range(a, b)}
        outside = [v for name, v in live.items() if self.index.get(name) not in covered]
        return max(outside + [self.block_estimate(r) for r in ranges])

    def fused(self, ranges) -> Graph:
        h = self.g
        for a, b in ranges:
            h = fuse_block(h, [n.name for n in self.g.nodes[a:b]])
        return h

    def evaluate(self, ranges) -> list:
        """The plans of the block set: the planner's, and when it left some fast kernel of a block less scratch,
        the full-scratch planner's too (a larger arena, faster kernels)."""
        from ..ops.fused_block import SCRATCH_ATTR
        h = self.fused(ranges)
        self.plans += 1
        plan = self.planner(h)
        found = [_Evaluated(ranges, h, plan, self.planned_instructions(plan))]
        reduced = any(n.op == "FusedBlock" and n.attrs.get(SCRATCH_ATTR) for n in plan.graph.nodes)
        if reduced and self.full_planner is not None:
            h = self.fused(ranges)          # (the planner marked the nodes of the first copy)
            self.plans += 1
            plan = self.full_planner(h)
            found.append(_Evaluated(ranges, h, plan, self.planned_instructions(plan)))
        return found

    def peak_layers(self, ev: _Evaluated) -> list:
        """Indexes (in g) of the layers at the plan's peak step: the layer, or a fused block's layers."""
        node = ev.plan.graph.nodes[ev.plan.peak_step]
        names = [n.name for n in node.attrs["graph"].nodes] if node.op == "FusedBlock" else [node.name]
        return [self.index[n] for n in names if n in self.index]

    def moves(self, ev: _Evaluated) -> set:
        """Block sets that change the blocks covering the peak: each candidate containing a peak layer replaces
        the blocks it overlaps, keeping their parts outside it that still form blocks."""
        found = set()
        for i in self.peak_layers(ev):
            run = next((r for r in self.runs if r[0] <= i < r[1]), None)
            if run is None:
                continue
            for a in range(max(run[0], i - MAX_BLOCK_LAYERS + 1), i + 1):
                for b in range(max(i + 1, a + 2), min(run[1], a + MAX_BLOCK_LAYERS) + 1):
                    if not self.is_block((a, b)):
                        continue
                    kept = []
                    for c, d in ev.ranges:
                        if d <= a or c >= b:
                            kept.append((c, d))
                            continue
                        for part in ((c, a), (b, d)):
                            if part[1] - part[0] >= 2 and self.is_block(part):
                                kept.append(part)
                    found.add(tuple(sorted(kept + [(a, b)])))
        found.discard(ev.ranges)
        return found


def _live_by_layer(plan) -> dict:
    return {n.name: plan.live[s] for s, n in enumerate(plan.graph.nodes)}


def _where(plan) -> str:
    node = plan.graph.nodes[plan.peak_step]
    if node.op == "FusedBlock":
        layers = node.attrs["graph"].nodes
        return f"'{layers[0].name}' (fused block of {len(layers)} layers, to '{layers[-1].name}')"
    return f"'{node.name}' ({node.op})"


def check_budget(budget: int | None) -> None:
    if budget is not None and budget <= 0:
        raise TinycError(f"--arena-budget {budget}: give the bytes the arena may use, a positive number")


def plan_fusion(g: Graph, budget: int | None = None, core: str = "cortex-m4", max_ratio: float = 1.15,
                planner=None, kernels: str = "fast", base=None, full_planner=None,
                refuse: bool = True) -> tuple[Graph, FusionPlan]:
    """(graph with the chosen blocks fused, FusionPlan) for the optimized graph `g` (module docstring).
    `planner(graph) -> MemoryPlan` plans the arena as the compiler will (default: schedule without fast-kernel
    scratch); the chosen plan is `FusionPlan.memory_plan`. `kernels`: "fast" or "reference" (the cost figures).
    Blocks already in `g` (e.g. the streamed input's, schedule/stream_input.py) stay as they are. `base`: the
    layer-by-layer plan of `g` when the caller has it (`planner(g)`). `full_planner(graph)`: a plan with every
    fast kernel's full scratch (codegen/scratch_fit.schedule_full_scratch), tried too where `planner` left a
    block's kernels less. `refuse`: a budget no plan meets is a TinycError; else (a board's SRAM, whose own check
    then says the model does not fit it) the smallest plan found."""
    from . import schedule
    if core not in COSTS:
        raise TinycError(f"fusion: unknown core '{core}'; use one of {', '.join(CORES)}")
    check_budget(budget)
    planner = planner or schedule
    search = _Search(g, planner, full_planner, COSTS[core], kernels)
    base = search.evaluate(())[0] if base is None else _Evaluated((), g, base, search.planned_instructions(base))
    fusion = FusionPlan(arena_before=base.arena, est_instr_before=round(base.instr), budget=budget, core=core)
    chosen = base
    if budget is not None and base.arena <= budget:
        fusion.reason = f"the layer-by-layer plan ({base.arena:,} B) fits the budget"
    else:
        chosen = _greedy(search, base, budget, max_ratio) if search.runs else base
        if budget is not None and chosen.arena > budget and refuse:
            raise TinycError(f"arena budget {budget:,} B: no plan fits it; the smallest arena tinyc finds is "
                             f"{chosen.arena:,} B, its peak at layer {_where(chosen.plan)}; raise the budget or "
                             "use a smaller model")
        if not search.runs:
            fusion.reason = "no two consecutive layers can stream rows"
        elif chosen.arena >= base.arena:      # (with a budget: it fits, so it is smaller)
            fusion.reason = f"no fused plan lowers the arena ({base.arena:,} B) within {max_ratio:g}x the instructions"
            chosen = base
    fusion.arena_after, fusion.est_instr_after = chosen.arena, round(chosen.instr)
    fusion.memory_plan, fusion.plans_tried = chosen.plan, search.plans
    fusion.peak_layer = chosen.plan.graph.nodes[chosen.plan.peak_step].name if chosen.plan.graph.nodes else ""
    fusion.blocks = [_block_choice(search, chosen, r) for r in chosen.ranges]
    return chosen.graph, fusion


def _better(a: _Evaluated, b: _Evaluated | None, budget) -> bool:
    """Is a better than b: within the budget, fewer instructions; else a smaller arena."""
    if b is None:
        return True
    if budget is not None:
        fits_a, fits_b = a.arena <= budget, b.arena <= budget
        if fits_a != fits_b:
            return fits_a
        if fits_a:
            return (a.instr, a.arena) < (b.instr, b.arena)
        return (a.arena, a.instr) < (b.arena, b.instr)
    return (a.arena, a.instr) < (b.arena, b.instr)


def _greedy(search: _Search, base: _Evaluated, budget, max_ratio) -> _Evaluated:
    cap = None if budget is not None else max_ratio * base.instr
    live = _live_by_layer(base.plan)
    current, seen = base, {()}
    while search.plans < MAX_PLANS and (budget is None or current.arena > budget):
        quick = sorted((_quick_key(search, ranges, live, budget), ranges) for ranges in search.moves(current)
                       if ranges not in seen)
        ranked = []
        for _, ranges in quick:
            if len(ranked) == SIMULATED_PER_ROUND:
                break
            if any(search.schedule(r) is None for r in ranges):
                continue
            instr = search.instructions(ranges)
            if cap is not None and instr > cap:
                continue
            peak = search.estimated_peak(ranges, live)
            key = (False, instr, peak) if budget is not None and peak <= budget else (True, peak, instr)
            ranked.append((key, ranges))
        ranked.sort()
        best = None
        acceptable = 0
        for _, ranges in ranked:
            if acceptable == MOVES_PER_ROUND or search.plans >= MAX_PLANS:
                break
            seen.add(ranges)
            for ev in search.evaluate(ranges):
                if cap is not None and ev.instr > cap:      # (the plan left some kernel less scratch)
                    continue
                acceptable += 1
                if _better(ev, best, budget):
                    best = ev
        if best is None or best.arena >= current.arena:
            break
        current = best
    return current


def _quick_key(search: _Search, ranges, live: dict, budget) -> tuple:
    """Before simulating: within the budget, the fewest row-kernel calls first (each layer's output height:
    the calls a block adds), else the smallest estimated peak."""
    peak = search.estimated_peak(ranges, live)
    if budget is not None and peak <= budget:
        g = search.g
        return (False, sum(g.tensors[n.outputs[0]].shape[1] for a, b in ranges for n in g.nodes[a:b]), peak)
    return (True, peak, 0)


def _block_choice(search: _Search, chosen: _Evaluated, r) -> BlockChoice:
    sched = search.schedule(r)
    layers = [n.name for n in search.g.nodes[r[0]:r[1]]]
    node = next(n for n in chosen.plan.graph.nodes if n.op == "FusedBlock"
                and [m.name for m in n.attrs["graph"].nodes] == layers)
    step = chosen.plan.graph.nodes.index(node)
    work = chosen.plan.work.get(step)
    scratch = max(0, (work.nbytes if work is not None else 0) - align(sched.line_bytes))
    return BlockChoice(node.name, layers, line_bytes=sched.line_bytes, kernel_scratch_bytes=scratch,
                       macs=sum(layer_macs(search.g, n) for n in search.g.nodes[r[0]:r[1]]))
