r"""J v node by node, a ``scan``'s tangent loop reading the states the scan computed.

PyTensor's own pushforward of a ``scan`` (``Scan.pushforward``) is a new loop that carries
the primal state beside its tangent, so it runs the forward recurrence again, GEMM and
nonlinearity, in every Gv product, although the worker has cached the scan's states for
the whole update (:mod:`dhf.curvature.cache`).  For a scan whose states are each carried
one step (``sit_sot``: every recurrent net built with ``scan``),

.. math::
    h_t = f(x_t, h_{t-1}, \theta), \qquad
    \dot h_t = \partial_x f \, \dot x_t + \partial_h f \, \dot h_{t-1}
              + \partial_\theta f \, \dot\theta,

where the partial derivatives are taken at the stored :math:`(x_t, h_{t-1})`: the loop
here carries :math:`\dot h` alone and reads :math:`h_{t-1}` from the scan's own output,
so the forward states are computed once per update (Pearlmutter 1994; Martens &
Sutskever 2011, §4 on the R-forward pass).  The terms that do not wait for
:math:`\dot h_{t-1}` are computed for all steps before the loop, which keeps one GEMM a
step, :math:`\dot h_{t-1}\, \partial_h f`, as the tanh RNN's explicit recurrences do
(:mod:`dhf.curvature.tanh_recurrence`).  Every other node, and a scan with other kinds
of state, uses its Op's own pushforward.
"""
from __future__ import annotations

from typing import Sequence

import pytensor
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type, pushforward
from pytensor.graph.basic import Variable
from pytensor.graph.replace import clone_replace, vectorize_graph
from pytensor.graph.traversal import toposort
from pytensor.scan.op import Scan

from dhf.curvature.cache import split_at


def pushforward_reusing_states(outputs: Sequence[Variable], wrt: Sequence[Variable],
                               tangents: Sequence[Variable]) -> list[Variable]:
    """``J v`` of each of ``outputs`` along ``tangents`` of ``wrt``; raises
    ``NotImplementedError`` where an Op on the way has no pushforward."""
    tangent_of: dict[Variable, Variable | None] = dict(zip(wrt, tangents))
    for node in toposort(outputs, blockers=wrt):
        local = [tangent_of.get(x) for x in node.inputs]  # None: no tangent (data...)
        if all(t is None for t in local):
            results = [None] * len(node.outputs)
        elif isinstance(node.op, Scan) and _carries_one_step(node.op):
            results = _scan_tangents(node, local)
        else:
            given = [_zero_tangent(x) if t is None else _like(x, t)
                     for x, t in zip(node.inputs, local)]
            results = [None if isinstance(t.type, DisconnectedType) else t
                       for t in node.op.pushforward(node.inputs, node.outputs, given)]
        tangent_of.update(zip(node.outputs, results))
    return [pt.zeros_like(y) if tangent_of.get(y) is None else _like(y, tangent_of[y])
            for y in outputs]


def _zero_tangent(x: Variable) -> Variable:
    """What PyTensor's own traversal gives an input without a tangent: zeros for a
    tensor (some Ops' pushforwards treat a disconnected input as a disconnected output),
    disconnected otherwise."""
    return x.zeros_like() if isinstance(x.type, pt.TensorType) else disconnected_type()


def _like(x: Variable, t: Variable) -> Variable:
    """``t`` in ``x``'s float dtype (PyTensor's ``_match_tangent_dtype``)."""
    dtype = getattr(x.type, "dtype", None)
    if dtype is not None and dtype.startswith("float") and t.type.dtype != dtype:
        return t.astype(dtype)
    return t


def _carries_one_step(op: Scan) -> bool:
    """Sequences, one-step states, per-step outputs and constants only."""
    info = op.info
    return (not info.mit_mot_in_slices and not info.mit_sot_in_slices
            and not info.n_untraced_sit_sot and not info.as_while
            and len(info.sit_sot_in_slices) > 0)


