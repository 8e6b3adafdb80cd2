"""Broken and hostile model files for the frontend fuzz tests (tests/test_fuzz_frontends.py), made from small
valid seed models: byte-level damage (truncation, random bytes, flipped bytes, wrong magic, the wrong format
behind an extension) for every format, and structured damage written through each format's own library
(onnx's protobuf API, TensorFlow's TFLite flatbuffer object API, the config.json inside a .keras archive):
zero, negative and huge dimensions, zero and negative strides, NaN/Inf weights, cycles, references to missing
tensors, duplicate names, bad quantization. Each case is (name, file extension, bytes)."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

HUGE = 1 << 31


# -- seeds ---------------------------------------------------------------------------------------------------
def seed_onnx() -> bytes:
    """Conv + BatchNorm + Relu + MaxPool + Flatten + Gemm + Softmax, NCHW 1x3x8x8, opset 13."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)
    inits = [init("w", 4, 3, 3, 3), init("b", 4), init("gamma", 4), init("beta", 4), init("mean", 4),
             numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "var"), init("fc_w", 5, 64),
             init("fc_b", 5)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], name="fc", transB=1),
             helper.make_node("Softmax", ["g"], ["y"], name="softmax", axis=1)]
    graph = helper.make_graph(nodes, "seed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def seed_keras_model():
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((8, 8, 3), name="image")
    h = L.Conv2D(4, 3, padding="same", name="conv")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU(name="relu")(h)
    h = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(h)
    h = L.AveragePooling2D(2, name="pool")(h)
    h = L.Flatten(name="flatten")(h)
    return keras.Model(x, L.Dense(5, activation="softmax", name="fc")(h), name="seed")


def seed_files(directory: Path) -> dict:
    """{kind: bytes} of the seed models: onnx, keras, h5, tflite (float32), tflite_int8."""
    import tensorflow as tf
    directory.mkdir(parents=True, exist_ok=True)
    model = seed_keras_model()
    model.save(directory / "seed.keras")
    model.save(directory / "seed.h5")
    out = {"onnx": seed_onnx(), "keras": (directory / "seed.keras").read_bytes(),
           "h5": (directory / "seed.h5").read_bytes()}
    out["tflite"] = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(1)
    conv.representative_dataset = lambda: ([rng.standard_normal((1, 8, 8, 3)).astype(np.float32)] for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    out["tflite_int8"] = conv.convert()
    return out


EXT = {"onnx": ".onnx", "keras": ".keras", "h5": ".h5", "tflite": ".tflite", "tflite_int8": ".tflite"}


# -- byte-level damage ---------------------------------------------------------------------------------------
def flip(data: bytes, positions, values) -> bytes:
    b = bytearray(data)
    for p, v in zip(positions, values):
        b[p % len(b)] ^= (v % 255) + 1          # never a no-op
    return bytes(b)


def byte_cases(kind: str, data: bytes, flips: int, seed: int = 0) -> list:
    ext = EXT[kind]
    rng = np.random.default_rng(seed)
    n = len(data)
    cases = [(f"{kind}/empty", ext, b""), (f"{kind}/one-byte", ext, data[:1])]
    for frac in (0.01, 0.1, 0.25, 0.5, 0.75, 0.99):
        cases.append((f"{kind}/truncated-{frac:g}", ext, data[:max(1, int(n * frac))]))
    cases.append((f"{kind}/last-byte-cut", ext, data[:-1]))
    cases.append((f"{kind}/trailing-garbage", ext, data + bytes(rng.integers(0, 256, 64, dtype=np.uint8))))
    for size in (16, 1000, n):
        cases.append((f"{kind}/random-{size}", ext, bytes(rng.integers(0, 256, size, dtype=np.uint8))))
    cases.append((f"{kind}/zeros", ext, bytes(n)))
    magic = bytearray(data)
    magic[:8] = b"\x00NOTAMOD"[: min(8, n)]
    cases.append((f"{kind}/wrong-magic", ext, bytes(magic)))
    if kind.startswith("tflite"):
        ident = bytearray(data)
        ident[4:8] = b"TFL2"
        cases.append((f"{kind}/wrong-identifier", ext, bytes(ident)))
    for k in range(flips):
        pos = rng.integers(0, n, 1 + (k % 3))
        cases.append((f"{kind}/flip-{k}", ext, flip(data, pos, rng.integers(0, 255, len(pos)))))
    return cases


def swapped_extensions(seeds: dict) -> list:
    """Each format's bytes behind another format's extension."""
    kinds = ["onnx", "keras", "h5", "tflite"]
    return [(f"swapped/{a}-as-{b}", EXT[b], seeds[a]) for a in kinds for b in kinds if a != b]


# -- structured ONNX damage ----------------------------------------------------------------------------------
def onnx_cases(data: bytes) -> list:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def edit(name, fn):
        m = onnx.load_from_string(data)
        fn(m)
        return (f"onnx/{name}", ".onnx", m.SerializeToString())

    def node(m, name):
        return next(n for n in m.graph.node if n.name == name)

    def attr(m, node_name, key, value):
        n = node(m, node_name)
        for a in n.attribute:
            if a.name == key:
                n.attribute.remove(a)
                break
        n.attribute.append(helper.make_attribute(key, value))

    def input_dim(k, v):
        def fn(m):
            m.graph.input[0].type.tensor_type.shape.dim[k].dim_value = v
        return fn

    def init_array(name, arr):
        def fn(m):
            for i, t in enumerate(m.graph.initializer):
                if t.name == name:
                    m.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, name))
        return fn

    def poison(value):
        def fn(m):
            t = next(t for t in m.graph.initializer if t.name == "w")
            a = numpy_helper.to_array(t).copy()
            a.flat[5] = value
            t.CopyFrom(numpy_helper.from_array(a, "w"))
        return fn

    def cycle(m):
        node(m, "conv").input[0] = "r"            # conv reads relu's output, which depends on conv

    def self_loop(m):
        node(m, "relu").input[0] = "r"

    def dup_output(m):
        node(m, "relu").output[0] = "c"

    def dup_init(m):
        m.graph.initializer.append(m.graph.initializer[0])

    def dup_node_name(m):
        node(m, "relu").name = "conv"

    def huge_channels(m):
        t = next(t for t in m.graph.initializer if t.name == "w")
        t.dims[0] = HUGE

    def dims_without_data(m):
        t = next(t for t in m.graph.initializer if t.name == "fc_w")
        del t.dims[:]
        t.dims.extend([HUGE, HUGE])

    def no_nodes(m):
        del m.graph.node[:]

    def no_outputs(m):
        del m.graph.output[:]

    def missing_output(m):
        m.graph.output[0].name = "nowhere"

    def unknown_op(m):
        node(m, "relu").op_type = "FrobnicateRelu"

    def custom_domain(m):
        node(m, "relu").domain = "com.example"

    def empty_input_name(m):
        node(m, "conv").input[0] = ""

    def string_weights(m):
        t = next(t for t in m.graph.initializer if t.name == "b")
        t.CopyFrom(helper.make_tensor("b", TensorProto.STRING, [4], [b"a", b"b", b"c", b"d"]))

    def int_input(m):
        m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64

    def opset(v):
        def fn(m):
            m.opset_import[0].version = v
        return fn

    def hostile_names(m):
        for n in m.graph.node:
            n.name = n.name + '"*/\n\\ \u202e' + "x" * 200

    rng = np.random.default_rng(3)
    cases = [
        edit("input-dim-zero", input_dim(2, 0)), edit("input-dim-huge", input_dim(1, HUGE)),
        edit("input-dim-negative", input_dim(3, -5)), edit("input-batch-huge", input_dim(0, HUGE)),
        edit("stride-zero", lambda m: attr(m, "conv", "strides", [0, 0])),
        edit("stride-negative", lambda m: attr(m, "conv", "strides", [-1, 2])),
        edit("pool-stride-zero", lambda m: attr(m, "pool", "strides", [0, 2])),
        edit("pads-negative", lambda m: attr(m, "conv", "pads", [-3, 1, 1, 1])),
        edit("pads-huge", lambda m: attr(m, "conv", "pads", [HUGE - 1, 1, 1, 1])),
        edit("dilation-zero", lambda m: attr(m, "conv", "dilations", [0, 1])),
        edit("kernel-shape-mismatch", lambda m: attr(m, "conv", "kernel_shape", [5, 5])),
        edit("pool-kernel-zero", lambda m: attr(m, "pool", "kernel_shape", [0, 2])),
        edit("pool-kernel-larger-than-input", lambda m: attr(m, "pool", "kernel_shape", [20, 20])),
        edit("group-zero", lambda m: attr(m, "conv", "group", 0)),
        edit("group-mismatch", lambda m: attr(m, "conv", "group", 2)),
        edit("softmax-axis-out-of-range", lambda m: attr(m, "softmax", "axis", 7)),
        edit("weights-nan", poison(np.nan)), edit("weights-inf", poison(np.inf)),
        edit("weights-wrong-shape", init_array("fc_w", rng.normal(size=(5, 63)).astype(np.float32))),
        edit("bias-wrong-length", init_array("b", np.zeros(7, np.float32))),
        edit("bn-var-negative", init_array("var", -np.ones(4, np.float32))),
        edit("weights-huge-channels", huge_channels), edit("weights-dims-without-data", dims_without_data),
        edit("cycle", cycle), edit("self-loop", self_loop), edit("duplicate-output", dup_output),
        edit("duplicate-initializer", dup_init), edit("duplicate-node-name", dup_node_name),
        edit("missing-input-tensor", lambda m: node(m, "fc").input.__setitem__(1, "no_such_weights")),
        edit("empty-input-name", empty_input_name), edit("no-nodes", no_nodes), edit("no-outputs", no_outputs),
        edit("output-never-computed", missing_output), edit("unknown-op", unknown_op),
        edit("custom-domain", custom_domain), edit("string-initializer", string_weights),
        edit("int64-input", int_input), edit("opset-1", opset(1)), edit("opset-999", opset(999)),
        edit("hostile-node-names", hostile_names),
    ]
    return cases


