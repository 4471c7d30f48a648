"""Tests for :mod:`dhf.cg` against independent numpy references."""
import math
from fractions import Fraction

import numpy as np
import pytest

from dhf.cg import STATUS_MESSAGES, pcg, storage_points

SEED = 666
EPS = 5e-4  # Martens' epsilon, the default ``tol``


def random_spd(rng, n, cond):
    """Random SPD matrix ``Q diag(ev) Q'`` with eigenvalues log-spaced in ``[1, cond]``."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    ev = np.logspace(0.0, np.log10(cond), n)
    return (q * ev) @ q.T


def badly_scaled_spd(rng, n, scale):
    """``D S D`` with S well-conditioned SPD and D spanning ``[1, scale]``: Jacobi's
    target."""
    s = random_spd(rng, n, 10.0)
    d = np.logspace(0.0, np.log10(scale), n)
    rng.shuffle(d)
    return d[:, None] * s * d[None, :]


def quadratic(A, b, x):
    """Independent evaluation of ``0.5 x'Ax - b'x``."""
    return 0.5 * x @ (A @ x) - b @ x


def martens_rule_holds(phi, i, tol=EPS):
    """Martens' stopping test at iteration ``i``, recomputed from the spec."""
    k = max(10, math.ceil(0.1 * i))
    if i <= k:
        return False
    now, before = phi[i], phi[i - k]
    return now < 0.0 and before < 0.0 and (now - before) / now < k * tol


def reference_storage(max_iters, ratio=Fraction(13, 10)):
    """``{ceil(ratio**j)} <= max_iters`` in exact rational arithmetic."""
    points, j = set(), 0
    while math.ceil(ratio**j) <= max_iters:
        points.add(math.ceil(ratio**j))
        j += 1
    return points


class CountingMatvec:
    """``v -> A v`` that counts its calls."""

    def __init__(self, A):
        self.A, self.calls = A, 0

    def __call__(self, v):
        self.calls += 1
        return self.A @ v


SPD_CASES = [
    pytest.param(1, 1.0, id="n1-cond1"),
    pytest.param(2, 10.0, id="n2-cond1e1"),
    pytest.param(10, 1e2, id="n10-cond1e2"),
    pytest.param(50, 1e3, id="n50-cond1e3"),
    pytest.param(200, 1e4, id="n200-cond1e4"),
]


@pytest.mark.parametrize("n, cond", SPD_CASES)
def test_pcg_matches_solve(n, cond):
    """Run long enough, pcg solves random SPD systems like ``np.linalg.solve``."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, n, cond), rng.standard_normal(n)
    iters = 4 * n + 20
    x, info = pcg(lambda v: A @ v, b, min_iters=iters, max_iters=iters)
    expected = np.linalg.solve(A, b)
    assert info.status in ("converged", "max_iters")
    assert np.linalg.norm(x - expected) <= 1e-10 * cond * np.linalg.norm(expected)


@pytest.mark.parametrize("n, scale", [
    pytest.param(5, 1e2, id="n5-scale1e2"),
    pytest.param(40, 1e3, id="n40-scale1e3"),
    pytest.param(150, 1e4, id="n150-scale1e4"),
])
def test_pcg_jacobi_matches_solve(n, scale):
    """With ``precond = 1/diag(A)`` pcg still solves the system."""
    rng = np.random.default_rng(SEED)
    A, b = badly_scaled_spd(rng, n, scale), rng.standard_normal(n)
    expected = np.linalg.solve(A, b)
    x, info = pcg(lambda v: A @ v, b, precond=1.0 / np.diag(A), tol=1e-12,
                  max_iters=10 * n)
    assert info.status == "converged"
    assert np.allclose(x, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())


def test_jacobi_needs_fewer_products():
    """On a badly scaled system the diagonal preconditioner cuts the CG iterations."""
    rng = np.random.default_rng(SEED)
    A, b = badly_scaled_spd(rng, 150, 1e4), rng.standard_normal(150)
    # plain CG takes 900-1100 iterations here, as rounding (the BLAS's threads) goes
    _, jacobi = pcg(lambda v: A @ v, b, precond=1.0 / np.diag(A), max_iters=5000)
    _, plain = pcg(lambda v: A @ v, b, max_iters=5000)
    assert jacobi.status == plain.status == "converged"
    assert 2 * jacobi.iters < plain.iters


@pytest.mark.parametrize("use_precond", [False, True], ids=["plain", "jacobi"])
@pytest.mark.parametrize("n, cond", SPD_CASES)
def test_phi_non_increasing_and_exact(n, cond, use_precond):
    """``info.phi`` never increases and matches ``0.5 x'Ax - b'x`` at kept iterates."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, n, cond), rng.standard_normal(n)
    precond = 1.0 / np.diag(A) if use_precond else None
    x, info = pcg(lambda v: A @ v, b, precond=precond, max_iters=3 * n + 20)
    phi = np.asarray(info.phi)
    assert len(phi) == info.iters + 1
    assert phi[0] == 0.0
    scale = np.abs(phi).max()
    assert np.all(np.diff(phi) <= 1e-12 * scale)
    assert info.phi[-1] == pytest.approx(quadratic(A, b, x), rel=1e-9, abs=1e-12 * scale)
    for i, xi in info.kept:
        assert info.phi[i] == pytest.approx(quadratic(A, b, xi), rel=1e-9,
                                            abs=1e-12 * scale)


