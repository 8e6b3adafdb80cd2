"""`make demo`: build a small keyword-spotting-style CNN in Keras, compile it with tinyc into C and Pico firmware
(UF2), show where the memory goes, verify the C against Keras on the host, and run the same model object code
under QEMU on the Pico's core with per-layer instruction counts."""
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
OUT = Path(os.environ.get("TINYC_DEMO_OUT", "demo-out"))


def step(msg):
    print(f"\n== {msg}", flush=True)


def sh(*cmd):
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def build_model(path: Path):
    import keras
    from keras import layers
    keras.utils.set_random_seed(7)
    x = keras.Input((49, 10, 1), name="mfcc")          # 49 frames x 10 MFCC features, as in DS-CNN KWS
    y = layers.Conv2D(16, (5, 3), strides=2, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    for _ in range(2):
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU()(y)
        y = layers.Conv2D(16, 1, use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU()(y)
    y = layers.GlobalAveragePooling2D()(y)
    y = layers.Dense(12, activation="softmax", name="keywords")(y)
    model = keras.Model(x, y, name="kws")
    model.save(path)


def main():
    t0 = time.time()
    OUT.mkdir(exist_ok=True)
    model = OUT / "kws.keras"
    step("1/5 build a DS-CNN keyword-spotting model in Keras (random weights)")
    build_model(model)
    print(f"saved {model}")
    step("2/5 compile it to C and firmware for the Raspberry Pi Pico, build the UF2 (arm-none-eabi-gcc)")
    sh("tinyc", "compile", model, "-o", OUT / "kws", "--name", "kws", "--force", "--board", "pico", "--build")
    step("3/5 where the memory goes (arena plan, lower bound, fit on the Pico)")
    sh("tinyc", "report", model, "--board", "pico", "--html", OUT / "kws-memory.html")
    print(f"picture of the arena plan: {OUT / 'kws-memory.html'}")
    step("4/5 verify the C against Keras (host gcc with AddressSanitizer + UBSan, every layer compared)")
    sh("tinyc", "verify", model, "--per-layer", "--samples", "3")
    step("5/5 run the firmware's model object under QEMU (Cortex-M0+ code): instructions per layer, outputs checked")
    sh("tinyc", "run", model, "--board", "pico", "--emulate", "--name", "kws")
    print(f"\nAPI: {OUT / 'kws' / 'kws.h'}")
    print("\n".join(line for line in (OUT / "kws" / "kws.h").read_text().splitlines()
                    if (line.startswith("#define") and not line.endswith("_H")) or line.startswith(("int ", "float *"))))
    print(f"\ndemo finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(f"demo failed at: {' '.join(map(str, e.cmd))}")
