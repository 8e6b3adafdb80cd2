"""The deployment article's MNIST-style CNN, written in PyTorch as the article writes it and exported to ONNX,
compiled by tinyc for the STM32F746G-DISCO (Cortex-M7, 1 MB flash, 320 KB SRAM).

Conv(1->16, 3x3) -> ReLU -> MaxPool -> Conv(16->32, 3x3) -> ReLU -> MaxPool -> Linear(1568, 128) -> ReLU ->
Linear(128, 10) at 28x28x1. There is no MNIST download here, so it is trained for a few seconds on
scikit-learn's 8x8 digits upscaled to 28x28 (the point is deployment, not the data set). Shown for the float32
model (as the article deploys it) and for tinyc's int8 quantization of it: the firmware image's flash and SRAM
(arm-none-eabi-gcc, checked against the board), the per-layer instruction counts of the model code under QEMU
(mps2-an500, Cortex-M7), and the accuracy of the emulated model on test digits, whose outputs are checked against
onnxruntime (float32: within 1e-4 relative) and TFLite's reference kernels (int8: bit for bit).

    python examples/mnist_cnn_torch.py [--out examples-out/mnist] [--samples 100]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import compile_for_board, parse_args, step

BOARD = "stm32f746g-disco"
SEED = 0


def define_net():
    """The article's network, as it writes it."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
            self.fc1 = nn.Linear(32 * 7 * 7, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 32 * 7 * 7)
            x = F.relu(self.fc1(x))
            return self.fc2(x)
    return Net


def digits_28x28(seed: int = SEED):
    """scikit-learn's 8x8 digits, bilinearly upscaled to 1x28x28 in [0, 1]; 80/20, stratified, seeded."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).numpy()
    return train_test_split(x, d.target, test_size=0.2, random_state=seed, stratify=d.target)


def train(x_train, y_train, epochs: int = 3):
    import torch
    torch.manual_seed(SEED)
    net = define_net()()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def export(net, path: Path) -> Path:
    """torch.onnx.export as the article calls it: a dummy input of the model's shape, named input and output."""
    import torch
    dummy = torch.randn(1, 1, 28, 28)
    torch.onnx.export(net, dummy, str(path), input_names=["input"], output_names=["output"])
    return path


def deploy(label: str, onnx_path: Path, out: Path, x_test, y_test, quantize=None, calib=None) -> dict:
    """Compile for the board, build the firmware image, run the test digits under QEMU with per-layer counts."""
    from tinyc.compiler import write_library
    from tinyc.firmware.build import build_firmware
    from tinyc.firmware.project import write_firmware
    from tinyc.firmware.run import format_run, run_emulated
    c, board = compile_for_board(onnx_path, BOARD, "mnist_cnn", quantize=quantize, calib=calib)
    write_library(c.library, str(out), force=True)
    write_firmware(c, board, str(out), [x_test[:1]])
    size = build_firmware(out)
    r = run_emulated(c, board, str(onnx_path), str(out / "run"), inputs=[x_test])
    print("\n".join(format_run(r)))
    if not r["outputs_match"]:
        raise SystemExit(f"{label}: the emulated outputs differ from the reference runtime")
    scores = np.asarray(r["outputs"][0]["data"]).reshape(len(x_test), -1)
    acc = float(np.mean(scores.argmax(-1) == y_test))
    sram = sum(reg["used_bytes"] for reg in size["sram"])
    print(f"{label}: firmware flash {size['flash_bytes']:,} of {size['flash_size_bytes']:,} B "
          f"({size['flash_percent']}%), SRAM {sram:,} B (arena {c.library.arena_bytes:,} + 8 KB stack + "
          f"firmware); model code {size['model']['code_bytes']:,} B, constants {size['model']['constant_bytes']:,} "
          f"B; accuracy on {len(y_test)} emulated test digits {acc:.3f}")
    return dict(label=label, compiled=c, size=size, sram_bytes=sram, run=r, accuracy=acc)


def main(argv=None) -> dict:
    args, out = parse_args(__doc__, argv, "examples-out/mnist",
                           (["--samples"], dict(type=int, default=100, help="test digits run under emulation")),
                           (["--epochs"], dict(type=int, default=3)))
    x_train, x_test, y_train, y_test = digits_28x28()

    step(f"train the article's CNN in PyTorch on {len(x_train)} digits upscaled to 28x28 ({args.epochs} epochs)")
    import torch
    net = train(x_train, y_train, args.epochs)
    with torch.no_grad():
        torch_acc = float((net(torch.from_numpy(x_test)).argmax(-1).numpy() == y_test).mean())
    print(f"{sum(p.numel() for p in net.parameters()):,} parameters; PyTorch test accuracy {torch_acc:.3f}")
    path = export(net, out / "mnist_cnn.onnx")
    print(f"exported {path} with torch.onnx.export")

    xs, ys = x_test[:args.samples], y_test[:args.samples]
    step(f"float32 for the {BOARD}: build, then {len(xs)} test digits under QEMU (Cortex-M7)")
    fp = deploy("float32", path, out / "float", xs, ys)
    step(f"int8 (tinyc's quantization, calibrated on 200 training digits) for the {BOARD}")
    q = deploy("int8", path, out / "int8", xs, ys, quantize="int8", calib=[x_train[:200]])
    print(f"\n{'':<8} {'flash (image)':>13} {'SRAM':>8} {'arena':>7} {'instructions':>13} {'per MAC':>7} "
          f"{'accuracy':>8}   (PyTorch accuracy on the same digits "
          f"{float((net(torch.from_numpy(xs)).argmax(-1).numpy() == ys).mean()):.3f})")
    for d in (fp, q):
        print(f"{d['label']:<8} {d['size']['flash_bytes']:>13,} {d['sram_bytes']:>8,} "
              f"{d['compiled'].library.arena_bytes:>7,} {d['run']['instructions']:>13,} "
              f"{d['run']['instructions_per_mac']:>7.2f} {d['accuracy']:>8.3f}")
    print("(instructions counted by QEMU on the Cortex-M7 model code, not cycles: no wait states, caches or dual "
          "issue)")
    return dict(torch_accuracy=torch_acc, float32=fp, int8=q)


if __name__ == "__main__":
    main()
