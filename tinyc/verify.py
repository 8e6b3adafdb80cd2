"""`tinyc verify`: compile the generated C for the host with sanitizers, run it, compare with the reference.

float32 criterion: max |ours - reference| <= 1e-4 * (1 + max |reference|), per output (and per layer).
int8 criterion: bit-exact — zero differing bytes (`mismatched_bytes`; `max_abs_diff` in LSBs says how far off).
Quantized ONNX (QDQ) models: a float output that a Dequantize computes from int8 may differ from onnxruntime's
by one LSB (its scale) + 1e-6, because onnxruntime rounds differently from our TFLite-style integer kernels
(docs/onnx-qdq.md); such rows also count the values that differ at all (`off_by_lsb`).

The oracle is named in the report (`oracle`: onnxruntime, onnx-reference, keras, tflite, or tflite-micro). An ONNX
model on 4- or 2-bit integers runs in onnx's reference evaluator (reference.py says why). A .tflite model that
TFLite's interpreter refuses to load or allocate is run by TFLite Micro's interpreter instead (`oracle_reason`
says why, `oracle_version` which build), with the same bar. TFLite Micro's FULLY_CONNECTED requantizes
differently from TFLite's reference kernels, which tinyc follows, so a model with one may fail against it by 1-2
LSB: `oracle_note` then says so (docs/int8-numerics.md 5.5).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .codegen.emit import _env
from .codegen.weight_storage import weight_form
from .frontends.rounded_weights import rounded_model_file
from .codegen.literals import C_STORAGE, c_storage_dtype, c_type, from_c_storage, to_c_storage
from .quant.params import scale_of, zero_point_of
from .quant.tflite_writer import write_tflite
from .frontends.tflite_hybrid import dequantized_model_file
from .compiler import Compiled, compile_model, write_library
from .errors import TinycError
from .memory_report import state_rows
from .ops.opdef import integer_range
from .reference import run_reference
from .schedule.stream_input import streamed_inputs

HOST_CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-O1", "-g",
               "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def tolerance(ref: np.ndarray) -> float:
    finite = np.asarray(ref)[np.isfinite(ref)]    # (inf: a reduction over an empty set)
    return 1e-4 * (1.0 + float(np.max(np.abs(finite)))) if finite.size else 1e-4


def lsb_tolerance(compiled: Compiled, name: str) -> float | None:
    """One LSB + 1e-6 for an output of an ONNX QDQ model that a Dequantize computes from int8 (onnxruntime's
    rounding is not ours); None (the usual criterion) otherwise, e.g. with --quantize, whose reference is
    TFLite's kernels, bit for bit."""
    g = compiled.plan.graph
    if g.source_format != "onnx" or compiled.quantized is not None:
        return None
    p = g.producer(name)
    if p is None or p.op != "Dequantize":
        return None
    return scale_of(g.tensors[p.inputs[0]].quant) + 1e-6


def uses_simd(compiled: Compiled) -> bool:
    """The library has fast kernels with a DSP path and a plain path (runtime_c/tinyc_simd.h)."""
    return "tinyc_simd.h" in compiled.library.files


def build_host_runner(compiled: Compiled, build_dir: Path, samples: int, trace: bool, defines=()) -> Path:
    lib = compiled.library
    write_library(lib, str(build_dir), force=True)
    g = compiled.plan.graph
    streamed = streamed_inputs(g)       # (its rows: the runner's <p>_input_rows)
    io = lambda names: [dict(index=k, size=g.tensors[n].size, ctype=c_type(g.tensors[n].dtype),  # noqa: E731
                             streamed=n in streamed) for k, n in enumerate(names)]
    runner = _env().get_template("host_runner.c.j2").render(p=lib.prefix, P=lib.prefix.upper(), samples=samples,
                                                             inputs=io(g.inputs), outputs=io(g.outputs))
    (build_dir / "runner.c").write_text(runner)
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise TinycError("no host C compiler found; install gcc to use `tinyc verify`")
    exe = build_dir / "runner"
    cmd = [cc, *HOST_CFLAGS, *(["-DTINYC_TRACE"] if trace else []), *(f"-D{d}" for d in defines), "-I", str(build_dir),
           str(build_dir / f"{lib.prefix}.c"), str(build_dir / "runner.c"), "-o", str(exe), "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise TinycError(f"generated C failed to compile with gcc (a tinyc bug; please report it): "
                         f"{res.stderr.strip().splitlines()[0] if res.stderr.strip() else res.returncode}")
    return exe


