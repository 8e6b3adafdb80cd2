"""The IR's op definitions, one module per op or op family; `REGISTRY` maps op name -> `OpDef`.

Adding an op is one module here (docs/adding-an-op.md): every module of this package that has `DEFINITIONS`
is registered. Everything else that needs a per-op table derives it from `REGISTRY`: the IR's op list and
checks, the interpreter, the kernel rules codegen picks, the quantizer's policy, the memory planner's in-place
contracts and the passes' rules.
"""
from __future__ import annotations

import importlib
import pkgutil

from .opdef import MEMORY_KINDS, QUANTIZE_POLICIES, OpDef

MODULES = tuple(m for m in (importlib.import_module(f"{__name__}.{info.name}")
                            for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name))
                if hasattr(m, "DEFINITIONS"))

REGISTRY: dict[str, OpDef] = {d.name: d for m in MODULES for d in m.DEFINITIONS}

__all__ = ["MEMORY_KINDS", "QUANTIZE_POLICIES", "REGISTRY", "OpDef", "names_where"]


def names_where(**facets) -> tuple:
    """Names of the ops whose facets have the given values, in registry order, e.g. names_where(memory="alias")."""
    return tuple(n for n, d in REGISTRY.items() if all(getattr(d, f) == v for f, v in facets.items()))
