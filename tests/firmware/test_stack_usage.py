"""Worst-case stack depth of the model code (tinyc/firmware/stack_usage.py): the call-graph arithmetic on gcc's
.ci format, and the figure `tinyc report --board` and `tinyc build` give for a real model."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from tinyc.cli import main
from tinyc.errors import TinycError
from tinyc.firmware.images import check_size
from tinyc.firmware.stack_usage import LIBRARY_ALLOWANCE, parse_callgraph, stack_report, with_budget, worst_path

CI = '''graph: { title: "m.c"
node: { title: "m.c:m_l0_conv2d" label: "m_l0_conv2d\\nm.c:10:13\\n48 bytes (static)" }
node: { title: "m.c:m_l1_dense" label: "m_l1_dense\\nm.c:40:13\\n120 bytes (static)" }
node: { title: "m_run" label: "m_run\\nm.c:90:6\\n16 bytes (static)" }
node: { title: "m_invoke" label: "m_invoke\\nm.c:99:5\\n8 bytes (static)" }
node: { title: "memset" label: "__builtin_memset\\n<built-in>" shape : ellipse }
edge: { sourcename: "m_run" targetname: "m.c:m_l0_conv2d" label: "m.c:91:3" }
edge: { sourcename: "m_run" targetname: "m.c:m_l1_dense" label: "m.c:92:3" }
edge: { sourcename: "m.c:m_l0_conv2d" targetname: "memset" }
edge: { sourcename: "m_invoke" targetname: "m_run" label: "m.c:100:3" }
}'''


def test_heaviest_path_counts_frames_and_library_allowance():
    nodes, edges = parse_callgraph(CI)
    assert nodes["m.c:m_l1_dense"] == ("m_l1_dense", 120, "static") and nodes["memset"][1] is None
    # invoke 8 + run 16 + max(conv 48 + memset allowance, dense 120)
    assert worst_path(nodes, edges, "m_invoke") == (8 + 16 + 48 + LIBRARY_ALLOWANCE,
                                                     ["m_invoke", "m_run", "m_l0_conv2d",
                                                      "__builtin_memset (library, allowance)"])
    r = with_budget(stack_report(CI, "m"), 8192)
    assert r["bytes"] == 8 + 16 + 48 + LIBRARY_ALLOWANCE and r["entry"] == "m_invoke" and r["fits"]
    assert not with_budget(stack_report(CI, "m"), 1024)["fits"]


def test_recursion_and_dynamic_frames_are_unbounded():
    recursive = CI.replace('edge: { sourcename: "m_invoke"', 'edge: { sourcename: "m.c:m_l1_dense" targetname: '
                           '"m_run" }\nedge: { sourcename: "m_invoke"')
    r = with_budget(stack_report(recursive, "m"), 8192)
    assert r["bytes"] is None and not r["fits"] and any("recursive" in p for p in r["path"])
    dynamic = CI.replace("120 bytes (static)", "120 bytes (dynamic)")
    assert stack_report(dynamic, "m")["bytes"] is None
    report = dict(flash_bytes=0, sram=[], stack=r)

    class Board:
        name, flash_bytes = "pico", 1 << 21
    with pytest.raises(TinycError, match="stack depth"):
        check_size(report, Board())


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
def test_report_and_build_give_the_same_stack_depth(firmware_models, tmp_path):
    path = firmware_models.path("depthwise_int8")
    res = CliRunner().invoke(main, ["report", path, "--board", "nucleo-f412zg", "--json"])
    assert res.exit_code == 0, res.output
    reported = json.loads(res.output)["stack"]
    assert reported["fits"] and 0 < reported["bytes"] < reported["budget_bytes"]
    res = CliRunner().invoke(main, ["compile", path, "--board", "nucleo-f412zg", "-o", str(tmp_path), "--build"])
    assert res.exit_code == 0, res.output
    built = json.loads(CliRunner().invoke(main, ["build", str(tmp_path), "--json"]).output)["stack"]
    assert built["bytes"] == reported["bytes"] and built["path"] == reported["path"]
    text = CliRunner().invoke(main, ["report", path, "--board", "nucleo-f412zg"]).output
    assert "stack: worst" in text and "fits in the" in text
