"""Slice views (schedule/buffers.py `slice_view`): a Slice whose output is one contiguous range of its input's bytes
(a Split of the outermost non-unit axis) is placed inside its input's buffer and emits no code. The C is compared
with the interpreter under AddressSanitizer/UBSan (tests/ops/c_runner.py), float32 and int8: a Split feeding two
branches, a Slice of a model input, a Slice that is a model output (own bytes, a copy), a Slice whose input a later
layer would write over in place, and a layer reading both a buffer and a view of it; and ONNX Split against
onnxruntime."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ops"))
from c_runner import run_c  # noqa: E402

from tinyc import interp  # noqa: E402
from tinyc.codegen.emit import generate  # noqa: E402
from tinyc.compiler import Compiled, compile_graph  # noqa: E402
from tinyc.passes import optimize  # noqa: E402
from tinyc.verify import run_generated  # noqa: E402
from tinyc.ir import Graph, Quant  # noqa: E402
from tinyc.schedule import is_view, schedule  # noqa: E402
from tinyc.schedule.buffers import slice_view  # noqa: E402

RNG = np.random.default_rng(3)


class G:
    """A small graph builder: float32, or int8 with one quantization for every tensor (data movement keeps it)."""

    def __init__(self, name, dtype="float32"):
        self.g = Graph(name)
        self.dtype = dtype
        self.q = Quant(np.float32(0.05), np.int64(-2)) if dtype == "int8" else None

    def input(self, name, shape):
        self.g.add_tensor(name, shape, self.dtype, quant=self.q)
        self.g.inputs.append(name)
        return name

    def node(self, op, inputs, shape, name=None, **attrs):
        name = name or f"t{len(self.g.nodes)}_{op.lower()}"
        self.g.add_tensor(name, shape, self.dtype, quant=self.q)
        self.g.add_node(op, list(inputs), [name], name=name, **attrs)
        return name

    def slice(self, x, start, size, axis=1):
        shape = self.g.tensors[x].shape
        starts, sizes = [0] * len(shape), list(shape)
        starts[axis], sizes[axis] = start, size
        return self.node("Slice", [x], tuple(sizes), starts=tuple(starts), steps=(1,) * len(shape),
                         sizes=tuple(sizes))

    def act(self, x, fn="relu"):
        """An activation (int8 graphs: relu, whatever `fn` says; its int8 kernel keeps the quantization)."""
        fn = fn if self.dtype == "float32" else "relu"
        return self.node("Activation", [x], self.g.tensors[x].shape, fn=fn)

    def done(self, *outputs):
        self.g.outputs = list(outputs)
        self.g.validate()
        return self.g


def _inputs(g):
    if g.tensors[g.inputs[0]].dtype == "int8":
        return [RNG.integers(-128, 128, g.tensors[n].shape).astype(np.int8) for n in g.inputs]
    return [RNG.standard_normal(g.tensors[n].shape).astype(np.float32) for n in g.inputs]


def _check_c(g, tmp_path, xs=None, ours=None):
    """The C (ASan/UBSan) against the interpreter (float32), and, float32 and int8, byte for byte against the C of
    the plan in which every Slice copies (the interpreter computes int8 activations on raw values). `ours`: the
    outputs of C already run on `xs`."""
    if ours is None:
        xs = _inputs(g)
        ours = run_c(g, xs, tmp_path, options={"kernels": "reference"})
    ours = [np.asarray(o).reshape(g.tensors[n].shape) for o, n in zip(ours, g.outputs)]
    if g.tensors[g.inputs[0]].dtype == "float32":
        ref = interp.run(g, xs)
        for name, out in zip(g.outputs, ours):
            np.testing.assert_allclose(out, ref[name], rtol=1e-6, atol=1e-6, err_msg=name)
    h = optimize(g)
    plan = schedule(h, views=False)
    assert not any(is_view(plan, n) for n in plan.graph.nodes)
    copies = run_generated(Compiled("copies", h, plan, generate(plan, "m", "copies")), list(xs))
    for name, out, ref in zip(g.outputs, ours, copies):
        assert out.tobytes() == np.ascontiguousarray(ref[0]).astype(out.dtype).tobytes(), name


def _forced_views(g):
    """Compiled with a Slice view wherever one applies, smaller or not."""
    h = optimize(g)
    plan = schedule(h, views="always")
    return Compiled("views", h, plan, generate(plan, "m", "views"))


def _slices(compiled):
    """(views, copies): the plan's Slice nodes, and whether the C has a function for each."""
    plan, lib = compiled.plan, compiled.library
    nodes = [(i, n) for i, n in enumerate(plan.graph.nodes) if n.op == "Slice"]
    coded = {row["index"] for row in lib.layers if not row["alias"]}
    views = [n.name for i, n in nodes if is_view(plan, n)]
    assert all((i in coded) != is_view(plan, n) for i, n in nodes), "a view has no code, a copy has"
    return views, [n.name for i, n in nodes if not is_view(plan, n)]


