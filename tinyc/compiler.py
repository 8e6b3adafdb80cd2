"""The pipeline as one library call: model file -> IR -> passes -> schedule -> C files on disk."""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .codegen import cmake
from .codegen.scratch_fit import schedule_full_scratch, schedule_with_scratch
from .codegen.emit import KERNEL_SETS, Library, generate, weights_are_finite
from .codegen.weight_storage import QUANTIZED_WEIGHTS, weight_form
from .errors import TinycError
from .frontends import load_model
from .frontends.rounded_weights import rounded_model_file
from .ir import Graph
from .names import c_identifier
from .passes import optimize
from .passes.dequantize_hybrid import apply_hybrid_choice
from .quant.ptq import quantize_graph
from .quant.ptq_int16 import quantize_graph_int16
from .schedule import MemoryPlan, schedule
from .schedule.depth_first_search import CORES, FusionPlan, check_budget, plan_fusion
from .schedule.column_strips import MIN_STRIP_GAIN
from .schedule.stream_input import check_passes, stream_input

MARKER = ".tinyc"   # written into every output directory tinyc owns
QUANTIZERS = {"int8": quantize_graph, "int16x8": quantize_graph_int16}    # --quantize: tinyc's own PTQ schemes


@dataclass
class Compiled:
    source: str
    graph: Graph          # after passes, before scheduling
    plan: MemoryPlan
    library: Library
    quantized: Graph | None = None     # --quantize int8: the int8 graph tinyc made (its .tflite is the oracle)
    float_graph: Graph | None = None   # ... and the optimized float graph it was calibrated on
    state_pairs: dict | None = None    # ONNX streaming state pairs {graph input: graph output} it was compiled with
    hybrid: str = "tflite"             # --hybrid: hybrid layers in TFLite's arithmetic, or "float" (dequantized)
    weights: str | None = None         # --weights: the form its weights are stored in (float16: the model's rounded)
    fusion: FusionPlan | None = None   # --fusion auto: the fused blocks chosen (schedule/depth_first_search.py)


def default_name(path: str) -> str:
    return c_identifier(Path(path).stem)


_SECTION = re.compile(r"[A-Za-z_.][A-Za-z0-9_.$]{0,63}")


def codegen_options(arena: str = "static", arena_section: str | None = None,
                    weights_section: str | None = None, kernels: str = "fast", arena_limit: int | None = None,
                    weights: str | None = None, stream_input: bool = False, stream_passes: int = 1) -> dict:
    """Checked options for `generate`: who owns the arena, linker sections for the arena and the weights, and
    the kernel set ("fast": optimized kernels where one applies; "reference": the plain-C twins only).
    `weights`: the form the weights are stored in (--weights, codegen/weight_storage.py; None: as the model has
    them).
    `arena_limit`: bytes the target has for the arena; the fast kernels' scratch is reduced to stay within it
    (codegen/scratch_fit.py).
    `stream_input`: the model input is not in the arena; the first layers pull its rows from the user's callback
    `<name>_input_rows` (schedule/stream_input.py).
    `stream_passes`: with `stream_input`, how many times per inference the callback may serve the frame (>= 2:
    the first layers may run in that many column strips, each asking for rows 0 .. R - 1 again)."""
    if kernels not in KERNEL_SETS:
        raise TinycError(f"--kernels {kernels} is not supported; use {' or '.join(KERNEL_SETS)}")
    if arena not in ("static", "external"):
        raise TinycError(f"--arena {arena} is not supported; use static or external")
    for flag, value in (("--arena-section", arena_section), ("--weights-section", weights_section)):
        if value is not None and not _SECTION.fullmatch(value):
            raise TinycError(f"{flag} '{value}' is not a valid linker section name; use letters, digits, '_' and "
                             "'.', e.g. .dtcm_bss")
    if arena == "external" and arena_section:
        raise TinycError("--arena-section places tinyc's static arena; with --arena external the caller places it")
    weight_form(weights)
    check_passes(stream_passes)
    if stream_passes > 1 and not stream_input:
        raise TinycError(f"--stream-passes {stream_passes} says how often the streamed input's rows may be asked for; "
                         "add --stream-input (or leave --stream-passes out)")
    return dict(arena=arena, arena_section=arena_section, weights_section=weights_section, kernels=kernels,
                arena_limit=arena_limit, weights=weights, stream_input=bool(stream_input),
                stream_passes=int(stream_passes))


FUSION = ("auto", "none")     # --fusion


