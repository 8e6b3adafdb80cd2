"""`tinyc` command line: thin wrappers over library calls the tests use too.

Errors are one line on stderr and exit code 2 (TINYC_DEBUG=1 shows the traceback).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile

import click

from .errors import TinycError


def _shape(text: str) -> tuple:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a shape; write it like 1,3,96,96")
    if not dims or any(d <= 0 for d in dims):
        raise click.BadParameter(f"'{text}' is not a shape of positive sizes")
    return dims


def _shapes(values):
    return [_shape(v) for v in values] if values else None


_shape_opt = click.option("--input-shape", "input_shapes", multiple=True, metavar="1,3,96,96",
                          help="Static shape of an input in the model's layout (repeat per input, in order).")
_layout_opt = click.option("--io-layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True,
                           help="Layout of image inputs/outputs in the C API (ONNX models; Keras is always NHWC).")
_name_opt = click.option("--name", default=None, help="C symbol prefix (default: the model file's stem).")
_quantize_opt = click.option("--quantize", type=click.Choice(["int8", "int16x8"]), default=None,
                             help="Quantize a float model with tinyc's own PTQ: int8 (TFLite's scheme), or int16x8 "
                                  "(TFLite's 16x8: int16 activations, int8 weights).")
_calib_opt = click.option("--calib", default=None, metavar="calib.npy|random",
                          help="Calibration inputs for --quantize: .npy (N x input shape) or .npz (one array per "
                               "input); 'random' uses random data (not representative).")


_board_opt = click.option("--board", default=None, metavar="BOARD",
                          help="Target board (see `tinyc boards`): check that the model fits its SRAM and flash.")


_opt_opt = click.option("--opt", default=None, metavar="-O2",
                        help="Optimisation level of the firmware build (default -O2), e.g. -Os or -O3.")
_sample_opt = click.option("--sample", "sample_files", multiple=True, type=click.Path(dir_okay=False),
                           help=".npy file per model input (one sample or a stack) baked into the firmware's "
                                "main.c: the board image runs the first, the emulation image every one "
                                "(default: one seeded random sample).")


def _load_arrays(files):
    """.npy files -> arrays (None when no file is given)."""
    if not files:
        return None
    import numpy as np
    arrays = []
    for f in files:
        try:
            arrays.append(np.load(f, allow_pickle=False))
        except Exception as e:
            raise TinycError(f"cannot read '{f}' as a .npy array ({type(e).__name__})")
    return arrays


_bind_opt = click.option("--bind", "binds", multiple=True, metavar="NAME=file.npy",
                         help="ONNX: make graph input NAME a constant holding the array in file.npy (weights, "
                              "biases, bounds or shapes the model takes as inputs); repeat per input. The other "
                              "inputs stay inputs of the C API.")


_state_opt = click.option("--state", "state_pairs", multiple=True, metavar="IN=OUT",
                          help="ONNX streaming state: graph input IN is a state carried across inferences, taking "
                               "the value of graph output OUT (same shape and type) after each one; zeros at first. "
                               "OUT stays a model output. Repeat per pair. (TFLite variables and Keras "
                               "stateful=True layers declare their state themselves.)")


def _name_value_pairs(items, option: str, shape: str, example: str, remedy: str) -> dict:
    """--option NAME=VALUE values -> {NAME: VALUE}, each name once."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise TinycError(f"{option} '{item}' is not {shape}; write e.g. {option} {example}")
        if name in out:
            raise TinycError(f"{option} gives '{name}' twice; {remedy}")
        out[name] = value
    return out


def _state_pairs(items) -> dict | None:
    """--state IN=OUT values -> {IN: OUT} (None without any)."""
    return _name_value_pairs(items, "--state", "IN=OUT", "h_in=h_out",
                             "pair each state input once") or None


