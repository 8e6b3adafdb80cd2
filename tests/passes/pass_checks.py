"""What every pass test checks: the pass leaves its argument alone, returns a valid graph with the same inputs
and outputs, and computes the same function (by the numpy interpreter)."""
import numpy as np

from tinyc import interp


def snapshot(g):
    """Everything a pass could mutate: structure and attrs (summary), tensor metadata and constant bytes."""
    return g.summary(), [(k, t.shape, t.dtype, t.source_name, None if t.data is None else t.data.tobytes())
                         for k, t in g.tensors.items()]


def assert_same_function(before, after, seed=0):
    rng = np.random.default_rng(seed)
    if before.state:        # streaming state: the same outputs frame after frame, and the same state after them
        assert sorted(before.state) == sorted(after.state)
        frames = [[rng.standard_normal(before.tensors[i].shape).astype(np.float32) for i in before.inputs]
                  for _ in range(3)]
        (a, sa), (b, sb) = interp.run_frames(before, frames), interp.run_frames(after, frames)
        for x, y in zip(a + [sa], b + [sb]):
            assert sorted(x) == sorted(y)
            for k in x:
                np.testing.assert_allclose(y[k], x[k], rtol=1e-5, atol=1e-5 * (1 + np.abs(x[k]).max()))
        return
    for _ in range(3):
        xs = [rng.standard_normal(before.tensors[i].shape).astype(np.float32) for i in before.inputs]
        a, b = interp.run(before, xs), interp.run(after, xs)
        assert list(a) == list(b)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5 * (1 + np.abs(a[k]).max()))


def checked(pass_fn, g):
    """Run `pass_fn` on `g` with every invariant asserted; returns the new graph."""
    before = snapshot(g)
    out = pass_fn(g)
    assert snapshot(g) == before, "the pass mutated its argument"
    out.validate()
    assert out.inputs == g.inputs and out.outputs == g.outputs
    assert_same_function(g, out)
    return out
