"""A picture of the arena plan: x = execution step, y = arena offset, one rectangle per placed buffer.

Standalone SVG (and an HTML page around it) built with the standard library only, so it can ship in any report
without a plotting dependency. Every string that reaches the output may come from a model file, so all text goes
through `_clean` (XML 1.0 forbids most control characters even when escaped) and then an escape function.
Output is a pure function of the arguments: no timestamps, no iteration over sets or unordered dicts.
"""
from __future__ import annotations

import html
import math
import re
import unicodedata
from xml.sax.saxutils import escape

from .names import tail_text

# Fixed order: the legend and the palette must not depend on which kinds a plan happens to contain.
KINDS = ("activation", "input", "output", "scratch", "inplace", "linebuffer")
PALETTE = {"activation": "#4e79a7", "input": "#59a14f", "output": "#e15759", "scratch": "#f28e2b",
           "inplace": "#b07aa1", "linebuffer": "#76b7b2"}
LEGEND = {"linebuffer": "line buffer"}    # (a fused block's rows: docs/depth-first.md)
_OTHER = "#9c9c9c"

FONT = 11                      # px; text widths below are estimated from it (no font metrics available here)
PLOT_H = 440                   # plot height: fixed, the y axis is scaled into it
MIN_COL, MAX_COL = 4.0, 36.0   # column width bounds; MIN_COL wins over the width cap for huge models
PLOT_W_CAP = 1500.0            # plot width the columns share before they hit MIN_COL
LEFT, RIGHT, TOP = 78, 24, 62  # margins: y tick labels / breathing room / title + legend
XLABEL_CHARS = 22              # x labels are "index op", cut to this many characters so the bottom margin is bounded

# Characters XML 1.0 cannot carry at all (not even as &#N;): C0 controls except tab/LF/CR, lone surrogates
# (possible in Python str), and the two non-characters U+FFFE/U+FFFF.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: object) -> str:
    return _XML_INVALID.sub("\ufffd", str(text))


def _oneline(text: object) -> str:
    """Visible labels must stay on one line: SVG <text> collapses newlines anyway, tabs/CR look odd."""
    return " ".join(_clean(text).split())


def _t(text: object) -> str:        # element content
    return escape(_clean(text))


