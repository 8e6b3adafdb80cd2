"""Valid ONNX models on which tinyc once emitted wrong C or failed with an internal error (issue 17): each is
compiled and checked against onnxruntime with `verify` (under ASan + UBSan), or refused in one line.

Leading dimensions larger than 1 are made inside the models (a Reshape of a [1, n] input), since tinyc takes a
model input's first dimension for a batch; the ops must be exact on them all the same."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import AttributeProto, helper  # noqa: E402
from test_onnx_helper_models import Builder, _summary  # noqa: E402

from tinyc.compiler import compile_model  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.verify import verify  # noqa: E402


def _check(tmp_path, model, name):
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    report = verify(path)
    assert len(report["outputs"]) == len(model.graph.output)
    assert report["ok"], _summary(report)


def _refused(tmp_path, model, name, match):
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    with pytest.raises(TinycError, match=match):
        compile_model(path)


# -- ReduceMean: absent or empty axes reduce every axis (none with noop_with_empty_axes) ---------------------------
def _reduce_mean(b, x, opset, axes, **attrs):
    """ReduceMean with `axes` None (absent), [] (empty) or a list, as an attribute before opset 18, an input
    from 18 on."""
    if opset >= 18:
        ins = [x] if axes is None else [x, b.const(axes, np.int64)]
        return b.node("ReduceMean", ins, **attrs)
    y = b.node("ReduceMean", [x], **attrs)
    if axes is not None:   # helper.make_node cannot make an empty list attribute (no type to infer)
        b.nodes[-1].attribute.append(helper.make_attribute("axes", list(axes), attr_type=AttributeProto.INTS))
    return y


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [None, []], ids=["absent", "empty"])
def test_reduce_mean_without_axes_reduces_all(tmp_path, opset, keepdims, axes):
    """Once: empty axes reduced none and the C wrote 12 floats into a 1-float output (ASan overflow)."""
    b = Builder()
    r = b.node("Relu", ["x"])
    m = _reduce_mean(b, r, opset, axes, keepdims=keepdims)
    c = b.node("Conv", ["img", b.weights(4, 2, 3, 3)])                 # a channels-last value
    m2 = _reduce_mean(b, c, opset, axes, keepdims=keepdims)
    _check(tmp_path, b.model({"x": [1, 3, 4], "img": [1, 2, 5, 6]}, [m, m2], opset), f"rm_{opset}_{keepdims}")


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [None, []], ids=["absent", "empty"])
def test_reduce_mean_noop_with_empty_axes(tmp_path, keepdims, axes):
    """opset 18: noop_with_empty_axes=1 and no axes is the identity (keepdims does not matter)."""
    b = Builder()
    r = b.node("Relu", ["x"])
    m = _reduce_mean(b, r, 18, axes, keepdims=keepdims, noop_with_empty_axes=1)
    s = b.node("Sigmoid", [_reduce_mean(b, r, 18, [2, 0], keepdims=keepdims, noop_with_empty_axes=1)])
    _check(tmp_path, b.model({"x": [1, 3, 4]}, [m, s], 18), f"rm_noop_{keepdims}")


@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_axes_on_a_leading_dim_and_repeated(tmp_path, opset):
    """Axes that include a leading dimension > 1, negative and repeated axes (reduced once, as onnxruntime)."""
    b = Builder()
    r = b.node("Reshape", ["x", b.const([2, 3, 4], np.int64)])
    m0 = _reduce_mean(b, r, opset, [0], keepdims=0)
    m1 = _reduce_mean(b, r, opset, [1, -2], keepdims=1)
    m2 = _reduce_mean(b, r, opset, [-1, 0], keepdims=0)
    _check(tmp_path, b.model({"x": [1, 24]}, [m0, m1, m2], opset), f"rm_axes_{opset}")


# -- Clip with min > max: every output is max -----------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13, 17])
def test_clip_min_above_max_gives_max(tmp_path, opset):
    """Standalone and fused into a conv; min == max too."""
    b = Builder()
    c1 = b.node("Clip", ["x", b.const(1.0), b.const(-1.0)])
    c2 = b.node("Clip", ["x", b.const(0.25), b.const(0.25)])
    y = b.node("Conv", ["x", b.weights(3, 3, 3, 3)], pads=[1, 1, 1, 1])
    c3 = b.node("Clip", [y, b.const(0.5), b.const(-2.0)])
    _check(tmp_path, b.model({"x": [1, 3, 4, 5]}, [c1, c2, c3], opset), f"clip_{opset}")


# -- Pad: a computed constant_value is refused (it was taken as 0), a constant one is honoured ------------------
def _pad_model(value_from_input: bool, opset=13):
    b = Builder()
    value = b.node("ReduceMean", ["v"], keepdims=0) if value_from_input else b.const(0.75)
    p = b.node("Pad", ["x", b.const([0, 1, 2, 0, 2, 1], np.int64), value], mode="constant")
    return b.model({"x": [1, 3, 4], "v": [1, 2]} if value_from_input else {"x": [1, 3, 4]}, [p], opset)


def test_pad_with_computed_value_is_refused_in_one_line(tmp_path):
    _refused(tmp_path, _pad_model(True), "pad_computed", r"Pad '.*' takes its constant_value from a computed tensor")
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "tinyc.cli", "compile", str(tmp_path / "pad_computed.onnx"), "-o",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("error: Pad") and "constant pad value" in res.stderr


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_pad_with_constant_value(tmp_path, opset):
    _check(tmp_path, _pad_model(False, opset), f"pad_const_{opset}")


# -- Add/Sub/Mul/Div of computed tensors of different ranks (NumPy broadcasting) ---------------------------------
@pytest.mark.parametrize("opset", [13, 17])
def test_binary_ops_broadcast_across_ranks(tmp_path, opset):
    """[3,4,5] + [5], [5] - [3,4,5], [2,3,4,5] * [3,1,1], [2,3,4,5] / [4,5], a model input [1,5] + [3,4,5]; leading
    dims > 1 made inside the model. Once: an IndexError reported as a "malformed node"."""
    b = Builder()
    x3 = b.node("Reshape", ["x", b.const([3, 4, 5], np.int64)])
    x4 = b.node("Reshape", ["z", b.const([2, 3, 4, 5], np.int64)])
    v = b.node("Reshape", ["v", b.const([5], np.int64)])
    c = b.node("Reshape", ["c", b.const([3, 1, 1], np.int64)])
    d = b.node("Add", [b.node("Sigmoid", [b.node("Reshape", ["d", b.const([4, 5], np.int64)])]), b.const(0.5)])
    outs = [b.node("Add", [x3, v]), b.node("Sub", [v, x3]), b.node("Mul", [x4, c]), b.node("Div", [x4, d]),
            b.node("Div", [d, x4]), b.node("Mul", [c, b.node("Relu", [x3])]), b.node("Add", ["v", x3])]
    _check(tmp_path, b.model({"x": [1, 60], "z": [1, 120], "v": [1, 5], "c": [1, 3], "d": [1, 20]}, outs, opset),
           f"bcast_{opset}")


@pytest.mark.parametrize("opset", [13, 17])
def test_binary_ops_broadcast_lower_rank_onto_channels_last(tmp_path, opset):
    """A conv output (stored NHWC) with a computed [C,1,1] (squeeze-excite through a Reshape) and a computed [W]
    on the left; the lower-rank operand follows the conv output's layout."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 3, 3, 3), b.weights(4)], pads=[1, 1, 1, 1])
    s = b.node("Reshape", [b.node("GlobalAveragePool", [y]), b.const([4, 1, 1], np.int64)])
    m = b.node("Mul", [y, b.node("Sigmoid", [s])])
    w = b.node("Reshape", ["w", b.const([6], np.int64)])
    a = b.node("Add", [w, m])
    r = b.node("Conv", [b.node("Relu", [a]), b.weights(2, 4, 1, 1)])
    _check(tmp_path, b.model({"x": [1, 3, 5, 6], "w": [1, 6]}, [a, r], opset), f"bcast_nhwc_{opset}")


