"""TFLite WHILE loops that run a recurrent cell over a sequence (how the converter writes Keras 3 LSTM / GRU /
SimpleRNN, and tf_keras GRU / SimpleRNN) -> one IR LSTM / GRU / RNN node.

The converter's loop: WHILE(counters..., output list, states..., x [T,B,I]) with a condition `counter < bound`
(several ANDed) and a body that reads x_t = GATHER(x, t), computes the cell and writes h_t into the output list
(replacing a list of one step, or at step t of a list of T: SLICE before t, the step, SLICE after t, CONCATENATION),
and passes x through. The body is read by symbolic evaluation: every tensor of the body becomes an affine map of
the sources (x_t, a state, or a non-linear sub-expression) — FULLY_CONNECTED, ADD, SUB, MUL by constants, SPLIT and
slices of the feature axis compose exactly — or an expression (activation, product, sum) of such values. The new
states' expressions are then matched against the LSTM, GRU (reset_after true or false) and RNN cells (Keras's
formulas; Keras 3's hard_sigmoid as the converter writes it, relu6(z + 3) / 6, too), which gives the IR node's
weights. Any other op, or a body that computes something else, is refused in one line naming the WHILE node.
Batch 1 only (tinyc's TFLite inputs are batch 1).

Time reversals: a loop over a REVERSE_V2 of x whose sequence is not read (go_backwards) runs backwards over x
itself; the helpers here (time_flip, private_to) also serve tflite_recurrent's fold of REVERSE_V2 pairs.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError

# body activations -> IR activation dicts
UNARY = {"LOGISTIC": {"fn": "sigmoid"}, "TANH": {"fn": "tanh"}, "RELU": {"fn": "relu"},
         "RELU6": {"fn": "clip", "lo": 0.0, "hi": 6.0}, "RELU_N1_TO_1": {"fn": "clip", "lo": -1.0, "hi": 1.0}}
FUSED = {1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
RESHAPES = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


class Refused(Exception):
    """The body is not a recognised recurrent cell (the reason; the rule names the WHILE node)."""


# -- symbolic values ------------------------------------------------------------------------------------------
class Source:
    """A value the body starts from: x_t ("x"), a loop state at the start of the step ("state"), the input
    sequence ("list_x") or the output list ("list_out"); `arg` is its loop argument, `size` its features."""

    def __init__(self, kind: str, arg: int, size: int):
        self.kind, self.arg, self.size = kind, arg, size


class Expr:
    """A non-linear value: ("act", activation dict, operand), ("mul", a, b), ("add", a, b), ("sub", a, b)."""

    def __init__(self, kind: str, *args, size: int):
        self.kind, self.args, self.size = kind, args, size


class Affine:
    """sum_k terms[k] @ k + bias: terms maps a Source or Expr to its matrix [size, k.size]."""

    def __init__(self, terms: dict, bias: np.ndarray):
        self.terms, self.bias = terms, np.asarray(bias, np.float64)
        self.size = self.bias.shape[0]

    def matrix(self, key, width: int) -> np.ndarray:
        return self.terms.get(key, np.zeros((self.size, width)))


class Counter:
    """A scalar integer: loop argument `arg` plus `offset`."""

    def __init__(self, arg: int, offset: int):
        self.arg, self.offset = arg, offset


class ListPart:
    """A slice of the output list along time: the steps before `counter` (prefix) or from it on (suffix)."""

    def __init__(self, kind: str, counter: Counter):
        self.kind, self.counter = kind, counter


class ListWrite:
    """The output list with step `counter` (None: the whole one-step list) replaced by `value`."""

    def __init__(self, value, counter: Counter | None):
        self.value, self.counter = value, counter


def _vector(v):
    """v, when it is a feature vector of the step (a constant, x_t, a state, an affine map or an expression): the
    sequences, the output list and the counters only enter GATHER, SLICE and the list write."""
    if isinstance(v, (np.ndarray, Affine, Expr)) or isinstance(v, Source) and v.kind in ("x", "state"):
        return v
    raise Refused("a sequence, the output list or a counter enters the cell's arithmetic")


def _affine(v):
    """An Affine for any float vector value (a source or expression is itself times the identity)."""
    if isinstance(v, Affine):
        return v
    if isinstance(v, np.ndarray):
        return Affine({}, v.reshape(-1).astype(np.float64))
    return Affine({v: np.eye(v.size)}, np.zeros(v.size))


def _combine(a: Affine, b: Affine, sign: float) -> Affine:
    size = max(a.size, b.size)
    if min(a.size, b.size) not in (1, size):
        raise Refused(f"values of {a.size} and {b.size} features do not broadcast")

    def widen(m):
        return np.broadcast_to(m, (size,) + m.shape[1:]).copy()
    terms = {k: widen(m) for k, m in a.terms.items()}
    for k, m in b.terms.items():
        terms[k] = terms.get(k, 0) + sign * widen(m)
    return Affine(terms, widen(a.bias) + sign * widen(b.bias))


def _scale(a: Affine, c: np.ndarray) -> Affine:
    c = np.asarray(c, np.float64).reshape(-1)
    if c.size not in (1, a.size):
        raise Refused(f"a product of {a.size} features by {c.size} constants")
    col = c.reshape(-1, 1)
    return Affine({k: m * col for k, m in a.terms.items()}, a.bias * c)


def _rows(v, start: int, size: int):
    if not isinstance(v, (Affine, np.ndarray)):
        if isinstance(v, (Source, Expr)):
            v = _affine(v)
        else:
            raise Refused("a slice of a value that is not a feature vector")
    if isinstance(v, np.ndarray):
        return v.reshape(-1)[start:start + size]
    return Affine({k: m[start:start + size] for k, m in v.terms.items()}, v.bias[start:start + size])


# -- evaluating the body ------------------------------------------------------------------------------------
class Body:
    """Symbolic evaluation of a WHILE body subgraph."""

    def __init__(self, cv, sg, x_arg: int):
        self.cv, self.sg, self.x_arg = cv, sg, x_arg
        self.vals: dict[int, object] = {}
        self.n = len(sg.tensors or [])
        for i, t in enumerate(sg.tensors or []):
            arr = cv.buffer_value(t)
            if arr is not None:
                self.vals[i] = arr
        self.steps_read: list[int] = []    # the counter argument each GATHER of x reads with
        self.x_t: Source | None = None

    def shape(self, i: int) -> tuple:
        t = self.sg.tensors[i]
        return tuple(int(d) for d in (t.shape if t.shape is not None else ()))

    def get(self, i: int):
        if not 0 <= i < self.n or i not in self.vals:
            raise Refused(f"body tensor {i} is read before it is computed")
        return self.vals[i]

    def const(self, i: int) -> np.ndarray:
        v = self.get(i)
        if not isinstance(v, np.ndarray):
            raise Refused(f"body tensor '{_name(self.sg, i)}' must be a constant")
        return v

    def run(self, op_name) -> None:
        for op in self.sg.operators or []:
            kind = op_name(op)
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            if any(not -1 <= i < self.n for i in ins) or any(not 0 <= i < self.n for i in outs):
                raise Refused("an operator refers to a tensor the body does not have (corrupt file)")
            results = self.step(kind, op.builtinOptions, ins, outs)
            for o, r in zip(outs, results):
                self.vals[o] = r

    def step(self, kind, opts, ins, outs) -> list:
        fused = int(getattr(opts, "fusedActivationFunction", 0) or 0) if opts is not None else 0
        if fused and fused not in FUSED:
            raise Refused(f"{kind} with fused activation {fused}")
        result = self._value(kind, opts, ins, outs)
        if fused:
            return [Expr("act", UNARY[FUSED[fused]], r, size=r.size) for r in result]
        return result

    def _value(self, kind, opts, ins, outs) -> list:
        if kind in UNARY:
            v = _vector(self.get(ins[0]))
            return [Expr("act", UNARY[kind], v, size=v.size)]
        if kind in RESHAPES:
            return [self._reshape(ins[0], outs[0])]
        if kind == "FULLY_CONNECTED":
            return [self._fully_connected(ins)]
        if kind in ("ADD", "SUB", "MUL"):
            return [self._binary(kind, self.get(ins[0]), self.get(ins[1]))]
        if kind == "GATHER":
            return [self._gather(opts, ins)]
        if kind in ("SPLIT", "SPLIT_V"):
            return self._split(kind, ins, outs)
        if kind in ("STRIDED_SLICE", "SLICE"):
            return [self._slice(kind, opts, ins, outs[0])]
        if kind == "CONCATENATION":
            return [self._concat(opts, ins)]
        if kind == "DEQUANTIZE" and isinstance(self.get(ins[0]), np.ndarray) and self.get(ins[0]).dtype == np.float16:
            return [self.get(ins[0]).astype(np.float32)]     # float16 weights (the converter's float16 models)
        raise Refused(f"its body has a {kind}, which is not part of a recognised recurrent cell")

    def _reshape(self, i, o):
        v = self.get(i)
        if isinstance(v, np.ndarray):
            return v.reshape(self.shape(o))
        if isinstance(v, Counter) and int(np.prod(self.shape(o))) == 1:
            return [v]                       # a counter as a one-value vector
        return v                             # batch 1: a vector keeps its values

    def _fully_connected(self, ins):
        w = self.const(ins[1]).astype(np.float64)
        x = _vector(self.get(ins[0]))
        if w.ndim != 2 or getattr(x, "size", None) != w.shape[1]:
            raise Refused(f"a FULLY_CONNECTED of weights {w.shape}")
        bias = self.const(ins[2]).reshape(-1) if len(ins) > 2 and ins[2] >= 0 else np.zeros(w.shape[0])
        if isinstance(x, np.ndarray):
            return w @ x.reshape(-1) + bias
        a = _affine(x)
        return Affine({k: w @ m for k, m in a.terms.items()}, w @ a.bias + bias)

    def _binary(self, kind, a, b):
        if isinstance(a, (Counter, list)) or isinstance(b, (Counter, list)):
            return self._integer(kind, a, b)
        a, b = _vector(a), _vector(b)
        if kind == "MUL":
            if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
                return a * b
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                c, v = (a, b) if isinstance(a, np.ndarray) else (b, a)
                return _scale(_affine(v), c)
            return Expr("mul", a, b, size=max(a.size, b.size))
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a + b if kind == "ADD" else a - b
        if kind == "SUB" and not isinstance(b, (Affine, Source, np.ndarray)):   # 1 - sigmoid(...): kept as is
            return Expr("sub", a, b, size=max(a.size, b.size))
        if isinstance(a, Expr) and isinstance(b, Expr) and kind == "ADD" and _nonlinear_sum(a, b):
            return Expr("add", a, b, size=max(a.size, b.size))
        return _combine(_affine(a), _affine(b), 1.0 if kind == "ADD" else -1.0)

    def _integer(self, kind, a, b):
        if kind == "ADD" and isinstance(a, Counter) and isinstance(b, np.ndarray) and b.size == 1:
            return Counter(a.arg, a.offset + int(b.reshape(-1)[0]))
        raise Refused(f"an integer {kind} on the loop counter")

    def _gather(self, opts, ins):
        table, index = self.get(ins[0]), self.get(ins[1])
        axis = int(opts.axis) if opts is not None else 0
        if not (isinstance(table, Source) and table.kind == "list_x" and isinstance(index, Counter)
                and index.offset == 0 and axis == 0):
            raise Refused("a GATHER that is not the step's input x[t]")
        self.steps_read.append(index.arg)
        if self.x_t is None:
            self.x_t = Source("x", self.x_arg, table.size)
        return self.x_t

    def _split(self, kind, ins, outs):
        if kind == "SPLIT":
            axis, v = self.const(ins[0]), _vector(self.get(ins[1]))
            parts = [v.size // len(outs)] * len(outs)
        else:
            v, parts, axis = _vector(self.get(ins[0])), [int(p) for p in self.const(ins[1]).reshape(-1)], \
                self.const(ins[2])
            if parts.count(-1) == 1:                  # one part takes what the others leave
                parts[parts.index(-1)] = v.size - (sum(parts) + 1)
        rank = len(self.shape(outs[0]))
        if int(axis.reshape(-1)[0]) % rank != rank - 1 or sum(parts) != v.size or min(parts) < 0:
            raise Refused(f"a {kind} that is not of the feature axis")
        starts = np.cumsum([0] + parts[:-1])
        return [_rows(v, int(s), p) for s, p in zip(starts, parts)]

    def _slice(self, kind, opts, ins, out):
        v = self.get(ins[0])
        if isinstance(v, Source) and v.kind == "list_out":
            return self._list_part(ins)
        v = _vector(v)
        shape, out_shape = self.shape(ins[0]), self.shape(out)
        if not shape or out_shape[:-1] != shape[:-1]:
            raise Refused(f"a {kind} that is not a window of the feature axis")
        d = shape[-1]
        if kind == "SLICE":
            start = int(self.const(ins[1]).reshape(-1)[-1])
        else:
            begin, end, stride = (self.const(i).reshape(-1) for i in ins[1:4])
            masks = [int(getattr(opts, f, 0) or 0) for f in ("ellipsisMask", "newAxisMask", "shrinkAxisMask")]
            if any(masks) or len(begin) != len(shape) or int(stride[-1]) != 1:
                raise Refused("a STRIDED_SLICE with ellipsis, new-axis or shrink masks, or a stride")
            last = len(shape) - 1
            lo = None if int(opts.beginMask or 0) >> last & 1 else int(begin[-1])
            hi = None if int(opts.endMask or 0) >> last & 1 else int(end[-1])
            start, stop, _ = slice(lo, hi).indices(d)
            if stop - start != out_shape[-1]:
                raise Refused("a STRIDED_SLICE whose window does not fit its output")
        if not 0 <= start <= d - out_shape[-1]:
            raise Refused(f"a {kind} outside its input")
        return _rows(v, start, out_shape[-1])

    def _list_part(self, ins):
        """SLICE(output list, begin, size): the steps before t ([0..], [t, -1..]) or after it ([t+1, 0..], [-1..])."""
        begin, size = self.get(ins[1]), self.get(ins[2])
        if not (isinstance(begin, (list, np.ndarray)) and isinstance(size, (list, np.ndarray))):
            raise Refused("a SLICE of the output list with computed bounds")
        b0, s0 = list(begin)[0], list(size)[0]
        rest_b = [int(v) for v in list(begin)[1:]]
        rest_s = [int(v) for v in list(size)[1:]]
        if any(rest_b) or any(v != -1 for v in rest_s):
            raise Refused("a SLICE of the output list that is not a range of steps")
        if isinstance(s0, Counter) and not isinstance(b0, Counter) and int(b0) == 0:
            return ListPart("prefix", s0)
        if isinstance(b0, Counter) and not isinstance(s0, Counter) and int(s0) == -1:
            return ListPart("suffix", b0)
        raise Refused("a SLICE of the output list that is not a range of steps")

    def _concat(self, opts, ins):
        vals = [self.get(i) for i in ins]
        axis = int(opts.axis) if opts is not None else 0
        if axis == 0 and all(isinstance(v, (list, np.ndarray, Counter)) for v in vals):
            out = []                                         # integer bounds of a list SLICE
            for v in vals:
                out += v if isinstance(v, list) else [v] if isinstance(v, Counter) else [int(e) for e in v.reshape(-1)]
            return out
        if axis == 0 and len(vals) == 3 and isinstance(vals[0], ListPart) and isinstance(vals[2], ListPart):
            before, step, after = vals
            if (before.kind, after.kind) == ("prefix", "suffix") and before.counter.offset == 0 and \
                    after.counter.arg == before.counter.arg and after.counter.offset == 1:
                return ListWrite(step, before.counter)
        raise Refused("a CONCATENATION that is not a write of the output list")


def _nonlinear_sum(a: Expr, b: Expr) -> bool:
    """c = f * c + i * g and h = z * h + (1 - z) * n: a sum of products, kept as an expression (a sum with an
    affine part is affine, so the GRU's x_n + r * (h r_n) is)."""
    return a.kind == "mul" and b.kind == "mul"


def _name(sg, i) -> str:
    t = sg.tensors[i]
    return t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name)


