"""Render a scheduled graph as a C library: `<name>.h`, `<name>.c`, the shared helper headers and a
`CMakeLists.txt` that makes it a CMake target (codegen/cmake.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import jinja2
import numpy as np

from .. import activations
from ..errors import TinycError
from ..names import comment_text
from ..resources import resource_dir
from ..schedule import MemoryPlan, is_view
from ..schedule.overlap import InPlace
from ..schedule.stream_input import requested_rows, stream_passes, streamed_inputs
from ..quant.params import scale_of, zero_point_of
from ..ops import REGISTRY
from ..ops.hybrid import HYBRID_KERNELS
from .hybrid_fast import HYBRID_FAST
from . import fused_block
from ..ops.opdef import integer_range
from . import cmake
from .literals import C_STORAGE, c_array_body, c_float, c_type
from .weight_storage import WeightArray, weight_form

KERNEL_SETS = ("fast", "reference")
GUARDS = ("TINYC_DSP", "!TINYC_DSP")    # the table guards: read only on DSP cores / only elsewhere

@dataclass
class KernelContext:
    node: object
    plan: MemoryPlan
    exprs: list                       # C expression of each input inside the layer function
    tables: object = None             # callback(values, dtype, label, guard) -> C name of a derived constant array
    in_place: object = None           # schedule.overlap.InPlace when the output overwrites an input
    scratch: str | None = None        # C expression of the layer's scratch buffer (in-place depthwise)
    work: str | None = None           # C expression of the layer's kernel scratch (plan.work): the op's own
                                      # (OpDef.work) first, then the fast kernel's (e.g. im2col)
    params: object = None             # int8: what the op's int8_prepare computed, read by both of its rules
    weights: object = None            # callback(tensor name) -> WeightArray of a constant stored narrower (--weights)

    def tensor(self, i):
        return self.plan.graph.tensors[self.node.inputs[i]]

    def in_shape(self, i):
        return self.tensor(i).shape

    def in_size(self, i):
        return self.tensor(i).size

    @property
    def out(self):
        """The output (output 0 of a node with several, see `outs`)."""
        return self.plan.graph.tensors[self.node.outputs[0]]

    @property
    def outs(self):
        """Every output tensor, in order: the kernel writes output j through `y` (j = 0), `y1`, `y2`, ..."""
        return [self.plan.graph.tensors[o] for o in self.node.outputs]

    @property
    def out_shape(self):
        return self.out.shape

    @property
    def out_size(self):
        return self.out.size

    def expr(self, i):
        return self.exprs[i]

    def has_input(self, i):
        return len(self.node.inputs) > i

    def weight(self, i) -> WeightArray:
        """Input i read element by element through `.load(e)` (codegen/weight_storage.py): a constant that
        --weights stores narrower (e.g. float16 bits), else the array as `expr(i)` gives it."""
        stored = self.weights(self.node.inputs[i]) if self.weights is not None and self.tensor(i).is_const else None
        return stored or WeightArray(self.expr(i), c_type(self.tensor(i).dtype))

    def table(self, values, dtype: str, label: str, guard: str | None = None) -> str:
        """A constant array derived at compile time (e.g. per-channel multipliers); its C name. `guard`: a
        preprocessor condition (e.g. "TINYC_DSP") when only one code path reads it, so other builds neither
        compile nor store it."""
        return self.tables(np.asarray(values), dtype, label, guard)

    @property
    def depthwise_in_place(self) -> bool:
        return self.in_place is not None and self.in_place.kind == "depthwise"

    def act(self, x, act=None):
        return activations.c_expr(act if act is not None else self.node.attrs.get("activation"), x)


@dataclass
class Library:
    """What `generate` produced: file name -> text, plus figures for reports and the host runner."""
    prefix: str
    files: dict
    traced: list = field(default_factory=list)    # trace id -> tensor name (every output of every layer)
    macs: int = 0
    arena_bytes: int = 0
    weight_bytes: int = 0
    layers: list = field(default_factory=list)    # per layer: dict(index, op, name, macs, kernel, ...)
    stored_weights: dict = field(default_factory=dict)   # --weights: form -> bytes of the constants it stores
    stored_tensors: dict = field(default_factory=dict)   # ... and per constant tensor it stores, its bytes
    kernels: str = "fast"      # the kernel set it was generated with (KERNEL_SETS)


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined, autoescape=False)


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def kernel_family(g, node) -> str:
    """'int8' for ops on quantized tensors (and Quantize/Dequantize), 'float' for ops on un-quantized tensors
    (float32, and the integer and bool types of the op's `plain_dtypes`), 'hybrid' for a layer with float
    activations and int8 weights (the `hybrid` attribute, tinyc/ops/hybrid.py)."""
    if node.op in ("Quantize", "Dequantize"):
        return "int8"
    runtime = [g.tensors[t] for t in node.inputs + node.outputs if not g.tensors[t].is_const]
    if all(t.quant is None for t in runtime):
        if node.attrs.get("hybrid"):       # float activations, int8 weights: TFLite's hybrid kernels (ops/hybrid.py)
            return "hybrid"
        for t in node.inputs:
            if g.tensors[t].is_const and g.tensors[t].quant is not None:
                raise TinycError(f"node '{node.name}' ({node.op}) computes in float32 with {g.tensors[t].dtype} "
                                 f"constant '{t}': hybrid (dynamic-range) quantized models are not supported; use a "
                                 "fully-integer int8 model or a float32 one")
        accepted = REGISTRY[node.op].plain_dtypes
        other = sorted({t.dtype for t in runtime} - set(accepted))
        if other:
            raise TinycError(f"node '{node.name}' ({node.op}) computes on {', '.join(other)} tensors; tinyc's "
                             f"{node.op} "
                             f"kernel takes {', '.join(accepted)}: run `tinyc ops`")
        return "float"
    wide = REGISTRY[node.op].int8_wide_dtypes     # e.g. SVDF's int16 memory beside its int8 input and output
    if all((t.dtype == "int8" or t.dtype in wide) and t.quant is not None for t in runtime):
        return "int8"
    sixteen = [t for t in runtime if t.dtype == "int16" and t.quant is not None]
    if sixteen and all(t.dtype in ("int8", "int16") and t.quant is not None for t in runtime):
        if not REGISTRY[node.op].int16_activations:
            raise TinycError(f"node '{node.name}' ({node.op}) computes on int16 activations (16x8) and tinyc's "
                             f"{node.op} has no 16x8 kernel: run `tinyc ops`")
        for t in sixteen:
            check_16x8_activation(t)
        return "int8"
    plain = REGISTRY[node.op].int8_plain_dtypes    # integer indices beside int8 values (ArgMinMax, Gather)
    quantized = [t.dtype == "int8" and t.quant is not None for t in
                 [g.tensors[n] for n in node.inputs + node.outputs if g.tensors[n].dtype == "int8"]]
    if plain and quantized and all(quantized) and all(
            t.quant is None and t.dtype in plain for t in runtime if t.dtype != "int8"):
        return "int8"
    raise TinycError(f"node '{node.name}' ({node.op}) computes on {sorted({t.dtype for t in runtime})} tensors; tinyc "
                     "supports float32 or int8 (with quantization parameters) models")


def check_16x8_activation(t) -> None:
    """An int16 activation is one of TFLite's 16x8 scheme: one scale, zero point 0 (docs/int16-numerics.md 1)."""
    scheme = "TFLite's 16x8 scheme (int16 activations per tensor with zero point 0, int8 weights)"
    if t.quant.axis is not None or np.asarray(t.quant.scale).size != 1:
        raise TinycError(f"int16 tensor '{t.name}' is quantized per channel; tinyc takes {scheme}")
    if zero_point_of(t.quant) != 0:
        raise TinycError(f"int16 tensor '{t.name}' has zero point {zero_point_of(t.quant)}; tinyc takes {scheme}")


def uses_16x8(g) -> bool:
    """Whether the graph has int16 activations of the 16x8 scheme (its library then includes tinyc_int16.h; int8
    libraries, whose int16 tensors are LSTM / SVDF state, do not)."""
    def sixteen(name):
        t = g.tensors[name]
        return t.dtype == "int16" and t.quant is not None and not t.is_const
    return any(sixteen(n) for n in g.inputs + g.outputs) or any(
        (REGISTRY[n.op].int16_activations or n.op in ("Quantize", "Dequantize")) and
        any(sixteen(t) for t in n.inputs + n.outputs) for n in g.nodes)


def _unpacked_note(dtype: str) -> str:
    """The header's word on a 4- or 2-bit integer input or output: stored unpacked (empty for other types)."""
    if dtype not in C_STORAGE:
        return ""
    lo, hi = integer_range(dtype)
    return f", unpacked: one value per {c_type(dtype)} ({lo} to {hi}; ONNX packs {8 // (hi - lo).bit_length()} a byte)"


def _io(plan, kind, names, streamed=None):
    """The template's rows of the inputs or outputs. A streamed input (schedule/stream_input.py) has no bytes in
    the arena (offset None): its rows come from `<p>_input_rows`, `rows` of them (0 .. rows - 1)."""
    g = plan.graph
    rows = []
    for k, n in enumerate(names):
        t = g.tensors[n]
        suffix = str(k) if len(names) > 1 else ""
        stream = (streamed or {}).get(n)
        row = dict(kind=kind, index=k, comment=comment_text(t.source_name or n), shape=list(t.shape),
                   offset=None if stream else plan.offset_of(n), fn=f"{kind}{suffix}", nbytes=t.nbytes,
                   streamed=stream,
                   shape_text=_shape_text(t.shape), size=t.size, dtype=t.dtype, ctype=c_type(t.dtype), quant=None,
                   unpacked=_unpacked_note(t.dtype))
        if t.quant is not None:
            row["quant"] = dict(scale=c_float(scale_of(t.quant)), zero_point=zero_point_of(t.quant))
        rows.append(row)
    return rows


ARENA_ALIGN = 4    # schedule.buffers.ALIGN: every buffer offset is a multiple of it (8 for 64-bit elements)


def _section(name: str | None) -> str:
    return f' TINYC_SECTION("{name}")' if name else ""


def generate(plan: MemoryPlan, prefix: str, source: str, arena: str = "static", arena_section: str | None = None,
             weights_section: str | None = None, kernels: str = "fast", weights: str | None = None) -> Library:
    """`arena`: "static" (the library owns a static arena) or "external" (every entry point takes the caller's
    arena pointer, so several models can share one region). The sections put the arena / weights into named
    linker sections. `kernels`: "fast" (optimized kernels where one applies) or "reference" (plain C only).
    `weights`: a form of codegen/weight_storage.py (e.g. "float16") for the weights kernels read through
    `KernelContext.weight`."""
    g = plan.graph
    env = _env()
    P = prefix.upper()

    state = _state_slots(plan, prefix)

    # Storage of every runtime tensor, as a C expression valid inside the run function (`arena` in scope).
    streamed = streamed_inputs(g)     # (read by their FusedBlock only, which passes no pointer for them)

    def where(name):
        if plan.in_state(name):
            return state["member"][plan.offset_of(name)]
        if name in streamed:
            return None
        return f"({c_type(g.tensors[name].dtype)} *)(arena + {plan.offset_of(name)})"

    def same_bytes(a, b):      # (the arena's in-place writes are plan.in_place; these: the state region's)
        return plan.in_state(a) and plan.in_state(b) and plan.offset_of(a) == plan.offset_of(b)

    consts, const_names = [], {}
    results = output_values(g)      # constants that may hold Inf or NaN

    def add_const(key, data, dtype, comment, guard=None, non_finite=False):
        if key not in const_names:
            const_names[key] = f"{prefix}_c{len(consts)}"
            data = np.asarray(data)
            consts.append(dict(name=const_names[key], comment=comment, shape_text=_shape_text(data.shape),
                               size=max(data.size, 1), ctype=c_type(dtype),
                               body=c_array_body(data, dtype, non_finite=non_finite),
                               nbytes=data.size * np.dtype(dtype).itemsize, guard=guard))
        else:
            c = next(c for c in consts if c["name"] == const_names[key])
            if c["guard"] != guard:     # read by code under different conditions: always compiled
                c["guard"] = None
        return const_names[key]

    def const_name(name):
        t = g.tensors[name]
        return add_const(("tensor", name), t.data, t.dtype, comment_text(name), non_finite=name in results)

    def table(values, dtype, label, guard=None):
        # the key keeps every value exactly: float tables as float64 (double scales would all be 0 as int64)
        exact = values.astype(np.float64 if dtype.startswith("float") else np.int64)
        key = ("table", dtype, values.shape, exact.tobytes())
        return add_const(key, values, dtype, label, guard)

    form, stored = weight_form(weights), {}    # --weights: C name of a stored constant -> (its form, tensor)

    def stored_weight(family, name):
        t = g.tensors[name]
        if form is None or family != form.family or t.dtype != form.source_dtype or name in results or \
                not form.holds(t.data):
            return None
        c = add_const((form.name, name), form.store(t.data), form.stored_dtype, f"{comment_text(name)}, {form.name}")
        stored[c] = (form, name)
        return WeightArray(c, c_type(form.stored_dtype), form)

    families = set()

    def kernel_params(kg, node, restrict):
        """(C expression of each input: a constant's array name, else x0, x1, ...; the C parameters of the runtime
        inputs; their tensor names)."""
        exprs, params, runtime = [], [], []
        for name in node.inputs:
            if kg.tensors[name].is_const:
                exprs.append(const_name(name))
            else:
                exprs.append(f"x{len(params)}")
                params.append(f"const {c_type(kg.tensors[name].dtype)} *{restrict}x{len(params)}")
                runtime.append(name)
        return exprs, params, runtime

    def kernel_body(kg, node, kplan, exprs, in_place, scratch, work, index):
        """(C body, kernel name, MACs) of one layer: the fast rule where one applies, else the reference one."""
        family = kernel_family(kg, node)
        definition = REGISTRY[node.op]
        rule = definition.float_kernel if family == "float" else definition.int8_kernel
        if family == "hybrid":
            rule = HYBRID_KERNELS[node.op]
        if rule is None:
            raise TinycError(f"no {family} C kernel for op '{node.op}' (node '{node.name}'); run `tinyc ops`")
        context = KernelContext(node, kplan, exprs, table, in_place, scratch, work,
                                weights=lambda name, _family=family: stored_weight(_family, name))
        if family == "int8" and definition.int8_prepare is not None:
            context.params = definition.int8_prepare(context)
        chosen, folder = None, family
        # The optimized kernel, tried first; it returns None where it does not apply (the reference kernel
        # is used then), and must equal its reference twin bit for bit.
        fast = definition.int8_fast if family == "int8" and kernels == "fast" else None
        if family == "hybrid" and kernels == "fast":
            fast = HYBRID_FAST[node.op]
        if fast is not None:
            chosen = fast(context)
            folder = f"{family}_fast"
        if chosen is None:
            if work is not None and definition.work is None:
                raise TinycError(f"internal: layer {index} has kernel scratch but no fast kernel took it")
            chosen, folder = rule(context), family
        template, variables, macs = chosen
        families.add(folder)
        variables["act"] = lambda x, _node=node: activations.c_expr(_node.attrs.get("activation"), x)
        kernel_name = f"{folder}/{template.removesuffix('.c.j2')}"
        if variables.get("variant"):
            kernel_name += f"/{variables['variant']}"
        return env.get_template(f"{folder}/{template}").render(**variables).rstrip("\n"), kernel_name, macs

    arena_bytes = plan.arena_bytes or 1    # (every tensor zero-size: C has no zero-length arrays)
    lib = Library(prefix, {}, arena_bytes=arena_bytes, kernels=kernels)
    layers = []
    for index, node in enumerate(g.nodes):
        out = node.outputs[0]
        in_place = plan.in_place.get(index) or _state_in_place(plan, index, node, same_bytes)
        restrict = "" if in_place else "restrict "      # an overwritten input aliases the output
        exprs, params, runtime = kernel_params(g, node, restrict)
        args = [where(name) for name in runtime]
        for j, name in enumerate(node.outputs):    # output j: y, y1, y2, ... (several: never in place)
            params.append(f"{c_type(g.tensors[name].dtype)} *{restrict}y{j or ''}")
            args.append(where(name))
        scratch = None
        if index in plan.scratch:
            ctype = c_type(g.tensors[out].dtype)
            scratch = "t"
            params.append(f"{ctype} *restrict t")
            args.append(f"({ctype} *)(arena + {plan.scratch[index].offset})")
        work = None
        if index in plan.work:     # float kernels see it as floats (recurrent state), int8 ones as bytes
            work = "s"     # (a fused block's layers may mix families: its scratch is bytes, its params its own)
            ctype = "float" if node.op != "FusedBlock" and kernel_family(g, node) == "float" else "int8_t"
            params.append(f"{ctype} *restrict s")
            args.append(f"({ctype} *)(arena + {plan.work[index].offset})")
        traces = [dict(id=len(lib.traced) + j, expr=where(name), bytes=g.tensors[name].nbytes)
                  for j, name in enumerate(node.outputs)]
        layer = dict(index=index, op=node.op, comment=comment_text(node.name), fn=None, macs=0, traces=traces,
                     in_place=in_place.kind if in_place else None, functions=[])
        lib.traced.extend(node.outputs)
        alias = _is_alias(plan, node)
        if not alias and node.op == "FusedBlock":
            fn = f"{prefix}_l{index}_fused"

            def row_kernel(vg, vnode, vplan, has_work):
                vexprs, vparams, _ = kernel_params(vg, vnode, "restrict ")
                vparams.append(f"{c_type(vg.tensors[vnode.outputs[0]].dtype)} *restrict y")
                vwork = None
                if has_work:
                    vwork = "s"
                    vparams.append(f"{'float' if kernel_family(vg, vnode) == 'float' else 'int8_t'} *restrict s")
                body, kernel_name, vmacs = kernel_body(vg, vnode, vplan, vexprs, None, None, vwork, index)
                return body, kernel_name, vparams, vmacs

            def running_pool(vg, vnode, part):
                context = KernelContext(vnode, fused_block.RowPlan(vg, {}), ["x0"], table)
                variables = dict(REGISTRY[vnode.op].int8_prepare(context), part=part)
                families.add("int8")
                return env.get_template("int8/pool_rows.c.j2").render(**variables).rstrip("\n")

            functions, body, macs = fused_block.render_block(node, prefix, fn, row_kernel, running_pool,
                                                       plan.work[index].nbytes if index in plan.work else 0)
            runtime_in = [t for t in node.inputs if not g.tensors[t].is_const and t not in streamed]
            restrict = "" if in_place else "restrict "
            params = [f"const unsigned char *{restrict}x{j}" for j in range(len(runtime_in))] + \
                [f"unsigned char *{restrict}y", "unsigned char *restrict s"]
            args = [f"arena + {plan.offset_of(t)}" for t in runtime_in] + [f"arena + {plan.offset_of(out)}",
                                                                          f"arena + {plan.work[index].offset}"]
            layer.update(fn=fn, params=params, args=args, macs=macs, kernel="fused_block", body=body,
                         functions=functions, block=fused_block.layer_figures(node, functions))
            lib.macs += macs
        elif not alias:
            body, kernel_name, macs = kernel_body(g, node, plan, exprs, in_place, scratch, work, index)
            batch = image_batch(g, node)
            layer.update(fn=f"{prefix}_l{index}_{node.op.lower()}", params=params, args=args, macs=macs * batch,
                         kernel=kernel_name, body=body)
            if batch > 1:     # the kernel computes one image: the layer calls it once per image
                layer["batch"] = batch
                layer["image_args"] = _image_args(g, node, params)
            macs *= batch
            lib.macs += macs
        layers.append(layer)
        lib.layers.append(dict(index=index, op=node.op, name=node.name, macs=layer["macs"], alias=alias,
                               in_place=layer["in_place"], kernel=layer.get("kernel"),
                               **({"block": layer["block"]} if "block" in layer else {})))
    # Constants no kernel refers to (e.g. weights a fast kernel replaced by a re-laid-out copy) are not emitted.
    bodies = [l.get("body", "") for l in layers if l["fn"]] + [f["body"] for l in layers for f in l["functions"]]
    used = set(re.findall(rf"\b{prefix}_c\d+\b", "\n".join(bodies)))
    consts = [c for c in consts if c["name"] in used]
    for c in consts:
        if c["name"] in stored:
            kind, tensor = stored[c["name"]]
            lib.stored_weights[kind.name] = lib.stored_weights.get(kind.name, 0) + c["nbytes"]
            lib.stored_tensors[tensor] = c["nbytes"]
    # the larger of the two builds (DSP cores, others) where tables are guarded by TINYC_DSP
    lib.weight_bytes = max(sum(c["nbytes"] for c in consts if c["guard"] != skip) for skip in GUARDS)

    inputs, outputs = _io(plan, "input", g.inputs, _streamed_rows(g)), _io(plan, "output", g.outputs)
    api = [f"const {i['ctype']} *input{i['index']}" for i in inputs if not i["streamed"]] + \
          [f"{o['ctype']} *output{o['index']}" for o in outputs]
    helpers = _conversion_helpers(prefix, inputs, outputs)
    arena_align = max([ARENA_ALIGN] + [b.alignment for b in plan.buffers])
    common = dict(p=prefix, P=P, source=comment_text(source), arena_bytes=arena_bytes, arena_align=arena_align,
                  weight_bytes=lib.weight_bytes, inputs=inputs, outputs=outputs, params=api, helpers=helpers,
                  external=arena == "external", arena_section=_section(arena_section),
                  weights_section=_section(weights_section), state=state)
    int8 = {"int8", "int8_fast"} & families or helpers
    runtime = ["tinyc_float.h"] + (["tinyc_int8.h"] if int8 else []) + \
        (["tinyc_int16.h"] if uses_16x8(g) else []) + (["tinyc_simd.h"] if "int8_fast" in families else [])
    runtime += ["tinyc_hybrid.h"] if {"hybrid", "hybrid_fast"} & families else []
    runtime += ["tinyc_simd.h"] if "hybrid_fast" in families and "tinyc_simd.h" not in runtime else []
    lib.files[f"{prefix}.h"] = env.get_template("model.h.j2").render(**common)
    runtime += sorted({stored[c["name"]][0].header for c in consts if c["name"] in stored})
    lib.files[f"{prefix}.c"] = env.get_template("model.c.j2").render(
        layers=layers, consts=consts, macs=lib.macs, lower_bound=plan.lower_bound, runtime=runtime, **common)
    for name in runtime:
        lib.files[name] = (resource_dir("runtime_c") / name).read_text()
    lib.files[cmake.FILE] = cmake.render({prefix: cmake.block(lib.files, prefix, comment_text(source),
                                                              arena == "external", kernels)})
    return lib


def _streamed_rows(g) -> dict:
    """Each streamed model input -> what the header says of its rows: values per row, rows the callback is asked
    for (schedule/stream_input.py)."""
    out = {}
    for node in g.nodes:
        if node.op == "FusedBlock" and node.inputs[0] in streamed_inputs(g):
            t = g.tensors[node.inputs[0]]
            out[node.inputs[0]] = dict(row_size=t.shape[2] * t.shape[3], rows=requested_rows(node),
                                       passes=stream_passes(node))
    return out


def _state_in_place(plan: MemoryPlan, index: int, node, same_bytes) -> InPlace | None:
    """A layer writing a state's next value over the state it reads (schedule/state.py: elementwise, at the same
    offset) is in place as the arena's elementwise layers are: kernels see it (no restrict, same-bytes paths). Never
    for a node with several outputs (overlap.options gives it no in-place contract)."""
    if len(node.outputs) != 1:
        return None
    name = next((i for i in node.inputs if same_bytes(i, node.outputs[0])), None)
    if name is None:
        return None
    nbytes = plan.graph.tensors[name].nbytes
    return InPlace(index, name, "elementwise", 0, nbytes, 0, nbytes)


def _state_slots(plan: MemoryPlan, prefix: str) -> dict:
    """The state region for the templates: its struct members (one per state tensor, in layout order, with the
    initial values when some are not zero), the copies the end of an inference makes, and each slot's C
    expression by offset."""
    g = plan.graph
    names = sorted(g.state, key=plan.offset_of)
    inits = g.initial_state()
    nonzero = any(v.any() for v in inits.values())
    slots = []
    for k, name in enumerate(names):
        t = g.tensors[name]
        slots.append(dict(member=f"s{k}", ctype=c_type(t.dtype), size=t.size, nbytes=t.nbytes,
                          comment=comment_text(t.source_name or name), shape_text=_shape_text(t.shape),
                          dtype=t.dtype, offset=plan.offset_of(name),
                          init=c_array_body(inits[name], t.dtype) if nonzero else None))
    member = {s["offset"]: f"{prefix}_state_storage.{s['member']}" for s in slots}
    copies = [dict(member=member[plan.offset_of(s)], offset=plan.offset_of(v), size=g.tensors[s].size,
                   ctype=c_type(g.tensors[s].dtype), comment=comment_text(v)) for s, v in plan.state_copies.items()]
    return dict(slots=slots, bytes=plan.state_bytes, copies=copies, init=nonzero, member=member,
                in_place=len(g.state) - len(copies) - sum(v == s for s, v in g.state.items()))


def image_batch(g, node) -> int:
    """N of an op whose kernels compute one NHWC image (OpDef.one_image) reading an [N, H, W, C] input; else 1."""
    if not REGISTRY[node.op].one_image:
        return 1
    shape = g.tensors[node.inputs[0]].shape
    return shape[0] if len(shape) == 4 else 1


def _image_args(g, node, params) -> list:
    """The per-image call's arguments: the image input and the output advance by one image per call; weights,
    scratch and kernel work buffers are the same for every image."""
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    steps = {"x0": x.size // x.shape[0], "y": y.size // y.shape[0]}
    names = [p.rsplit("*", 1)[1].replace("restrict ", "").strip() for p in params]
    return [f"{n} + n * {steps[n]}" if n in steps else n for n in names]


def _is_alias(plan: MemoryPlan, node) -> bool:
    """Reshape/Identity sharing its input's bytes, Concat whose inputs were produced in its slices, and Slice whose
    output the plan placed inside its input's bytes (a view)."""
    if node.op == "Slice":
        return is_view(plan, node)
    if node.op in ("Reshape", "Identity"):
        src = plan.buffer_of.get(node.inputs[0])        # None for a constant input
        return src is not None and src is plan.buffer_of[node.outputs[0]]
    return node.op == "Concat" and bool(node.attrs.get("in_place"))


def _conversion_helpers(prefix, inputs, outputs) -> list:
    """`<p>_quantize_input[k]` / `<p>_dequantize_output[k]` for each int8 or int16 (16x8) input/output (no number
    when the model has one of them)."""
    out = []
    for rows, verb in ((inputs, "quantize"), (outputs, "dequantize")):
        for r in rows:
            if r["quant"] is None:
                continue
            suffix = str(r["index"]) if len(rows) > 1 else ""
            rows_of = "_rows" if r.get("streamed") else ""     # (a streamed input: count rows at a time)
            out.append(dict(verb=verb, fn=f"{prefix}_{verb}_{r['kind']}{suffix}{rows_of}", io=r))
    return out


def output_values(g) -> set:
    """The constants a model output is copied from: the output's value, worked out at compile time (the maximum
    of an empty set is -inf), not a weight; so it may hold Inf or NaN."""
    return {n.inputs[0] for n in g.nodes if n.op in ("Identity", "Reshape") and n.outputs[0] in g.outputs
            and g.tensors[n.inputs[0]].is_const}


def weights_are_finite(g) -> None:
    results = output_values(g)
    for t in g.tensors.values():
        if t.is_const and t.data.dtype.kind == "f" and t.name not in results and not np.all(np.isfinite(t.data)):
            raise TinycError(f"constant '{t.name}' contains NaN or Inf; fix the model's weights")
