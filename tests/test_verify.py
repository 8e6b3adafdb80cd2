"""`verify --per-layer` must name the first layer that diverges: break one kernel on purpose and see."""
import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tinyc.ops import REGISTRY, binary
from tinyc.verify import verify


def residual_model(path):
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["a"], name="residual_add"),
             helper.make_node("Sigmoid", ["a"], ["y"], name="head")]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return str(path)


def test_per_layer_names_the_first_diverging_layer(tmp_path, monkeypatch):
    path = residual_model(tmp_path / "res.onnx")
    good = verify(path, per_layer=True)
    assert good["ok"] and good["first_divergence"] is None
    # relu fuses into the conv, the sigmoid into the add; y_t turns the NHWC result into the model's NCHW.
    assert [row["layer"] for row in good["layers"]] == ["conv", "residual_add", "y_t"]

    def broken_add(k):   # an Add kernel that subtracts
        template, variables, macs = binary.float_kernel(k)
        variables["loops"] = variables["loops"].replace(" + ", " - ").replace("] + ", "] - ")
        return template, variables, macs
    monkeypatch.setitem(REGISTRY, "Add", dataclasses.replace(REGISTRY["Add"], float_kernel=broken_add))
    bad = verify(path, per_layer=True)
    assert not bad["ok"]
    assert bad["first_divergence"] == "residual_add"
    assert [row["ok"] for row in bad["layers"]] == [True, False, False]