# -- matching the cells ---------------------------------------------------------------------------------------
def _pairs(e, kind):
    """(a, b) and (b, a) of a commutative expression of `kind`, or nothing."""
    if isinstance(e, Expr) and e.kind == kind:
        a, b = e.args
        return [(a, b), (b, a)]
    return []


def _act(e):
    """(activation, affine operand) of act(affine), or None. relu6(z) / 6 (how the converter writes Keras 3's
    hard_sigmoid, relu6(x + 3) / 6, the + 3 in z) is hard_sigmoid with alpha 1/6 and beta 0 (equal but for the
    float rounding of the product)."""
    if isinstance(e, Expr) and e.kind == "act":
        return e.args[0], _affine(e.args[1])
    if isinstance(e, Affine) and len(e.terms) == 1 and not np.any(e.bias):
        (inner, m), = e.terms.items()
        s = float(m.reshape(-1)[0]) if m.size else 0.0
        if isinstance(inner, Expr) and inner.kind == "act" and inner.args[0] == UNARY["RELU6"] and \
                m.shape[0] == m.shape[1] and np.array_equal(m, s * np.eye(m.shape[0])) and abs(6 * s - 1) < 1e-6:
            return {"fn": "hard_sigmoid", "alpha": s, "beta": 0.0}, _affine(inner.args[1])
    return None


