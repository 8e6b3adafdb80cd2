import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import threading  # noqa: E402

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
