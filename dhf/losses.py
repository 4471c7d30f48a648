r"""Matching losses on the output ``s`` and the error metrics that go with them.

A matching loss is convex in ``s`` and pairs with the output nonlinearity, so the
Gauss-Newton matrix built on ``s`` is positive semi-definite (Schraudolph 2002; Martens
2010, §4.2).  Each loss here returns *per-element* terms, summed by the model over the
output axis and over (masked) time steps to give one loss per example.

=================  ================================  =============================
name               loss per output vector            Hessian in ``s`` times ``u``
=================  ================================  =============================
squared_error      ½‖s − y‖²                          u
sigmoid_xent       Σ softplus(s) − y s                σ(s)(1 − σ(s)) ⊙ u
softmax_xent       logsumexp(s) − yᵀs                 p ⊙ u − p (pᵀu),  p = softmax(s)
=================  ================================  =============================

The Hessian column is what :func:`dhf.curvature.gauss_newton_product` computes by
autodiff; ``hessian_product`` here is the analytic form, kept as an independent
reference for tests.
"""
from __future__ import annotations

from typing import Callable

import pytensor.tensor as pt

from dhf import activations

LOSSES = ("squared_error", "sigmoid_xent", "softmax_xent")


def elementwise(name: str, s, y):
    """Loss terms of shape ``s.shape[:-1]`` (summed over the output axis)."""
    if name == "squared_error":
        return 0.5 * pt.sum(pt.sqr(s - y), axis=-1)
    if name == "sigmoid_xent":
        return pt.sum(pt.softplus(s) - y * s, axis=-1)
    if name == "softmax_xent":
        return pt.logsumexp(s, axis=-1) - pt.sum(y * s, axis=-1)
    raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)} "
                     "or a callable (output, targets) -> scalar")


#: How a prediction is judged wrong, per output vector (shape ``s.shape[:-1]``).
ERRORS = ("sign", "argmax", "abs")
#: The error that goes with each named loss when the model names none.
DEFAULT_ERROR = {"sigmoid_xent": "sign", "softmax_xent": "argmax"}


def element_errors(kind: str, s, y, tolerance: float = 0.0):
    """0/1 errors of shape ``s.shape[:-1]``.

    ``"sign"``: a logistic output on the wrong side of ½ (``s > 0`` vs ``y > ½``);
    ``"argmax"``: the largest output is not the target class; ``"abs"``: some output is
    further than ``tolerance`` from its target (Sutskever's addition problem: 0.04).
    """
    if kind == "sign":
        return pt.any(pt.neq(s > 0, y > 0.5), axis=-1)
    if kind == "argmax":
        return pt.neq(pt.argmax(s, axis=-1), pt.argmax(y, axis=-1))
    if kind == "abs":
        return pt.any(pt.gt(pt.abs(s - y), tolerance), axis=-1)
    raise ValueError(f"unknown error {kind!r}; expected one of {', '.join(ERRORS)} or a "
                     "callable (output, targets) -> 0/1 per output vector")


def hessian_product(name: str, s, u):
    """Analytic ``H_L(s) u`` for a named loss (per element, no batch reduction)."""
    if name == "squared_error":
        return u
    if name == "sigmoid_xent":
        p = pt.sigmoid(s)
        return p * (1 - p) * u
    if name == "softmax_xent":
        p = pt.special.softmax(s, axis=-1)
        return p * u - p * pt.sum(p * u, axis=-1, keepdims=True)
    raise ValueError(f"no analytic Hessian for loss {name!r}")


#: Diagonal Hessian, in the pre-activation ``a``, of the matching loss of each hidden
#: nonlinearity: what structural damping penalises (Martens & Sutskever 2011, §3.2).
HIDDEN_CURVATURE: dict[str, Callable] = {
    "tanh": lambda a: 1.0 - pt.sqr(activations.tanh(a)),
    "logistic": lambda a: pt.sigmoid(a) * (1.0 - pt.sigmoid(a)),
    "linear": lambda a: pt.ones_like(a),
}
