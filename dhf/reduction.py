"""Sums whose value does not depend on how the terms are grouped: the same bits at any
rank count.

Floating-point addition is not associative, so a batch's gradient summed as two ranks'
partial sums differs in its last bits from the same gradient summed on one rank, and
CG, which loses orthogonality, amplifies that difference until runs part.  dhf makes
every reduction exact instead:

- the batch is cut into **fixed global chunks** (:meth:`dhf.worker.Worker.plan`), whose
  rows and order do not depend on the number of ranks, and each chunk's sum is computed
  by one rank with the same code, so it has the same bits wherever it is computed;
- each chunk sum ``x`` is split into ``BINS`` parts, ``x ≈ Σ_k q_k``, where ``q_k`` is a
  multiple of the bin's unit ``u_k = 2**(LOWEST + k·BIN_BITS)`` below ``2**BIN_BITS``
  units (the error-free "extraction" ``q = (r + M) − M`` with ``M = 1.5·2**52·u_k``,
  Demmel & Nguyen 2013, "Fast reproducible floating-point summation");
- a bin's parts are integers times one unit, so float64 adds them **exactly** while
  fewer than ``2**(52 − BIN_BITS)`` of them are added, in any order: across chunks, and
  across ranks in an ordinary float64 ``Allreduce``;
- the bins' totals are added, smallest first, identically on every rank.

With 5 bins of 32 bits from ``2**-100`` the range is ``2**-100 ≤ |x| < 2**60`` (a part
of a value below the lowest unit is dropped: ~1e-30 absolute, far below float64's own
rounding of any sum that matters), and up to ``2**20`` chunks add exactly.  Larger
values (a diverged step) are still summed, only not exactly; Inf and NaN come out as
NaN, so a non-finite sum is still seen as one.

:func:`dot` is the same idea inside one vector: a dot product whose bits depend on the
two vectors alone, not on the BLAS or the CPU that computes it, so that every rank takes
the same branch (CG's stop, Armijo's test, the damping rule) from the same numbers.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

BINS = 5
BIN_BITS = 32
LOWEST = -100
#: The most chunks one sum may add exactly (each bin's running total stays an exact
#: float64 integer multiple of its unit).
MAX_TERMS = 2 ** (52 - BIN_BITS)
#: Units of the bins, and the extraction constants ``1.5 · 2**52 · unit``, top bin first.
_UNITS = [2.0 ** (LOWEST + k * BIN_BITS) for k in range(BINS - 1, -1, -1)]
_SHIFTERS = np.array([1.5 * 2.0 ** 52 * u for u in _UNITS])


#: Elements summed exactly at once by :func:`dot` (each part below ``2**32`` units, so a
#: group's bin sums stay exact float64 integers of units).
_DOT_GROUP = 2 ** 19
#: Products taken apart at once by :func:`dot`: one accumulator per bin and position,
#: so that the loop has no carried sum and compiles to vector instructions.
_LANES = 256


def split(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``(BINS, n)`` parts of ``x``, top bin first: ``q_k`` is the remainder so far
    rounded to a multiple of ``u_k`` (exact: ``r + M`` lands where the float grid's
    spacing is ``u_k``, and ``r − q`` is representable), added to ``out`` if given.
    float32 values are cast one at a time, not as a float64 copy of ``x``."""
    x = np.ascontiguousarray(x).ravel()
    parts = np.zeros((BINS, x.size)) if out is None else out
    if parts.shape != (BINS, x.size):
        raise ValueError(f"split: {x.size} values into parts of shape {parts.shape}")
    _split_into(x, parts)
    return parts


@numba.njit(cache=True, nogil=True)
def _add_parts(r, parts, i):
    """``parts[k, i] += q_k(r)`` for every bin, top first: the extraction of :func:`split`
    (Inf − Inf: a non-finite value becomes NaN in the lower bins)."""
    for k in range(BINS):
        q = (r + _SHIFTERS[k]) - _SHIFTERS[k]
        r -= q
        parts[k, i] += q


@numba.njit(cache=True, nogil=True)
def _split_into(x, parts):
    """``parts[k, i] += q_k(x_i)`` (:func:`split`); one pass over ``x`` and ``parts``."""
    for i in range(x.size):
        _add_parts(np.float64(x[i]), parts, i)


def total(parts: np.ndarray) -> np.ndarray:
    """The float64 value of summed parts ``(BINS, n)``: the bins added smallest first
    (the same operations, so the same bits, wherever the same parts are held)."""
    return _total(np.ascontiguousarray(parts))


