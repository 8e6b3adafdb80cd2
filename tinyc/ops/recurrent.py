"""LSTM, GRU and RNN: one direction of a recurrent layer over a whole sequence, batch-major.

One node runs one direction over all T steps of x[B,T,I]. Its output: `output="sequence"` -> h_t for every t,
[B,T,H], h_t stored at the position of the x_t it read (a reverse layer's sequence is in input order, as ONNX's
Y); `"last_h"` -> the final hidden state [B,H] (after the last step in processing order: t=0 for a reverse layer).
An LSTM with `cell_output=True` has a second output, its final cell state c[B,H] (float32; int16 beside an int8
LSTM), beside its sequence or final h (OpDef.outputs): the one way to read the final cell state.
Bidirectional layers are two nodes, one with `reverse`, and a Concat (or the merge op) of their outputs.

Every input is present (frontends give zeros for absent biases, initial states and peepholes; kernels may skip
what is a zero constant). Gate order is Keras's and TFLite's; ONNX's (iofc, zrh) is reordered by its frontend.

  LSTM  x[B,T,I], w[4H,I], r[4H,H], b[4H], h0[B,H], c0[B,H], p[3H]   gates i, f, g, o; p = peepholes (i, f, o)
        z = x_t w^T + h r^T + b
        i = f(clip(z_i + p_i * c))      f = f(clip(z_f + p_f * c))     (input_forget: f = 1 - i)
        g = g(clip(z_g))                c = f * c + i * g              (cell_clip: c = clamp(c, +-cell_clip))
        o = f(clip(z_o + p_o * c))      h = o * h(c)
  GRU   x[B,T,I], w[3H,I], r[3H,H], b[3H], rb[3H], h0[B,H]             gates z, r, n; b input bias, rb recurrent
        z = f(clip(x_t w_z + h r_z + b_z + rb_z))     r = f(clip(x_t w_r + h r_r + b_r + rb_r))
        n = g(clip(x_t w_n + b_n + r * (h r_n + rb_n)))      linear_before_reset (Keras reset_after=True)
        n = g(clip(x_t w_n + b_n + (r * h) r_n + rb_n))      otherwise
        h = (1 - z) * n + z * h
  RNN   x[B,T,I], w[H,I], r[H,H], b[H], h0[B,H]:   h = f(clip(x_t w^T + h r^T + b))

Attributes: `activations`: the (f, g, h) / (f, g) / (f,) activation dicts of tinyc/activations.py; `clip`: ONNX's
threshold on every activation's input (None: none); `cell_clip`: TFLite's clamp of the cell state (LSTM; None:
none); `input_forget` (LSTM), `linear_before_reset` (GRU); `reverse`; `output`.
int8 LSTM: TFLite's integer LSTM, int16 cell state and attribute `hidden_quant`; tinyc/ops/lstm_int8.py. int8 GRU
and RNN: the chain of TFLite int8 ops of one step, looped (attribute `step_quant`); tinyc/ops/gru_rnn_int8.py.
"""
from __future__ import annotations

import numpy as np

from .. import activations
from ..codegen import int8_lstm
from ..codegen.literals import c_float
from ..errors import TinycError
from . import gru_rnn_int8, lstm_int8
from .opdef import OpDef

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# inputs after x, w, r: their names in order, as the signatures show them
STATE_INPUTS = {"LSTM": ("b", "h0", "c0", "p"), "GRU": ("b", "rb", "h0"), "RNN": ("b", "h0")}
OUTPUTS = {"LSTM": ("sequence", "last_h"), "GRU": ("sequence", "last_h"),
           "RNN": ("sequence", "last_h")}
DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "RNN": ("tanh",)}


def default_activations(op: str) -> tuple:
    return tuple({"fn": fn} for fn in DEFAULT_ACTIVATIONS[op])


def hidden_size(g, node) -> int:
    return g.tensors[node.inputs[2]].shape[1]


def _act(a, k, v):
    return activations.apply(a["activations"][k], v)


def _clip(a, v):
    c = a.get("clip")
    return v if c is None else np.clip(v, -c, c)


