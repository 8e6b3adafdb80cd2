"""AI-ANNE's IRIS networks (Klinkhammer, 2025: Keras MLPs hand-ported to MicroPython on a Raspberry Pi Pico),
compiled by tinyc to C for the Pico's Cortex-M0+ instead, and run under emulation.

Versicolor vs virginica from scikit-learn's bundled iris data (100 flowers, 4 features in cm), an 80/20 split.
The paper's two networks, with its layer sizes and activations:
  "8 neurons": Dense(2, relu) -> Dense(3, tanh) -> Dense(2, softmax) -> Dense(1, sigmoid)
  "6 neurons": Dense(3, relu) -> Dense(2, sigmoid) -> Dense(1, sigmoid)
Each is trained (seeded, a few seconds), then run on all 20 test flowers by the Pico's model code under QEMU
(mps2-an385, Cortex-M0+ code) three ways: float32; int8 from TensorFlow's converter (the TFLite Micro route); and
int8 from tinyc's own post-training quantization. Printed per variant: the confusion matrix, accuracy, precision,
recall and F1 (virginica = positive), and instructions per inference. Checked: the emulated float predictions equal
Keras's on every test flower; the int8 outputs equal TFLite's reference kernels' bit for bit.

    python examples/iris.py [--network "6 neurons"] [--out examples-out/iris]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import binary_metrics, compile_for_board, dequantize, int8_tflite, parse_args, step

NETWORKS = {
    "8 neurons": [(2, "relu"), (3, "tanh"), (2, "softmax"), (1, "sigmoid")],
    "6 neurons": [(3, "relu"), (2, "sigmoid"), (1, "sigmoid")],
}
CLASSES = ("versicolor", "virginica")
BOARD = "pico"
SEED = 0
EPOCHS = 300


def iris_data(seed: int = SEED):
    """(x_train, x_test, y_train, y_test): versicolor (0) vs virginica (1), 80/20, stratified, seeded."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    x, y = load_iris(return_X_y=True)
    keep = y > 0
    x, y = x[keep].astype(np.float32), (y[keep] == 2).astype(np.float32)
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def describe(network: str) -> str:
    return " -> ".join(f"Dense({u}, {a})" for u, a in NETWORKS[network])


def train(network: str, x_train, y_train, seed: int = SEED, epochs: int = EPOCHS):
    """The network trained on standardized features; the standardization is then folded into the first layer's
    weights (W / std, b - W mean / std), so the saved model takes the flowers' measurements in cm as they are."""
    import keras
    keras.utils.set_random_seed(seed)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    inp = keras.Input((4,), name="features")
    h = inp
    for i, (units, act) in enumerate(NETWORKS[network]):
        h = keras.layers.Dense(units, activation=act, name=f"dense_{i}")(h)
    model = keras.Model(inp, h, name=network.replace(" ", "_"))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    model.fit((x_train - mean) / std, y_train, epochs=epochs, batch_size=16, verbose=0, shuffle=True)
    first = model.get_layer("dense_0")
    w, b = first.get_weights()
    first.set_weights([w / std[:, None], b - (mean / std) @ w])
    return model


def emulate_variant(label, compiled, board, model_path, x_test, out_dir):
    """Run every test flower through the model code under QEMU; (result, P(virginica) per flower)."""
    from tinyc.firmware.run import run_emulated
    r = run_emulated(compiled, board, str(model_path), str(out_dir), inputs=[x_test], profile=False)
    if not r["outputs_match"]:
        raise SystemExit(f"{label}: the emulated outputs differ from the reference runtime: {r['outputs']}")
    return r, dequantize(compiled, 0, r["outputs"][0]["data"]).reshape(-1)


