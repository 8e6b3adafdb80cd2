"""tinyc as an ONNX backend (`onnx.backend.base.Backend`), the interface ONNX's backend test suite drives.

`TinycBackend.prepare(model)` checks the model; `rep.run(inputs)` binds the model's *parameter inputs* (graph
inputs that feed an op at a parameter position, `PARAMETER_INPUTS`: weights, biases, norm scales, clip bounds,
pads, shapes, axes, RNN weights, quantization scales and zero points, ...) to the values given, as a deployed model
carries them, keeps the other inputs runtime inputs of the C API, compiles the model with tinyc, builds the C for
the host (gcc, AddressSanitizer + UBSan, -O0: the build is per test case) and runs it. The compiled program is
cached per set of bound values (and input shapes). Outputs come back in ONNX's layout (the C API of an ONNX model
takes and returns the model's own layout, NCHW for images) and in the dtypes the model declares.

A refusal is the `TinycError` tinyc raises, with its one-line message. Generated C that does not compile, or that
fails at run time, raises `GeneratedCodeError`: that is a tinyc bug, not a refusal.

The second half of this module is the bookkeeping of ONNX's backend test suite, shared by
`bench/onnx_conformance.py` and `tests/onnx_backend/`: loading the cases the installed onnx wheel carries (node
tests are generated in memory by onnx's loader; the pytorch-converted and pytorch-operator sets are data files in
the wheel), the op type a case tests, which cases are out of scope, and a short reason for each refusal.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from .codegen.literals import C_STORAGE, c_storage_dtype, from_c_storage, to_c_storage
from .errors import TinycError

# ONNX op type -> positions of its inputs that are parameters (bound to the given values as constants); every other
# input of a node is data. Graph inputs feeding any node at one of these positions are parameter inputs.
PARAMETER_INPUTS: dict[str, tuple[int, ...]] = {
    # weights and biases
    "Conv": (1, 2), "ConvTranspose": (1, 2), "ConvInteger": (1, 2, 3), "DeformConv": (1, 3), "Gemm": (1, 2),
    "PRelu": (1,),
    # normalization: scale, bias, mean, variance
    "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2), "RMSNormalization": (1,),
    # bounds, pad amounts and values
    "Clip": (1, 2), "Pad": (1, 2, 3), "CenterCropPad": (1,), "Dropout": (1, 2),
    # shapes, axes, sizes, counts
    "Reshape": (1,), "Slice": (1, 2, 3, 4), "Tile": (1,), "Expand": (1,), "Split": (1,), "Squeeze": (1,),
    "Unsqueeze": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "TopK": (1,), "CumSum": (1,), "OneHot": (1, 2),
    "Range": (0, 1, 2), "ConstantOfShape": (0,), "Trilu": (1,), "ReverseSequence": (1,), "MaxUnpool": (2,),
    "AffineGrid": (1,), "Col2Im": (1, 2), "DFT": (1, 2), "STFT": (1, 2, 3),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
    # constant indices of data movement (issue 17: Gather / GatherElements with constant indices)
    "Gather": (1,), "GatherElements": (1,), "GatherND": (1,), "ScatterElements": (1,), "ScatterND": (1,),
    "Scatter": (1,),
    # recurrent nets: W, R, B, sequence_lens, initial_h, initial_c, P
    "LSTM": (1, 2, 3, 4, 5, 6, 7), "GRU": (1, 2, 3, 4, 5), "RNN": (1, 2, 3, 4, 5),
    # quantization: scales and zero points (and QLinearConv's weights and bias)
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "MatMulInteger": (2, 3),
    "QLinearConv": (1, 2, 3, 4, 5, 6, 7, 8), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    # detection post-processing thresholds, rotary caches, window sizes
    "NonMaxSuppression": (2, 3, 4), "RotaryEmbedding": (1, 2),
    "HannWindow": (0,), "HammingWindow": (0,), "BlackmanWindow": (0,), "MelWeightMatrix": (0, 1, 2, 3, 4),
}

# gcc flags of the per-case host build: the project's warnings (generated C must be warning-free), no optimisation
# (the build dominates a test case's time), and the sanitizers, so that an out-of-bounds access is a failure
# instead of a silently wrong or lucky result.
HOST_CFLAGS = ["-std=c99", "-O0", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-fsanitize=address,undefined",
               "-fno-sanitize-recover=all"]
RUN_TIMEOUT = 120     # seconds for one run of a compiled case
_RUNNER = "tinyc_backend_runner"


class GeneratedCodeError(RuntimeError):
    """The C tinyc generated did not compile, or failed at run time (a tinyc bug, not a refusal)."""


def parameter_inputs(model: onnx.ModelProto) -> list[str]:
    """The graph inputs (not initializers) that feed some node at a parameter position, in graph order. Not where
    every other input of that node is a constant: then this input is the node's data (an embedding: Gather of a
    constant table at indices the model takes as input)."""
    inits = {i.name for i in model.graph.initializer}
    consts = inits | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    params = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        for pos in PARAMETER_INPUTS.get(node.op_type, ()):
            if pos >= len(node.input) or not node.input[pos]:
                continue
            others = [n for k, n in enumerate(node.input) if n and k != pos]
            if others and all(n in consts for n in others):
                continue
            params.add(node.input[pos])
    return [i.name for i in model.graph.input if i.name in params and i.name not in inits]


def runtime_inputs(model: onnx.ModelProto) -> list[str]:
    """The graph inputs the caller feeds (initializers excluded), in graph order."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _declared_dtype(value_info):
    """The NumPy dtype an output is declared with, None when undeclared or not a NumPy type."""
    t = value_info.type
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.elem_type:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type))
    except (KeyError, ValueError, TypeError):
        return None


