"""Hand-built NCHW ONNX models (onnx.helper; opsets 11, 13 and 17) exercising corners of the ONNX frontend,
compiled by tinyc and checked against onnxruntime with `verify`."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tinyc.verify import verify  # noqa: E402

RNG_SEED = 7


class Builder:
    """Collects nodes and float32 initializers; `model()` makes a checked ModelProto."""

    def __init__(self, seed=RNG_SEED):
        self.nodes, self.inits = [], []
        self.rng = np.random.default_rng(seed)
        self._n = 0

    def const(self, value, dtype=np.float32, name=None) -> str:
        self._n += 1
        name = name or f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weights(self, *shape, scale=0.5) -> str:
        return self.const(self.rng.normal(0, scale, shape))

    def node(self, op, inputs, outputs=None, **attrs) -> str:
        self._n += 1
        outputs = outputs or [f"{op.lower()}{self._n}"]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{self._n}", **attrs))
        return outputs[0]

    def model(self, inputs: dict, outputs: list, opset: int):
        graph = helper.make_graph(
            self.nodes, "helper_model",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        # The graph outputs' shapes, as onnxruntime computes them (shape inference cannot always follow
        # shape sub-graphs at older opsets).
        import onnxruntime as ort
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {n: np.zeros(s, np.float32) for n, s in inputs.items()}
        for out, value in zip(model.graph.output, sess.run(None, feeds)):
            out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, value.shape))
        onnx.checker.check_model(model, full_check=True)
        return model


# -- models: each returns (builder-made ModelProto) for an opset ---------------------------------------------
def conv_auto_pad(opset):
    """auto_pad SAME_UPPER / SAME_LOWER with stride 2 on odd and even sizes, and asymmetric explicit pads."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(6, 3, 3, 3), b.weights(6)], auto_pad="SAME_UPPER", strides=[2, 2])
    y = b.node("Relu", [y])
    y = b.node("Conv", [y, b.weights(8, 6, 2, 4), b.weights(8)], auto_pad="SAME_LOWER", strides=[2, 1])
    y = b.node("Conv", [y, b.weights(4, 8, 3, 3)], pads=[0, 1, 2, 1])
    return b.model({"x": [1, 3, 9, 10]}, [y], opset)


def gemm_alpha_beta(opset):
    """Gemm with transB=0 and alpha/beta, then transB=1 with a [1, N] C, then MatMul + Add."""
    b = Builder()
    y = b.node("Gemm", ["x", b.weights(12, 8), b.weights(8)], transB=0, alpha=0.5, beta=2.0)
    y = b.node("Tanh", [y])
    y = b.node("Gemm", [y, b.weights(6, 8), b.weights(1, 6)], transB=1, alpha=1.5, beta=-0.75)
    y = b.node("MatMul", [y, b.weights(6, 5)])
    y = b.node("Add", [y, b.weights(5)])
    return b.model({"x": [1, 12]}, [y], opset)


def matmul_rank3(opset):
    """MatMul on a rank-3 input (a sequence of rows), bias Add, activation, second MatMul."""
    b = Builder()
    y = b.node("MatMul", ["x", b.weights(10, 7)])
    y = b.node("Add", [y, b.weights(7)])
    y = b.node("Sigmoid", [y])
    y = b.node("MatMul", [y, b.weights(7, 3)])
    return b.model({"x": [1, 6, 10]}, [y], opset)


def transpose_cancel(opset):
    """Transposes that cancel around a Conv and around elementwise ops: relabels, never wrong copies."""
    b = Builder()
    t = b.node("Transpose", ["x"], perm=[0, 2, 3, 1])
    t = b.node("Transpose", [t], perm=[0, 3, 1, 2])
    y = b.node("Conv", [t, b.weights(6, 4, 3, 3), b.weights(6)], pads=[1, 1, 1, 1])
    t = b.node("Transpose", [y], perm=[0, 2, 3, 1])
    t = b.node("Relu", [t])
    t = b.node("Add", [t, b.weights(6)])                     # broadcast over the last (channel) axis of NHWC
    t = b.node("Transpose", [t], perm=[0, 3, 1, 2])
    y2 = b.node("Conv", [t, b.weights(4, 6, 1, 1)])
    side = b.node("Transpose", [y2], perm=[0, 2, 1, 3])     # H <-> C: an output in a permuted layout
    return b.model({"x": [1, 4, 7, 5]}, [y2, side], opset)


