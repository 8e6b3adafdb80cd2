"""The C generated for the whole test zoo is pinned: a SHA-256 per model and kernel set, stored in
tests/data/generated_c.json. A refactoring (moving op definitions, deriving registries) must leave every byte of
it unchanged; a change meant to alter the C regenerates the digests with `TINYC_UPDATE_GENERATED=1 make test`
(then `git diff tests/data/generated_c.json` shows which models it touched).

Covered: every Keras zoo model in every format it is exported to, every int8 zoo model (TFLiteConverter, int8 and
float I/O), and tinyc's own quantizer (--quantize int8) on three zoo models, each with the fast and the reference
kernels. (tests/test_generated_c.py's every-kernel graph grows with every new op, so it is not pinned.)

Each case is pinned with `--fusion none` (layer by layer: the C of every tinyc before fused blocks), and compiled
with the default `--fusion auto` too: where that fuses blocks, its C is pinned as well (case + " fused"); where it
does not, it must be the same C."""
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

import int8_zoo
import model_zoo
from tinyc.compiler import codegen_options, compile_model
from tinyc.frontends import load_model
from tinyc.quant.calibrate import random_calibration

DIGESTS = Path(__file__).parent / "data" / "generated_c.json"
UPDATE = bool(os.environ.get("TINYC_UPDATE_GENERATED"))
KERNEL_SETS = ("fast", "reference")
PTQ_MODELS = ("cnn_residual", "cnn_depthwise", "mlp_relu")
# Comments are left out of the digests: they carry names the exporters make up per process (tf2onnx numbers the
# tensors it folds from a process-wide counter; Keras numbers unnamed layers, conv2d_5 after four other models),
# which say nothing about the code.
COMMENT = re.compile(r"/\*.*?\*/", re.S)


def _digest(compiled) -> str:
    h = hashlib.sha256()
    for name, text in sorted(compiled.library.files.items()):
        text = COMMENT.sub("/**/", text)
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def _check(case: str, compile_with) -> None:
    """`compile_with(options)`: the case compiled with codegen options (plus the fusion choice)."""
    plain = compile_with({"fusion": "none"})
    _check_digest(case, plain)
    fused = compile_with({})
    if any(n.op == "FusedBlock" for n in fused.plan.graph.nodes):
        _check_digest(case + " fused", fused)
    else:
        assert fused.library.files == plain.library.files, f"{case}: --fusion auto fused nothing, yet the C differs"


def _check_digest(case: str, compiled) -> None:
    digest = _digest(compiled)
    stored = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
    if UPDATE:
        stored[case] = digest
        DIGESTS.parent.mkdir(exist_ok=True)
        DIGESTS.write_text(json.dumps(dict(sorted(stored.items())), indent=1) + "\n")
        return
    assert case in stored, f"no stored digest for {case}: run with TINYC_UPDATE_GENERATED=1 once"
    assert stored[case] == digest, (f"the C generated for {case} changed; if that is intended, regenerate "
                                    "tests/data/generated_c.json with TINYC_UPDATE_GENERATED=1")


@pytest.mark.parametrize("name", sorted(model_zoo.ZOO))
def test_float_zoo(zoo, name):
    for fmt in model_zoo.formats(name):
        for kernels in KERNEL_SETS:
            _check(f"{name}.{fmt}/{kernels}",
                   lambda o: compile_model(zoo.path(name, fmt), options={**codegen_options(kernels=kernels), **o}))


@pytest.mark.parametrize("name", sorted(int8_zoo.BUILDERS))
def test_int8_zoo(int8_models, name):
    variants = (False, True) if name == "residual_cnn" else (False,)
    for float_io in variants:
        for kernels in KERNEL_SETS:
            _check(f"{name}{'_float_io' if float_io else ''}.tflite/{kernels}",
                   lambda o: compile_model(int8_models(name, float_io), options={**codegen_options(kernels=kernels),
                                                                                 **o}))


@pytest.mark.parametrize("name", PTQ_MODELS)
def test_own_quantizer(zoo, name):
    path = zoo.path(name, "onnx")
    calib = random_calibration(load_model(path))
    for kernels in KERNEL_SETS:
        _check(f"{name}.onnx --quantize int8/{kernels}",
               lambda o: compile_model(path, quantize="int8", calib=calib,
                                       options={**codegen_options(kernels=kernels), **o}))