# -- structured TFLite damage --------------------------------------------------------------------------------
def tflite_cases(data: bytes, kind: str) -> list:
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S

    def edit(name, fn):
        m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(data, 0))
        fn(m)
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return (f"{kind}/{name}", ".tflite", bytes(b.Output()))

    def op_of(m, builtin):
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
        return next(op for op in m.subgraphs[0].operators if codes[op.opcodeIndex] == builtin)

    def conv(m):
        return op_of(m, S.BuiltinOperator.CONV_2D)

    def input_shape(shape):
        def fn(m):
            sg = m.subgraphs[0]
            sg.tensors[sg.inputs[0]].shape = np.array(shape, np.int32)
        return fn

    def conv_option(key, value):
        def fn(m):
            setattr(conv(m).builtinOptions, key, value)
        return fn

    def conv_weights(m):
        return m.subgraphs[0].tensors[conv(m).inputs[1]]

    def weights_shape(shape):
        def fn(m):
            conv_weights(m).shape = np.array(shape, np.int32)
        return fn

    def poison_weights(m):
        t = conv_weights(m)
        buf = m.buffers[t.buffer]
        raw = np.frombuffer(bytes(np.asarray(buf.data, np.uint8)), np.float32).copy()
        raw[3] = np.nan
        buf.data = np.frombuffer(raw.tobytes(), np.uint8)

    def truncate_buffer(m):
        buf = m.buffers[conv_weights(m).buffer]
        buf.data = np.asarray(buf.data, np.uint8)[:7]

    def set_index(op, field, k, value):       # the object API's index arrays are read-only views
        arr = np.array(getattr(op, field), np.int32)
        arr[k] = value
        setattr(op, field, arr)

    def input_index(value):
        def fn(m):
            set_index(conv(m), "inputs", 0, value)
        return fn

    def output_index_dup(m):
        ops = m.subgraphs[0].operators
        set_index(ops[1], "outputs", 0, ops[0].outputs[0])

    def cycle(m):
        ops = m.subgraphs[0].operators
        set_index(ops[0], "inputs", 0, ops[2].outputs[0])

    def buffer_index(m):
        conv_weights(m).buffer = 10 ** 6

    def opcode_index(m):
        m.subgraphs[0].operators[0].opcodeIndex = 200

    def unknown_builtin(m):
        c = m.operatorCodes[m.subgraphs[0].operators[0].opcodeIndex]
        c.builtinCode, c.deprecatedBuiltinCode = 250, 127     # 127: "see builtinCode"

    def no_subgraphs(m):
        m.subgraphs = []

    def no_operators(m):
        m.subgraphs[0].operators = []

    def graph_output_missing(m):
        m.subgraphs[0].outputs = np.array([9999], np.int32)

    def duplicate_names(m):
        for t in m.subgraphs[0].tensors:
            t.name = b"same"

    def hostile_names(m):
        for k, t in enumerate(m.subgraphs[0].tensors):
            t.name = ('*/"\\\n??=' + "\u00e9" * 50 + str(k)).encode()

    def quant(field, value):
        def fn(m):
            sg = m.subgraphs[0]
            q = sg.tensors[sg.inputs[0]].quantization
            if q is not None and getattr(q, field) is not None:
                setattr(q, field, np.array([value], np.float32 if field == "scale" else np.int64))
        return fn

    cases = [
        edit("input-dim-zero", input_shape([1, 0, 8, 3])), edit("input-dim-huge", input_shape([1, 8, 8, HUGE - 1])),
        edit("input-dim-negative", input_shape([1, -8, 8, 3])), edit("input-rank-1", input_shape([192])),
        edit("stride-zero", conv_option("strideH", 0)), edit("stride-negative", conv_option("strideW", -2)),
        edit("dilation-zero", conv_option("dilationHFactor", 0)),
        edit("padding-unknown", conv_option("padding", 7)),
        edit("activation-unknown", conv_option("fusedActivationFunction", 42)),
        edit("weights-shape-huge", weights_shape([HUGE - 1, 3, 3, 3])),
        edit("weights-shape-mismatch", weights_shape([4, 3, 3, 2])),
        edit("weights-buffer-truncated", truncate_buffer),
        edit("input-index-out-of-range", input_index(12345)), edit("input-index-negative", input_index(-7)),
        edit("output-written-twice", output_index_dup), edit("cycle", cycle),
        edit("buffer-index-out-of-range", buffer_index), edit("opcode-index-out-of-range", opcode_index),
        edit("unknown-builtin", unknown_builtin), edit("no-subgraphs", no_subgraphs),
        edit("no-operators", no_operators), edit("graph-output-missing", graph_output_missing),
        edit("duplicate-tensor-names", duplicate_names), edit("hostile-tensor-names", hostile_names),
    ]
    if kind == "tflite":
        cases.append(edit("weights-nan", poison_weights))
    else:
        cases += [edit("input-scale-zero", quant("scale", 0.0)), edit("input-scale-nan", quant("scale", np.nan)),
                  edit("input-scale-negative", quant("scale", -0.5)),
                  edit("input-zero-point-out-of-range", quant("zeroPoint", 1000))]
    return cases