def fusion_options(fusion: str = "auto", arena_budget: int | None = None, core: str = "cortex-m4") -> dict:
    """Checked options for the fused blocks (schedule/depth_first_search.py), merged into `codegen_options`'s:
    "auto" runs layers row by row where that lowers the arena (within `arena_budget` bytes: the fastest plan that
    fits it; without one: the smallest arena within 1.15x the instructions), "none" plans layer by layer.
    `arena_budget`: bytes the arena may use (with "none": checked); `core`: whose instruction figures to use
    (the board's)."""
    if fusion not in FUSION:
        raise TinycError(f"--fusion {fusion} is not supported; use {' or '.join(FUSION)}")
    check_budget(arena_budget)
    if core not in CORES:
        raise TinycError(f"fusion: unknown core '{core}'; use one of {', '.join(CORES)}")
    return dict(fusion=fusion, arena_budget=arena_budget, core=core)


def compile_graph(g: Graph, name: str, source: str = "", options: dict | None = None) -> Compiled:
    weights_are_finite(g)
    g = optimize(g)
    options = dict(options or {})
    fast = options.get("kernels", "fast") == "fast"
    arena_limit = options.pop("arena_limit", None)
    fusion = fusion_options(**{k: options.pop(k) for k in ("fusion", "arena_budget", "core") if k in options})
    budget = fusion["arena_budget"]
    if budget is not None:      # the fast kernels' scratch stays within the budget too
        arena_limit = budget if arena_limit is None else min(arena_limit, budget)
    planner = (lambda h: schedule_with_scratch(h, arena_limit)) if fast else schedule
    passes = options.pop("stream_passes", 1)
    kernels = options.get("kernels", "fast")
    if options.pop("stream_input", False):
        g, plan, chosen = _streamed(g, planner, passes, fusion, arena_limit, kernels)
    else:
        g, plan, chosen = _fused(g, planner(g), planner, fusion, arena_limit, kernels)
    c = Compiled(source, g, plan, generate(plan, name, source or g.name, **options))
    c.fusion = chosen
    return c


def _streamed(g: Graph, planner, passes: int, fusion: dict, arena_limit: int | None, kernels: str):
    """(graph, plan, FusionPlan or None) with the model input streamed (schedule/stream_input.py) and the rest
    fused as `_fused` does. With several passes allowed, a streamed block in strips is kept only where the whole
    plan beats the one-pass plan by MIN_STRIP_GAIN of its arena (within the budget, when there is one, the one
    that fits, of both the one-pass plan): what follows the block is fused afterwards, so the block's own arena
    does not tell."""
    h, plan = stream_input(g, planner, passes)
    found = _fused(h, plan, planner, fusion, arena_limit, kernels)
    if passes == 1 or not any(n.op == "FusedBlock" and n.attrs.get("strips", 1) > 1 for n in h.nodes):
        return found
    try:
        once = _fused(*stream_input(g, planner, 1), planner, fusion, arena_limit, kernels)
    except TinycError:
        return found
    budget = fusion["arena_budget"]
    if budget is not None and once[1].arena_bytes <= budget:
        return once
    if budget is None and found[1].arena_bytes > (1 - MIN_STRIP_GAIN) * once[1].arena_bytes:
        return once
    return found


def _fused(g: Graph, plan: MemoryPlan, planner, fusion: dict, arena_limit: int | None, kernels: str):
    """(graph, plan, FusionPlan or None): with --fusion auto the blocks plan_fusion chooses within the budget
    (--arena-budget, else the board's); with none today's plan, which must fit --arena-budget."""
    budget = fusion["arena_budget"]
    if fusion["fusion"] == "auto":
        g, chosen = plan_fusion(g, budget if budget is not None else arena_limit, fusion["core"],
                                planner=planner, kernels=kernels, base=plan,
                                full_planner=schedule_full_scratch if kernels == "fast" else None,
                                refuse=budget is not None)    # a board's limit: the board check says it
        return g, chosen.memory_plan, chosen
    if budget is not None and plan.arena_bytes > budget:
        node = plan.graph.nodes[plan.peak_step]
        raise TinycError(f"--arena-budget {budget:,} B: the arena needs {plan.arena_bytes:,} B, its peak at layer "
                         f"'{node.name}' ({node.op}); --fusion auto runs early layers row by row to lower it")
    return g, plan, None


