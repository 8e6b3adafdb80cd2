"""The plan picture: well-formed SVG/HTML whatever the labels, every buffer drawn, deterministic."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from xml.sax.saxutils import escape

from tinyc.plan_picture import render_html, render_svg

SVG = "{http://www.w3.org/2000/svg}"
OPS = ("Conv2D", "DepthwiseConv2D", "Relu", "Add", "MaxPool2D", "Dense", "Softmax")


def synthetic_plan(n: int = 60, label=lambda i: f"t{i}") -> dict:
    """A chain of n layers with a skip connection every 6 layers, an im2col-like scratch buffer on every conv,
    and a few in-place activations; offsets by first-fit so rectangles do not overlap."""
    bufs = [{"label": "input", "first_step": 0, "last_step": 0, "nbytes": 3072, "kind": "input"}]
    for i in range(n):
        op = OPS[i % len(OPS)]
        size = 512 * (1 + (i * 7) % 9)
        last = min(i + (6 if i % 6 == 0 else 1), n - 1)
        kind = "output" if i == n - 1 else "inplace" if op == "Relu" else "activation"
        bufs.append({"label": label(i), "first_step": i, "last_step": last, "nbytes": size, "kind": kind})
        if op == "Conv2D":
            bufs.append({"label": f"im2col {i}", "first_step": i, "last_step": i, "nbytes": 1024, "kind": "scratch"})
    placed: list[dict] = []
    for b in bufs:
        if b["kind"] == "inplace":  # written over its producer's output
            prev = next(p for p in reversed(placed) if p["first_step"] == b["first_step"] - 1
                        and p["kind"] != "scratch")
            b["offset"] = prev["offset"]
            placed.append(b)
            continue
        off = 0
        for p in sorted((p for p in placed if p["first_step"] <= b["last_step"] and b["first_step"] <= p["last_step"]),
                        key=lambda p: p["offset"]):
            if off + b["nbytes"] <= p["offset"]:
                break
            off = max(off, p["offset"] + p["nbytes"])
        b["offset"] = off
        placed.append(b)
    live = [sum(b["nbytes"] for b in placed if b["first_step"] <= i <= b["last_step"] and b["kind"] != "inplace")
            for i in range(n)]
    steps = [{"index": i, "op": OPS[i % len(OPS)], "name": f"model/layer_{i}", "live_bytes": live[i],
              "scratch_bytes": 1024 if OPS[i % len(OPS)] == "Conv2D" else 0} for i in range(n)]
    return {"steps": steps, "rects": placed, "arena_bytes": max(b["offset"] + b["nbytes"] for b in placed),
            "lower_bound": max(live), "peak_step": live.index(max(live)), "title": f"synthetic {n}-step plan"}


HOSTILE = ['a "quoted" \'label\'', "<script>alert(1)</script>", "x]]>y", "nul\x00bell\x07end", "multi\nline\r\ttab",
           "é" * 10_000, "emoji \U0001F9E0\U0001F468\u200d\U0001F4BB", "&amp; &lt; &#0;", "\ud800lone", "\ufffe"]


def _buf_rects(root):
    return [r for r in root.iter(SVG + "rect") if "buf" in (r.get("class") or "").split()]


def test_60_step_plan_parses_and_draws_every_buffer():
    plan = synthetic_plan(60)
    root = ET.fromstring(render_svg(**plan))
    drawn = _buf_rects(root)
    assert len(drawn) == len(plan["rects"])
    titles = [r.find(SVG + "title").text for r in drawn]
    for rect in plan["rects"]:
        assert any(t.split("\n")[0] == rect["label"] and f"{rect['nbytes']} B at offset {rect['offset']}" in t
                   for t in titles), rect
    assert {r.get("class").split()[1] for r in drawn} == {"input", "activation", "scratch", "inplace", "output"}


def test_hostile_labels_stay_well_formed():
    plan = synthetic_plan(len(HOSTILE), label=lambda i: HOSTILE[i])
    for s, name in zip(plan["steps"], HOSTILE):
        s["name"] = s["op"] = name
    plan["title"] = "title <b>&\"]]>\x00\n"
    svg = render_svg(**plan)
    root = ET.fromstring(svg)  # raises on any escaping mistake or XML-invalid character
    assert "<script>" not in svg and "]]>" not in svg
    titles = [r.find(SVG + "title").text for r in _buf_rects(root)]
    for label in HOSTILE:
        assert any(t.startswith(_xml_safe(label)) for t in titles), label[:40]
    for label in ("<script>alert(1)</script>", "x]]>y", 'a "quoted" \'label\''):
        assert escape(label) in svg  # the escaped label is in the raw text too


def _xml_safe(label: str) -> str:
    """What survives parsing: characters XML cannot hold are replaced, CR normalised to LF by the parser."""
    out = "".join("\ufffd" if (ord(c) < 32 and c not in "\t\n\r") or 0xD800 <= ord(c) <= 0xDFFF
                  or c in "\ufffe\uffff" else c for c in label)
    return out.replace("\r\n", "\n").replace("\r", "\n")


def test_peak_column_and_lines():
    plan = synthetic_plan(60)
    plan["arena_bytes"] = plan["lower_bound"] + 4096
    root = ET.fromstring(render_svg(**plan))
    peaks = [r for r in root.iter(SVG + "rect") if r.get("class") == "peak"]
    assert len(peaks) == 1
    assert any(t.text == "peak" for t in root.iter(SVG + "text"))
    arena = next(line for line in root.iter(SVG + "line") if line.get("class") == "arena")
    lower = next(line for line in root.iter(SVG + "line") if line.get("class") == "lower-bound")
    assert float(arena.get("y1")) < float(lower.get("y1"))  # SVG y grows downwards: above = smaller
    assert lower.get("stroke-dasharray") and not arena.get("stroke-dasharray")
    texts = [t.text for t in root.iter(SVG + "text")]
    assert f"arena {plan['arena_bytes']} B" in texts and f"lower bound {plan['lower_bound']} B" in texts


def test_peak_band_lies_on_peak_step_column():
    plan = synthetic_plan(60)
    root = ET.fromstring(render_svg(**plan))
    band = next(r for r in root.iter(SVG + "rect") if r.get("class") == "peak")
    col = [r for r in root.iter(SVG + "rect") if r.get("class") == "stepcol"][plan["peak_step"]]
    assert band.get("x") == col.get("x") and band.get("width") == col.get("width")


def test_deterministic():
    a, b = synthetic_plan(60), synthetic_plan(60)
    assert render_svg(**a) == render_svg(**b)
    assert render_html(**a) == render_html(**b)
    # dict key order of the inputs must not matter either
    b["steps"] = [dict(reversed(list(s.items()))) for s in b["steps"]]
    b["rects"] = [dict(reversed(list(r.items()))) for r in b["rects"]]
    assert render_svg(**a) == render_svg(**b)


def test_empty_plan():
    for steps in ([], [{"index": 0, "op": "Relu", "name": "r", "live_bytes": 0, "scratch_bytes": 0}]):
        svg = render_svg(steps, [], arena_bytes=0, lower_bound=0, peak_step=-1, title="empty")
        root = ET.fromstring(svg)
        assert root.tag == SVG + "svg" and not _buf_rects(root)
        _check_html(render_html(steps, [], arena_bytes=0, lower_bound=0, peak_step=0, title="empty"))


def test_small_labels_omitted_large_ones_drawn():
    steps = [{"index": i, "op": "Conv2D", "name": f"c{i}", "live_bytes": 0, "scratch_bytes": 0} for i in range(4)]
    rects = [{"label": "big tensor", "first_step": 0, "last_step": 3, "offset": 0, "nbytes": 8000,
              "kind": "activation"},
             {"label": "tiny but with a very long name", "first_step": 0, "last_step": 0, "offset": 8000,
              "nbytes": 8, "kind": "scratch"}]
    root = ET.fromstring(render_svg(steps, rects, arena_bytes=8008, lower_bound=8008, peak_step=0, title="t"))
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "big tensor" in texts and "tiny but with a very long name" not in texts


class _Checker(HTMLParser):
    VOID = {"meta", "br", "img", "hr", "input", "link"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)  # <rect .../> inside inline SVG is fine (foreign content)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def _check_html(page: str) -> _Checker:
    assert page.startswith("<!DOCTYPE html>")
    p = _Checker()
    p.feed(page)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    return p


def test_html_page():
    plan = synthetic_plan(60)
    page = render_html(**plan)
    p = _check_html(page)
    assert "svg" in p.tags and "table" in p.tags
    assert page.count('<tr class="peak">') == 1
    assert f"arena {plan['arena_bytes']} B" in page and f"lower bound {plan['lower_bound']} B" in page
    assert "ratio" in page and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert render_svg(**plan) in page


def test_html_hostile():
    plan = synthetic_plan(len(HOSTILE), label=lambda i: HOSTILE[i])
    for s, name in zip(plan["steps"], HOSTILE):
        s["name"] = s["op"] = name
    plan["title"] = "</title><script>x</script>"
    page = render_html(**plan)
    _check_html(page)
    assert "<script>" not in page and "\x00" not in page


def test_html_fusion_table_hostile():
    """The fused-blocks table of the HTML page: every name from the model escaped, the page well-formed."""
    plan = synthetic_plan(6)
    buffers = [dict(tensor=name, rows=3, row_bytes=96, bytes=288, offset=0, role="intermediate") for name in HOSTILE]
    block = dict(index=0, name=HOSTILE[1], layers=[dict(name=name) for name in HOSTILE], mode="rows",
                 line_buffers=buffers, line_buffer_bytes=288, accumulator_bytes=0, kernel_scratch_bytes=16,
                 recompute_factor=1.0, macs=1000)
    peak = dict(step=0, layer=HOSTILE[1], op=HOSTILE[0])
    fusion = dict(blocks=[block], arena_before_bytes=9000, peak_before=peak, arena_after_bytes=3000, peak_after=peak)
    page = render_html(**plan, fusion=fusion)
    p = _check_html(page)
    assert p.tags.count("table") == 2 and "<script>" not in page and "\x00" not in page
    assert page.count("3 rows \u00d7 96 B") == len(HOSTILE)


def test_line_buffer_bands_are_labelled_beside_their_column():
    """A fused block's line buffers: bands too small for a label inside get one beside the column, one line apart
    whatever their offsets, the end of a long name kept, and hostile names stay well-formed."""
    plan = synthetic_plan(12)
    names = ["model/block_1/expand_relu/Relu6", "model/block_1/depthwise_relu/Relu6", "x <&> \x00 y", "é" * 200]
    base = plan["arena_bytes"]
    bands = [{"label": f"{name}: 3 rows x 96 B", "first_step": step, "last_step": step, "offset": base + 40 * i,
              "nbytes": 40, "kind": "linebuffer"} for i, name in enumerate(names) for step in (2, 9)]
    plan["rects"] = plan["rects"] + bands
    root = ET.fromstring(render_svg(**plan))
    assert len([r for r in root.iter(SVG + "rect") if "linebuffer" in (r.get("class") or "")]) == len(bands)
    callouts = [t for t in root.iter(SVG + "text") if t.get("class") == "callout"]
    assert len(callouts) == len(bands)
    texts = [t.text for t in callouts]
    assert sum("expand_relu/Relu6: 3 rows x 96 B" in t for t in texts) == 2            # the end of the name
    assert all(len(t) <= 44 for t in texts) and any(t.startswith("\u2026") for t in texts)
    ys = sorted(float(t.get("y")) for t in callouts)
    assert all(b - a >= 11 for a, b in zip(ys, ys[1:]))                                  # one line apart
    width = float(root.get("width"))
    assert all(0 <= float(t.get("x")) <= width for t in callouts)
    assert any(t.text == "line buffer" for t in root.iter(SVG + "text"))                 # the legend
