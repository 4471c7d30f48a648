r"""The symbolic graph of Martens' diagonal preconditioner's statistics (Martens 2010,
§4.7): the per-example squared gradients :math:`\sum_i \nabla f_i \odot \nabla f_i`
of a model whose dense layers hold every parameter, from one backward pass
(:func:`dense_squared_grads`; the worker compiles it, and
:func:`dhf.preconditioner.martens_preconditioner` turns the sums into :math:`M^{-1}`).
"""
from __future__ import annotations

import pytensor.tensor as pt
from pytensor.gradient import grad

from dhf.model import ModelSpec


def covers(dense, params) -> bool:
    """Do the dense layers ``(a, [(h, W), ...], b)`` hold every parameter, once?"""
    held = [W for _, pairs, _ in dense for _, W in pairs] + [b for _, _, b in dense]
    return bool(dense) and len(held) == len(params) and {id(p) for p in held} == {
        id(p) for p in params}


def dense_squared_grads(spec: ModelSpec) -> list:
    """Σ_i (∂f_i/∂p)² for every parameter ``p``, in ``spec.params``' order, from one
    backward pass: δ = ∂(Σ_i f_i)/∂a has example i's gradient in row i, so the weights'
    per-example squares sum to (h²)ᵀ(δ²) and the bias's to Σ_i δ_i²
    (:class:`~dhf.model.ModelSpec`'s ``dense``)."""
    pre = [a for a, _, _ in spec.dense]
    deltas = grad(pt.sum(spec.example_losses()), pre)
    squares = {}
    for (_, pairs, b), delta in zip(spec.dense, deltas):
        d2 = pt.square(delta)
        for h, W in pairs:
            squares[id(W)] = pt.dot(pt.square(h).T, d2)
        squares[id(b)] = pt.sum(d2, axis=0)
    return [squares[id(p)] for p in spec.params]
