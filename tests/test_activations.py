"""dhf.activations.tanh: float32's rational form against NumPy's tanh, and its
derivatives."""
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import pushforward

from dhf.activations import tanh


def _compile(dtype):
    a = pt.vector("a", dtype=dtype)
    v = pt.vector("v", dtype=dtype)
    y = tanh(a)
    return pytensor.function([a, v], [y, pt.grad(y.sum(), a), pushforward(y, a, v)])


@pytest.mark.parametrize("dtype, tolerance", [("float32", 4e-7), ("float64", 1e-15)])
def test_tanh_matches_numpy_and_its_derivatives_are_one_minus_y_squared(dtype, tolerance):
    a = np.concatenate([np.linspace(-12, 12, 200001), [0.0, 1e-30, -1e-30, 40.0, -40.0]])
    a = a.astype(dtype)
    v = np.random.default_rng(0).normal(size=a.size).astype(dtype)
    y, dy, Ry = _compile(dtype)(a, v)
    exact = np.tanh(a.astype(np.float64))
    assert y.dtype == dtype
    np.testing.assert_allclose(y, exact, rtol=0, atol=tolerance)
    np.testing.assert_allclose(dy, 1 - exact**2, rtol=0, atol=3 * tolerance)
    np.testing.assert_allclose(Ry, (1 - exact**2) * v, rtol=0,
                               atol=3 * tolerance * np.abs(v).max())
    assert np.all(np.abs(y) <= 1) and y[a.size - 5] == 0.0  # odd, bounded, tanh(0) = 0


def test_float32_tanh_is_odd_and_monotone_to_within_its_error():
    a = np.linspace(0, 10, 100001).astype(np.float32)
    y, _, _ = _compile("float32")(np.concatenate([a, -a]), np.zeros(2 * a.size, np.float32))
    np.testing.assert_array_equal(y[:a.size], -y[a.size:])
    # Each value within 3.5e-7 of the monotone tanh: neighbours can be out of order by 2x
    # that.
    assert np.all(np.diff(y[:a.size]) >= -7e-7)