def _is(v, src) -> bool:
    return v is src


def _gate_weights(a: Affine, x: Source, h: Source, H: int, what: str):
    """(w [H,I], r [H,H], bias) of an affine gate input of x and h alone."""
    extra = [k for k in a.terms if k is not x and k is not h]
    if extra or a.size != H:
        raise Refused(f"the {what} depends on more than the step's input and hidden state")
    return a.matrix(x, x.size), a.matrix(h, H), a.bias


def match_lstm(h_new, c_new, x: Source, h: Source, c: Source):
    H = h.size
    for fc, ig in _pairs(c_new, "add"):
        for f_gate, c_old in _pairs(fc, "mul"):
            if not _is(c_old, c) or _act(f_gate) is None:
                continue
            for i_gate, g_gate in _pairs(ig, "mul"):
                fa, ia, ga = _act(f_gate), _act(i_gate), _act(g_gate)
                if ia is None or ga is None or ia[0] != fa[0]:
                    continue
                for o_gate, hc in _pairs(h_new, "mul"):
                    oa = _act(o_gate)
                    if oa is None or oa[0] != fa[0] or not (isinstance(hc, Expr) and hc.kind == "act"
                                                            and _is(hc.args[1], c_new)):
                        continue
                    gates = [_gate_weights(a, x, h, H, name) for a, name in
                             ((ia[1], "input gate"), (fa[1], "forget gate"), (ga[1], "cell gate"),
                              (oa[1], "output gate"))]
                    return dict(w=[g[0] for g in gates], r=[g[1] for g in gates], b=[g[2] for g in gates],
                                activations=(fa[0], ga[0], hc.args[0]))
    raise Refused("its cell is not an LSTM cell (c = f * c + i * g, h = o * act(c))")