def _c_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass
class _Program:
    """One compiled and built variant of a model: its runner and the C API's tensors."""
    exe: str
    inputs: list           # per C API input: (shape, dtype)
    outputs: list          # per C API output: (shape, dtype)
    workdir: str


def _runner_source(prefix: str, inputs: list, outputs: list) -> str:
    """A host main() for `prefix`_invoke: reads each input's bytes from a file, writes each output's. Buffers are
    `void *`, which C converts to the API's pointer types implicitly."""
    def nbytes(shape, dtype) -> int:
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    lines = ["#include <stdio.h>", "#include <stdlib.h>", f'#include "{_c_string(prefix)}.h"', ""]
    if inputs:     # (a model whose outputs are all constants has none)
        lines += ["static void *load(const char *path, size_t bytes) {",
                  "  void *buf = malloc(bytes ? bytes : 1);   /* (a zero-size input: an empty file) */",
                  '  FILE *f = fopen(path, "rb");',
                  ("  if (!buf || !f || fread(buf, 1, bytes, f) != bytes) { fprintf(stderr, \"runner: cannot read "
                   "%s\\n\", path); exit(3); }"),
                  "  fclose(f);", "  return buf;", "}", ""]
    lines += ["static int store(const char *path, const void *buf, size_t bytes) {",
              '  FILE *f = fopen(path, "wb");',
              "  if (!f || fwrite(buf, 1, bytes, f) != bytes) return 3;",
              "  return fclose(f) == 0 ? 0 : 3;", "}", "",
              "int main(int argc, char **argv) {",
              f"  if (argc != {1 + len(inputs) + len(outputs)}) return 2;"]
    args = []
    for k, (shape, dtype) in enumerate(inputs):
        lines.append(f"  void *in{k} = load(argv[{1 + k}], {nbytes(shape, dtype)});")
        args.append(f"in{k}")
    for k, (shape, dtype) in enumerate(outputs):
        lines.append(f"  void *out{k} = calloc(1, {max(1, nbytes(shape, dtype))});")
        lines.append(f"  if (!out{k}) return 3;")
        args.append(f"out{k}")
    lines.append(f"  int rc = {prefix}_invoke({', '.join(args)});")
    lines.append('  if (rc != 0) { fprintf(stderr, "runner: invoke returned %d\\n", rc); return 4; }')
    for k, (shape, dtype) in enumerate(outputs):
        lines.append(f"  if (store(argv[{1 + len(inputs) + k}], out{k}, {nbytes(shape, dtype)})) return 3;")
    lines += [f"  free(in{k});" for k in range(len(inputs))]
    lines += [f"  free(out{k});" for k in range(len(outputs))]
    lines += ["  return 0;", "}", ""]
    return "\n".join(lines)