def softmax_axis1(opset):
    """Softmax(axis=1) on a rank-4 tensor: per-channel before opset 13 means "flatten from axis 1"."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(5, 3, 3, 3), b.weights(5)], pads=[1, 1, 1, 1])
    s1 = b.node("Softmax", [y], axis=1)
    s2 = b.node("Softmax", [y], axis=-1)
    s3 = b.node("Softmax", [y], axis=2)
    return b.model({"x": [1, 3, 4, 6]}, [s1, s2, s3], opset)


def pad_maxpool(opset):
    """A constant Pad with a nonzero value before MaxPool/AveragePool: the pad value takes part in the windows."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 3, 1, 1)])
    p = b.node("Pad", [y, b.const([0, 0, 1, 2, 0, 0, 2, 1], np.int64), b.const(0.75)], mode="constant")
    m = b.node("MaxPool", [p], kernel_shape=[3, 3], strides=[2, 2])
    a = b.node("AveragePool", [p], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 0, 0, 1])
    z = b.node("Pad", [y, b.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64), b.const(-2.0)], mode="constant")
    c = b.node("Conv", [z, b.weights(2, 4, 3, 3)])          # a nonzero pad must not be fused into the conv
    return b.model({"x": [1, 3, 8, 9]}, [m, a, c], opset)


