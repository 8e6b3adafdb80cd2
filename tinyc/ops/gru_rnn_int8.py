"""int8 GRU and RNN: the int8 facets of the GRU and RNN ops of tinyc/ops/recurrent.py. TFLite has no integer GRU
or RNN kernel, so an int8 GRU/RNN node means the chain of TFLite int8 ops below run once per time step
(FULLY_CONNECTED, ADD, SUB, MUL, LOGISTIC, TANH, RELU fused into an ADD), with one set of quantization parameters
shared by all steps; tinyc's TFLite writer writes the node as that chain unrolled over the steps, and the kernel
here loops over time doing, at each step, exactly those ops' integer arithmetic: the parameters come from the
ops' own int8_prepare functions (Dense, Add/Sub, Mul, Activation) and the C uses their helpers, so the loop is
bit-exact with TFLite running the unrolled file by construction (docs/int8-numerics.md 4.41).

The chain of one step (roles: `x` = x_t, `h` = the previous hidden state, and the new one as output `h`):
  GRU   xz = FC(x, w_z, bx_z)   hz = FC(h, r_z)   zs = xz + hz   z = f(zs)      (same for r with w_r, r_r)
        xn = FC(x, w_n, bx_n)
        linear_before_reset: hn = FC(h, r_n, bh_n)   rhn = r * hn   ns = xn + rhn
        otherwise:           rh = r * h   hn = FC(rh, r_n, bh_n)     ns = xn + hn
        n = g(ns)   d = h - n   zd = z * d   h = n + zd                 ((1 - z) * n + z * h, rewritten)
  RNN   xa = FC(x, w, bx)   ha = FC(h, r)   s = xa + ha   h = f(s)
An activation relu is fused into the ADD before it (no `zs`/`ns`/`s` then); sigmoid and tanh are LOGISTIC / TANH
with TFLite's fixed output parameters. The FC biases: bx = b with a GRU's recurrent biases of z and r added, bh_n
= a GRU's recurrent bias of n (bh of z, r and of an RNN: none).

The int8 form of a node (what `--quantize int8` makes, tinyc/quant/ptq.py):
  x   int8 [B,T,I]; w int8 [G*H,I], r int8 [G*H,H]: symmetric, per output channel (axis 0)
  b   int32 [G*H]: bx, scale s_x * s_w[c];  rb (GRU) int32 [3H]: bh (zeros for z and r), scale s_in * s_r[c] with
      s_in the scale of hn's FC input (h, or rh)
  h0  int8 [B,H] with the output's scale and zero point (the hidden state and the output sequence share them)
  attribute `step_quant`: {role: (scale, zero point)} of every intermediate role of the chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from .. import activations
from ..codegen import gemm_pack, int8_smlad
from ..codegen.int8_fast_misc import clamp_expr, requant_expr
from ..codegen.literals import c_double
from ..errors import TinycError
from ..quant.fixed_point import multiply_by_quantized_multiplier as mbqm
from . import activation as activation_op
from . import binary, dense

CHAIN_OPS = ("GRU", "RNN")
CELL_ACTIVATIONS = ("sigmoid", "tanh", "relu")
FIXED_QUANT = activation_op.FIXED_QUANT       # sigmoid, tanh: TFLite's fixed output scale and zero point


@dataclass(frozen=True)
class Step:
    """One op of the per-step chain: `kind` fc / add / sub / mul / act, its output role and input roles."""
    kind: str
    out: str
    ins: tuple
    matrix: str = ""        # fc: "w" (input weights) or "r" (recurrent weights)
    gate: int = 0           # fc: which H rows of the matrix
    bias: bool = False      # fc: reads its gate's rows of the bias (w: input b, r: recurrent rb)
    fn: str = ""            # act: sigmoid / tanh; add: "relu" when fused


def _fc(out, x, matrix, gate, bias=False):
    return Step("fc", out, (x,), matrix, gate, bias)


def _activated(out: str, pre: str, a: str, b: str, fn: str) -> list:
    """`out` = fn(a + b): relu fused into the ADD, sigmoid/tanh a LOGISTIC/TANH after it."""
    if fn == "relu":
        return [Step("add", out, (a, b), fn="relu")]
    return [Step("add", pre, (a, b)), Step("act", out, (pre,), fn=fn)]


def refusal(node) -> str | None:
    """Why tinyc cannot quantize this GRU/RNN node (None: it can)."""
    a = node.attrs
    if a.get("clip") is not None:
        return f"{node.op} '{node.name}': attribute clip {a['clip']:g} (int8 GRU/RNN chains have no clip); " \
               "quantize a model without clip"
    for act in a["activations"]:
        if act.get("fn") not in CELL_ACTIVATIONS or len(act) > 1:
            return f"{node.op} '{node.name}': activation {act} in the cell; tinyc's int8 GRU/RNN cell takes " \
                   f"{', '.join(CELL_ACTIVATIONS)}"
    return None


def chain(node) -> list[Step]:
    """The per-step chain of a GRU or RNN node, in execution order; the last step writes role `h`."""
    a = node.attrs
    fns = [act["fn"] for act in a["activations"]]
    if node.op == "RNN":
        return [_fc("xa", "x", "w", 0, True), _fc("ha", "h", "r", 0)] + _activated("h", "s", "xa", "ha", fns[0])
    f, g = fns
    steps = []
    for gate, name in enumerate("zr"):
        steps += [_fc(f"x{name}", "x", "w", gate, True), _fc(f"h{name}", "h", "r", gate)]
        steps += _activated(name, f"{name}s", f"x{name}", f"h{name}", f)
    steps.append(_fc("xn", "x", "w", 2, True))
    if a.get("linear_before_reset"):
        steps += [_fc("hn", "h", "r", 2, True), Step("mul", "rhn", ("r", "hn"))]
        steps += _activated("n", "ns", "xn", "rhn", g)
    else:
        steps += [Step("mul", "rh", ("r", "h")), _fc("hn", "rh", "r", 2, True)]
        steps += _activated("n", "ns", "xn", "hn", g)
    return steps + [Step("sub", "d", ("h", "n")), Step("mul", "zd", ("z", "d")), Step("add", "h", ("n", "zd"))]


def intermediate_roles(steps) -> list[str]:
    """Roles with their own parameters: every output but the new hidden state's."""
    return [s.out for s in steps if s.out != "h"]


