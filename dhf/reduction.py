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

import numpy as np

BINS = 5
BIN_BITS = 32
LOWEST = -100
#: The most chunks one sum may add exactly (each bin's running total stays an exact
#: float64 integer multiple of its unit).
MAX_TERMS = 2 ** (52 - BIN_BITS)
#: Units of the bins, and the extraction constants ``1.5 · 2**52 · unit``, top bin first.
_UNITS = [2.0 ** (LOWEST + k * BIN_BITS) for k in range(BINS - 1, -1, -1)]
_SHIFTERS = [1.5 * 2.0 ** 52 * u for u in _UNITS]


#: Values processed at once, so that the work stays in cache.
_BLOCK = 65536


def split(x: np.ndarray, out: np.ndarray | None = None, block: int = _BLOCK) -> np.ndarray:
    """``(BINS, n)`` parts of ``x``, top bin first: ``q_k`` is the remainder so far
    rounded to a multiple of ``u_k`` (exact: ``r + M`` lands where the float grid's
    spacing is ``u_k``, and ``r − q`` is representable), added to ``out`` if given.
    Done ``block`` values at a time, so that the work stays in cache."""
    parts = np.zeros((BINS, np.size(x))) if out is None else out
    x = np.asarray(x).ravel()  # float32 is cast block by block, into r, not all at once
    r, q = np.empty(min(block, x.size)), np.empty(min(block, x.size))
    for lo in range(0, x.size, block):
        hi = min(lo + block, x.size)
        rb = r[:hi - lo]
        rb[:] = x[lo:hi]
        for k, qk in _extract(rb, q[:hi - lo]):
            parts[k, lo:hi] += qk
    return parts


def _extract(r: np.ndarray, q: np.ndarray):
    """Yield ``(k, q_k)`` for each bin, top first, taking ``q_k`` out of ``r`` in place
    (``q`` is the buffer each ``q_k`` is written to)."""
    with np.errstate(invalid="ignore"):  # Inf − Inf: a non-finite value becomes NaN
        for k, shifter in enumerate(_SHIFTERS):
            np.add(r, shifter, out=q)
            q -= shifter
            r -= q
            yield k, q


def total(parts: np.ndarray) -> np.ndarray:
    """The float64 value of summed parts ``(BINS, n)``: the bins added smallest first
    (the same operations, so the same bits, wherever the same parts are held)."""
    value = np.zeros(parts.shape[1])
    for k in range(BINS - 1, -1, -1):
        value += parts[k]
    return value


#: Elements summed exactly at once by :func:`dot` (each part below ``2**32`` units, so a
#: group's bin sums stay exact float64 integers of units).
_DOT_GROUP = 2 ** 19


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``Σ a_i b_i`` as a Python float, the same bits on any CPU and BLAS: the products
    (each correctly rounded, elementwise) are split into bins and each bin is summed
    exactly, in any order, a group of ``2**19`` at a time; the groups' values are added
    in order.  About 20 passes over the vectors: for the 10⁴ parameters of a 100-unit
    RNN ~0.05 ms.

    The products are first scaled by the power of two that brings the largest below
    ``2**59`` (exact), so that the bins' range follows the vectors' own: a dot product
    of tiny vectors (CG's last directions, ~1e-15 each, whose products fall below the
    bins' lowest unit ``2**-100``) is not rounded to 0, which CG would read as
    non-positive curvature.

    >>> dot(np.array([1e16, 1.0, -1e16]), np.ones(3))  # np.dot may well say 0.0
    1.0
    >>> dot(np.full(4, 1e-20), np.full(4, 1e-20))
    4e-40
    """
    with np.errstate(invalid="ignore"):  # Inf · 0: NaN, which the sum carries
        products = np.multiply(np.ravel(a), np.ravel(b), dtype=np.float64)
        largest = float(np.max(np.abs(products), initial=0.0))
    if largest == 0.0:
        return 0.0
    shift = 0
    if math.isfinite(largest):  # Inf and NaN go through unscaled and come out NaN
        shift = 59 - math.frexp(largest)[1]
        np.ldexp(products, shift, out=products)
    value = 0.0
    q = np.empty(min(_BLOCK, products.size))
    for group in range(0, products.size, _DOT_GROUP):
        sums = [0.0] * BINS  # exact: integers of each bin's unit below 2**53
        for lo in range(group, min(group + _DOT_GROUP, products.size), _BLOCK):
            r = products[lo:lo + _BLOCK]  # products is ours: taken apart in place
            for k, qk in _extract(r, q[:r.size]):
                sums[k] += float(qk.sum())
        group_value = 0.0
        for s in reversed(sums):  # smallest bin first
            group_value += s
        value += group_value
    return math.ldexp(value, -shift)


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
                result = cls(len(x))
            result.add(x)
        if result is None:
            raise ValueError("ExactSum.of: no vectors and no length")
        return result

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

    def add(self, x: np.ndarray) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise ValueError(f"ExactSum: more than {MAX_TERMS} terms")
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
