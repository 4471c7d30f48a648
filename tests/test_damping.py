"""Tests for :mod:`dhf.damping`."""
import math

import numpy as np
import pytest

from dhf.damping import reduction_ratio, update_damping

BOOST, KEEP, DROP = "boost", "keep", "drop"


@pytest.mark.parametrize("rho, action", [
    pytest.param(-math.inf, BOOST, id="-inf"),
    pytest.param(math.nan, BOOST, id="nan"),
    pytest.param(math.inf, BOOST, id="+inf"),
    pytest.param(-1.0, BOOST, id="-1"),
    pytest.param(0.0, BOOST, id="0"),
    pytest.param(0.2499, BOOST, id="0.2499"),
    pytest.param(0.25, KEEP, id="0.25"),
    pytest.param(0.5, KEEP, id="0.5"),
    pytest.param(0.75, KEEP, id="0.75"),
    pytest.param(0.7501, DROP, id="0.7501"),
    pytest.param(1.0, DROP, id="1"),
    pytest.param(5.0, DROP, id="5"),
])
@pytest.mark.parametrize("damping", [1.0, 0.3, 12.5])
def test_update_damping_table(damping, rho, action):
    """rho < 1/4 or non-finite: x3/2; 1/4 <= rho <= 3/4: unchanged; rho > 3/4: x2/3."""
    new = update_damping(damping, rho)
    if action == KEEP:
        assert new == damping
    elif action == BOOST:
        assert new == damping * 3.0 / 2.0  # exact: 1.5 is a power-of-two fraction
    else:
        assert new == pytest.approx(damping * 2.0 / 3.0, rel=2 ** -52)


@pytest.mark.parametrize("rho", [0.1, 0.9])
def test_update_damping_exact_from_one(rho):
    """From 1.0 the factors are exactly 3/2 and 2/3."""
    assert update_damping(1.0, rho) == (1.5 if rho < 0.25 else 2.0 / 3.0)


def test_update_damping_clips_to_max():
    """A boost past ``max_damping`` (by default dhf-train's 1e8) is clipped to it."""
    assert update_damping(1e8, -math.inf) == 1e8
    assert update_damping(0.9e8, 0.0) == 1e8
    assert update_damping(10.0, 0.0, max_damping=12.0) == 12.0


def test_update_damping_clips_to_min():
    """A drop below ``min_damping`` is clipped to it."""
    assert update_damping(1e-6, 1.0) == 1e-6
    assert update_damping(1.2e-6, 1.0) == 1e-6
    assert update_damping(1.0, 1.0, min_damping=0.9) == 0.9


def test_update_damping_clips_unchanged_value_outside_bounds():
    """Even an unchanged lambda is brought inside ``[min_damping, max_damping]``."""
    assert update_damping(100.0, 0.5, max_damping=10.0) == 10.0
    assert update_damping(1e-9, 0.5) == 1e-6


def test_update_damping_custom_factors():
    """``boost`` and ``drop`` override the default factors."""
    assert update_damping(1.0, 0.0, boost=4.0) == 4.0
    assert update_damping(1.0, 1.0, drop=0.25) == 0.25


def test_update_damping_stays_within_bounds_over_many_steps():
    """Repeated boosts or drops saturate at the bounds and never leave them."""
    lam = 1.0
    for _ in range(100):
        lam = update_damping(lam, -1.0)
    assert lam == 1e8
    for _ in range(200):
        lam = update_damping(lam, 1.0)
    assert lam == 1e-6


@pytest.mark.parametrize("n, damping", [(1, 0.0), (5, 0.1), (30, 10.0)])
def test_reduction_ratio_is_one_on_exact_quadratic(n, damping):
    """For ``f(x) = 0.5 x'Ax + g'x`` the undamped model is exact, so rho == 1."""
    rng = np.random.default_rng(666)
    m = rng.standard_normal((n, n))
    A = m @ m.T + np.eye(n)
    g = rng.standard_normal(n)

    def f(x):
        return 0.5 * x @ A @ x + g @ x

    theta = rng.standard_normal(n)
    grad = A @ theta + g
    delta = -np.linalg.solve(A + damping * np.eye(n), grad)  # a damped Newton step
    rho = reduction_ratio(f(theta), f(theta + delta), grad @ delta, delta @ A @ delta)
    assert rho == pytest.approx(1.0, abs=1e-12)


def test_reduction_ratio_is_actual_over_predicted():
    """rho is (actual change) / (g'd + 0.5 d'Gd), including a loss that went up."""
    assert reduction_ratio(10.0, 9.0, -3.0, 2.0) == pytest.approx(1.0 / 2.0)
    assert reduction_ratio(10.0, 11.0, -3.0, 2.0) == pytest.approx(-1.0 / 2.0)


@pytest.mark.parametrize("before, after, gd, dgd", [
    pytest.param(1.0, math.nan, -1.0, 1.0, id="nan-after"),
    pytest.param(1.0, math.inf, -1.0, 1.0, id="inf-after"),
    pytest.param(math.inf, 1.0, -1.0, 1.0, id="inf-before"),
    pytest.param(1.0, 0.5, math.nan, 1.0, id="nan-gd"),
    pytest.param(1.0, 0.5, -1.0, math.inf, id="inf-dGd"),
    pytest.param(1.0, 0.5, -1.0, 2.0, id="model-flat"),
    pytest.param(1.0, 0.5, -1.0, 4.0, id="model-increase"),
    pytest.param(1.0, 0.5, 1.0, 0.0, id="ascent"),
])
def test_reduction_ratio_undefined_is_minus_inf(before, after, gd, dgd):
    """A non-finite input or a model predicting no decrease gives -inf."""
    assert reduction_ratio(before, after, gd, dgd) == -math.inf


def test_undefined_rho_boosts_damping():
    """The -inf of an undefined rho is treated as a failure by the update rule."""
    rho = reduction_ratio(1.0, math.nan, -1.0, 1.0)
    assert update_damping(2.0, rho) == 3.0
