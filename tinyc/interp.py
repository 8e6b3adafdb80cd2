"""A numpy interpreter for the IR: the executable definition of what each op means.

Used by tests (a pass must not change what a graph computes; a frontend must compute what its reference
runtime computes) and by constant folding. Plain and slow on purpose: clarity over speed.
"""
from __future__ import annotations

import numpy as np

from . import activations
from .errors import TinycError
from .ir import Graph, Node


def _pad_nhwc(x, pads, value=0.0):
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def conv2d(x, w, b, strides, dilations, pads, groups):
    """x[N,H,W,C], w[O,KH,KW,C/groups] -> [N,OH,OW,O]."""
    x = _pad_nhwc(x.astype(np.float64), pads)
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    sh, sw = strides
    dh, dw = dilations
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (wd - (kw - 1) * dw - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, oh, ow, o))
    for ky in range(kh):
        for kx in range(kw):
            patch = x[:, ky * dh: ky * dh + (oh - 1) * sh + 1: sh, kx * dw: kx * dw + (ow - 1) * sw + 1: sw, :]
            for g in range(groups):
                out[..., g * og:(g + 1) * og] += patch[..., g * cg:(g + 1) * cg] @ w[g * og:(g + 1) * og, ky, kx, :].T
    if b is not None:
        out += b
    return out


def pool2d(x, kind, kernel, strides, pads, count_include_pad=False):
    n, h, wd, c = x.shape
    kh, kw = kernel
    sh, sw = strides
    t, l, bo, r = pads
    fill = -np.inf if kind == "max" else 0.0
    xp = _pad_nhwc(x.astype(np.float64), pads, fill)
    ones = _pad_nhwc(np.ones((1, h, wd, 1)), pads, 0.0)
    oh = (h + t + bo - kh) // sh + 1
    ow = (wd + l + r - kw) // sw + 1
    out = np.zeros((n, oh, ow, c))
    for y in range(oh):
        for xx in range(ow):
            win = xp[:, y * sh: y * sh + kh, xx * sw: xx * sw + kw, :]
            if kind == "max":
                out[:, y, xx, :] = win.max(axis=(1, 2))
            else:
                cnt = kh * kw if count_include_pad else ones[:, y * sh: y * sh + kh, xx * sw: xx * sw + kw, :].sum()
                out[:, y, xx, :] = win.sum(axis=(1, 2)) / cnt
    return out


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def run_node(g: Graph, node: Node, env: dict) -> list:
    ins = [env[i] if i in env else g.tensors[i].data for i in node.inputs]
    a = node.attrs
    act = a.get("activation")
    op = node.op
    if op == "Conv2D":
        y = conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a["strides"], a["dilations"], a["pads"],
                   a["groups"])
    elif op == "Dense":
        y = ins[0].astype(np.float64) @ ins[1].T.astype(np.float64)
        if len(ins) > 2:
            y = y + ins[2]
    elif op in ("Add", "Sub", "Mul", "Div"):
        y = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](
            ins[0].astype(np.float64), ins[1].astype(np.float64))
    elif op == "Activation":
        y = activations.apply(a, ins[0].astype(np.float64))
    elif op == "ScaleShift":
        y = ins[0] * ins[1] + ins[2]
    elif op == "BatchNorm":
        x, gamma, beta, mean, var = ins
        y = (x - mean) / np.sqrt(var + a["epsilon"]) * gamma + beta
    elif op == "Softmax":
        y = softmax(ins[0].astype(np.float64), a["axis"])
    elif op in ("MaxPool2D", "AvgPool2D"):
        y = pool2d(ins[0], "max" if op == "MaxPool2D" else "avg", a["kernel"], a["strides"], a["pads"],
                   a.get("count_include_pad", False))
    elif op == "Mean":
        y = ins[0].mean(axis=tuple(a["axes"]), keepdims=a["keepdims"])
    elif op in ("Reshape", "Identity"):
        y = ins[0]
    elif op == "Transpose":
        y = ins[0].transpose(a["perm"])
    elif op == "Concat":
        y = np.concatenate(ins, axis=a["axis"])
    elif op == "Pad":
        y = np.pad(ins[0], a["pads"], constant_values=a.get("value", 0.0))
    else:
        raise TinycError(f"the interpreter has no rule for op '{op}'")
    if act is not None and op != "Activation":
        y = activations.apply(act, y)
    out = g.tensors[node.outputs[0]]
    y = np.asarray(y, dtype=out.dtype)
    if op in ("Reshape", "Identity"):
        y = y.reshape(out.shape)
    elif y.shape != tuple(out.shape):
        raise TinycError(f"node '{node.name}' ({op}) computes shape {y.shape} but its output is declared "
                         f"{tuple(out.shape)}")
    return [y]


def run(g: Graph, inputs: dict | list, keep_all: bool = False) -> dict:
    """Evaluate the graph on `inputs` (dict by name, or list in g.inputs order). Returns outputs by name
    (every tensor when `keep_all`)."""
    if not isinstance(inputs, dict):
        inputs = dict(zip(g.inputs, inputs))
    env = {k: np.asarray(v, dtype=g.tensors[k].dtype).reshape(g.tensors[k].shape) for k, v in inputs.items()}
    for node in g.nodes:
        for name, val in zip(node.outputs, run_node(g, node, env)):
            env[name] = val
    return env if keep_all else {o: env[o] if o in env else g.tensors[o].data for o in g.outputs}
