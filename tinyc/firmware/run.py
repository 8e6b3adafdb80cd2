"""`tinyc run MODEL --board B --emulate`: compile, build the emulation images, run them under QEMU and compare
the outputs with the host build and with the reference runtime."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..boards import Board
from ..compiler import write_library
from ..verify import compare, lsb_tolerance, reference_outputs, run_generated
from .emulate import emulate
from .project import sample_inputs, write_firmware


def run_emulated(compiled, board: Board, model_path: str, out_dir: str | None = None, inputs=None, seed: int = 0,
                 io_layout: str = "nchw", profile: bool = True) -> dict:
    """Instruction counts (total, per layer, per MAC) of one inference on `board`'s QEMU machine, and whether the
    outputs equal the host build's (int8: bit for bit) and the reference runtime's, on every sample of `inputs`
    (per model input one sample or a stack of them; default: one seeded random sample). Each output row carries
    the emulated values (`data`, [samples, *shape]). `out_dir` keeps the library and firmware project (default: a
    temporary directory)."""
    samples = sample_inputs(compiled, inputs, seed, max_samples=None)
    with tempfile.TemporaryDirectory(prefix="tinyc-run-") as tmp:
        out = Path(out_dir) if out_dir else Path(tmp)
        write_library(compiled.library, str(out), force=out_dir is None)
        write_firmware(compiled, board, str(out), samples)
        result = emulate(compiled, board, out, profile)
        host = run_generated(compiled, samples)
        refs, _ = reference_outputs(compiled, model_path, samples, io_layout, Path(tmp))
    g = compiled.plan.graph
    rows = []
    for k, (name, emu) in enumerate(zip(g.outputs, result.pop("outputs"))):
        vs_host = compare(emu, host[k])
        vs_ref = compare(emu, refs[k], lsb_tolerance(compiled, name))
        row = dict(index=k, dtype=str(emu.dtype), values=int(emu[0].size),
                   matches_host=bool(np.array_equal(emu, host[k])) if emu.dtype == np.int8 else vs_host["ok"],
                   max_abs_diff_host=vs_host["max_abs_err"], matches_reference=vs_ref["ok"],
                   max_abs_err_reference=vs_ref["max_abs_err"], tolerance=vs_ref["tolerance"], data=emu.tolist())
        rows.append(row)
    result.update(model=model_path, name=compiled.library.prefix, samples=int(samples[0].shape[0]), outputs=rows,
                  outputs_match=all(r["matches_host"] and r["matches_reference"] for r in rows),
                  note="instructions counted by QEMU (-icount shift=0); not cycles: wait states, caches and dual "
                       "issue are not modelled")
    return result


def format_run(r: dict) -> list[str]:
    lines = [f"{r['model']} on {r['board']} ({r['core']}), emulated by QEMU {r['machine']}:"]
    if "layers" in r:
        lines.append(f"{'#':>3} {'op':<12} {'MACs':>11} {'instructions':>13} {'per MAC':>8}  layer")
        for row in r["layers"]:
            per = f"{row['instructions'] / row['macs']:.2f}" if row["macs"] else "-"
            lines.append(f"{row['index']:>3} {row['op'][:12]:<12} {row['macs']:>11,} {row['instructions']:>13,} "
                         f"{per:>8}  {row['name'][:48]}")
        lines.append(f"    (layers sum to {r['profiled_instructions']:,} with the profiling hooks compiled in)")
    per_mac = f", {r['instructions_per_mac']} per MAC" if r["instructions_per_mac"] is not None else ""
    lines.append(f"instructions per inference: {r['instructions']:,} ({r['macs']:,} MACs{per_mac}; "
                 f"mean of {r['reps']} run(s) on the first sample)")
    for o in r["outputs"]:
        exact = "bit-exact" if o["dtype"] == "int8" else f"max abs diff {o['max_abs_diff_host']:.3g}"
        lines.append(f"output {o['index']} ({o['dtype']}, {o['values']} values, {r['samples']} sample(s)): host build "
                     f"{'match' if o['matches_host'] else 'MISMATCH'} ({exact}), reference "
                     f"{'match' if o['matches_reference'] else 'MISMATCH'} (max abs err "
                     f"{o['max_abs_err_reference']:.3g}, tolerance {o['tolerance']:.3g})")
    lines.append(f"outputs match: {'yes' if r['outputs_match'] else 'NO'}")
    lines.append(f"note: {r['note']}")
    return lines
