r"""Backtracking over kept CG iterates and the Armijo line search.

Pure functions over a ``loss(step) -> float`` callable; the coordinator makes that
callable evaluate the held-out backtracking (or line-search) batch, one Allreduce per call.

References
----------
Martens (2010), §4.6 "CG iteration backtracking"; Martens & Sutskever (2012), §20.8.7.
Armijo rule with c = 1e-2 and shrink 0.8 as in Martens' ``nnet_train_2.m``; c = 0 (any
decrease) and the argmin over every tenth iterate as in Sutskever's HF-RNN release
(``opt/hf.py``: ``get_new_direction``, ``line_search``).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np


class BacktrackInfo(NamedTuple):
    """Which kept CG iterate was chosen: its CG iteration, its loss, evaluations spent."""

    iteration: int
    loss: float
    evaluations: int


class LineSearchInfo(NamedTuple):
    """Armijo outcome: the step size (0.0 if rejected), its loss, tries, acceptance."""

    step_size: float
    loss: float
    tries: int
    accepted: bool


def backtrack(kept: Sequence[tuple[int, np.ndarray]], loss: Callable[[np.ndarray], float]
              ) -> tuple[np.ndarray, BacktrackInfo]:
    """Walk back from the last kept iterate while the previous one has a loss no higher.

    This is Martens' heuristic (``nnet_train_2.m``: ``if ll > lowll, j = j+1; break``,
    so a tie walks on): later CG iterates fit the curvature batch better, and an earlier
    one is preferred only when it does no worse on other data.  NaN losses count as +inf
    (dhf's: his comparison with a NaN walks on).
    """
    def value(x):
        f = loss(x)
        return f if math.isfinite(f) else math.inf

    j = len(kept) - 1
    best = value(kept[j][1])
    evaluations = 1
    while j > 0:
        f = value(kept[j - 1][1])
        evaluations += 1
        if f <= best:
            best, j = f, j - 1
        else:
            break
    return kept[j][1], BacktrackInfo(kept[j][0], best, evaluations)


def backtrack_argmin(kept: Sequence[tuple[int, np.ndarray]],
                     loss: Callable[[np.ndarray], float]
                     ) -> tuple[np.ndarray, BacktrackInfo]:
    """The kept iterate with the lowest loss (the first of equals); NaN counts as +inf.

    Sutskever's release evaluates every tenth CG iterate and the last on its
    backtracking minibatch and keeps the best of them all, where Martens' rule
    (:func:`backtrack`) stops walking back at the first iterate that is no better.
    """
    values = [loss(x) for _, x in kept]
    values = [f if math.isfinite(f) else math.inf for f in values]
    j = int(np.argmin(values))
    return kept[j][1], BacktrackInfo(kept[j][0], values[j], len(values))


def armijo(loss: Callable[[float], float], loss0: float, slope: float, *,
           first_loss: float | None = None, c: float = 1e-2, shrink: float = 0.8,
           max_tries: int = 60) -> LineSearchInfo:
    r"""Largest ``α = shrink**k`` with :math:`f(\alpha) \le f(0) + c\,\alpha\,g^\top\delta`
    (with ``c = 0``: :math:`f(\alpha) < f(0)`, any decrease, as Sutskever's release asks).

    Parameters
    ----------
    loss : ``α -> f(θ + α δ)``.
    loss0 : ``f(θ)`` on the same data.
    slope : ``g'δ`` (negative for a descent direction).
    first_loss : ``f(θ + δ)`` if already known (from backtracking), saving a call.

    Returns a rejected :class:`LineSearchInfo` (``step_size = 0``) when no step passes in
    ``max_tries`` or the direction is not a descent direction.
    """
    if not (math.isfinite(slope) and slope < 0.0 and math.isfinite(loss0)):
        return LineSearchInfo(0.0, loss0, 0, False)
    alpha = 1.0
    for tries in range(1, max_tries + 1):
        f = first_loss if (tries == 1 and first_loss is not None) else loss(alpha)
        if math.isfinite(f) and (f <= loss0 + c * alpha * slope if c else f < loss0):
            return LineSearchInfo(alpha, f, tries, True)
        alpha *= shrink
    return LineSearchInfo(0.0, loss0, max_tries, False)