def _bind_arrays(binds) -> dict:
    """--bind NAME=file.npy values -> {NAME: array}."""
    import numpy as np
    out = {}
    for name, path in _name_value_pairs(binds, "--bind", "NAME=file.npy", "W=weights.npy",
                                        "bind each input once").items():
        try:
            out[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise TinycError(f"cannot read '{path}' (--bind {name}) as a .npy array ({type(e).__name__}); "
                             "save the values with numpy.save")
        if not isinstance(out[name], np.ndarray):
            raise TinycError(f"'{path}' (--bind {name}) is an .npz archive; give one array per --bind as .npy")
    return out


@contextlib.contextmanager
def _bound_model(model, binds):
    """The model file to compile: `model` itself, or with --bind a copy whose bound inputs are constants (the
    reference runtime of `tinyc verify` then runs on the same values)."""
    if not binds:
        yield model
        return
    arrays = _bind_arrays(binds)
    from .frontends import EXTENSIONS
    kind = EXTENSIONS.get(os.path.splitext(model)[1].lower())
    if kind != "onnx":
        raise TinycError(f"--bind applies to ONNX models (graph inputs); '{model}' is not an .onnx file")
    if not os.path.isfile(model):
        raise TinycError(f"model file '{model}' does not exist")
    from .frontends.onnx_import import bound_model_file
    with tempfile.TemporaryDirectory(prefix="tinyc-bind-") as tmp:
        yield bound_model_file(model, arrays, tmp)


def _arena_limit(target):
    """With a board, the fast kernels' scratch stays within what its firmware has for the arena."""
    if target is None:
        return None
    from .firmware.project import arena_budget
    return arena_budget(target)


def _load_board(name):
    if name is None:
        return None
    from .boards import load_board
    return load_board(name)


def _compile(model, name, input_shapes, io_layout, quantize, calib, options=None, state=None):
    """compile_model with the command line's shapes, calibration and state pairs; returns (Compiled, calibration
    arrays)."""
    from .compiler import compile_model
    shapes = _shapes(input_shapes)
    arrays, progress = _calibration(model, quantize, calib, name, shapes, io_layout)
    return compile_model(model, name, shapes, io_layout, quantize, arrays, progress, options, state,
                         _hybrid_choice()), arrays


def _remember_hybrid(ctx, param, value):
    ctx.meta["hybrid"] = value


def _hybrid_choice() -> str:
    """--hybrid of the running command (the commands that have no such option compile with the default)."""
    ctx = click.get_current_context(silent=True)
    return (ctx.meta.get("hybrid") if ctx is not None else None) or "tflite"


_hybrid_opt = click.option(
    "--hybrid", type=click.Choice(["tflite", "float"]), default="tflite", show_default=True, expose_value=False,
    callback=_remember_hybrid,
    help="Hybrid (dynamic-range) models, int8 weights with float activations: tflite computes what TFLite's hybrid "
         "kernels compute (inputs quantized on the fly, weights int8 in flash); float dequantizes the weights at "
         "compile time and computes the float model (4 bytes per weight).")


def _calibration(model, quantize, calib, name, input_shapes, io_layout):
    """The calibration arrays for --quantize (None without it), with a progress line on stderr."""
    if quantize is None:
        if calib is not None:
            raise TinycError("--calib is only used with --quantize int8 or int16x8")
        return None, None
    if calib is None:
        raise TinycError(f"--quantize {quantize} needs calibration data: --calib calib.npy (N samples of the input, "
                         "float32) or --calib random")
    from .frontends import load_model
    from .quant.calibrate import load_calibration, random_calibration
    g = load_model(model, input_shapes, io_layout)
    if calib == "random":
        click.echo("WARNING: calibrating on random data (--calib random): activation ranges will not match real "
                   "inputs and int8 accuracy will suffer; pass real samples with --calib calib.npy", err=True)
        arrays = random_calibration(g)
    else:
        arrays = load_calibration(calib, g)

    tty = sys.stderr.isatty()

    def progress(done, total):
        if not tty and done != total:   # logs get one line, terminals a moving bar
            return
        width = 30
        bar = "#" * (width * done // total) + "." * (width - width * done // total)
        click.echo(f"\rcalibrating [{bar}] {done}/{total} sample(s)", err=True, nl=done == total)
    return arrays, progress


def _weight_forms():
    from .codegen.weight_storage import weight_choices
    return weight_choices()


_weights_opt = click.option(
    "--weights", "weights", type=click.Choice(_weight_forms()), default=None,
    help="Store the weights in flash in this form, converted where each is read (no copy in SRAM): float16 for a "
         "float model (half the bytes; the model's weights are rounded to float16, ties to even); int4 with "
         "--quantize int8 (per-channel symmetric int4 conv/depthwise/dense weights, two per byte).")


_kernels_opt = click.option(
    "--kernels", type=click.Choice(["fast", "reference"]), default="fast", show_default=True,
    help="fast: optimized kernels (DSP SIMD on M4/M7/M33) where one applies; reference: the plain-C twins only "
         "(every fast kernel equals its twin bit for bit).")


_fusion_opt = click.option(
    "--fusion", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
    help="auto: run the memory-heavy early layers row by row (fused blocks) where that lowers the arena: within "
         "--arena-budget (or the --board's SRAM) the fastest plan that fits, else the smallest arena within 1.15x "
         "the instructions; none: layer by layer.")
_budget_opt = click.option(
    "--arena-budget", "arena_budget", type=int, default=None, metavar="BYTES",
    help="Bytes the arena may use: --fusion auto finds the fastest plan within it, or refuses in one line naming "
         "the smallest arena it can reach; with --fusion none the layer-by-layer arena must fit it.")


_stream_opt = click.option(
    "--stream-input", "stream_input", is_flag=True,
    help="The model input (one batch-1 NHWC image) is never in the arena: the first layers run row by row and pull "
         "its rows from <name>_input_rows(row, count, dst), which your application defines (see <name>.h).")
_passes_opt = click.option(
    "--stream-passes", "stream_passes", type=int, default=1, show_default=True, metavar="N",
    help="With --stream-input: the application can serve the frame up to N times per inference (a frame in "
         "external RAM or flash, a camera FIFO that rewinds), so the first layers may run in up to N column strips, "
         "each asking for the rows again: a smaller arena, some columns computed twice.")


def _fusion_options(fusion, arena_budget, target) -> dict:
    """--fusion and --arena-budget, with the instruction figures of the board's core (the M4's without one)."""
    from .compiler import fusion_options
    return fusion_options(fusion, arena_budget, target.core if target is not None else "cortex-m4")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tinyc")
def main():
    """tinyc: trained models (Keras, ONNX, TFLite) to small, fast, dependency-free C for microcontrollers."""


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the generated C library.")
@_name_opt
@_shape_opt
@_layout_opt
@click.option("--force", is_flag=True, help="Write into a non-empty directory tinyc did not create.")
@_quantize_opt
@_hybrid_opt
@_calib_opt
@_board_opt
@click.option("--arena", type=click.Choice(["static", "external"]), default="static", show_default=True,
              help="static: the library owns its arena; external: the caller passes it (<name>_invoke_with_arena), "
                   "so several models can share one region.")
@click.option("--arena-section", default=None, metavar="NAME",
              help="Put the static arena in this linker section (e.g. DTCM on STM32H7).")
@click.option("--weights-section", default=None, metavar="NAME", help="Put the weights in this linker section.")
@click.option("--build", "do_build", is_flag=True, help="With --board: also build the firmware (as `tinyc build OUT`).")
@_opt_opt
@_sample_opt
@click.option("--seed", default=0, show_default=True, help="Seed of the random sample input (without --sample).")
@_kernels_opt
@_weights_opt
@_bind_opt
@_state_opt
@_fusion_opt
@_budget_opt
@_stream_opt
@_passes_opt
def compile(model, out_dir, name, input_shapes, io_layout, force, quantize, calib, board, arena, arena_section,
            weights_section, do_build, opt, sample_files, seed, kernels, weights, binds, state_pairs, fusion,
            arena_budget, stream_input, stream_passes):
    """Compile MODEL (.onnx, .keras, .h5, float32 or int8 .tflite) to a C library in OUT; with --board also a
    firmware project in OUT/firmware (main.c, startup, linker scripts, Makefile for arm-none-eabi-gcc)."""
    from .compiler import codegen_options, write_library
    from .memory_report import stored_weights_text
    target = _load_board(board)
    options = codegen_options(arena, arena_section, weights_section, kernels, _arena_limit(target), weights,
                              stream_input, stream_passes)
    options.update(_fusion_options(fusion, arena_budget, target))
    if target is None and (do_build or sample_files or opt):
        raise TinycError("--build, --opt and --sample make firmware and need --board (see `tinyc boards`)")
    with _bound_model(model, binds) as path:
        c, arrays = _compile(path, name, input_shapes, io_layout, quantize, calib, options, _state_pairs(state_pairs))
    if target is not None:
        from .firmware.project import check_firmware_fits
        check_firmware_fits(c, target)
    files = write_library(c.library, out_dir, force)
    if target is not None:
        from .firmware.project import DEFAULT_OPT, sample_inputs, write_firmware
        samples = sample_inputs(c, _load_arrays(sample_files), seed, max_samples=None)
        files += write_firmware(c, target, out_dir, samples, opt or DEFAULT_OPT)
    if c.quantized is not None:
        from .quant.report import quantization_error
        for row in quantization_error(c.float_graph, c.quantized, arrays):
            agree = f", arg-max agrees on {100 * row['argmax_agreement']:.1f}%" if "argmax_agreement" in row else ""
            step = "int16" if quantize == "int16x8" else "int8"
            click.echo(f"{quantize} vs float on the {arrays[0].shape[0]} calibration sample(s), output {row['index']}: "
                       f"max abs error {row['max_abs_err']:.4g}, mean {row['mean_abs_err']:.4g} (output range "
                       f"{row['output_range']:.4g}, one {step} step {row['output_scale']:.4g}){agree}")
    lib = c.library
    click.echo(f"{model}: {len([l for l in lib.layers if not l['alias']])} layers, {lib.macs:,} MACs, "
               f"arena {lib.arena_bytes:,} bytes (lower bound {c.plan.lower_bound:,}), "
               f"weights {lib.weight_bytes:,} bytes{stored_weights_text(lib.stored_weights)}"
               + (f", state {c.plan.state_bytes:,} bytes ({lib.prefix}_reset_state)" if c.plan.graph.state else "")
               + _blocks_text(lib))
    if stream_input:
        click.echo(f"input streamed by rows, not in the arena: your application defines {lib.prefix}_input_rows(row, "
                   f"count, dst) ({lib.prefix}.h says when it is called and with which rows)" + _passes_text(c))
    for f in files:
        click.echo(f"  wrote {f}")
    from .codegen.cmake import target_name
    click.echo(f"CMake: add_subdirectory({out_dir}), target_link_libraries(your_app PRIVATE "
               f"{target_name(lib.prefix)})")
    if do_build:
        _print_build(out_dir, None, False)


def _passes_text(c) -> str:
    """What `tinyc compile` adds about a streamed input asked for in several passes (patch mode's strips)."""
    from .schedule.stream_input import requested_rows, stream_passes
    block = next(n for n in c.plan.graph.nodes if n.op == "FusedBlock" and n.attrs.get("stream"))
    passes = stream_passes(block)
    if passes == 1:
        return ""
    return (f"; it asks for the rows {passes} times per inference, rows 0 .. {requested_rows(block) - 1} in "
            f"increasing order in each pass (the first layers run in {passes} column strips)")


def _print_build(out_dir, opt, as_json):
    from .firmware.build import build_firmware
    from .firmware.images import format_size_report
    r = build_firmware(out_dir, opt)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"built for {r['board']}:")
    for line in format_size_report(r):
        click.echo(f"  {line}")
    from .firmware.stack_usage import format_stack
    click.echo(f"  {format_stack(r['stack'])}" if r["stack"] else
               "  stack: not measured (the project predates it; recompile with `tinyc compile --board`)")
    m = r["model"]
    click.echo(f"  the model's share of flash: code {m['code_bytes']:,} + constants {m['constant_bytes']:,} "
               f"(weights, tables) = {m['flash_bytes']:,} B; library helpers it calls {m['helper_bytes']:,} B "
               f"({', '.join(m['helpers']) or 'none'})")
    if "uf2" in r:
        u = r["uf2"]
        click.echo(f"  uf2: {u['blocks']} blocks, family {u['family']} ({u['family_id']:#010x}), "
                   f"0x{u['start']:08x}..0x{u['end']:08x}, checked")
    for fmt, path in r["images"].items():
        click.echo(f"  {fmt}: {path}")


def _blocks_text(lib) -> str:
    """'; 2 fused block(s) (13 layers) run row by row ...' for the compile summary; '' without one."""
    blocks = [info for info in lib.layers if "block" in info]
    if not blocks:
        return ""
    return (f"; {len(blocks)} fused block(s) ({sum(len(info['block']) for info in blocks)} layers) run row by row "
            "(`tinyc report` shows them)")


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@_opt_opt
@click.option("--json", "as_json", is_flag=True, help="Print sizes, limits and images as JSON (for CI).")
def build(out_dir, opt, as_json):
    """Build the firmware project that `tinyc compile --board` wrote in OUT_DIR with arm-none-eabi-gcc: ELF plus
    the board's images (UF2, or .bin and .hex), and text/data/bss with flash and SRAM use against the board's
    limits (exit 2 when over)."""
    _print_build(out_dir, opt, as_json)


@main.command("run")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--board", required=True, metavar="BOARD", help="Target board (see `tinyc boards`).")
@click.option("--emulate", is_flag=True, help="Run under QEMU (the board's qemu_machine); required: no board is "
                                             "attached to tinyc.")
@click.option("--soc", is_flag=True, help="With --emulate: run the board image (the UF2 that ships) on rp2040js, an "
                                          "emulated RP2040 SoC, for cycles per inference (pico only; needs Node.js "
                                          "and `make setup`).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Keep the library and firmware project here (default: a temporary directory).")
@click.option("--input", "inputs", multiple=True, type=click.Path(dir_okay=False),
              help=".npy file per model input (one sample or a stack: every sample is run and checked; the "
                   "instruction counts are the first's); default: one seeded random sample.")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-profile", is_flag=True, help="Skip the per-layer profiling run.")
@_opt_opt
@_name_opt
@_shape_opt
@_layout_opt
@_quantize_opt
@_hybrid_opt
@_calib_opt
@_kernels_opt
@_weights_opt
@_state_opt
@_fusion_opt
@_budget_opt
@_stream_opt
@_passes_opt
def run_cmd(model, board, emulate, soc, as_json, out_dir, inputs, seed, no_profile, opt, name, input_shapes,
            io_layout, quantize, calib, kernels, weights, state_pairs, fusion, arena_budget, stream_input,
            stream_passes):
    """Run MODEL's firmware for BOARD under emulation: instructions per inference, per layer and per MAC, and
    whether the outputs equal the host build and the reference runtime (exit 1 when they do not). With --soc the
    board image runs on an emulated RP2040 instead: cycles per inference and per MAC."""
    if not emulate:
        raise TinycError("only emulated runs are supported (no board is attached): add --emulate")
    from .firmware.run import format_run, format_soc_run, run_emulated, run_soc
    target = _load_board(board)
    if soc:     # before compiling: a board without a SoC emulator, or no node/rp2040js, is refused at once
        from .firmware.soc import check_rp2040js, check_soc_board, find_node
        check_soc_board(target)
        find_node()
        check_rp2040js()
    from .compiler import codegen_options
    c, _ = _compile(model, name, input_shapes, io_layout, quantize, calib,
                    {**codegen_options(kernels=kernels, arena_limit=_arena_limit(target), weights=weights,
                                       stream_input=stream_input, stream_passes=stream_passes),
                     **_fusion_options(fusion, arena_budget, target)},
                    _state_pairs(state_pairs))
    from .firmware.project import DEFAULT_OPT, check_firmware_fits
    check_firmware_fits(c, target)
    if soc:
        r = run_soc(c, target, model, out_dir, _load_arrays(inputs), seed, io_layout, opt or DEFAULT_OPT)
    else:
        r = run_emulated(c, target, model, out_dir, _load_arrays(inputs), seed, io_layout, not no_profile,
                         opt or DEFAULT_OPT)
    click.echo(json.dumps(r, indent=2) if as_json else "\n".join((format_soc_run if soc else format_run)(r)))
    sys.exit(0 if r["outputs_match"] else 1)


_ORACLES = {"onnxruntime": "onnxruntime", "keras": "Keras", "tflite": "TFLite's reference kernels (BUILTIN_REF)",
            "tflite-micro": "TFLite Micro's interpreter (its reference kernels)"}


def _oracle_text(report) -> str:
    text = _ORACLES.get(report.get("oracle"), str(report.get("oracle")))
    if report.get("oracle_version"):
        text += f", tflite-micro {report['oracle_version']}"
    return text + (f" -- {report['oracle_reason']}" if report.get("oracle_reason") else "")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "inputs", multiple=True, type=click.Path(dir_okay=False),
              help=".npy file per model input (one sample, or a stack of samples); default: seeded random.")
