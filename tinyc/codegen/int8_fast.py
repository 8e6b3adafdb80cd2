"""Fast int8 kernel rules: (template in templates/int8_fast/, variables, MACs), or None where the reference
kernel (the op's int8_kernel in tinyc/ops/, the twin each must equal bit for bit) is used instead. Both read
the parameters the op's int8_prepare computed (`k.params`).

`work_bytes(graph, node)` tells the memory planner how much kernel scratch a layer's fast kernel needs; it must
make the same choice as the rule (both go through `conv_mode`).
"""
from __future__ import annotations

import math

import jinja2
import numpy as np

from ..errors import TinycError
from ..quant import fixed_point
from ..quant import params as qp
from ..resources import resource_dir
from . import gemm_pack, int8_depthwise, int8_matmul, int16_fast
from . import int4_gemm


def conv_geometry(g, node) -> dict:
    _, ih, iw, ic = g.tensors[node.inputs[0]].shape
    _, oh, ow, oc = g.tensors[node.outputs[0]].shape
    _, kh, kw, _ = g.tensors[node.inputs[1]].shape
    a = node.attrs
    return dict(ih=ih, iw=iw, ic=ic, oh=oh, ow=ow, oc=oc, kh=kh, kw=kw, sh=a["strides"][0], sw=a["strides"][1],
                dh=a["dilations"][0], dw=a["dilations"][1], pads=list(a["pads"]), pt=a["pads"][0],
                pl=a["pads"][1])


