"""Sums whose value does not depend on how the terms are grouped: the same bits at any
rank count.

Floating-point addition is not associative, so a batch's gradient summed as two ranks'
partial sums differs in its last bits from the same gradient summed on one rank, and
CG, which loses orthogonality, amplifies that difference until runs part.  dhf makes
every reduction exact instead:

- the batch is cut into **fixed global chunks** (:meth:`dhf.worker.Worker.shard`), whose
  rows and order do not depend on the number of ranks, and each chunk's sum is computed
  by one rank with the same code, so it has the same bits wherever it is computed;
- each chunk sum ``x`` is written in **fixed point**, as ``LIMBS`` integer digits of
  ``LIMB_BITS`` bits in units of ``2**UNIT_EXPONENT``
  (``x = Σ_k d_k · 2**(UNIT_EXPONENT + k·LIMB_BITS)``, truncated below the unit), and
  integer digits add exactly, in any order (an ``Allreduce`` of int64);
- the total is turned back into float64 once, identically on every rank.

With 4 digits of 40 bits from ``2**-100`` the representable range is
``2**-100 ≤ |x| < 2**60``, every value is kept to ~1e-30 absolute (far below float64's
own rounding for any sum that matters), and up to ``2**23`` chunks add without a carry
overflowing int64.  A chunk sum outside the range (``|x| ≥ 2**60``, Inf, NaN: a diverged
step) marks the reduction *inexact*; every rank sees the mark in the same integer
buffer and falls back to the plain float sum, so non-finite values still propagate.

The idea is the "reproducible summation" of Demmel & Nguyen (2013) and of integer
accumulators in exact dot products (Kulisch), in its simplest fixed-range form.
"""
from __future__ import annotations

import numpy as np

LIMB_BITS = 40
LIMBS = 4
UNIT_EXPONENT = -100
#: ``|x|`` below this is representable (the top digit stays below ``2**LIMB_BITS``).
LIMIT = 2.0 ** (UNIT_EXPONENT + LIMBS * LIMB_BITS)
_WEIGHTS = [2.0 ** (UNIT_EXPONENT + k * LIMB_BITS) for k in range(LIMBS)]


def representable(x: np.ndarray) -> bool:
    """Whether every entry of ``x`` is finite with ``|x| < LIMIT``."""
    return bool(np.all(np.abs(x) < LIMIT))  # False for NaN and Inf too


def to_limbs(x: np.ndarray) -> np.ndarray:
    """``(LIMBS, n)`` int64 digits of ``x`` (float64, representable), exact above the
    unit: the digits of ``|x|``, most significant first, each times ``sign(x)``.

    Each step takes ``d = floor(a / w)`` and ``a − d·w``, which is exact for ``a ≥ 0``:
    ``d·w ≤ a`` shares ``a``'s leading bits, so the difference needs no more bits than
    ``a`` has.
    """
    a = np.abs(np.asarray(x, dtype=np.float64))
    sign = np.sign(x).astype(np.int64)
    digits = np.empty((LIMBS, a.size), dtype=np.int64)
    for k in range(LIMBS - 1, -1, -1):
        d = np.floor(a / _WEIGHTS[k])
        a = a - d * _WEIGHTS[k]
        digits[k] = d.astype(np.int64) * sign
    return digits


def from_limbs(digits: np.ndarray) -> np.ndarray:
    """float64 values of summed digits ``(LIMBS, n)``: carries normalised (every digit
    but the top one in ``[0, 2**LIMB_BITS)``), then the digits added most significant
    last, so that the result is the same on every rank that holds the same integers."""
    d = np.array(digits, dtype=np.int64)
    for k in range(LIMBS - 1):
        carry = d[k] >> LIMB_BITS  # floor division by 2**LIMB_BITS
        d[k] -= carry << LIMB_BITS
        d[k + 1] += carry
    total = np.zeros(d.shape[1])
    for k in range(LIMBS):
        total = total + d[k].astype(np.float64) * _WEIGHTS[k]
    return total


class ExactSum:
    """Adds float64 vectors of one length exactly (:func:`to_limbs`), keeping the plain
    float sum beside for a reduction that turns out inexact.

    :meth:`packed` is what ranks sum with an int64 ``Allreduce``: the digits and, last,
    the number of terms that were not representable; :func:`unpack` reads the total
    back (None when some term anywhere was not representable).
    """

    def __init__(self, n: int):
        self.digits = np.zeros((LIMBS, n), dtype=np.int64)
        self.plain = np.zeros(n)
        self.unrepresentable = 0

    @classmethod
    def of(cls, parts, n: int | None = None) -> "ExactSum":
        """The exact sum of the vectors ``parts`` (an iterable; ``n``, their length, is
        needed when it may be empty)."""
        total = None if n is None else cls(n)
        for x in parts:
            if total is None:
                total = cls(len(x))
            total.add(x)
        if total is None:
            raise ValueError("ExactSum.of: no parts and no length")
        return total

    @classmethod
    def join(cls, *sums: "ExactSum") -> "ExactSum":
        """One sum of the concatenated vectors of ``sums`` (to reduce them in one call)."""
        joined = cls(0)
        joined.digits = np.concatenate([s.digits for s in sums], axis=1)
        joined.plain = np.concatenate([s.plain for s in sums])
        joined.unrepresentable = sum(s.unrepresentable for s in sums)
        return joined

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        self.plain += x
        if representable(x):
            self.digits += to_limbs(x)
        else:
            self.unrepresentable += 1

    def packed(self, *flags: int) -> np.ndarray:
        """One int64 buffer: the digits, then ``flags`` (a stop request, say), then the
        count of unrepresentable terms."""
        return np.concatenate([self.digits.ravel(), np.asarray(flags, dtype=np.int64),
                               [self.unrepresentable]]).astype(np.int64)


def unpack(buf: np.ndarray, n: int) -> np.ndarray | None:
    """The float64 total from a summed :meth:`ExactSum.packed` buffer of length-``n``
    vectors, or None when some term was not representable (then use the plain sums)."""
    if buf[-1]:
        return None
    return from_limbs(buf[:LIMBS * n].reshape(LIMBS, n))