def concat_channels(opset):
    b = Builder()
    y1 = b.node("Conv", ["x", b.weights(3, 4, 1, 1), b.weights(3)])
    y2 = b.node("Conv", ["x", b.weights(5, 4, 3, 3), b.weights(5)], pads=[1, 1, 1, 1])
    y3 = b.node("MaxPool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    c = b.node("Concat", [y1, y2, y3], axis=1)
    y = b.node("Conv", [c, b.weights(6, 12, 3, 3)], strides=[2, 2])
    c2 = b.node("Concat", [y, b.node("Relu", [y])], axis=-3)
    return b.model({"x": [1, 4, 8, 8]}, [c2], opset)


def reshape_shape_subgraph(opset):
    """Conv -> Reshape whose shape is computed: Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) (torch style)."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 3, 3, 3), b.weights(4)], strides=[2, 2])
    y = b.node("Relu", [y])
    shape = b.node("Shape", [y])
    n = b.node("Gather", [shape, b.const(0, np.int64)], axis=0)
    if opset >= 13:
        n = b.node("Unsqueeze", [n, b.const([0], np.int64)])
    else:
        n = b.node("Unsqueeze", [n], axes=[0])
    target = b.node("Concat", [n, b.const([-1], np.int64)], axis=0)
    flat = b.node("Reshape", [y, target])
    y = b.node("Gemm", [flat, b.weights(5, 4 * 3 * 3), b.weights(5)], transB=1)
    return b.model({"x": [1, 3, 7, 7]}, [y], opset)


def div_sub_consts(opset):
    """Div/Sub with constants on either side, scalar and per-channel [C,1,1], on a channels-last value."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 2, 3, 3), b.weights(4)], pads=[1, 1, 1, 1])
    y = b.node("Sub", [b.const(2.0), y])                             # constant - x
    y = b.node("Div", [y, b.const(b.rng.uniform(0.5, 2.0, (4, 1, 1)))])  # x / per-channel constant
    y = b.node("Sub", [y, b.weights(4, 1, 1)])                       # x - per-channel constant
    d = b.node("Add", [b.node("Sigmoid", [y]), b.const(0.5)])        # denominators in [0.5, 1.5]
    y = b.node("Div", [b.weights(1, 4, 1, 1), d])                    # constant / x
    y = b.node("Div", [y, b.const(-3.0)])
    return b.model({"x": [1, 2, 5, 6]}, [y], opset)


def batchnorm_standalone(opset):
    """BatchNormalization on a model input (NCHW) and on a rank-2 Gemm output, with no conv to fold into."""
    b = Builder()

    def bn(x, c):
        return b.node("BatchNormalization", [x, b.const(b.rng.uniform(0.5, 1.5, c)), b.weights(c),
                                             b.weights(c), b.const(b.rng.uniform(0.5, 2.0, c))], epsilon=1e-3)
    y = bn("x", 3)
    y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.node("Flatten", [y])
    y = b.node("Gemm", [y, b.weights(6, 3 * 3 * 3)], transB=1)
    y = bn(y, 6)
    return b.model({"x": [1, 3, 6, 6]}, [y], opset)


def hardsigmoid_clip(opset):
    """HardSigmoid with custom alpha/beta, Clip (one bound omitted), LeakyRelu/Elu with custom alpha."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(6, 3, 3, 3, scale=1.0), b.weights(6)])
    h = b.node("HardSigmoid", [y], alpha=0.3, beta=0.4)
    c = b.node("Clip", [y, "", b.const(0.5)])                # max only
    c = b.node("Clip", [c, b.const(-1.0)])                   # min only
    lr = b.node("LeakyRelu", [y], alpha=0.25)
    e = b.node("Elu", [y], alpha=0.7)
    out = b.node("Concat", [h, c, lr, e], axis=1)
    return b.model({"x": [1, 3, 6, 6]}, [out], opset)


def squeeze_head(opset):
    """GlobalAveragePool -> Squeeze([2, 3]) -> Gemm -> Unsqueeze -> ReduceMean (attribute forms before opset 13)."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(8, 3, 3, 3), b.weights(8)], strides=[2, 2])
    y = b.node("GlobalAveragePool", [y])
    if opset >= 13:
        y = b.node("Squeeze", [y, b.const([2, 3], np.int64)])
    else:
        y = b.node("Squeeze", [y], axes=[2, 3])
    y = b.node("Gemm", [y, b.weights(4, 8), b.weights(4)], transB=1)
    if opset >= 13:
        y = b.node("Unsqueeze", [y, b.const([1], np.int64)])
    else:
        y = b.node("Unsqueeze", [y], axes=[1])
    y = b.node("ReduceMean", [y], axes=[2], keepdims=1) if opset < 18 else b.node(
        "ReduceMean", [y, b.const([2], np.int64)], keepdims=1)
    return b.model({"x": [1, 3, 9, 9]}, [y], opset)


def identity_outputs(opset):
    """Identity as graph outputs: of a computed value that is also an output, of an NCHW conv output, and of
    a model input."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 3, 3, 3), b.weights(4)], pads=[1, 1, 1, 1])
    r = b.node("Relu", [y])
    i1 = b.node("Identity", [r])
    i2 = b.node("Identity", [y])
    i3 = b.node("Identity", ["x"])
    return b.model({"x": [1, 3, 5, 5]}, [r, i1, i2, i3], opset)


def squeeze_excite(opset):
    """Squeeze-and-excitation: Mul/Div of a feature map by a computed per-channel [1,C,1,1] tensor."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(8, 3, 3, 3), b.weights(8)], pads=[1, 1, 1, 1])
    s = b.node("GlobalAveragePool", [y])
    s = b.node("Relu", [b.node("Conv", [s, b.weights(4, 8, 1, 1), b.weights(4)])])
    s = b.node("Sigmoid", [b.node("Conv", [s, b.weights(8, 4, 1, 1), b.weights(8)])])
    y = b.node("Mul", [y, s])
    d = b.node("Div", [y, b.node("Add", [s, b.const(1.0)])])
    return b.model({"x": [1, 3, 6, 7]}, [y, d], opset)


def flatten_to_dense(opset):
    """Flatten of an NCHW conv output feeding MatMul, Gemm after an activation, and also a graph output."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 3, 3, 3), b.weights(4)])
    f = b.node("Flatten", [y])
    m = b.node("MatMul", [f, b.weights(4 * 4 * 5, 6)])
    m2 = b.node("Gemm", [b.node("Relu", [f]), b.weights(3, 4 * 4 * 5)], transB=1)
    y2 = b.node("Conv", ["x", b.weights(2, 3, 3, 3)])
    f2 = b.node("Flatten", [y2])
    m3 = b.node("Gemm", [f2, b.weights(5, 2 * 4 * 5)], transB=1)
    return b.model({"x": [1, 3, 6, 7]}, [m, m2, m3, f2], opset)


def pool_variants(opset):
    """Pools with auto_pad SAME_UPPER/SAME_LOWER, ceil_mode with and without pads, count_include_pad."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 3, 1, 1)])
    outs = [b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
            b.node("AveragePool", [y], kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_LOWER"),
            b.node("AveragePool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
            b.node("AveragePool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 0], count_include_pad=1),
            b.node("AveragePool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1),
            b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
            b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[1, 1])]
    return b.model({"x": [1, 3, 8, 9]}, outs, opset)


def mixed_layouts(opset):
    """Elementwise ops and Concat between a model input (NCHW as stored) and a conv output (stored NHWC), a
    Pad over the channel axis, and a broadcast constant on a transposed value."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(3, 3, 3, 3), b.weights(3)], pads=[1, 1, 1, 1])
    a = b.node("Add", ["x", y])
    c = b.node("Concat", ["x", y], axis=1)
    s = b.node("Sub", [y, "x"])
    p = b.node("Pad", [y, b.const([0, 1, 0, 0, 0, 2, 1, 0], np.int64), b.const(0.5)], mode="constant")
    m = b.node("Mul", [b.node("Transpose", [y], perm=[0, 3, 2, 1]), b.weights(3)])
    return b.model({"x": [1, 3, 5, 4]}, [a, c, s, p, m], opset)


def dilated_and_1d(opset):
    """Dilated conv with asymmetric pads, grouped conv with stride (2, 1), 1-D convs with auto_pad / dilation."""
    b = Builder()
    y = b.node("Conv", ["x", b.weights(4, 3, 3, 3)], dilations=[2, 2], pads=[2, 1, 2, 3])
    y2 = b.node("Conv", ["x", b.weights(6, 1, 3, 3)], group=3, strides=[2, 1], pads=[2, 0, 1, 1])
    y3 = b.node("Conv", ["seq", b.weights(4, 2, 5)], auto_pad="SAME_UPPER", strides=[2])
    y4 = b.node("Conv", ["seq", b.weights(4, 2, 3)], pads=[2, 0], dilations=[2])
    return b.model({"x": [1, 3, 8, 9], "seq": [1, 2, 11]}, [y, y2, y3, y4], opset)


def reshape_round_trip(opset):
    """Gemm -> Reshape to NCHW -> Conv -> Reshape to rank 3 -> Softmax -> Transpose -> MatMul."""
    b = Builder()
    y = b.node("Gemm", ["x", b.weights(2 * 3 * 4, 8)], transB=1)
    r = b.node("Reshape", [y, b.const([1, 2, 3, 4], np.int64)])
    c = b.node("Conv", [r, b.weights(4, 2, 3, 3)], pads=[1, 1, 1, 1])
    r2 = b.node("Reshape", [c, b.const([1, 4, 12], np.int64)])
    t = b.node("Transpose", [b.node("Softmax", [r2], axis=-1)], perm=[0, 2, 1])
    mm = b.node("MatMul", [t, b.weights(4, 5)])
    return b.model({"x": [1, 8]}, [c, mm], opset)


MODELS = [conv_auto_pad, gemm_alpha_beta, matmul_rank3, transpose_cancel, softmax_axis1, pad_maxpool,
          concat_channels, reshape_shape_subgraph, div_sub_consts, batchnorm_standalone, hardsigmoid_clip,
          squeeze_head, identity_outputs, squeeze_excite, flatten_to_dense, pool_variants, mixed_layouts,
          dilated_and_1d, reshape_round_trip]

# Opsets per model: 13 and 17 for all; 11 where the older semantics or attribute forms matter.
OPSETS = {fn.__name__: (13, 17) for fn in MODELS}
OPSETS.update(softmax_axis1=(11, 13, 17), reshape_shape_subgraph=(11, 13, 17), squeeze_head=(11, 13, 17),
              hardsigmoid_clip=(11, 13, 17))

# (model, opset) -> reason, for known tinyc bugs (strict: the test fails once the bug is fixed).
XFAIL = {}

CASES = [pytest.param(fn, opset, id=f"{fn.__name__}-opset{opset}",
                      marks=[pytest.mark.xfail(reason=XFAIL[fn.__name__, opset], strict=True)]
                      if (fn.__name__, opset) in XFAIL else [])
         for fn in MODELS for opset in OPSETS[fn.__name__]]


def _summary(report) -> str:
    return "; ".join(f"output {o['index']}: max abs err {o['max_abs_err']:.3g} (tolerance {o['tolerance']:.3g})"
                     for o in report["outputs"])


@pytest.mark.parametrize("build,opset", CASES)
def test_helper_model(tmp_path, build, opset):
    path = str(tmp_path / f"{build.__name__}_op{opset}.onnx")
    onnx.save(build(opset), path)
    report = verify(path)
    assert len(report["outputs"]) == len(onnx.load(path).graph.output)
    assert report["ok"], _summary(report)


def test_softmax_opset_semantics_differ(tmp_path):
    """Guard for the opset-11 case above: the two semantics really give different results on this model."""
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 6)).astype(np.float32)
    outs = []
    for opset in (11, 13):
        sess = ort.InferenceSession(softmax_axis1(opset).SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {"x": x})[0])
    assert np.abs(outs[0] - outs[1]).max() > 1e-2


def test_ceil_mode_window_in_padding_is_dropped_like_onnxruntime(tmp_path):
    """onnx shape inference keeps a ceil_mode window that starts past the input (4 -> 3 rows here);
    onnxruntime drops it (4 -> 2). The shapes after the pool must follow onnxruntime."""
    b = Builder()
    p = b.node("MaxPool", ["x"], kernel_shape=[1, 1], strides=[2, 2], ceil_mode=1)
    y = b.node("Sigmoid", [b.node("Relu", [p])])
    graph = helper.make_graph(b.nodes, "ceil", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 5])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], b.inits)
    path = str(tmp_path / "ceil.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    report = verify(path)
    assert report["ok"], _summary(report)


def test_avgpool_ceil_mode_with_counted_pads_matches_onnxruntime(tmp_path):
    """AveragePool with explicit pads, count_include_pad=1 and a ceil_mode overhang: onnxruntime divides by the
    taps in the explicit padding but not by those in the overhang (the frontend pads with zeros first)."""
    b = Builder()
    a = b.node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
               count_include_pad=1)
    path = str(tmp_path / "avgpool_ceil_counted.onnx")
    onnx.save(b.model({"x": [1, 2, 8, 8]}, [a], 17), path)
    report = verify(path)
    assert report["ok"], _summary(report)
