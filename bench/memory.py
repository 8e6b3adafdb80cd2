"""Memory figures for every test and benchmark model: arena, lower bound, and what each technique saves.

For each model: the arena tinyc plans and its lower bound (both with the chosen schedule), then the arena of
each variant the scheduler tries, each adding one technique to the one before:
  plain      model order, every tensor in its own bytes while live
  in_place   + elementwise ops over their dying input, depthwise conv in place (one channel via a scratch plane)
  overlap    + windowed ops (conv, pooling, FC) overlapping their dying input at a computed lead
  reordered  + the operator order that minimizes the peak
The MLPerf Tiny reference architectures (bench/mlperf_tiny.py, random weights) are compiled as int8 TFLite models.
For int8 TFLite models, TFLite Micro's arena for the same .tflite when `tflite-micro` is installed
(`pip install --no-deps tflite-micro`; 64-bit host, reference kernels: indicative only).

Run: python bench/memory.py [--quick]   (--quick: skip MobileNetV2)
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))


def models(d: Path, quick: bool):
    """(name, path) of every model: the core matrix (Keras files), the int8 matrix, DS-CNN and MobileNetV2."""
    import int8_zoo
    import model_zoo
    for name in sorted(model_zoo.ZOO):
        yield name, model_zoo.export(name, d).get("keras") or next(iter(model_zoo.export(name, d).values()))
    for name in sorted(int8_zoo.BUILDERS):
        yield f"int8_{name}", int8_zoo.to_int8_tflite(int8_zoo.build(name), d / f"int8_{name}.tflite")
    if quick:
        return
    import mlperf_tiny
    for name in mlperf_tiny.BUILDERS:
        yield f"mlperf_{name}_int8", int8_zoo.to_int8_tflite(mlperf_tiny.build(name), d / f"{name}.tflite")
    from test_mobilenet import SHAPE, calibrate_batchnorm

    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=SHAPE[1:], alpha=0.35, weights=None, classes=10)
    calibrate_batchnorm(keras, model, np.random.default_rng(0))
    model.save(d / "mbv2.keras")
    yield "mobilenetv2_035_144_float", str(d / "mbv2.keras")
    yield "mobilenetv2_035_144_int8", int8_zoo.to_int8_tflite(model, d / "mbv2.tflite")


def row(name: str, path: str) -> dict:
    from tinyc.compiler import compile_model
    c = compile_model(path)
    p = c.plan
    r = dict(model=name, arena=p.arena_bytes, lower_bound=p.lower_bound, chosen=p.chosen,
             exact_order=p.exact_order, **{k: v["arena_bytes"] for k, v in p.variants.items()})
    if path.endswith(".tflite"):
        from tflm_arena import tflm_arena_bytes
        r["tflm"] = tflm_arena_bytes(path)
    return r


def main():
    quick = "--quick" in sys.argv
    cols = ("plain", "in_place", "overlap", "reordered")
    print(f"{'model':<34} {'arena':>9} {'bound':>9} {'ratio':>6} " + " ".join(f"{c:>9}" for c in cols)
          + f" {'TFLM':>9} {'vs TFLM':>7}  chosen")
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        for name, path in models(Path(d), quick):
            r = row(name, str(path))
            ratio = r["arena"] / max(r["lower_bound"], 1)
            worst = max(worst, ratio)
            tflm = r.get("tflm")
            vs = f"{r['arena'] / tflm:.2f}x" if tflm else "-"
            print(f"{name:<34} {r['arena']:>9,} {r['lower_bound']:>9,} {ratio:>6.3f} "
                  + " ".join(f"{r[c]:>9,}" for c in cols)
                  + f" {tflm or '-':>9} {vs:>7}  {r['chosen']}{'' if r['exact_order'] else ' (heuristic order)'}",
                  flush=True)
    print(f"worst arena / lower bound: {worst:.3f}")


if __name__ == "__main__":
    main()
