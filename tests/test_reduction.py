"""Exact, grouping-independent sums (dhf.reduction) against exactly rounded references."""
import math
from fractions import Fraction

import numpy as np
import pytest

from dhf.reduction import (LOWEST, MAX_TERMS, ExactSum, dot, dot_of_pieces, dot_pieces,
                           largest_product, split, total, unpack)


def wide_values(rng, n):
    """Values over 32 orders of magnitude, both signs, zeros among them."""
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-20, 12, n)
    x[::17] = 0.0
    return x


def test_the_parts_add_up_to_the_value_down_to_the_lowest_unit(rng):
    x = wide_values(rng, 2000)
    parts = split(x)
    for value, column in zip(x, parts.T):
        assert abs(sum(Fraction(q) for q in column) - Fraction(value)) \
            <= Fraction(2) ** (LOWEST - 1)
    exact = np.array([1.5, -2.0 ** 59, 0.0, 3 * 2.0 ** LOWEST, -(2.0 ** 60 - 2.0 ** 8)])
    np.testing.assert_array_equal(total(split(exact)), exact)


def test_the_sum_does_not_depend_on_grouping_or_order_and_is_correctly_rounded(rng):
    """A float sum changes with the grouping; the exact one is the same bits for any
    partition into 'ranks' and any order, and within an ulp or two of math.fsum."""
    parts = [wide_values(rng, 50) * (1 + 1e3 * (i % 3 == 0)) for i in range(40)]
    results = set()
    for ranks in (1, 2, 3, 4, 7):
        order = rng.permutation(len(parts))
        per_rank = [ExactSum.of([parts[i] for i in order[r::ranks]], 50)
                    for r in range(ranks)]
        buf = sum(s.packed() for s in per_rank[::-1])  # what the Allreduce does
        results.add(unpack(buf, 50).tobytes())
    assert len(results) == 1
    exact = np.frombuffer(results.pop())
    reference = np.array([math.fsum(p[j] for p in parts) for j in range(50)])
    np.testing.assert_allclose(exact, reference, rtol=5e-16, atol=1e-28)
    floats = {sum(parts[i] for i in rng.permutation(len(parts))).tobytes()
              for _ in range(5)}
    assert len(floats) > 1  # plain float sums of these do depend on the order


def test_flags_ride_along_and_non_finite_values_stay_non_finite():
    acc = ExactSum(2)
    acc.add(np.array([1.0, 2.0]))
    buf = acc.packed(1.0, 0.0)
    assert buf[-2:].tolist() == [1.0, 0.0]
    np.testing.assert_array_equal(unpack(buf, 2), [1.0, 2.0])
    for bad in (np.inf, np.nan):
        one = ExactSum.of([np.array([bad, 0.0]), np.array([1.0, 1.0])])
        assert math.isnan(one.value[0]) and one.value[1] == 1.0


