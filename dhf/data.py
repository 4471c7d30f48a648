"""Batches and shards: which rows each rank works on, identical whatever the rank count.

The samplers are *counter-based*: the batches of update ``u`` depend only on the seed and
the update number — not on the number of ranks, and not on anything a resumed run must
restore.  Every rank draws the same global indices and keeps its slice
(:func:`shard_bounds`); the per-rank sums are then Allreduced.

- :class:`BatchSampler` draws rows of a fixed training set from
  ``numpy.random.default_rng([seed, u])``.
- :class:`FullBatchSampler` is Martens (2010)'s regime: every row, every update, and
  the curvature on a chunk cycled through a fixed shuffle.
- :class:`FreshSampler` names rows that have never been seen: update ``u``'s rows are
  ``u · FRESH_STRIDE + i``, which :class:`dhf.dataset.FreshSource` generates on demand
  (Sutskever's release: new sequences every update, discarded after it).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dhf.batches import BatchSizes


#: Rows per update in the fresh-data row space (:class:`FreshSampler`).
FRESH_STRIDE = 2 ** 24


class Batches(NamedTuple):
    """Global row indices (sorted) of one update's batches."""

    gradient: np.ndarray
    curvature: np.ndarray  # a subset of ``gradient``
    backtrack: np.ndarray  # disjoint from ``gradient`` (but in the full-batch regime)
    linesearch: np.ndarray  # disjoint from both; empty: search on ``backtrack``


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s share of ``n`` items; the first ``n % size`` ranks
    get one more.

    >>> [shard_bounds(10, r, 4) for r in range(4)]
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def local(indices: np.ndarray, rank: int, size: int) -> np.ndarray:
    """This rank's contiguous slice of a global index array."""
    lo, hi = shard_bounds(len(indices), rank, size)
    return indices[lo:hi]


def _check_sizes(gradient, curvature, backtrack, linesearch, held_out, available):
    batches = BatchSizes(gradient, curvature, backtrack, linesearch, held_out)
    if batches.inside_gradient > gradient or batches.rows_needed > available:
        where = "held out" if held_out else "inside the gradient batch"
        raise ValueError(f"cannot draw gradient {gradient}, curvature {curvature}, "
                         f"backtracking {backtrack} and line-search {linesearch} rows "
                         f"({where}) from {available}")


class BatchSampler:
    """Draws each update's gradient, curvature, backtracking and line-search batches.

    The gradient batch is drawn without replacement from ``n_rows`` training rows; the
    curvature batch is a random subset of it (Martens & Sutskever 2012, §20.12: "make
    sure that GN_batches is a subset of grad_batches").  With ``held_out`` the
    backtracking and line-search batches are drawn with it, disjoint from it (Martens
    2010); otherwise they are further subsets of the gradient batch, disjoint from the
    curvature batch and from each other (Sutskever's release).  ``linesearch = 0`` draws
    no line-search batch: the line search then runs on the backtracking batch, as in
    Martens (2010).
    """

    def __init__(self, n_rows: int, gradient: int, curvature: int, backtrack: int,
                 seed: int, linesearch: int = 0, held_out: bool = True):
        _check_sizes(gradient, curvature, backtrack, linesearch, held_out, n_rows)
        self.n_rows, self.seed, self.held_out = n_rows, seed, held_out
        self.sizes = (gradient, curvature, backtrack, linesearch)

    def draw(self, update: int) -> Batches:
        gradient, curvature, backtrack, linesearch = self.sizes
        rng = np.random.default_rng([self.seed, update])
        if not self.held_out:
            grad_rows = rng.choice(self.n_rows, gradient, replace=False)
            parts = np.split(
                rng.permutation(grad_rows)[:curvature + backtrack + linesearch],
                [curvature, curvature + backtrack])
            return Batches(np.sort(grad_rows), *map(np.sort, parts))
        rows = rng.choice(self.n_rows, gradient + backtrack + linesearch, replace=False)
        grad_rows = rows[:gradient]
        curv_rows = rng.choice(grad_rows, curvature, replace=False)
        return Batches(np.sort(grad_rows), np.sort(curv_rows),
                       np.sort(rows[gradient:gradient + backtrack]),
                       np.sort(rows[gradient + backtrack:]))


