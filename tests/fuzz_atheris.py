"""Coverage-guided fuzzing of the frontends with atheris (libFuzzer for Python), run by hand:

    pip install atheris
    python tests/fuzz_atheris.py --seeds fuzz-corpus/      # once: write the seed models to start from
    python tests/fuzz_atheris.py fuzz-corpus/ -atheris_runs=20000 -max_len=200000

Each input is a model file: its first byte picks the extension (.onnx, .tflite, .keras, .h5), the rest is the
file. `compile_model` must either compile it or raise TinycError with a one-line message; anything else (another
exception, a crash, a hang past -timeout) is a finding, saved by libFuzzer as crash-<hash> in the working
directory. The same contract as tests/test_fuzz_frontends.py, which runs a fixed corpus in `make test`.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

EXTS = [".onnx", ".tflite", ".keras", ".h5"]
SEED_KINDS = {"onnx": 0, "tflite": 1, "tflite_int8": 1, "keras": 2, "h5": 3}
TMP = tempfile.mkdtemp(prefix="tinyc-atheris-")


def one_input(data: bytes) -> None:
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    if not data:
        return
    path = os.path.join(TMP, "model" + EXTS[data[0] % len(EXTS)])
    with open(path, "wb") as f:
        f.write(data[1:])
    try:
        compile_model(path)
    except TinycError as e:
        message = str(e)
        if "\n" in message or not message:
            raise AssertionError(f"not one line: {message!r}")


def write_seeds(directory: Path) -> None:
    import fuzz_corpus
    directory.mkdir(parents=True, exist_ok=True)
    for kind, data in fuzz_corpus.seed_files(Path(TMP) / "seeds").items():
        (directory / f"seed-{kind}").write_bytes(bytes([SEED_KINDS[kind]]) + data)
    print(f"wrote {len(SEED_KINDS)} seed inputs into {directory}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        write_seeds(Path(sys.argv[2]))
        return
    import atheris
    from tinyc.keras_runtime import import_keras
    import_keras()                                   # TensorFlow once, before fuzzing starts
    with atheris.instrument_imports(include=["tinyc"]):
        import tinyc.compiler  # noqa: F401
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
