"""How much accuracy post-training quantization cost: the float graph against its int8 version on the same
inputs. The int8 graph is run by TFLite's reference kernels (its exported .tflite), which the generated C equals
bit for bit (`tinyc verify` checks that separately)."""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .. import interp
from ..ir import Graph
from .params import scale_of, zero_point_of
from .tflite_writer import write_tflite


def run_int8_reference(q: Graph, samples: list[np.ndarray]) -> list[np.ndarray]:
    """Per output, int8 (16x8: int16) results [N, ...] of the quantized graph `q` on float `samples` (quantized
    like the API's `<name>_quantize_input`), from TFLite's reference kernels."""
    from ..reference import run_tflite
    from ..verify import quantize_array
    n = samples[0].shape[0]
    ins = [quantize_array(a, q.tensors[name].quant, q.tensors[name].dtype) for a, name in zip(samples, q.inputs)]
    with tempfile.TemporaryDirectory(prefix="tinyc-ptq-") as tmp:
        path = os.path.join(tmp, "quantized.tflite")
        write_tflite(q, path)
        outs, _ = run_tflite(path, [[a[s:s + 1].reshape(q.tensors[nm].shape) for a, nm in zip(ins, q.inputs)]
                                    for s in range(n)])
    return [np.stack([o[k].reshape(q.tensors[name].shape) for o in outs]) for k, name in enumerate(q.outputs)]


def quantization_error(float_graph: Graph, q: Graph, samples: list[np.ndarray]) -> list[dict]:
    """Per output: max and mean |float - dequantized int8|, the output's range, and for class scores
    (one vector per sample) how often the arg-max agrees."""
    int8_outs = run_int8_reference(q, samples)
    n = samples[0].shape[0]
    floats = [interp.run(float_graph, [a[s] for a in samples]) for s in range(n)]
    rows = []
    for k, (fname, qname) in enumerate(zip(float_graph.outputs, q.outputs)):
        ref = np.stack([f[fname] for f in floats]).astype(np.float64)
        qt = q.tensors[qname].quant
        deq = scale_of(qt) * (int8_outs[k].astype(np.float64) - zero_point_of(qt))
        err = np.abs(deq - ref.reshape(deq.shape))
        row = {"index": k, "max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()),
               "output_range": float(ref.max() - ref.min()), "output_scale": scale_of(qt)}
        per_sample = ref.reshape(n, -1)
        if per_sample.shape[1] > 1:
            row["argmax_agreement"] = float(np.mean(per_sample.argmax(1) == deq.reshape(n, -1).argmax(1)))
        rows.append(row)
    return rows
