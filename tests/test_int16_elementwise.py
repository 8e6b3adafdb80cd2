"""16x8 elementwise, data-movement, pooling and MEAN layers (ADD, SUB, MUL, LEAKY_RELU, RELU, QUANTIZE, PAD,
CONCATENATION, RESHAPE, STRIDED_SLICE, TRANSPOSE, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN) in models made by TF's
converter: docs/int16-numerics.md §3-4 (tests/int16_numerics.py) against TF 2.21's BUILTIN_REF interpreter on
every layer. Two multi-op models by default, every single-op model with TINYC_FULL."""
import importlib.util
import os
import shutil
import threading

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("16x8 TFLite tests need tensorflow", allow_module_level=True)

import int16_numerics  # noqa: E402

MIXES = ("elementwise_mix", "movement_mix")
COPIES = ("pad", "transpose", "strided_slice", "reshape", "mirror_pad", "broadcast_to",     # no arithmetic to
          "resize_nearest")                                                                  # model
MODELS = MIXES + (tuple(m for m in int16_numerics.OP_MODELS if m not in MIXES + COPIES)
                  if os.environ.get("TINYC_FULL") else ())


@pytest.fixture(scope="session")
def op_models(tmp_path_factory):
    """Lazily converted single- and multi-op 16x8 models: `op_models("add")` -> path."""
    directory, cache, lock = tmp_path_factory.mktemp("int16_ops"), {}, threading.Lock()

    def get(name):
        with lock:
            if name not in cache:
                cache[name] = int16_numerics.convert(name, directory / f"{name}.tflite")
            return cache[name]
    return get


@pytest.mark.parametrize("name", MODELS)
def test_document_matches_tflite(op_models, name):
    """Every layer the document models computes what TFLite computes, on random int16 inputs over the full range."""
    differing, compared = int16_numerics.layer_mismatches(op_models(name))
    assert compared > 0 and not any(differing.values()), differing


C_MODELS = MIXES + (tuple(m for m in int16_numerics.OP_MODELS if m not in MIXES)
                                if os.environ.get("TINYC_FULL") else ())


@pytest.mark.parametrize("kernels", ("fast", "reference"))
@pytest.mark.parametrize("name", C_MODELS)
def test_bit_exact_with_tflite_reference(op_models, name, kernels):
    """tinyc's C (each kernel set) gives TFLite's bytes on every layer, for random int16 inputs."""
    from tinyc.compiler import codegen_options
    from tinyc.verify import verify
    report = verify(op_models(name), samples=6, seed=5, per_layer=True, options=codegen_options(kernels=kernels))
    assert report["mismatched_bytes"] == 0, report["outputs"]
    bad = [row for row in report["layers"] if not row["ok"]]
    assert not bad and report["layers"], bad


@pytest.mark.skipif(not (os.environ.get("TINYC_FULL") and shutil.which("arm-none-eabi-gcc")
                         and shutil.which("qemu-system-arm")),
                    reason="TINYC_FULL, arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("kernels", ("fast", "reference"))
@pytest.mark.parametrize("board", ("nucleo-f412zg", "pico"))       # Cortex-M4 (mps2-an386), M0+ (mps2-an385)
@pytest.mark.parametrize("name", MIXES)
def test_on_emulated_cortex_m(op_models, tmp_path, name, board, kernels):
    """The firmware on the emulated M4 (DSP paths) and M0+ gives the host build's and TFLite's int16 values."""
    from tinyc.boards import load_board
    from tinyc.compiler import codegen_options, compile_model
    from tinyc.firmware.run import run_emulated
    path = op_models(name)
    compiled = compile_model(path, name, options=codegen_options(kernels=kernels))
    rng = np.random.default_rng(3)     # three samples over the whole int16 range, the extremes included
    xs = [rng.integers(-32768, 32768, (3, *compiled.plan.graph.tensors[n].shape)).astype(np.int16)
          for n in compiled.plan.graph.inputs]
    for x in xs:
        x[0], x[1] = -32768, 32767
    r = run_emulated(compiled, load_board(board), path, str(tmp_path / "fw"), inputs=xs, profile=False)
    for row in r["outputs"]:
        assert row["dtype"] == "int16" and row["max_abs_diff_host"] == 0 and row["max_abs_err_reference"] == 0, row


def test_padv2_with_a_float_constant_is_refused(op_models):
    """TF 2.21's converter writes a 16x8 PADV2 whose constant stays float32; TFLite's Prepare refuses it, so does
    tinyc, in one line naming the node."""
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    with pytest.raises(TinycError, match="int16 PADV2 with the float constant"):
        compile_model(op_models("padv2_float_constant"))


def test_fast_set_uses_the_int16_fast_kernels(op_models):
    """The fast kernel set compiles the 16x8 ADD / SUB, RELU / LEAKY_RELU / QUANTIZE, pools and MEAN with their fast
    rules (int8_fast_misc), which test_bit_exact_with_tflite_reference and the property tests hold to TFLite."""
    from tinyc.compiler import codegen_options, compile_model
    kernels = set()
    for name in MIXES:
        layers = compile_model(op_models(name), options=codegen_options(kernels="fast")).library.layers
        kernels |= {(layer["op"], layer["kernel"]) for layer in layers}
    for op, kernel in (("Add", "int8_fast/binary/int16"), ("Sub", "int8_fast/binary/int16"),
                       ("Activation", "int8_fast/binary/int16"), ("Quantize", "int8_fast/binary/int16"),
                       ("AvgPool2D", "int8_fast/pool16"), ("MaxPool2D", "int8_fast/pool16"),
                       ("Mean", "int8_fast/mean16")):
        assert (op, kernel) in kernels, (op, kernel, kernels)


def test_tile_is_refused_as_tflite_refuses_it(op_models):
    """TF 2.21's converter makes a 16x8 TILE that TFLite's kernel refuses at Eval ('Type INT16 is not supported by
    tile'); tinyc refuses it in one line (MIRROR_PAD and BROADCAST_TO, copies TFLite takes, compile: TINYC_FULL)."""
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    with pytest.raises(TinycError, match="Tile has no 16x8 kernel"):
        compile_model(op_models("tile"))


def test_sum_is_refused(op_models):
    """A 16x8 SUM (TFLite sums int16 in int16, wrapping, with equal scales): refused in one line; REDUCE_MAX / MIN
    compile (TINYC_FULL: the single-op model, every layer)."""
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    with pytest.raises(TinycError, match="REDUCE_MAX and REDUCE_MIN"):
        compile_model(op_models("sum"))


def test_bilinear_resize_is_refused(op_models):
    """16x8 RESIZE_BILINEAR (TFLite's int16 kernel sums in int64): refused in one line; RESIZE_NEAREST_NEIGHBOR, a
    copy, compiles (TINYC_FULL: the single-op model, every layer)."""
    from tinyc.compiler import compile_model
    from tinyc.errors import TinycError
    with pytest.raises(TinycError, match="int16 Resize is nearest"):
        compile_model(op_models("resize_bilinear"))
