"""bench/depth_first.py (issue 21): the fused-against-layer-by-layer table and the `--fusion auto` one render
every figure, a refused block is a row saying so; TINYC_FULL: the benchmark itself on KWS, Cortex-M4 (convert,
compile three times, QEMU runs)."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_depth_first", BENCH / "depth_first.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(instructions, block, ok=True):
    return dict(board="b", instructions=instructions, block=block, layers={}, outputs_match=ok)


def test_table_has_arena_and_instructions_of_both_plans_per_core():
    bench = _bench()
    result = dict(cores=["m4", "m0+"], rows=[
        dict(model="kws", label="KWS, DS-CNN", block=[0, 10], layers=[], arena={"layer by layer": 8384, "fused": 5648},
             runs={"layer by layer|m4": _run(3_419_820, 3_418_580), "fused|m4": _run(4_015_120, 4_013_720),
                   "layer by layer|m0+": _run(13_610_200, 13_604_880), "fused|m0+": _run(13_891_880, 13_886_760)},
             auto={"m4": dict(_run(3_416_200, 0), arena=8384, blocks=[], est_ratio=1.0),
                   "m0+": dict(_run(13_891_880, 0), arena=5648, blocks=[["a"] * 10], est_ratio=1.014)}),
        dict(model="mbv2", label="MobileNetV2", block=[0, 6], layers=[], arena={}, runs={},
             error="refused: fused block: ..."),
    ])
    text = bench.render(result)
    kws = next(line for line in text.splitlines() if line.startswith("| KWS"))
    assert "| 0..9 (10) | 8,384 | 5,648 | 0.674x | 3,419,820 | 4,015,120 | 1.174x | 3,418,580 | 4,013,720 |" in kws
    assert "| 13,610,200 | 13,891,880 | 1.021x |" in kws and kws.endswith("| equal |")
    assert "| MobileNetV2 | 0..5 (6) | refused: fused block: ... |" in text
    assert "Cortex-M4 LbL" in text and "Cortex-M0+ LbL" in text and "goal <= 1.15" in text
    assert "| KWS, DS-CNN | Cortex-M4 | none | 8,384 | 3,416,200 | 0.999x | 1.000x | equal |" in text
    assert "| KWS, DS-CNN | Cortex-M0+ | 10 | 5,648 | 13,891,880 | 1.021x | 1.014x | equal |" in text
    assert "Inside the fixed blocks" not in text          # without --rows
    result["rows"][0]["layers"] = ["conv", "pool"]
    result["rows"][0]["runs"]["layer by layer|m4"]["layers"] = {"conv": 1000, "pool": 100}
    result["rows"][0]["runs"]["fused|m4"]["rows"] = {"conv": 1100, "pool": 150, "row copies (fused_conv)": 40}
    rows = bench.render(result).split("Inside the fixed blocks")[1]
    assert "| KWS, DS-CNN | conv | 1,000 | 1,100 | 1.100x |" in rows and "| pool | 100 | 150 | 1.500x |" in rows
    assert "| KWS, DS-CNN | row copies (fused_conv) | - | 40 | - |" in rows and "Cortex-M0+" not in rows
    result["rows"][0]["runs"]["fused|m0+"]["outputs_match"] = False
    assert next(line for line in bench.render(result).splitlines() if line.startswith("| KWS")).endswith("| DIFFER |")


def test_blocks_option_is_checked():
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--blocks", "kws=5:2"])
    with pytest.raises(SystemExit):
        bench.main(["--models", "nosuch"])


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="TINYC_FULL: converts KWS and runs QEMU (~40 s)")
def test_benchmark_kws_on_m4(tmp_path):
    bench = _bench()
    result = bench.benchmark(["kws"], ["m4"], tmp_path, {"kws": (0, 9)}, profile_rows=True)
    row = result["rows"][0]
    assert "error" not in row, row.get("error")
    assert row["arena"]["fused"] > 0 and row["arena"]["layer by layer"] > 0
    lbl, fused = row["runs"]["layer by layer|m4"], row["runs"]["fused|m4"]
    assert lbl["outputs_match"] and fused["outputs_match"]
    assert 0 < fused["block"] <= fused["instructions"] and 0 < lbl["block"] <= lbl["instructions"]
    assert len(row["layers"]) == 9
    # inside the block: every layer's row kernel and the row copies, adding up to the block's own figure
    inside = fused["rows"]
    assert set(row["layers"]) < set(inside) and all(v > 0 for v in inside.values())
    assert abs(sum(inside.values()) - fused["block"]) <= 0.01 * fused["block"]
    auto = row["auto"]["m4"]
    assert "error" not in auto and auto["outputs_match"] and auto["arena"] > 0 and auto["instructions"] > 0