def test_join_concatenates_and_the_term_count_is_bounded():
    a, b = ExactSum.of([np.array([1.0, 2.0])]), ExactSum.of([np.array([3.0])])
    np.testing.assert_array_equal(unpack(ExactSum.join(a, b).packed(), 3), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        ExactSum.of([])
    big = ExactSum(1)
    big.terms = MAX_TERMS
    with pytest.raises(ValueError, match="terms"):
        big.add(np.ones(1))


def test_a_vector_of_another_length_is_refused():
    with pytest.raises(ValueError, match="8 values into parts of shape"):
        ExactSum(3).add(np.arange(8.0))


def test_a_refilled_sum_is_a_fresh_one(rng):
    """refill() empties the buffer an Allreduce in place overwrote (parts and flags)."""
    first, second = [wide_values(rng, 30) for _ in range(3)], [wide_values(rng, 30)]
    reused = ExactSum.of(first)
    buf = reused.packed(1.0)
    buf *= 2.0  # what a two-rank Allreduce in place leaves
    np.testing.assert_array_equal(reused.refill(second).packed(0.0),
                                  ExactSum.of(second).packed(0.0))
    assert reused.terms == 1


def test_dot_follows_the_vectors_own_scale(rng):
    """The products are scaled by a power of two before the bins: the result scales
    exactly with its inputs, and tiny vectors (a converged CG's last directions) keep
    their dot product instead of falling below the bins' lowest unit to 0."""
    a, b = rng.standard_normal(1000), rng.standard_normal(1000)
    value = dot(a, b)
    assert value == pytest.approx(math.fsum(a * b), rel=1e-15)
    for e in (-600, -200, -60, 60, 400):
        assert dot(np.ldexp(a, e), b) == math.ldexp(value, e)
    tiny = dot(a * 1e-16, b * 1e-16)  # products ~1e-32 < 2**-100
    assert tiny != 0.0 and tiny == pytest.approx(math.fsum(a * b) * 1e-32, rel=1e-14)
    assert dot(np.zeros(3), np.ones(3)) == 0.0
    assert math.isnan(dot(np.array([np.inf, 1.0]), np.array([0.0, 1.0])))


@pytest.mark.parametrize("n", [1, 255, 257, 2 ** 19 + 300])
def test_dot_is_the_exactly_rounded_sum_across_its_groups_and_lanes(rng, n):
    """Lengths that end inside a lane block and past a 2**19 group: the result is within
    an ulp of the exactly rounded sum of the products (math.fsum; two groups' values
    are added in float64, so two ulps there), and within a group the order of the
    elements cannot change a bit."""
    a = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
    b = rng.standard_normal(n)
    value = dot(a, b)
    reference = math.fsum(a * b)
    assert abs(value - reference) <= (1 if n <= 2 ** 19 else 2) * math.ulp(reference)
    if n <= 2 ** 19:
        order = rng.permutation(n)
        assert dot(a[order], b[order]) == value


@pytest.mark.parametrize("cuts", [[], [1], [2 ** 19], [300, 2 ** 19 - 1, 2 ** 19 + 7],
                                  [5, 700_000, 800_000, 2 ** 20 + 1]])
def test_a_dot_product_taken_in_pieces_is_the_whole_ones_bits(rng, cuts):
    """Vectors cut into pieces (ranks' slices; cuts inside a lane block, at and across
    the 2**19 groups, an empty piece), each piece's bins at its offset, the bins summed
    in another order and the largest product the pieces' maximum: the dot product of
    the whole, bit for bit; zero, Inf and NaN products as the whole's."""
    n = 2 ** 20 + 300
    a = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
    b = rng.standard_normal(n)
    bounds = [0] + sorted(cuts) + [n] + ([n] if cuts else [])  # the last piece empty
    pieces = list(zip(bounds[:-1], bounds[1:]))

    def in_pieces(a, b):
        largest = max(largest_product(a[lo:hi], b[lo:hi]) for lo, hi in pieces)
        bins = [dot_pieces(a[lo:hi], b[lo:hi], lo, n, largest) for lo, hi in pieces]
        return dot_of_pieces(np.sum(bins[::-1], axis=0), largest)

    whole = dot(a, b)
    assert whole == pytest.approx(math.fsum(a * b), rel=1e-15)
    assert in_pieces(a, b) == whole
    assert in_pieces(a * 1e-160, b * 1e-160) == dot(a * 1e-160, b * 1e-160)
    assert in_pieces(np.zeros(n), b) == 0.0
    a[n - 1] = np.inf
    assert math.isnan(in_pieces(a, b)) and math.isnan(dot(a, b))


def test_split_casts_float32_and_totals_its_parts(rng):
    x32 = (rng.standard_normal(1001) * 1e3).astype(np.float32)
    np.testing.assert_array_equal(total(split(x32)), x32.astype(np.float64))
    strided = np.arange(20.0)[::2]
    np.testing.assert_array_equal(total(split(strided)), strided)


def test_split_inside_jax_is_the_hosts_split_bit_for_bit(rng):
    """A looped JAX call splits its chunks where it computes them
    (:func:`dhf.reduction_jax.split_traced`): the same parts as the host's split, for values
    over the whole range, beyond it (a diverged step) and not finite, float32 and
    float64, and, added up over several vectors, the same as an ExactSum of them."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    from dhf.reduction import Parts
    from dhf.reduction_jax import split_traced

    x = wide_values(rng, 5000)
    x[:6] = [2.0 ** 61 + 3.0, -1e300, 2.0 ** (LOWEST - 3), 5e-324, np.inf, np.nan]
    traced = jax.jit(split_traced)
    with np.errstate(over="ignore"):  # 1e300 as float32: inf
        x32 = x.astype(np.float32)
    for values in (x, x32):
        np.testing.assert_array_equal(np.asarray(traced(values)), split(values))
    rows = wide_values(rng, 7 * 300).reshape(7, 300)

    @jax.jit
    def summed(stack):
        return jax.lax.fori_loop(0, 7, lambda i, p: p + split_traced(stack[i]),
                                 np.zeros((5, 300)))

    parts = Parts(np.asarray(summed(rows)), 7)
    one_by_one, at_once = ExactSum.of(rows), ExactSum(300)
    at_once.add(parts)
    np.testing.assert_array_equal(at_once.parts, one_by_one.parts)
    assert at_once.terms == 7 and parts.value.tolist() == one_by_one.value.tolist()


@pytest.mark.parametrize("n", [1, 1000, 2 ** 19 + 300])
def test_a_dot_product_on_a_jax_device_is_the_hosts_bit_for_bit(rng, n):
    """dhf.reduction_jax computes CG's dot products where its vectors live: the host's
    dot and dot_pieces, bit for bit, at every scale of normal products (XLA on a CPU
    flushes subnormal ones to zero) up to overflow, across the 2**19 groups, for a
    piece at an offset, and for zero, Inf and NaN products."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    from dhf import reduction_jax

    a = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
    b = rng.standard_normal(n)
    for e in (-900, -600, 0, 60, 900):
        x, y = np.ldexp(a, e // 2), np.ldexp(b, e - e // 2)
        assert reduction_jax.dot(jax.device_put(x), jax.device_put(y)) == dot(x, y)
    lo = n // 3
    largest = largest_product(a, b)
    assert reduction_jax.largest_product(jax.device_put(a), jax.device_put(b)) == largest
    np.testing.assert_array_equal(
        reduction_jax.dot_pieces(jax.device_put(a[lo:]), jax.device_put(b[lo:]), lo, n,
                                 largest), dot_pieces(a[lo:], b[lo:], lo, n, largest))
    for poison in (0.0, np.inf, np.nan):
        x = np.full(n, poison)
        assert np.array_equal(reduction_jax.dot(jax.device_put(x), jax.device_put(b)),
                              dot(x, b), equal_nan=True)


def test_cg_on_a_tiny_system_converges_without_a_false_negative_curvature():
    """A positive definite system whose every product lies below 2**-100: CG must
    solve it, not stop on p'Ap rounding to 0."""
    from dhf.cg import pcg

    A = np.diag([0.5, 0.25, 2.0])
    b = np.array([1e-15, -2e-15, 3e-16])
    x, info = pcg(lambda v: A @ v, b, max_iters=10, min_iters=5)
    assert info.status != "negative_curvature"
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-12)
