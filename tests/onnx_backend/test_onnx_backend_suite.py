"""ONNX's backend test suite through tinyc's ONNX backend, the way onnxruntime proves conformance:
`onnx.backend.test.BackendTest(TinycBackend, __name__)`, with ONNX's own comparison (numpy's assert_allclose, rtol
1e-3, atol 1e-7; dtypes and shapes equal).

Included: every case (node tests, and the pytorch-converted / pytorch-operator sets of the onnx wheel) whose op type
is one the ONNX frontend lists (`ONNX_OPS`, so the list grows with the frontend; an expanded function test counts
for the function's op). Excluded, each group with its reason (`EXCLUDED`): cases whose inputs or outputs have types
tinyc does not target, and training. Cases of listed ops that tinyc refuses or gets wrong today are in
known_failures.txt (name, status, reason): they are expected to fail *that way*; one that passes, or fails another
way (a refusal that turns into a wrong result), fails the test, so the list only shrinks.
`TINYC_UPDATE_KNOWN_FAILURES=1` rewrites the list from a full run.

`make test` runs every known failure and a fixed sample of at most `FAST_PER_OP` of the other cases per op type
(spread over them in name order); `make test-full` (TINYC_FULL=1) runs every included case. `make conformance` (bench/onnx_conformance.py) runs the
whole suite, every op type, with tinyc's own tolerance, and prints the table.
"""
import functools
import os
import unittest
from collections import defaultdict
from pathlib import Path

import onnx.backend.test
import pytest

from tinyc.frontends.onnx_ops import ONNX_OPS
from tinyc.onnx_backend import (
    SUITE_KINDS,
    TinycBackend,
    classify_error,
    load_suite,
    out_of_scope,
)

UPDATE = bool(os.environ.get("TINYC_UPDATE_KNOWN_FAILURES"))
FULL = bool(os.environ.get("TINYC_FULL")) or UPDATE
FAST_PER_OP = 6      # ~100 op types x 6 cases x ~0.25 s (a C build and run each) stays under 2 minutes
KNOWN_FILE = Path(__file__).with_name("known_failures.txt")
STATUSES = ("refused", "wrong", "crash")

# out_of_scope() group -> why those cases are excluded
_DTYPES = "a tensor type tinyc does not target (it compiles float32, int8 and the integer types microcontrollers use)"
EXCLUDED = {
    "training": "training: training-only ops (ai.onnx.preview.training, loss functions) or training mode; tinyc "
                "compiles inference",
    "string": "string tensors: no numeric kernel on a microcontroller",
    "sequence": "ONNX sequences: tinyc compiles tensors",
    "map": "ONNX maps: tinyc compiles tensors",
    "optional": "ONNX optionals: tinyc compiles tensors",
    "sparse tensor": "sparse tensors: tinyc compiles dense tensors",
    "float16": f"float16 inputs/outputs: {_DTYPES}",
    "double": f"double inputs/outputs: {_DTYPES}",
    "bfloat16": f"bfloat16 inputs/outputs: {_DTYPES}",
    "float8": f"float8/float4 inputs/outputs: {_DTYPES}",
    "complex": f"complex inputs/outputs: {_DTYPES}",
}
_CATEGORIES = {"node": "OnnxBackendNodeModelTest", "pytorch-converted": "OnnxBackendPyTorchConvertedModelTest",
               "pytorch-operator": "OnnxBackendPyTorchOperatorModelTest"}


