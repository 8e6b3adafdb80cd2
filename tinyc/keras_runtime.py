"""Importing Keras quietly: TensorFlow's C++ logger writes to the process's stderr at import time, whatever
TF_CPP_MIN_LOG_LEVEL says, and a compiler's stderr is for its own one-line errors."""
import os
import sys

from .errors import TinycError


def import_keras():
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    saved = None
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:   # no real fd 2 (e.g. embedded interpreters): import loudly
        saved = None
    try:
        import keras
        import tensorflow  # noqa: F401  (its C++ logging is initialized here)
    except ImportError as e:
        raise TinycError(f"reading Keras models needs TensorFlow/Keras 3 ({e}); pip install tensorflow") from None
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    return keras