def fixed_quant(step: Step):
    return FIXED_QUANT.get(step.fn) if step.kind == "act" else None


def fc_biases(op: str, b: np.ndarray, rb: np.ndarray | None, H: int):
    """(bx, bh): the biases of the FCs of x and of the recurrent input, float; bh None for an RNN."""
    if op == "RNN":
        return np.asarray(b, np.float64), None
    b, rb = np.asarray(b, np.float64), np.asarray(rb, np.float64)
    bx = b.copy()
    bx[:2 * H] += rb[:2 * H]
    bh = np.zeros(3 * H)
    bh[2 * H:] = rb[2 * H:]
    return bx, bh


def float_ranges(node, inputs) -> dict[str, tuple[float, float]]:
    """(min, max) of every role of the chain over all steps of one float run of the node (calibration)."""
    steps = chain(node)
    x, w, r, b = (np.asarray(v, np.float64) for v in inputs[:4])
    H = r.shape[1]
    bx, bh = fc_biases(node.op, b, inputs[4] if node.op == "GRU" else None, H)
    h = np.asarray(inputs[-1], np.float64)
    T = x.shape[1]
    lo: dict = {}
    hi: dict = {}
    for t in (range(T - 1, -1, -1) if node.attrs.get("reverse") else range(T)):
        v = {"x": x[:, t], "h": h}
        for s in steps:
            ins = [v[i] for i in s.ins]
            if s.kind == "fc":
                rows = slice(s.gate * H, (s.gate + 1) * H)
                m, bias = (w, bx) if s.matrix == "w" else (r, bh)
                y = ins[0] @ m[rows].T + (bias[rows] if s.bias else 0.0)
            elif s.kind in ("add", "sub", "mul"):
                y = ins[0] + ins[1] if s.kind == "add" else ins[0] - ins[1] if s.kind == "sub" else ins[0] * ins[1]
                if s.fn == "relu":
                    y = np.maximum(y, 0.0)
            else:
                y = activations.apply({"fn": s.fn}, ins[0])
            v[s.out] = y
            if s.out != "h":
                lo[s.out] = min(lo.get(s.out, np.inf), float(np.min(y)))
                hi[s.out] = max(hi.get(s.out, -np.inf), float(np.max(y)))
        h = v["h"]
    return {k: (lo[k], hi[k]) for k in lo}


