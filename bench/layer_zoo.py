"""Figures of issue 18's layer zoo (tests/layer_zoo.py; the README's "Models beyond plain CNNs" table): per model,
float32 and int8, `tinyc verify` (float against Keras / onnxruntime; int8 bit-exact with TFLite's reference
kernels on every layer: the converter's model for Keras, tinyc's quantizer for the PyTorch exports and the Keras
LSTM, whose int8 conversion crashes the converter), the arena
against its lower bound, and instructions per inference and per MAC under QEMU (-icount, not cycles) on the
Cortex-M0+ (pico) and the Cortex-M33 (pico2), every emulated output checked against the host build and the reference
runtime. Prints a Markdown table, then the int8 ConvTranspose2D and MatMul layers' instructions per MAC.

Usage: python bench/layer_zoo.py [--models har_cnn1d,...] [--boards pico,pico2] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
for _p in (HERE.parent / "tests", HERE.parent):     # the tinyc of this checkout first
    sys.path.insert(0, str(_p))

CORE = {"pico": "M0+", "pico2": "M33"}
FLOAT_ONLY = {"torch_kws_transformer"}      # tinyc's quantizer takes no Normalize yet; the converter reads no ONNX


def model_files(name: str, directory: Path) -> tuple[str, str | None]:
    """(float model, the converter's int8 .tflite or None when tinyc's quantizer makes the int8 form)."""
    import int8_zoo
    import layer_zoo
    if name in layer_zoo.KERAS:
        model = layer_zoo.build_keras(name)
        path = directory / f"{name}.keras"
        model.save(path)
        if name in layer_zoo.KERAS_INT8_BY_TINYC:
            return str(path), None
        return str(path), int8_zoo.to_int8_tflite(model, directory / f"{name}.tflite")
    return layer_zoo.export_torch(name, directory / f"{name}.onnx"), None


def measure(name: str, boards, directory: Path) -> list[dict]:
    import layer_zoo
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    from tinyc.frontends import load_model
    from tinyc.verify import verify
    float_path, int8_path = model_files(name, directory)
    kinds = [("float", float_path, {}, None)]
    if name not in FLOAT_ONLY:
        if int8_path:
            kinds.append(("int8", int8_path, {}, "converter"))
        else:
            g = load_model(float_path)
            calib = layer_zoo.calibration(g.tensors[g.inputs[0]].shape)
            kinds.append(("int8", float_path, dict(quantize="int8", calib=calib), "tinyc PTQ"))
    rows = []
    for kind, path, kwargs, made_by in kinds:
        v = verify(path, samples=3 if kind == "float" else 10, seed=7, per_layer=kind == "int8", **kwargs)
        c = compile_model(path, name, **kwargs)
        row = dict(model=name, kind=kind, made_by=made_by, verify_ok=v["ok"], max_abs_err=v["max_abs_err"],
                   oracle=v.get("oracle"), macs=c.library.macs, arena=c.plan.arena_bytes,
                   lower_bound=c.plan.lower_bound)
        if kind == "int8":
            row.update(mismatched_bytes=v["mismatched_bytes"], layers_checked=len(v["layers"]),
                       layers_differing=sum(not r["ok"] for r in v["layers"]))
        for board in boards:
            with tempfile.TemporaryDirectory(prefix="tinyc-zoo-") as out:
                e = run_emulated(c, load_board(board), path, out)
            row[board] = dict(instructions=e["instructions"], per_mac=e["instructions_per_mac"],
                              outputs_match=e["outputs_match"],
                              layers=[dict(op=r["op"], macs=r["macs"], instructions=r["instructions"])
                                      for r in e.get("layers", [])])
        rows.append(row)
        print(f"{name} {kind}: verify {'ok' if v['ok'] else 'FAILED'}, "
              + ", ".join(f"{CORE.get(b, b)} {row[b]['instructions']:,}" for b in boards), file=sys.stderr)
    return rows


def _count(x: int) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def render(rows: list[dict], boards) -> str:
    head = " | ".join(f"{CORE.get(b, b)} instructions (per MAC)" for b in boards)
    lines = [f"| model | kind | MACs | verify | arena (lower bound) | {head} |",
             "|---|---|---|---|---|" + "---|" * len(boards)]
    for r in rows:
        if r["kind"] == "float":
            verdict = f"ok vs {r['oracle']}, max err {r['max_abs_err']:.1e}" if r["verify_ok"] else "**FAILED**"
            kind = "float"
        else:
            exact = r["verify_ok"] and r["mismatched_bytes"] == 0 and r["layers_differing"] == 0
            verdict = f"bit-exact, {r['layers_checked']} layers" if exact else "**MISMATCH**"
            kind = f"int8 ({r['made_by']})"
        ratio = r["arena"] / r["lower_bound"] if r["lower_bound"] else 1.0
        arena = f"{r['arena']:,} ({r['lower_bound']:,})" + (f" ×{ratio:.3f}" if ratio > 1 else "")
        cells = [f"{_count(r[b]['instructions'])} ({r[b]['per_mac']:.2f})"
                 + ("" if r[b]["outputs_match"] else " **MISMATCH**") for b in boards]
        lines.append(f"| {r['model']} | {kind} | {r['macs']:,} | {verdict} | {arena} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        for b in boards:
            for layer in r[b]["layers"] if r["kind"] == "int8" else ():
                if layer["op"] in ("ConvTranspose2D", "MatMul") and layer["macs"]:
                    lines.append(f"- {r['model']} int8 {layer['op']} on the {CORE.get(b, b)}: {layer['macs']:,} MACs, "
                                 f"{layer['instructions'] / layer['macs']:.2f} instructions per MAC")
    return "\n".join(lines)


def main(argv=None) -> int:
    import layer_zoo
    every = [*layer_zoo.KERAS, *layer_zoo.TORCH]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(every), help=f"comma-separated, of {', '.join(every)}")
    ap.add_argument("--boards", default="pico,pico2")
    ap.add_argument("--json", help="also write the raw figures (with per-layer counts) as JSON")
    a = ap.parse_args(argv)
    models, boards = a.models.split(","), a.boards.split(",")
    unknown = [m for m in models if m not in every]
    if unknown:
        ap.error(f"unknown model: {', '.join(unknown)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyc-zoo-models-") as tmp:
        for name in models:
            rows += measure(name, boards, Path(tmp))
    print(render(rows, boards))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if not r["verify_ok"] or any(not r[b]["outputs_match"] for b in boards)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
