"""What the examples share: progress lines, compiling for a board as `tinyc compile --board` does, TensorFlow's
int8 conversion, and the classification figures the AI-ANNE paper tabulates."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a clone without installing

import numpy as np  # noqa: E402

_T0 = time.time()


def parse_args(doc: str, argv, default_out: str, *options) -> tuple:
    """An example's command line: --out (created) plus `options`, each (flags, keyword arguments) for
    argparse. Returns (args, the output directory)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", default=default_out, help="where the models and firmware projects go")
    for flags, kw in options:
        ap.add_argument(*flags, **kw)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, out


def step(msg: str) -> None:
    print(f"\n== [{time.time() - _T0:5.1f} s] {msg}", flush=True)


def compile_for_board(path, board_name: str, name: str, quantize: str | None = None, calib=None):
    """As `tinyc compile MODEL --board B [--quantize int8 --calib ...]`: the fast kernels' scratch within the
    board's arena budget, and the one-line refusal when the firmware would not fit. Returns (Compiled, Board)."""
    from tinyc.boards import load_board
    from tinyc.compiler import codegen_options, compile_model
    from tinyc.firmware.project import arena_budget, check_firmware_fits
    board = load_board(board_name)
    c = compile_model(str(path), name, quantize=quantize, calib=calib,
                      options=codegen_options(arena_limit=arena_budget(board)))
    check_firmware_fits(c, board)
    return c, board


@contextlib.contextmanager
def quiet():
    """Silence TensorFlow's converter, which prints to both streams from Python and C++; its text is shown
    only if it fails."""
    with tempfile.TemporaryFile("w+") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        except BaseException:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            log.seek(0)
            sys.stderr.write(log.read()[-4000:])
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def int8_tflite(model, calib: np.ndarray, path: Path) -> Path:
    """A Keras model -> fully-integer TFLite (int8 input and output) by TensorFlow's converter, calibrated on
    `calib` (the training inputs): the model TFLite Micro users deploy, and TFLite's reference kernels its oracle."""
    import tensorflow as tf

    def representative():
        for x in calib:
            yield [x[None].astype(np.float32)]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with quiet():
        path.write_bytes(conv.convert())
    return path


def dequantize(compiled, k: int, values) -> np.ndarray:
    """Output k of an emulated run as floats (int8 outputs: scale x (q - zero point))."""
    from tinyc.quant.params import scale_of, zero_point_of
    t = compiled.plan.graph.tensors[compiled.plan.graph.outputs[k]]
    a = np.asarray(values, t.dtype)
    return (a.astype(np.float32) - zero_point_of(t.quant)) * scale_of(t.quant) if t.dtype == "int8" else a


def binary_metrics(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Confusion matrix [[TP, FN], [FP, TN]] (positive class 1) and accuracy, precision, recall, F1."""
    truth, pred = np.asarray(truth).astype(bool), np.asarray(pred).astype(bool)
    tp, fn = int(np.sum(truth & pred)), int(np.sum(truth & ~pred))
    fp, tn = int(np.sum(~truth & pred)), int(np.sum(~truth & ~pred))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(confusion=[[tp, fn], [fp, tn]], accuracy=(tp + tn) / len(truth), precision=precision,
                recall=recall, f1=f1)


def kib(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KB)"