def test_warm_start_is_used():
    """``phi[0]`` is the model at ``x0``, and ``x0`` itself is not modified."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 20, 1e2), rng.standard_normal(20)
    x0 = rng.standard_normal(20)
    x0_copy = x0.copy()
    matvec = CountingMatvec(A)
    _, info = pcg(matvec, b, x0=x0, max_iters=5)
    assert info.phi[0] == pytest.approx(quadratic(A, b, x0), rel=1e-12)
    assert np.array_equal(x0, x0_copy)
    assert matvec.calls == info.iters + 1  # one extra product for the warm residual


def test_warm_start_at_float_solution_stays_at_minimum():
    """Starting at ``solve(A, b)`` gives ``phi == min`` from the start and stays there."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 30, 1e2), rng.standard_normal(30)
    xs = np.linalg.solve(A, b)
    phi_min = -0.5 * b @ xs
    x, info = pcg(lambda v: A @ v, b, x0=xs)
    assert info.phi[0] == pytest.approx(phi_min, rel=1e-12)
    assert np.allclose(info.phi, phi_min, rtol=1e-12, atol=0.0)
    assert np.allclose(x, xs, rtol=1e-10, atol=1e-12)


def test_warm_start_at_exact_solution_takes_no_step():
    """A zero warm-start residual returns ``x0`` without any CG iteration."""
    A = np.diag([2.0, 4.0])
    b = np.array([1.0, 2.0])
    x0 = np.array([0.5, 0.5])  # b - A x0 == 0 exactly
    x, info = pcg(lambda v: A @ v, b, x0=x0)
    assert np.array_equal(x, x0)
    assert info.iters <= 1
    assert info.phi[0] == quadratic(A, b, x0)


def test_warm_start_at_exact_solution_status():
    """A zero warm-start residual is reported as converged, not as negative curvature."""
    A = np.diag([2.0, 4.0])
    b = np.array([1.0, 2.0])
    _, info = pcg(lambda v: A @ v, b, x0=np.array([0.5, 0.5]))
    assert info.status == "converged"


@pytest.mark.parametrize("max_iters", [0, 1, 2, 10, 100, 250, 1000])
def test_storage_points_match_exact_ceilings(max_iters):
    """``storage_points(first=1)`` is theano-hf's ``{ceil(1.3**j)} <= max_iters``,
    computed here with fractions."""
    assert storage_points(max_iters, first=1) == reference_storage(max_iters)


def martens_storage(max_iters):
    """The iterations Martens' ``conjgrad_1.m`` stores, by its own loop: ``inext = 5``,
    ``imult = 1.3``; at iteration ``i == ceil(inext)`` store and ``inext = inext*imult``."""
    inext, stored = 5.0, []
    for i in range(1, max_iters + 1):
        if i == math.ceil(inext):
            stored.append(i)
            inext = inext * 1.3
    return stored


@pytest.mark.parametrize("max_iters", [4, 5, 30, 250, 300, 1000])
def test_the_default_grid_is_martens_conjgrad(max_iters):
    """pcg's default grid is Martens' (5, 7, 9, 11, 15, 19, 25, ...), not theano-hf's."""
    assert sorted(storage_points(max_iters)) == martens_storage(max_iters)
    assert martens_storage(250) == [5, 7, 9, 11, 15, 19, 25, 32, 41, 54, 69, 90, 117, 152,
                                    197]


def test_storage_points_small_values():
    """The first kept iterations and another ratio, spelled out."""
    assert storage_points(0) == set()
    assert storage_points(1, first=1) == {1}
    assert storage_points(10, first=1) == {1, 2, 3, 4, 5, 7, 9}
    assert storage_points(40, ratio=2.0, first=1) == {1, 2, 4, 8, 16, 32}


