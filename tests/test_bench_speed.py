"""The speed benchmark (bench/speed.py, `make bench`) on its smallest model and one core, so that it cannot rot
silently: the result has every figure the report needs, the emulated outputs match, and the report renders.
Correctness only: no instruction count is asserted against a goal here."""
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _speed():
    spec = importlib.util.spec_from_file_location("bench_speed", BENCH / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_ad_autoencoder_on_m4(tmp_path):
    speed = _speed()
    # outputs checked against TFLite's reference kernels (as `make bench` does; --host-check, the slow gcc build
    # with sanitizers, is covered by `tinyc run --emulate`'s tests)
    result = speed.benchmark(["ad"], ["m4"], tmp_path, reference_core=None, jobs=1)
    assert set(result["models"]) == {"ad"}
    facts = result["models"]["ad"]
    assert facts["macs"] == 264_192          # 640-128x4-8-128x4-640
    assert facts["weight_bytes"] > 0 and facts["arena_bytes"] > 0
    assert len(result["runs"]) == 1
    run = result["runs"][0]
    assert "error" not in run, run.get("error")
    assert (run["model"], run["core"], run["kernels"], run["board"]) == ("ad", "m4", "fast", "nucleo-f412zg")
    assert run["outputs_match"] and run["outputs_match_reference"] and run["outputs_match_host"] is None
    assert "_outputs" not in run and "_prep" not in facts
    assert run["instructions"] > 0
    assert run["instructions_per_mac"] == round(run["instructions"] / run["macs"], 3)
    # per layer: every Dense layer profiled, with its kernel; the layers add up to about the total
    assert [r["op"] for r in run["layers"]] == ["Dense"] * 10
    assert all(r["kernel"] != "-" and r["instructions"] > 0 for r in run["layers"])
    assert abs(run["profiled_instructions"] - run["instructions"]) <= 0.01 * run["instructions"]
    groups = speed.group_layers(run["layers"], "kernel")
    assert sum(g["macs"] for g in groups.values()) == facts["macs"]
    # code per kernel: only kernels the layers use, together with the rest making up the model's code
    assert run["code_by_kernel"] and set(run["code_by_kernel"]) <= set(groups)
    assert all(v > 0 for v in run["code_by_kernel"].values())
    assert sum(run["code_by_kernel"].values()) + run["code_other_bytes"] == run["code_bytes"]
    assert run["flash_bytes"] >= run["code_bytes"] + facts["weight_bytes"]
    text = speed.render(result, "make bench")
    for heading in ("## Instructions per inference", "## Instructions per layer kind", "## Code size per kernel",
                    "## Flash and arena"):
        assert heading in text
    assert "| AD, FC autoencoder | 264,192 | Cortex-M4 |" in text
    assert "not cycles" in text


def test_speed_benchmark_soc_column_ad_autoencoder_on_m0plus(tmp_path):
    """--soc: the M0+ board image on rp2040js beside the QEMU count (needs Node.js and rp2040js: make setup)."""
    speed = _speed()
    result = speed.benchmark(["ad"], ["m0+"], tmp_path, reference_core=None, jobs=1, soc=True)
    run = result["runs"][0]
    assert "error" not in run and "soc_error" not in run, run.get("error") or run.get("soc_error")
    soc = run["soc"]
    assert soc["outputs_match"] and soc["outputs_match_reference"] and soc["outputs_match_emulation"]
    assert run["instructions"] <= soc["cycles"] < 3 * run["instructions"]
    assert soc["clk_sys"] == soc["clock_hz"] and soc["ms"] == round(1000 * soc["cycles"] / soc["clock_hz"], 3)
    text = speed.render(result, "python bench/speed.py --soc")
    assert "## RP2040 cycles (rp2040js)" in text and "Lower bounds" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| AD, FC autoencoder | 264,192 | 1,"))
    assert f"| {soc['cycles']:,} |" in row and "| yes |" in row
    # without --soc the report has no such section
    del run["soc"]
    assert "## RP2040 cycles" not in speed.render(result)


def test_int16_twins_table_renders():
    """The "16x8 against int8" table: each 16x8 model beside its int8 twin, the ratio against the M4 goal; a run
    that failed is a row saying so. (Rendering only: the runs are the real ones `make bench` makes.)"""
    speed = _speed()
    assert speed.MODELS["kws16"][0] == speed.MODELS["kws"][0] and speed.INT16_TWINS["dae16"] == "dae"
    facts = {m: dict(label=speed.MODELS[m][1], macs=1000, arena_bytes=a, weight_bytes=w)
             for m, a, w in (("kws", 8384, 51744), ("kws16", 16380, 31492), ("dae", 12672, 194456),
                             ("dae16", 24576, 175437))}
    runs = [dict(model="kws", core="m4", kernels="fast", instructions=1_000_000, outputs_match=True, macs=1000,
                 flash_bytes=70_000),
            dict(model="kws16", core="m4", kernels="fast", instructions=1_400_000, outputs_match=True, macs=1000,
                 flash_bytes=60_000),
            dict(model="dae", core="m4", kernels="fast", instructions=2_000_000, outputs_match=True, macs=1000),
            dict(model="dae16", core="m4", kernels="fast", error="a reason", seconds=0)]
    text = speed.render(dict(models=facts, cores=["m4"], runs=runs, seconds=1))
    table = text.split("## 16x8 against int8")[1].split("\n## ")[0]
    assert ("| KWS, DS-CNN, 16x8 | Cortex-M4 | 1,000,000 | 1,400,000 | 1.40 | <= 1.5 | yes | 8,384 | 16,380 | "
            "51,744 | 31,492 | 70,000 | 60,000 |") in table
    assert "| Denoising autoencoder @16x64, 16x8 | Cortex-M4 | not run: a reason |" in table
    assert "## 16x8 against int8" not in speed.render(dict(models={"kws": facts["kws"]}, cores=["m4"],
                                                              runs=runs[:1], seconds=1))
