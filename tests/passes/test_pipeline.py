"""tinyc.passes.optimize: the whole pipeline on a small model that exercises every pass."""
import numpy as np

from tinyc import interp
from tinyc.ir import Graph
from tinyc.passes import PIPELINE, describe, optimize
from pass_checks import snapshot


def model():
    rng = np.random.default_rng(7)
    g = Graph("small")
    shapes = {"x": (1, 6, 6, 2), "i": (1, 6, 6, 2), "p": (1, 8, 8, 2), "w": (4, 3, 3, 2),
              "c": (1, 6, 6, 4), "bn": (1, 6, 6, 4), "r": (1, 6, 6, 4), "r6": (1, 6, 6, 4), "f": (1, 144),
              "d": (1, 3), "s": (1, 3), "y": (1, 3)}
    for name, shape in shapes.items():
        g.add_tensor(name, shape)
    g.add_const("w_hwio", rng.standard_normal((3, 3, 2, 4)))
    bn = [g.add_const("gamma", rng.uniform(0.5, 2, 4)), g.add_const("beta", rng.standard_normal(4)),
          g.add_const("mean", rng.standard_normal(4)), g.add_const("var", rng.uniform(0.5, 2, 4))]
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Identity", ["x"], ["i"])
    g.add_node("Pad", ["i"], ["p"], pads=((0, 0), (1, 1), (1, 1), (0, 0)), value=0.0)
    g.add_node("Transpose", ["w_hwio"], ["w"], perm=(3, 0, 1, 2))
    g.add_node("Conv2D", ["p", "w"], ["c"], strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1,
               activation=None)
    g.add_node("BatchNorm", ["c"] + bn, ["bn"], epsilon=1e-3)
    g.add_node("Activation", ["bn"], ["r"], fn="relu")
    g.add_node("Activation", ["r"], ["r6"], fn="clip", lo=0.0, hi=6.0)
    g.add_node("Reshape", ["r6"], ["f"])
    g.add_node("Dense", ["f", g.add_const("dw", rng.standard_normal((3, 144)) / 10)], ["d"], activation=None)
    g.add_node("Softmax", ["d"], ["s"], axis=-1)
    g.add_node("Identity", ["s"], ["y"])
    return g


def test_optimize_every_pass_fires_and_function_is_kept():
    g = model()
    before = snapshot(g)
    out = optimize(g)
    assert snapshot(g) == before
    assert [n.op for n in out.nodes] == ["Conv2D", "Reshape", "Dense", "Softmax", "Reshape"]
    conv = out.nodes[0]
    assert conv.inputs[0] == "x" and tuple(conv.attrs["pads"]) == (1, 1, 1, 1) and len(conv.inputs) == 3
    assert conv.attrs["activation"] == {"fn": "clip", "lo": 0.0, "hi": 6.0} and conv.outputs == ["r6"]
    assert all(n.attrs.get("alias") for n in out.nodes if n.op == "Reshape")
    assert out.inputs == ["x"] and out.outputs == ["y"]
    used = {t for n in out.nodes for t in n.inputs + n.outputs}
    assert set(out.tensors) == used
    x = np.random.default_rng(0).standard_normal((1, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(interp.run(out, [x])["y"], interp.run(g, [x])["y"], rtol=1e-5, atol=1e-7)


def test_describe_lists_the_pipeline():
    names = [name for name, _ in describe()]
    assert names == ["drop_identity", "fold_constants", "fold_qdq", "fuse_layer_norm", "fuse_lp_normalize",
                     "fold_batchnorm", "fold_affine", "fuse_pad", "repeat_as_resize", "recurrent_last_step",
                     "fuse_activation", "alias_reshape"]
    assert names == [p.__name__ for p in PIPELINE]
    assert all(doc and "\n" not in doc for _, doc in describe())