def _scan_tangents(node, local: list) -> list:
    r"""The tangents of a one-step scan's outputs: a loop over
    :math:`\dot h_t = J_f(x_t, h_{t-1}) \cdot (\dot x_t, \dot h_{t-1}, \dot\theta)`
    with :math:`h_{t-1}` and the step's outputs read from the scan's own output buffers.

    What of a step does not depend on :math:`\dot h_{t-1}` (the products
    :math:`h_{t-1} \dot W_{rec}` and :math:`x_t \dot W_{in}`; everything but elementwise
    maps, :func:`dhf.curvature.cache.split_at`) is computed for all steps at once before
    the loop (``vectorize_graph``: one GEMM over every step's rows instead of one per
    step), and the loop keeps the carried part, for the tanh RNN
    :math:`(1 - h_t^2) \odot (b_t + \dot h_{t-1} W_{rec})`.
    """
    op = node.op
    n_seqs, n_states = op.info.n_seqs, len(op.info.sit_sot_in_slices)
    n_nit = op.info.n_nit_sot
    n_steps = node.inputs[0]
    seqs = node.inputs[1:1 + n_seqs]
    state_buffers = node.inputs[1 + n_seqs:1 + n_seqs + n_states]
    non_seqs = node.inputs[1 + n_seqs + n_states + n_nit:]
    d_seqs = local[1:1 + n_seqs]
    d_buffers = local[1 + n_seqs:1 + n_seqs + n_states]
    d_non_seqs = local[1 + n_seqs + n_states + n_nit:]
    inner_in = op.inner_inputs
    inner_seqs = op.inner_seqs(inner_in)
    inner_states = op.inner_sitsot(inner_in)
    inner_non_seqs = op.inner_non_seqs(inner_in)
    inner_out = (op.inner_sitsot_outs(op.inner_outputs)
                 + op.inner_nitsot_outs(op.inner_outputs))

    moving = [i for i, t in enumerate(d_seqs) if t is not None]
    fixed = [i for i, t in enumerate(d_non_seqs) if t is not None]
    d_inits = [pt.zeros_like(s[0]) if d is None else _like(s, d)[0]
               for s, d in zip(state_buffers, d_buffers)]
    # The output buffers hold the initial state at row 0 and step t's state at row t + 1
    # (before PyTensor's memory rewrites, which run later, at compile time); the per-step
    # outputs follow them.
    states = node.outputs[:n_states]
    per_step = (list(seqs) + [d_seqs[i] for i in moving] + [s[:n_steps] for s in states]
                + [s[1:n_steps + 1] for s in states] + list(node.outputs[n_states:]))
    constants = list(non_seqs) + [d_non_seqs[i] for i in fixed]

    # One step on placeholders: the per-step values, the carried tangents, the constants.
    step_vars = [v[0].type() for v in per_step]
    dh = [d.type() for d in d_inits]
    consts = [c.type() for c in constants]
    it = iter(step_vars)
    x = [next(it) for _ in seqs]
    dx = [next(it) for _ in moving]
    h = [next(it) for _ in states]
    stored = list(it)
    c, dc = consts[:len(non_seqs)], consts[len(non_seqs):]
    outs = clone_replace(inner_out, dict(zip(inner_seqs + inner_states + inner_non_seqs,
                                             x + h + c)))
    wrt = [x[i] for i in moving] + h + [c[i] for i in fixed]
    given = dx + dh + dc
    try:
        d_outs = pushforward(outs, wrt, given, use_op_pushforward=True,
                             disconnected_outputs="ignore")
    except NotImplementedError:
        d_outs = pushforward(outs, wrt, given, disconnected_outputs="ignore")
    # An Op's pushforward may read its own output (tanh: (1 - y²) ẋ); the step's outputs
    # are stored, so they are read, not recomputed.
    d_outs = clone_replace([_like(o, d) for o, d in zip(outs, d_outs)],
                           dict(zip(outs, stored)))

    # What does not wait for the previous step's tangent, for every step at once.
    ahead, ahead_vars, d_outs = split_at(d_outs, dh)
    batched = vectorize_graph(ahead, {**dict(zip(step_vars, per_step)),
                                      **dict(zip(consts, constants))})
    batched = batched if isinstance(batched, list) else [batched]
    over_steps = [a.type.ndim > v.type.ndim for a, v in zip(batched, ahead_vars)]
    ahead_seqs = [a for a, o in zip(batched, over_steps) if o]
    ahead_consts = [a for a, o in zip(batched, over_steps) if not o]
    ahead_step = [v for v, o in zip(ahead_vars, over_steps) if o]
    ahead_fixed = [v for v, o in zip(ahead_vars, over_steps) if not o]

    def step(*args):
        n = len(per_step) + len(ahead_seqs)
        values = dict(zip(step_vars + ahead_step, args[:n]))
        values.update(zip(dh, args[n:n + n_states]))
        values.update(zip(consts + ahead_fixed, args[n + n_states:]))
        return clone_replace(d_outs, values)

    d_out = pytensor.scan(
        step, sequences=per_step + ahead_seqs, outputs_info=d_inits + [None] * n_nit,
        non_sequences=constants + ahead_consts, n_steps=n_steps, strict=True,
        return_updates=False)
    d_out = d_out if isinstance(d_out, list) else [d_out]
    d_states = [pt.concatenate([d0[None], d], axis=0)
                for d0, d in zip(d_inits, d_out[:n_states])]
    return d_states + list(d_out[n_states:])