# -- int8_prepare: each step's parameters from its op's own int8_prepare -----------------------------------------
def _quant(scale, zero_point, axis=None):
    """A Quant-like record (ops sit below tinyc.ir)."""
    return SimpleNamespace(scale=scale, zero_point=zero_point, axis=axis)


def _tensor(name: str, shape, quant, data=None):
    return SimpleNamespace(name=name, shape=tuple(shape), dtype="int8", data=data, quant=quant,
                           is_const=data is not None)


class _StepContext:
    """What an op's int8_prepare reads of a kernel context, for one step of the chain."""

    def __init__(self, name: str, op: str, attrs: dict, inputs: list, out):
        self.node = SimpleNamespace(name=name, op=op, attrs=attrs)
        self._inputs, self.out = inputs, out

    def tensor(self, i):
        return self._inputs[i]

    def in_shape(self, i):
        return self._inputs[i].shape

    def has_input(self, i):
        return len(self._inputs) > i


@dataclass(frozen=True)
class ChainParams:
    steps: tuple            # Step
    params: tuple           # per step: DenseParams / AddSubParams / MulParams / ActivationParams
    quants: dict            # role -> Quant


def _refuse(k, what: str) -> TinycError:
    return TinycError(f"int8 {k.node.op} '{k.node.name}': {what}")


def _gate_quant(k, i: int, gate: int, H: int):
    t = k.tensor(i)
    if t.dtype != "int8" or not t.is_const or t.quant is None:
        raise _refuse(k, f"weights '{t.name}' must be constant int8 with quantization parameters (got {t.dtype})")
    scale = np.asarray(t.quant.scale, np.float32).reshape(-1)
    if scale.size != 1:
        scale = scale[gate * H:(gate + 1) * H]
    return _quant(scale, np.zeros(scale.shape, np.int64), 0 if scale.size > 1 else None)


def _role_quants(k, steps) -> dict:
    a = k.node.attrs
    given = a.get("step_quant")
    if given is None:
        raise _refuse(k, "attribute step_quant (each intermediate's scale and zero point) is missing; int8 GRU/RNN "
                         "nodes come from tinyc's --quantize int8")
    quants = {"x": k.tensor(0).quant, "h": k.out.quant}
    for role in intermediate_roles(steps):
        if role not in given:
            raise _refuse(k, f"step_quant has no parameters for '{role}'")
        scale, zp = given[role]
        quants[role] = _quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64))
    for i in (3, 4) if k.node.op == "GRU" else (3,):
        b = k.tensor(i)
        if b.dtype != "int32" or not b.is_const:
            raise _refuse(k, f"bias '{b.name}' must be constant int32 (found {b.dtype})")
    h0 = k.tensor(len(k.node.inputs) - 1).quant
    if h0 is None or quants["h"] is None or not (
            np.array_equal(np.float32(h0.scale), np.float32(quants["h"].scale))
            and np.array_equal(np.asarray(h0.zero_point), np.asarray(quants["h"].zero_point))):
        raise _refuse(k, "the initial hidden state and the output need one scale and zero point")
    return quants


