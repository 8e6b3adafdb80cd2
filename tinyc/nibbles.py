"""int4 values packed two per byte, as TFLite stores its INT4 tensors: the flattened tensor's values in order, value
2i in the low nibble of byte i and value 2i + 1 in its high nibble, an odd count leaving the last high nibble 0
(TensorFlow's PackInt4ValuesDensely / UnpackDenseInt4IntoInt8). The IR keeps int4 constants unpacked (ml_dtypes'
int4, one value per element); weights packed this way stay packed in the generated C's flash tables."""
from __future__ import annotations

import ml_dtypes
import numpy as np

INT4_MIN, INT4_MAX = -8, 7


def pack_int4(values) -> np.ndarray:
    """The values (each in -8..7) of any shape as uint8 bytes, two per byte, low nibble first."""
    v = np.asarray(values).astype(np.int64).reshape(-1)
    if v.size and (v.min() < INT4_MIN or v.max() > INT4_MAX):
        raise ValueError("int4 values must lie in -8..7")
    v = np.concatenate([v, np.zeros(v.size % 2, np.int64)]) & 0xF
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8)


def unpack_int4(raw, count: int) -> np.ndarray:
    """`count` int4 values (ml_dtypes' int4) from packed bytes (at least (count + 1) // 2 of them)."""
    b = np.frombuffer(bytes(raw), np.uint8)[:(count + 1) // 2].astype(np.int16)
    pairs = np.stack([b & 0xF, b >> 4], axis=1).reshape(-1)[:count]
    return ((pairs ^ 8) - 8).astype(ml_dtypes.int4)


def packed_bytes(count: int) -> int:
    """Bytes of `count` packed int4 values."""
    return (count + 1) // 2


def c_nibble(table: str, index: str) -> str:
    """C expression (int32_t) of int4 value `index` of the packed uint8 array `table`: the nibble, sign-extended
    with defined arithmetic only ((n ^ 8) - 8), the byte shifted by 0 or 4."""
    return f"(((((int32_t){table}[({index}) >> 1] >> ((({index}) & 1) << 2)) & 15) ^ 8) - 8)"
