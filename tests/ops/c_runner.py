"""Run an IR graph's generated C (built for the host with AddressSanitizer and UBSan) on given inputs."""
import subprocess
from pathlib import Path

import numpy as np

from tinyc.codegen.literals import c_storage_dtype, from_c_storage, to_c_storage
from tinyc.compiler import compile_graph
from tinyc.verify import build_host_runner


def run_c(g, inputs, tmp_path: Path, name: str = "ops", options=None) -> list:
    """The outputs of `g`'s C for one sample of every input (numpy arrays in g.inputs order)."""
    compiled = compile_graph(g, name, options=options)
    exe = build_host_runner(compiled, tmp_path, 1, False)
    files = []
    for k, (n, x) in enumerate(zip(g.inputs, inputs)):
        f = tmp_path / f"in{k}.bin"
        np.ascontiguousarray(to_c_storage(np.asarray(x, dtype=g.tensors[n].dtype))).tofile(f)
        files.append(str(f))
    outs = [tmp_path / f"out{k}.bin" for k in range(len(g.outputs))]
    subprocess.run([str(exe), *files, *map(str, outs), str(tmp_path / "t.bin")], check=True)
    return [from_c_storage(np.fromfile(o, c_storage_dtype(g.tensors[n].dtype)), g.tensors[n].dtype)
            .reshape(g.tensors[n].shape) for o, n in zip(outs, g.outputs)]