@click.option("--samples", default=3, show_default=True, help="Random samples when no --input is given.")
@click.option("--frames", default=None, type=click.IntRange(min=1),
              help="A model with streaming state: random frames run one after another as one stream (the same "
                   "as --samples, whose samples are such frames for these models).")
@click.option("--seed", default=0, show_default=True)
@click.option("--per-layer", is_flag=True, help="Compare every layer's output and name the first that diverges.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--keep", "keep_dir", default=None, type=click.Path(file_okay=False),
              help="Keep the host build (C files, runner, data) in this directory.")
@_name_opt
@_shape_opt
@_layout_opt
@_quantize_opt
@_hybrid_opt
@_calib_opt
@_kernels_opt
@_weights_opt
@_bind_opt
@_state_opt
@_fusion_opt
@_budget_opt
@_stream_opt
@_passes_opt
def verify(model, inputs, samples, frames, seed, per_layer, as_json, keep_dir, name, input_shapes, io_layout,
           quantize, calib, kernels, weights, binds, state_pairs, fusion, arena_budget, stream_input, stream_passes):
    """Compile MODEL for the host (gcc, ASan+UBSan), run it and compare with the reference runtime (for
    --quantize int8: TFLite's reference kernels on the int8 model tinyc made, bit for bit)."""
    from .compiler import codegen_options
    from .verify import verify as run_verify
    arrays = _load_arrays(inputs)
    shapes = _shapes(input_shapes)
    with _bound_model(model, binds) as path:
        calib_arrays, progress = _calibration(path, quantize, calib, name, shapes, io_layout)
        report = run_verify(path, arrays, frames or samples, seed, per_layer, name, shapes, io_layout, keep_dir,
                            quantize, calib_arrays, progress,
                            {**codegen_options(kernels=kernels, weights=weights, stream_input=stream_input,
                                               stream_passes=stream_passes),
                             **_fusion_options(fusion, arena_budget, None)},
                            _state_pairs(state_pairs), hybrid=_hybrid_choice())
    if frames is not None and "frames" not in report:
        raise TinycError(f"--frames: '{model}' has no streaming state (use --samples for independent samples)")
    report["model"] = model
    if as_json:
        click.echo(json.dumps(report))
    else:
        for o in report["outputs"]:
            if "mismatched_bytes" in o:
                click.echo(f"output {o['index']}: {o['mismatched_bytes']} differing int8 value(s), max difference "
                           f"{o['max_abs_diff']} LSB {'ok' if o['ok'] else 'MISMATCH'}")
                continue
            click.echo(f"output {o['index']}: max abs error {o['max_abs_err']:.3g} "
                       f"(tolerance {o['tolerance']:.3g}) {'ok' if o['ok'] else 'MISMATCH'}")
        for row in report.get("layers", []):
            click.echo(f"  {row['op']:<10} {row['layer'][:40]:<40} err {row['max_abs_err']:.3g} "
                       f"{'ok' if row['ok'] else 'DIVERGES'}")
            if "block_layers" in row:
                names = row["block_layers"]
                click.echo(f"             ({len(names)} layers '{names[0][-40:]}' .. '{names[-1][-40:]}' run row by "
                           "row: only the block's output is traced)")
        if per_layer:
            click.echo(f"first diverging layer: {report['first_divergence'] or 'none'}")
        if "dsp_path_matches" in report:
            click.echo(f"fast kernels: DSP code paths (emulated in C) "
                       f"{'give the same bytes as' if report['dsp_path_matches'] else 'DIFFER FROM'} the plain-C paths")
        click.echo(f"oracle: {_oracle_text(report)}")
        if "oracle_weights" in report:
            click.echo(f"weights: {report['oracle_weights']}")
        if "oracle_note" in report:
            click.echo(f"note: {report['oracle_note']}")
        for row in report.get("state", []):
            click.echo(f"state '{row['name']}': {row['dtype']} {'x'.join(map(str, row['shape']))}, {row['bytes']} "
                       f"bytes, next value '{row['next']}' ({row['update']})")
        runs = (f"{report['frames']} consecutive frame(s), the state carried in both" if "frames" in report else
                f"{report['samples']} sample(s)")
        click.echo(f"{report['model']}: {'ok' if report['ok'] else 'MISMATCH'} on {runs}")
    sys.exit(0 if report["ok"] else 1)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@_board_opt
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (stable schema for CI).")
@click.option("--svg", "svg_file", default=None, type=click.Path(dir_okay=False),
              help="Write a picture of the memory plan (x = step, y = arena offset) as SVG.")
