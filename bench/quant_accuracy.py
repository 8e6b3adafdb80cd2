"""What 16x8 buys over int8 on a regression: the speech-denoising autoencoder of bench/mlperf_tiny.py trained
briefly on synthetic spectrogram patches, then quantized by tinyc's own PTQ to int8 and to 16x8 (`--quantize int8`
/ `int16x8`, the same calibration inputs) and run by TFLite's reference kernels on tinyc's .tflite files (which
the generated C equals bit for bit: tests/test_ptq_int16.py). Prints, on held-out patches, each version's
signal-to-noise ratio against the clean patches and its error against the float model's outputs.

The data: clean "spectrograms" are a few harmonic stripes (bands at multiples of a pitch, with random onsets and
decays) on a low floor, in [0, 1]; noisy = clean + Gaussian noise (sigma 0.1) + a constant hum band. Random data,
seeded: the figures measure quantization, not denoising quality.

Run: python bench/quant_accuracy.py [--epochs 8] [--train 3000]"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
for _p in (HERE.parent, HERE):
    sys.path.insert(0, str(_p))

FRAMES, BANDS = 16, 64


def patches(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) [n, 16, 64, 1] float32."""
    clean = np.full((n, FRAMES, BANDS), 0.05, np.float32)
    t = np.arange(FRAMES)[:, None]
    for k in range(n):
        pitch = rng.uniform(4, 12)
        onset, decay = rng.integers(0, FRAMES // 2), rng.uniform(0.05, 0.4)
        env = np.where(t >= onset, np.exp(-decay * (t - onset)), 0.0)
        for h in range(1, int(BANDS / pitch)):
            band = int(h * pitch)
            clean[k, :, band] += (0.9 / h ** 0.5 * env[:, 0]).astype(np.float32)
    clean = np.clip(clean, 0, 1)
    hum = np.zeros(BANDS, np.float32)
    hum[2] = 0.3
    noisy = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32) + hum
    return noisy[..., None].astype(np.float32), clean[..., None]


def snr_db(estimate: np.ndarray, clean: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(clean ** 2) / np.sum((estimate - clean) ** 2)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train", type=int, default=3000)
    a = ap.parse_args(argv)
    import mlperf_tiny

    from tinyc.compiler import QUANTIZERS
    from tinyc.frontends import load_model
    from tinyc.keras_runtime import import_keras
    from tinyc.passes import optimize
    from tinyc.quant.params import scale_of, zero_point_of
    from tinyc.quant.report import run_int8_reference
    keras = import_keras()
    rng = np.random.default_rng(0)
    x_train, y_train = patches(a.train, rng)
    x_test, y_test = patches(200, rng)
    keras.utils.set_random_seed(0)
    model = mlperf_tiny.build("denoise_autoencoder", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    model.fit(x_train, y_train, epochs=a.epochs, batch_size=32, verbose=0)
    float_out = np.asarray(model(x_test, training=False))
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "denoise.keras")
        model.save(path)
        calib = [x_train[:64]]
        rows = [("float32", float_out)]
        for scheme in ("int8", "int16x8"):
            q = QUANTIZERS[scheme](optimize(load_model(path)), calib)     # what --quantize compiles
            out_q = q.tensors[q.outputs[0]].quant
            raw = run_int8_reference(q, [x_test])[0]
            rows.append((scheme, (scale_of(out_q) * (raw.astype(np.float64) - zero_point_of(out_q))).reshape(
                float_out.shape)))
    peak = float(np.max(np.abs(float_out)))
    print(f"denoising autoencoder, {a.train} synthetic patches x {a.epochs} epochs, 200 held out; "
          f"noisy input SNR {snr_db(x_test, y_test):.2f} dB")
    print("| model | SNR vs clean (dB) | max abs error vs float | mean abs error vs float | max error / output peak |")
    print("|---|---|---|---|---|")
    for name, out in rows:
        err = np.abs(out - float_out)
        print(f"| {name} | {snr_db(out, y_test):.2f} | {err.max():.3g} | {err.mean():.3g} | "
              f"{100 * err.max() / peak:.3f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
