r"""Explicit Gauss-Newton product for the built-in tanh RNN (the fast path).

The generic :func:`~dhf.curvature.gauss_newton.model_gauss_newton_product` differentiates
through ``scan`` twice, and PyTensor's scan gradient accumulates each weight's gradient
inside the loop, one outer product per step.  Here the R-forward and backward recurrences
are written out (Martens & Sutskever 2011, supplement; Pearlmutter 1994).  The two
sequential loops are fused Numba kernels under Numba and ``jax.lax.scan`` loops under JAX
(:mod:`dhf.curvature.tanh_recurrence`): each step is its GEMMs with the (N, H) state and
one pass over it.  Every product that does not have to wait for the previous step (the
input tangent, the weight gradients) is one batched GEMM outside the loops:

.. math::
    R a_t &= \underbrace{x_t V_{in} + V_b}_{\text{batched}} + h_{t-1} V_{rec}
             + R h_{t-1} W_{rec}, \qquad R h_t = (1 - h_t^2) \odot R a_t \\
    R s &= R h_T W_{out} + h_T V_{out} + V_{b,out}, \qquad u = H_L\, R s \\
    \delta a_t &= (1 - h_t^2) \odot (\delta h_t + \lambda\mu\, R a_t), \qquad
    \delta h_{t-1} = \delta a_t W_{rec}^\top + \text{(output cotangent)} \\
    G v &= \Big(\textstyle\sum_t x_t^\top \delta a_t,\ \sum_t h_{t-1}^\top \delta a_t,\
          \sum_t \delta a_t,\ \delta h_0,\ h^\top u,\ \sum u\Big)

where ``V`` are the tangent's blocks and the structural-damping term uses the tanh
matching-loss curvature :math:`D = 1 - h_t^2`.  The result equals the generic product
(both are checked against a dense :math:`J^\top H_L J`).
"""
from __future__ import annotations

import pytensor.tensor as pt

from dhf.curvature.gauss_newton import loss_hessian_product
from dhf.curvature.tanh_recurrence import (tanh_backward, tanh_backward_readout,
                                           tanh_r_forward, tanh_r_forward_readout)


def tanh_rnn_gauss_newton(parts: dict, spec, tangents, structural_weight=None) -> list:
    """``Gv`` for :func:`dhf.nets.rnn`, summed over the batch.

    ``parts`` holds the builder's symbolic pieces: ``x`` (N, T, I), ``h`` (T, N, H) the
    hidden states, ``h_init`` (N, H), ``W_rec``, ``W_out`` and ``output_steps``.
    """
    V_in, V_rec, V_b, V_h0, V_out, V_bout = tangents
    x, h, h_init = parts["x"], parts["h"], parts["h_init"]
    W_rec, W_out = parts["W_rec"], parts["W_out"]
    last = parts["output_steps"] == "last"
    x_t = x.dimshuffle(1, 0, 2)  # (T, N, I)
    d = 1.0 - pt.sqr(h)  # tanh'(a_t)

    # R-forward: the input terms as one batched GEMM; the recurrence (the Op) does the two
    # per-step GEMMs, R h_{t-1} W_rec and h_{t-1} V_rec.
    drive = pt.dot(x_t, V_in) + V_b
    Rh_init = pt.alloc(V_h0, h.shape[1], h.shape[2])
    if last:
        Ra, Rh_last = tanh_r_forward(drive, h, h_init, Rh_init, W_rec, V_rec)
        Rs = pt.dot(Rh_last, W_out) + pt.dot(h[-1], V_out) + V_bout
    else:  # the readout of every step inside the loop (tanh_recurrence's readout kernels)
        Ra, _, Rs_t = tanh_r_forward_readout(drive, h, h_init, Rh_init, W_rec, V_rec,
                                             W_out, V_out)
        Rs = (Rs_t + V_bout).dimshuffle(1, 0, 2)
    loss = pt.sum(spec.example_losses())
    u = loss_hessian_product(loss, spec.output, Rs)  # H_L R s, same shape as s

    if structural_weight is not None:
        mask = spec.hidden[0][2]  # per-step weights of the damping term, or None
        damping_term = structural_weight * Ra * (mask if mask is not None else 1.0)
    else:
        damping_term = None
    # Backward: the output cotangent on h, then one GEMM per step with W_recᵀ.  Read out
    # at the last step only, the cotangent enters as the recurrence's initial value; at
    # every step, inside the loop.
    if last:
        g_W_out, g_b_out = pt.dot(h[-1].T, u), pt.sum(u, axis=0)
        direct = d * (damping_term if damping_term is not None else pt.zeros_like(h))
        da, dh0 = tanh_backward(direct, h, pt.dot(u, W_out.T), W_rec)
    else:
        u_t = u.dimshuffle(1, 0, 2)
        g_b_out = pt.sum(u_t, axis=(0, 1))
        damp = damping_term if damping_term is not None else pt.zeros_like(h)
        da, dh0, g_W_out = tanh_backward_readout(damp, h, pt.zeros_like(h[0]), W_rec, u_t,
                                                 W_out)
    # da[t] = ∂/∂a_t, dh0 = ∂/∂h_0
    g_W_in = pt.tensordot(x_t, da, axes=[[0, 1], [0, 1]])
    # Σ_t h_{t-1}ᵀ δa_t, with h_{t-1} read from h itself (shifted by one step): one GEMM
    # on (T·N, H) views, no shifted or transposed copy.
    H = h.shape[2]
    g_W_rec = (pt.dot(h[:-1].reshape((-1, H)).T, da[1:].reshape((-1, H)))
               + pt.dot(h_init.T, da[0]))
    g_b = pt.sum(da, axis=(0, 1))
    g_h0 = pt.sum(dh0, axis=0)
    return [g_W_in, g_W_rec, g_b, g_h0, g_W_out, g_b_out]
