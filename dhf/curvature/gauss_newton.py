r"""Gauss-Newton-vector products :math:`G v = J^\top H_L J v` via pushforward/pullback.

The three steps of Martens (2010, §4.2) and theano-hf's ``gauss_newton_product``:

1. :math:`J v` — ``pushforward(s, params, v)`` (forward mode, :func:`jacobian_vector`);
2. :math:`H_L J v` — a pullback of :math:`\partial L/\partial s` through ``s`` with
   cotangent :math:`Jv`: the full Hessian of the loss in ``s`` (exact for softmax
   cross-entropy, not a diagonal approximation);
3. :math:`J^\top (H_L J v)` — ``pullback(s, params, H_L J v)``.
"""
from __future__ import annotations

from typing import Sequence

import pytensor.tensor as pt
from pytensor.gradient import grad, pullback, pushforward
from pytensor.graph.traversal import apply_ancestors
from pytensor.scan.op import Scan

from dhf.curvature.pushforward import pushforward_reusing_states
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
    Jv = jacobian_vector(outputs, list(params), list(tangents))
    HJv = [h(jv) for h, jv in zip(hessian_fns, Jv)]
    return pullback(outputs, list(params), HJv)


def jacobian_vector(outputs, params: list, tangents: list, through: str = "auto") -> list:
    r""":math:`J v` of ``outputs`` in ``params`` along ``tangents``.

    ``through`` says how it is built: ``"ops"``, node by node from each Op's own
    pushforward, a ``scan``'s as a loop over the tangent alone that reads the states the
    scan computed (:func:`dhf.curvature.pushforward.pushforward_reusing_states`);
    ``"pullbacks"``, as the pullback of a pullback (Towns, 2017), PyTensor's default,
    which through a ``scan`` is two more backward loops over the steps; ``"auto"``, the
    first for a graph with a ``scan`` and the second otherwise, and the second for a
    graph with an Op (outside a scan's step) that has no pushforward of its own.

    Measured, the Gv product against the gradient of the same graph (T = 50, 256 rows,
    float32, one thread, ``OMP_NUM_THREADS=1 python scripts/bench/pushforward.py``),
    ``"ops"`` against ``"pullbacks"``: the tanh RNN's generic graph 1.04 against 1.69 ×
    (JAX), 1.09 against 1.56 × (Numba); the LSTM 1.12 against 1.49 × (JAX), 1.21 against
    1.56 × (Numba); a 2-layer tanh RNN 0.96 against 1.50 × (JAX), 1.33 against 1.70 ×
    (Numba).  Without a ``scan`` neither form wins throughout (the MNIST autoencoder 1.04
    against 0.97 × under JAX, 1.15 against 1.13 × under Numba), and the pullbacks stay.
    """
    if through == "auto":
        scans = any(isinstance(node.op, Scan) for node in apply_ancestors(outputs))
        through = "ops" if scans else "pullbacks"
    if through == "ops":
        try:
            return pushforward_reusing_states(outputs, params, tangents)
        except NotImplementedError:  # an Op of the graph has no pushforward of its own
            pass
    elif through != "pullbacks":
        raise ValueError(f"through must be 'auto', 'ops' or 'pullbacks', got {through!r}")
    return pushforward(outputs, params, tangents)


def loss_hessian_product(loss, output, u):
    """:math:`H_L u`, the loss's Hessian in ``output`` times ``u``, by differentiating
    :math:`\\partial L / \\partial s` once more (the explicit recurrences use it too)."""
    return pullback(grad(loss, output), output, u)
