#!/usr/bin/env python3
"""tinyc on ONNX's backend test suite (`make conformance`): every case the installed onnx wheel carries (kinds node,
pytorch-converted, pytorch-operator), run through tinyc's ONNX backend (tinyc/onnx_backend.py: parameter inputs
bound to the test's values as constants, data inputs at run time, the C built for the host with the sanitizers).

Each case is one of
  pass          outputs within tolerance (float32: max |err| <= 1e-4 * (1 + max |ref|); integers: exact)
  wrong         compiled and ran, but the outputs differ: tinyc emits wrong code without an error (listed)
  refused       tinyc refused it in one line (TinycError), grouped by a short reason
  crash         any other failure: a tinyc exception, generated C that does not compile or fails under the
                sanitizers, a time-out (listed: tinyc bugs)
  out-of-scope  input/output types tinyc does not target (strings, sequences, maps, optionals, float16, double,
                bfloat16, float8/float4, complex) or training-only ops / training mode

and the table gives per ONNX op type (the node's op; an expanded function test counts for the function's op; a
multi-node pytorch model for its first non-plumbing op) the cases passing of those in scope; ops that `tinyc ops`
lists are marked *. Each case runs in a forked child with a time limit, so that a hang or a crash of the generated
code cannot stop the run.

  bench/onnx_conformance.py [--ops Conv,Relu] [--kinds node] [--jobs 2] [--json results.json] [--timeout 300]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, defaultdict
from multiprocessing.connection import wait

STATUSES = ("pass", "wrong", "refused", "crash", "out-of-scope")

_CASES: list = []     # set in the parent before forking: the children inherit the loaded cases


def _child(index: int, conn) -> None:
    from tinyc.onnx_backend import run_case
    try:
        status, detail = run_case(_CASES[index])
    except BaseException as e:  # noqa: BLE001  (reported as the case's crash)
        status, detail = "crash", f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
    conn.send((status, detail))
    conn.close()


def run_all(cases: list, jobs: int, timeout: float, progress=None) -> list[dict]:
    """Run every case in a forked child, at most `jobs` at a time; a child past `timeout` seconds is killed (a
    crash: 'time-out')."""
    global _CASES
    _CASES = cases
    ctx = mp.get_context("fork")
    results: list = [None] * len(cases)
    pending = list(range(len(cases)))[::-1]
    running = {}     # reader connection -> (index, process, start)
    done = 0
    while pending or running:
        while pending and len(running) < jobs:
            i = pending.pop()
            reader, writer = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, args=(i, writer), daemon=True)
            p.start()
            writer.close()
            running[reader] = (i, p, time.monotonic())
        ready = wait(list(running), timeout=1.0)
        now = time.monotonic()
        for reader in list(running):
            i, p, start = running[reader]
            outcome = None
            if reader in ready:
                try:
                    outcome = reader.recv()
                except EOFError:   # the child died without an answer
                    p.join(5)
                    outcome = ("crash", f"the case's process died (exit code {p.exitcode})")
            elif now - start > timeout:
                p.kill()
                outcome = ("crash", f"time-out: more than {timeout:.0f} s")
            if outcome is None:
                continue
            reader.close()
            p.join(5)
            del running[reader]
            c = cases[i]
            results[i] = {"name": c.name, "kind": c.kind, "op": c.op, "status": outcome[0], "detail": outcome[1],
                          "seconds": round(now - start, 2)}
            done += 1
            if progress:
                progress(done, len(cases), results[i])
    return results


def summarize(results: list[dict], listed_ops) -> dict:
    per_op = defaultdict(Counter)
    for r in results:
        per_op[r["op"]][r["status"]] += 1
    refused = Counter(r["detail"] for r in results if r["status"] == "refused")
    scope = Counter(r["detail"] for r in results if r["status"] == "out-of-scope")
    counts = Counter(r["status"] for r in results)
    in_scope = len(results) - counts["out-of-scope"]
    ops_in_scope = [op for op, c in per_op.items() if sum(c.values()) > c["out-of-scope"]]
    listed = sorted(op for op in ops_in_scope if op in listed_ops)
    listed_90 = [op for op in listed if per_op[op]["pass"] >= 0.9 * (sum(per_op[op].values())
                                                                        - per_op[op]["out-of-scope"])]
    return {"cases": len(results), "in_scope": in_scope, "counts": dict(counts),
            "op_types_passing": sorted(op for op, c in per_op.items() if c["pass"]),
            "op_types_in_scope": len(ops_in_scope), "listed_ops_in_scope": listed, "listed_ops_at_90": listed_90,
            "refused_by_reason": dict(refused.most_common()), "out_of_scope_by_reason": dict(scope.most_common()),
            "per_op": {op: dict(c) for op, c in sorted(per_op.items())},
            "wrong": [(r["name"], r["detail"]) for r in results if r["status"] == "wrong"],
            "crash": [(r["name"], r["detail"]) for r in results if r["status"] == "crash"]}


def format_table(s: dict) -> list[str]:
    lines = [f"{'op type':<28} {'pass/in scope':>13} {'wrong':>6} {'crash':>6} {'refused':>8} {'out of scope':>13}"]
    for op, c in s["per_op"].items():
        total = sum(c.values()) - c.get("out-of-scope", 0)
        mark = "*" if op in s["listed_ops_in_scope"] else " "
        lines.append(f"{mark}{op:<27} {c.get('pass', 0):>6}/{total:<6} {c.get('wrong', 0):>6} {c.get('crash', 0):>6} "
                     f"{c.get('refused', 0):>8} {c.get('out-of-scope', 0):>13}")
    n = s["counts"]
    passing = (f"op types with a passing case: {len(s['op_types_passing'])} of {s['op_types_in_scope']} with "
               f"cases in scope ({', '.join(s['op_types_passing']) or 'none'})")
    listed = (f"ops tinyc lists with >= 90% of their cases passing: {len(s['listed_ops_at_90'])} of "
              f"{len(s['listed_ops_in_scope'])} ({', '.join(s['listed_ops_at_90']) or 'none'})")
    cases = (f"cases: {s['cases']}; in scope {s['in_scope']}: pass {n.get('pass', 0)}, refused "
             f"{n.get('refused', 0)}, wrong {n.get('wrong', 0)}, crash {n.get('crash', 0)}; out of scope "
             f"{n.get('out-of-scope', 0)}")
    lines += ["", "* = listed by `tinyc ops`", "", passing, listed, cases, "", "refused, by reason:"]
    lines += [f"  {count:>5}  {reason}" for reason, count in s["refused_by_reason"].items()]
    lines += ["", "out of scope, by reason:"]
    lines += [f"  {count:>5}  {reason}" for reason, count in s["out_of_scope_by_reason"].items()]
    for key, title in (("wrong", "WRONG (ran, outputs differ: tinyc emits wrong code)"),
                       ("crash", "CRASH (tinyc bugs)")):
        lines += ["", f"{title}: {len(s[key])}"]
        lines += [f"  {name}: {detail}" for name, detail in s[key]]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default=None, help="comma-separated ONNX op types: only their cases")
    ap.add_argument("--kinds", default=None, help="comma-separated kinds (node, pytorch-converted, pytorch-operator)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cases run at once (default: CPUs)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per case before it counts as a crash")
    ap.add_argument("--json", dest="json_file", default=None, help="write the per-case results and the summary here")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    args = ap.parse_args(argv)

    # tinyc's compiler is imported here once, so that each forked child starts warm
    import tinyc.compiler
    import tinyc.frontends.onnx_import  # noqa: F401
    from tinyc.frontends.onnx_ops import ONNX_OPS
    from tinyc.onnx_backend import SUITE_KINDS, load_suite

    kinds = tuple(args.kinds.split(",")) if args.kinds else SUITE_KINDS
    unknown = set(kinds) - set(SUITE_KINDS)
    if unknown:
        ap.error(f"unknown kind(s) {', '.join(sorted(unknown))}; use {', '.join(SUITE_KINDS)}")
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    t0 = time.monotonic()
    cases = load_suite(kinds)
    if args.ops:
        wanted = set(args.ops.split(","))
        cases = [c for c in cases if c.op in wanted]
        if not cases:
            ap.error(f"no case tests op type(s) {args.ops}")
    tty = sys.stderr.isatty() and not args.quiet

    def progress(done, total, r):
        if tty:
            print(f"\r[{done}/{total}] {r['status']:<12} {r['name'][:60]:<60}", end="", file=sys.stderr, flush=True)

    results = run_all(cases, args.jobs, args.timeout, progress)
    if tty:
        print(file=sys.stderr)
    s = summarize(results, set(ONNX_OPS))
    import onnx
    print(f"ONNX backend test suite (onnx {onnx.__version__}, kinds {', '.join(kinds)}): {len(cases)} cases in "
          f"{time.monotonic() - t0:.0f} s with {args.jobs} job(s)\n")
    print("\n".join(format_table(s)))
    if args.json_file:
        with open(args.json_file, "w") as f:
            json.dump({"onnx": onnx.__version__, "kinds": list(kinds), "summary": s, "cases": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