def window_k(geo: dict) -> int:
    """Row length of an im2col window in the kernel scratch: kh * kw * ic rounded up to 4, so the GEMM has no
    scalar tail (the padding inputs meet zero weights)."""
    return -(-geo["kh"] * geo["kw"] * geo["ic"] // 4) * 4


def interior(geo: dict) -> dict:
    """The output pixels whose whole window lies inside the input (no bounds checks, one row copy per window
    row): oy_lo..oy_hi x ox_lo..ox_hi, empty when lo > hi."""
    def span(size, k, s, d, pad, out):
        lo = -(-pad // s)
        hi = (size - 1 - (k - 1) * d + pad) // s
        return max(lo, 0), min(hi, out - 1)
    oy = span(geo["ih"], geo["kh"], geo["sh"], geo["dh"], geo["pt"], geo["oh"])
    ox = span(geo["iw"], geo["kw"], geo["sw"], geo["dw"], geo["pl"], geo["ow"])
    return dict(oy_lo=oy[0], oy_hi=oy[1], ox_lo=ox[0], ox_hi=ox[1])


def _unroll(chunks: int) -> tuple[int, int, int]:
    """(unroll, main iterations, rest chunks) for the inner loop over chunks of four inputs."""
    u = 8 if chunks >= 16 else (4 if chunks >= 8 else (2 if chunks >= 2 else 1))
    return u, chunks // u, chunks % u


def _int8_weights(g, node):
    w = g.tensors[node.inputs[1]]
    if w.dtype != "int8" or not w.is_const or w.quant is None:
        return None
    if np.any(np.asarray(w.quant.zero_point) != 0):
        return None
    return w.data.astype(np.int8)


def _bias(g, node):
    if len(node.inputs) < 3:
        return None
    b = g.tensors[node.inputs[2]]
    return b.data.astype(np.int64) if b.dtype == "int32" and b.is_const else False


def _io_int8(g, node) -> bool:
    return all(g.tensors[t].dtype == "int8" and g.tensors[t].quant is not None
               for t in (node.inputs[0], node.outputs[0]))


def _gemm_applies(w2d, bias, in_q) -> bool:
    """The GEMM kernel takes these weights: at least 4 inputs, exact pair packing, folded biases in int32 for
    both paths (the same checks _gemm_vars makes, so the planner's scratch and the rule agree)."""
    zp = qp.zero_point_of(in_q)
    return (w2d.shape[1] >= 4 and gemm_pack.pack(w2d) is not None
            and gemm_pack.folded_bias(w2d, bias, zp) is not None
            and gemm_pack.byte_folded_bias(w2d, bias, zp) is not None)


def conv_mode(g, node) -> str | None:
    """'rows' (1x1, stride 1), 'strided' (1x1, stride > 1), 'im2col' (k x k) for a regular (groups 1) int8 conv
    whose weights pack exactly; None otherwise."""
    if node.op != "Conv2D" or node.attrs.get("groups", 1) != 1 or not _io_int8(g, node):
        return None
    w = _int8_weights(g, node)
    bias = _bias(g, node)
    if w is None or bias is False or not _gemm_applies(w.reshape(w.shape[0], -1), bias,
                                                        g.tensors[node.inputs[0]].quant):
        return None
    geo = conv_geometry(g, node)
    if geo["kh"] == 1 and geo["kw"] == 1 and not any(geo["pads"]):
        return "rows" if (geo["sh"], geo["sw"]) == (1, 1) else "strided"
    return "im2col"


def is_depthwise(g, node) -> bool:
    """One output channel per input channel (depth multiplier 1)."""
    if node.op != "Conv2D":
        return False
    groups = node.attrs.get("groups", 1)
    ic, oc = g.tensors[node.inputs[0]].shape[-1], g.tensors[node.outputs[0]].shape[-1]
    return groups > 1 and groups == ic == oc


SCRATCH = "kernel_scratch"
# A conv computing one output row (a fused block's row kernel, codegen/fused_block.py) stores it channel-major: the
# row's channel c is bytes [c W, (c + 1) W), what a depthwise row kernel reading int8_depthwise.PLANAR_ROWS_IN copies
# contiguously
PLANAR_ROWS_OUT = "planar_rows_out"
"""Node attribute the memory planner sets (codegen/scratch_fit.py) where a fast kernel's scratch would raise the
arena: "small" (the variant with the least scratch) or "none" (no scratch: the reference kernel)."""


def scratch_level(node) -> str:
    return node.attrs.get(SCRATCH, "full")


def two_pixels(g, node) -> bool:
    """Convs with at least two output pixels and one channel pair take the two-pixel DSP path (unless the
    planner asked for the least scratch)."""
    geo = conv_geometry(g, node)
    return geo["oh"] * geo["ow"] >= 2 and geo["oc"] >= 2 and scratch_level(node) == "full"


def _scratch_layout(g, node) -> tuple[int, int]:
    """(bytes, offset of the int16-expanded inputs): im2col windows of one or two pixels, then for the two-pixel
    path the two pixels' inputs sign-extended (4 bytes per input pair of pixels)."""
    mode = conv_mode(g, node)
    geo = conv_geometry(g, node)
    kdim = window_k(geo) if mode == "im2col" else geo["ic"]
    px2 = two_pixels(g, node)
    gather = kdim * (2 if px2 else 1) if mode == "im2col" else 0
    e_offset = -(-gather // 4) * 4
    return (e_offset + 4 * (kdim - kdim % 4) if px2 else gather), e_offset


def dense_applies(g, node) -> bool:
    """The fast FULLY_CONNECTED kernel takes this layer (weights, bias and every channel's scale)."""
    if node.op != "Dense" or not _io_int8(g, node):
        return False
    w, bias = _int8_weights(g, node), _bias(g, node)
    if w is None or bias is False or not _gemm_applies(w, bias, g.tensors[node.inputs[0]].quant):
        return False
    scales = qp.fc_scales(g.tensors[node.inputs[0]].quant, g.tensors[node.inputs[1]].quant,
                          g.tensors[node.outputs[0]].quant, w.shape[0])
    return all(gemm_pack.double_requant(s) is not None for s in scales)


def dense_expands(g, node) -> bool:
    """FULLY_CONNECTED layers whose inputs are sign-extended once per row into kernel scratch (2 bytes per
    input) for the DSP path: worth it from 4 channel pairs and 64 inputs on (below that the gain is a few
    instructions and the scratch can cost more arena than it saves time)."""
    if not dense_applies(g, node) or scratch_level(node) != "full":
        return False
    w = g.tensors[node.inputs[1]]
    return w.shape[0] >= 8 and w.shape[1] >= 64


def work_bytes(g, node) -> int:
    """Kernel scratch of the fast kernel chosen for `node` (e.g. im2col windows, expanded inputs): the larger of
    the DSP path's and the byte path's (one row of inputs + 128, K rounded up to 8), which share it."""
    if scratch_level(node) == "none":
        return 0
    if node.op == "FusedBlock":           # the largest of its layers' row kernels (codegen/fused_block.py)
        from .fused_block import fast_work_bytes
        return fast_work_bytes(node)
    if int4_gemm.applies(g, node):        # int4 weights (int4_gemm.py)
        return int4_gemm.scratch_bytes(g, node)
    from .hybrid_fast import applies as hybrid_applies, work_bytes as hybrid_work_bytes   # (it imports the ops)
    if hybrid_applies(g, node):
        return hybrid_work_bytes(g, node)
    if node.op == "ConvTranspose2D":
        return transpose_work_bytes(g, node)
    if is_depthwise(g, node):
        return int8_depthwise.work_bytes(g, node)
    if node.op == "MatMul":
        return int8_matmul.work_bytes(g, node, scratch_level(node))
    if dense_applies(g, node):
        k = g.tensors[node.inputs[1]].shape[1]
        return max(2 * (k - k % 4) if dense_expands(g, node) else 0, gemm_pack.byte_k(k))
    if conv_mode(g, node) is None:
        return 0
    geo = conv_geometry(g, node)
    return max(_scratch_layout(g, node)[0], gemm_pack.byte_k(window_k(geo)))


def _gemm_vars(k, w2d, bias, in_zp, layout="quad"):
    """Variables shared by every GEMM use: packed weights, folded bias, unrolling (for weights _gemm_applies
    accepted)."""
    packed = gemm_pack.pack(w2d, layout)
    folded = gemm_pack.folded_bias(w2d, bias, in_zp)
    o, kdim = w2d.shape
    # per segment of the inputs (gemm_pack.segments): the inner loop's unrolling, iterations and rest chunks
    segs = [dict(zip(("unroll", "iters", "rest"), _unroll(n))) for n in packed.segments]
    dsp = "TINYC_DSP"
    return dict(
        kdim=kdim, kwin=kdim, o=o, k4=packed.k4, ktail=kdim - packed.k4, quads=packed.quads, odd_pair=packed.odd_pair,
        odd_single=packed.odd_single, segs=segs, layout=layout,
        pairs=packed.pairs, px2=False, e_offset=0, expand=False, pstride=None, cstride=1,
        packed=k.table(packed.packed, "int16", "pair-packed weights", dsp) if packed.packed.size else None,
        single=k.table(packed.single, "int8", "weights of the odd channel", dsp) if packed.odd_single else None,
        tailw=k.table(packed.tail, "int8", "weights of the last inputs", dsp) if kdim - packed.k4 else None,
        folded=folded, bias=None, prm=None,
        k8=gemm_pack.byte_k(kdim), groups=o // 4, ogroup_rest=o % 4,
        wbytes=k.table(gemm_pack.pack_bytes(w2d), "uint8", "weights + 128, per 4 channels and input", "!TINYC_DSP"),
        folded_b=gemm_pack.byte_folded_bias(w2d, bias, in_zp), bias_b=None, prm_b=None,
        in_aligned=k.plan.offset_of(k.node.inputs[0]) % 4 == 0,     # the arena itself is 4-byte aligned
        in_zp=in_zp, zp_word=(in_zp & 0xFF) * 0x01010101,
        restrict="" if k.in_place is not None else "restrict ")     # an output written over its input aliases it


def _requant_tables(k, v, w2d, bias, in_zp, mults, shifts) -> dict:
    """The GEMM kernel's per-channel requantization: tinyc_requantize_fast with one table of (folded bias,
    multiplier, right shift, rounding) when gemm_pack.fast_mbqm proves it exact, else folded bias tables beside
    TFLite's multiplier and shift tables. Sets the table names in `v`; returns the template's requant variables."""
    fast = gemm_pack.fast_mbqm(shifts, gemm_pack.acc_bound(w2d, bias, in_zp))
    if fast:
        rest = [mults, [-s for s in shifts], [1 << (-s - 1) for s in shifts]]
        label = "per channel: bias, multiplier, right shift, rounding"
        v["prm"] = _prm_table(k, v["folded"], rest, label, "TINYC_DSP")
        v["prm_b"] = _prm_table(k, v["folded_b"], rest, label, "!TINYC_DSP")
        return dict(requant="fast", mult=None, shift=None)
    v["bias"] = _folded_table(k, v["folded"], "TINYC_DSP")
    v["bias_b"] = _folded_table(k, v["folded_b"], "!TINYC_DSP")
    return dict(requant="mbqm", mult=k.table(mults, "int32", "requantization multipliers"),
                shift=k.table(shifts, "int8", "requantization shifts"))


def _folded_table(k, folded, guard):
    return k.table(folded, "int32", "bias - input zero point x weight sums", guard)


def _prm_table(k, folded, rest, label, guard):
    """Per channel [folded bias, *rest] read together; `folded` may be padded to more channels (rows of zeros)."""
    cols = np.zeros((len(folded), 1 + len(rest)), np.int64)
    cols[:, 0] = folded
    for i, r in enumerate(rest):
        cols[:len(r), i + 1] = r
    return k.table(cols, "int32", label, guard)


def conv2d(k):
    g = k.plan.graph
    if int16_fast.applies(g, k.node):      # 16x8 1x1 conv (int16_fast.py)
        return int16_fast.gemm(k)
    if int16_fast.depthwise_applies(g, k.node):     # 16x8 depthwise (int16_fast.py)
        return int16_fast.depthwise(k)
    if int16_fast.conv_applies(g, k.node):          # 16x8 k x k conv (int16_fast.py)
        return int16_fast.conv(k)
    if int4_gemm.depthwise_applies(g, k.node):
        return int4_gemm.depthwise(k)
    if is_depthwise(g, k.node):
        if int8_depthwise.work_bytes(g, k.node) and k.work is None:     # a plan made without kernel scratch
            return None
        return int8_depthwise.depthwise(k)
    if int4_gemm.mode(g, k.node):
        return int4_gemm.gemm(k)
    mode = conv_mode(g, k.node)
    px2 = two_pixels(g, k.node)
    if mode is None or k.work is None:     # a plan made without kernel scratch (the byte path always needs it)
        return None
    geo = conv_geometry(g, k.node)
    w = _int8_weights(g, k.node)
    w2d = w.reshape(w.shape[0], -1)
    kwin = w2d.shape[1]
    if mode == "im2col":       # windows padded to whole words: zero weights for the padding inputs
        w2d = np.pad(w2d, ((0, 0), (0, window_k(geo) - kwin)))
    bias = _bias(g, k.node)
    p = k.params
    in_zp, out_zp, mults, shifts, lo, hi = p.in_zp, p.out_zp, p.mults, p.shifts, p.lo, p.hi
    v = _gemm_vars(k, w2d, bias, in_zp, "pair" if px2 else "quad")
    v.update(px2=px2, e_offset=_scratch_layout(g, k.node)[1])
    v.update(_requant_tables(k, v, w2d, bias, in_zp, mults, shifts))
    v.update(geo, **interior(geo), kwin=kwin, mode=mode, out_zp=out_zp, lo=lo, hi=hi,
             variant={"rows": "1x1", "strided": "1x1-strided", "im2col": "im2col"}[mode],
             comment=f"conv {geo['ih']}x{geo['iw']}x{geo['ic']} -> {geo['oh']}x{geo['ow']}x{geo['oc']}, kernel "
                     f"{geo['kh']}x{geo['kw']}, stride {geo['sh']}x{geo['sw']}, pads {tuple(geo['pads'])}",
             rows=geo["oh"] * geo["ow"])
    if k.node.attrs.get(PLANAR_ROWS_OUT):
        if geo["oh"] != 1:
            raise TinycError(f"internal: '{k.node.name}' stores channel-major rows but computes {geo['oh']}")
        v.update(pstride=1, cstride=geo["ow"])
    return "gemm.c.j2", v, geo["oh"] * geo["ow"] * geo["oc"] * kwin


def dense(k):
    g = k.plan.graph
    if int16_fast.applies(g, k.node):      # 16x8 FULLY_CONNECTED (int16_fast.py)
        return int16_fast.gemm(k)
    if int4_gemm.mode(g, k.node):
        return int4_gemm.gemm(k)
    expand = dense_expands(g, k.node)
    if not dense_applies(g, k.node) or k.work is None:      # a plan made without kernel scratch
        return None
    w, bias = _int8_weights(g, k.node), _bias(g, k.node)
    p = k.params
    o, kdim = w.shape
    scales = p.scales
    fixed = [gemm_pack.double_requant(s) for s in scales]
    in_zp = p.in_zp
    v = _gemm_vars(k, w, bias, in_zp)
    v["expand"] = expand
    m32 = [m for m, _ in fixed]
    ties = [t for _, t in fixed]
    # per channel: folded bias, multiplier (scale x 2^32), half-way margin, read together
    label = "per channel: bias, multiplier, half-way margin, 0"
    v["prm"] = _prm_table(k, v["folded"], [m32, ties, [0] * o], label, "TINYC_DSP")
    v["prm_b"] = _prm_table(k, v["folded_b"], [m32, ties, [0] * o], label, "!TINYC_DSP")
    scale_expr = k.table(scales, "float64", "requantization scales (the double path near ties)")
    rows = k.in_size(0) // kdim
    v.update(mode="rows", rows=rows, out_zp=p.out_zp, lo=p.lo, hi=p.hi, requant="double",
             scale=scale_expr, variant="fc",
             comment=f"fully connected {rows} row(s) x {kdim} -> {o}")
    return "gemm.c.j2", v, rows * kdim * o


# -- transposed convolution: stride phases through the GEMM kernel ------------------------------------------
def _axis_phases(size_in: int, size_out: int, k: int, s: int, d: int, begin: int) -> list[dict]:
    """Along one axis, per output residue r (outputs r, r + s, ...): the taps t that reach them (r + begin - t d
    a multiple of s), largest first. Output q of the phase then reads inputs q + j D - P for its j-th tap: a
    stride-1 convolution with dilation D = d / gcd(d, s) and pad P. `macs`: (output, tap) pairs inside the input."""
    phases = []
    for r in range(min(s, size_out)):
        count = -(-(size_out - r) // s)
        taps = [t for t in range(k - 1, -1, -1) if (r + begin - t * d) % s == 0]
        dil = d // math.gcd(d, s)
        pad = -((r + begin - taps[0] * d) // s) if taps else 0
        macs = sum(1 for q in range(count) for j in range(len(taps)) if 0 <= q + j * dil - pad < size_in)
        phases.append(dict(first=r, count=count, taps=taps, dil=dil, pad=pad, macs=macs))
    return phases


def transpose_phases(g, node) -> list[dict] | None:
    """The stride phases of an int8 ConvTranspose2D (groups 1, one image) whose every phase with taps packs for
    the GEMM kernel (at least 4 inputs per output pixel, exact pair packing); None otherwise. A phase without
    taps (a stride larger than the kernel) holds outputs the bias alone makes."""
    if node.op != "ConvTranspose2D" or node.attrs.get("groups", 1) != 1 or not _io_int8(g, node):
        return None
    x, y = g.tensors[node.inputs[0]].shape, g.tensors[node.outputs[0]].shape
    w, bias = _int8_weights(g, node), _bias(g, node)
    if x[0] != 1 or w is None or bias is False:
        return None
    a = node.attrs
    rows, cols = (_axis_phases(x[1 + i], y[1 + i], w.shape[1 + i], a["strides"][i], a["dilations"][i], a["pads"][i])
                  for i in range(2))
    phases = []
    for py in rows:
        for px in cols:
            ph = dict(oy0=py["first"], ox0=px["first"], nqy=py["count"], nqx=px["count"], ky=py["taps"],
                      kx=px["taps"], dy=py["dil"], dx=px["dil"], py=py["pad"], px=px["pad"],
                      macs=py["macs"] * px["macs"] * x[3] * y[3], w2d=None)
            if py["taps"] and px["taps"]:
                w2d = w[:, py["taps"]][:, :, px["taps"]].reshape(w.shape[0], -1)
                if w2d.shape[1] < 4 or not _gemm_applies(w2d, bias, g.tensors[node.inputs[0]].quant):
                    return None
                ph["kwin"] = w2d.shape[1]
                ph["w2d"] = np.pad(w2d, ((0, 0), (0, -(-w2d.shape[1] // 4) * 4 - w2d.shape[1])))
            phases.append(ph)
    return phases


def _phase_px2(node, ph, oc: int) -> bool:
    return ph["nqy"] * ph["nqx"] >= 2 and oc >= 2 and scratch_level(node) == "full"


def transpose_work_bytes(g, node) -> int:
    """The largest phase's im2col window(s) (and int16-expanded inputs on the two-pixel path), or its byte row."""
    phases = transpose_phases(g, node)
    if phases is None:
        return 0
    oc = g.tensors[node.outputs[0]].shape[3]
    need = 0
    for ph in phases:
        if ph["w2d"] is None:
            continue
        kdim = ph["w2d"].shape[1]
        px2 = _phase_px2(node, ph, oc)
        e_offset = -(-kdim * 2 // 4) * 4
        need = max(need, e_offset + 4 * (kdim - kdim % 4) if px2 else kdim, gemm_pack.byte_k(kdim))
    return need


_TEMPLATES = None


def _render(template: str, variables: dict) -> str:
    """One GEMM body (templates/int8_fast/gemm.c.j2) of a layer made of several (a transposed conv's phases)."""
    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                                        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                        undefined=jinja2.StrictUndefined, autoescape=False)
    return _TEMPLATES.get_template(template).render(**variables).rstrip("\n")


def conv_transpose(k):
    """Stride-phase decomposition: the outputs whose rows are r mod sh and columns c mod sw get their taps from
    one sub-kernel, so each phase is a stride-1 convolution of the input (taps flipped) written to every sh-th
    row and sw-th column: the GEMM kernel with im2col per output pixel, one phase after another."""
    g = k.plan.graph
    if int16_fast.transpose_applies(g, k.node):      # 16x8 (int16_fast.py)
        return int16_fast.conv_transpose(k)
    phases = transpose_phases(g, k.node)
    if phases is None or (k.work is None and any(ph["w2d"] is not None for ph in phases)):   # a plan without scratch
        return None
    p = k.params
    bias = _bias(g, k.node)
    _, ih, iw, ic = k.in_shape(0)
    _, oh, ow, oc = k.out_shape
    sh, sw = k.node.attrs["strides"]
    bodies, constants = [], []
    for ph in phases:
        out_map = dict(base=(ph["oy0"] * ow + ph["ox0"]) * oc, cols=ph["nqx"], row_step=sh * ow * oc,
                       col_step=sw * oc)
        where = f"rows {ph['oy0']}::{sh} x columns {ph['ox0']}::{sw}"
        if ph["w2d"] is None:      # no tap reaches these outputs: requantized bias, known at compile time
            b = [0] * oc if bias is None else [int(v) for v in bias]
            vals = [min(max(fixed_point.multiply_by_quantized_multiplier(b[c], p.mults[c], p.shifts[c]) + p.out_zp,
                            p.lo), p.hi) for c in range(oc)]
            constants.append(dict(out_map, rows=ph["nqy"], where=where,
                                  table=k.table(vals, "int8", "outputs the bias alone makes")))
            continue
        w2d = ph["w2d"]
        rows = ph["nqy"] * ph["nqx"]
        px2 = _phase_px2(k.node, ph, oc)
        v = _gemm_vars(k, w2d, bias, p.in_zp, "pair" if px2 else "quad")
        v.update(px2=px2, e_offset=-(-w2d.shape[1] * 2 // 4) * 4 if px2 else 0)
        v.update(_requant_tables(k, v, w2d, bias, p.in_zp, p.mults, p.shifts))
        geo = dict(ih=ih, iw=iw, ic=ic, oh=ph["nqy"], ow=ph["nqx"], oc=oc, kh=len(ph["ky"]), kw=len(ph["kx"]),
                   sh=1, sw=1, dh=ph["dy"], dw=ph["dx"], pads=[ph["py"], ph["px"], 0, 0], pt=ph["py"], pl=ph["px"])
        v.update(geo, **interior(geo), kwin=ph["kwin"], mode="im2col", out_zp=p.out_zp, lo=p.lo, hi=p.hi,
                 variant="im2col", rows=rows, out_map=out_map,
                 comment=f"phase {where}: taps {ph['ky']} x {ph['kx']} (flipped), a stride-1 {len(ph['ky'])}x"
                         f"{len(ph['kx'])} convolution of the input, dilation {ph['dy']}x{ph['dx']}, pads "
                         f"{ph['py']},{ph['px']}")
        bodies.append(_render("int8_fast/gemm.c.j2", v))
    a = k.node.attrs
    comment = (f"transposed conv {ih}x{iw}x{ic} -> {oh}x{ow}x{oc}, kernel {k.in_shape(1)[1]}x{k.in_shape(1)[2]}, "
               f"stride {sh}x{sw}, dilation {a['dilations'][0]}x{a['dilations'][1]}, pads {tuple(a['pads'])}")
    return "conv_transpose.c.j2", dict(bodies=bodies, constants=constants, comment=comment, oc=oc,
                                       phases=len(phases), variant="phases"), sum(ph["macs"] for ph in phases)


def matmul(k):
    """The fast MatMul of computed operands (int8_matmul.py), with the scratch the planner allows."""
    return int8_matmul.matmul(k, scratch_level(k.node))