def int8_prepare(k) -> ChainParams:
    reason = refusal(k.node)
    if reason:
        raise TinycError(reason)
    steps = chain(k.node)
    quants = _role_quants(k, steps)
    H, I = k.in_shape(2)[1], k.in_shape(0)[2]
    size = {"x": I}
    params = []
    for s in steps:
        name = f"{k.node.name} step {s.out}"
        ins = [_tensor(r, (1, size.get(r, H)), quants[r]) for r in s.ins]
        out = _tensor(s.out, (1, H), quants[s.out])
        if s.kind == "fc":
            i = 1 if s.matrix == "w" else 2
            K = size.get(s.ins[0], H)
            weights = _tensor(f"{k.tensor(i).name}[{s.gate}]", (H, K), _gate_quant(k, i, s.gate, H),
                              np.zeros((H, K), np.int8))
            params.append(dense.int8_prepare(_StepContext(name, "Dense", {}, ins + [weights], out)))
        elif s.kind in ("add", "sub"):
            attrs = {"activation": {"fn": "relu"}} if s.fn == "relu" else {}
            params.append(binary.add_sub_prepare(_StepContext(name, s.kind.title(), attrs, ins, out)))
        elif s.kind == "mul":
            params.append(binary.mul_prepare(_StepContext(name, "Mul", {}, ins, out)))
        else:
            params.append(activation_op.int8_prepare(_StepContext(name, "Activation", {"fn": s.fn}, ins, out)))
    return ChainParams(tuple(steps), tuple(params), quants)


# -- int8_kernel: one loop over time, the chain's arithmetic per step ---------------------------------------------
def _buffer(role: str) -> str:
    return {"x": "xt", "h": "h"}.get(role, f"v_{role}")


def _fc_code(k, s: Step, p, H: int, K: int, fast: bool) -> str:
    """FULLY_CONNECTED's reference requantization, round(acc * scale) in double; `fast`: the same result by
    tinyc_requantize_double_fast (acc * round(scale * 2^32), the double path only near a tie; docs/fast-kernels.md)."""
    src, dst = _buffer(s.ins[0]), "h_new" if s.out == "h" else _buffer(s.out)
    weights = k.expr(1 if s.matrix == "w" else 2)
    requant = _fc_requant(k, s, p, H, fast)
    bias = ""
    if s.bias:
        bias = f"        acc += {k.expr(3 if s.matrix == 'w' else 4)}[{s.gate * H} + o];\n"
    return (f"      for (int o = 0; o < {H}; ++o) {{  /* {s.out} = FULLY_CONNECTED({s.ins[0]}) */\n"
            f"        const int8_t *wr = {weights} + ({s.gate * H} + o) * {K};\n"
            f"        int32_t acc = 0;\n"
            f"        for (int i = 0; i < {K}; ++i) acc += ((int32_t){src}[i] - ({p.in_zp})) * wr[i];\n"
            f"{bias}"
            f"        acc = {requant};\n"
            f"        {dst}[o] = tinyc_sat8(acc, {p.lo}, {p.hi});\n"
            f"      }}")


def _fc_requant(k, s: Step, p, H: int, fast: bool) -> str:
    """acc requantized to the output's int8 scale plus its zero point (before saturation), for row `o`."""
    scales = list(p.scales) if p.per_channel else [p.scales[0]] * H
    table = k.table(scales, "float64", f"requantization scales of {s.out}")
    requant = f"tinyc_requantize_double(acc, {table}[o])" if p.per_channel else \
        f"tinyc_requantize_double(acc, {c_double(p.scales[0])})"
    if fast:
        m, tie = zip(*(gemm_pack.double_requant(v) for v in scales))
        requant = (f"tinyc_requantize_double_fast(acc, {k.table(m, 'int32', f'{s.out}: scale x 2^32')}[o], "
                   f"(uint32_t){k.table(tie, 'int32', f'{s.out}: half-way margin')}[o], {table} + o)")
    return f"{requant} + ({p.out_zp})"


