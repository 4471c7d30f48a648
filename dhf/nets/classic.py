"""theano-hf's models as it built them: the one-layer tanh RNN of its memorisation job
(its parameter names are the ones its checkpoints hold) and a plain
fully connected net for tests.  :func:`dhf.nets.recurrent` and
:func:`dhf.nets.feedforward` are the general builders.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable

from dhf import activations
from dhf.curvature.recurrent import tanh_rnn_gauss_newton
from dhf.model import ModelSpec


def _shared(value: np.ndarray, name: str, dtype: str) -> SharedVariable:
    return pytensor.shared(np.asarray(value, dtype=dtype), name=name)


def rnn(n_in: int, n_hidden: int, n_out: int, *, loss: str = "sigmoid_xent",
        output_steps: str = "last", init_scale: float = 0.2, seed: int = 0,
        dtype: str = "float64") -> ModelSpec:
    r"""A one-layer tanh RNN with a linear readout ``s``.

    .. math:: a_t = x_t W_{in} + h_{t-1} W_{rec} + b_h, \quad h_t = \tanh(a_t),
              \quad s = h_T W_{out} + b_{out}

    Inputs ``x`` are ``(N, T, n_in)``.  ``output_steps="last"`` reads out at the last step
    (targets ``(N, n_out)``, theano-hf's memorisation net); ``"all"`` at every step
    (targets ``(N, T, n_out)``).  The initial state ``h0`` is learned.  Weights start at
    ``init_scale * U(-1, 1)`` as in theano-hf's ``simple_RNN`` (spectral radius ≈ 1.15
    for 100 units).  The pre-activations ``a_t`` are exposed for structural damping.
    """
    rng = np.random.default_rng(seed)
    u = lambda *shape: init_scale * rng.uniform(-1.0, 1.0, shape)  # noqa: E731
    W_in = _shared(u(n_in, n_hidden), "W_in", dtype)
    W_rec = _shared(u(n_hidden, n_hidden), "W_rec", dtype)
    b_h = _shared(np.zeros(n_hidden), "b_h", dtype)
    h0 = _shared(np.zeros(n_hidden), "h0", dtype)
    W_out = _shared(u(n_hidden, n_out), "W_out", dtype)
    b_out = _shared(np.zeros(n_out), "b_out", dtype)

    x = pt.tensor3("x", dtype=dtype)
    # One GEMM for every step's input projection, outside the recurrence.
    x_proj = (pt.dot(x, W_in) + b_h).dimshuffle(1, 0, 2)  # (T, N, H)

    def step(xp_t, h_prev):
        a_t = xp_t + pt.dot(h_prev, W_rec)
        return a_t, activations.tanh(a_t)

    h_init = pt.alloc(h0, x.shape[0], n_hidden)
    a, h = pytensor.scan(step, sequences=x_proj, outputs_info=[None, h_init],
                         return_updates=False)
    if output_steps == "last":
        s = pt.dot(h[-1], W_out) + b_out
        y = pt.matrix("y", dtype=dtype)
    elif output_steps == "all":
        s = (pt.dot(h, W_out) + b_out).dimshuffle(1, 0, 2)
        y = pt.tensor3("y", dtype=dtype)
    else:
        raise ValueError(f"output_steps must be 'last' or 'all', got {output_steps!r}")
    parts = dict(x=x, h=h, h_init=h_init, W_rec=W_rec, W_out=W_out,
                 output_steps=output_steps)
    return ModelSpec(inputs=[x], targets=y, params=[W_in, W_rec, b_h, h0, W_out, b_out],
                     output=s, loss=loss, hidden=[(a, "tanh", None)],
                     gauss_newton=functools.partial(tanh_rnn_gauss_newton, parts))


def mlp(sizes: Sequence[int], *, hidden_nonlinearity: Callable = pt.tanh,
        loss: str = "squared_error", init_scale: float = 1.0, seed: int = 0,
        dtype: str = "float64") -> ModelSpec:
    """A fully connected net ``sizes[0] -> ... -> sizes[-1]``; ``s`` is the last affine map.

    Weights start as ``init_scale * N(0, 1/fan_in)``.
    """
    rng = np.random.default_rng(seed)
    x = pt.matrix("x", dtype=dtype)
    y = pt.matrix("y", dtype=dtype)
    params, h = [], x
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = _shared(init_scale * rng.normal(0, 1 / np.sqrt(a), (a, b)), f"W{k}", dtype)
        c = _shared(np.zeros(b), f"b{k}", dtype)
        params += [W, c]
        s = pt.dot(h, W) + c
        h = hidden_nonlinearity(s)
    return ModelSpec(inputs=[x], targets=y, params=params, output=s, loss=loss)
