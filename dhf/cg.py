r"""Preconditioned conjugate gradient with Martens' truncation rules.

Solves the damped Newton system :math:`A x = b` with :math:`A = G + \lambda I` (plus
structural damping) and :math:`b = -g`, where only products :math:`v \mapsto A v` are
available.  Everything here is numpy on flat float64 vectors: no MPI, no PyTensor.  The
caller's ``matvec`` hides the distributed Gv; where each rank holds a slice of the
vectors, so do the ``dot`` and ``any_rank`` it passes in.

Notes
-----
CG minimises the quadratic :math:`\phi(x) = \tfrac12 x^\top A x - b^\top x`.  With the
residual :math:`r = b - A x` this is :math:`\phi(x) = -\tfrac12 x^\top (r + b)`, which costs
one dot product per iteration.

Termination (Martens 2010, §4.4; Martens & Sutskever 2012, §20.4): stop at
iteration :math:`i \ge` ``min_iters`` once :math:`i > k`, :math:`\phi_i < 0`,
:math:`\phi_{i-k} < 0` and

.. math:: \frac{\phi_i - \phi_{i-k}}{\phi_i} < k \varepsilon,
          \qquad k = \max(10, \lceil 0.1\, i \rceil), \quad \varepsilon = 5\times10^{-4}.

Iterates are kept for backtracking at :math:`i = \lceil 5 \cdot 1.3^j \rceil` (5, 7, 9, 11,
15, 19, …: Martens' ``conjgrad_1.m``), at :math:`\lceil 1.3^j \rceil` (theano-hf's, and
Martens & Sutskever 2012, §20.8.7) with ``store_first = 1``, or, as in Sutskever's HF-RNN
release, every tenth (:math:`i = 1, 11, 21, \dots`); the last iterate is always kept.  A
direction with :math:`p^\top A p \le 0` ends CG with status ``"negative_curvature"``; a
non-finite product ends it with ``"nonfinite"``.

Every dot product is :func:`dhf.reduction.dot`, whose bits depend on the vectors alone
(not on the BLAS or CPU): ranks holding the same vectors stop at the same iteration.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from dhf.reduction import dot

Matvec = Callable[[np.ndarray], np.ndarray]

STATUS_MESSAGES = {
    "converged": "relative progress in the quadratic model fell below tolerance",
    "max_iters": "reached the maximum number of CG iterations",
    "negative_curvature": "met a direction of non-positive curvature (p'Ap <= 0)",
    "nonfinite": "the curvature product returned NaN or Inf",
    "zero_rhs": "the right-hand side is zero",
}


class CGInfo(NamedTuple):
    """What a CG run did.

    Attributes
    ----------
    iters : number of curvature products spent on iterations (the warm-start residual
        product is not counted).
    status : a key of ``STATUS_MESSAGES``.
    phi : quadratic-model value after each iteration, ``phi[0]`` at the start point.
    kept : ``[(i, x_i), ...]`` the iterates kept for backtracking, in order, last included.
    """

    iters: int
    status: str
    phi: list
    kept: list


def storage_points(max_iters: int, ratio: float = 1.3, every: int = 0,
                   first: float = 5.0) -> set[int]:
    """Iterations ``ceil(first * ratio**j)`` at which an iterate is kept, up to
    ``max_iters`` (``first = 5``: Martens' ``conjgrad_1.m``, whose ``inext`` starts at 5
    and is multiplied by 1.3 after each store; ``first = 1``: theano-hf's grid); with
    ``every``, iterations ``1, 1 + every, 1 + 2 every, …`` instead (the release's
    ``i % cg_eval_freq == 0`` with its 0-based ``i``).

    >>> sorted(storage_points(25)), sorted(storage_points(25, every=10))
    ([5, 7, 9, 11, 15, 19, 25], [1, 11, 21])
    """
    if every:
        return set(range(1, max_iters + 1, every))
    points, j = set(), 0
    while True:
        i = math.ceil(first * ratio**j)
        if i > max_iters:
            return points
        points.add(i)
        j += 1


def pcg(
    matvec: Matvec,
    b: np.ndarray,
    x0: np.ndarray | None = None,
    *,
    precond: np.ndarray | None = None,
    min_iters: int = 1,
    max_iters: int = 250,
    tol: float = 5e-4,
    gap_ratio: float = 0.1,
    min_gap: int = 10,
    store_ratio: float = 1.3,
    store_first: float = 5.0,
    store_every: int = 0,
    callback: Callable[[int, float], None] | None = None,
    dot: Callable[[np.ndarray, np.ndarray], float] = dot,
    any_rank: Callable[[bool], bool] = bool,
    xp=np,
) -> tuple[np.ndarray, CGInfo]:
    """Minimise ``0.5 x'Ax - b'x`` by preconditioned CG.

    Parameters
    ----------
    matvec : ``v -> A v`` on flat float64 vectors; A must be symmetric.
    b : right-hand side (``-g`` in HF).
    x0 : start point (HF passes 0.95 times the previous solution); zeros if None.
    precond : the diagonal of the inverse preconditioner, ``M^{-1}``, or None.
    min_iters, max_iters : iteration bounds.
    tol, gap_ratio, min_gap : Martens' relative-progress rule (ε, 0.1, 10).
    store_ratio, store_first, store_every : iterates are kept at
        ``ceil(store_first * store_ratio**j)``, or at ``1, 1 + store_every, …`` when
        ``store_every`` is set (:func:`storage_points`).
    callback : called as ``callback(i, phi_i)`` after each iteration (progress bars).
    dot, any_rank : how the vectors meet.  By default they are whole; where each rank
        holds a slice of them (``b``, ``x0``, ``precond`` and ``matvec``'s argument and
        result), ``dot`` is the whole vectors' dot product
        (:func:`dhf.allreduce.dot_sliced`) and ``any_rank(flag)`` whether any rank's flag
        is true, so that every rank takes the same branch.
    xp : the vectors' array module: NumPy, or ``jax.numpy`` for vectors kept on a JAX
        device, where each operation is one dispatched XLA operation, rounded as
        NumPy's (``dot`` then :func:`dhf.reduction_jax.dot`: only scalars leave it).

    Returns
    -------
    x : the last iterate.
    info : :class:`CGInfo`.

    Examples
    --------
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]]); b = np.array([1.0, 2.0])
    >>> x, info = pcg(lambda v: A @ v, b, max_iters=10)
    >>> bool(np.allclose(x, np.linalg.solve(A, b)))
    True
    """
    b = xp.asarray(b, dtype=np.float64)
    x = xp.zeros_like(b) if x0 is None else xp.array(x0, dtype=np.float64)
    if not any_rank(bool(xp.any(b))):
        return x * 0.0, CGInfo(0, "zero_rhs", [0.0], [(0, x * 0.0)])
    r = b - matvec(x) if any_rank(bool(xp.any(x))) else b.copy()
    if any_rank(not bool(xp.all(xp.isfinite(r)))):
        # A warm start that the new curvature cannot handle: start from zero instead.
        x, r = xp.zeros_like(b), b.copy()
    z = r * precond if precond is not None else r
    p = z.copy()
    rz = dot(r, z)
    phi = [-0.5 * dot(x, r + b)]
    if rz == 0.0:  # the warm start already solves the system
        return x, CGInfo(0, "converged", phi, [(0, x.copy())])
    keep_at = storage_points(max_iters, store_ratio, store_every, store_first)
    kept: list = []
    status = "max_iters"
    i = 0
    while i < max_iters:
        Ap = matvec(p)
        pAp = dot(p, Ap)
        if not math.isfinite(pAp):
            status = "nonfinite"
            break
        if pAp <= 0.0:
            status = "negative_curvature"
            break
        alpha = rz / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        i += 1
        phi.append(-0.5 * dot(x, r + b))
        if callback is not None:
            callback(i, phi[-1])
        if i in keep_at:
            kept.append((i, x.copy()))
        if i >= min_iters and _progress_stalled(phi, tol, gap_ratio, min_gap):
            status = "converged"
            break
        z = r * precond if precond is not None else r
        rz_new = dot(r, z)
        if rz_new == 0.0:
            status = "converged"
            break
        p = z + (rz_new / rz) * p
        rz = rz_new
    if not kept or kept[-1][0] != i:
        kept.append((i, x.copy()))
    return x, CGInfo(i, status, phi, kept)


def _progress_stalled(phi: list, tol: float, gap_ratio: float, min_gap: int) -> bool:
    """Martens' rule: little relative decrease of phi over the last k iterations."""
    i = len(phi) - 1
    k = max(min_gap, math.ceil(gap_ratio * i))
    if i <= k:
        return False
    now, before = phi[i], phi[i - k]
    return now < 0.0 and before < 0.0 and (now - before) / now < k * tol