@pytest.mark.parametrize("shape,starts,steps,sizes,expect", [
    ((1, 6, 8), (0, 2, 0), (1, 1, 1), (1, 3, 8), 2 * 8 * 4),          # outermost non-unit axis
    ((1, 1, 6, 8), (0, 0, 5, 2), (1, 1, 1, 1), (1, 1, 1, 4), (5 * 8 + 2) * 4),   # one row, then a range
    ((6, 8), (4, 0), (-1, 1), (1, 8), 4 * 8 * 4),                      # one value: the step does not matter
    ((1, 6, 8), (0, 0, 0), (1, 1, 1), (1, 6, 8), 0),                   # all of it
    ((2, 6, 8), (0, 2, 0), (1, 1, 1), (2, 3, 8), None),                # a leading axis of 2
    ((1, 6, 8), (0, 0, 0), (1, 2, 1), (1, 3, 8), None),                # strided
    ((1, 6, 8), (0, 2, 0), (1, 1, 1), (1, 3, 4), None),                # cut on two axes
    ((1, 6, 8), (0, 5, 0), (1, -1, 1), (1, 3, 8), None),               # backwards
    ((1, 6, 8), (0, 2, 7), (1, 1, -1), (1, 3, 8), None),               # inner axis reversed
])
def test_which_slices_are_contiguous(shape, starts, steps, sizes, expect):
    b = G("one")
    x = b.input("x", shape)
    y = b.node("Slice", [x], sizes, starts=starts, steps=steps, sizes=sizes)
    g = b.done(y)
    assert slice_view(g, g.nodes[0]) == expect


def test_int8_view_needs_the_same_quantization():
    b = G("q", "int8")
    x = b.input("x", (1, 6, 8))
    y = b.slice(b.act(x), 0, 2)
    g = b.done(b.act(y))
    assert slice_view(g, g.nodes[1]) == 0
    g.tensors[y].quant = Quant(np.float32(0.1), np.int64(0))
    assert slice_view(g, g.nodes[1]) is None


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_split_feeding_two_branches(tmp_path, dtype):
    """relu, Split of the rows into 2 + 4 (two Slices), one activation per branch: no copy, the parts at their
    offsets inside the relu's output; arena no larger than with copies."""
    b = G(f"split2_{dtype}", dtype)
    h = b.act(b.input("x", (1, 6, 8)))
    s1, s2 = b.slice(h, 0, 2), b.slice(h, 2, 4)
    g = b.done(b.act(s1, "tanh"), b.act(s2, "sigmoid"))
    c = compile_graph(g, "m", options={"kernels": "reference"})
    views, copies = _slices(c)
    assert len(views) == 2 and not copies
    item = np.dtype(dtype).itemsize
    assert c.plan.offset_of(s1) == c.plan.offset_of(h) and c.plan.offset_of(s2) == c.plan.offset_of(h) + 16 * item
    assert "slice" not in c.library.files["m.c"]
    assert c.plan.arena_bytes <= schedule(g, views=False).arena_bytes
    _check_c(g, tmp_path)


