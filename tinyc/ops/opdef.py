"""`OpDef`: everything tinyc knows about one IR op, in one place (the way TFLite Micro keeps conv.cc,
conv_common.cc and conv_test.cc side by side, and onnx2c has one class per op).

Every facet is required: a function (or value), or None where the op explicitly does not have it. The
registries the rest of tinyc reads (`tinyc.ops.REGISTRY` and the tables derived from it) come from these
definitions only; tests/ops/test_definitions.py walks them and checks each facet.

Kernel rules receive a kernel context `k` (tinyc.codegen.emit.KernelContext): input/output tensors and shapes,
the C expression of each input (`k.expr(i)`), `k.table(...)` for derived constant arrays, the fused activation
(`k.act`), and `k.params`: what the op's `int8_prepare` computed for this layer (TFLM's Prepare/OpData), shared
by the reference and the fast rule. A rule returns (template, variables, MACs); a fast rule may return None,
and the reference twin is used.

Most ops have one output. An op whose nodes may have more (`outputs`: LSTM with cell_output) returns a tuple
from `evaluate`, one array per output in order; its kernels see output j as `k.outs[j]` and write it through `y`
(j = 0), `y1`, `y2`, ... (each output its own buffer and lifetime; such nodes are never written in place).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import ml_dtypes  # noqa: F401  (registers int4, uint4, int2, uint2 with NumPy: np.dtype("int4"))
import numpy as np

# How a kernel may write its output over its dying input (schedule/overlap.py, docs/memory-plan.md):
#   "elementwise": reads element i before it writes element i, in index order (any lead >= 0 works)
#   "windowed":    a sliding window over NHWC pixels, raster order (overlap.lead_for computes the lead)
#   "alias":       the output is its input's bytes (no copy when the plan can share them)
#   None:          the output gets its own bytes
MEMORY_KINDS = ("elementwise", "windowed", "alias", None)

# How tinyc's own quantizer (quant/ptq.py) treats the op:
#   "own":    its output gets parameters from the calibrated range
#   "shared": its output shares its input's parameters (data movement, max pooling; TFLite requires it)
#   "fixed":  its output has fixed parameters (`fixed_quant`)
#   None:     not quantizable
QUANTIZE_POLICIES = ("own", "shared", "fixed", None)

# Tensor types of un-quantized graphs (the float kernels' `plain_dtypes`); bool is one byte, 0 or 1.
FLOAT = ("float32",)
INTEGERS = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
ALL_DTYPES = FLOAT + INTEGERS + ("bool",)
# ONNX's 4- and 2-bit integers (INT4, UINT4, INT2, UINT2): ml_dtypes' NumPy types in the IR; the C stores them
# unpacked, one value per int8_t / uint8_t (codegen/literals.py). Only the ops that list them take them.
SUB_BYTE_INTEGERS = ("int4", "uint4", "int2", "uint2")
_SUB_BYTE_RANGES = {"int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1), "uint2": (0, 3)}


def integer_range(dtype: str) -> tuple[int, int]:
    """(smallest, largest) value of an integer type, the 4- and 2-bit ones included."""
    if dtype in _SUB_BYTE_RANGES:
        return _SUB_BYTE_RANGES[dtype]
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


@dataclass(frozen=True)
class OpDef:
    name: str
    signature: str                       # inputs, outputs and attributes, as the IR op table shows them
    evaluate: Callable                   # (attrs, [numpy inputs]) -> numpy output: what the op means (a tuple
                                         # of them for a node with several outputs, see `outputs`)
    check: Optional[Callable]            # (graph, node) -> None; raises TinycError for attributes/weights
    float_kernel: Optional[Callable]     # rule for un-quantized tensors of `plain_dtypes` (templates/float/)
    int8_prepare: Optional[Callable]     # (k) -> parameters for both int8 rules; raises where TFLite refuses
    int8_kernel: Optional[Callable]      # plain-C rule computing what TFLite's reference kernel computes
    int8_fast: Optional[Callable]        # optimized rule, byte-identical to int8_kernel, or None
    memory: Optional[str]                # MEMORY_KINDS
    quantize: Optional[str]              # QUANTIZE_POLICIES
    int8_wide_dtypes: tuple = ()         # quantized integer types wider than int8 that int8_kernel reads or writes
                                         # beside int8 tensors (SVDF's int16 memory)
    int16_activations: bool = False      # the int8 rules also compute TFLite's 16x8 scheme: int16 activations
                                         # (per-tensor, zero point 0), int8 weights, int64 bias (docs/int16-numerics.md)
    one_image: bool = False              # the kernels compute one NHWC image (called N times for [N,H,W,C])
    fuses_activation: bool = False       # passes may fold a following activation into it
    moves_data: bool = False             # copies values unchanged (constant folding may run it on int8)
    qdq_rule: Optional[str] = None       # passes/fold_qdq.py's rule for the ONNX QDQ pattern around it
    fixed_quant: Optional[tuple] = None  # (scale, zero_point) with quantize == "fixed"
    plain_dtypes: tuple = FLOAT          # tensor types float_kernel handles (un-quantized tensors)
    int8_plain_dtypes: tuple = ()        # un-quantized integer types int8_kernel reads or writes beside quantized
                                         # int8 tensors (ArgMinMax's indices out, Gather's indices in)
    work: Optional[Callable] = None      # (graph, node) -> bytes of arena scratch every kernel of the op needs
                                         # during its layer (recurrent state, gate buffers), or None: none. The
                                         # planner counts it (with a fast kernel's own, which follows it) and the
                                         # kernel gets it as `k.work`
    outputs: Optional[Callable] = None   # (attrs) -> how many outputs a node of the op has, for an op where an
                                         # attribute asks for more than one (LSTM's cell_output); None: one.
                                         # Kernels write output j through `y` (j = 0), `y1`, `y2`, ... Nodes with
                                         # several outputs are never written in place (schedule/overlap.py)


def output_count(definition: OpDef, attrs: dict) -> int:
    """How many outputs a node of the op with these attributes has (OpDef.outputs; one for most ops)."""
    return 1 if definition.outputs is None else int(definition.outputs(attrs))
