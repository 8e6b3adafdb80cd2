"""Where to cut the network into fused blocks (issue 21) and in which mode: the planner that chooses, never worse.

A fused block (schedule/row_schedule.py, schedule/fuse_block.py) runs consecutive layers row by row so their
intermediate tensors are never whole; in patch mode (schedule/column_strips.py) it does so in column strips, one
after the other, with line buffers a strip wide. `plan_fusion` chooses which blocks, if any, and the mode of each:

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
input, in row mode) + its line buffers.

**Patch mode.** Then, unless the row-mode plan already fits the budget, the same greedy continues from it with block
sets that hold a block in STRIP_COUNTS column strips (a block is a (first, end, strips) triple; strips 1: row mode):
the candidates covering the peak, and each block of the plan in another mode (a block away from the peak step can
still lower the arena: MobileNetV2's second block in strips packs the arena 288 B tighter, its peak still at the
first, though below MIN_STRIP_GAIN); only a candidate that patch mode accepts by the cheap checks (no running pool,
enough output columns, strip columns that settle) and whose estimate is below the same block's in row mode, and only
sets whose estimated peak is not above the current plan's (both with guessed line buffers; the layers outside blocks
at the current plan's live bytes); at most STRIP_PLANS more full plans. A block in strips is estimated with the
widest strip's line buffers and no overlap of its output over its inputs (each strip reads them again). So a plan
without strips is always the row-mode search's, and a plan with strips is chosen only where its arena is smaller:
without a budget, by at least MIN_STRIP_GAIN of the row-mode plan's (schedule/column_strips.py).

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
0.99x). A block in patch mode costs each strip's layers on the strip's columns (the columns strips share are
computed by each: the recompute) and each strip's copies, fills, calls, tail and depthwise terms of its own row
schedule (`strips_instructions`; not yet fitted to QEMU counts of blocks in strips). The fused-block terms and
`least_scratch` are fitted to QEMU instruction counts on the M4 at 353a306 (bench/depth_first.py, `run_emulated`,
whole models; estimated vs measured instructions / layer by layer): KWS layers 0-9 with the running global pool (the
planner's choice) 1.041 vs 1.050 (3,416,200 -> 3,585,340), MobileNetV2-0.35@144 layers 0-2 and 3-12 (the planner's)
1.005 vs 0.998 (42,915,360 -> 42,845,320), layers 0-5 1.003 vs 0.995 (-> 42,697,400), IC ResNet-8 layers 0-7 (the
planner's) 1.009 vs 0.988 (13,334,480 -> 13,181,080), layers 0-3 1.006 vs 0.994 (-> 13,260,800), layers 0-12 at
"small" scratch 1.171 vs 1.175 (-> 15,665,040), VWW conv_dw_1 .. conv_dw_2 (the planner's) 1.003 vs 1.010
(10,994,240 -> 11,103,840), layers 0-3 1.006 vs 0.969 (-> 10,649,800: its first convolution costs 1,299,240 whole
and 937,080 as rows, which the per-kind figure, the same for both, cannot tell apart). `copy_per_byte` and
`fill_per_byte` are solved from the --rows "row copies" of the ResNet-8 and VWW blocks (61,240 and 75,280
instructions), `tail_per_pixel_mac` from KWS's pointwise rows (1.043x their layers: 24.2K per layer over 25 rows of
5 pixels).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import TinycError
from ..ir import Graph
from ..ops import REGISTRY
from .buffers import align
from .column_strips import MAX_STRIPS, MIN_STRIP_GAIN, block_strips, column_ranges, strip_bounds
from .fuse_block import fuse_block, inline_blocks
from .row_schedule import block_nodes, row_schedule, windows

MAX_BLOCK_LAYERS = 16      # longest candidate block (the candidates per peak layer grow as its square)
MOVES_PER_ROUND = 3        # candidate plans planned in full per greedy round
SIMULATED_PER_ROUND = 12   # candidates whose row schedules are simulated per round (the best by the quick estimate)
MAX_PLANS = 18             # full plans per search at most, the layer-by-layer one included
STRIP_COUNTS = (2, 3, 4)   # patch mode: the column strips a block may be cut into
STRIP_PLANS = 6            # full plans the patch-mode search may make after the row-mode search

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
    mode: str = "rows"         # "rows": row-streamed, each row once; "strips": patch mode, column strips
    rows_per_step: int = 1     # output rows computed per step
    line_bytes: int = 0        # its line buffers (in strips: the widest strip's, which every strip reuses)
    kernel_scratch_bytes: int = 0   # the largest fast-kernel scratch of one of its layers (the planner's)
    recompute: float = 1.0     # MACs computed / MACs of the layers (rows: 1; strips recompute shared columns)
    macs: int = 0              # MACs of its layers (computed once each)
    strips: int = 1            # column strips (1 in row mode)


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
        return sum(layer_instructions(sub, n, costs, kernels, scratch) for sub in computed_graphs(node)
                   for n in sub.nodes)
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


def computed_graphs(node) -> list:
    """The graphs whose layers a FusedBlock computes: its layers' graph, or in patch mode each strip's graph (the
    layers on the strip's columns: the columns strips share are computed by each)."""
    if node.attrs.get("strips", 1) <= 1:
        return [node.attrs["graph"]]
    from ..ops.fused_block import strips_of
    return [strip.graph for strip in strips_of(node)]


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
    ranges: tuple              # ((first, end, strips)): node indexes of g, column strips (1: row mode), sorted
    graph: Graph
    plan: object               # MemoryPlan
    instr: float

    @property
    def arena(self) -> int:
        return self.plan.arena_bytes


def _in_strips(ranges) -> bool:
    return any(r[2] > 1 for r in ranges)


def strips_instructions(strips, costs: CoreCosts, kernels: str = "fast") -> float:
    """Estimated instructions of a block in patch mode: each strip's layers on its columns (the columns strips
    share are computed by each) and its copies, fills and calls (`block_overhead` of its row schedule)."""
    return sum(sum(layer_instructions(s.graph, n, costs, kernels) for n in s.graph.nodes)
               + block_overhead(s.graph, s.sched, costs, kernels) for s in strips)


def recompute_factor(strips, g: Graph, nodes) -> float:
    """MACs the strips compute / MACs of the block's layers `nodes` of `g` (1.0 for a block without MACs)."""
    macs = sum(layer_macs(g, n) for n in nodes)
    return sum(layer_macs(s.graph, n) for s in strips for n in s.graph.nodes) / macs if macs else 1.0


class _Search:
    def __init__(self, g: Graph, planner, full_planner, costs: CoreCosts, kernels: str):
        self.g, self.planner, self.full_planner, self.costs, self.kernels = g, planner, full_planner, costs, kernels
        self.index = {n.name: i for i, n in enumerate(g.nodes)}
        self.layer_cost = [self.node_instructions(g, n) for n in g.nodes]
        self.schedules = {}    # (first, end, strips) -> RowSchedule (1 strip) or list of Strips; None: cannot run so
        self.blocks = {}       # (first, end) -> do the layers form a block (row_schedule.block_nodes)
        self.guesses = {}      # (first, end, strips) -> line bytes before simulating; None: cannot run in strips
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

    def is_block(self, span) -> bool:
        """Do layers span = (first, end) form a block (one output, streamable layers)? Cheap: no row schedule."""
        if span not in self.blocks:
            try:
                block_nodes(self.g, [n.name for n in self.g.nodes[span[0]:span[1]]])
                self.blocks[span] = all(self._streams(n) for n in self.g.nodes[span[0]:span[1]])
            except TinycError:
                self.blocks[span] = False
        return self.blocks[span]

    def can_strip(self, r) -> bool:
        """Can block r = (first, end, strips >= 2) run in patch mode, by the cheap checks (no running pool, enough
        output columns, strip columns that settle: `line_guess`)? The simulation may still refuse it."""
        a, b, count = r
        nodes = self.g.nodes[a:b]
        if count > min(MAX_STRIPS, self.g.tensors[nodes[-1].outputs[0]].shape[2]):
            return False
        if any(getattr(w, "running", False) for n in nodes for w in self.windows[n.name]):
            return False
        return self.line_guess(r) is not None

    def line_guess(self, r) -> int | None:
        """Line-buffer bytes before the row schedule is simulated: each tensor the block reads, the most rows one
        window of it spans (the simulation may need a row more or fewer), in patch mode as wide as its columns in
        the widest strip (None: the strip columns do not settle, column_strips.column_ranges)."""
        if r not in self.guesses:
            self.guesses[r] = self._line_guess(r)
        return self.guesses[r]

    def _line_guess(self, r) -> int | None:
        g, (a, b, count) = self.g, r
        nodes, rows = g.nodes[a:b], {}
        for n in nodes:
            for t, w in zip(n.inputs, self.windows[n.name]):
                if w is not None:       # (a running pool takes its input row by row)
                    rows[t] = max(rows.get(t, 0), 1 if getattr(w, "running", False) else w.span)
        if count == 1:
            return sum(align(k * g.tensors[t].nbytes // g.tensors[t].shape[1]) for t, k in rows.items())
        output = nodes[-1].outputs[0]
        widest = 0
        for cols in strip_bounds(g.tensors[output].shape[2], count):
            try:
                ranges = column_ranges(g, nodes, output, cols)
            except TinycError:
                return None
            widest = max(widest, sum(align(k * (ranges[t][1] - ranges[t][0]) * g.tensors[t].nbytes
                                           // (g.tensors[t].shape[1] * g.tensors[t].shape[2]))
                                     for t, k in rows.items()))
        return widest

    def schedule(self, r):
        """Block r's row schedule (row mode) or its list of Strips (patch mode); None when it cannot run so."""
        if r not in self.schedules:
            names = [n.name for n in self.g.nodes[r[0]:r[1]]]
            try:
                self.schedules[r] = row_schedule(self.g, names) if r[2] == 1 else block_strips(self.g, names, r[2])
            except TinycError:
                self.schedules[r] = None
        return self.schedules[r]

    def line_bytes(self, r) -> int:
        """Block r's line buffers: simulated when its schedule is known, else guessed."""
        sched = self.schedules.get(r)
        if sched is None:
            return self.line_guess(r)
        return sched.line_bytes if r[2] == 1 else max(s.sched.line_bytes for s in sched)

    def block_estimate(self, r, guessed: bool = False) -> int:
        """Bytes live while the block runs (module docstring): crossing tensors, dying inputs, the output less
        what may overlap its first input (in row mode: the strips read their inputs until the last one), its
        line buffers (`guessed`: guessed even where simulated)."""
        g, (a, b, count) = self.g, r
        total = self.line_guess(r) if guessed else self.line_bytes(r)
        output = g.nodes[b - 1].outputs[0]
        out = align(g.tensors[output].nbytes)
        total += out
        for t, made in self.made.items():
            if made < a and self.last.get(t, -1) >= a:
                total += align(g.tensors[t].nbytes)
        first = next((t for n in g.nodes[a:b] for t in n.inputs if self.made.get(t, b) < a), None)
        if count == 1 and first is not None and self.last.get(first, 0) < b:
            total -= min(out, align(g.tensors[first].nbytes))
        return total

    def instructions(self, ranges) -> float:
        """Estimated before planning (every fast kernel with its full scratch)."""
        return sum(self.layer_cost) + sum(self.overhead(r) for r in ranges)

    def overhead(self, r) -> float:
        """Instructions block r adds to its layers': in patch mode its strips' (with the recompute) less its
        layers'."""
        if r[2] == 1:
            return block_overhead(self.g, self.schedule(r), self.costs, self.kernels)
        return strips_instructions(self.schedule(r), self.costs, self.kernels) - sum(self.layer_cost[r[0]:r[1]])

    def planned_instructions(self, plan) -> float:
        """Estimated with the scratch the memory plan left each fast kernel."""
        return sum(self.node_instructions(plan.graph, n) for n in plan.graph.nodes)

    def node_instructions(self, g: Graph, node) -> float:
        """A layer's estimate; a fused block's: its layers' (each strip's in patch mode) and its overhead."""
        own = layer_instructions(g, node, self.costs, self.kernels)
        if node.op != "FusedBlock":
            return own
        from ..ops.fused_block import strips_of
        return own + sum(block_overhead(s.graph, s.sched, self.costs, self.kernels) for s in strips_of(node))

    def current_live(self, live: dict, ev: _Evaluated) -> dict:
        """`live` (bytes live at each layer of g, by name) with the live bytes of plan `ev` at its layers outside
        blocks."""
        now = {name: v for name, v in _live_by_layer(ev.plan).items() if name in self.index}
        return {**live, **now}

    def estimated_peak(self, ranges, live: dict, guessed: bool = False) -> int:
        covered = {i for a, b, _ in ranges for i in range(a, b)}
        outside = [v for name, v in live.items() if self.index.get(name) not in covered]
        return max(outside + [self.block_estimate(r, guessed) for r in ranges])

    def fused(self, ranges) -> Graph:
        h = self.g
        for a, b, count in ranges:
            h = fuse_block(h, [n.name for n in self.g.nodes[a:b]], strips=count)
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

    def moves(self, ev: _Evaluated, strip_counts=()) -> set:
        """Block sets that change the blocks covering the peak: each candidate containing a peak layer replaces
        the blocks it overlaps, keeping their parts outside it that still form blocks (in row mode). Each
        candidate in row mode, and in each of `strip_counts` strips where the cheap checks pass and its estimate
        is below its row mode's; with `strip_counts`, also each block of the plan in another number of strips."""
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
                    for c, d, count in ev.ranges:
                        if d <= a or c >= b:
                            kept.append((c, d, count))
                            continue
                        for part in ((c, a), (b, d)):
                            if part[1] - part[0] >= 2 and self.is_block(part):
                                kept.append(part + (1,))
                    modes = [1] + [count for count in strip_counts if self.worth_strips(a, b, count)]
                    for count in modes:
                        found.add(tuple(sorted(kept + [(a, b, count)])))
        for a, b, mode in ev.ranges:            # each block of the plan in another mode
            others = [r for r in ev.ranges if r != (a, b, mode)]
            for count in strip_counts:
                if count != mode and self.worth_strips(a, b, count):
                    found.add(tuple(sorted(others + [(a, b, count)])))
        found.discard(ev.ranges)
        return found

    def worth_strips(self, a, b, count) -> bool:
        """Is block (a, b) in `count` strips possible and estimated smaller than in row mode (line buffers
        guessed in both: the guess is not the simulation's)?"""
        r = (a, b, count)
        return self.can_strip(r) and self.block_estimate(r, True) < self.block_estimate((a, b, 1), True)


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
                refuse: bool = True, strip_counts: tuple = STRIP_COUNTS) -> tuple[Graph, FusionPlan]:
    """(graph with the chosen blocks fused, FusionPlan) for the optimized graph `g` (module docstring).
    `planner(graph) -> MemoryPlan` plans the arena as the compiler will (default: schedule without fast-kernel
    scratch); the chosen plan is `FusionPlan.memory_plan`. `kernels`: "fast" or "reference" (the cost figures).
    Blocks already in `g` (e.g. the streamed input's, schedule/stream_input.py) stay as they are. `base`: the
    layer-by-layer plan of `g` when the caller has it (`planner(g)`). `full_planner(graph)`: a plan with every
    fast kernel's full scratch (codegen/scratch_fit.schedule_full_scratch), tried too where `planner` left a
    block's kernels less. `refuse`: a budget no plan meets is a TinycError; else (a board's SRAM, whose own check
    then says the model does not fit it) the smallest plan found. `strip_counts`: the column strips a block may
    run in (patch mode; () for row mode only)."""
    from . import schedule
    if core not in COSTS:
        raise TinycError(f"fusion: unknown core '{core}'; use one of {', '.join(CORES)}")
    check_budget(budget)
    planner = planner or schedule
    search = _Search(g, planner, full_planner, COSTS[core], kernels)
    base = search.evaluate(())[0] if base is None else _Evaluated((), g, base, search.planned_instructions(base))
    before = base.instr
    if any(n.op == "FusedBlock" for n in g.nodes):     # (the streamed input's block): layer by layer is without it
        h = inline_blocks(g)
        before = sum(layer_instructions(h, n, search.costs, kernels) for n in h.nodes)
    fusion = FusionPlan(arena_before=base.arena, est_instr_before=round(before), budget=budget, core=core)
    chosen = base
    if budget is not None and base.arena <= budget:
        fusion.reason = f"the layer-by-layer plan ({base.arena:,} B) fits the budget"
    else:
        chosen = _greedy(search, base, budget, max_ratio, tuple(strip_counts)) if search.runs else base
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


def _greedy(search: _Search, base: _Evaluated, budget, max_ratio, strip_counts) -> _Evaluated:
    """The row-mode search, then from its plan the patch-mode search (each only to a smaller arena): a plan
    without strips is the row-mode search's."""
    cap = None if budget is not None else max_ratio * base.instr
    live, seen = _live_by_layer(base.plan), {()}
    rows = _descend(search, base, budget, cap, live, seen, (), MAX_PLANS)
    if not strip_counts or budget is not None and rows.arena <= budget:
        return rows
    strips = _descend(search, rows, budget, cap, live, seen, strip_counts, search.plans + STRIP_PLANS)
    if budget is None and strips.arena > (1 - MIN_STRIP_GAIN) * rows.arena:
        return rows             # (without a budget: the recompute is not worth a few bytes)
    return strips


def _descend(search: _Search, current: _Evaluated, budget, cap, live: dict, seen: set, strip_counts,
             max_plans: int) -> _Evaluated:
    """Greedy rounds from `current` (module docstring) until the arena stops falling or `max_plans` full plans.
    With `strip_counts`: only block sets with a block in strips, estimated below the current set."""
    base_live = live
    while search.plans < max_plans and (budget is None or current.arena > budget):
        moves = search.moves(current, strip_counts)
        if strip_counts:
            live = search.current_live(base_live, current)
            ceiling = search.estimated_peak(current.ranges, live, True)      # (guessed as the moves are)
            moves = {m for m in moves if _in_strips(m) and search.estimated_peak(m, live, True) <= ceiling}
        quick = sorted((_quick_key(search, ranges, live, budget), ranges) for ranges in moves if ranges not in seen)
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
            if acceptable == MOVES_PER_ROUND or search.plans >= max_plans:
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
    """Before simulating: within the budget, the fewest row-kernel calls first (each layer's output height, per
    strip: the calls a block adds), else the smallest estimated peak."""
    peak = search.estimated_peak(ranges, live)
    if budget is not None and peak <= budget:
        g = search.g
        return (False, sum(count * g.tensors[n.outputs[0]].shape[1] for a, b, count in ranges
                           for n in g.nodes[a:b]), peak)
    return (True, peak, 0)


def _block_choice(search: _Search, chosen: _Evaluated, r) -> BlockChoice:
    a, b, count = r
    layers = [n.name for n in search.g.nodes[a:b]]
    node = next(n for n in chosen.plan.graph.nodes if n.op == "FusedBlock"
                and [m.name for m in n.attrs["graph"].nodes] == layers)
    step = chosen.plan.graph.nodes.index(node)
    work = chosen.plan.work.get(step)
    line = search.line_bytes(r)
    scratch = max(0, (work.nbytes if work is not None else 0) - align(line))
    recompute = 1.0 if count == 1 else recompute_factor(search.schedule(r), search.g, search.g.nodes[a:b])
    return BlockChoice(node.name, layers, mode="rows" if count == 1 else "strips", line_bytes=line,
                       kernel_scratch_bytes=scratch, recompute=recompute,
                       macs=sum(layer_macs(search.g, n) for n in search.g.nodes[a:b]), strips=count)