@pytest.mark.parametrize("max_iters", [1, 7, 9, 23, 60])
def test_kept_iterates_at_storage_points(max_iters):
    """Kept iterations are the exact ``ceil(5 * 1.3**j)`` ones reached (Martens'
    conjgrad_1 loop), plus the last one."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 300, 1e6), rng.standard_normal(300)
    x, info = pcg(lambda v: A @ v, b, max_iters=max_iters)
    assert info.status == "max_iters" and info.iters == max_iters
    expected = set(martens_storage(max_iters)) | {info.iters}
    kept_iters = [i for i, _ in info.kept]
    assert kept_iters == sorted(expected)
    assert np.array_equal(info.kept[-1][1], x)


def test_last_iterate_kept_when_stopping_off_grid():
    """An early stop at an iteration that is no storage point still keeps that iterate."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 500, 5.0), rng.standard_normal(500)
    x, info = pcg(lambda v: A @ v, b, store_ratio=1000.0, store_first=1)  # points: {1}
    assert info.status == "converged"
    assert info.iters > 1
    assert [i for i, _ in info.kept] == [1, info.iters]
    assert np.array_equal(info.kept[-1][1], x)


def test_kept_iterates_are_copies():
    """Kept iterates are distinct arrays, each matching its phi value."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 40, 1e3), rng.standard_normal(40)
    _, info = pcg(lambda v: A @ v, b, max_iters=30)
    xs = [x for _, x in info.kept]
    assert len({id(x) for x in xs}) == len(xs)
    assert not np.array_equal(xs[0], xs[-1])


def test_negative_curvature_on_first_direction_returns_start():
    """If ``b'Ab <= 0`` CG stops at once and returns the start point."""
    A = np.array([[1.0, 0.0], [0.0, -2.0]])
    b = np.array([0.5, 1.0])  # b'Ab = 0.25 - 2 < 0
    assert b @ A @ b < 0
    x, info = pcg(lambda v: A @ v, b)
    assert info.status == "negative_curvature"
    assert info.iters == 0
    assert np.array_equal(x, np.zeros(2))
    assert info.kept[-1][0] == 0


def test_negative_curvature_two_by_two_returns_first_iterate():
    """2x2 indefinite, ``b'Ab > 0``: the 2nd direction must be bad (Sylvester's law of
    inertia), so CG returns the first iterate ``(b'b / b'Ab) b``."""
    rng = np.random.default_rng(SEED)
    q, _ = np.linalg.qr(rng.standard_normal((2, 2)))
    A = (q * np.array([3.0, -1.0])) @ q.T
    b = q @ np.array([1.0, 0.2])  # mostly along the positive eigenvector
    assert b @ A @ b > 0
    x, info = pcg(lambda v: A @ v, b)
    assert info.status == "negative_curvature"
    assert info.iters == 1
    assert np.allclose(x, (b @ b) / (b @ A @ b) * b, rtol=1e-12)
    assert info.phi[-1] == pytest.approx(quadratic(A, b, x), rel=1e-12)


def test_negative_curvature_returns_iterate_before_bad_direction():
    """On a larger indefinite matrix x is the last iterate of the positive-curvature run."""
    rng = np.random.default_rng(SEED)
    n = 30
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    ev = np.concatenate([[-0.5], np.linspace(1.0, 10.0, n - 1)])
    A = (q * ev) @ q.T
    b = rng.standard_normal(n)
    x, info = pcg(lambda v: A @ v, b, min_iters=1000, max_iters=1000)
    assert info.status == "negative_curvature"
    assert 0 < info.iters < n
    assert info.kept[-1][0] == info.iters
    assert np.array_equal(info.kept[-1][1], x)
    truncated, tinfo = pcg(lambda v: A @ v, b, min_iters=1000, max_iters=info.iters)
    assert tinfo.status == "max_iters"
    assert np.array_equal(truncated, x)
    assert info.phi[-1] == pytest.approx(quadratic(A, b, x), rel=1e-10)