def _steps(a, T):
    return range(T - 1, -1, -1) if a.get("reverse") else range(T)


def evaluate_lstm(a, ins):
    x, w, r, b, h, c, p = (np.asarray(v, np.float64) for v in ins)
    H = r.shape[1]
    h, c = h.copy(), c.copy()
    ys = np.zeros((x.shape[0], x.shape[1], H))
    for t in _steps(a, x.shape[1]):
        z = x[:, t] @ w.T + h @ r.T + b
        zi, zf, zg, zo = (z[:, k * H:(k + 1) * H] for k in range(4))
        i = _act(a, 0, _clip(a, zi + p[:H] * c))
        f = 1 - i if a.get("input_forget") else _act(a, 0, _clip(a, zf + p[H:2 * H] * c))
        c = f * c + i * _act(a, 1, _clip(a, zg))
        if a.get("cell_clip") is not None:
            c = np.clip(c, -a["cell_clip"], a["cell_clip"])
        o = _act(a, 0, _clip(a, zo + p[2 * H:] * c))
        h = o * _act(a, 2, c)
        ys[:, t] = h
    y = ys if a["output"] == "sequence" else h
    return (y, c) if a.get("cell_output") else y


def evaluate_gru(a, ins):
    x, w, r, b, rb, h = (np.asarray(v, np.float64) for v in ins)
    H = r.shape[1]
    h = h.copy()
    ys = np.zeros((x.shape[0], x.shape[1], H))
    for t in _steps(a, x.shape[1]):
        zx = x[:, t] @ w.T + b
        zh = h @ r[:2 * H].T + rb[:2 * H]
        z = _act(a, 0, _clip(a, zx[:, :H] + zh[:, :H]))
        rr = _act(a, 0, _clip(a, zx[:, H:2 * H] + zh[:, H:]))
        if a.get("linear_before_reset"):
            n = zx[:, 2 * H:] + rr * (h @ r[2 * H:].T + rb[2 * H:])
        else:
            n = zx[:, 2 * H:] + (rr * h) @ r[2 * H:].T + rb[2 * H:]
        h = (1 - z) * _act(a, 1, _clip(a, n)) + z * h
        ys[:, t] = h
    return ys if a["output"] == "sequence" else h


def evaluate_rnn(a, ins):
    x, w, r, b, h = (np.asarray(v, np.float64) for v in ins)
    h = h.copy()
    ys = np.zeros((x.shape[0], x.shape[1], r.shape[1]))
    for t in _steps(a, x.shape[1]):
        h = _act(a, 0, _clip(a, x[:, t] @ w.T + h @ r.T + b))
        ys[:, t] = h
    return ys if a["output"] == "sequence" else h


def check(g, n) -> None:
    """Shapes of weights, biases, states and output agree; attributes are in range."""
    op, a = n.op, n.attrs
    names = ("x", "w", "r") + STATE_INPUTS[op]
    if len(n.inputs) != len(names):
        raise TinycError(f"{op} '{n.name}': {len(n.inputs)} inputs, expected {len(names)} ({', '.join(names)})")
    shape = {k: tuple(g.tensors[t].shape) for k, t in zip(names, n.inputs)}
    if len(shape["x"]) != 3 or len(shape["r"]) != 2:
        raise TinycError(f"{op} '{n.name}': input of shape {shape['x']} and recurrent weights {shape['r']}: "
                         "expected x[B,T,I] and r[G*H,H]")
    B, T, I = shape["x"]
    H, G = shape["r"][1], GATES[op]
    want = dict(w=(G * H, I), r=(G * H, H), b=(G * H,), rb=(G * H,), h0=(B, H), c0=(B, H), p=(3 * H,))
    for k in names[1:]:
        if shape[k] != want[k]:
            raise TinycError(f"{op} '{n.name}': {k} has shape {shape[k]}, expected {want[k]} for input "
                             f"{shape['x']} and hidden size {H}")
    if a.get("output") not in OUTPUTS[op]:
        raise TinycError(f"{op} '{n.name}': output '{a.get('output')}' is not one of {OUTPUTS[op]}")
    acts = a.get("activations")
    if acts is None or len(acts) != len(DEFAULT_ACTIVATIONS[op]):
        raise TinycError(f"{op} '{n.name}': needs {len(DEFAULT_ACTIVATIONS[op])} activations, got {acts}")
    for key in ("clip", "cell_clip"):
        if a.get(key) is not None and not a[key] > 0:
            raise TinycError(f"{op} '{n.name}': {key} must be positive, got {a[key]}")
    out = tuple(g.tensors[n.outputs[0]].shape)
    if a.get("cell_output"):
        _check_cell_output(g, n, (B, H))
    if out != ((B, T, H) if a["output"] == "sequence" else (B, H)):
        raise TinycError(f"{op} '{n.name}': output of shape {out} for output '{a['output']}'")


