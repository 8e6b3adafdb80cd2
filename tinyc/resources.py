"""Where the shipped non-Python files live: inside the wheel (tinyc/templates, ...) or in the source tree."""
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`templates`, `runtime_c` or `boards`."""
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"tinyc installation is incomplete: '{name}' directory not found")
