"""A CNN under 10 KB of flash: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), a small
Keras CNN of Conv + BatchNorm + ReLU blocks, quantized to int8 by tinyc and built for the Raspberry Pi Pico.

Shown: float and int8 accuracy on the held-out 20 % (the int8 figure from the model code running under QEMU on
the Pico's Cortex-M0+, every output equal to TFLite's reference kernels bit for bit), the memory report with the
BatchNorm and ReLU fused into the convolutions, and the flash the model takes — its generated code plus its
constants (weights, biases, requantization tables), read from the linked firmware image's symbol table, without
startup, console and the sample inputs, with the library functions it calls — against the 10 KB goal, on the M0+
and an M4.

    python examples/digits_cnn.py [--out examples-out/digits]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import compile_for_board, parse_args, step

FLASH_GOAL = 10 * 1024
BOARDS = ("pico", "nucleo-f412zg")     # Cortex-M0+, Cortex-M4
SEED = 0
EPOCHS = 40


def digits_data(seed: int = SEED):
    """(x_train, x_test, y_train, y_test): 8x8x1 images scaled to [0, 1], 80/20, stratified, seeded."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return train_test_split(x, d.target, test_size=0.2, random_state=seed, stratify=d.target)


def build(seed: int = SEED):
    """Two Conv(3x3) + BatchNorm + ReLU blocks with max pooling, then a 2x2 convolution to the 10 class scores:
    1.9 k parameters. The head is a convolution rather than Dense + softmax for flash: the prediction is the
    arg-max of the logits (softmax does not change it and would add 2 KB of code), and TFLite's fully-connected
    rounding needs a double-precision path that costs the M0+ soft-float routines, a convolution's does not."""
    import keras
    from keras import layers
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 1), name="digit")
    y = x
    for i, filters in enumerate((8, 16)):
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(y)
        y = layers.BatchNormalization(name=f"bn{i}")(y)
        y = layers.ReLU(name=f"relu{i}")(y)
        y = layers.MaxPooling2D(2, name=f"pool{i}")(y)
    y = layers.Conv2D(10, 2, name="classes")(y)            # 2x2x16 -> 1x1x10
    y = layers.Flatten(name="logits")(y)
    return keras.Model(x, y, name="digits_cnn")


def train(x_train, y_train, epochs: int = EPOCHS):
    import keras
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def flash_of_model(compiled, board_name: str, out: Path) -> dict:
    """Build the board image (-O2, as shipped) and read the model's share of its flash."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.build import build_firmware
    from tinyc.firmware.project import write_firmware
    write_library(compiled.library, str(out), force=True)
    write_firmware(compiled, load_board(board_name), str(out))
    r = build_firmware(out)
    return dict(board=board_name, firmware_flash=r["flash_bytes"], total=r["model"]["flash_bytes"] +
                r["model"]["helper_bytes"], **r["model"])


def main(argv=None) -> dict:
    args, out = parse_args(__doc__, argv, "examples-out/digits", (["--epochs"], dict(type=int, default=EPOCHS)))
    x_train, x_test, y_train, y_test = digits_data()

    step(f"train the CNN on {len(x_train)} 8x8 digits (Keras, seed {SEED}, {args.epochs} epochs)")
    model = train(x_train, y_train, args.epochs)
    path = out / "digits_cnn.keras"
    model.save(path)
    float_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
    print(f"{model.count_params():,} parameters; float32 test accuracy (Keras) {float_acc:.4f}")

    step(f"quantize to int8 with tinyc (calibrated on the {len(x_train)} training images) for the pico")
    compiled, board = compile_for_board(path, "pico", "digits", quantize="int8", calib=[x_train])
    from tinyc.memory_report import format_report, memory_report
    report = memory_report(compiled, board)
    print(format_report(report))

    step(f"all {len(x_test)} test digits through the int8 model code under QEMU (Cortex-M0+)")
    from tinyc.firmware.run import run_emulated
    r = run_emulated(compiled, board, str(path), str(out / "pico-run"), inputs=[x_test], profile=False)
    if not r["outputs_match"]:
        raise SystemExit(f"the emulated outputs differ from TFLite's reference kernels: {r['outputs']}")
    scores = np.asarray(r["outputs"][0]["data"], np.int8).reshape(len(x_test), -1)
    int8_acc = float(np.mean(scores.argmax(-1) == y_test))
    print(f"int8 test accuracy on the emulated Cortex-M0+: {int8_acc:.4f} (float32: {float_acc:.4f}); outputs "
          f"equal TFLite's reference kernels bit for bit; {r['instructions']:,} instructions per inference")

    step("flash the model takes in the board images (arm-none-eabi-gcc -O2): generated code + constants")
    sizes = [flash_of_model(compiled, b, out / b) for b in BOARDS]
    print(f"{'board':<15} {'model code':>10} {'constants':>9} {'helpers':>7} {'total':>6}  {'10 KB goal':>10}  "
          f"{'whole image':>11}  helpers (library functions the model calls)")
    for s in sizes:
        ok = "fits" if s["total"] <= FLASH_GOAL else "OVER"
        print(f"{s['board']:<15} {s['code_bytes']:>10,} {s['constant_bytes']:>9,} {s['helper_bytes']:>7,} "
              f"{s['total']:>6,}  {ok:>10}  {s['firmware_flash']:>11,}  {', '.join(s['helpers']) or '-'}")
    print(f"(total = the model's generated code + its constants + the library functions it calls, <= {FLASH_GOAL:,} B "
          f"is the goal; the whole image adds startup, UART console, printing and a baked-in sample input; arena "
          f"{compiled.library.arena_bytes:,} B of SRAM)")
    return dict(float_accuracy=float_acc, int8_accuracy=int8_acc, report=report, run=r, sizes=sizes)


if __name__ == "__main__":
    main()
