"""An MCUNet-style MobileNetV2 (inverted residual blocks, width 0.35, 144x144x3 input, as MCUNet deploys it) on
the Raspberry Pi Pico 2 (RP2350, Cortex-M33, 520 KB SRAM).

Keras's MobileNetV2 builder with random weights (there are no pretrained weights offline; memory and speed do not
depend on them; the benchmark's model, bench/mlperf_tiny.py), converted to fully-int8 TFLite by TensorFlow's converter (seeded random calibration), compiled
by tinyc for the pico2. Shown: the memory report — which layers write over their input (the depthwise convolutions
in place, one channel at a time; elementwise adds in place; convolutions overlapping their dying input) and how
close the arena is to its lower bound, against the arena without those techniques — the picture of the arena
plan (SVG and HTML: x = step, y = arena offset), and a run of the model code under QEMU (mps2-an505, Cortex-M33)
with instructions per layer, its outputs equal to TFLite's reference kernels bit for bit.

    python examples/mobilenetv2_pico2.py [--out examples-out/mobilenetv2]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common import compile_for_board, int8_tflite, kib, parse_args, step

BOARD = "pico2"
SEED = 0


def build():
    """bench/mlperf_tiny.py's MobileNetV2-0.35 @144x144 (Keras's builder): random weights, batch-norm statistics
    measured on random inputs as training would leave them (else activations fade to nothing by the last blocks)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import mlperf_tiny
    return mlperf_tiny.build("mobilenet_v2_035", seed=SEED)


def main(argv=None) -> dict:
    _, out = parse_args(__doc__, argv, "examples-out/mobilenetv2")

    step("MobileNetV2-0.35 at 144x144x3 (Keras, random weights), converted to int8 by TFLite")
    model = build()
    calib = np.random.default_rng(SEED).standard_normal((32, 144, 144, 3)).astype(np.float32)
    path = int8_tflite(model, calib, out / "mobilenetv2_035.tflite")
    print(f"{model.count_params():,} parameters; {path} ({path.stat().st_size:,} B)")

    step(f"compile for the {BOARD}: memory report and the arena plan's picture")
    compiled, board = compile_for_board(path, BOARD, "mbv2")
    from tinyc.memory_report import format_report, memory_report, plan_picture_data
    from tinyc.plan_picture import render_html, render_svg
    report = memory_report(compiled, board)
    print(format_report(report))
    steps, rects = plan_picture_data(compiled)
    kw = dict(arena_bytes=report["arena_bytes"], lower_bound=report["arena_lower_bound_bytes"],
              peak_step=report["peak_step"], title=f"MobileNetV2-0.35 @144: arena plan on the {BOARD}")
    (out / "arena-plan.svg").write_text(render_svg(steps, rects, **kw))
    (out / "arena-plan.html").write_text(render_html(steps, rects, **kw))
    rows = report["layers"]
    depthwise = [r for r in rows if r["kernel"] and "depthwise" in r["kernel"]]
    over = [r for r in rows if r["in_place"]]
    peak = rows[report["peak_step"]]
    print(f"\nthe peak is layer {peak['index']} ({peak['kernel']}, output {'x'.join(map(str, peak['output_shape']))})"
          f"; layers that write over their dying input ({len(over)}): "
          + ", ".join(f"{r['index']} {r['kernel'].split('/')[1]} ({r['in_place']})" for r in over))
    print("the planner writes over an input only where that lowers the peak; elsewhere the arena is not the limit "
          f"and the kernels keep their own buffers ({len(depthwise)} depthwise layers in all)")
    plain = report["variants"]["plain"]["arena_bytes"]
    print(f"arena {kib(report['arena_bytes'])}, lower bound {kib(report['arena_lower_bound_bytes'])}; without "
          f"in-place, overlap and reordering {kib(plain)} ({plain / report['arena_bytes']:.2f}x)")
    print(f"pictures of the plan: {out / 'arena-plan.svg'}, {out / 'arena-plan.html'}")

    step("run the model code under QEMU (Cortex-M33): instructions per layer, outputs checked against TFLite")
    from tinyc.firmware.run import format_run, run_emulated
    r = run_emulated(compiled, board, str(path), str(out / "run"))
    print("\n".join(format_run(r)))
    if not r["outputs_match"]:
        raise SystemExit("the emulated outputs differ from TFLite's reference kernels")
    return dict(report=report, run=r, svg=out / "arena-plan.svg", html=out / "arena-plan.html")


if __name__ == "__main__":
    main()