def _pair_roles(steps, I: int, H: int) -> list[tuple[str, int]]:
    """(role, K4) of each vector an FC reads with at least four columns, in first-use order: the fast kernel's
    halfword pairs of it (x_t, h, and a GRU's r * h when the reset comes before the product)."""
    roles = []
    for s in steps:
        K4 = (I if s.ins[0] == "x" else H) // 4 * 4
        if s.kind == "fc" and K4 and s.ins[0] not in dict(roles):
            roles.append((s.ins[0], K4))
    return roles


def _pairs_offset(steps, H: int) -> int:
    """Where the halfword pairs start in the scratch: after the int8 intermediates, 4-byte aligned."""
    return (H * len(intermediate_roles(steps)) + 3) // 4 * 4


def _indented(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.rstrip("\n").split("\n"))


def _fc_smlad_code(k, s: Step, p, H: int, K: int) -> str | None:
    """FULLY_CONNECTED with its products on SMLAD against the halfword pairs of its input (DSP cores; plain C over
    the same re-laid-out weights otherwise). The input's zero point is folded into a per-row constant, bias -
    zp * sum(row): the same exact integer sum as the reference's sum of (v - zp) w plus bias. None when that constant
    plus the products could leave int32 (the reference loop is used then)."""
    w = np.asarray(k.tensor(1 if s.matrix == "w" else 2).data, np.int64)[s.gate * H:(s.gate + 1) * H]
    fold = -int(p.in_zp) * w.sum(axis=1)
    if s.bias:
        fold = fold + np.asarray(k.tensor(3 if s.matrix == "w" else 4).data, np.int64)[s.gate * H:(s.gate + 1) * H]
    if int(np.abs(fold).max()) + K * 128 * 128 >= 2 ** 31:
        return None
    src, dst = _buffer(s.ins[0]), "h_new" if s.out == "h" else _buffer(s.out)
    what = f"{s.out} gate {s.gate} of {'w' if s.matrix == 'w' else 'r'}"
    if K >= 4:
        head, tail, K4 = int8_smlad.split_rows(k, w.astype(np.int8), f"int8 {k.node.op} {what}")
    else:
        head, tail, K4 = None, k.table(w.astype(np.int8), "int8", f"int8 {k.node.op} {what}"), 0
    folded = k.table(fold.astype(np.int32), "int32", f"{s.out}: bias - input zero point x row sum")
    requant = _fc_requant(k, s, p, H, True)
    Kt, H4 = K - K4, H // 4 * 4
    tail_rows = "".join(f"          a{u} += e * {tail}[(j + {u}) * {Kt} + i];\n" for u in range(4))
    code = [f"      {{  /* {s.out} = FULLY_CONNECTED({s.ins[0]}), zero point folded into {folded} */"]
    rest = "0"
    if K4 and H4:
        code += ["#if TINYC_DSP",
                 f"        for (int j = 0; j < {H4}; j += 4) {{",
                 f"          const int8_t *restrict w0 = {head} + j * {K4};",
                 f"          int32_t a0 = {folded}[j], a1 = {folded}[j + 1], a2 = {folded}[j + 2], "
                 f"a3 = {folded}[j + 3];",
                 _indented(int8_smlad.macros().rows4(f"{src}_pairs", "w0", K4), 2)]
        if Kt:
            code += [f"          for (int i = 0; i < {Kt}; ++i) {{",
                     f"            const int32_t e = {src}[{K4} + i];",
                     tail_rows.replace("          a", "            a").rstrip("\n"),
                     "          }"]
        code += ["          const int32_t sums[4] = {a0, a1, a2, a3};",
                 "          for (int o = j; o < j + 4; ++o) {",
                 "            int32_t acc = sums[o - j];",
                 f"            acc = {requant};",
                 f"            {dst}[o] = tinyc_sat8(acc, {p.lo}, {p.hi});",
                 "          }",
                 "        }",
                 f"        const int rest = {H4};     /* the rows after the groups of four */",
                 "#else",
                 "        const int rest = 0;",
                 "#endif"]
        rest = "rest"
    code += [f"        for (int o = {rest}; o < {H}; ++o) {{",
             f"          int32_t acc = {folded}[o];"]
    if K4:
        code += [f"          const int8_t *restrict wr = {head} + o * {K4};",
                 f"          for (int i = 0; i < {K4}; ++i) acc += {src}[i] * wr[i];"]
    if Kt:
        code += [f"          for (int i = 0; i < {Kt}; ++i) acc += {src}[{K4} + i] * {tail}[o * {Kt} + i];"]
    code += [f"          acc = {requant};",
             f"          {dst}[o] = tinyc_sat8(acc, {p.lo}, {p.hi});",
             "        }",
             "      }"]
    return "\n".join(code)