# -- structured Keras damage ---------------------------------------------------------------------------------
def keras_cases(data: bytes) -> list:
    def edit(name, fn):
        src = zipfile.ZipFile(io.BytesIO(data))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for item in src.infolist():
                body = src.read(item.filename)
                if item.filename == "config.json":
                    cfg = json.loads(body)
                    fn(cfg)
                    body = json.dumps(cfg).encode()
                dst.writestr(item, body)
        return (f"keras/{name}", ".keras", out.getvalue())

    def layer(cfg, name):
        return next(x for x in cfg["config"]["layers"] if x["config"]["name"] == name)

    def set_(name, key, value):
        def fn(cfg):
            layer(cfg, name)["config"][key] = value
        return fn

    def input_shape(shape):
        def fn(cfg):
            c = layer(cfg, "image")["config"]
            c["batch_shape"] = shape
        return fn

    def unknown_class(cfg):
        layer(cfg, "relu")["class_name"] = "FrobnicateLayer"

    def dangling(cfg):
        layer(cfg, "fc")["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = "no_such_layer"

    def drop_weights_file(cfg):
        cfg["config"]["layers"].append(dict(layer(cfg, "fc")))

    return [
        edit("stride-zero", set_("conv", "strides", [0, 0])), edit("stride-negative", set_("dw", "strides", [-1, 2])),
        edit("kernel-zero", set_("conv", "kernel_size", [0, 3])), edit("filters-huge", set_("conv", "filters", HUGE)),
        edit("units-zero", set_("fc", "units", 0)), edit("pool-size-zero", set_("pool", "pool_size", [0, 2])),
        edit("input-dim-zero", input_shape([None, 0, 8, 3])),
        edit("input-dim-huge", input_shape([None, 8, 8, HUGE])),
        edit("unknown-layer-class", unknown_class), edit("dangling-inbound-layer", dangling),
        edit("duplicate-layer", drop_weights_file),
    ]


def all_cases(seeds: dict, flips: int = 20) -> list:
    cases = []
    for kind, data in seeds.items():
        cases += byte_cases(kind, data, flips, seed=len(cases))
    cases += swapped_extensions(seeds)
    cases += onnx_cases(seeds["onnx"])
    cases += tflite_cases(seeds["tflite"], "tflite") + tflite_cases(seeds["tflite_int8"], "tflite_int8")
    cases += keras_cases(seeds["keras"])
    names = [c[0] for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases
