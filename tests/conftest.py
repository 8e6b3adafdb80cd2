import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import threading  # noqa: E402

from hypothesis import settings as _hypothesis_settings  # noqa: E402

# `make test` is deterministic: hypothesis draws the same examples every run (a red CI then means a change broke
# something, not that a new random example turned up). `make test-full` (TINYC_FULL=1) explores afresh; what it
# finds goes into the tests as an @example.
_hypothesis_settings.register_profile("tinyc", derandomize=not os.environ.get("TINYC_FULL"), database=None)
_hypothesis_settings.load_profile("tinyc")

import pytest  # noqa: E402


class _LazyZoo:
    """Builds each model of tests/model_zoo.py on first request (all its formats at once), caches the paths."""

    def __init__(self, directory):
        self.directory = directory
        self._paths = {}
        self._lock = threading.Lock()

    def path(self, name: str, fmt: str) -> str:
        with self._lock:
            if name not in self._paths:
                import model_zoo
                self._paths[name] = model_zoo.export(name, self.directory)
            return self._paths[name][fmt]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """Session-wide lazy model zoo: `zoo.path("cnn_residual", "onnx")` -> a file built once per pytest run."""
    return _LazyZoo(tmp_path_factory.mktemp("zoo"))

@pytest.fixture(scope="session")
def int8_models(tmp_path_factory):
    """Session-wide lazy int8 zoo (tests/int8_zoo.py): `int8_models("ds_cnn", float_io=False)` -> a .tflite made
    by TFLiteConverter once per pytest run."""
    directory, cache, lock = tmp_path_factory.mktemp("int8"), {}, threading.Lock()

    def get(name, float_io=False):
        import int8_zoo
        with lock:
            key = (name, float_io)
            if key not in cache:
                suffix = "_float_io" if float_io else ""
                cache[key] = int8_zoo.to_int8_tflite(int8_zoo.build(name), directory / f"{name}{suffix}.tflite",
                                                     float_io)
            return cache[key]
    return get


import shutil as _shutil
import subprocess as _subprocess

import pytest as _pytest

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror"]


@_pytest.fixture
def c_compile():
    """Compile a generated library's .c files with the project's warning set (host gcc); returns the objects."""
    def run(lib, out_dir, cc="gcc", flags=("-O2",)):
        from tinyc.compiler import write_library
        write_library(lib, str(out_dir), force=True)
        objs = []
        for name in lib.files:
            if name.endswith(".c"):
                obj = out_dir / (name[:-2] + ".o")
                res = _subprocess.run([cc, *WARNINGS, *flags, "-c", str(out_dir / name), "-o", str(obj)],
                                      capture_output=True, text=True)
                assert res.returncode == 0, f"{cc} {' '.join(flags)} failed on {name}:\n{res.stderr[:3000]}"
                objs.append(obj)
        return objs
    return run


def have(tool):
    return _shutil.which(tool) is not None


@pytest.fixture(scope="session")
def firmware_models(zoo, tmp_path_factory):
    """The firmware tests' models (tests/firmware/firmware_models.py), built on first request. Defined here: a
    second conftest.py in tests/firmware would shadow this module's name for the tests that import from it."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent / "firmware"))
    from firmware_models import FirmwareModels
    return FirmwareModels(zoo, tmp_path_factory.mktemp("firmware_models"))