def read_known_failures(path=KNOWN_FILE) -> dict:
    """{case name: (status, reason)} from known_failures.txt ('#' comments; one 'name status reason' a line)."""
    known = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[1] not in STATUSES or parts[0] in known:
            raise ValueError(f"{path.name}:{n}: want 'test_name {'|'.join(STATUSES)} reason', once per case: {line}")
        known[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return known


CASES = load_suite(SUITE_KINDS)
INCLUDED = [c for c in CASES if c.op in ONNX_OPS]
SCOPE = {c.name: out_of_scope(c.load().model) for c in INCLUDED}
IN_SCOPE = [c for c in INCLUDED if SCOPE[c.name] is None]
KNOWN = read_known_failures()
OUTCOMES: dict = {}


def _fast_sample(cases) -> set:
    """Every known failure (refusals cost no C build; the list only shrinks) and at most FAST_PER_OP of each op
    type's other cases (a C build and run each), spread evenly over them in name order."""
    by_op = defaultdict(list)
    for c in sorted(cases, key=lambda c: c.name):
        if c.name not in KNOWN:
            by_op[c.op].append(c.name)
    chosen = {c.name for c in cases if c.name in KNOWN}
    for names in by_op.values():
        if len(names) <= FAST_PER_OP:
            chosen.update(names)
        else:
            chosen.update(names[round(i * (len(names) - 1) / (FAST_PER_OP - 1))] for i in range(FAST_PER_OP))
    return chosen


SELECTED = {c.name for c in IN_SCOPE} if FULL else _fast_sample(IN_SCOPE)


def _known_failure_aware(func, name):
    """`func` (one BackendTest case) held to known_failures.txt: a listed case must fail with its listed status,
    an unlisted one must pass."""
    @functools.wraps(func)
    def test(self):
        known = KNOWN.get(name)
        try:
            func(self)
        except unittest.SkipTest:
            raise
        except Exception as e:   # classified below; an unknown failure is raised again
            status, detail = classify_error(e)
            OUTCOMES[name] = (status, detail)
            if known is None and not UPDATE:
                raise
            if known is not None and known[0] != status and not UPDATE:
                raise AssertionError(f"{name}: known_failures.txt lists it as {known[0]} ({known[1]}), but now it is "
                                     f"{status}: {detail}") from e
        else:
            OUTCOMES[name] = ("pass", "")
            if known is not None and not UPDATE:
                raise AssertionError(f"{name} passes now: remove it from tests/onnx_backend/known_failures.txt")
        if known is not None and not UPDATE:   # outside the except block: no exception chain to format
            pytest.xfail(f"known failure, {OUTCOMES[name][0]}: {OUTCOMES[name][1][:200]}")
    return test


def _build_test_classes() -> dict:
    backend_test = onnx.backend.test.BackendTest(TinycBackend, __name__)
    generated = backend_test.test_cases
    classes = {}
    for case in INCLUDED:
        cls_name = _CATEGORIES[case.kind]
        method = f"{case.name}_cpu"
        func = getattr(generated[cls_name], method)
        if SCOPE[case.name] is not None:
            func = unittest.skip(f"excluded, {EXCLUDED[SCOPE[case.name]]}")(func)
        elif case.name not in SELECTED:
            func = unittest.skip("not in make test's sample; TINYC_FULL=1 (make test-full) runs it")(func)
        else:
            func = _known_failure_aware(func, case.name)
        classes.setdefault(cls_name, {})[method] = func
    out = {}
    for cls_name, methods in classes.items():
        cls = type(cls_name, (unittest.TestCase,), dict(sorted(methods.items())))
        cls.__module__ = __name__
        out[cls_name] = cls
    return out


globals().update(_build_test_classes())


def test_known_failures_name_included_cases():
    """Every entry is a case this module runs (a case that left the suite or the include list leaves the list)."""
    included = {c.name for c in IN_SCOPE}
    stale = sorted(set(KNOWN) - included)
    assert not stale, f"known_failures.txt lists cases that are not included in-scope cases: {stale[:20]}"


def test_exclusion_groups_have_reasons():
    missing = {SCOPE[c.name] for c in INCLUDED if SCOPE[c.name] is not None} - set(EXCLUDED)
    assert not missing, f"out-of-scope groups without a stated reason in EXCLUDED: {missing}"


def test_include_list_follows_the_frontend():
    """The include list is every suite case of each op the ONNX frontend lists, nothing else."""
    ops = {c.op for c in CASES}
    assert {c.op for c in INCLUDED} == ops & set(ONNX_OPS)
    assert len(IN_SCOPE) >= 100 and {"Conv", "Relu", "Gemm", "Softmax"} <= {c.op for c in IN_SCOPE}


@pytest.fixture(scope="module", autouse=True)
def _update_known_failures():
    yield
    if not UPDATE:
        return
    lines = [ln for ln in KNOWN_FILE.read_text().splitlines() if ln.startswith("#")]
    for name in sorted(OUTCOMES):
        status, detail = OUTCOMES[name]
        if status != "pass":
            lines.append(f"{name}  {status}  {' '.join(detail.split())[:160]}")
    KNOWN_FILE.write_text("\n".join(lines) + "\n")
