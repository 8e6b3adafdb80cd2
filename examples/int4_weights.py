"""int4 weights against int8 on the examples' two classifiers: the digits CNN (examples/digits_cnn.py, Keras) and
the MNIST-style CNN (examples/mnist_cnn_torch.py, PyTorch -> ONNX), each quantized by tinyc with `--quantize int8`
and with `--quantize int8 --weights int4` (per-channel symmetric int4 conv/dense weights, int8 activations).

Shown per model and scheme: accuracy on the example's whole held-out test set (the C on the host, the same bytes
as on the boards), the weight bytes, the model's flash in the linked Cortex-M4 and M0+ images (its code + its
constants, arm-none-eabi-gcc -O2), and instructions per inference under QEMU, where the outputs are checked
against the host build and TFLite's reference kernels running tinyc's own .tflite.

    python examples/int4_weights.py [--out examples-out/int4]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import parse_args, step

BOARDS = ("nucleo-f412zg", "pico")     # Cortex-M4, Cortex-M0+
SCHEMES = {"int8": None, "int4": "int4"}   # --weights


def _compile(path, name, calib, weights):
    from tinyc.compiler import codegen_options, compile_model
    return compile_model(str(path), name, quantize="int8", calib=calib, options=codegen_options(weights=weights))


def _on_board(compiled, path, board_name, x, out: Path) -> dict:
    """Model flash in the -O2 board image, and one inference under QEMU (outputs checked)."""
    from tinyc.boards import load_board
    from tinyc.compiler import write_library
    from tinyc.firmware.build import build_firmware
    from tinyc.firmware.project import write_firmware
    from tinyc.firmware.run import run_emulated
    board = load_board(board_name)
    write_library(compiled.library, str(out), force=True)
    write_firmware(compiled, board, str(out))
    size = build_firmware(out)["model"]
    r = run_emulated(compiled, board, str(path), str(out / "run"), inputs=[x[:2]], profile=False)
    if not r["outputs_match"]:
        raise SystemExit(f"{board_name}: the emulated outputs differ: {r['outputs']}")
    return dict(flash=size["code_bytes"] + size["constant_bytes"], constants=size["constant_bytes"],
                instructions=r["instructions"], per_mac=r["instructions_per_mac"])


def evaluate(label, path, name, x_train, x_test, y_test, out: Path) -> list[dict]:
    from tinyc.verify import run_generated
    rows = []
    for scheme, weights in SCHEMES.items():
        c = _compile(path, name, [x_train], weights)
        scores = run_generated(c, [x_test])[0].reshape(len(x_test), -1)
        row = dict(model=label, scheme=scheme, accuracy=float(np.mean(scores.argmax(-1) == y_test)),
                   weight_bytes=c.library.weight_bytes, macs=c.library.macs)
        for b in BOARDS:
            row[b] = _on_board(c, path, b, x_test, out / f"{name}-{scheme}-{b}")
        rows.append(row)
        print(f"{label} {scheme}: test accuracy {row['accuracy']:.4f} ({len(y_test)} images), weights "
              f"{row['weight_bytes']:,} B, " + ", ".join(
                  f"{b}: flash {row[b]['flash']:,} B, {row[b]['instructions']:,} instructions "
                  f"({row[b]['per_mac']} per MAC)" for b in BOARDS), flush=True)
    return rows


def main(argv=None) -> list[dict]:
    args, out = parse_args(__doc__, argv, "examples-out/int4")
    import digits_cnn
    import mnist_cnn_torch
    rows = []

    step("digits CNN (Keras, 8x8 digits): train, quantize int8 / int8 + int4 weights")
    x_train, x_test, y_train, y_test = digits_cnn.digits_data()
    model = digits_cnn.train(x_train, y_train)
    path = out / "digits_cnn.keras"
    model.save(path)
    print(f"float32 test accuracy (Keras) {np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test):.4f}")
    rows += evaluate("digits CNN", path, "digits", x_train, x_test, y_test, out)

    step("MNIST-style CNN (PyTorch -> ONNX, digits at 28x28): train, quantize int8 / int8 + int4 weights")
    import torch
    x_train, x_test, y_train, y_test = mnist_cnn_torch.digits_28x28()
    net = mnist_cnn_torch.train(x_train, y_train)
    with torch.no_grad():
        acc = float((net(torch.from_numpy(x_test)).argmax(-1).numpy() == y_test).mean())
    print(f"float32 test accuracy (PyTorch) {acc:.4f}")
    path = mnist_cnn_torch.export(net, out / "mnist_cnn.onnx")
    rows += evaluate("MNIST CNN", path, "mnist", x_train[:200], x_test, y_test, out)

    step("summary")
    print(f"{'model':<11} {'weights':>7} {'accuracy':>8} {'weight B':>9} " +
          " ".join(f"{b + ' flash':>21} {b + ' instr.':>22}" for b in BOARDS))
    for r in rows:
        print(f"{r['model']:<11} {r['scheme']:>7} {r['accuracy']:>8.4f} {r['weight_bytes']:>9,} " +
              " ".join(f"{r[b]['flash']:>21,} {r[b]['instructions']:>22,}" for b in BOARDS))
    return rows


if __name__ == "__main__":
    main()
