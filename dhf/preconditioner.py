r"""Martens' diagonal preconditioner (Martens 2010, §4.7).

.. math:: M = \Big(\operatorname{diag}\big(\tfrac1N \textstyle\sum_i \nabla f_i \odot
          \nabla f_i\big) + \lambda I\Big)^{\xi}, \qquad \xi = 0.75

built from *per-example* squared gradients (the empirical Fisher diagonal).  CG applies
:math:`M^{-1}`.
"""
from __future__ import annotations

import numpy as np


def martens_preconditioner(sq_grad_mean: np.ndarray, damping: float,
                           exponent: float = 0.75) -> np.ndarray:
    """The inverse diagonal :math:`M^{-1} = (\\bar{g^2} + \\lambda)^{-\\xi}` for
    :func:`dhf.cg.pcg`."""
    return (np.asarray(sq_grad_mean, dtype=np.float64) + damping) ** (-exponent)