@click.option("--html", "html_file", default=None, type=click.Path(dir_okay=False),
              help="Write the picture and the per-layer table as a standalone HTML page.")
@_name_opt
@_shape_opt
@_layout_opt
@_quantize_opt
@_hybrid_opt
@_calib_opt
@_kernels_opt
@_weights_opt
@_bind_opt
@_state_opt
@_fusion_opt
@_budget_opt
@_stream_opt
@_passes_opt
def report(model, board, as_json, svg_file, html_file, name, input_shapes, io_layout, quantize, calib, kernels,
           weights, binds, state_pairs, fusion, arena_budget, stream_input, stream_passes):
    """Where the SRAM and flash go: per layer MACs, weights, live bytes, scratch, in-place decisions, the peak;
    the arena and its lower bound; with --board, whether the model fits."""
    from .memory_report import format_report, memory_report, plan_picture_data
    target = _load_board(board)
    from .compiler import codegen_options
    with _bound_model(model, binds) as path:
        c, _ = _compile(path, name, input_shapes, io_layout, quantize, calib,
                        {**codegen_options(kernels=kernels, arena_limit=_arena_limit(target), weights=weights,
                                           stream_input=stream_input, stream_passes=stream_passes),
                         **_fusion_options(fusion, arena_budget, target)},
                        _state_pairs(state_pairs))
    r = memory_report(c, target)
    if svg_file or html_file:
        from .plan_picture import render_html, render_svg
        steps, rects = plan_picture_data(c)
        kw = dict(arena_bytes=r["arena_bytes"], lower_bound=r["arena_lower_bound_bytes"], peak_step=r["peak_step"],
                  title=f"{os.path.basename(model)}: arena plan")
        for path, render, more in ((svg_file, render_svg, {}), (html_file, render_html, dict(fusion=r.get("fusion")))):
            if path:
                try:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(render(steps, rects, **kw, **more))
                except OSError as e:
                    raise TinycError(f"cannot write '{path}': {e.strerror}")
    click.echo(json.dumps(r, indent=2) if as_json else format_report(r))