def _absmax(zp: int) -> int:
    """max |x - zp| over int8 x."""
    return max(abs(-128 - zp), abs(127 - zp))


def _fast_elementwise_body(s: Step, p, dst: str, a: str, b: str) -> str:
    """ADD / SUB / MUL with int8_fast_misc's requantization expressions, each equal to tinyc_requantize over the
    bound of its operand (as the fast Add/Sub/Mul kernels)."""
    if s.kind == "mul":
        (z1, z2) = p.in_zps
        out = requant_expr("p", _absmax(z1) * _absmax(z2), p.mult, p.shift, p.out_zp)
        return f"const int32_t p = ((int32_t){a} - ({z1})) * ((int32_t){b} - ({z2})); " \
               f"{dst}[i] = {clamp_expr(out, p.lo, p.hi)};"
    operands = []
    for x, (m, sh), z in zip((a, b), p.in_mults, p.in_zps):
        operands.append(requant_expr(f"((int32_t){x} - ({z})) * (1 << 20)", _absmax(z) << 20, m, sh))
    bound = sum(max(abs(mbqm((v - z) * (1 << 20), m, sh)) for v in range(-128, 128))
                for (m, sh), z in zip(p.in_mults, p.in_zps))
    out = requant_expr("r", bound, p.out_mult, p.out_shift, p.out_zp)
    sign = "+" if s.kind == "add" else "-"
    return (f"const int32_t r = ({operands[0]}) {sign} ({operands[1]});\n        "
            f"{dst}[i] = {clamp_expr(out, p.lo, p.hi)};")


def _elementwise_code(k, s: Step, p, H: int, fast: bool) -> str:
    dst = "h_new" if s.out == "h" else _buffer(s.out)
    a = _buffer(s.ins[0]) + "[i]"
    if fast and s.kind in ("add", "sub", "mul"):
        body = _fast_elementwise_body(s, p, dst, a, _buffer(s.ins[1]) + "[i]")
    elif s.kind in ("add", "sub"):
        (m1, sh1), (m2, sh2) = p.in_mults
        z1, z2 = p.in_zps
        b = _buffer(s.ins[1]) + "[i]"
        sign = "+" if s.kind == "add" else "-"
        body = (f"const int32_t u = tinyc_requantize(((int32_t){a} - ({z1})) * (1 << 20), {m1}, {sh1});\n        "
                f"const int32_t v = tinyc_requantize(((int32_t){b} - ({z2})) * (1 << 20), {m2}, {sh2});\n        "
                f"{dst}[i] = tinyc_sat8(tinyc_requantize(u {sign} v, {p.out_mult}, {p.out_shift}) + ({p.out_zp}), "
                f"{p.lo}, {p.hi});")
    elif s.kind == "mul":
        z1, z2 = p.in_zps
        b = _buffer(s.ins[1]) + "[i]"
        body = (f"{dst}[i] = tinyc_sat8(tinyc_requantize(((int32_t){a} - ({z1})) * ((int32_t){b} - ({z2})), "
                f"{p.mult}, {p.shift}) + ({p.out_zp}), {p.lo}, {p.hi});")
    else:
        table = k.table(list(p.table), "int8", f"int8 {p.fn} table of {s.out}")
        body = f"{dst}[i] = {table}[{a} + 128];"
    what = {"add": "ADD", "sub": "SUB", "mul": "MUL"}.get(s.kind) or ("LOGISTIC" if s.fn == "sigmoid" else "TANH")
    fused = " + RELU" if s.fn == "relu" and s.kind == "add" else ""
    return (f"      for (int i = 0; i < {H}; ++i) {{  /* {s.out} = {what}{fused}({', '.join(s.ins)}) */\n"
            f"        {body}\n      }}")