def match_gru(h_new, x: Source, h: Source):
    """h = z * h + (1 - z) * n (Keras): n = act(x w_n + b_n + r * (h r_n + rb_n)) with reset_after, else
    act(x w_n + (r * h) r_n + b_n)."""
    H = h.size
    for zh, rest in _pairs(h_new, "add"):
        for z_gate, h_old in _pairs(zh, "mul"):
            za = _act(z_gate)
            if not _is(h_old, h) or za is None:
                continue
            for one_minus_z, n_gate in _pairs(rest, "mul"):
                if not _is_one_minus(one_minus_z, z_gate):
                    continue
                na = _act(n_gate)
                if na is None:
                    continue
                found = _gru_candidate(na[1], x, h, za[0])
                if found is None:
                    continue
                r_act, linear_before_reset, (wn, rn, bn, rbn), ra = found
                wz, rz, bz = _gate_weights(za[1], x, h, H, "update gate")
                wr, rr, br = _gate_weights(ra, x, h, H, "reset gate")
                return dict(w=[wz, wr, wn], r=[rz, rr, rn], b=[bz, br, bn],
                            rb=[np.zeros(H), np.zeros(H), rbn], activations=(za[0], na[0]),
                            linear_before_reset=linear_before_reset)
    raise Refused("its cell is neither a simple RNN cell (h = act(x w + h r + b), act one of "
                  f"{', '.join(UNARY)}) nor a GRU cell (h = z * h + (1 - z) * n)")


