r"""The demos of Daniel Rasmussen's ``hessianfree`` package (0.4.0), as numpy generators.

``hessianfree/demos.py`` builds each demo's data inline; these are the same data behind
the :class:`~dhf.tasks.pathological.Problem` interface, so that ``dhf`` runs can be set
beside the package's.  ``PROBLEMS`` maps ``task.name`` to them.  The ``plant`` demo, whose
inputs depend on the network's own outputs, is not here.

The package has no success criterion of its own for these demos: its tests ask for a
mean squared-error loss below ``1e-5`` (xor) or ``1e-4`` (integrator).  The ``"abs"``
tolerances below are therefore ``dhf``'s choices, documented with each problem.
Feed-forward problems ignore ``T`` and return ``x (n, n_in)``, ``y (n, n_out)`` and a mask
of ones ``(n,)``.
"""
from __future__ import annotations

import numpy as np

from dhf.tasks.pathological import Problem, balanced_labels, one_hot

XOR_PATTERNS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_TARGETS = np.array([0, 1, 1, 0])


def _xor_rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of the 4 xor patterns, tiled so that all 4 appear when ``n ≥ 4`` (each
    used ``⌊n/4⌋`` or ``⌈n/4⌉`` times), in random order; returns inputs and xor bits."""
    which = balanced_labels(n, len(XOR_PATTERNS), rng)
    return XOR_PATTERNS[which], XOR_TARGETS[which]


def _ff_xor(T: int, n: int, rng: np.random.Generator) -> list:
    """``demos.xor``: ``y = x_0 xor x_1`` on the 4 binary patterns, squared error.

    The demo trains ``FFNet([2, 5, 1])`` (logistic layers) for 40 epochs with
    ``HessianFree(CG_iter=2)`` on the 4 patterns in full batch.  A row counts as wrong when
    ``|s − y| > 0.5``, i.e. when the output rounds to the wrong bit.  ``T`` is ignored."""
    x, bits = _xor_rows(n, rng)
    return [x, bits[:, None].astype(np.float64), np.ones(n)]


def _ff_xor_xent(T: int, n: int, rng: np.random.Generator) -> list:
    """``demos.crossentropy``: the same xor as two softmax classes, one-hot
    ``y = [1 − xor, xor]`` (the demo's targets ``[[1,0],[0,1],[0,1],[1,0]]``),
    cross-entropy, ``FFNet([2, 5, 2])`` with Linear/Tanh/Softmax layers.  ``T`` is
    ignored."""
    x, bits = _xor_rows(n, rng)
    return [x, one_hot(bits, 2), np.ones(n)]


def _integrator(T: int, n: int, rng: np.random.Generator) -> list:
    r"""``demos.integrator``: a constant input and its running integral.

    Row ``i`` holds the constant ``c_i`` at every one of ``T`` steps (the demo's
    ``sig_len``, default 10), with ``c_i ~ U[0.1, 0.9)`` (the demo uses the fixed grid
    ``linspace(0.1, 0.9, n)`` of ``n_inputs = 15`` rows and tests on it; drawing ``c``
    makes the validation rows new ones).  The target is ``y_t = c · t/(T − 1)``
    (``outer(c, linspace(0, 1, T))``): the integral of the input with step
    ``Δ = 1/(T − 1)`` from ``y_0 = 0``, i.e. ``y_t = Δ Σ_{τ<t} x_τ`` — not the plain sum
    ``Σ_{τ≤t} x_τ`` the package's docs write.
    Targets at every step (mask all 1), squared error; the demo trains
    ``RNNet([1, 10, 1])`` (logistic) with ``HessianFree(CG_iter=100)`` for 30 epochs and
    tests on the training data itself.

    Tolerance: ``|s − y| ≤ 0.04`` at every
    step, about 4 % of the target range ``[0, 0.9]`` (Martens & Sutskever's real-valued
    criterion); the package's test asks for a loss below ``1e-4``, which is tighter."""
    c = rng.uniform(0.1, 0.9, n)
    x = np.repeat(c[:, None], T, axis=1)[:, :, None]
    y = np.outer(c, np.linspace(0.0, 1.0, T))[:, :, None]
    return [x, y, np.ones((n, T))]


def _adding(T: int, n: int, rng: np.random.Generator) -> list:
    r"""``demos.adding``: the package's own adding problem (default ``T = 50``).

    Exactly ``T`` steps, two channels: values ``v_t ~ U[0, 1)`` at every step and a marker
    channel that is 1 at one step ``i ∈ [0, ⌊T/10⌋)`` and one ``j ∈ [⌊T/10⌋, ⌊T/2⌋)``,
    else 0 (no start or end symbols, unlike Sutskever's version).  The single target,
    ``y = v_i + v_j`` at the last step ``T − 1``, is the demo's (NaN targets elsewhere
    become mask 0).  Squared error; the demo reports the test squared error only, so the
    tolerance ``|s − y| ≤ 0.04`` is Martens & Sutskever's criterion for the same problem.
    For ``T < 10`` the windows are clamped to ``[0, 1)`` and ``[1, max(⌊T/2⌋, 2))``."""
    first_hi = max(T // 10, 1)
    second_hi = max(T // 2, first_hi + 1)
    if second_hi > T:
        raise ValueError(f"T is too small for adding: {T} < {second_hi}")
    rows = np.arange(n)
    values = rng.random((n, T))
    first = rng.integers(0, first_hi, size=n)
    second = rng.integers(first_hi, second_hi, size=n)

    x = np.zeros((n, T, 2))
    x[:, :, 0] = values
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = np.zeros((n, T, 1))
    y[:, -1, 0] = values[rows, first] + values[rows, second]
    mask = np.zeros((n, T))
    mask[:, -1] = 1.0
    return [x, y, mask]


FF_XOR = Problem(
    "ff_xor", n_in=2, n_out=1, loss="squared_error", error="abs", tolerance=0.5,
    recurrent=False, generate=_ff_xor, default_T=1,
    doc="hessianfree demos.xor: 2-input xor, one squared-error output")
FF_XOR_XENT = Problem(
    "ff_xor_xent", n_in=2, n_out=2, loss="softmax_xent", error="argmax", tolerance=0.0,
    recurrent=False, generate=_ff_xor_xent, default_T=1,
    doc="hessianfree demos.crossentropy: xor as two softmax classes")
INTEGRATOR = Problem(
    "integrator", n_in=1, n_out=1, loss="squared_error", error="abs", tolerance=0.04,
    recurrent=True, generate=_integrator, default_T=10,
    doc="hessianfree demos.integrator: running integral of a constant input")
ADDING = Problem(
    "adding", n_in=2, n_out=1, loss="squared_error", error="abs", tolerance=0.04,
    recurrent=True, generate=_adding, default_T=50, min_T=2,
    doc="hessianfree demos.adding: sum of two marked values, read out at step T-1")

PROBLEMS = {p.name: p for p in (FF_XOR, FF_XOR_XENT, INTEGRATOR, ADDING)}