# -- Gemm with several rows: every C shape, transA / transB, alpha / beta ----------------------------------------
@pytest.mark.parametrize("c_shape", [(3, 5), (3, 1), (1, 5), (5,), (1,), (), None],
                         ids=lambda s: "noC" if s is None else "C" + "x".join(map(str, s)))
def test_gemm_with_several_rows(tmp_path, c_shape):
    """A [3, 4] (or [4, 3] with transA) x B -> [3, 5]; a C that differs per row is added after the product.
    Once: a [3, 5] C raised a ValueError reported as "malformed node", and transA was refused."""
    b = Builder()
    outs = []
    for trans_a in (0, 1):
        a = b.node("Reshape", ["x", b.const([4, 3] if trans_a else [3, 4], np.int64)])
        for trans_b in (0, 1):
            ins = [a, b.weights(*((5, 4) if trans_b else (4, 5)))]
            if c_shape is not None:
                ins.append(b.weights(*c_shape))
            outs.append(b.node("Gemm", ins, transA=trans_a, transB=trans_b, alpha=0.75, beta=-1.25))
    name = "gemm_rows_" + ("noC" if c_shape is None else "x".join(map(str, c_shape)))
    _check(tmp_path, b.model({"x": [1, 12]}, outs, 13), name)


def test_gemm_trans_a_of_a_single_row_and_flatten_of_two_rows(tmp_path):
    """transA on the model input [1, K] (so M = K), and Flatten of a channels-last value with 2 rows feeding
    Gemm and MatMul (the weight permutation that makes a 1-row Flatten free cannot serve 2 rows)."""
    b = Builder()
    g1 = b.node("Gemm", ["x", b.weights(1, 5)], transA=1)
    t = b.node("Transpose", [b.node("Reshape", ["z", b.const([2, 3, 4, 5], np.int64)])], perm=[0, 3, 1, 2])
    f = b.node("Flatten", [t])
    g2 = b.node("Gemm", [f, b.weights(6, 60), b.weights(6)], transB=1)
    m = b.node("MatMul", [f, b.weights(60, 4)])
    _check(tmp_path, b.model({"x": [1, 4], "z": [1, 120]}, [g1, g2, m], 13), "gemm_ta_flat2")


def test_gemm_with_c_of_the_wrong_rows_is_refused(tmp_path):
    b = Builder()
    a = b.node("Reshape", ["x", b.const([3, 4], np.int64)])
    b.node("Gemm", [a, b.weights(4, 5), b.weights(2, 5)], outputs=["y"])
    graph = helper.make_graph(b.nodes, "bad_c", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 12])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    _refused(tmp_path, model, "gemm_bad_c", r"C of shape \(2, 5\) does not broadcast to the output's \[3, 5\]")
