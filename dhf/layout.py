"""Flat parameter vectors: θ as one float64 array, and back to per-parameter arrays."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class ParamLayout:
    """Shapes and offsets of parameters packed end to end in one flat vector.

    >>> lay = ParamLayout(["W", "b"], [(2, 3), (3,)])
    >>> lay.size, [a.shape for a in lay.unflatten(np.arange(9.0))]
    (9, [(2, 3), (3,)])
    """

    def __init__(self, names: Sequence[str], shapes: Sequence[tuple[int, ...]]):
        self.names = list(names)
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.size = self.offsets[-1]

    def flatten(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Concatenate ``arrays`` (in layout order) into one float64 vector."""
        return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) \
            if arrays else np.zeros(0)

    def unflatten(self, theta: np.ndarray, dtype=None) -> list[np.ndarray]:
        """Split ``theta`` into arrays of the layout's shapes (views when dtypes match)."""
        out = []
        for shape, lo, hi in zip(self.shapes, self.offsets[:-1], self.offsets[1:]):
            piece = theta[lo:hi].reshape(shape)
            out.append(piece if dtype is None else piece.astype(dtype, copy=False))
        return out

    def as_dict(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Parameters by name (copies)."""
        return {n: a.copy() for n, a in zip(self.names, self.unflatten(theta))}