def _first_line(text: str, limit: int = 300) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # gcc: the first diagnostic, not the "In function ..." context line before it
    pick = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
    return pick.strip()[:limit]


def build_program(compiled, workdir: str) -> _Program:
    """Write `compiled`'s library and a runner into `workdir` and build them with gcc (`HOST_CFLAGS`)."""
    from .compiler import write_library
    lib, g = compiled.library, compiled.plan.graph
    write_library(lib, workdir, force=True)
    inputs = [(g.tensors[n].shape, g.tensors[n].dtype) for n in g.inputs]
    outputs = [(g.tensors[n].shape, g.tensors[n].dtype) for n in g.outputs]
    runner = os.path.join(workdir, f"{_RUNNER}.c")
    with open(runner, "w") as f:
        f.write(_runner_source(lib.prefix, inputs, outputs))
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise TinycError("no host C compiler found; install gcc to run models with tinyc's ONNX backend")
    exe = os.path.join(workdir, _RUNNER)
    sources = [os.path.join(workdir, name) for name in sorted(lib.files) if name.endswith(".c")]
    res = subprocess.run([cc, *HOST_CFLAGS, "-I", workdir, *sources, runner, "-o", exe, "-lm"],
                         capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        raise GeneratedCodeError(f"the generated C does not compile: {_first_line(res.stderr)}")
    return _Program(exe, inputs, outputs, workdir)


def run_program(prog: _Program, data: list) -> list:
    """Run a built program on one sample (per C API input an array of its shape and dtype)."""
    in_files, out_files = [], []
    for k, arr in enumerate(data):
        path = os.path.join(prog.workdir, f"input{k}.bin")
        np.ascontiguousarray(to_c_storage(arr)).tofile(path)     # (4- and 2-bit values: a byte each)
        in_files.append(path)
    for k in range(len(prog.outputs)):
        out_files.append(os.path.join(prog.workdir, f"output{k}.bin"))
        if os.path.exists(out_files[-1]):
            os.remove(out_files[-1])
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0")
    try:
        res = subprocess.run([prog.exe, *in_files, *out_files], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise GeneratedCodeError(f"the generated code ran longer than {RUN_TIMEOUT} s") from None
    if res.returncode != 0:
        msg = _first_line(res.stderr) or f"exit code {res.returncode}"
        raise GeneratedCodeError(f"the generated code failed at run time: {msg}")
    return [from_c_storage(np.fromfile(f, c_storage_dtype(dtype)), dtype).reshape(shape)
            for f, (shape, dtype) in zip(out_files, prog.outputs)]


def _key(bind: dict, shapes: list) -> str:
    h = hashlib.sha256()
    for name in sorted(bind):
        a = np.ascontiguousarray(bind[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    h.update(repr(shapes).encode())
    return h.hexdigest()


class TinycRep(BackendRep):
    """A prepared model. `run` compiles it on first use of a set of parameter values (cached) and runs the C."""

    def __init__(self, model: onnx.ModelProto, io_layout: str = "nchw"):
        self.model = model
        self.io_layout = io_layout
        self.inputs = runtime_inputs(model)
        self.parameters = set(parameter_inputs(model))
        self.output_names = [o.name for o in model.graph.output]
        self._output_dtypes = [_declared_dtype(o) for o in model.graph.output]
        self._tmp = tempfile.TemporaryDirectory(prefix="tinyc-backend-")
        self._programs: dict[str, _Program] = {}

    def _values(self, inputs) -> dict:
        if isinstance(inputs, dict):
            missing = [n for n in self.inputs if n not in inputs]
            if missing:
                raise TinycError(f"no value given for input(s) {', '.join(missing)}")
            return {n: inputs[n] for n in self.inputs}
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(inputs) != len(self.inputs):
            raise TinycError(f"the model has {len(self.inputs)} input(s) ({', '.join(self.inputs)}) but "
                             f"{len(inputs)} value(s) were given")
        return dict(zip(self.inputs, inputs))

    def compile(self, bind: dict, data_shapes: list):
        """tinyc's compilation of the model with `bind` made constants and the data inputs of `data_shapes`."""
        from .compiler import compile_graph
        from .frontends import load_model
        path = os.path.join(self._tmp.name, "model.onnx")
        if not os.path.exists(path):
            onnx.save(self.model, path)
        g = load_model(path, data_shapes, self.io_layout, bind)
        return compile_graph(g, "model", "model.onnx")

    def run(self, inputs, **kwargs):
        values = {n: np.asarray(v) for n, v in self._values(inputs).items()}
        bind = {n: v for n, v in values.items() if n in self.parameters}
        data = [values[n] for n in self.inputs if n not in self.parameters]
        shapes = [tuple(d.shape) for d in data]
        key = _key(bind, shapes)
        prog = self._programs.get(key)
        if prog is None:
            compiled = self.compile(bind, shapes)
            workdir = os.path.join(self._tmp.name, f"v{len(self._programs)}")
            os.makedirs(workdir)
            prog = self._programs[key] = build_program(compiled, workdir)
        feeds = []
        for name, arr, (shape, dtype) in zip([n for n in self.inputs if n not in self.parameters], data,
                                             prog.inputs):
            if arr.dtype != np.dtype(dtype):
                raise TinycError(f"input '{name}' is {arr.dtype}; the compiled model takes {dtype}")
            feeds.append(arr.reshape(shape))
        outs = run_program(prog, feeds)
        result = []
        for out, want in zip(outs, self._output_dtypes):
            # the C API's integer type may be narrower than the model's (int32 for int64): same values. Other
            # differences (float for int, int8 for uint8) are returned as they are, for the comparison to see.
            if want is not None and out.dtype != want and np.can_cast(out.dtype, want, "safe") and \
                    out.dtype.kind in "iub" and want.kind in "iub":
                out = out.astype(want)
            result.append(out)
        return namedtupledict("Outputs", self.output_names)(*result)


class TinycBackend(Backend):
    """tinyc behind ONNX's backend interface (CPU: the C runs on the host)."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> TinycRep:
        if not cls.supports_device(device):
            raise TinycError(f"tinyc's ONNX backend runs on the CPU, not on '{device}'")
        onnx.checker.check_model(model)
        return TinycRep(model, kwargs.get("io_layout", "nchw"))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """`node` alone as a model (its inputs typed from `inputs`, at `opset_version` or onnx's newest opset),
        run like `run_model`."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        present = [n for n in node.input if n]
        arrays = [np.asarray(a) for a in (inputs.values() if isinstance(inputs, dict) else inputs)]
        if len(arrays) != len(present):
            raise TinycError(f"node '{node.op_type}' has {len(present)} input(s) but {len(arrays)} value(s) were "
                             "given")
        vis = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
               for n, a in zip(present, arrays)]
        outs = [o for o in node.output if o]
        opset = kwargs.get("opset_version") or onnx.defs.onnx_opset_version()
        model = onnx.helper.make_model(onnx.helper.make_graph([node], node.op_type, vis, [
            onnx.helper.make_empty_tensor_value_info(o) for o in outs]),
            opset_imports=[onnx.helper.make_opsetid("", opset)])
        inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
        if any(o not in inferred for o in outs):
            raise TinycError(f"onnx's shape inference gives no type for the outputs of '{node.op_type}'; run it "
                             "as a model with typed outputs (run_model)")
        del model.graph.output[:]
        model.graph.output.extend(inferred[o] for o in outs)
        return cls.run_model(model, arrays, device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            return Device(device).type == DeviceType.CPU
        except (AttributeError, ValueError):
            return False


prepare = TinycBackend.prepare
run_model = TinycBackend.run_model
run_node = TinycBackend.run_node
supports_device = TinycBackend.supports_device


# -- ONNX's backend test suite --------------------------------------------------------------------------------------

SUITE_KINDS = ("node", "pytorch-converted", "pytorch-operator")

# Tensor element types outside tinyc's scope (issue 17): no microcontroller target computes in them.
OUT_OF_SCOPE_TYPES = {
    "STRING": "string", "FLOAT16": "float16", "DOUBLE": "double", "BFLOAT16": "bfloat16",
    "FLOAT8E4M3FN": "float8", "FLOAT8E4M3FNUZ": "float8", "FLOAT8E5M2": "float8", "FLOAT8E5M2FNUZ": "float8",
    "FLOAT8E8M0": "float8", "FLOAT4E2M1": "float8", "COMPLEX64": "complex", "COMPLEX128": "complex",
}
# Ops that exist for training only: the preview training domain, and the loss functions.
TRAINING_DOMAINS = ("ai.onnx.preview.training",)
TRAINING_OPS = frozenset({"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"})
# Ops that only carry data around a model's real op (used to find the op a multi-node model tests).
GLUE_OPS = frozenset({"Constant", "Identity", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape",
                      "Cast", "Transpose", "Flatten", "Slice", "ConstantOfShape"})


@dataclass
class SuiteCase:
    """One case of ONNX's backend test suite: its model and data sets (inputs, expected outputs)."""
    name: str
    kind: str
    model: onnx.ModelProto | None = None
    model_dir: str | None = None
    data_sets: list = field(default_factory=list)
    op: str = ""

    def load(self) -> SuiteCase:
        """Read an on-disk case's model and data (node cases are in memory already)."""
        if self.model is None and self.model_dir:
            self.model = onnx.load(os.path.join(self.model_dir, "model.onnx"))
            self.data_sets = _read_data_sets(self.model_dir)
        return self


def _to_array(item):
    return onnx.numpy_helper.to_array(item) if isinstance(item, onnx.TensorProto) else item


def _read_data_sets(model_dir: str) -> list:
    """[(inputs, expected outputs)] from a case directory's test_data_set_*/{input,output}_<k>.pb (tensors)."""
    sets = []
    for d in sorted(glob.glob(os.path.join(model_dir, "test_data_set*"))):
        pair = []
        for prefix in ("input", "output"):
            arrays = []
            for k in range(len(glob.glob(os.path.join(d, f"{prefix}_*.pb")))):
                proto = onnx.TensorProto()
                with open(os.path.join(d, f"{prefix}_{k}.pb"), "rb") as f:
                    proto.ParseFromString(f.read())
                arrays.append(onnx.numpy_helper.to_array(proto))
            pair.append(arrays)
        sets.append(tuple(pair))
    return sets


def load_suite(kinds=SUITE_KINDS) -> list[SuiteCase]:
    """The cases of ONNX's backend test suite that the installed onnx carries, with the op type each tests.
    Node cases are generated in memory by onnx's loader (the wheel ships no node data); on-disk cases are read
    lazily (`SuiteCase.load`)."""
    import warnings

    from onnx.backend.test.loader import load_model_tests
    cases = []
    for kind in kinds:
        with warnings.catch_warnings():     # the generators' own overflow warnings (cast tests)
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                tests = load_model_tests(kind=kind)
        for t in tests:
            if t.model is not None:
                sets = [([_to_array(a) for a in ins], [_to_array(a) for a in outs]) for ins, outs in t.data_sets]
                cases.append(SuiteCase(t.name, kind, t.model, None, sets))
            elif t.model_dir is not None:
                cases.append(SuiteCase(t.name, kind, None, t.model_dir))
    by_name = {c.name: c for c in cases}
    for c in cases:
        c.op = main_op(c, by_name)
    return sorted(cases, key=lambda c: (SUITE_KINDS.index(c.kind), c.name))


def _expanded_base(name: str) -> str | None:
    """'test_softmax_axis_0_expanded_ver18' -> 'test_softmax_axis_0' (an expanded function's test)."""
    m = re.match(r"(.*)_expanded(_ver\d+)?$", name)
    return m.group(1) if m else None


def main_op(case: SuiteCase, by_name: dict | None = None) -> str:
    """The ONNX op type a case tests: a node test's node (an expanded function test counts for the function's op);
    for a multi-node model the first op that is not data plumbing (`GLUE_OPS`), else the last."""
    base = _expanded_base(case.name) if case.kind == "node" else None
    if base and by_name and base in by_name and by_name[base] is not case:
        return main_op(by_name[base], by_name)
    model = case.load().model
    nodes = list(model.graph.node)
    if not nodes:
        return "(none)"
    if len(nodes) == 1:
        return nodes[0].op_type
    real = [n for n in nodes if n.op_type not in GLUE_OPS]
    return (real[0] if real else nodes[-1]).op_type


def out_of_scope(model: onnx.ModelProto) -> str | None:
    """Why a case is outside tinyc's scope (input/output types: strings, sequences, maps, optionals, float16,
    double, bfloat16, float8/float4, complex; training-only ops and training mode), or None."""
    for vi in list(model.graph.input) + list(model.graph.output):
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            return {"sequence_type": "sequence", "map_type": "map", "optional_type": "optional",
                    "sparse_tensor_type": "sparse tensor"}.get(kind, str(kind))
        name = onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)
        if name in OUT_OF_SCOPE_TYPES:
            return OUT_OF_SCOPE_TYPES[name]
    for node in model.graph.node:
        if node.domain in TRAINING_DOMAINS or node.op_type in TRAINING_OPS:
            return "training"
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            return "training"      # training_mode input
        if node.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in node.attribute):
            return "training"
    return None


# A TinycError that says the generated code or tinyc itself is at fault: a crash, not a refusal. "malformed node"
# is what a converter's exception on a valid model becomes (ONNX's own test models are valid).
_BUG_MARKERS = ("internal", "a tinyc bug", "malformed node", "failed at run time")

_REASONS = [
    (r"unsupported ONNX op '([^']+)' on computed", "op {0} on computed tensors"),
    (r"unsupported ONNX op '([^']+)'", "op {0} unsupported"),
    (r"ONNX op '([^']+)' .*custom domain", "op {0} (custom domain)"),
    (r"has batch size", "batch"),
    (r"has a rank-\d+ input", "rank"),
    (r"ONNX opset \d+ is not supported", "opset"),
    (r"input '[^']*' has element type|input '[^']*' is \S+; tinyc's runtime tensors are", "dtype: input type"),
    (r"computes on (.+?) tensors; tinyc's (\S+) kernel takes", "dtype: {1} on {0}"),
    (r"opset \d+ cannot be converted", "opset conversion"),
    (r"initializer '[^']*' holds", "dtype: non-numeric constant"),
    (r"is quantized to", "dtype: quantized type"),
    (r"output '[^']*' is uint8", "dtype: uint8 output"),
    (r"output '[^']*' is a constant", "constant output"),
    (r"multiplies two computed tensors", "MatMul of two computed tensors"),
    (r"must be a constant|computed (bias|C input|constant_value|zero point)|needs constant", "computed parameter"),
    (r"dynamic shape", "dynamic shape"),
    (r"cannot infer a static shape", "shape unknown"),
    (r"the ONNX model is inconsistent", "onnx shape inference fails"),
    (r"reads the quantized tensor", "quantized tensor read by a float op"),
    (r"zero-size|zero size", "zero-size tensor"),
]


def is_tinyc_bug(message: str) -> bool:
    low = message.lower()
    return any(m in low for m in _BUG_MARKERS)


def refusal_reason(message: str) -> str:
    """A short, stable form of a refusal's message, to group refusals: 'op X unsupported', 'batch', 'opset',
    'dtype: ...', ...; otherwise the message's first clause with names and numbers blanked."""
    for pattern, reason in _REASONS:
        m = re.search(pattern, message)
        if m:
            return reason.format(*m.groups())
    text = message.split(";")[0]
    text = re.sub(r"'[^']*'", "'_'", text)
    text = re.sub(r"\(node '_'\)|node '_'", "", text)
    text = re.sub(r"[-\d.]+(e[-+]?\d+)?", "N", text)
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)", "[..]", text)
    return " ".join(text.split())[:80]


def classify_error(exc: BaseException) -> tuple[str, str]:
    """(status, detail) of an exception from running a case: 'refused' with its reason for a TinycError, 'wrong'
    for a failed output comparison (AssertionError), 'crash' for anything else (generated code that fails, a
    tinyc exception, a TinycError that names a tinyc bug)."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, TinycError):
        return ("crash", msg) if is_tinyc_bug(msg) else ("refused", refusal_reason(msg))
    if isinstance(exc, AssertionError):
        return "wrong", msg[:500]
    return "crash", f"{type(exc).__name__}: {msg}"[:500]


def _integer_or_bool(dtype) -> bool:
    return dtype.kind in "iub" or dtype.name in C_STORAGE      # (C_STORAGE: the 4- and 2-bit integers)


def compare_outputs(ours, refs) -> str | None:
    """None if `ours` match `refs` (float: max |ours - ref| <= 1e-4 * (1 + max |ref|), NaN and inf in the same
    places; integer and bool: exact; same shapes), else why not."""
    if len(ours) != len(refs):
        return f"{len(ours)} output(s), expected {len(refs)}"
    for k, (o, r) in enumerate(zip(ours, refs)):
        o, r = np.asarray(o), np.asarray(r)
        if o.shape != r.shape:
            return f"output {k}: shape {list(o.shape)}, expected {list(r.shape)}"
        if _integer_or_bool(r.dtype):
            if not _integer_or_bool(o.dtype):
                return f"output {k}: {o.dtype} values, expected {r.dtype}"
            bad = int(np.count_nonzero(o.astype(np.int64) != r.astype(np.int64)))
            if bad:
                return f"output {k}: {bad} of {r.size} integer value(s) differ"
            continue
        o64, r64 = o.astype(np.float64), r.astype(np.float64)
        special = ~np.isfinite(r64)
        if not np.array_equal(np.isnan(o64), np.isnan(r64)) or \
                not np.array_equal(o64[special & ~np.isnan(r64)], r64[special & ~np.isnan(r64)]):
            return f"output {k}: NaN or inf in other places than the reference"
        fin = np.isfinite(r64)
        if not np.all(np.isfinite(o64[fin])):
            return f"output {k}: NaN or inf where the reference is finite"
        if fin.any():
            err = float(np.max(np.abs(o64[fin] - r64[fin])))
            tol = 1e-4 * (1 + float(np.max(np.abs(r64[fin]))))
            if err > tol:
                return f"output {k}: max abs error {err:.3g} > tolerance {tol:.3g}"
    return None


def run_case(case: SuiteCase) -> tuple[str, str]:
    """Run one case through the backend: ('pass' | 'wrong' | 'refused' | 'crash' | 'out-of-scope', detail)."""
    case.load()
    scope = out_of_scope(case.model)
    if scope:
        return "out-of-scope", scope
    try:
        rep = TinycBackend.prepare(case.model)
        for inputs, refs in case.data_sets:
            outs = rep.run(inputs)
            why = compare_outputs(list(outs), refs)
            if why:
                return "wrong", why
    except Exception as e:  # noqa: BLE001  (every failure is classified: refusal, bug or crash)
        return classify_error(e)
    return "pass", ""