def _is_one_minus(e, z) -> bool:
    """Whether e is 1 - z: an expression, or (z affine, as relu6(.) / 6 is) the affine map 1 - z."""
    if isinstance(e, Expr) and e.kind == "sub":
        return _is(e.args[1], z) and isinstance(e.args[0], np.ndarray) and bool(np.all(e.args[0] == 1))
    if isinstance(e, Affine) and isinstance(z, Affine) and set(map(id, e.terms)) == set(map(id, z.terms)):
        return all(np.array_equal(e.terms[k], -m) for k, m in z.terms.items()) and np.array_equal(e.bias, 1 - z.bias)
    return False


def _gru_candidate(n_in: Affine, x: Source, h: Source, gate_act):
    """The candidate's input: x w_n + b_n + one product term, r * (h r_n + rb_n) (identity matrix) or
    (r * h) @ r_n^T. Returns (reset activation, linear_before_reset, (w_n, r_n, b_n, rb_n), reset gate input)."""
    H = h.size
    products = [k for k in n_in.terms if k is not x]
    if len(products) != 1 or not (isinstance(products[0], Expr) and products[0].kind == "mul"):
        return None
    prod = products[0]
    wn = n_in.matrix(x, x.size)
    for r_gate, other in _pairs(prod, "mul"):
        ra = _act(r_gate)
        if ra is None or ra[0] != gate_act:
            continue
        if _is(other, h):                                  # (r * h) r_n
            return ra[0], False, (wn, n_in.terms[prod], n_in.bias, np.zeros(H)), ra[1]
        if np.array_equal(n_in.terms[prod], np.eye(H)) and not isinstance(other, (Source, Expr)):
            rec = _affine(other)                           # r * (h r_n + rb_n)
            if set(rec.terms) == {h} or not rec.terms:
                return ra[0], True, (wn, rec.matrix(h, H), n_in.bias, rec.bias), ra[1]
    return None


def match_rnn(h_new, x: Source, h: Source):
    a = _act(h_new)
    if a is None:
        raise Refused("its cell is not a simple RNN cell (h = act(x w + h r + b))")
    w, r, b = _gate_weights(a[1], x, h, h.size, "cell")
    return dict(w=[w], r=[r], b=[b], activations=(a[0],))


# -- time reversals (Bidirectional and go_backwards layers) ----------------------------------------------------
def tflite_index(cv, name: str) -> int | None:
    return next((i for i, n in cv.names.items() if n == name), None)


def private_to(cv, name: str, readers: list) -> bool:
    """Whether IR tensor `name` is read by `readers` alone, now and by the TFLite operators still to come."""
    i = tflite_index(cv, name)
    return name not in cv.g.outputs and {id(n) for n in cv.g.consumers(name)} <= {id(n) for n in readers} and \
        (i is None or not used_later(cv, i))