@numba.njit(cache=True, nogil=True)
def _total(parts):
    value = np.empty(parts.shape[1])
    for i in range(parts.shape[1]):
        v = 0.0
        for k in range(BINS - 1, -1, -1):
            v += parts[k, i]
        value[i] = v
    return value


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``Σ a_i b_i`` as a Python float, the same bits on any CPU and BLAS: the products
    (each correctly rounded) are split into bins and each bin is summed exactly, in any
    order, a group of ``2**19`` at a time; the groups' values are added in order.  Two
    compiled passes over the vectors, several times NumPy's ``dot`` (whose bits depend
    on the BLAS; ``scripts/bench/exact_sums.py``).

    The products are first scaled by the power of two that brings the largest below
    ``2**59`` (exact), so that the bins' range follows the vectors' own: a dot product
    of tiny vectors (CG's last directions, ~1e-15 each, whose products fall below the
    bins' lowest unit ``2**-100``) is not rounded to 0, which CG would read as
    non-positive curvature.  An Inf or NaN product gives NaN; finite products whose sum
    is beyond float64's range give ±Inf.

    >>> dot(np.array([1e16, 1.0, -1e16]), np.ones(3))  # np.dot may well say 0.0
    1.0
    >>> dot(np.full(4, 1e-20), np.full(4, 1e-20))
    4e-40
    """
    a, b = np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel()
    if a.size != b.size:
        raise ValueError(f"dot: vectors of {a.size} and {b.size} values")
    return float(_dot(a, b))


@numba.njit(cache=True, nogil=True)
def _largest_product(a, b):
    """``max |a_i b_i|``, or Inf where a product is not finite."""
    largest = 0.0
    for i in range(a.size):
        p = abs(np.float64(a[i]) * np.float64(b[i]))
        if not p <= 1.7976931348623157e308:
            return np.inf
        largest = max(largest, p)
    return largest


@numba.njit(cache=True, nogil=True)
def _take_apart(a, b, up, down, acc):
    """``acc[k, j] += q_k(a_j b_j · 2**shift)``, the scaling in two exact steps."""
    for j in range(a.size):
        _add_parts((np.float64(a[j]) * np.float64(b[j]) * up) * down, acc, j)


@numba.njit(cache=True, nogil=True)
def _dot(a, b):
    largest = _largest_product(a, b)
    if largest == np.inf:
        return np.nan
    if largest == 0.0:
        return 0.0
    shift = _shift(largest)
    return _combine(_dot_bins(a, b, 0, _groups(a.size), shift), shift)


@numba.njit(cache=True, nogil=True)
def _shift(largest):
    """The power of two that brings the largest product below ``2**59``."""
    return 59 - math.frexp(largest)[1]


@numba.njit(cache=True, nogil=True)
def _groups(n):
    return (n + _DOT_GROUP - 1) // _DOT_GROUP


@numba.njit(cache=True, nogil=True)
def _dot_bins(a, b, start, groups, shift):
    """``(groups, BINS)``: each group's bin sums of the products ``a_j b_j · 2**shift``,
    for ``a`` and ``b`` holding the values ``start, start + 1, …`` of longer vectors
    (groups of ``2**19`` values counted from the longer vectors' first).  Each sum is an
    exact float64 integer of its bin's unit, so the bins of pieces add up exactly to
    the whole's, in any order."""
    # 2**shift as two factors, each a float64 (shift reaches 1132 for subnormal products);
    # scaling up is exact, and scaling down (shift <= 0) is one correctly rounded product
    up = min(shift, 1000)
    scale_up, scale_down = math.ldexp(1.0, up), math.ldexp(1.0, shift - up)
    bins = np.zeros((groups, BINS))
    acc = np.zeros((BINS, _LANES))
    i = 0
    while i < a.size:
        group = (start + i) // _DOT_GROUP
        end = min(a.size, (group + 1) * _DOT_GROUP - start)
        acc[:] = 0.0  # exact: integers of each bin's unit below 2**53
        for lo in range(i, end, _LANES):
            hi = min(lo + _LANES, end)
            _take_apart(a[lo:hi], b[lo:hi], scale_up, scale_down, acc)
        for k in range(BINS):
            bin_sum = 0.0
            for j in range(_LANES):
                bin_sum += acc[k, j]
            bins[group, k] += bin_sum
        i = end
    return bins


@numba.njit(cache=True, nogil=True)
def _combine(bins, shift):
    """The dot product from its groups' bins: each group's bins added smallest first,
    the groups' values in order, scaled back by ``2**-shift``."""
    value = 0.0
    for group in range(bins.shape[0]):
        group_value = 0.0
        for k in range(BINS - 1, -1, -1):  # smallest bin first
            group_value += bins[group, k]
        value += group_value
    return math.ldexp(value, -shift)


def dot_pieces(a: np.ndarray, b: np.ndarray, start: int, n: int,
               largest: float) -> np.ndarray:
    """The exact bins of a piece of a longer dot product (:func:`dot`): ``a`` and ``b``
    hold values ``start … start + len(a) - 1`` of two vectors of ``n`` values whose
    largest product ``|a_j b_j|`` (over all ``n``) is ``largest``.  The pieces' bins
    summed (in any order: a float64 Allreduce) and given to :func:`dot_of_pieces` are
    :func:`dot` of the whole vectors, bit for bit; ranks that each hold a slice take a
    dot product so without gathering the vectors (Allreduce ``largest`` with MAX first:
    :func:`largest_product`)."""
    a, b = np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel()
    if a.size != b.size or not 0 <= start <= start + a.size <= n:
        raise ValueError(f"dot_pieces: {a.size} and {b.size} values at {start} of {n}")
    if not 0.0 < largest < np.inf:
        return np.zeros((_groups(n), BINS))
    return _dot_bins(a, b, start, _groups(n), _shift(largest))


def largest_product(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a_j b_j|`` (Inf where a product is not finite): what :func:`dot_pieces`
    needs of the whole vectors, the maximum of the pieces' own."""
    a, b = np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel()
    return float(_largest_product(a, b)) if a.size else 0.0


def dot_of_pieces(bins: np.ndarray, largest: float) -> float:
    """:func:`dot` from the summed bins of its pieces (:func:`dot_pieces`) and the
    largest product of the whole vectors."""
    if largest == np.inf or math.isnan(largest):
        return math.nan
    if largest == 0.0:
        return 0.0
    return float(_combine(np.ascontiguousarray(bins), _shift(largest)))


def warm_up() -> None:
    """Compile the loops of :func:`split`, :func:`total` and :func:`dot` for the terms
    dhf sums (float64 and float32), or load them from Numba's cache."""
    for dtype in (np.float64, np.float32):
        total(split(np.ones(1, dtype)))
    dot(np.ones(1), np.ones(1))


class Parts(NamedTuple):
    """The parts (:func:`split`) of several vectors already added, ``(BINS, n)``: what a
    looped call sums on the device (:func:`dhf.reduction_jax.split_traced`).
    :meth:`ExactSum.add` takes it as the ``terms`` vectors it stands for."""

    parts: np.ndarray
    terms: int

    @property
    def value(self) -> np.ndarray:
        return total(self.parts)


class ExactSum:
    """Adds float64 vectors of one length so that the result does not depend on the
    order or grouping of the additions (:func:`split`); :meth:`packed` is what ranks sum
    with an ordinary float64 ``Allreduce``, and :func:`unpack` reads that back.

    The parts live in one buffer with room for :data:`FLAG_SLOTS` flags after them, so
    that packing copies nothing: for a model of millions of parameters the parts are
    ``BINS`` × P float64 (113 MB for the MNIST autoencoder), and copying them twice per
    Gv product (to join, then to pack) had cost more than the product.
    """

    #: Flags that can ride along in :meth:`packed`.
    FLAG_SLOTS = 4

    def __init__(self, n: int):
        self._buf = np.zeros(BINS * n + self.FLAG_SLOTS)
        self.parts = self._buf[:BINS * n].reshape(BINS, n)
        self.terms = 0

    @classmethod
    def of(cls, vectors, n: int | None = None) -> "ExactSum":
        """The exact sum of ``vectors`` (an iterable; ``n``, their length, is needed
        when it may be empty)."""
        result = None if n is None else cls(n)
        for x in vectors:
            if result is None:
                result = cls(x.parts.shape[1] if isinstance(x, Parts) else len(x))
            result.add(x)
        if result is None:
            raise ValueError("ExactSum.of: no vectors and no length")
        return result

    def refill(self, vectors) -> "ExactSum":
        """This sum emptied, then the exact sum of ``vectors``, in the same buffer: for a
        sum taken every CG iteration, where a fresh buffer of a big model's parts (113 MB
        for the MNIST autoencoder) costs the kernel a third of the work of adding one
        vector to it to hand over zeroed."""
        self._buf.fill(0.0)
        self.terms = 0
        for x in vectors:
            self.add(x)
        return self

    @classmethod
    def join(cls, *sums: "ExactSum") -> "ExactSum":
        """One sum of the concatenated vectors of ``sums`` (to reduce them in one call);
        a single sum is itself."""
        if len(sums) == 1:
            return sums[0]
        joined = cls(sum(s.parts.shape[1] for s in sums))
        lo = 0
        for s in sums:
            joined.parts[:, lo:lo + s.parts.shape[1]] = s.parts
            lo += s.parts.shape[1]
        joined.terms = max(s.terms for s in sums)
        return joined

    def add(self, x: np.ndarray | Parts) -> None:
        """Add a vector, or the :class:`Parts` of several (exactly: the same bits as
        adding each of them)."""
        self.terms += x.terms if isinstance(x, Parts) else 1
        if self.terms > MAX_TERMS:
            raise ValueError(f"ExactSum: more than {MAX_TERMS} terms")
        if isinstance(x, Parts):
            self.parts += x.parts
        else:
            split(x, out=self.parts)

    def packed(self, *flags: float) -> np.ndarray:
        """One float64 buffer: the parts, then ``flags`` (a stop request, say).  It is
        this sum's own storage, not a copy: an Allreduce in place overwrites the parts."""
        if len(flags) > self.FLAG_SLOTS:
            raise ValueError(f"ExactSum.packed: at most {self.FLAG_SLOTS} flags")
        n = self.parts.size
        self._buf[n:n + len(flags)] = flags
        return self._buf[:n + len(flags)]

    @property
    def value(self) -> np.ndarray:
        return total(self.parts)


def unpack(buf: np.ndarray, n: int) -> np.ndarray:
    """The float64 total from a summed :meth:`ExactSum.packed` buffer of length-``n``
    vectors."""
    return total(buf[:BINS * n].reshape(BINS, n))
