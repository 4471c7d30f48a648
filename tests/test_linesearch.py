"""Tests for :mod:`dhf.linesearch`."""
import math

import numpy as np
import pytest

from dhf import linesearch
from dhf.linesearch import armijo, backtrack


class CountingLoss:
    """A loss callable that records the arguments it was called with."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, arg):
        self.calls.append(arg)
        return self.fn(arg)


def kept_from(iterations):
    """Kept CG iterates ``(i, x_i)`` whose vector encodes its iteration number."""
    return [(i, np.full(3, float(i))) for i in iterations]


def table_loss(iterations, losses):
    """A counting loss returning ``losses[k]`` for the k-th kept iterate."""
    table = dict(zip(iterations, losses))
    return CountingLoss(lambda x: table[int(x[0])])


def reference_choice(losses):
    """Position picked by Martens' walk-back, as his ``nnet_train_2.m`` writes it over
    log-likelihoods ``ll = -loss`` (a NaN read as +inf, dhf's reading)::

        [ll] = computeLL(paramsp + p, ...)          % the last iterate
        for j = (length(chs)-1):-1:1
            lowll = computeLL(paramsp + chs{j}, ...)
            if ll > lowll, j = j+1; break; end
            ll = lowll;
        end
    """
    vals = [v if math.isfinite(v) else math.inf for v in losses]
    ll = -vals[-1]
    for j in range(len(vals) - 2, -1, -1):
        lowll = -vals[j]
        if ll > lowll:
            return j + 1
        ll = lowll
    return 0


ITERATIONS = [1, 2, 3, 5, 7, 10, 13]

BACKTRACK_TABLE = [
    pytest.param([7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 6, id="last-best"),
    pytest.param([7.0, 6.0, 1.0, 2.0, 3.0, 4.0, 5.0], 2, id="earlier-best"),
    pytest.param([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 0, id="first-best"),
    pytest.param([1.0, 5.0, 3.0, 4.0, 6.0, 6.5, 7.0], 2, id="non-monotone-local"),
    pytest.param([3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0], 1, id="ties-walk-on"),
    pytest.param([5.0, 4.0, 3.0, 1.0, 2.0, 2.5, math.nan], 3, id="nan-last"),
    # +inf is no worse than +inf: two non-finite iterates at the end are walked past
    pytest.param([5.0, 4.0, 3.0, 2.0, 1.0, math.nan, math.nan], 4, id="nan-tail"),
    pytest.param([5.0, math.nan, 3.0, 4.0, 5.0, 6.0, 7.0], 2, id="nan-blocks"),
    pytest.param([math.nan] * 7, 0, id="all-nan"),
    pytest.param([5.0, 4.0, 3.0, 2.0, 1.0, math.inf, math.nan], 4, id="inf-nan"),
]


@pytest.mark.parametrize("losses, expected", BACKTRACK_TABLE)
def test_backtrack_table(losses, expected):
    """Walk back from the last iterate while the previous one is no worse."""
    assert reference_choice(losses) == expected  # the reference agrees with the table
    loss = table_loss(ITERATIONS, losses)
    x, info = backtrack(kept_from(ITERATIONS), loss)
    assert info.iteration == ITERATIONS[expected]
    assert np.array_equal(x, np.full(3, float(ITERATIONS[expected])))
    chosen = losses[expected]
    assert info.loss == (chosen if math.isfinite(chosen) else math.inf)


@pytest.mark.parametrize("losses, expected", BACKTRACK_TABLE)
def test_backtrack_evaluation_count(losses, expected):
    """Each visited iterate costs one evaluation, plus the one that stopped the walk."""
    loss = table_loss(ITERATIONS, losses)
    _, info = backtrack(kept_from(ITERATIONS), loss)
    n = len(ITERATIONS)
    assert info.evaluations == (n - expected) + (1 if expected > 0 else 0)
    assert info.evaluations == len(loss.calls)
    visited = [int(x[0]) for x in loss.calls]
    assert visited == ITERATIONS[::-1][:info.evaluations]


def test_backtrack_random_tables_match_reference():
    """On random loss tables (with NaNs) backtrack agrees with the brute-force reference."""
    rng = np.random.default_rng(666)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        losses = list(rng.integers(0, 5, size=n).astype(float))
        for k in range(n):
            if rng.random() < 0.15:
                losses[k] = math.nan
        iterations = list(range(1, n + 1))
        _, info = backtrack(kept_from(iterations), table_loss(iterations, losses))
        assert info.iteration == iterations[reference_choice(losses)], losses


def test_backtrack_single_iterate():
    """With one kept iterate it is returned after a single evaluation."""
    loss = table_loss([4], [2.5])
    x, info = backtrack(kept_from([4]), loss)
    assert (info.iteration, info.loss, info.evaluations) == (4, 2.5, 1)
    assert np.array_equal(x, np.full(3, 4.0))


def brute_force_armijo(f, slope, c=1e-2, shrink=0.8, max_tries=60):
    """(step, tries) of the largest ``shrink**k`` passing Armijo, or (0.0, None)."""
    f0 = f(0.0)
    for k in range(max_tries):
        a = shrink**k
        if f(a) <= f0 + c * a * slope:
            return a, k + 1
    return 0.0, None


ARMIJO_CASES = [
    pytest.param(lambda a: (a - 0.3) ** 2, -0.6, id="min-at-0.3"),
    pytest.param(lambda a: (a - 2.0) ** 2, -4.0, id="min-at-2"),
    pytest.param(lambda a: (a - 0.5) ** 2, -1.0, id="min-at-0.5"),
    pytest.param(lambda a: 10.0 * (a - 0.01) ** 2, -0.2, id="min-at-0.01"),
    pytest.param(lambda a: (a - 0.3) ** 2 + 5.0 * a**4, -0.6, id="quartic"),
    pytest.param(lambda a: math.exp(-a) + 4.0 * a**2, -1.0, id="exp"),
]


@pytest.mark.parametrize("f, slope", ARMIJO_CASES)
def test_armijo_returns_largest_passing_power(f, slope):
    """The step is the largest ``0.8**k`` with ``f(a) <= f0 + 1e-2 a slope``."""
    expected, tries = brute_force_armijo(f, slope)
    assert tries is not None
    loss = CountingLoss(f)
    info = armijo(loss, f(0.0), slope)
    assert info.accepted
    assert info.step_size == pytest.approx(expected, rel=1e-12)
    assert info.tries == tries == len(loss.calls)
    assert info.loss == f(info.step_size)
    for k, a in enumerate(loss.calls):  # tried 1, 0.8, 0.64, ... in order
        assert a == pytest.approx(0.8**k, rel=1e-12)


@pytest.mark.parametrize("f, slope", ARMIJO_CASES)
def test_armijo_uses_first_loss(f, slope):
    """A given ``first_loss`` replaces the call ``loss(1.0)``; the result is unchanged."""
    expected, tries = brute_force_armijo(f, slope)
    loss = CountingLoss(f)
    info = armijo(loss, f(0.0), slope, first_loss=f(1.0))
    assert info.step_size == pytest.approx(expected, rel=1e-12)
    assert info.tries == tries
    assert len(loss.calls) == tries - 1
    assert 1.0 not in loss.calls


def test_armijo_trusts_first_loss_value():
    """``first_loss`` is believed even when ``loss(1.0)`` would have passed."""
    f = CountingLoss(lambda a: (a - 2.0) ** 2)
    assert armijo(f, 4.0, -4.0).step_size == 1.0
    f.calls.clear()
    info = armijo(f, 4.0, -4.0, first_loss=math.inf)
    assert info.accepted and info.step_size == pytest.approx(0.8)
    assert f.calls == [pytest.approx(0.8)]


def test_armijo_accepted_first_loss_spends_no_call():
    """An accepted ``first_loss`` means no evaluation at all."""
    loss = CountingLoss(lambda a: (a - 2.0) ** 2)
    info = armijo(loss, 4.0, -4.0, first_loss=1.0)
    assert (info.step_size, info.loss, info.tries, info.accepted) == (1.0, 1.0, 1, True)
    assert loss.calls == []


@pytest.mark.parametrize("slope", [0.0, 1.0, math.nan, -math.inf],
                         ids=["zero", "ascent", "nan", "-inf"])
def test_armijo_rejects_non_descent(slope):
    """A slope that is not finite and negative gives a rejected zero step, no calls."""
    loss = CountingLoss(lambda a: (a - 0.3) ** 2)
    info = armijo(loss, 0.09, slope)
    assert not info.accepted
    assert info.step_size == 0.0
    assert info.loss == 0.09
    assert loss.calls == []


def test_armijo_rejects_nonfinite_loss0():
    """A non-finite ``f(0)`` gives a rejected zero step."""
    info = armijo(lambda a: a, math.nan, -1.0)
    assert not info.accepted and info.step_size == 0.0


@pytest.mark.parametrize("max_tries", [1, 5, 60])
def test_armijo_all_nan_is_rejected(max_tries):
    """NaN at every step: rejected, step 0, loss0 reported, ``max_tries`` evaluations."""
    loss = CountingLoss(lambda a: math.nan)
    info = armijo(loss, 1.0, -1.0, max_tries=max_tries)
    assert not info.accepted
    assert info.step_size == 0.0
    assert info.loss == 1.0
    assert info.tries == max_tries == len(loss.calls)


def test_armijo_skips_nan_then_accepts():
    """NaN losses at large steps are skipped, not accepted."""
    f = lambda a: math.nan if a > 0.7 else (a - 0.3) ** 2  # noqa: E731
    expected, tries = brute_force_armijo(lambda a: (a - 0.3) ** 2 if a <= 0.7 else math.inf,
                                         -0.6)
    info = armijo(f, 0.09, -0.6)
    assert info.accepted
    assert info.step_size == pytest.approx(expected, rel=1e-12)
    assert info.tries == tries


def test_armijo_custom_constants():
    """``c`` and ``shrink`` are honoured (checked against the brute force)."""
    f = lambda a: (a - 0.3) ** 2  # noqa: E731
    expected, tries = brute_force_armijo(f, -0.6, c=0.5, shrink=0.5)
    info = armijo(f, 0.09, -0.6, c=0.5, shrink=0.5)
    assert info.step_size == pytest.approx(expected, rel=1e-12)
    assert info.tries == tries


def test_backtrack_argmin_takes_the_best_of_all_kept_iterates():
    """The release's rule: the lowest loss over every kept iterate, where Martens' walk
    back would stop at the first iterate that is no better."""
    kept = [(i, np.array([float(i)])) for i in (1, 11, 21, 31)]
    table = {1: 3.0, 11: 1.0, 21: 2.0, 31: 1.5}
    delta, info = linesearch.backtrack_argmin(kept, lambda x: table[int(x[0])])
    assert info.iteration == 11 and info.loss == 1.0 and info.evaluations == 4
    assert linesearch.backtrack(kept, lambda x: table[int(x[0])])[1].iteration == 31
    nan_last = {**table, 31: math.nan, 11: 5.0}
    _, info = linesearch.backtrack_argmin(kept, lambda x: nan_last[int(x[0])])
    assert info.iteration == 21
    ties = {1: 1.0, 11: 1.0, 21: 1.0, 31: 1.0}
    assert linesearch.backtrack_argmin(kept, lambda x: ties[int(x[0])])[1].iteration == 1


def test_armijo_with_c_zero_takes_the_first_decrease():
    """c = 0: the first α = 0.8^k with f(α) < f(0), however small the decrease (the
    release's line search); an equal loss is not a decrease."""
    f = {1.0: 2.0, 0.8: 2.0, 0.64: 1.999999}
    info = linesearch.armijo(lambda a: f.get(round(a, 12), 5.0), 2.0, -100.0, c=0.0)
    assert info.accepted and info.tries == 3 and info.step_size == pytest.approx(0.64)
    strict = linesearch.armijo(lambda a: f.get(round(a, 12), 5.0), 2.0, -100.0, c=1e-2)
    assert not strict.accepted
