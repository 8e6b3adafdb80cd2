"""`tinyc report`: the terminal table, the JSON schema CI reads, the SVG/HTML picture, and the board fit check
(`tinyc compile --board` refuses a model that does not fit, with one line and exit code 2)."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from test_cli import one_line_error, tinyc


def conv_onnx(path, size=16, channels=8):
    """Conv 3x3 -> Relu -> depthwise 3x3 -> GlobalAveragePool: NCHW float, `size` x `size` input."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["d"], pads=[1, 1, 1, 1], group=channels, name="dw"),
             helper.make_node("GlobalAveragePool", ["d"], ["y"], name="gap")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return path


KEYS = {"schema_version", "model", "name", "arena_bytes", "arena_lower_bound_bytes", "weights_bytes", "macs",
        "peak_step", "order", "schedule", "variants", "layers"}
LAYER_KEYS = {"index", "op", "name", "output_shape", "output_bytes", "macs", "weight_bytes", "live_bytes",
              "scratch_bytes", "in_place", "no_code", "peak"}


def test_report_json_schema_and_figures(tmp_path):
    model = conv_onnx(tmp_path / "net.onnx")
    res = tinyc("report", model, "--board", "pico", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert KEYS | {"board", "fits"} <= r.keys()
    assert r["fits"] is True and r["board"]["name"] == "pico" and r["board"]["sram_bytes"] == 262144
    assert r["macs"] == 16 * 16 * 8 * 27 + 16 * 16 * 8 * 9
    # a chain of overlapped layers (transpose -> conv -> depthwise) fixes relative offsets: a few % over the bound
    assert r["arena_lower_bound_bytes"] <= r["arena_bytes"] <= 1.05 * r["arena_lower_bound_bytes"]
    assert r["weights_bytes"] == (8 * 27 + 8 * 9) * 4
    assert [layer.keys() for layer in r["layers"]] and all(LAYER_KEYS <= layer.keys() for layer in r["layers"])
    assert [layer["peak"] for layer in r["layers"]].count(True) == 1
    assert max(layer["live_bytes"] for layer in r["layers"]) == r["arena_lower_bound_bytes"]
    assert {"plain", "in_place", "overlap", "reordered"} <= r["variants"].keys()
    assert r["variants"]["plain"]["arena_bytes"] > r["arena_bytes"]          # in-place work pays here
    assert any(layer["in_place"] for layer in r["layers"])


def test_report_table_svg_and_html(tmp_path):
    model = conv_onnx(tmp_path / "net.onnx")
    svg, html = tmp_path / "plan.svg", tmp_path / "plan.html"
    res = tinyc("report", model, "--board", "nucleo-f412zg", "--svg", svg, "--html", html)
    assert res.returncode == 0, res.stderr
    assert "<- peak" in res.stdout and "lower bound" in res.stdout and "nucleo-f412zg: fits" in res.stdout
    root = ET.fromstring(svg.read_text())                    # valid XML
    assert root.tag.endswith("svg") and "peak" in svg.read_text()
    assert "<svg" in html.read_text() and "<table" in html.read_text()


def test_model_too_big_for_the_board_is_one_line(tmp_path):
    model = conv_onnx(tmp_path / "big.onnx", size=160, channels=16)   # ~3.3 MB of float activations
    line = one_line_error(tinyc("compile", model, "--board", "pico", "-o", tmp_path / "out"),
                          "does not fit pico", "arena", "peak at layer")
    assert "262,144" in line
    assert not (tmp_path / "out").exists()
    res = tinyc("report", model, "--board", "pico", "--json")      # the report still reports
    assert res.returncode == 0 and json.loads(res.stdout)["fits"] is False


def test_unknown_board_is_one_line(tmp_path):
    one_line_error(tinyc("report", conv_onnx(tmp_path / "n.onnx"), "--board", "../etc/passwd"), "unknown board")
