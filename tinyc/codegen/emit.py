"""Render a scheduled graph as a C library: `<name>.h`, `<name>.c` and the shared helper header."""
from __future__ import annotations

from dataclasses import dataclass, field

import jinja2
import numpy as np

from .. import activations
from ..errors import TinycError
from ..names import comment_text
from ..resources import resource_dir
from ..schedule import MemoryPlan
from .float_kernels import KERNELS
from .literals import c_float_array

RUNTIME_FILES = ("tinyc_float.h",)


@dataclass
class KernelContext:
    node: object
    plan: MemoryPlan
    exprs: list                       # C expression of each input inside the layer function

    def in_shape(self, i):
        return self.plan.graph.tensors[self.node.inputs[i]].shape

    def in_size(self, i):
        return self.plan.graph.tensors[self.node.inputs[i]].size

    @property
    def out_shape(self):
        return self.plan.graph.tensors[self.node.outputs[0]].shape

    @property
    def out_size(self):
        return self.plan.graph.tensors[self.node.outputs[0]].size

    def expr(self, i):
        return self.exprs[i]

    def act(self, x, act=None):
        return activations.c_expr(act if act is not None else self.node.attrs.get("activation"), x)


@dataclass
class Library:
    """What `generate` produced: file name -> text, plus figures for reports and the host runner."""
    prefix: str
    files: dict
    traced: list = field(default_factory=list)    # trace id -> tensor name
    macs: int = 0
    arena_bytes: int = 0
    weight_bytes: int = 0
    layers: list = field(default_factory=list)    # per layer: dict(index, op, name, macs)


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined, autoescape=False)


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def generate(plan: MemoryPlan, prefix: str, source: str) -> Library:
    g = plan.graph
    for t in g.tensors.values():
        if t.dtype != "float32":
            raise TinycError(f"tensor '{t.name}' is {t.dtype}; this build of tinyc generates float32 code only")
    env = _env()
    P = prefix.upper()

    # Storage of every runtime tensor, as a C expression valid inside *_invoke.
    def where(name):
        buf = plan.buffer_of[name]
        if buf.pinned:
            kind, k = buf.pinned
            return f"{kind}{k}"
        return f"(float *)({prefix}_arena.bytes + {buf.offset})"

    consts, const_names = [], {}

    def const_name(name):
        if name not in const_names:
            t = g.tensors[name]
            const_names[name] = f"{prefix}_c{len(consts)}"
            consts.append(dict(name=const_names[name], comment=comment_text(name), shape_text=_shape_text(t.shape),
                               size=max(t.size, 1), body=c_float_array(t.data)))
        return const_names[name]

    lib = Library(prefix, {}, arena_bytes=plan.arena_bytes)
    layers = []
    for index, node in enumerate(g.nodes):
        out = node.outputs[0]
        alias = node.op in ("Reshape", "Identity") and plan.buffer_of[node.inputs[0]] is plan.buffer_of[out]
        exprs, params, args = [], [], []
        for name in node.inputs:
            if g.tensors[name].is_const:
                exprs.append(const_name(name))
            else:
                exprs.append(f"x{len(params)}")
                params.append(f"const float *restrict x{len(params)}")
                args.append(where(name))
        params.append("float *restrict y")
        args.append(where(out))
        layer = dict(index=index, op=node.op, comment=comment_text(node.name), fn=None, macs=0,
                     trace_id=len(lib.traced), out_expr=where(out), out_size=g.tensors[out].size)
        lib.traced.append(out)
        if not alias:
            rule = KERNELS.get(node.op)
            if rule is None:
                raise TinycError(f"no C kernel for op '{node.op}' (node '{node.name}'); run `tinyc ops`")
            template, variables, macs = rule(KernelContext(node, plan, exprs))
            variables["act"] = lambda x, _node=node: activations.c_expr(_node.attrs.get("activation"), x)
            layer.update(fn=f"{prefix}_l{index}_{node.op.lower()}", params=params, args=args, macs=macs,
                         body=env.get_template(f"float/{template}").render(**variables).rstrip("\n"))
            lib.macs += macs
        layers.append(layer)
        lib.layers.append(dict(index=index, op=node.op, name=node.name, macs=layer["macs"], alias=alias))
    lib.weight_bytes = sum(g.tensors[n].nbytes for n in const_names)

    def io(kind, names):
        return [dict(kind=kind, index=k, comment=comment_text(g.tensors[n].source_name or n),
                     shape=list(g.tensors[n].shape), shape_text=_shape_text(g.tensors[n].shape),
                     size=g.tensors[n].size) for k, n in enumerate(names)]

    api = [f"const float *input{k}" for k in range(len(g.inputs))] + \
          [f"float *output{k}" for k in range(len(g.outputs))]
    common = dict(p=prefix, P=P, source=comment_text(source), arena_bytes=plan.arena_bytes,
                  weight_bytes=lib.weight_bytes, inputs=io("input", g.inputs), outputs=io("output", g.outputs),
                  params=api)
    lib.files[f"{prefix}.h"] = env.get_template("model.h.j2").render(**common)
    lib.files[f"{prefix}.c"] = env.get_template("model.c.j2").render(
        layers=layers, consts=consts, macs=lib.macs, lower_bound=plan.lower_bound, **common)
    for name in RUNTIME_FILES:
        lib.files[name] = (resource_dir("runtime_c") / name).read_text()
    return lib


def weights_are_finite(g) -> None:
    for t in g.tensors.values():
        if t.is_const and t.data.dtype.kind == "f" and not np.all(np.isfinite(t.data)):
            raise TinycError(f"constant '{t.name}' contains NaN or Inf; fix the model's weights")
