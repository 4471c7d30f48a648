"""Exact, grouping-independent sums (dhf.reduction) against exactly rounded references."""
import math
from fractions import Fraction

import numpy as np
import pytest

from dhf.reduction import LIMIT, ExactSum, from_limbs, to_limbs, unpack


def wide_values(rng, n):
    """Values over 40 orders of magnitude, both signs, zeros among them."""
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-20, 12, n)
    x[::17] = 0.0
    return x


def test_limbs_hold_a_value_exactly_down_to_the_unit(rng):
    x = wide_values(rng, 2000)
    digits = to_limbs(x)
    for value, column in zip(x, digits.T):
        exact = sum(Fraction(int(d)) * Fraction(2) ** (-100 + 40 * k)
                    for k, d in enumerate(column))
        assert abs(exact - Fraction(value)) < Fraction(2) ** -100
    exact = np.array([1.5, -2.0 ** 59, 0.0, 3 * 2.0 ** -100, -(2.0 ** 60 - 2.0 ** 8)])
    np.testing.assert_array_equal(from_limbs(to_limbs(exact)), exact)
    assert from_limbs(to_limbs(np.array([3e-30])))[0] == 3 * 2.0 ** -100  # truncated


def test_the_sum_does_not_depend_on_grouping_or_order_and_is_correctly_rounded(rng):
    """A float sum changes with the grouping; the exact one is the same bits for any
    partition into 'ranks', and within 2 ulp of math.fsum (correctly rounded)."""
    parts = [wide_values(rng, 50) * (1 + 1e3 * (i % 3 == 0)) for i in range(40)]
    results = set()
    for ranks in (1, 2, 3, 4, 7):
        order = rng.permutation(len(parts))
        per_rank = [ExactSum.of([parts[i] for i in order[r::ranks]], 50)
                    for r in range(ranks)]
        buf = sum(s.packed() for s in per_rank)  # what the int64 Allreduce does
        results.add(unpack(buf, 50).tobytes())
    assert len(results) == 1
    total = np.frombuffer(results.pop())
    reference = np.array([math.fsum(p[j] for p in parts) for j in range(50)])
    np.testing.assert_allclose(total, reference, rtol=4e-16, atol=1e-28)
    floats = {sum(parts[i] for i in rng.permutation(len(parts))).tobytes()
              for _ in range(5)}
    assert len(floats) > 1  # plain float sums of these do depend on the order


def test_flags_ride_along_and_unrepresentable_terms_mark_the_sum():
    total = ExactSum(2)
    total.add(np.array([1.0, 2.0]))
    buf = total.packed(1, 0)
    assert buf[-3:].tolist() == [1, 0, 0]
    np.testing.assert_array_equal(unpack(buf, 2), [1.0, 2.0])
    for bad in (np.inf, np.nan, LIMIT):
        total.add(np.array([bad, 0.0]))
        assert unpack(total.packed(), 2) is None  # the caller falls back to plain sums
    assert math.isnan(total.plain[0]) and total.plain[1] == 2.0


def test_join_concatenates():
    a, b = ExactSum.of([np.array([1.0, 2.0])]), ExactSum.of([np.array([3.0])])
    np.testing.assert_array_equal(unpack(ExactSum.join(a, b).packed(), 3), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        ExactSum.of([])