@main.command()
def ops():
    """List the supported ops per frontend."""
    from .frontends import supported_ops
    for frontend, names in supported_ops().items():
        click.echo(f"{frontend}:")
        click.echo("  " + ", ".join(names))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the boards as a JSON list.")
def boards(as_json):
    """List the target boards (boards/*.toml): core, clock, SRAM, flash, QEMU machine."""
    from .boards import board_table_rows, format_board_table
    rows = board_table_rows()
    click.echo(json.dumps(rows, indent=2) if as_json else "\n".join(format_board_table(rows)))


def error_line(e: BaseException) -> tuple[str, int]:
    """The one line and exit code the console prints for an exception escaping a command (also what the fuzz
    tests hold every malformed model to)."""
    if isinstance(e, TinycError):
        return f"error: {e}", 2
    if isinstance(e, click.exceptions.Abort):
        return "aborted", 130
    if isinstance(e, click.ClickException):
        return f"error: {' '.join(e.format_message().split())}", 2
    return (f"error: internal error ({type(e).__name__}: {' '.join(str(e).split())[:200]}); rerun with "
            "TINYC_DEBUG=1 and report it"), 2


def run():
    """Console entry point: one-line errors, exit code 2, no tracebacks."""
    try:
        main(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else e.format_message())
        sys.exit(0)
    except SystemExit:
        raise
    except Exception as e:  # an unforeseen failure is still one line; TINYC_DEBUG=1 shows where
        if os.environ.get("TINYC_DEBUG") and not isinstance(e, (TinycError, click.ClickException)):
            raise
        line, code = error_line(e)
        click.echo(line, err=True)
        sys.exit(code)


if __name__ == "__main__":
    run()
