"""Worst-case stack depth of the model code on a board, from gcc's own figures: the model's C compiled with
arm-none-eabi-gcc for the board's core with `-fstack-usage -fcallgraph-info=su`, which writes each function's
frame size and the calls between them (a .ci file, VCG format). The depth is the heaviest call path from any of the
model's exported functions (`<name>_run`, `_invoke`, ...).

Library routines the model calls (memset, libgcc's soft-float and 64-bit multiply on the M0+, expf) are outside
the model's object, so gcc has no frame size for them: each call of one counts LIBRARY_ALLOWANCE bytes (newlib's
and libgcc's leaf routines take far less). A frame gcc marks "dynamic" (alloca, VLAs: the generated code uses none)
or a recursive call makes the depth unbounded, which is reported as such.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import TinycError

LIBRARY_ALLOWANCE = 256     # bytes per call of a library routine whose frame gcc cannot see
FIRMWARE_FRAMES = 1024      # the firmware's own frames below the model (main, console, startup)

_NODE = re.compile(r'node:\s*\{\s*title:\s*"([^"]+)"\s*label:\s*"([^"]*)"')
_EDGE = re.compile(r'edge:\s*\{\s*sourcename:\s*"([^"]+)"\s*targetname:\s*"([^"]+)"')
_SIZE = re.compile(r"(\d+) bytes \(([a-z,]+)\)")


def parse_callgraph(text: str) -> tuple[dict, dict]:
    """A .ci file -> ({title: (function name, frame bytes or None for a routine outside the file, qualifier)},
    {title: [callee titles]})."""
    nodes, edges = {}, {}
    for title, label in _NODE.findall(text):
        parts = label.split("\\n")
        m = _SIZE.search(label)
        nodes[title] = (parts[0], int(m.group(1)) if m else None, m.group(2) if m else "external")
    for src, dst in _EDGE.findall(text):
        edges.setdefault(src, []).append(dst)
    return nodes, edges


def worst_path(nodes: dict, edges: dict, root: str) -> tuple[int | None, list]:
    """(bytes, [function names]) of the heaviest call path from `root`; bytes None when unbounded."""
    memo: dict = {}

    def visit(t, stack):
        if t in stack:
            return None, [nodes.get(t, (t,))[0] + " (recursive)"]
        if t in memo:
            return memo[t]
        name, size, qual = nodes.get(t, (t, None, "external"))
        own = LIBRARY_ALLOWANCE if size is None else size
        if "dynamic" in qual and "bounded" not in qual:
            memo[t] = (None, [name + " (dynamic frame)"])
            return memo[t]
        best, best_path = 0, []
        for callee in edges.get(t, []):
            b, p = visit(callee, stack | {t})
            if b is None:
                memo[t] = (None, [name] + p)
                return memo[t]
            if b > best:
                best, best_path = b, p
        memo[t] = (own + best, [name + (" (library, allowance)" if size is None else "")] + best_path)
        return memo[t]
    return visit(root, frozenset())


def stack_report(ci_text: str, prefix: str) -> dict:
    """The model's worst stack depth from its .ci file: over every exported `<prefix>_*` function."""
    nodes, edges = parse_callgraph(ci_text)
    roots = [t for t, (name, size, _) in nodes.items() if size is not None and ":" not in t
             and name.startswith(prefix + "_")]
    if not roots:
        raise TinycError(f"the model's call graph has no {prefix}_* function; was it compiled from {prefix}.c?")
    worst = None
    for r in sorted(roots):
        b, p = worst_path(nodes, edges, r)
        if b is None:
            return dict(bytes=None, path=p, entry=nodes[r][0], bounded=False)
        if worst is None or b > worst[0]:
            worst = (b, p, nodes[r][0])
    library = sorted({name for name, size, _ in nodes.values() if size is None})
    return dict(bytes=worst[0], path=worst[1], entry=worst[2], bounded=True, library_calls=library,
                library_allowance=LIBRARY_ALLOWANCE)


def model_stack(compiled, board, opt: str = "-O2") -> dict | None:
    """Compile the model for `board` and return its stack report with the budget it must fit (the firmware's
    stack less its own frames); None when arm-none-eabi-gcc is not installed."""
    from ..compiler import write_library
    from .project import STACK_BYTES
    if shutil.which("arm-none-eabi-gcc") is None:
        return None
    lib = compiled.library
    with tempfile.TemporaryDirectory(prefix="tinyc-stack-") as tmp:
        write_library(lib, tmp, force=True)
        src = Path(tmp) / f"{lib.prefix}.c"
        res = subprocess.run(["arm-none-eabi-gcc", *board.cflags, opt, "-std=c99", "-ffunction-sections",
                              "-fstack-usage", "-fcallgraph-info=su", "-c", str(src), "-o", str(src.with_suffix(".o"))],
                             capture_output=True, text=True, cwd=tmp)
        if res.returncode != 0:
            raise TinycError(f"arm-none-eabi-gcc could not compile the model for {board.name}: "
                             f"{(res.stderr.strip().splitlines() or ['?'])[0][:200]}")
        report = stack_report(src.with_suffix(".ci").read_text(), lib.prefix)
    return with_budget(report, STACK_BYTES)


def with_budget(report: dict, stack_bytes: int) -> dict:
    budget = stack_bytes - FIRMWARE_FRAMES
    report.update(budget_bytes=budget, firmware_stack_bytes=stack_bytes,
                  fits=report["bytes"] is not None and report["bytes"] <= budget)
    return report


def format_stack(r: dict) -> str:
    if r["bytes"] is None:
        return f"stack: UNBOUNDED from {r['entry']} ({' -> '.join(r['path'])})"
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    lib = f", {LIBRARY_ALLOWANCE} B allowed per library call" if r.get("library_calls") else ""
    return (f"stack: worst {r['bytes']:,} B from {r['entry']} ({' -> '.join(r['path'])}{lib}); {verdict} in the "
            f"{r['budget_bytes']:,} B the firmware's {r['firmware_stack_bytes']:,} B stack leaves the model")
