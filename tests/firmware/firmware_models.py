"""The firmware test models: an MLP, a depthwise CNN and a residual CNN, each as float Keras and int8 TFLite (used
by the firmware_models fixture in tests/conftest.py, once per session, and by bench/firmware.py)."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # model_zoo, int8_zoo

# name -> (kind, builder name): float models come from model_zoo (Keras), int8 ones from int8_zoo (TFLite,
# int8 inputs and outputs, converted by TensorFlow: the oracle is TFLite's interpreter).
FIRMWARE_MODELS = {
    "mlp_float": ("float", "mlp_tanh"),
    "depthwise_float": ("float", "cnn_depthwise"),
    "residual_float": ("float", "cnn_residual"),
    "mlp_int8": ("int8", "mlp_heads"),
    "depthwise_int8": ("int8", "ds_cnn"),
    "residual_int8": ("int8", "residual_cnn"),
}


class FirmwareModels:
    """Model files by FIRMWARE_MODELS name, built on first request (float ones through the session's zoo)."""

    def __init__(self, zoo, directory: Path):
        self.zoo, self.directory, self._paths, self._lock = zoo, directory, {}, threading.Lock()

    def path(self, name: str) -> str:
        kind, builder = FIRMWARE_MODELS[name]
        if kind == "float":
            return self.zoo.path(builder, "keras")
        with self._lock:
            if name not in self._paths:
                import int8_zoo
                self._paths[name] = int8_zoo.to_int8_tflite(int8_zoo.build(builder), self.directory / f"{name}.tflite")
            return self._paths[name]
