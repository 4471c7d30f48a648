r"""Gauss-Newton-vector products :math:`G v = J^\top H_L J v` via pushforward/pullback.

The three steps of Martens (2010, §4.2) and theano-hf's ``gauss_newton_product``:

1. :math:`J v` — ``pushforward(s, params, v)`` (forward mode, PyTensor's R-operator);
2. :math:`H_L J v` — a pullback of :math:`\partial L/\partial s` through ``s`` with
   cotangent :math:`Jv`: the full Hessian of the loss in ``s`` (exact for softmax
   cross-entropy, not a diagonal approximation);
3. :math:`J^\top (H_L J v)` — ``pullback(s, params, H_L J v)``.
"""
from __future__ import annotations

from typing import Sequence

import pytensor.tensor as pt
from pytensor.gradient import grad, pullback, pushforward

from dhf.losses import HIDDEN_CURVATURE


def gauss_newton_product(loss, output, params: Sequence, tangents: Sequence) -> list:
    """Symbolic :math:`J^\\top H_L J v`, one variable per parameter.

    Parameters
    ----------
    loss : scalar variable that depends on ``params`` only through ``output``.
    output : ``s``, the variable the Gauss-Newton split is taken at.
    params : variables (usually shared) the Jacobian is taken with respect to.
    tangents : one variable per parameter, same shapes: the ``v`` in ``Gv``.
    """
    return _gn([output], [lambda Jv: loss_hessian_product(loss, output, Jv)], params,
               tangents)


def model_gauss_newton_product(spec, tangents: Sequence, structural_weight=None) -> list:
    r"""``Gv`` for a :class:`~dhf.model.ModelSpec`, summed over the batch.

    With ``structural_weight`` (λμ, a symbolic scalar) the structural-damping term
    :math:`\lambda\mu \sum_a J_a^\top D_a J_a v` is added, where ``D_a`` is the diagonal
    Hessian of the matching loss of each hidden nonlinearity in its pre-activation ``a``.
    The loss and the damping share one forward (R-op) pass and one pullback.
    """
    loss = pt.sum(spec.example_losses())
    outputs = [spec.output]
    hessians = [lambda Jv: loss_hessian_product(loss, spec.output, Jv)]
    if structural_weight is not None:
        for a, nonlinearity, weights in spec.hidden:
            d = HIDDEN_CURVATURE[nonlinearity](a)
            if weights is not None:
                d = d * weights
            outputs.append(a)
            hessians.append(lambda Ja, d=d: structural_weight * d * Ja)
    return _gn(outputs, hessians, spec.params, tangents)


def _gn(outputs, hessian_fns, params, tangents) -> list:
    Jv = pushforward(outputs, list(params), list(tangents))
    HJv = [h(jv) for h, jv in zip(hessian_fns, Jv)]
    return pullback(outputs, list(params), HJv)


def loss_hessian_product(loss, output, u):
    """:math:`H_L u`, the loss's Hessian in ``output`` times ``u``, by differentiating
    :math:`\\partial L / \\partial s` once more (the explicit recurrences use it too)."""
    return pullback(grad(loss, output), output, u)