def test_views_save_memory_on_a_split_heavy_graph(tmp_path):
    """A 2 KB tensor split into 4 row blocks, each reduced at once: copies need the tensor and a block together,
    views the tensor only."""
    b = G("split4")
    h = b.act(b.input("x", (1, 16, 32)))
    outs = [b.node("Reduce", [b.slice(h, 4 * k, 4)], (1, 1, 32), kind="max", axes=(1,), keepdims=True)
            for k in range(4)]
    g = b.done(*outs)
    views, copies = schedule(g), schedule(g, views=False)
    assert views.arena_bytes < copies.arena_bytes, (views.arena_bytes, copies.arena_bytes)
    c = compile_graph(g, "m")
    assert len(_slices(c)[0]) == 4 and c.plan.arena_bytes == views.arena_bytes
    _check_c(g, tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_slice_of_a_model_input(tmp_path, dtype):
    b = G(f"of_input_{dtype}", dtype)
    x = b.input("x", (1, 8, 5))
    s = b.slice(x, 3, 4)
    g = b.done(b.act(s))
    c = compile_graph(g, "m")
    assert _slices(c) == ([s], [])
    assert c.plan.offset_of(s) == c.plan.offset_of(x) + 3 * 5 * np.dtype(dtype).itemsize
    _check_c(g, tmp_path)


def test_slice_that_is_a_model_output_has_its_own_bytes(tmp_path):
    """A model output (directly, or through a Reshape of the slice) is copied; the other Slice of the same
    input stays a view."""
    b = G("as_output")
    h = b.act(b.input("x", (1, 6, 8)))
    s1, s2 = b.slice(h, 0, 3), b.slice(h, 3, 3)
    r = b.node("Reshape", [s2], (24,))
    t = b.act(s1, "sigmoid")
    g = b.done(t, r)
    c = compile_graph(g, "m")
    views, copies = _slices(c)
    assert views == [s1] and copies == [s2]
    plan = c.plan
    out_bytes = {(plan.offset_of(n), g.tensors[n].nbytes) for n in plan.graph.outputs}
    assert len(out_bytes) == 2
    lo, hi = plan.offset_of(plan.graph.outputs[1]), plan.offset_of(plan.graph.outputs[1]) + 96
    assert hi <= plan.offset_of(h) or lo >= plan.offset_of(h) + 192, "the output shares no byte with its input"
    _check_c(g, tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_input_of_a_live_view_is_not_written_over(tmp_path, dtype):
    """relu h; v = rows 1..3 of h (a view); tanh over h would be in place if h died there, but v is read after it,
    so the buffer lives on and the activation gets its own bytes."""
    b = G(f"live_view_{dtype}", dtype)
    h = b.act(b.input("x", (1, 4, 8)))
    v = b.slice(h, 1, 2)
    a = b.act(h, "tanh")
    g = b.done(b.node("Add", [b.slice(a, 0, 2), v], (1, 2, 8)))
    c = _forced_views(g)       # the copies plan is smaller here (a copy of v lets tanh write over h)
    plan = c.plan
    assert v in _slices(c)[0]
    step = next(i for i, n in enumerate(plan.graph.nodes) if n.outputs[0] == a)
    assert plan.in_place.get(step) is None or plan.in_place[step].input != h
    ha, hb = plan.offset_of(h), plan.offset_of(h) + g.tensors[h].nbytes
    aa, ab = plan.offset_of(a), plan.offset_of(a) + g.tensors[a].nbytes
    assert ab <= ha or aa >= hb
    xs = _inputs(g)
    ours = run_generated(c, list(xs))
    _check_c(g, tmp_path, xs, ours)


def test_a_layer_reading_a_buffer_and_its_view_does_not_write_over_it(tmp_path):
    """Add(h, row 1 of h broadcast): h dies at the Add, but the Add reads the view after writing rows 0-1; it must
    not write over h."""
    b = G("self_read")
    h = b.act(b.input("x", (1, 4, 8)))
    v = b.slice(h, 1, 1)
    g = b.done(b.node("Add", [h, v], (1, 4, 8)))
    c = _forced_views(g)       # the copies plan is as small (a copy of v lets the Add write over h)
    assert _slices(c)[0] == [v]
    assert not c.plan.in_place
    xs = _inputs(g)
    _check_c(g, tmp_path, xs, run_generated(c, list(xs)))


def test_later_in_place_layers_still_work_after_the_view_dies(tmp_path):
    """A chain after the split keeps its in-place decisions: each branch's activations write over their inputs."""
    b = G("chain")
    h = b.act(b.input("x", (1, 8, 16)))
    s1, s2 = b.slice(h, 0, 4), b.slice(h, 4, 4)
    y1 = b.act(b.act(b.node("Mul", [s1, s2], (1, 4, 16)), "sigmoid"), "tanh")
    g = b.done(y1)
    c = compile_graph(g, "m")
    assert len(_slices(c)[0]) == 2
    assert len(c.plan.in_place) >= 2
    _check_c(g, tmp_path)


# -- ONNX against onnxruntime -----------------------------------------------------------------------------------
def test_onnx_split_of_the_outermost_axis_is_free(tmp_path):
    """ONNX Split on the rows (H of NCHW, the outermost non-unit axis of the NHWC storage) and on a vector, each
    part feeding its own branch; the Slices are views, the model matches onnxruntime."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from test_onnx_helper_models import Builder
    from tinyc.compiler import compile_model
    from tinyc.verify import verify
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 3, 3, 3), b.weights(4)], pads=[1, 1, 1, 1])
    top, bottom = "top", "bottom"
    b.node("Split", [y, b.const([3, 5], np.int64)], [top, bottom], axis=2)
    outs = [b.node("Relu", [b.node("Conv", [top, b.weights(2, 4, 1, 1)])]),
            b.node("Sigmoid", [b.node("MaxPool", [bottom], kernel_shape=[1, 2], strides=[1, 2])])]
    v = b.node("Gemm", ["v", b.weights(12, 8)], transB=0)
    b.node("Split", [v, b.const([2, 2, 4], np.int64)], ["i", "f", "o"], axis=1)
    outs.append(b.node("Mul", [b.node("Sigmoid", ["i"]), b.node("Tanh", ["f"])]))
    outs.append(b.node("Relu", ["o"]))
    path = tmp_path / "split.onnx"
    onnx.save(b.model({"x": [1, 3, 8, 6], "v": [1, 12]}, outs, 13), str(path))
    c = compile_model(str(path))
    views, copies = _slices(c)
    assert len(views) == 5 and not copies, (views, copies)
    report = verify(str(path), samples=2)
    assert report["ok"], report["outputs"]
