"""Runs fuzz cases through `tinyc compile` in one process and reports each on its own line (JSON), so a case that
crashes or hangs the process is still named: the harness (`run_cases`) restarts the worker after it.

    python tests/fuzz_worker.py CASES_DIR RESULTS.jsonl [--verify]

A case's outcome:
  refused   `tinyc compile` stopped with exit code 2 and one line naming the problem (the good outcome for
            broken input);
  internal  it stopped with "internal error" (an unforeseen exception: a tinyc bug);
  compiled  it compiled; with --verify the C is then built under the sanitizers and compared with the reference
            runtime: `verified` (outputs match), `mismatch` (C that computes something else: the worst outcome),
            or `unverifiable` (the reference runtime itself rejects the file: tinyc accepted what its reference
            does not);
  crashed / hung  (set by the harness) the process died or exceeded the time limit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_case(path: Path, out_dir: Path, verify: bool) -> dict:
    import click

    from tinyc.cli import error_line, main
    from tinyc.errors import TinycError
    try:
        main(["compile", str(path), "-o", str(out_dir), "--force"], standalone_mode=False)
    except SystemExit as e:            # click's own exits (never expected for compile)
        return dict(outcome="internal", message=f"SystemExit {e.code}")
    except Exception as e:             # noqa: BLE001 - the point is to classify every escape
        line, code = error_line(e)
        internal = "internal error" in line or not isinstance(e, (TinycError, click.ClickException))
        return dict(outcome="internal" if internal else "refused", message=line, code=code)
    if not verify:
        return dict(outcome="compiled")
    from tinyc.verify import verify as run_verify
    try:
        report = run_verify(str(path), samples=2)
    except TinycError as e:
        return dict(outcome="unverifiable", message=str(e))
    except Exception as e:             # noqa: BLE001
        return dict(outcome="internal", message=error_line(e)[0])
    ok = report["ok"]
    return dict(outcome="verified" if ok else "mismatch",
                message="" if ok else json.dumps(report["outputs"])[:300])


def main_loop(cases_dir: Path, results: Path, verify: bool) -> None:
    done = {r["case"] for r in _records(results) if "outcome" in r}
    from tinyc.keras_runtime import import_keras
    import_keras()                     # TensorFlow before the first case, so no case's time includes it
    with open(results, "a") as log, tempfile.TemporaryDirectory(prefix="tinyc-fuzz-") as tmp:
        for path in sorted(p for p in cases_dir.iterdir() if p.is_file()):
            case = path.stem
            if case in done:
                continue
            log.write(json.dumps(dict(case=case, start=time.time())) + "\n")
            log.flush()
            t0 = time.time()
            r = one_case(path, Path(tmp) / case, verify)
            r.update(case=case, seconds=round(time.time() - t0, 2))
            log.write(json.dumps(r) + "\n")
            log.flush()


def run_cases(cases: list, directory: Path, verify: bool = True, case_timeout: float = 60.0) -> list:
    """Write `cases` [(name, ext, bytes)] into `directory`, run them through workers (a new one after a crash or
    a hang), and return one result dict per case, in order."""
    cases_dir = directory / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    stems = {}
    for k, (name, ext, data) in enumerate(cases):
        stem = f"{k:04d}-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        (cases_dir / (stem + ext)).write_bytes(data)
        stems[stem] = name
    results, stderr = directory / "results.jsonl", directory / "worker-stderr.txt"
    while True:
        with open(stderr, "w") as err_file:
            proc = subprocess.Popen([sys.executable, __file__, str(cases_dir), str(results)] + ["--verify"] * verify,
                                    stdout=subprocess.DEVNULL, stderr=err_file)
        started = None
        while proc.poll() is None:
            time.sleep(0.2)
            last = _records(results)[-1:]
            if last and "outcome" not in last[0]:
                if started != last[0]["case"]:
                    started, t_start = last[0]["case"], time.time()
                elif time.time() - t_start > case_timeout:
                    proc.kill()
                    proc.wait()
                    _append(results, dict(case=started, outcome="hung", message=f"over {case_timeout:.0f} s"))
        if proc.returncode == 0:
            break
        last = _records(results)[-1:]
        err = stderr.read_text(errors="replace").strip().splitlines()[-1:]
        if last and "outcome" not in last[0]:      # died inside a case
            _append(results, dict(case=last[0]["case"], outcome="crashed",
                                  message=f"exit code {proc.returncode}: {err[0][:200] if err else ''}"))
        elif proc.returncode != -9:
            raise RuntimeError(f"fuzz worker failed outside any case: {err}")
    by_case = {r["case"]: r for r in _records(results) if "outcome" in r}
    return [dict(by_case[stem], name=stems[stem]) for stem in sorted(stems)]


def _records(path: Path) -> list:
    """The complete JSON lines of a results file (a line still being written is skipped)."""
    out = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main_loop(Path(sys.argv[1]), Path(sys.argv[2]), "--verify" in sys.argv[3:])