def work_bytes(g, node) -> int:
    """Arena scratch: one int8 vector of H per intermediate role (the hidden state lives in the output), then, for
    the fast kernel, the halfword pairs of each vector an FC reads (the first multiple of four of its values)."""
    H = g.tensors[node.inputs[2]].shape[1]
    I = g.tensors[node.inputs[0]].shape[2]
    steps = chain(node)
    return _pairs_offset(steps, H) + sum(2 * K4 for _, K4 in _pair_roles(steps, I, H))


def int8_kernel(k, fast: bool = False):
    p: ChainParams = k.params
    B, T, I = k.in_shape(0)
    H = k.in_shape(2)[1]
    if k.work is None:
        raise TinycError(f"internal: int8 {k.node.op} '{k.node.name}' has no arena scratch for its step values")
    roles = intermediate_roles(p.steps)
    pairs, offset, expanded, smlad = {}, _pairs_offset(p.steps, H), set(), False
    for role, K4 in _pair_roles(p.steps, I, H) if fast else ():
        pairs[role] = offset
        offset += 2 * K4
    code = []
    for s, sp in zip(p.steps, p.params):
        K = I if s.ins[0] == "x" else H
        fc = _fc_smlad_code(k, s, sp, H, K) if fast and s.kind == "fc" else None
        if fc is not None and K >= 4 and s.ins[0] not in expanded and H >= 4:
            # once per step, before the first product that reads the vector (x_t and h do not change in a step)
            expanded.add(s.ins[0])
            src = _buffer(s.ins[0])
            code.append("#if TINYC_DSP\n" + int8_smlad.macros().expand_pairs(f"{src}_pairs", src, K // 4 * 4)
                        + "#endif")
        smlad = smlad or (fc is not None and K >= 4 and H >= 4)
        if fc is None:
            fc = _fc_code(k, s, sp, H, K, fast) if s.kind == "fc" else _elementwise_code(k, s, sp, H, fast)
        code.append(fc)
    v = dict(B=B, T=T, I=I, H=H, op=k.node.op, reverse=bool(k.node.attrs.get("reverse")),
             sequence=k.node.attrs["output"] == "sequence", h0=k.expr(len(k.node.inputs) - 1), x=k.expr(0),
             buffers=[(_buffer(r), j * H) for j, r in enumerate(roles)], steps="\n".join(code),
             chain=",\n   *   ".join(f"{s.out} = {s.kind}{'/' + s.fn if s.fn else ''}({', '.join(s.ins)})"
                                     for s in p.steps),
             pairs=[(f"{_buffer(r)}_pairs", at) for r, at in pairs.items() if r in expanded],
             variant="smlad" if smlad else "")
    G = 3 if k.node.op == "GRU" else 1
    return "recurrent_chain.c.j2", v, B * T * G * H * (I + H)


def int8_fast(k):
    """The reference kernel with each FC's products on SMLAD (DSP cores; plain loops over the same re-laid-out
    weights otherwise; codegen/int8_smlad.py, as the fast int8 LSTM) and its output requantized by
    tinyc_requantize_double_fast (the soft-float double product and round of Cortex-M0+/M33 only within a margin of
    a tie), and ADD / SUB / MUL by the fast Add/Sub/Mul kernels' requantization expressions (SMMULR forms proved over
    each operand's bound); None when a scale is outside tinyc_requantize_double_fast's range."""
    p: ChainParams = k.params
    for s, sp in zip(p.steps, p.params):
        if s.kind == "fc" and any(gemm_pack.double_requant(v) is None for v in sp.scales):
            return None
    return int8_kernel(k, fast=True)
