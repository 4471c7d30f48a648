r"""Multi-layer recurrent nets: tanh RNN and LSTM layers, stacked, with a linear readout.

Inputs ``x`` are ``(N, T, n_in)``, batch-major; inside, everything is time-major
``(T, N, ·)`` as :func:`pytensor.scan` wants.  Hidden layer ``k`` reads layer ``k−1``'s
output at the same step (``h^{(-1)}_t = x_t``) and is one of

- a **tanh recurrent layer** (Elman 1990; Martens & Sutskever 2011):

  .. math:: a_t = h^{(k-1)}_t W_{in} + b + h_{t-1} W_{rec}, \qquad h_t = \tanh(a_t),

- an **LSTM layer** with forget gate (Hochreiter & Schmidhuber 1997; Gers, Schmidhuber &
  Cummins 2000), no peepholes, gates stacked ``[i, f, o, g]`` in one matrix:

  .. math:: z_t = h^{(k-1)}_t W_{in} + b + h_{t-1} W_{rec}, \quad
            i, f, o = \sigma(z^{i,f,o}_t), \quad g = \tanh(z^g_t), \\
            c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t),

- a **feed-forward tanh layer**, :math:`h_t = \tanh(h^{(k-1)}_t W_{in} + b)`, for the hidden
  layers not listed in ``rec_layers``.

The readout is linear, :math:`s_t = h^{(K)}_t W_{out} + b_{out}` (the logits for the
cross-entropy losses), at every step or at the last one.  Each layer's input projection
:math:`h^{(k-1)} W_{in} + b` is one GEMM over all steps, outside the recurrence; each
recurrent layer is one ``scan`` (a stack is a sequence of scans, so a feed-forward layer
between them is one GEMM too).

Structural damping (Martens & Sutskever 2011, §3.2) penalises, with weight λμ, the
Gauss-Newton matrix of a matching loss on hidden units, :math:`J_a^\top D_a J_a` with
:math:`D_a = \tanh'(a)`: it keeps an update from changing the recurrent state so much that
the quadratic model stops describing the net.  Exposed (``spec.hidden``):

- tanh layers: the pre-activations :math:`a_t`, as in the paper;
- LSTM layers: the cell state :math:`c_t` with the tanh curvature
  :math:`1 - \tanh^2(c_t)`.  The paper defines the damping for tanh RNNs only; ``c_t`` is
  the LSTM's carried state and the pre-activation of the tanh that makes ``h_t``, the
  analogue of ``a_t`` (damping the candidate ``z^g`` instead would only damp each step's
  write, not the state that carries it across time);
- feed-forward hidden layers: nothing (they carry no state).

With ``mask=True`` the mask ``(N, T)`` weighs the loss terms, so masked steps contribute
nothing to the loss or the gradient.  The hidden state is damped at **every step of the
sequence**, whatever the loss mask, up to the row's last step with a nonzero mask; steps
after it are padding and are not damped.  That is Martens & Sutskever's definition: the
damping keeps the state from moving at every step it exists, and a single-target problem
(addition, xor, temporal order: one 1 in the mask, at the end) still carries its state
through all T steps (Sutskever's release passes a mask of ones to the damping term).  The
release pads a batch to its longest sequence with more noise after each target and damps
those steps too; here a sequence ends at its target, which leaves the variable-length
problems about 4 % less damping than the release.

``loss_average`` says what the objective is an average over.  ``"sequence"``: each row's
masked terms are summed and the sum is averaged over rows.  ``"output"``: each row's terms
(and its damping terms) are divided by its number of loss terms ``Σ_t mask_t``, so that,
when every row has the same number, the objective is the average over every output the
batch has: Sutskever's release (``DataAccess.size`` is the mask's sum), whose λ₀ and L2
are in those units.  The two differ only for problems with a loss at many steps.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

from dhf import activations
from dhf.curvature.recurrent import tanh_rnn_gauss_newton
from dhf.errors import UserError
from dhf.model import ModelSpec
from dhf.nets import init as inits

CELLS = ("tanh", "lstm")
LOSS_AVERAGES = ("sequence", "output")
#: LSTM gates in the order they are stacked along the last axis of W_in, W_rec and b.
LSTM_GATES = ("input", "forget", "output", "candidate")


def recurrent(n_in: int, hidden: Sequence[int] | int, n_out: int, *,
              rec_layers: Sequence[int] | None = None, cell: str = "tanh",
              output_steps: str = "all", mask: bool = False, loss="squared_error",
              init="sparse", init_scale: float = 1.0, spectral_radius: float | None = None,
              input_scale: float = 1.0, forget_bias: float = 1.0, seed: int = 0,
              loss_average: str = "sequence", h0_scale: float = 0.0,
              dtype: str = "float64") -> ModelSpec:
    """A stack of recurrent (and feed-forward) tanh or LSTM layers; see the module
    docstring.

    Parameters
    ----------
    n_in, n_out : input and output widths.
    hidden : hidden layer widths, e.g. ``[100]`` or ``[50, 50]`` (an int is one layer).
    rec_layers : indices into ``hidden`` of the recurrent layers (default: all); the
        others are feed-forward tanh layers applied at every step.
    cell : ``"tanh"`` or ``"lstm"``, the kind of every recurrent layer.
    output_steps : ``"all"`` — ``s`` and targets ``(N, T, n_out)``; ``"last"`` — ``(N,
        n_out)`` read out at the last step.
    mask : add a ``(N, T)`` mask input (``output_steps="all"`` only) weighing the loss
        terms of each step; structural damping then covers every step up to the row's
        last masked one.
    loss : ``"squared_error"``, ``"sigmoid_xent"``, ``"softmax_xent"`` or a callable.
    init, init_scale : a :func:`dhf.nets.init.initialise` spec and its gain, for every
        weight matrix.  The default is Sutskever's HF-RNN recipe: sparse, 15 incoming
        connections per unit, N(0, 1/15) (all of them, at that scale, when the fan-in is
        15 or less).  LSTM
        matrices are initialised one gate block at a time.
    spectral_radius : if given, each recurrent matrix (each gate's block for an LSTM) is
        rescaled to it after the init (1.1 in Sutskever et al. 2013).
    input_scale : multiplier on the input-to-hidden weights of the first layer (those that
        read ``x``); 0.25 in Sutskever's code after the sparse init (see
        :mod:`dhf.nets.init`).
    forget_bias : initial bias of the LSTM forget gates.  1 keeps the cells remembering
        at the start of training (Gers et al. 2000 use positive forget biases;
        Jozefowicz, Zaremba & Sutskever 2015 recommend 1).  Every other bias is 0.
    seed : seeds every weight.
    loss_average : ``"sequence"`` or ``"output"`` (with ``mask``; see the module
        docstring).
    h0_scale : the learned initial states ``h0_k`` start N(0, h0_scale²) instead of 0
        (Sutskever's release sparsifies every parameter, its (1, H) initial state
        included, which keeps all of them: N(0, 1/15)).  Drawn after every weight, so
        that the weights do not depend on it.

    Parameters (shared variables), for each hidden layer ``k``: ``W_in_k``, then for a
    recurrent layer ``W_rec_k``, ``b_k``, ``h0_k`` (learned initial state) and for
    an LSTM ``c0_k`` (initial cell, zeros); for a feed-forward layer ``b_k``.  Then
    ``W_out``, ``b_out``.
    """
    hidden = [int(hidden)] if np.isscalar(hidden) else [int(h) for h in hidden]
    rec = _recurrent_layers(rec_layers, len(hidden))
    _check(n_in, hidden, n_out, cell, output_steps, mask, loss_average)
    rng = np.random.default_rng(seed)
    weights = dict(spec=init, gain=float(init_scale), rho=spectral_radius, dtype=dtype)

    x = pt.tensor3("x", dtype=dtype)
    m = pt.matrix("mask", dtype=dtype) if mask else None
    loss_weights = damp_weights = None
    if mask:
        damp_weights = valid_steps(m)
        if loss_average == "output":
            per_row = pt.sum(m, axis=1, keepdims=True)
            per_row = pt.switch(pt.gt(per_row, 0), per_row, 1.0)
            loss_weights, damp_weights = m / per_row, damp_weights / per_row
        damp_weights = damp_weights.dimshuffle(1, 0, "x")  # (T, N, 1) like a_t
    h = x.dimshuffle(1, 0, 2)  # (T, N, n_in)
    params, structural = [], []
    for k, width in enumerate(hidden):
        n_prev = n_in if k == 0 else hidden[k - 1]
        in_gain = input_scale if k == 0 else 1.0
        if k not in rec:
            layer_params, h = _feedforward_layer(rng, k, h, n_prev, width, in_gain, weights)
        elif cell == "tanh":
            layer_params, h, a = _tanh_layer(rng, k, h, n_prev, width, in_gain, weights)
            structural.append((a, "tanh", damp_weights))
        else:
            layer_params, h, c = _lstm_layer(rng, k, h, n_prev, width, in_gain, weights,
                                             forget_bias)
            structural.append((c, "tanh", damp_weights))
        params += layer_params

    W_out = _shared(_matrix(rng, (hidden[-1], n_out), weights), "W_out", dtype)
    b_out = _shared(np.zeros(n_out), "b_out", dtype)
    params += [W_out, b_out]
    if h0_scale:
        for p in params:
            if p.name.startswith("h0_"):
                p.set_value(np.asarray(h0_scale * rng.standard_normal(p.get_value().shape),
                                       dtype=dtype))
    if output_steps == "last":
        s = pt.dot(h[-1], W_out) + b_out
        y = pt.matrix("y", dtype=dtype)
    else:
        s = (pt.dot(h, W_out) + b_out).dimshuffle(1, 0, 2)
        y = pt.tensor3("y", dtype=dtype)
    explicit = None
    if cell == "tanh" and len(hidden) == 1 and 0 in rec:
        # One tanh RNN layer: dhf.nets.rnn's structure, so its explicit Gv recurrences
        # (the fast path, masks included) apply.
        W_rec, h0 = params[1], params[3]
        parts = dict(x=x, h=h, h_init=pt.alloc(h0, x.shape[0], hidden[0]), W_rec=W_rec,
                     W_out=W_out, output_steps=output_steps)
        explicit = functools.partial(tanh_rnn_gauss_newton, parts)
    return ModelSpec(inputs=[x], targets=y, params=params, output=s, loss=loss, mask=m,
                     hidden=structural, trim_padding=mask, gauss_newton=explicit,
                     loss_weights=loss_weights)


def valid_steps(mask):
    """``(N, T)``: 1 at every step up to and including each row's last step with a nonzero
    ``mask``, 0 after it (the padding)."""
    seen_later = pt.cumsum(pt.neq(mask, 0).astype(mask.dtype)[:, ::-1], axis=1)[:, ::-1]
    return pt.gt(seen_later, 0).astype(mask.dtype)


# -- layers --------------------------------------------------------------------------------
def _tanh_layer(rng, k, u, n_prev, H, in_gain, weights):
    """A tanh RNN layer over the sequence ``u`` (T, N, n_prev): ``(params, h, a)``."""
    dtype = weights["dtype"]
    W_in = _shared(in_gain * _matrix(rng, (n_prev, H), weights), f"W_in_{k}", dtype)
    W_rec = _shared(_recurrent_matrix(rng, H, weights), f"W_rec_{k}", dtype)
    b = _shared(np.zeros(H), f"b_{k}", dtype)
    h0 = _shared(np.zeros(H), f"h0_{k}", dtype)
    projected = pt.dot(u, W_in) + b  # one GEMM for every step

    def step(xp_t, h_prev):
        a_t = xp_t + pt.dot(h_prev, W_rec)
        return a_t, activations.tanh(a_t)

    h_init = pt.alloc(h0, u.shape[1], H)
    a, h = pytensor.scan(step, sequences=projected, outputs_info=[None, h_init],
                         return_updates=False, name=f"tanh_rnn_{k}")
    return [W_in, W_rec, b, h0], h, a


def _lstm_layer(rng, k, u, n_prev, H, in_gain, weights, forget_bias):
    """An LSTM layer over ``u`` (T, N, n_prev): ``(params, h, c)``."""
    dtype = weights["dtype"]
    n_gates = len(LSTM_GATES)
    W_in = np.hstack([_matrix(rng, (n_prev, H), weights) for _ in range(n_gates)])
    W_rec = np.hstack([_recurrent_matrix(rng, H, weights) for _ in range(n_gates)])
    bias = np.zeros(n_gates * H)
    bias[H:2 * H] = forget_bias
    W_in = _shared(in_gain * W_in, f"W_in_{k}", dtype)
    W_rec = _shared(W_rec, f"W_rec_{k}", dtype)
    b = _shared(bias, f"b_{k}", dtype)
    h0 = _shared(np.zeros(H), f"h0_{k}", dtype)
    c0 = _shared(np.zeros(H), f"c0_{k}", dtype)
    projected = pt.dot(u, W_in) + b  # (T, N, 4H), one GEMM for every step

    def step(z_t, h_prev, c_prev):
        z = z_t + pt.dot(h_prev, W_rec)
        i = pt.sigmoid(z[:, :H])
        f = pt.sigmoid(z[:, H:2 * H])
        o = pt.sigmoid(z[:, 2 * H:3 * H])
        g = activations.tanh(z[:, 3 * H:])
        c = f * c_prev + i * g
        return o * activations.tanh(c), c

    n = u.shape[1]
    h, c = pytensor.scan(step, sequences=projected,
                         outputs_info=[pt.alloc(h0, n, H), pt.alloc(c0, n, H)],
                         return_updates=False, name=f"lstm_{k}")
    return [W_in, W_rec, b, h0, c0], h, c


def _feedforward_layer(rng, k, u, n_prev, H, in_gain, weights):
    """A per-step tanh layer: ``(params, tanh(u W_in + b))``."""
    dtype = weights["dtype"]
    W_in = _shared(in_gain * _matrix(rng, (n_prev, H), weights), f"W_in_{k}", dtype)
    b = _shared(np.zeros(H), f"b_{k}", dtype)
    return [W_in, b], activations.tanh(pt.dot(u, W_in) + b)


# -- initial values ------------------------------------------------------------------------
def _matrix(rng, shape, weights) -> np.ndarray:
    return inits.initialise(rng, shape, weights["spec"], gain=weights["gain"])


def _recurrent_matrix(rng, H, weights) -> np.ndarray:
    W = _matrix(rng, (H, H), weights)
    return W if weights["rho"] is None else inits.spectral_radius(W, weights["rho"])


def _shared(value, name: str, dtype: str):
    return pytensor.shared(np.asarray(value, dtype=dtype), name=name)


# -- validation ----------------------------------------------------------------------------
def _recurrent_layers(rec_layers, n_hidden: int) -> set[int]:
    if rec_layers is None:
        return set(range(n_hidden))
    rec = set()
    for k in rec_layers:
        if not isinstance(k, (int, np.integer)) or not 0 <= k < n_hidden:
            raise UserError(f"rec_layers: {k!r} is not a hidden layer index in "
                            f"0..{n_hidden - 1}")
        rec.add(int(k))
    return rec


def _check(n_in, hidden, n_out, cell, output_steps, mask, loss_average="sequence"):
    if not hidden or min(hidden) < 1 or n_in < 1 or n_out < 1:
        raise UserError(f"widths must be positive and hidden non-empty; got n_in={n_in}, "
                        f"hidden={hidden}, n_out={n_out}")
    if cell not in CELLS:
        raise UserError(f"cell {cell!r} is unknown; expected one of {', '.join(CELLS)}")
    if output_steps not in ("all", "last"):
        raise UserError(f"output_steps must be 'all' or 'last', got {output_steps!r}")
    if mask and output_steps != "all":
        raise UserError("mask=True weighs the loss of every step and needs "
                        "output_steps='all'")
    if loss_average not in LOSS_AVERAGES:
        raise UserError(f"loss_average {loss_average!r} is unknown; expected one of "
                        f"{', '.join(LOSS_AVERAGES)}")
