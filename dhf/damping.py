r"""Levenberg–Marquardt adjustment of the Tikhonov damping λ.

Pure functions (kfac-jax's ``_compute_new_damping_and_rho`` is the model).

Notes
-----
The reduction ratio compares the actual change of the objective with the change
predicted by the *undamped* quadratic model (Martens 2010, §4.1):

.. math:: \rho = \frac{f(\theta + \delta) - f(\theta)}
                      {g^\top \delta + \tfrac12 \delta^\top G \delta}

and λ is boosted by 3/2 when ρ < 1/4 (or ρ is not finite) and dropped by 2/3 when
ρ > 3/4, then clipped to ``[min_damping, max_damping]``.
"""
from __future__ import annotations

import math

BOOST = 3.0 / 2.0
DROP = 2.0 / 3.0
LOW_RHO = 0.25
HIGH_RHO = 0.75
#: λ's bounds (``optimizer.min_damping``, ``optimizer.max_damping``).
MIN_DAMPING = 1e-6
MAX_DAMPING = 1e8


def reduction_ratio(loss_before: float, loss_after: float, g_dot_delta: float,
                    delta_G_delta: float) -> float:
    """ρ from the undamped quadratic model; ``-inf`` when it is undefined.

    A model that predicts no decrease (denominator >= 0) or a non-finite loss gives
    ``-inf``, which the update rule treats as a failure.
    """
    predicted = g_dot_delta + 0.5 * delta_G_delta
    actual = loss_after - loss_before
    if not (math.isfinite(predicted) and math.isfinite(actual)) or predicted >= 0.0:
        return -math.inf
    return actual / predicted


def update_damping(damping: float, rho: float, *, min_damping: float = MIN_DAMPING,
                   max_damping: float = MAX_DAMPING, boost: float = BOOST,
                   drop: float = DROP) -> float:
    """New λ from ρ: ×3/2 if ρ < 1/4 or not finite, ×2/3 if ρ > 3/4, then clipped.

    >>> update_damping(1.0, 0.9), update_damping(1.0, 0.5), update_damping(1.0, 0.1)
    (0.6666666666666666, 1.0, 1.5)
    """
    if not math.isfinite(rho) or rho < LOW_RHO:
        damping *= boost
    elif rho > HIGH_RHO:
        damping *= drop
    return min(max(damping, min_damping), max_damping)
