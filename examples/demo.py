"""`make demo`: the whole toolchain on AI-ANNE's "6 neurons" IRIS network (examples/iris.py): train it in Keras,
compile it with tinyc to C and Raspberry Pi Pico firmware (UF2), show where the memory goes, and run the same model
object code under QEMU on the Pico's core (Cortex-M0+) for every test flower: predictions, accuracy and
instructions per inference, checked against Keras."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import binary_metrics, step
from iris import CLASSES, describe, iris_data, train

NETWORK = "6 neurons"
OUT = Path(os.environ.get("TINYC_DEMO_OUT", "demo-out"))


def tinyc(*args, capture: bool = False) -> str:
    """Run a tinyc command as a user would type it (the installed `tinyc`, else this checkout's module)."""
    print("$ tinyc " + " ".join(str(a) for a in args), flush=True)
    cmd = [sys.executable, "-m", "tinyc.cli", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    res = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if res.returncode != 0:
        sys.exit(f"demo failed at: tinyc {' '.join(map(str, args))} (exit code {res.returncode})")
    return res.stdout or ""


def main() -> dict:
    OUT.mkdir(exist_ok=True)
    x_train, x_test, y_train, y_test = iris_data()
    step(f"1/4 train AI-ANNE's '{NETWORK}' network, {describe(NETWORK)}, on {len(x_train)} iris flowers "
         "(versicolor vs virginica; Keras, seeded)")
    model = train(NETWORK, x_train, y_train)
    model_path, x_path = OUT / "iris.keras", OUT / "iris_test_x.npy"
    model.save(model_path)
    np.save(x_path, x_test)
    keras_p = model.predict(x_test, verbose=0).reshape(-1)
    print(f"saved {model_path} ({model.count_params()} parameters) and the {len(x_test)} test flowers as {x_path}")

    step("2/4 compile it to C and firmware for the Raspberry Pi Pico, build the UF2 (arm-none-eabi-gcc)")
    tinyc("compile", model_path, "--board", "pico", "-o", OUT / "iris", "--name", "iris", "--force", "--build",
          "--sample", x_path)

    step("3/4 where the memory goes (arena plan, lower bound, fit on the Pico)")
    tinyc("report", model_path, "--board", "pico")

    step(f"4/4 run the firmware's model object under QEMU (Cortex-M0+ code) on all {len(x_test)} test flowers: "
         "instructions per layer, outputs checked against the host build and Keras")
    r = json.loads(tinyc("run", model_path, "--board", "pico", "--emulate", "--name", "iris", "--input", x_path,
                         "-o", OUT / "iris-run", "--json", capture=True))
    from tinyc.firmware.run import format_run
    print("\n".join(format_run(r)))
    p = np.asarray(r["outputs"][0]["data"], np.float32).reshape(-1)
    pred = (p > 0.5).astype(int)
    print(f"\n{'flower (cm)':<22} {'true class':<11} {'P(virginica) Keras':>18} {'on the M0+':>10}  predicted")
    for x, y, pk, pe, c in zip(x_test, y_test, keras_p, p, pred):
        print(f"{' '.join(f'{v:.1f}' for v in x):<22} {CLASSES[int(y)]:<11} {pk:>18.4f} {pe:>10.4f}  "
              f"{CLASSES[c]}{'' if c == y else '  (wrong)'}")
    m = binary_metrics(y_test, pred)
    (tp, fn), (fp, tn) = m["confusion"]
    same = bool(np.array_equal(pred, (keras_p > 0.5).astype(int)))
    print(f"\naccuracy {m['accuracy']:.3f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
          f"F1 {m['f1']:.3f} (TP {tp}, FN {fn}, FP {fp}, TN {tn}; virginica = positive)")
    print(f"predictions equal Keras's on every test flower: {'yes' if same else 'NO'}; "
          f"{r['instructions']:,} instructions per inference on the Cortex-M0+ (QEMU count, not cycles)")
    uf2 = OUT / "iris" / "firmware" / "build" / "firmware.uf2"
    print(f"\nPico image: {uf2} (hold BOOTSEL, plug in, copy it to the RPI-RP2 drive; output on UART0, GP0/GP1, "
          f"115200 8N1)\nC API: {OUT / 'iris' / 'iris.h'}")
    if not (same and r["outputs_match"]):
        sys.exit("demo failed: the emulated outputs differ from Keras's")
    step("demo finished")
    return dict(run=r, metrics=m, same_as_keras=same)


if __name__ == "__main__":
    main()
