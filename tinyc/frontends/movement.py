"""Data-movement lowerings shared by the frontends: DepthToSpace / SpaceToDepth as Reshape -> Transpose ->
Reshape (the Reshapes are free aliases, the Transpose is the one copy)."""
from __future__ import annotations

from ..errors import TinycError


def depth_space(shape, block: int, to_space: bool, crd: bool, nhwc: bool, what: str):
    """(the 6-D shape x is reshaped to, the Transpose's perm, the output's 4-D shape) for DepthToSpace
    (`to_space`; DCR: channel (i * block + j) * C' + c, CRD: c * block^2 + i * block + j, for the pixel at offset
    (i, j) of its block) or SpaceToDepth (the same channel orders, `crd` from opset 28) of a 4-D `shape`, stored
    NHWC (`nhwc`) or NCHW."""
    if len(shape) != 4 or block < 1:
        raise TinycError(f"{what}: needs a 4-D input and a block size >= 1 (got {tuple(shape)}, {block})")
    b = block
    if nhwc:
        n, h, w, c = shape
    else:
        n, c, h, w = shape
    if to_space:
        if c % (b * b):
            raise TinycError(f"{what}: {c} channels are not a multiple of block size {b} squared")
        cc = c // (b * b)
        if nhwc:
            mid, perm = ((n, h, w, cc, b, b), (0, 1, 4, 2, 5, 3)) if crd else ((n, h, w, b, b, cc), (0, 1, 3, 2, 4, 5))
            out = (n, h * b, w * b, cc)
        else:
            mid, perm = ((n, cc, b, b, h, w), (0, 1, 4, 2, 5, 3)) if crd else ((n, b, b, cc, h, w), (0, 3, 4, 1, 5, 2))
            out = (n, cc, h * b, w * b)
        return mid, perm, out
    if h % b or w % b:
        raise TinycError(f"{what}: height {h} and width {w} are not multiples of block size {b}")
    if nhwc:    # axes n, h', i, w', j, c
        perm = (0, 1, 3, 5, 2, 4) if crd else (0, 1, 3, 2, 4, 5)
        return (n, h // b, b, w // b, b, c), perm, (n, h // b, w // b, b * b * c)
    perm = (0, 1, 3, 5, 2, 4) if crd else (0, 3, 5, 1, 2, 4)    # axes n, c, h', i, w', j
    return (n, c, h // b, b, w // b, b), perm, (n, b * b * c, h // b, w // b)


def lower_depth_space(g, src: str, dst: str, mid, perm, name: str) -> None:
    """Reshape `src` to `mid`, transpose by `perm`, reshape into the existing tensor `dst` (same dtype and
    quantization throughout)."""
    s = g.tensors[src]
    a = g.unique_name(f"{dst}_blocks")
    g.add_tensor(a, mid, s.dtype, quant=s.quant)
    g.add_node("Reshape", [src], [a], name=a)
    b = g.unique_name(f"{dst}_moved")
    g.add_tensor(b, tuple(mid[p] for p in perm), s.dtype, quant=s.quant)
    g.add_node("Transpose", [a], [b], name=name, perm=tuple(perm))
    g.add_node("Reshape", [b], [dst], name=g.unique_name(f"{dst}_merge"))
