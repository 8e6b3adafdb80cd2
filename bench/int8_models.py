"""int8 figures: the DS-CNN keyword-spotting model and MobileNetV2 0.35 @144x144 converted by TFLite (fully
integer), compiled by tinyc: MACs, arena, weights, Cortex-M0+/M4 code size of the reference kernels, and the
bit-exactness check against TFLite's reference kernels. Run: python bench/int8_models.py"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CPUS = {"M0+": ["-mcpu=cortex-m0plus"], "M4": ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]}


def text_bytes(c_file: Path, flags) -> int:
    obj = c_file.with_suffix(".o")
    subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-O2", "-mthumb", *flags, "-ffunction-sections",
                    "-I", str(c_file.parent), "-c", str(c_file), "-o", str(obj)], check=True)
    out = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[1].split()[0])


def report(name: str, path: Path, samples: int) -> None:
    from tinyc.compiler import compile_model, write_library
    from tinyc.verify import verify
    c = compile_model(str(path))
    out = path.parent / f"{name}_c"
    write_library(c.library, str(out), force=True)
    sizes = ""
    if shutil.which("arm-none-eabi-gcc"):
        sizes = ", flash (code + weights) " + ", ".join(f"{cpu} {text_bytes(out / (c.library.prefix + '.c'), f):,} B"
                                      for cpu, f in CPUS.items())
    r = verify(str(path), samples=samples, seed=1)
    print(f"{name}: {c.library.macs:,} MACs, arena {c.library.arena_bytes:,} B (lower bound "
          f"{c.plan.lower_bound:,}), weights {c.library.weight_bytes:,} B{sizes}; verify: "
          f"{r['mismatched_bytes']} differing bytes on {samples} random inputs")


def main():
    import int8_zoo
    from test_mobilenet import SHAPE, calibrate_batchnorm

    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        report("ds_cnn", Path(int8_zoo.to_int8_tflite(int8_zoo.build("ds_cnn"), d / "ds_cnn.tflite")), 20)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(input_shape=SHAPE[1:], alpha=0.35, weights=None, classes=10)
        calibrate_batchnorm(keras, model, np.random.default_rng(0))
        report("mobilenetv2_035_144", Path(int8_zoo.to_int8_tflite(model, d / "mbv2.tflite")), 4)


if __name__ == "__main__":
    main()