def run_network(network: str, out: Path, data) -> dict:
    x_train, x_test, y_train, y_test = data
    out.mkdir(parents=True, exist_ok=True)
    step(f"{network}: train {describe(network)} on {len(x_train)} flowers (Keras, seed {SEED})")
    model = train(network, x_train, y_train)
    keras_path = out / "model.keras"
    model.save(keras_path)
    keras_p = model.predict(x_test, verbose=0).reshape(-1)
    rows = [dict(variant="Keras, float32 (host)", p=keras_p, instructions=None)]

    step(f"{network}: tinyc float32 for the {BOARD}, all {len(x_test)} test flowers under QEMU (Cortex-M0+)")
    c, board = compile_for_board(keras_path, BOARD, "iris")
    r, p = emulate_variant("float32", c, board, keras_path, x_test, out / "float")
    same = np.array_equal(p > 0.5, keras_p > 0.5)
    print(f"predictions equal Keras's on every test flower: {'yes' if same else 'NO'} (max |difference| of "
          f"P(virginica): {np.max(np.abs(p - keras_p)):.2g})")
    if not same:
        raise SystemExit("the emulated float predictions differ from Keras's")
    rows.append(dict(variant="tinyc float32, M0+ (QEMU)", p=p, instructions=r["instructions"], compiled=c,
                     matches="Keras (within 1e-4)"))

    step(f"{network}: TensorFlow's int8 conversion (calibrated on the training flowers), compiled by tinyc")
    tfl = int8_tflite(model, x_train, out / "model_int8.tflite")
    c, board = compile_for_board(tfl, BOARD, "iris")
    r, p = emulate_variant("TFLite int8", c, board, tfl, x_test, out / "tflite_int8")
    print("emulated outputs equal TFLite's reference kernels bit for bit: yes")
    rows.append(dict(variant="TFLite int8 -> tinyc, M0+ (QEMU)", p=p, instructions=r["instructions"], compiled=c,
                     matches="TFLite, bit-exact"))

    step(f"{network}: tinyc's own int8 quantization of the Keras model (same calibration flowers)")
    c, board = compile_for_board(keras_path, BOARD, "iris", quantize="int8", calib=[x_train])
    r, p = emulate_variant("tinyc int8", c, board, keras_path, x_test, out / "tinyc_int8")
    print("emulated outputs equal TFLite's reference kernels (on tinyc's int8 graph) bit for bit: yes")
    rows.append(dict(variant="tinyc PTQ int8, M0+ (QEMU)", p=p, instructions=r["instructions"], compiled=c,
                     matches="TFLite, bit-exact"))

    for row in rows:
        row["pred"] = (row["p"] > 0.5).astype(int)
        row.update(binary_metrics(y_test, row["pred"]))
    print_table(network, rows, y_test)
    return dict(network=network, rows=rows, y_test=y_test, keras_p=keras_p)


def print_table(network: str, rows: list, y_test) -> None:
    print(f"\n{network}: {describe(network)}; {len(y_test)} test flowers, positive class = {CLASSES[1]}")
    print(f"{'variant':<34} {'accuracy':>8} {'precision':>9} {'recall':>6} {'F1':>5}  {'TP':>2} {'FN':>2} {'FP':>2} "
          f"{'TN':>2}  {'instructions/inference':>22}  {'arena':>5}  {'weights':>7}")
    for row in rows:
        (tp, fn), (fp, tn) = row["confusion"]
        c = row.get("compiled")
        instr = f"{row['instructions']:,}" if row["instructions"] is not None else "-"
        arena = f"{c.library.arena_bytes:,}" if c else "-"
        weights = f"{c.library.weight_bytes:,}" if c else "-"
        print(f"{row['variant']:<34} {row['accuracy']:>8.3f} {row['precision']:>9.3f} {row['recall']:>6.3f} "
              f"{row['f1']:>5.3f}  {tp:>2} {fn:>2} {fp:>2} {tn:>2}  {instr:>22}  {arena:>5}  {weights:>7}")
    (tp, fn), (fp, tn) = rows[1]["confusion"]
    w = max(len(s) for s in CLASSES)
    print(f"\nconfusion matrix, tinyc float32 on the emulated Cortex-M0+ (rows: true class, columns: predicted)\n"
          f"{'':<{w + 2}}{CLASSES[1]:>{w}} {CLASSES[0]:>{w}}\n"
          f"{CLASSES[1]:<{w + 2}}{tp:>{w}} {fn:>{w}}\n{CLASSES[0]:<{w + 2}}{fp:>{w}} {tn:>{w}}")
    print("(instructions counted by QEMU, not cycles; bytes: arena = all activations, weights = model constants)")


def main(argv=None) -> list:
    args, out = parse_args(__doc__, argv, "examples-out/iris",
                           (["--network"], dict(choices=sorted(NETWORKS), action="append",
                                                help="one of the paper's networks (default: both)")))
    data = iris_data()
    return [run_network(n, out / n.replace(" ", "_"), data) for n in args.network or list(NETWORKS)]


if __name__ == "__main__":
    main()
