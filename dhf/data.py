"""Batches and shards: which rows each rank works on, identical whatever the rank count.

The sampler is *counter-based*: the batches of update ``u`` come from
``numpy.random.default_rng([seed, u])``, so they depend only on the seed and the update
number — not on the number of ranks, and not on anything a resumed run must restore.
Every rank draws the same global indices and keeps its contiguous slice
(:func:`shard_bounds`); the per-rank sums are then Allreduced.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Batches(NamedTuple):
    """Global row indices (sorted) of one update's batches."""

    gradient: np.ndarray
    curvature: np.ndarray  # a subset of ``gradient``
    backtrack: np.ndarray  # disjoint from ``gradient``


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


class BatchSampler:
    """Draws each update's gradient, curvature and backtracking batches.

    The gradient and backtracking batches are drawn together without replacement from
    ``n_rows`` training rows; the curvature batch is a random subset of the gradient
    batch (Martens & Sutskever 2012, §20.12: "make sure that GN_batches is a subset of
    grad_batches").
    """

    def __init__(self, n_rows: int, gradient: int, curvature: int, backtrack: int,
                 seed: int):
        if gradient + backtrack > n_rows or curvature > gradient:
            raise ValueError(f"cannot draw {gradient} + {backtrack} rows (curvature "
                             f"{curvature}) from {n_rows}")
        self.n_rows, self.seed = n_rows, seed
        self.sizes = (gradient, curvature, backtrack)

    def draw(self, update: int) -> Batches:
        gradient, curvature, backtrack = self.sizes
        rng = np.random.default_rng([self.seed, update])
        rows = rng.choice(self.n_rows, gradient + backtrack, replace=False)
        grad_rows = rows[:gradient]
        curv_rows = rng.choice(grad_rows, curvature, replace=False)
        return Batches(np.sort(grad_rows), np.sort(curv_rows), np.sort(rows[gradient:]))


def minibatch(n_rows: int, size: int, seed: int, update: int, step: int) -> np.ndarray:
    """Sorted global rows of SGD minibatch ``step`` of ``update``, drawn without
    replacement from ``default_rng([seed, update, step])`` (rank-count independent)."""
    rng = np.random.default_rng([seed, update, step])
    return np.sort(rng.choice(n_rows, size, replace=False))
