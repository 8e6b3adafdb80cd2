"""Which quantization when, measured on one model: the KWS DS-CNN of bench/mlperf_tiny.py (random weights,
batch-norm statistics from random data) in every form tinyc compiles, on the Cortex-M4 (nucleo-f412zg under QEMU,
fast kernels): weight bytes in flash, arena, instructions per inference, and the error of its 12 class scores
against the float32 Keras model on held-out inputs (the generated C run on the host; the C equals each form's
reference bit for bit, or within verify's float tolerance, as the tests check).

  float32            the Keras model
  float16 weights    the Keras model, `--weights float16`
  hybrid             TFLiteConverter with Optimize.DEFAULT and no representative dataset (int8 weights of the
                     layers with >= 1,024 of them, float activations), TFLite's hybrid arithmetic
  hybrid as float    the same file, `--hybrid float` (weights dequantized at compile time)
  int8               TFLiteConverter, fully int8 (representative dataset)
  int8 by tinyc      tinyc's PTQ, `--quantize int8`
  int4 weights       tinyc's PTQ, `--quantize int8 --weights int4` (int8 activations)
  16x8               TFLiteConverter, EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
  16x8 by tinyc      tinyc's PTQ, `--quantize int16x8`

Both converters and tinyc's PTQ calibrate on the same 64 seeded standard-normal inputs (tests/int8_zoo.py).
Run: python bench/quant_schemes.py [--forms float32,int8,...] [--model kws_ds_cnn]"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
for _p in (HERE.parent / "tests", HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

BOARD = "nucleo-f412zg"
FORMS = ("float32", "float16 weights", "hybrid", "hybrid as float", "int8", "int8 by tinyc", "int4 weights", "16x8",
         "16x8 by tinyc")
HELD_OUT = 20


def _hybrid_tflite(model, path: Path) -> str:
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    path.write_bytes(conv.convert())
    return str(path)


def compiled_form(form: str, model, keras_path: str, calib: np.ndarray, tmp: Path):
    """tinyc's Compiled for `form`."""
    import int8_zoo
    import int16_zoo

    from tinyc.compiler import codegen_options, compile_model
    fast = dict(kernels="fast")
    if form == "float32":
        return compile_model(keras_path, options=codegen_options(**fast))
    if form == "float16 weights":
        return compile_model(keras_path, options=codegen_options(**fast, weights="float16"))
    if form in ("hybrid", "hybrid as float"):
        path = _hybrid_tflite(model, tmp / "hybrid.tflite")
        return compile_model(path, options=codegen_options(**fast),
                             hybrid="float" if form == "hybrid as float" else "tflite")
    if form == "int8":
        return compile_model(int8_zoo.to_int8_tflite(model, tmp / "int8.tflite"), options=codegen_options(**fast))
    if form == "16x8":
        return compile_model(int16_zoo.to_int16_tflite(model, tmp / "int16.tflite"), options=codegen_options(**fast))
    if form in ("int8 by tinyc", "16x8 by tinyc"):
        return compile_model(keras_path, quantize="int8" if form.startswith("int8") else "int16x8", calib=[calib],
                             options=codegen_options(**fast))
    if form == "int4 weights":
        return compile_model(keras_path, quantize="int8", calib=[calib],
                             options=codegen_options(**fast, weights="int4"))
    raise ValueError(form)


def scores(compiled, x: np.ndarray) -> np.ndarray:
    """The C's outputs on float inputs `x` [N, ...] as floats (integer outputs dequantized)."""
    from tinyc.quant.params import scale_of, zero_point_of
    from tinyc.verify import run_generated
    g = compiled.plan.graph
    out = run_generated(compiled, [x])[0]
    t = g.tensors[g.outputs[0]]
    if t.quant is None:
        return out.astype(np.float64)
    return scale_of(t.quant) * (out.astype(np.float64) - zero_point_of(t.quant))


def instructions(compiled, tmp: Path, name: str) -> int:
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.emulate import emulate
    from tinyc.firmware.project import sample_inputs, write_firmware
    out = tmp / name
    write_library(compiled.library, str(out), force=True)
    board = load_board(BOARD)
    write_firmware(compiled, board, str(out), sample_inputs(compiled))
    return emulate(compiled, board, out, profile=False)["instructions"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, of: {', '.join(FORMS)}")
    ap.add_argument("--model", default="kws_ds_cnn", help="a bench/mlperf_tiny.py builder")
    a = ap.parse_args(argv)
    forms = [f.strip() for f in a.forms.split(",") if f.strip()]
    import int8_zoo
    import mlperf_tiny
    model = mlperf_tiny.build(a.model, seed=0)
    shape = tuple(model.input_shape[1:])
    calib = np.concatenate([s[0] for s in int8_zoo.representative(model)()])    # what the converters see
    x = np.random.default_rng(7).standard_normal((HELD_OUT, *shape)).astype(np.float32)
    reference = np.asarray(model(x, training=False), np.float64)
    print(f"{a.model}: float32 scores on {HELD_OUT} held-out inputs span {reference.min():.3g} .. "
          f"{reference.max():.3g}; Cortex-M4 = {BOARD} under QEMU (instructions, not cycles)")
    print("| form | weights (flash) | arena | M4 instructions | max abs error vs float32 | arg-max agrees |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="tinyc-schemes-") as tmp:
        tmp = Path(tmp)
        keras_path = str(tmp / f"{a.model}.keras")
        model.save(keras_path)
        for k, form in enumerate(forms):
            try:
                c = compiled_form(form, model, keras_path, calib, tmp)
                got = scores(c, x).reshape(reference.shape)
                ins = instructions(c, tmp, f"form{k}")
            except Exception as e:      # a form tinyc cannot build yet is a row saying why
                print(f"| {form} | not measured: {type(e).__name__}: {str(e)[:160]} | | | | |")
                continue
            err = float(np.max(np.abs(got - reference)))
            agree = float(np.mean(got.argmax(-1) == reference.argmax(-1)))
            lib = c.library
            print(f"| {form} | {lib.weight_bytes:,} B | {lib.arena_bytes:,} B | {ins:,} | {err:.3g} | "
                  f"{100 * agree:.0f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