def compile_model(path: str, name: str | None = None, input_shapes=None, io_layout: str = "nchw",
                  quantize: str | None = None, calib=None, progress=None, options: dict | None = None,
                  state: dict | None = None, hybrid: str = "tflite") -> Compiled:
    """Load, optimize, schedule and generate. `quantize="int8"` quantizes a float model first, calibrated on
    `calib` (per input an array [N, ...], e.g. from `quant.calibrate.load_calibration`). `options`: from
    `codegen_options`. `state`: ONNX streaming state pairs {graph input: graph output} (`--state IN=OUT`)."""
    name = c_identifier(name) if name else default_name(path)
    made = quantizer_options(options, quantize)      # --weights int4: what tinyc's quantizer makes
    form = weight_form((options or {}).get("weights"))
    if form is not None and form.family == "float":      # the model with its weights rounded (float16)
        with tempfile.TemporaryDirectory(prefix="tinyc-weights-") as tmp:
            g = load_model(rounded_model_file(path, tmp)[0], input_shapes, io_layout, state=state)
    else:
        g = load_model(path, input_shapes, io_layout, state=state)
    if form is not None:
        check_weight_form(form, g, path, quantize)
    g = apply_hybrid_choice(g, hybrid, quantize)      # --hybrid float: the hybrid layers' weights dequantized
    if quantize is None:
        c = compile_graph(g, name, os.path.basename(path), options)
        c.state_pairs, c.weights = state, form.name if form is not None else None
        c.hybrid = hybrid
        return c
    if quantize not in QUANTIZERS:
        raise TinycError(f"--quantize {quantize} is not supported; use {' or '.join(QUANTIZERS)}")
    if any(t.dtype != "float32" for t in g.tensors.values() if not t.is_const):
        raise TinycError(f"'{path}' is already quantized; compile it without --quantize")
    empty = [g.tensors[n].source_name or n for n in g.inputs + g.outputs if g.tensors[n].size == 0]
    if empty:
        raise TinycError(f"--quantize {quantize}: '{empty[0]}' of '{path}' is zero-size; tinyc quantizes models "
                         "without zero-size inputs and outputs (compile this one in float32)")
    if calib is None:
        raise TinycError(f"--quantize {quantize} needs calibration data: --calib calib.npy (N samples of the input) "
                         "or --calib random")
    weights_are_finite(g)
    float_graph = optimize(g)
    q = QUANTIZERS[quantize](float_graph, calib, progress, **made)
    c = compile_graph(q, name, os.path.basename(path), options)
    c.quantized, c.float_graph = q, float_graph
    return c


def quantizer_options(options: dict | None, quantize: str | None) -> dict:
    """The quantizer's arguments a --weights choice asks for: int4 weights (weight_storage.QUANTIZED_WEIGHTS),
    which only tinyc's int8 quantizer makes (an int4 .tflite compiles as it is, no --weights needed)."""
    weights = (options or {}).get("weights")
    if weights not in QUANTIZED_WEIGHTS:
        return {}
    if quantize != "int8":
        raise TinycError(f"--weights {weights} makes tinyc's quantizer give conv/depthwise/dense {weights} weights: "
                         f"use it with --quantize int8 on a float model (an {weights} .tflite compiles without "
                         "--weights)")
    return dict(weights=weights)


def check_weight_form(form, g: Graph, path: str, quantize: str | None) -> None:
    """--weights names a form for the weights of float models (float16) or of int8 ones; refuse the others."""
    kind = "int8" if quantize or any(t.quant is not None for t in g.tensors.values() if not t.is_const) else "float"
    if form.family == kind:
        return
    article = "an int8" if kind == "int8" else "a float"
    what = f"--quantize {quantize} makes an int8 model" if quantize else f"'{path}' is {article} model"
    raise TinycError(f"--weights {form.name} stores the weights of {form.family} models; {what}, whose weights are "
                     f"{kind} already: compile it without --weights {form.name}")


def write_library(lib: Library, out_dir: str, force: bool = False) -> list:
    """Write the files into `out_dir` (created if needed). Refuses a non-empty directory tinyc did not make,
    unless `force`. A CMakeLists.txt tinyc wrote there for other models keeps their targets (codegen/cmake.py)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TinycError(f"output path '{out_dir}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise TinycError(f"output directory '{out_dir}' is not empty and was not made by tinyc; "
                         "choose another -o or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("generated by tinyc\n")
    written = []
    for fname, text in sorted(lib.files.items()):
        if os.path.basename(fname) != fname:
            raise TinycError(f"internal: refusing to write '{fname}' outside the output directory")
        if fname == cmake.FILE and (out / fname).is_file():   # other models compiled into this directory stay
            text = cmake.merge((out / fname).read_text(errors="replace"), text,
                               lambda other: other == lib.prefix or (out / f"{other}.c").is_file())
        (out / fname).write_text(text)
        written.append(str(out / fname))
    return written
