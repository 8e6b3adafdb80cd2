"""Loop nests for kernels whose index arithmetic depends on shapes (broadcasts, transposes, pads, reductions).

`strided_loops` takes an iteration shape and, per operand, the element stride of each iteration axis (0 for a
broadcast axis); adjacent axes that every operand walks contiguously are merged first, so the common cases
(same shapes, per-channel constants, scalars) come out as one or two flat loops.
"""
from __future__ import annotations


def row_major_strides(shape) -> list:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc if d != 1 else 0)
        acc *= d
    return list(reversed(strides))


def broadcast_strides(shape, out_shape) -> list:
    """Strides to read an operand of `shape` (numpy-broadcast to `out_shape`) in out_shape's iteration."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    return [s if d != 1 else 0 for s, d in zip(row_major_strides(shape), shape)]


def coalesce(shape, strides_list):
    """Merge axis i into i+1 when every operand's stride satisfies s[i] == s[i+1] * shape[i+1]."""
    dims = [(d, [s[i] for s in strides_list]) for i, d in enumerate(shape) if d != 1]
    if not dims:
        return [1], [[0] for _ in strides_list]
    merged = [dims[0]]
    for d, ss in dims[1:]:
        pd, pss = merged[-1]
        if all(ps == s * d for ps, s in zip(pss, ss)):
            merged[-1] = (pd * d, ss)
        else:
            merged.append((d, ss))
    return [d for d, _ in merged], [[ss[k] for _, ss in merged] for k in range(len(strides_list))]


def strided_loops(shape, strides_list, body: str, indent: str = "  ", var: str = "i") -> str:
    """Nested for-loops over `shape`; `body` may use {o0}, {o1}, ... the offset expression of each operand.
    Loop counters are named `var`0, `var`1, ... (pick another `var` for a nest inside a nest)."""
    shape, strides_list = coalesce(shape, strides_list)
    lines, pad = [], indent
    for ax, d in enumerate(shape):
        lines.append(f"{pad}for (int {var}{ax} = 0; {var}{ax} < {d}; ++{var}{ax}) {{")
        pad += "  "
    offsets = {}
    for k, strides in enumerate(strides_list):
        terms = [f"{var}{ax}" if s == 1 else f"{var}{ax} * {s}" for ax, s in enumerate(strides) if s != 0]
        offsets[f"o{k}"] = " + ".join(terms) if terms else "0"
    lines.append(pad + body.format(**offsets))
    for ax in range(len(shape)):
        pad = pad[:-2]
        lines.append(f"{pad}}}")
    return "\n".join(lines)


def dense_strides(shape) -> list:
    """Row-major element strides, size-1 axes included (row_major_strides gives those 0)."""
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return list(reversed(strides))


def place_block(src_shape, out_shape, begin, src_expr) -> str:
    """Loops copying a whole `src_shape` block of `src_expr` into y of `out_shape` at corner `begin` (Pad, Concat)."""
    full = dense_strides(out_shape)
    base = sum(b * s for b, s in zip(begin, full))
    body = "y[%d + {o1}] = %s[{o0}];" % (base, src_expr) if base else "y[{o1}] = %s[{o0}];" % src_expr
    return strided_loops(src_shape, [row_major_strides(src_shape),
                                     [s if d != 1 else 0 for s, d in zip(full, src_shape)]], body)
