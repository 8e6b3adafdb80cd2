"""Hostile and broken model files (tests/fuzz_corpus.py) through `tinyc compile`: every one ends in exit code 2
and one clear line (never "internal error", a traceback, a crash or a hang), or compiles to C that the sanitizer
build runs and the reference runtime agrees with. The corpus runs in worker processes (tests/fuzz_worker.py), so
a crash or hang in a library is caught and named; hypothesis adds random byte mutations in-process. The counts
are printed. `python tests/fuzz_atheris.py` runs the same check under atheris, by hand."""
from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_corpus
import fuzz_worker

FULL = bool(os.environ.get("TINYC_FULL"))
FLIPS = 100 if FULL else 20           # byte-flip cases per seed model
MUTATIONS = 400 if FULL else 60       # hypothesis examples


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fuzz_corpus.seed_files(tmp_path_factory.mktemp("fuzz-seeds"))


def assert_one_clear_line(message: str, case: str) -> None:
    assert message.startswith("error: ") and "\n" not in message, (case, message)
    assert "internal error" not in message and "Traceback" not in message, (case, message)
    assert 20 < len(message) < 700, (case, message)


def test_malformed_models_are_refused_in_one_line(seeds, tmp_path, capsys):
    cases = fuzz_corpus.all_cases(seeds, flips=FLIPS)
    results = fuzz_worker.run_cases(cases, tmp_path, verify=True)
    counts = collections.Counter(r["outcome"] for r in results)
    kinds = collections.Counter(r["name"].split("/")[0] for r in results)
    with capsys.disabled():
        print(f"\nfuzzed frontends: {len(results)} malformed models ("
              + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + "): "
              + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    bad = [(r["name"], r["outcome"], r.get("message", "")) for r in results if r["outcome"] not in
           ("refused", "verified")]
    assert not bad, bad
    for r in results:
        if r["outcome"] == "refused":
            assert_one_clear_line(r["message"], r["name"])
            assert r["code"] == 2
    assert counts["refused"] > len(results) // 2      # the corpus really is broken, mostly


KINDS = ["onnx", "tflite", "tflite_int8", "keras"]


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(KINDS))
    how = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
    pos = draw(st.floats(0, 1, exclude_max=True))
    span = draw(st.binary(min_size=1, max_size=16))
    return kind, how, pos, span


def mutate(data: bytes, how: str, pos: float, span: bytes) -> bytes:
    at = int(pos * len(data))
    if how == "flip":
        return fuzz_corpus.flip(data, [at + k for k in range(len(span))], list(span))
    if how == "truncate":
        return data[:at]
    if how == "insert":
        return data[:at] + span + data[at:]
    return data[:at] + span + data[at + len(span):]


@settings(max_examples=MUTATIONS, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation())
def test_mutated_models_compile_or_are_refused_in_one_line(seeds, m):
    """In-process: random damage to a real model either still compiles or is refused in one line (the C of
    what compiles is checked against the reference in the corpus test above)."""
    from tinyc.cli import error_line
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    kind, how, pos, span = m
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("model" + fuzz_corpus.EXT[kind])
        path.write_bytes(mutate(seeds[kind], how, pos, span))
        try:
            compile_model(str(path))
        except TinycError as e:
            assert_one_clear_line(error_line(e)[0], f"{kind} {how} at {pos:.4f}")