def time_flip(g, name: str, steps: int, features: int):
    """The Slice reversing the time axis of `name` (batch 1: [1,T,F], [T,1,F], ...), or None."""
    node = g.producer(name)
    shape = tuple(g.tensors[name].shape)
    if node is None or node.op != "Slice" or not shape or shape[-1] != features:
        return None
    back = [a for a, st in enumerate(node.attrs["steps"]) if st == -1]
    if len(back) != 1 or shape[back[0]] != steps or back[0] == len(shape) - 1 or \
            any(d != 1 for a, d in enumerate(shape[:-1]) if a != back[0]):
        return None
    starts = tuple(steps - 1 if a == back[0] else 0 for a in range(len(shape)))
    ok = tuple(node.attrs["starts"]) == starts and tuple(node.attrs["sizes"]) == shape and \
        all(st == 1 for a, st in enumerate(node.attrs["steps"]) if a != back[0])
    return node if ok else None


# -- the WHILE rule -------------------------------------------------------------------------------------------
def _op_kind(cv, op) -> str:
    if not hasattr(cv, "_builtin_names"):
        cv._builtin_names = {v: k for k, v in vars(cv.S.BuiltinOperator).items()
                             if not k.startswith("_") and isinstance(v, int)}
    if not 0 <= op.opcodeIndex < len(cv.model.operatorCodes):
        raise Refused("an operator code that does not exist (corrupt file)")
    code = cv.model.operatorCodes[op.opcodeIndex]
    return cv._builtin_names.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)), "?")


def _subgraph(cv, index, what):
    if not 0 < int(index) < len(cv.model.subgraphs):
        raise TinycError(f"{cv.where()}: {what} subgraph {index} does not exist; the .tflite file is corrupt")
    return cv.model.subgraphs[int(index)]


def _trip_count(cv, cond, init: dict) -> int:
    """The condition's steps: an AND of `counter < constant` over counters that start at init[arg]."""
    n = len(cond.tensors or [])
    args = {int(t): k for k, t in enumerate(cond.inputs)}
    bounds: dict[int, object] = {}
    for op in cond.operators or []:
        kind = _op_kind(cv, op)
        ins, outs = [int(i) for i in op.inputs], [int(i) for i in op.outputs]
        if any(not 0 <= i < n for i in ins + outs):
            raise Refused("its condition refers to a tensor it does not have (corrupt file)")
        if kind == "LESS" and ins[0] in args and args[ins[0]] in init:
            bound = cv.buffer_value(cond.tensors[ins[1]])
            if bound is None or bound.size != 1:
                raise Refused("its condition compares a counter with a value computed at run time")
            bounds[outs[0]] = int(bound.reshape(-1)[0]) - init[args[ins[0]]]
        elif kind == "LOGICAL_AND" and all(i in bounds for i in ins):
            bounds[outs[0]] = min(bounds[i] for i in ins)
        else:
            raise Refused(f"its condition has a {kind}; only `counter < constant` (ANDed) is recognised")
    result = bounds.get(int(cond.outputs[0])) if cond.outputs is not None and len(cond.outputs) == 1 else None
    if result is None:
        raise Refused("its condition is not `counter < constant`")
    return result


def used_later(cv, t: int) -> bool:
    """Whether an operator after the current one, or the model's outputs, read TFLite tensor `t`."""
    later = (cv.sg.operators or [])[cv.op_index + 1:]
    return any(t in [int(i) for i in (op.inputs if op.inputs is not None else [])] for op in later) or \
        t in [int(i) for i in (cv.sg.outputs if cv.sg.outputs is not None else [])]


def _classify(cv, ins, body) -> dict:
    """The loop's arguments: integer counters (initial values), the input sequence (passed through), the output
    list, the states."""
    roles = dict(counters={}, x=None, out=None, states=[])
    for k, i in enumerate(ins):
        passthrough = int(body.outputs[k]) == int(body.inputs[k])
        shape = cv.shape(i) if i in cv.names or cv.is_const(i) else None
        kind = cv.dtype_name(i)
        if kind == "INT32" and cv.is_const(i) and cv.value(i).size == 1:
            roles["counters"][k] = int(cv.value(i).reshape(-1)[0])
        elif kind == "FLOAT32" and passthrough and shape is not None and len(shape) == 3 and roles["x"] is None:
            roles["x"] = k
        elif kind == "FLOAT32" and shape is not None and len(shape) == 3 and roles["out"] is None:
            roles["out"] = k
        elif kind == "FLOAT32" and shape is not None and len(shape) == 2:
            roles["states"].append(k)
        else:
            raise Refused(f"loop argument {k} ('{cv.tname(i)}', {kind} {shape}) is neither a counter, the input "
                          "sequence, the output list nor a state")
    if roles["x"] is None or roles["out"] is None or not 1 <= len(roles["states"]) <= 2:
        raise Refused("its arguments are not counters, one input sequence, one output list and one or two states")
    return roles