def _n(v: float) -> str:
    """Coordinates rounded to 0.01 px so the output is short and platform-stable."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _text_width(text: str, size: float = FONT) -> float:
    # Wide (CJK, most emoji) characters take about twice the room of Latin ones in common sans fonts.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text) * size * 0.62


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _fmt_bytes(n: float) -> str:
    for unit, size in (("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n:g} B"


def _ticks(top: float) -> list[int]:
    """Round ticks from 0 to >= top: 1/2/5 x 10^k bytes below 2 KB, 1/2/5 x 10^k KB (or MB) above, so labels
    read "4 KB" rather than "4096"."""
    unit = 1 << 20 if top >= 2 << 20 else 1 << 10 if top >= 2 << 10 else 1
    raw = max(top / unit / 5, 1e-9)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step_b = max(1, round(step * unit))
    return [i * step_b for i in range(math.ceil(top / step_b) + 1)]


def _free_run(first: int, last: int, off: int, nb: int, covers: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    """Longest run of columns of a buffer not hidden by an in-place buffer drawn over it (the label goes there);
    (first, first - 1) when it is hidden everywhere."""
    hidden = {s for f, la, o, n in covers if o < off + nb and off < o + n
              for s in range(max(f, first), min(la, last) + 1)}
    best, start = (first, first - 1), None
    for s in range(first, last + 2):
        if s <= last and s not in hidden:
            start = s if start is None else start
        elif start is not None:
            best = max(best, (start, s - 1), key=lambda run: run[1] - run[0])
            start = None
    return best


def _callouts(labels: list[tuple[int, int, float, str]], x0: float, col: float, plot_w: float,
              y0: float) -> list[str]:
    """Labels of small bands (a fused block's line buffers: one column wide, a few rows high) in one stack beside
    their columns, one line apart in the bands' vertical order, each with a leader to its band: right of the
    rightmost column when it is in the left half of the plot, else left of the leftmost."""
    if not labels:
        return []
    labels = sorted(labels, key=lambda c: c[2])
    ys = []
    for _, _, cy, _ in labels:
        ys.append(max(cy, ys[-1] + FONT + 2) if ys else cy)
    shift = max(0.0, ys[-1] - (y0 - 4))          # (kept inside the plot)
    right = x0 + (max(c[1] for c in labels) + 1) * col
    left = x0 + min(c[0] for c in labels) * col
    on_left = (left + right) / 2 > x0 + plot_w / 2
    tx = left - 14 if on_left else right + 14
    out = []
    for (first, last, cy, label), y in zip(labels, ys):
        y = max(y - shift, TOP + FONT)
        edge = x0 + (first if on_left else last + 1) * col
        out.append(f'<line x1="{_n(edge)}" y1="{_n(cy)}" x2="{_n(tx + (2 if on_left else -2))}" y2="{_n(y)}" '
                   'stroke="#333" stroke-width="0.75" pointer-events="none"/>')
        out.append(f'<text class="callout" x="{_n(tx)}" y="{_n(y)}" dy="0.35em" font-size="{FONT - 1}" '
                   f'text-anchor="{"end" if on_left else "start"}" fill="#000" stroke="#fff" stroke-width="3" '
                   f'paint-order="stroke" pointer-events="none">{escape(tail_text(label, 2 * XLABEL_CHARS))}</text>')
    return out


def render_svg(steps: list[dict], rects: list[dict], *, arena_bytes: int, lower_bound: int, peak_step: int,
               title: str) -> str:
    ncols = max([len(steps)] + [int(r["last_step"]) + 1 for r in rects])
    col = max(MIN_COL, min(MAX_COL, PLOT_W_CAP / max(ncols, 1)))
    plot_w = max(ncols * col, 240.0)  # an empty plan still gets a visible frame
    top_bytes = max([arena_bytes, lower_bound, 1] + [int(r["offset"]) + int(r["nbytes"]) for r in rects])
    # 5% headroom, not a whole extra tick: an arena line on the frame's top edge would be invisible.
    y_max = top_bytes * 1.05
    ticks = [t for t in _ticks(y_max) if t <= y_max]
    scale = PLOT_H / y_max
    # Labels are rotated -60deg; thin them so neighbours (one line-height apart, horizontally) do not collide.
    every = max(1, math.ceil((FONT + 3) / 0.87 / col))
    xlabels = [(s, _cut(_oneline(f"{s.get('index', i)} {s.get('op', '')}"), XLABEL_CHARS))
               for i, s in enumerate(steps)]
    bottom = 44 + int(max([_text_width(t) * 0.87 for _, t in xlabels] + [0]))
    legend_w = sum(26 + _text_width(LEGEND.get(kind, kind)) for kind in KINDS)
    width, height = max(LEFT + plot_w + RIGHT + 150, LEFT + legend_w), TOP + PLOT_H + bottom
    x0, y0 = LEFT, TOP + PLOT_H  # y0: the pixel row of offset 0

    def y_of(b: float) -> float:
        return y0 - b * scale

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
           f'viewBox="0 0 {_n(width)} {_n(height)}" font-family="DejaVu Sans, Arial, sans-serif" '
           f'font-size="{FONT}">',
           "<title>" + _t(title) + "</title>",
           "<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
           "patternTransform=\"rotate(45)\"><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#fff\" "
           "stroke-width=\"2.5\" stroke-opacity=\"0.7\"/></pattern></defs>",
           "<style>.buf:hover,.stepcol:hover{stroke:#000;stroke-width:1.5}.stepcol{fill:transparent}</style>",
           f'<rect width="{_n(width)}" height="{_n(height)}" fill="#fff"/>',
           f'<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{_t(_oneline(title))}</text>']
    lx = LEFT
    for kind in KINDS:  # legend
        fill = PALETTE[kind]
        out.append(f'<rect class="legend" x="{lx}" y="32" width="14" height="12" fill="{fill}"'
                   + (' stroke="#000" stroke-dasharray="3 2"/>' if kind == "inplace" else "/>"))
        if kind == "inplace":
            out.append(f'<rect x="{lx}" y="32" width="14" height="12" fill="url(#hatch)"/>')
        name = LEGEND.get(kind, kind)
        out.append(f'<text x="{lx + 18}" y="42">{name}</text>')
        lx += 26 + _text_width(name)

    # y grid + tick labels
    for t in ticks:
        y = _n(y_of(t))
        out.append(f'<line x1="{x0}" y1="{y}" x2="{_n(x0 + plot_w)}" y2="{y}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x0 - 6}" y="{y}" dy="0.35em" text-anchor="end">{_fmt_bytes(t)}</text>')
    out.append(f'<text transform="translate(16 {_n(TOP + PLOT_H / 2)}) rotate(-90)" text-anchor="middle">'
               "arena offset</text>")

    # Peak band first, so buffers are drawn over it and stay readable.
    if 0 <= peak_step < ncols:
        px = x0 + peak_step * col
        out.append(f'<rect class="peak" x="{_n(px)}" y="{TOP}" width="{_n(col)}" height="{PLOT_H}" '
                   f'fill="#ffd400" fill-opacity="0.35"/>')
        out.append(f'<text x="{_n(px + col / 2)}" y="{TOP - 4}" text-anchor="middle" font-weight="bold" '
                   f'fill="#8a6d00">peak</text>')

    # Inplace buffers last: they sit on top of the input they overwrite, the hatch must stay visible.
    # Texts go in a second pass so no rectangle is drawn over a label.
    inplace = [(int(r["first_step"]), int(r["last_step"]), int(r["offset"]), int(r["nbytes"]))
               for r in rects if r.get("kind") == "inplace"]
    texts: list[str] = []
    callouts: list[tuple[int, int, float, str]] = []     # line buffers too small for their label inside
    for r in sorted(rects, key=lambda r: r.get("kind") == "inplace"):
        kind = str(r.get("kind", ""))
        first, last, off, nb = int(r["first_step"]), int(r["last_step"]), int(r["offset"]), int(r["nbytes"])
        x, w = x0 + first * col, max(last - first + 1, 1) * col
        h = max(nb * scale, 1.0)  # a tiny buffer still gets a visible sliver
        y = y_of(off) - h
        tip = (f"{_clean(r.get('label', ''))}\n{kind}, {nb} B at offset {off}\n"
               f"steps {first}\u2013{last}")
        geo = f'x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}"'
        stroke = ' stroke="#000" stroke-dasharray="3 2"' if kind == "inplace" else ' stroke="#fff" stroke-width="0.5"'
        cls = kind if kind in PALETTE else "other"
        out.append(f'<rect class="buf {cls}" {geo} fill="{PALETTE.get(kind, _OTHER)}"{stroke}>'
                   f"<title>{_t(tip)}</title></rect>")
        if kind == "inplace":
            out.append(f'<rect {geo} fill="url(#hatch)" pointer-events="none"/>')
        label = _oneline(r.get("label", ""))
        a, b = (first, last) if kind == "inplace" else _free_run(first, last, off, nb, inplace)
        lw = (b - a + 1) * col
        if label and _text_width(label) + 6 <= lw and h >= FONT + 3:
            texts.append(f'<text x="{_n(x0 + a * col + lw / 2)}" y="{_n(y + h / 2)}" dy="0.35em" '
                         f'text-anchor="middle" fill="#fff" stroke="#000" stroke-opacity="0.4" stroke-width="2" '
                         f'paint-order="stroke" pointer-events="none">{escape(label)}</text>')
        elif label and kind == "linebuffer":
            callouts.append((first, last, y + h / 2, label))
    out += texts
    out += _callouts(callouts, x0, col, plot_w, y0)
    if 0 <= peak_step < ncols:  # outline over the buffers: the band below them only shows in the gaps
        out.append(f'<rect x="{_n(x0 + peak_step * col)}" y="{TOP}" width="{_n(col)}" height="{PLOT_H}" '
                   f'fill="none" stroke="#e0a800" stroke-width="1.5" pointer-events="none"/>')

    # Column tooltips on top of everything (transparent): step, op, name and byte counts on hover.
    for i, s in enumerate(steps):
        tip = (f"step {s.get('index', i)}: {_clean(s.get('op', ''))} {_clean(s.get('name', ''))}\n"
               f"live {s.get('live_bytes', 0)} B, scratch {s.get('scratch_bytes', 0)} B")
        out.append(f'<rect class="stepcol" x="{_n(x0 + i * col)}" y="{y0 + 2}" width="{_n(col)}" height="8">'
                   f"<title>{_t(tip)}</title></rect>")

    # Arena / lower-bound lines: labels on the right, arena above its line and lower bound below its line,
    # so the two never overlap even when the plan is exactly at the bound.
    xe = x0 + plot_w
    for val, name, dash, dy, colour in ((lower_bound, "lower bound", ' stroke-dasharray="6 4"', 13, "#555"),
                                        (arena_bytes, "arena", "", -4, "#000")):
        y = _n(y_of(val))
        out.append(f'<line class="{name.replace(" ", "-")}" x1="{x0}" y1="{y}" x2="{_n(xe)}" y2="{y}" '
                   f'stroke="{colour}" stroke-width="1.5"{dash}/>')
        out.append(f'<text x="{_n(xe + 4)}" y="{y}" dy="{dy}" fill="{colour}">{name} {int(val)} B</text>')

    # Frame, axes, x labels
    out.append(f'<rect x="{x0}" y="{TOP}" width="{_n(plot_w)}" height="{PLOT_H}" fill="none" stroke="#333"/>')
    for i, (s, text) in enumerate(xlabels):
        if i % every and i != peak_step:
            continue
        cx = _n(x0 + (i + 0.5) * col)
        out.append(f'<line x1="{cx}" y1="{y0}" x2="{cx}" y2="{y0 + 4}" stroke="#333"/>')
        weight = ' font-weight="bold"' if i == peak_step else ""
        out.append(f'<text x="{cx}" y="{y0 + 12}" text-anchor="end" transform="rotate(-60 {cx} {y0 + 12})"'
                   f"{weight}>{escape(text)}</text>")
    out.append(f'<text x="{_n(x0 + plot_w / 2)}" y="{_n(height - 8)}" text-anchor="middle">step</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(steps: list[dict], rects: list[dict], *, arena_bytes: int, lower_bound: int, peak_step: int,
                title: str, fusion: dict | None = None) -> str:
    """The picture, a summary and the per-step table; `fusion` (memory_report's "fusion"): a table of the fused
    blocks and the peak before and after fusion."""
    svg = render_svg(steps, rects, arena_bytes=arena_bytes, lower_bound=lower_bound, peak_step=peak_step,
                     title=title)

    def h(text: object) -> str:
        return html.escape(_clean(text))

    ratio = f"{arena_bytes / lower_bound:.3f}\u00d7" if lower_bound > 0 else "n/a"
    peak = next((s for i, s in enumerate(steps) if i == peak_step), None)
    peak_txt = f"step {peak_step}" + (f" ({h(peak.get('op', ''))} {h(peak.get('name', ''))})" if peak else "")
    rows = []
    for i, s in enumerate(steps):
        cls = ' class="peak"' if i == peak_step else ""
        mark = " \u25c0 peak" if i == peak_step else ""
        rows.append(f"<tr{cls}><td>{h(s.get('index', i))}</td><td>{h(s.get('op', ''))}</td>"
                    f"<td>{h(s.get('name', ''))}{mark}</td><td>{h(s.get('live_bytes', 0))}</td>"
                    f"<td>{h(s.get('scratch_bytes', 0))}</td></tr>")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{h(title)}</title>",
        "<style>body{font-family:'DejaVu Sans',Arial,sans-serif;margin:1.5em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px}"
        "td:nth-child(n+4){text-align:right}th{background:#eee}tr.peak{background:#fff2a8;font-weight:bold}"
        ".plan{overflow-x:auto}</style>",
        "</head>", "<body>", f"<h1>{h(title)}</h1>",
        f'<p class="summary">arena {arena_bytes} B ({_fmt_bytes(arena_bytes)}), lower bound {lower_bound} B '
        f"({_fmt_bytes(lower_bound)}), ratio {ratio}, peak at {peak_txt}</p>",
        f'<div class="plan">\n{svg}</div>',
        "<table>", "<thead><tr><th>step</th><th>op</th><th>name</th><th>live bytes</th><th>scratch bytes</th>"
        "</tr></thead>", "<tbody>", *rows, "</tbody>", "</table>", *_fusion_html(fusion, h), "</body>", "</html>",
        ""])


def _fusion_html(fusion: dict | None, h) -> list[str]:
    if not fusion:
        return []
    rows = []
    for b in fusion.get("blocks", []):
        buffers = [h(f"{lb['tensor']}: {lb['rows']} row{'' if lb['rows'] == 1 else 's'} \u00d7 {lb['row_bytes']} B")
                   for lb in b["line_buffers"]]
        if b.get("input_row"):      # (patch mode, a streamed input: the callback's whole row)
            buffers.append(h(f"{b['input_row']['tensor']}: 1 whole input row, {b['input_row']['bytes']} B"))
        rows.append(f"<tr><td>{h(b['index'])}</td><td>{h(b['name'])}</td>"
                    f"<td>{'<br>'.join(h(row['name']) for row in b['layers'])}</td><td>{_mode_html(b, h)}</td>"
                    f"<td>{'<br>'.join(buffers)}</td><td>{h(b['line_buffer_bytes'])}</td>"
                    f"<td>{h(b['accumulator_bytes'])}</td>"
                    f"<td>{h(b['kernel_scratch_bytes'])}</td><td>{h(b['recompute_factor'])}</td>"
                    f"<td>{h(b['macs'])}</td></tr>")
    before, after = fusion["peak_before"], fusion["peak_after"]
    return ["<h2>Fused blocks (depth-first: row by row, or in column strips each row by row)</h2>",
            f'<p class="fusion">layer by layer: arena {h(fusion["arena_before_bytes"])} B, peak at step '
            f"{h(before['step'])} ({h(before['op'])} {h(before['layer'])}); fused: arena "
            f"{h(fusion['arena_after_bytes'])} B, peak at step {h(after['step'])} ({h(after['op'])} "
            f"{h(after['layer'])})</p>",
            '<table class="fusion">', "<thead><tr><th>step</th><th>block</th><th>layers</th><th>mode</th>"
            "<th>line buffers</th><th>line buffer bytes</th><th>accumulator bytes</th><th>kernel scratch bytes</th>"
            "<th>recompute</th>"
            "<th>MACs</th></tr></thead>", "<tbody>", *rows, "</tbody>", "</table>"]


def _mode_html(block: dict, h) -> str:
    """The mode cell of a fused block: "rows", or "strips" with each strip's output columns and which strip's line
    buffers the row lists (the widest: the strips run one after another in the same bytes)."""
    strips = block.get("strips", ())
    if block["mode"] != "strips" or not strips:
        return h(block["mode"])
    cols = ", ".join(f"{s['output_columns'][0]}\u2013{s['output_columns'][1] - 1}" for s in strips)
    return (f"{h(block['mode'])} \u00d7{len(strips)}<br>output columns {h(cols)}<br>line buffers of strip "
            f"{h(block['widest_strip'])}")