def quantize_array(x: np.ndarray, q, dtype: str = "int8") -> np.ndarray:
    """float -> int8 (or int16, 16x8) as TFLite's QUANTIZE (and our `<name>_quantize_input`): zp + round(x /
    scale), halves away from zero, division in float32, saturated."""
    lo, hi = integer_range(dtype)
    r = np.asarray(x, np.float32) / np.float32(scale_of(q))
    r = np.where(np.isnan(r), 0, np.trunc(r + np.copysign(np.float32(0.5), r)))
    r = np.clip(r, lo - zero_point_of(q), hi - zero_point_of(q))
    return (r + zero_point_of(q)).astype(dtype)


def _samples_from(arrays, tensors, samples, seed):
    """Per input, an array [S, *shape] of the input's dtype. `arrays`: user arrays (shape, or [S, *shape]);
    float arrays given for an int8 or int16 (16x8) input are quantized with its scale and zero point. None: random
    data (standard normal floats; uniform int8 / int16 over the whole range)."""
    shapes = [t.shape for t in tensors]
    if arrays is None:
        rng = np.random.default_rng(seed)
        return [_random_samples(rng, t, samples) for t in tensors]
    if len(arrays) != len(shapes):
        raise TinycError(f"the model has {len(shapes)} input(s) but {len(arrays)} --input file(s) were given")
    out = []
    for a, t in zip(arrays, tensors):
        s = t.shape
        a = np.asarray(a)
        if t.size == 0:     # no values: as many samples as the other inputs have (below)
            out.append(None)
            continue
        if t.dtype in ("int8", "int16") and t.quant is not None:
            lo, hi = integer_range(t.dtype)
            if a.dtype.kind == "f":
                a = quantize_array(a, t.quant, t.dtype)
            elif a.dtype != np.dtype(t.dtype):
                if a.size and (a.min() < lo or a.max() > hi):
                    raise TinycError(f"integer input of type {a.dtype} holds values outside {t.dtype}'s range")
                a = a.astype(t.dtype)
        elif t.dtype != "float32":       # an un-quantized integer or bool input: its values, exactly
            b = a.astype(t.dtype)
            if not np.array_equal(b, a):
                raise TinycError(f"input '{t.name}' is {t.dtype} but the array given for it ({a.dtype}) holds values "
                                 f"{t.dtype} cannot represent")
            a = b
        else:
            a = a.astype(np.float32)
        size = int(np.prod(s))
        if a.size % size:
            raise TinycError(f"input array of shape {a.shape} does not hold whole samples of shape {s}")
        out.append(a.reshape((-1, *s)))
    if len({a.shape[0] for a in out if a is not None}) > 1:
        raise TinycError("every --input must hold the same number of samples")
    n = next((a.shape[0] for a in out if a is not None), 1)
    return [np.zeros((n, *t.shape), t.dtype) if a is None else a for a, t in zip(out, tensors)]


def _random_samples(rng, t, samples: int) -> np.ndarray:
    """Random data for input `t`: standard normal floats, uniform over the whole range for quantized inputs,
    small integers (which no op's arithmetic can overflow) for other integer types, and random bools."""
    shape = (samples, *t.shape)
    if t.dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    if t.quant is not None:          # int8, or int16 (16x8): the whole range
        lo, hi = integer_range(t.dtype)
        return rng.integers(lo, hi + 1, shape).astype(t.dtype)
    if t.dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if t.dtype in C_STORAGE:      # 4- and 2-bit integers: their whole range
        lo, hi = integer_range(t.dtype)
        return rng.integers(lo, hi + 1, shape).astype(t.dtype)
    lo = 0 if t.dtype.startswith("u") else -10
    return rng.integers(lo, 11, shape).astype(t.dtype)


def _to_reference(compiled, name, arr, io_layout):
    """Our API layout -> the reference runtime's layout (only differs for ONNX with --io-layout nhwc). A sample
    of a rank-0 input is a NumPy scalar, which onnxruntime refuses: it goes as a 0-d array."""
    arr = np.asarray(arr)
    if io_layout == "nhwc" and compiled.graph.source_format == "onnx" and arr.ndim in (3, 4):
        return arr.transpose((0, arr.ndim - 1) + tuple(range(1, arr.ndim - 1)))
    return arr


