"""Calibration for post-training quantization: run the float graph on sample inputs, record each tensor's range.

Inputs come from `.npy` (one model input: N x input shape) or `.npz` (one array per input, by input name or in
order), or are drawn at random (`--calib random`, which the CLI flags loudly: ranges from random data rarely
match real data). The float graph is run by `tinyc.interp`, the executable meaning of every IR op.
"""
from __future__ import annotations

import os

import numpy as np

from .. import interp
from ..errors import TinycError
from ..ir import Graph


def load_calibration(path: str, g: Graph) -> list[np.ndarray]:
    """Per model input, an array [N, *input shape] (float32)."""
    if not os.path.isfile(path):
        raise TinycError(f"calibration file '{path}' not found")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise TinycError(f"cannot read calibration data '{path}' ({str(e).splitlines()[0][:120]}); give a .npy or "
                         ".npz of float arrays") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = list(data.keys())
        by_name = [n for n in g.inputs if n in keys]
        arrays = [data[n] for n in g.inputs] if len(by_name) == len(g.inputs) else [data[k] for k in keys]
    else:
        arrays = [data]
    return shape_samples(arrays, g, path)


def shape_samples(arrays: list, g: Graph, where: str = "calibration data") -> list[np.ndarray]:
    if len(arrays) != len(g.inputs):
        raise TinycError(f"{where} holds {len(arrays)} array(s) but the model has {len(g.inputs)} input(s)")
    out = []
    for a, name in zip(arrays, g.inputs):
        a = np.asarray(a)
        if a.dtype.kind not in "fiu":
            raise TinycError(f"{where}: array for input '{name}' is of type {a.dtype}; give numbers")
        shape = g.tensors[name].shape
        size = int(np.prod(shape))
        if a.size == 0 or a.size % size:
            raise TinycError(f"{where}: array of shape {a.shape} does not hold whole samples of input '{name}' "
                             f"with shape {shape}")
        a = a.astype(np.float32).reshape((-1, *shape))
        if not np.all(np.isfinite(a)):
            raise TinycError(f"{where}: input '{name}' contains NaN or Inf")
        out.append(a)
    if len({a.shape[0] for a in out}) != 1:
        raise TinycError(f"{where}: every input needs the same number of samples")
    return out


def random_calibration(g: Graph, samples: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((samples, *g.tensors[n].shape)).astype(np.float32) for n in g.inputs]


def collect_ranges(g: Graph, samples: list[np.ndarray], progress=None, observe=None) -> dict[str, tuple[float, float]]:
    """(min, max) over all samples of every tensor computed at run time (inputs included). `progress(done,
    total)` is called after each sample, `observe(env)` with each sample's tensors (for values inside a layer). A
    graph with streaming state runs the samples as consecutive frames of one stream from the initial state (its
    state tensors' ranges included), as the deployed model would."""
    n = samples[0].shape[0]
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    state = None
    for s in range(n):
        env, state = interp.step(g, [a[s] for a in samples], state, keep_all=True)
        for name, value in env.items():
            if g.tensors[name].is_const or value.size == 0:
                continue
            vmin, vmax = float(np.min(value)), float(np.max(value))
            lo[name] = min(lo.get(name, vmin), vmin)
            hi[name] = max(hi.get(name, vmax), vmax)
        if observe is not None:
            observe(env)
        if progress is not None:
            progress(s + 1, n)
    return {k: (lo[k], hi[k]) for k in lo}