def _check_cell_output(g, n, shape) -> None:
    """The second output of an LSTM with `cell_output`: the final cell state [B,H], float32 beside a float
    sequence or final h."""
    if n.op != "LSTM":
        raise TinycError(f"{n.op} '{n.name}': cell_output (the final cell state as a second output) is an LSTM's")
    c = g.tensors[n.outputs[1]]
    if (g.tensors[n.inputs[0]].dtype, c.dtype) not in (("float32", "float32"), ("int8", "int16")):
        raise TinycError(f"{n.op} '{n.name}': cell_output (the final cell state as a second output) is float32 "
                         "beside a float32 LSTM, int16 beside an int8 one (tinyc/ops/lstm_int8.py)")
    if tuple(c.shape) != shape:
        raise TinycError(f"{n.op} '{n.name}': its final cell state '{c.name}' has shape {tuple(c.shape)}, expected "
                         f"{shape}")


def cell_outputs(attrs: dict) -> int:
    """An LSTM with `cell_output` has two outputs: its sequence or final h, and its final cell state."""
    return 2 if attrs.get("cell_output") else 1


def _zero_constant(k, i: int) -> bool:
    t = k.tensor(i)
    return t.is_const and not np.any(t.data)


def _kernel_vars(k) -> dict:
    """What every recurrent template reads: sizes as numbers, weights, initial state and biases by C expression
    (None for a bias or peepholes that are zero constants: the kernel skips them), activations as C expressions
    of a variable name, the clip thresholds as literals."""
    a = k.node.attrs
    B, T, I = k.in_shape(0)
    acts = a["activations"]
    v = dict(B=B, T=T, I=I, H=k.in_shape(2)[1], w=k.weight(1), r=k.weight(2), output=a["output"],
             reverse=bool(a.get("reverse")), cell_output=bool(a.get("cell_output")),
             f=lambda x: activations.c_expr(acts[0], x),
             clip=None if a.get("clip") is None else c_float(a["clip"]), dot=dot)
    if len(acts) > 1:
        v["g_act"] = lambda x: activations.c_expr(acts[1], x)
    names = STATE_INPUTS[k.node.op]
    for name, i in zip(names, range(3, 3 + len(names))):
        v[name] = None if name in ("b", "rb", "p") and _zero_constant(k, i) else k.expr(i)
    return v


def dot(acc: str, a: str, b: str, n: int, indent: str = "        ", weights=None) -> str:
    """C statements adding a[0..n) . b[0..n) to `acc`, four products per loop iteration (in index order, so the
    sum is the plain loop's, bit for bit): the matrix-vector products are most of a recurrent layer's work.
    `weights`: the WeightArray b points into, when --weights stores it narrower (its form's dot product)."""
    if weights is not None and weights.form is not None and weights.form.dot is not None:
        return indent + weights.dot(acc, a, b, n)
    load = weights.load if weights is not None else (lambda e: e)
    lines = []
    if n >= 4:
        step = " ".join(f"{acc} += {a}[i + {j}] * {load(f'{b}[i + {j}]')};" if j else
                        f"{acc} += {a}[i] * {load(f'{b}[i]')};" for j in range(4))
        lines.append(f"for (int i = 0; i < {n - n % 4}; i += 4) {{ {step} }}")
    if n % 4:
        lines.append(f"for (int i = {n - n % 4}; i < {n}; ++i) {acc} += {a}[i] * {load(f'{b}[i]')};")
    return "\n".join(indent + line for line in lines)


