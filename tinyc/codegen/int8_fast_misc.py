"""Fast int8 pooling, Add/Sub/Mul and activation rules. Placeholder: none yet (reference kernels are used)."""
from __future__ import annotations

KERNELS = {}