def test_nonfinite_matvec_at_start():
    """A matvec returning NaN ends CG with status ``"nonfinite"`` and no step."""
    b = np.ones(4)
    x, info = pcg(lambda v: np.full_like(v, np.nan), b)
    assert info.status == "nonfinite"
    assert info.iters == 0
    assert np.array_equal(x, np.zeros(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_nonfinite_matvec_midway_keeps_last_good_iterate(bad):
    """A non-finite product on the 4th call returns the 3rd iterate, finite."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 20, 1e3), rng.standard_normal(20)
    calls = []

    def matvec(v):
        calls.append(1)
        out = A @ v
        if len(calls) == 4:
            out[0] = bad
        return out

    x, info = pcg(matvec, b)
    assert info.status == "nonfinite"
    assert info.iters == 3
    assert np.all(np.isfinite(x))
    reference, _ = pcg(lambda v: A @ v, b, max_iters=3)
    assert np.array_equal(x, reference)


def test_nonfinite_warm_start_restarts_from_zero():
    """A warm start whose residual is not finite falls back to ``x0 = 0``."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 10, 1e2), rng.standard_normal(10)
    x0 = np.full(10, np.inf)
    with np.errstate(invalid="ignore"):
        x, info = pcg(lambda v: A @ v, b, x0=x0, max_iters=5)
    cold, cinfo = pcg(lambda v: A @ v, b, max_iters=5)
    assert info.phi[0] == 0.0
    assert np.array_equal(x, cold)
    assert info.phi == cinfo.phi


def test_max_iters_caps_products():
    """``max_iters`` caps the iterations and the curvature products."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 100, 1e6), rng.standard_normal(100)
    matvec = CountingMatvec(A)
    _, info = pcg(matvec, b, max_iters=7)
    assert info.status == "max_iters"
    assert info.iters == 7 and len(info.phi) == 8
    assert matvec.calls == 7


def test_min_iters_delays_the_stop():
    """No stop before ``min_iters``: the rule, already met, fires exactly there."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 500, 5.0), rng.standard_normal(500)
    _, early = pcg(lambda v: A @ v, b)
    assert early.status == "converged"
    min_iters = early.iters + 5
    _, info = pcg(lambda v: A @ v, b, min_iters=min_iters)
    assert info.status == "converged"
    assert info.iters == min_iters
    assert martens_rule_holds(info.phi, min_iters)


def test_martens_rule_stops_early_on_well_conditioned_system():
    """A well-conditioned system stops by relative progress, where the rule first holds."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 400, 10.0), rng.standard_normal(400)
    _, info = pcg(lambda v: A @ v, b, max_iters=250)
    i = info.iters
    assert info.status == "converged"
    assert i < 250
    assert martens_rule_holds(info.phi, i)
    assert not any(martens_rule_holds(info.phi, j) for j in range(1, i))


def test_martens_rule_gap_grows_with_iteration():
    """Past 100 iterations the gap is ``ceil(0.1 i) > 10`` and the rule is still exact."""
    rng = np.random.default_rng(SEED)
    d, b = np.logspace(0.0, 5.0, 2000), rng.standard_normal(2000)
    _, info = pcg(lambda v: d * v, b, max_iters=1000)
    i = info.iters
    assert info.status == "converged"
    assert math.ceil(0.1 * i) > 10
    assert martens_rule_holds(info.phi, i)
    assert not any(martens_rule_holds(info.phi, j) for j in range(1, i))
    # a fixed gap of 10 would have stopped earlier, so the growing gap matters here
    fixed_gap = [j for j in range(11, i) if info.phi[j] < 0 and info.phi[j - 10] < 0
                 and (info.phi[j] - info.phi[j - 10]) / info.phi[j] < 10 * EPS]
    assert fixed_gap


def test_callback_sees_every_iteration():
    """``callback(i, phi_i)`` is called once per iteration with the recorded phi."""
    rng = np.random.default_rng(SEED)
    A, b = random_spd(rng, 20, 1e2), rng.standard_normal(20)
    seen = []
    _, info = pcg(lambda v: A @ v, b, max_iters=12,
                  callback=lambda i, f: seen.append((i, f)))
    assert seen == list(enumerate(info.phi))[1:]


@pytest.mark.parametrize("x0", [None, np.arange(3.0)], ids=["cold", "warm"])
def test_zero_rhs_returns_zeros(x0):
    """``b == 0`` returns zeros, status ``"zero_rhs"``, and spends no product."""
    matvec = CountingMatvec(np.eye(3))
    x, info = pcg(matvec, np.zeros(3), x0=x0)
    assert info.status == "zero_rhs"
    assert info.iters == 0
    assert np.array_equal(x, np.zeros(3))
    assert matvec.calls == 0


def test_status_messages_cover_all_statuses():
    """Every status pcg can return has a message."""
    assert set(STATUS_MESSAGES) == {"converged", "max_iters", "negative_curvature",
                                    "nonfinite", "zero_rhs"}


def test_docstring_example():
    """The 2x2 example of the docstring."""
    A = np.array([[4.0, 1.0], [1.0, 3.0]])
    b = np.array([1.0, 2.0])
    x, _ = pcg(lambda v: A @ v, b, max_iters=10)
    assert np.allclose(x, np.linalg.solve(A, b))


def test_every_tenth_iterate_is_kept_with_store_every():
    rng = np.random.default_rng(3)
    A = random_spd(rng, 40, 1e3)
    b = rng.standard_normal(40)
    _, info = pcg(lambda v: A @ v, b, max_iters=35, tol=0.0, store_every=10)
    assert [i for i, _ in info.kept] == [1, 11, 21, 31, 35]
