"""Compile time of the acceptance model (MobileNetV2 0.35 @ 144x144, Keras and ONNX), and of a wide graph (many
parallel branches, as multi-head attention or inception blocks have: the operator-order search's worst case),
imports excluded. Run: python bench/compile_time.py  (target: under 10 s each)."""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main():
    from test_mobilenet import SHAPE, calibrate_batchnorm

    from tinyc.compiler import compile_model, write_library
    from tinyc.keras_runtime import import_keras
    keras = import_keras()
    import tensorflow as tf
    import tf2onnx
    import onnx  # noqa: F401  (imports outside the timed region)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(input_shape=SHAPE[1:], alpha=0.35, weights=None, classes=10)
        calibrate_batchnorm(keras, model, np.random.default_rng(0))
        model.save(d / "mbv2.keras")
        spec = [tf.TensorSpec(SHAPE, tf.float32, name="image")]
        proto, _ = tf2onnx.convert.from_function(tf.function(lambda x: model(x), input_signature=spec),
                                                 input_signature=spec, opset=17)
        (d / "mbv2.onnx").write_bytes(proto.SerializeToString())
        print(f"{'model':<18} {'compile s':>9} {'MACs':>12} {'arena B':>10} {'lower bound B':>14} {'weights B':>10}")
        for fmt in ("keras", "onnx"):
            t0 = time.perf_counter()
            c = compile_model(str(d / f"mbv2.{fmt}"), "mbv2")
            write_library(c.library, str(d / f"out_{fmt}"), force=True)
            dt = time.perf_counter() - t0
            print(f"mbv2.{fmt:<13} {dt:>9.2f} {c.library.macs:>12,} {c.plan.arena_bytes:>10,} "
                  f"{c.plan.lower_bound:>14,} {c.library.weight_bytes:>10,}")


def wide_graph(branches: int, depth: int):
    """`branches` parallel chains of `depth` elementwise nodes over one input, summed: the order search's worst
    case (every interleaving of the chains is a valid order)."""
    from onnx import TensorProto, helper
    nodes, ends = [], []
    for b in range(branches):
        prev = "x"
        for d in range(depth):
            nodes.append(helper.make_node("Sigmoid" if d % 2 == 0 else "Tanh", [prev], [f"b{b}_{d}"]))
            prev = f"b{b}_{d}"
        ends.append(prev)
    nodes.append(helper.make_node("Sum", ends, ["y"]))
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def wide():
    import onnx

    from tinyc.compiler import compile_model
    with tempfile.TemporaryDirectory() as d:
        for branches, depth in ((16, 3), (64, 2), (100, 3)):
            path = str(Path(d) / "wide.onnx")
            onnx.save(wide_graph(branches, depth), path)
            t0 = time.perf_counter()
            c = compile_model(path, "wide")
            dt = time.perf_counter() - t0
            name = f"wide {branches}x{depth}"
            print(f"{name:<18} {dt:>9.2f} {c.library.macs:>12,} {c.plan.arena_bytes:>10,} {c.plan.lower_bound:>14,}")


if __name__ == "__main__":
    main()
    wide()
    main()