def _macs(k) -> int:
    B, T, I = k.in_shape(0)
    H = k.in_shape(2)[1]
    return B * T * GATES[k.node.op] * H * (I + H)


def lstm_kernel(k):
    v = _kernel_vars(k)
    a = k.node.attrs
    acts = a["activations"]
    v.update(bias=v["b"], peep=v["p"], g=v["g_act"], h=lambda x: activations.c_expr(acts[2], x),
             input_forget=bool(a.get("input_forget")),
             cell_clip=None if a.get("cell_clip") is None else c_float(a["cell_clip"]))
    return "lstm.c.j2", v, _macs(k)


def gru_kernel(k):
    v = _kernel_vars(k)

    def zr_bias(j):
        terms = [f"{e}[{j}]" for e in (v["b"], v["rb"]) if e]
        return " + ".join(terms) or "0.0f"
    v.update(bias=v["b"], rbias=v["rb"], zr_bias=zr_bias,
             linear_before_reset=bool(k.node.attrs.get("linear_before_reset")))
    return "gru.c.j2", v, _macs(k)


def rnn_kernel(k):
    v = _kernel_vars(k)
    v.update(bias=v["b"])
    return "rnn.c.j2", v, _macs(k)


def work_bytes(g, node) -> int:
    """The float kernels' arena scratch, for one batch row at a time: the gate pre-activations [G*H], plus an LSTM's
    cell state (none with `cell_output`: the final cell state is the second output) and a GRU's reset product [H].
    The hidden state lives in the output (the sequence, or the last h written over itself)."""
    H = hidden_size(g, node)
    if g.tensors[node.inputs[0]].dtype == "int8" and node.op in gru_rnn_int8.CHAIN_OPS:
        return gru_rnn_int8.work_bytes(g, node)
    if g.tensors[node.inputs[0]].dtype == "int8":
        return lstm_int8.work_bytes(H, g.tensors[node.inputs[0]].shape[2], not node.attrs.get("cell_output"))
    if node.attrs.get("cell_output"):
        return 4 * 4 * H
    return 4 * {"LSTM": 5 * H, "GRU": 4 * H, "RNN": H}[node.op]


_ATTRS = "[activations, clip, reverse, output"
DEFINITIONS = (
    OpDef("LSTM", "x[B,T,I], w[4H,I], r[4H,H], b[4H], h0[B,H], c0[B,H], p[3H] -> [B,T,H] | [B,H] (, c[B,H])  "
          f"{_ATTRS}, cell_clip, input_forget, cell_output, hidden_quant]", evaluate_lstm, check,
          lstm_kernel, lstm_int8.int8_prepare, lstm_int8.int8_kernel, int8_lstm.lstm,
          memory=None, quantize=None, work=work_bytes, int8_wide_dtypes=("int16",), outputs=cell_outputs),
    OpDef("GRU", "x[B,T,I], w[3H,I], r[3H,H], b[3H], rb[3H], h0[B,H] -> [B,T,H] | [B,H]  "
          f"{_ATTRS}, linear_before_reset, step_quant]", evaluate_gru, check, gru_kernel,
          gru_rnn_int8.int8_prepare, gru_rnn_int8.int8_kernel, gru_rnn_int8.int8_fast, memory=None, quantize="own",
          work=work_bytes),
    OpDef("RNN", "x[B,T,I], w[H,I], r[H,H], b[H], h0[B,H] -> [B,T,H] | [B,H]  "
          f"{_ATTRS}, step_quant]", evaluate_rnn, check, rnn_kernel, gru_rnn_int8.int8_prepare,
          gru_rnn_int8.int8_kernel, gru_rnn_int8.int8_fast, memory=None, quantize="own", work=work_bytes),
)