class FullBatchSampler:
    """Martens (2010)'s full-batch regime: the gradient, CG backtracking and the line
    search on every one of ``n_rows`` training rows each update, and the curvature on one
    chunk of ``curvature`` rows, chunk ``u mod K`` of a fixed shuffle at update ``u``
    (K = ``n_rows // curvature`` chunks: "we cycle through the mini-batches" for the
    Gauss-Newton products; 1/8 of the MNIST set in his autoencoder runs).
    """

    def __init__(self, n_rows: int, curvature: int, seed: int):
        if not 0 < curvature <= n_rows:
            raise ValueError(f"cannot draw {curvature} curvature rows from {n_rows}")
        self.n_rows, self.curvature, self.seed = n_rows, curvature, seed
        self.order = np.random.default_rng([seed, n_rows]).permutation(n_rows)

    def draw(self, update: int) -> Batches:
        every = np.arange(self.n_rows)
        k = update % (self.n_rows // self.curvature)
        chunk = np.sort(self.order[k * self.curvature:(k + 1) * self.curvature])
        return Batches(every, chunk, every, np.empty(0, dtype=np.int64))


class FreshSampler:
    """Each update's batches as rows never used before: row ``i`` of update ``u`` is
    ``u · FRESH_STRIDE + i``, generated by :class:`dhf.dataset.FreshSource` from
    ``(seed, u, i)`` alone.

    Rows ``0 … gradient−1`` of an update are its gradient batch.  With ``held_out`` the
    curvature batch is every ``gradient/curvature``-th of them (a subset, as Martens &
    Sutskever ask, spread so that each rank's share of it lies within its share of the
    gradient batch but for a few rows at the ends), and the backtracking and line-search
    batches
    are the rows after the gradient batch.  Without, they are all rows of the gradient
    batch, as in Sutskever's release, whose gradient is its 10 minibatches, its
    curvature the first of them, backtracking the second and the line search the third:
    rows ``0 … c−1``, the next ``b``, the next ``l``.  (The release files minibatch 0
    with its test set, so its curvature rows are drawn once for the whole run; here they
    are fresh like the rest.)
    """

    def __init__(self, gradient: int, curvature: int, backtrack: int, linesearch: int = 0,
                 held_out: bool = True):
        _check_sizes(gradient, curvature, backtrack, linesearch, held_out, FRESH_STRIDE)
        self.sizes, self.held_out = (gradient, curvature, backtrack, linesearch), held_out

    def draw(self, update: int) -> Batches:
        gradient, curvature, backtrack, linesearch = self.sizes
        base = update * FRESH_STRIDE
        if not self.held_out:
            ends = np.cumsum([curvature, backtrack, linesearch])
            return Batches(base + np.arange(gradient), base + np.arange(ends[0]),
                           base + np.arange(ends[0], ends[1]),
                           base + np.arange(ends[1], ends[2]))
        curv = (np.arange(curvature) * gradient) // curvature
        ends = np.cumsum([gradient, backtrack, linesearch])
        return Batches(base + np.arange(gradient), base + curv,
                       base + np.arange(ends[0], ends[1]),
                       base + np.arange(ends[1], ends[2]))


def fresh_minibatch(size: int, update: int, step: int) -> np.ndarray:
    """``size`` fresh rows for first-order minibatch ``step`` of ``update``."""
    return update * FRESH_STRIDE + step * size + np.arange(size)


def minibatch(n_rows: int, size: int, seed: int, update: int, step: int) -> np.ndarray:
    """Sorted global rows of SGD minibatch ``step`` of ``update``, drawn without
    replacement from ``default_rng([seed, update, step])`` (rank-count independent)."""
    rng = np.random.default_rng([seed, update, step])
    return np.sort(rng.choice(n_rows, size, replace=False))