def recognise(cv, opts, ins) -> dict:
    """The cell, its weights and the loop's roles, or Refused."""
    cond = _subgraph(cv, opts.condSubgraphIndex, "condition")
    body_sg = _subgraph(cv, opts.bodySubgraphIndex, "body")
    n = len(ins)
    for sg, what in ((cond, "condition"), (body_sg, "body")):
        if sg.inputs is None or len(sg.inputs) != n or any(not 0 <= int(i) < len(sg.tensors or []) for i in sg.inputs):
            raise TinycError(f"{cv.where()}: its {what} subgraph does not take the loop's {n} arguments; the .tflite "
                             "file is corrupt")
    if body_sg.outputs is None or len(body_sg.outputs) != n or len(cv.outs) != n:
        raise TinycError(f"{cv.where()}: its body does not return the loop's {n} arguments; the .tflite file is "
                         "corrupt")
    roles = _classify(cv, ins, body_sg)
    T, B, I = cv.shape(ins[roles["x"]])
    L = cv.shape(ins[roles["out"]])[0]
    if B != 1:
        raise Refused(f"batch {B}: recurrent loops are recognised for batch 1")
    body = Body(cv, body_sg, roles["x"])
    for k, t in enumerate(int(i) for i in body_sg.inputs):
        if k in roles["counters"]:
            body.vals[t] = Counter(k, 0)
        elif k == roles["x"]:
            body.vals[t] = Source("list_x", k, I)
        elif k == roles["out"]:
            body.vals[t] = Source("list_out", k, cv.shape(ins[k])[2])
        else:
            body.vals[t] = Source("state", k, cv.shape(ins[k])[1])
    states = {k: body.vals[int(body_sg.inputs[k])] for k in roles["states"]}
    body.run(lambda op: _op_kind(cv, op))
    result = {k: body.vals.get(int(t)) for k, t in enumerate(body_sg.outputs)}
    for k in roles["counters"]:
        c = result[k]
        if not (isinstance(c, Counter) and c.arg == k and c.offset == 1):
            raise Refused(f"loop argument {k} is an integer that does not count up by one")
    trips = _trip_count(cv, cond, roles["counters"])
    if len(set(body.steps_read)) != 1 or roles["counters"].get(body.steps_read[0]) != 0 or body.x_t is None:
        raise Refused("its body does not read x[t] with a counter t from 0")
    t_arg = body.steps_read[0]
    if trips != T:
        raise Refused(f"it runs {trips} steps over a sequence of {T}")
    written = result[roles["out"]]
    if isinstance(written, ListWrite) and written.counter.arg == t_arg and L == T:
        h_new, sequence = written.value, True
    elif L == 1 and not isinstance(written, (ListWrite, ListPart, Counter, list)):
        h_new, sequence = written, False
    else:
        raise Refused("its output list is not written with the hidden state at step t")
    new = {k: result[k] for k in roles["states"]}
    x = body.x_t
    if len(roles["states"]) == 2:
        for kh, kc in (roles["states"], roles["states"][::-1]):
            if new[kh] is h_new:
                cell = match_lstm(new[kh], new[kc], x, states[kh], states[kc])
                return dict(op="LSTM", cell=cell, roles=roles, h_arg=kh, c_arg=kc, sequence=sequence, T=T)
        raise Refused("its output list is not written with a state's new value")
    (kh,) = roles["states"]
    if new[kh] is not h_new:
        raise Refused("its output list is not written with the state's new value")
    if isinstance(h_new, Expr) and h_new.kind == "act":
        return dict(op="RNN", cell=match_rnn(h_new, x, states[kh]), roles=roles, h_arg=kh, sequence=sequence, T=T)
    return dict(op="GRU", cell=match_gru(h_new, x, states[kh]), roles=roles, h_arg=kh, sequence=sequence, T=T)