def _from_reference(compiled, arr, io_layout):
    if io_layout == "nhwc" and compiled.graph.source_format == "onnx" and arr.ndim == 4:
        return arr.transpose(0, 2, 3, 1)
    return arr


def _read_trace(path: Path, traced: list, g) -> list:
    """Records (tensor id, byte count, bytes) -> per sample a {tensor name: flat array of its dtype}."""
    data = path.read_bytes()
    samples, cur, pos = [], {}, 0
    while pos < len(data):
        tid, nbytes = np.frombuffer(data, np.int32, 2, pos)
        pos += 8
        if tid == 0 and cur:
            samples.append(cur)
            cur = {}
        dtype = g.tensors[traced[tid]].dtype
        dt = np.dtype(c_storage_dtype(dtype))
        cur[traced[tid]] = from_c_storage(np.frombuffer(data, dt, int(nbytes) // dt.itemsize, pos).copy(), dtype)
        pos += int(nbytes)
    if cur:
        samples.append(cur)
    return samples


def _run_in(compiled, data: list, build: Path, per_layer: bool = False, dsp: bool = False):
    """Build the host runner in `build`, run it on `data` (per input [N, ...] of its dtype): outputs per output
    [N, ...], and per-sample traces when `per_layer`. `dsp`: the fast kernels' DSP code paths (emulated in C)
    instead of their plain-C paths."""
    g = compiled.plan.graph
    n = data[0].shape[0] if data else 1      # (a model without inputs: its outputs are constants)
    build.mkdir(parents=True, exist_ok=True)
    exe = build_host_runner(compiled, build, n, per_layer, ("TINYC_SIMD_EMULATE",) if dsp else ())
    in_files = []
    for k, arr in enumerate(data):
        f = build / f"input{k}.bin"
        np.ascontiguousarray(to_c_storage(arr)).tofile(f)     # (4- and 2-bit integers: a byte each)
        in_files.append(str(f))
    out_files = [str(build / f"output{k}.bin") for k in range(len(g.outputs))]
    trace = build / "trace.bin"
    res = subprocess.run([str(exe), *in_files, *out_files, str(trace)], capture_output=True, text=True,
                         timeout=600)
    if res.returncode != 0:
        msg = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[0]
        raise TinycError(f"the generated code failed at run time under the sanitizers: {msg[:300]}")
    ours = [from_c_storage(np.fromfile(f, c_storage_dtype(g.tensors[o].dtype)), g.tensors[o].dtype)
            .reshape((n, *g.tensors[o].shape)) for f, o in zip(out_files, g.outputs)]
    return ours, (_read_trace(trace, compiled.library.traced, g) if per_layer else None)


def run_generated(compiled, inputs: list, dsp: bool = False) -> list:
    """Run a compiled model's C on the host (gcc, sanitizers) on `inputs` (per model input, [N, ...]; floats
    for int8 inputs are quantized like `<name>_quantize_input`). Returns per output [N, ...] in its dtype.
    `dsp`: run the fast kernels' DSP code paths (C emulation of the DSP instructions)."""
    g = compiled.plan.graph
    data = _samples_from(inputs, [g.tensors[n] for n in g.inputs], 0, 0)
    with tempfile.TemporaryDirectory(prefix="tinyc-run-") as tmp:
        return _run_in(compiled, data, Path(tmp), dsp=dsp)[0]


def verify(path: str, inputs=None, samples: int = 3, seed: int = 0, per_layer: bool = False, name=None,
           input_shapes=None, io_layout: str = "nchw", keep_dir: str | None = None, quantize: str | None = None,
           calib=None, progress=None, options=None, state: dict | None = None, hybrid: str = "tflite") -> dict:
    """Compile, run on the host, compare with the reference. With `quantize`, the reference is TFLite's
    reference kernels running the int8 graph tinyc made (written as .tflite): bit-exact. When the library has
    fast kernels, their DSP code paths run too and must give the same bytes as the plain paths
    (`dsp_path_matches`). `options`: from `compiler.codegen_options` (e.g. kernels="reference"). A model with
    streaming state (its own, or ONNX pairs named by `state`) runs the samples as consecutive frames of one
    stream, in the C and in the reference runtime, and every frame's outputs are compared."""
    compiled = compile_model(path, name, input_shapes, io_layout, quantize, calib, progress, options, state, hybrid)
    g = compiled.plan.graph
    data = _samples_from(inputs, [g.tensors[n] for n in g.inputs], samples, seed)
    n = data[0].shape[0] if data else 1
    with tempfile.TemporaryDirectory(prefix="tinyc-verify-") as tmp:
        build = Path(keep_dir) if keep_dir else Path(tmp)
        ours, traces = _run_in(compiled, data, build, per_layer)
        dsp = _run_in(compiled, data, build / "dsp", dsp=True)[0] if uses_simd(compiled) else None
        wanted = sorted({t.source_name for t in g.tensors.values() if t.source_name}) if per_layer else ()
        oracle = {}
        refs, ref_inters = reference_outputs(compiled, path, data, io_layout, build, wanted, fallback=True,
                                             info=oracle, state=state)
    report = {"model": path, "samples": n, **oracle, "outputs": []}
    if g.state:
        report["frames"] = n
        report["state"] = state_rows(compiled)
    worst, ok = 0.0, True
    mismatched, max_diff, any_int = 0, 0, False
    for k, o in enumerate(g.outputs):
        row = compare(ours[k], refs[k], lsb_tolerance(compiled, o))
        row["index"] = k
        report["outputs"].append(row)
        if "mismatched_bytes" in row:
            any_int = True
            mismatched += row["mismatched_bytes"]
            max_diff = max(max_diff, row["max_abs_diff"])
        worst, ok = max(worst, row["max_abs_err"]), ok and row["ok"]
    if dsp is not None:
        report["dsp_path_matches"] = all(np.array_equal(a, b) for a, b in zip(ours, dsp))
        ok = ok and report["dsp_path_matches"]
    report.update(max_abs_err=worst, ok=ok)
    if any_int:
        report.update(mismatched_bytes=mismatched, max_abs_diff=max_diff)
    if per_layer:
        report["layers"], report["first_divergence"] = _compare_layers(compiled, traces, ref_inters)
    if report["oracle"] == "tflite-micro" and not ok:
        known = _tflm_differs(g)
        if known:
            report["oracle_note"] = (f"TFLite Micro's {'/'.join(known)} requantizes differently from TFLite's "
                                     "reference kernels, which tinyc follows: 1-2 LSB apart on some outputs "
                                     "(docs/int8-numerics.md 5.5)")
    return report


def _rounded_oracle(compiled, path: str, tmp: Path, info: dict) -> str:
    """The model file the reference runtime runs: for a model compiled with --weights float16, the model with its
    weights rounded to float16 (frontends/rounded_weights.py, the copy tinyc compiled), said in
    `info["oracle_weights"]`."""
    form = weight_form(getattr(compiled, "weights", None))
    if form is None or form.family != "float":
        return path
    rounded, count = rounded_model_file(path, str(tmp))
    info["oracle_weights"] = (f"the oracle runs the model with its {count} weight tensor(s) of rank >= 2 rounded to "
                              f"{form.name} (ties to even), as --weights {form.name} compiles it" if count else
                              f"the model's weights are {form.name} values already: the oracle runs it as it is")
    return rounded


def reference_outputs(compiled, path: str, data: list, io_layout: str, build: Path, wanted=(), fallback=False,
                      info=None, state=None):
    """The reference runtime on `data` (per input [N, ...], our layout): per output [N, ...] in our layout, and
    the per-sample intermediate tensors named in `wanted`. With --quantize the reference is the int8 graph tinyc
    made, written as .tflite into `build`. `fallback`, `info`: as `reference.run_reference` (TFLite Micro for a
    .tflite model TFLite rejects; which oracle ran). `state`: ONNX streaming state pairs (default: those the model
    was compiled with); the samples are then frames of one stream."""
    g = compiled.plan.graph
    path = _rounded_oracle(compiled, path, build, info if info is not None else {})
    if compiled.quantized is not None:
        path = str(build / "quantized.tflite")
        write_tflite(compiled.quantized, path)
        io_layout = "api"    # the exported model takes and returns the C API's own arrays: nothing to convert
    samples = [[_to_reference(compiled, nm, d[s], io_layout) for nm, d in zip(g.inputs, data)]
               for s in range(data[0].shape[0] if data else 1)]
    if compiled.hybrid == "float":      # the float model: the hybrid layers' weights dequantized, as compiled
        count = dequantized_model_file(path, str(build / "dequantized.tflite"))
        path = str(build / "dequantized.tflite")
        if info is not None:     # (after --weights float16's line, when both apply)
            info["oracle_weights"] = "; ".join(filter(None, [
                info.get("oracle_weights"), f"--hybrid float: the oracle runs the float model, the int8 weights of "
                                            f"its {count} hybrid layer(s) dequantized"]))
    pairs = compiled.state_pairs if state is None else state
    # ONNX pairs start from the state tinyc starts from (zeros or the input's initializer, of the shape it fixed)
    initial = {g.tensors[s].source_name or s: v for s, v in g.initial_state().items()} if pairs else None
    outs, inters = run_reference(path, samples, wanted, fallback, info, pairs, carry_state=bool(g.state),
                                 initial=initial)
    refs = [np.stack([_from_reference(compiled, r[k], io_layout).reshape(g.tensors[o].shape) for r in outs])
            for k, o in enumerate(g.outputs)]
    return refs, inters


def compare(ours: np.ndarray, ref: np.ndarray, lsb: float | None = None) -> dict:
    """One output (or layer) against the reference: float tolerance, or bit-exactness for integers; `lsb`: the
    tolerance of a dequantized output instead, counting the values that differ (by more than 1e-6)."""
    exact = [np.issubdtype(d, np.integer) or d == np.bool_ or d.name in C_STORAGE
             for d in (ours.dtype, np.asarray(ref).dtype)]
    if any(exact):
        diff = np.abs(ours.astype(np.int64) - np.asarray(ref).astype(np.int64))
        bad = int(np.count_nonzero(diff))
        worst = int(diff.max()) if diff.size else 0
        return {"max_abs_err": float(worst), "tolerance": 0.0, "mismatched_bytes": bad, "max_abs_diff": worst,
                "ok": bad == 0}
    ref = np.asarray(ref)
    special = ~np.isfinite(ref)       # inf or NaN (the max over an empty set is -inf): the same, or wrong
    if special.any():
        if not np.array_equal(ours[special], ref[special], equal_nan=True):
            return {"max_abs_err": float("inf"), "tolerance": tolerance(ref), "ok": False}
        ours, ref = ours[~special], ref[~special]
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    if lsb is not None:
        off = int(np.count_nonzero(np.abs(ours - ref) > 1e-6))
        return {"max_abs_err": err, "tolerance": lsb, "off_by_lsb": off, "ok": err <= lsb}
    tol = tolerance(ref)
    return {"max_abs_err": err, "tolerance": tol, "ok": err <= tol}


def _compare_layers(compiled, traces, ref_inters):
    g = compiled.plan.graph
    rows, first = [], None
    producers = {o: node for node in g.nodes for o in node.outputs}
    for tid, tname in enumerate(compiled.library.traced):
        t = g.tensors[tname]
        if not t.source_name:
            continue
        errs = []
        for s, trace in enumerate(traces):
            ref = ref_inters[s].get(t.source_name)
            if ref is None or tname not in trace:
                break
            ours = trace[tname].reshape(t.shape)
            if t.source_perm:
                ours = ours.transpose(t.source_perm)
            if ours.size != ref.size:
                break
            errs.append(compare(ours.reshape(ref.shape), ref, lsb_tolerance(compiled, tname)))
        if not errs:
            continue
        node = producers[tname]
        row = {"layer": node.name, "op": node.op, "tensor": t.source_name,
               "max_abs_err": max(e["max_abs_err"] for e in errs), "tolerance": min(e["tolerance"] for e in errs),
               "ok": all(e["ok"] for e in errs)}
        if node.op == "FusedBlock":     # (its layers run row by row: only the block's output is ever whole)
            row["block_layers"] = [n.name for n in node.attrs["graph"].nodes]
            row["note"] = "a fused block: the outputs of its layers but the last are not traced"
        if "mismatched_bytes" in errs[0]:
            row["mismatched_bytes"] = sum(e["mismatched_bytes"] for e in errs)
        rows.append(row)
        if first is None and not row["ok"]:
            first = node.name
    return rows, first


def _tflm_differs(g) -> list:
    """The TFLite ops in `g` whose TFLite Micro kernels compute differently from TFLite 2.21's reference kernels,
    which tinyc matches: FULLY_CONNECTED, which TFLite Micro requantizes in fixed point (docs/int8-numerics.md
    5). (Its int8 LOGISTIC/TANH measured equal to TFLite's on 409,600 values: not listed.)"""
    return ["FULLY_CONNECTED"] if any(nd.op == "Dense" and g.tensors[nd.outputs[0]].dtype == "int8"
                                      for nd in g.nodes) else []
