"""Exact sums across ranks: :mod:`dhf.reduction`'s sums on the verbs of
:class:`dhf.comm.Communicator`, the same bits at any rank count.

:func:`allreduce_exact` adds every rank's :class:`~dhf.reduction.ExactSum` and hands
each rank the whole; :func:`reduce_exact_slice` hands each rank its slice of it
(``shard_bounds``), and :func:`dot_sliced` takes the dot product of two vectors of which
each rank holds a slice: what CG, working on slices of its vectors, needs.
"""
from __future__ import annotations

import numpy as np

from dhf import reduction
from dhf.comm import Communicator
from dhf.data import shard_bounds
from dhf.reduction import BINS, ExactSum, dot_of_pieces, unpack

#: Sums of at least this many values are reduced in slices (:func:`allreduce_exact`).
SCATTER_VALUES = 1 << 16


def allreduce_exact(comm: Communicator, total: ExactSum, *flags: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``total`` over ranks exactly (:mod:`dhf.reduction`): the same bits at any rank
    count, on every rank.  ``flags`` (a stop request) ride along and come back summed.

    A short sum travels as one float64 Allreduce of its ``BINS`` parts per value, the
    flags with them.  From :data:`SCATTER_VALUES` values on (a big model's gradient and
    Gv: 2.8 M values, 113 MB of parts, for the MNIST autoencoder), each rank receives the
    summed parts of its own slice of the values (a reduce-scatter per bin), adds them up
    to float64 totals, and the ranks exchange those (an allgather; the flags in a small
    Allreduce of their own): 6 values' worth of traffic per value instead of an
    Allreduce's 10, and each rank totals 1/N of them (``scripts/bench/exact_sums.py``).
    The parts are integers of their bins' units, added
    exactly in any order, and each value's total is the same operations wherever it is
    taken: the same bits either way.
    """
    n = total.parts.shape[1]
    if comm.size == 1 or n < SCATTER_VALUES:
        buf = comm.allreduce_sum(total.packed(*flags))
        return unpack(buf, n), buf[BINS * n:]
    mine, summed_flags = _scattered(comm, total, flags)
    return comm.allgather(mine, slice_counts(comm, n)), summed_flags


def _scattered(comm: Communicator, total: ExactSum, flags) -> tuple[np.ndarray, np.ndarray]:
    """This rank's slice of the exact sum, its parts reduce-scattered and totalled, and
    the flags summed in a small Allreduce of their own."""
    n = total.parts.shape[1]
    mine = reduction.total(comm.reduce_scatter_sum(total.parts, slice_counts(comm, n)))
    summed_flags = (comm.allreduce_sum(np.array(flags, dtype=np.float64)) if flags
                    else np.zeros(0))
    return mine, summed_flags


def slice_counts(comm: Communicator, n: int) -> list[int]:
    """How many of ``n`` values each rank's slice holds (:func:`dhf.data.shard_bounds`)."""
    return [hi - lo for lo, hi in (shard_bounds(n, r, comm.size) for r in range(comm.size))]


def reduce_exact_slice(comm: Communicator, total: ExactSum, *flags: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`allreduce_exact`, each rank keeping only its slice of the values
    (``shard_bounds(n, rank, size)``): the same bits, without the allgather of a long
    sum (a Gv that CG, working on slices, needs only a slice of)."""
    n = total.parts.shape[1]
    if comm.size == 1 or n < SCATTER_VALUES:
        lo, hi = shard_bounds(n, comm.rank, comm.size)
        value, summed_flags = allreduce_exact(comm, total, *flags)
        return value[lo:hi], summed_flags
    return _scattered(comm, total, flags)


def dot_sliced(comm: Communicator, a: np.ndarray, b: np.ndarray, n: int,
               sums=reduction) -> float:
    """:func:`dhf.reduction.dot` of two ``n``-vectors of which each rank holds its slice
    ``a``, ``b``: the bits of the dot product of the whole vectors, at any rank count
    (their largest product in one Allreduce, the exact bins of each rank's piece in
    another: :func:`dhf.reduction.dot_pieces`).  ``sums`` is where the slices' own
    work is done: :mod:`dhf.reduction` for NumPy arrays, :mod:`dhf.reduction_jax` for
    arrays on a JAX device (only the largest product and the bins leave it)."""
    if comm.size == 1:
        return sums.dot(a, b)
    lo, _ = shard_bounds(n, comm.rank, comm.size)
    largest = float(comm.allreduce_max(np.array([sums.largest_product(a, b)]))[0])
    bins = comm.allreduce_sum(sums.dot_pieces(a, b, lo, n, largest).ravel())
    return dot_of_pieces(bins.reshape(-1, BINS), largest)
