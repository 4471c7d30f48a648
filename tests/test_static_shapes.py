"""dhf.static_shapes: the JAX backend's functions, compiled once per input shape, with the
graph's output dtypes."""
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from dhf.static_shapes import StaticShapeFunction

pytest.importorskip("jax")


def test_one_compilation_per_shape_and_the_graphs_dtypes():
    """A scan over the rows of x, whose gradient sizes buffers from x's shape (what a
    traced shape breaks under jax.jit), in float32 with a float64 constant mixed in."""
    x = pt.matrix("x", dtype="float32")
    W = pytensor.shared(np.full((3, 2), 0.5, dtype="float32"), name="W")
    h = pytensor.scan(lambda row, acc: pt.tanh(row @ W + acc), sequences=[x],
                      outputs_info=[pt.zeros(2, dtype="float32")], return_updates=False)
    total = (h[-1].sum() * np.float64(2.0)).astype("float32")
    fn = StaticShapeFunction([x], [total, pytensor.grad(total, W)], "JAX", params=[W])
    reference = pytensor.function([x], [total, pytensor.grad(total, W)])
    rng = np.random.default_rng(0)
    for rows in (4, 7, 4):
        data = rng.standard_normal((rows, 3)).astype("float32")
        got, want = fn(data), reference(data)
        assert [g.dtype for g in got] == ["float32", "float32"]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5)
    assert fn.shapes_compiled == 2