class _Results:
    """The IR tensors of the recognised loop's results, each made once: the cell's node per output kind over the
    whole sequence (weights added once), a final h beside its sequence the sequence's last step; an LSTM whose
    final c is read gives it as its second output (cell_output) beside its sequence or final h."""

    def __init__(self, cv, found, ins, sequence_read: bool, c_read: bool):
        self.cv, self.found, self.ins, self.sequence_read = cv, found, ins, sequence_read
        self.c_read = c_read and found["op"] == "LSTM"
        self.inputs, self.attrs = None, None
        self.made: dict[str, str] = {}

    def _backwards_source(self, xs: str) -> str | None:
        """A go_backwards layer (or a Bidirectional's backward one) without its sequence read: when the loop runs
        over a time reversal of x that nothing else reads, the node can run backwards over x (its final states
        are the same); returns x, the reversal removed."""
        cv, k = self.cv, self.found["roles"]["x"]
        T, _, I = cv.g.tensors[xs].shape
        flip = time_flip(cv.g, xs, T, I)
        if self.sequence_read or flip is None or not private_to(cv, xs, []) or used_later(cv, cv.outs[k]):
            return None
        cv.g.nodes.remove(flip)
        return flip.inputs[0]

    def _prepare(self) -> None:
        cv, found, cell, op = self.cv, self.found, self.found["cell"], self.found["op"]
        xs = cv.x(self.ins[found["roles"]["x"]])
        T, B, I = cv.g.tensors[xs].shape
        forward = self._backwards_source(xs)
        x = cv.emit("Reshape", [forward or xs], (B, T, I), final=False, tag="batch_major", like=xs)   # batch 1
        H = cell["r"][0].shape[1]
        base = cv.tname(cv.outs[found["roles"]["out"]]).split(";")[0] or op.lower()
        weights = [cv.g.add_const(f"{base}_{k}", np.concatenate(cell[k]).astype(np.float32))
                   for k in ("w", "r", "b") + (("rb",) if op == "GRU" else ())]
        self.inputs = [x, *weights, cv.x(self.ins[found["h_arg"]])]
        self.attrs = dict(activations=tuple(dict(a) for a in cell["activations"]), clip=None,
                          reverse=forward is not None)
        if op == "LSTM":
            self.inputs += [cv.x(self.ins[found["c_arg"]]), cv.g.add_const(f"{base}_p", np.zeros(3 * H, np.float32))]
            self.attrs.update(cell_clip=None, input_forget=False)
        if op == "GRU":
            self.attrs.update(linear_before_reset=cell["linear_before_reset"])
        self.B, self.T, self.H = B, T, H

    def get(self, output: str) -> str:
        """The IR tensor of `output` ("sequence" [B,T,H], "last_h" / "last_c" [B,H])."""
        if output in self.made:
            return self.made[output]
        if self.inputs is None:
            self._prepare()
        cv, B, T, H = self.cv, self.B, self.T, self.H
        if self.c_read and "last_c" not in self.made:       # one node: its sequence or final h, and its final c
            main = "sequence" if self.sequence_read else "last_h"
            y = cv.emit(self.found["op"], self.inputs, (B, T, H) if main == "sequence" else (B, H), final=False,
                        tag=main, like=self.inputs[0], output=main, cell_output=True, **self.attrs)
            c = cv.g.add_tensor(cv.g.unique_name(f"{y}_final_c"), (B, H)).name
            cv.g.producer(y).outputs.append(c)
            self.made.update({main: y, "last_c": c})
            return self.get(output)
        if output == "last_h" and "sequence" in self.made:
            step = cv.emit("Slice", [self.made["sequence"]], (B, 1, H), final=False, tag="final_step",
                           like=self.made["sequence"], starts=(0, 0 if self.attrs["reverse"] else T - 1, 0),
                           steps=(1, 1, 1), sizes=(B, 1, H))
            y = cv.emit("Reshape", [step], (B, H), final=False, tag="final_h", like=step)
        else:
            shape = (B, T, H) if output == "sequence" else (B, H)
            y = cv.emit(self.found["op"], self.inputs, shape, final=False, tag=output, like=self.inputs[0],
                        output=output, **self.attrs)
        self.made[output] = y
        return y


def while_loop(cv, opts, ins):
    """WHILE: a recognised recurrent loop becomes the IR node of its cell; each loop result used later is one
    node (the sequence, the last hidden state, the last cell state), the counters constants."""
    if opts is None:
        raise TinycError(f"{cv.where()}: WHILE without its options; the .tflite file is corrupt")
    try:
        found = recognise(cv, opts, ins)
    except Refused as why:
        raise TinycError(f"{cv.where()}: not a recognised recurrent loop: {why}; tinyc compiles the WHILE loops the "
                         "TFLite converter writes for Keras LSTM, GRU and SimpleRNN layers") from None
    roles, T = found["roles"], found["T"]
    used = [k for k, out in enumerate(cv.outs) if used_later(cv, out)]
    results = _Results(cv, found, ins, sequence_read=roles["out"] in used and found["sequence"],
                       c_read=found.get("c_arg") in used)
    if roles["out"] in used and found["sequence"]:
        results.get("sequence")                  # first, so that a final h used beside it is its last step
    for k, out in enumerate(cv.outs):
        cv.out = out
        if k in roles["counters"]:
            cv.values[out] = np.asarray(roles["counters"][k] + T, np.int32)
        elif k == roles["x"]:
            cv.names[out] = cv.x(ins[k])
        elif k not in used:
            cv.values[out] = np.zeros(0, np.float32)   # a result nothing reads (the importer sees every output)
        elif k == roles["out"]:                        # the list, time-major: all steps, or the last one
            y = results.get("sequence" if found["sequence"] else "last_h")
            b, h = cv.g.tensors[y].shape[0], cv.g.tensors[y].shape[-1]
            cv.emit("Reshape", [y], (T if found["sequence"] else 1, b, h))
        else:
            y = results.get("last_c" if k == found.get("c_arg") else "last_h")
            cv.emit("Identity", [y], cv.g.tensors[y].shape)
    return None
