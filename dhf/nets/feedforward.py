r"""Feed-forward nets with arbitrary forward connectivity (the ``hessianfree`` ``conns``).

Layer ``k`` (``0`` is the input, ``L−1`` the output) has pre-activation and activation

.. math:: a_k = b_k + \sum_{j \in \mathrm{pre}(k)} h_j W_{j,k}, \qquad h_k = f_k(a_k),
          \qquad h_0 = x,

where ``pre(k)`` are the layers that feed ``k``.  The output ``s`` is split where the loss
is applied (Martens 2010, §4.2; Schraudolph 2002):

- for ``sigmoid_xent`` / ``softmax_xent`` the loss applies the output nonlinearity
  itself, so ``s = a_{L−1}`` (the logits).  A user's "softmax output layer + softmax
  cross-entropy" is written ``nonlinearities=[..., "softmax"]`` (or ``"linear"``) with
  ``loss="softmax_xent"``: both keep ``s`` as the logits, and the loss and its curvature
  are those of ``softmax(s)``; likewise ``"logistic"`` with ``sigmoid_xent``.  Any other
  output nonlinearity with those losses is an error (it would not match);
- for ``squared_error`` (and a callable loss) ``s = f_{L−1}(a_{L−1})``: with a linear
  output that is the matching pair; with a nonlinear one the Gauss-Newton matrix keeps
  :math:`f'_{L-1}` inside ``J`` (still positive semi-definite, Martens 2010 §4.2).

Derivatives, and the Gauss-Newton product, come from PyTensor's autodiff
(:func:`dhf.curvature.model_gauss_newton_product`); no hidden terms are exposed for
structural damping, which is defined for recurrent nets.  An L2 weight cost is not part of
the model (the loss may depend on the parameters only through ``s``); it belongs to the
optimiser.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

from dhf import activations
from dhf.errors import UserError
from dhf.model import ModelSpec
from dhf.nets.init import initialise

#: Nonlinearities by name, each ``f(a)`` elementwise except ``softmax`` (over the last
#: axis).
NONLINEARITIES: dict[str, Callable] = {
    "linear": lambda a: a,
    "tanh": activations.tanh,
    "logistic": pt.sigmoid,
    "relu": lambda a: pt.maximum(a, 0),
    "softplus": pt.softplus,
    "softmax": lambda a: pt.special.softmax(a, axis=-1),
}

#: The output nonlinearity each cross-entropy loss applies to ``s`` itself.
MATCHING_OUTPUT = {"sigmoid_xent": "logistic", "softmax_xent": "softmax"}


def feedforward(sizes: Sequence[int], *, nonlinearities="tanh",
                connectivity: Mapping[int, Sequence[int]] | None = None,
                loss="squared_error", init="gaussian", init_scale: float = 1.0,
                seed: int = 0, dtype: str = "float64") -> ModelSpec:
    """A feed-forward net ``sizes[0] → … → sizes[-1]``; see the module docstring.

    Parameters
    ----------
    sizes : layer widths ``[n_in, h_1, …, n_out]`` (at least two).
    nonlinearities : one per layer after the input (a name of :data:`NONLINEARITIES` or a
        callable PyTensor function), or a single one for every hidden layer with a linear
        output layer.
    connectivity : ``{pre: [post, …]}``, e.g. ``{0: [1, 2], 1: [2, 3], 2: [3]}`` (the
        ``hessianfree`` package's ``conns``); connections go only forward, every layer
        must lie on a path from the input to the output.  Default: each layer feeds the
        next.  Each connection has its own matrix ``W_{pre}_{post}``; each non-input layer
        one bias ``b_{k}`` (``hessianfree`` keeps one bias per connection, the same
        function with redundant parameters).
    loss : ``"squared_error"``, ``"sigmoid_xent"``, ``"softmax_xent"`` or a callable.
    init, init_scale : a :func:`dhf.nets.init.initialise` spec and its gain; the default
        is N(0, init_scale²/fan_in) per matrix (fan-in of that connection).  Biases 0.
    seed : seeds every weight.
    """
    sizes = [int(n) for n in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise UserError(f"sizes must list at least an input and an output width, all "
                        f"positive; got {sizes}")
    n_layers = len(sizes)
    fns, last = _nonlinearities(nonlinearities, n_layers - 1)
    incoming = _incoming(connectivity, n_layers)
    split_at_logits = _output_split(loss, last)

    rng = np.random.default_rng(seed)
    x = pt.matrix("x", dtype=dtype)
    params, h, a, dense = [], {0: x}, None, []
    for k in range(1, n_layers):
        weights = [_shared(initialise(rng, (sizes[j], sizes[k]), init, gain=init_scale),
                           f"W_{j}_{k}", dtype) for j in incoming[k]]
        b = _shared(np.zeros(sizes[k]), f"b_{k}", dtype)
        params += weights + [b]
        terms = [pt.dot(h[j], W) for j, W in zip(incoming[k], weights)]
        a = sum(terms[1:], terms[0]) + b
        h[k] = fns[k - 1](a)
        dense.append((a, [(h[j], W) for j, W in zip(incoming[k], weights)], b))
    s = a if split_at_logits else h[n_layers - 1]
    y = pt.matrix("y", dtype=dtype)
    return ModelSpec(inputs=[x], targets=y, params=params, output=s, loss=loss, hidden=[],
                     dense=dense)


# -- validation ---------------------------------------------------------------------------
def _nonlinearities(spec, n: int) -> tuple[list[Callable], str | None]:
    """One function per non-input layer, and the output layer's name (None if callable)."""
    if isinstance(spec, str) or callable(spec):
        names = [spec] * (n - 1) + ["linear"]
    else:
        names = list(spec)
        if len(names) != n:
            raise UserError(f"nonlinearities lists {len(names)} entries; expected one per "
                            f"layer after the input ({n}) or a single name")
    fns = []
    for k, f in enumerate(names, start=1):
        if callable(f):
            fns.append(f)
        elif f in NONLINEARITIES:
            fns.append(NONLINEARITIES[f])
        else:
            raise UserError(f"nonlinearity {f!r} of layer {k} is unknown; expected one of "
                            f"{', '.join(NONLINEARITIES)} or a callable")
    last = names[-1]
    return fns, (last if isinstance(last, str) else None)


def _output_split(loss, last: str | None) -> bool:
    """True when ``s`` is the output layer's pre-activation (the logits)."""
    if not isinstance(loss, str) or loss not in MATCHING_OUTPUT:
        return False
    if last not in ("linear", MATCHING_OUTPUT[loss]):
        raise UserError(f"loss {loss!r} applies {MATCHING_OUTPUT[loss]} to the output "
                        f"itself; the output layer's nonlinearity must be "
                        f"{MATCHING_OUTPUT[loss]!r} or 'linear' (both give s = logits), "
                        f"got {last if last is not None else 'a callable'}")
    return True


def _incoming(connectivity, n_layers: int) -> dict[int, list[int]]:
    """``{layer: [layers feeding it]}`` from a ``{pre: [post, …]}`` map, validated."""
    if connectivity is None:
        return {k: [k - 1] for k in range(1, n_layers)}
    incoming = {k: [] for k in range(1, n_layers)}
    for pre, posts in dict(connectivity).items():
        pre = _layer_index(pre, n_layers, "source")
        if isinstance(posts, (int, np.integer)):
            posts = [posts]
        for post in posts:
            post = _layer_index(post, n_layers, "target")
            if post <= pre:
                raise UserError(f"connectivity: layer {pre} -> {post} goes "
                                f"{'to itself' if post == pre else 'backwards'}; "
                                "connections must go from a lower to a higher layer")
            if pre in incoming[post]:
                raise UserError(f"connectivity: layer {pre} -> {post} is listed twice")
            incoming[post].append(pre)
    for k in incoming:
        incoming[k].sort()
    unreached = [k for k in range(1, n_layers) if k not in _reachable(incoming, n_layers)]
    if unreached:
        raise UserError(f"connectivity: layer(s) {unreached} cannot be reached from the "
                        "input (layer 0)")
    dead = [k for k in range(n_layers - 1) if k not in _reaching_output(incoming, n_layers)]
    if dead:
        raise UserError(f"connectivity: layer(s) {dead} do not lead to the output "
                        f"(layer {n_layers - 1}); their weights would have no effect")
    return incoming


def _layer_index(value, n_layers: int, role: str) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # TOML table keys are strings
    if not isinstance(value, (int, np.integer)) or not 0 <= value < n_layers:
        raise UserError(f"connectivity: {role} layer {value!r} is not a layer index in "
                        f"0..{n_layers - 1}")
    return int(value)


def _reachable(incoming, n_layers: int) -> set[int]:
    """Layers on a path from the input (connections only go forward: one sweep)."""
    seen = {0}
    for k in range(1, n_layers):
        if any(j in seen for j in incoming[k]):
            seen.add(k)
    return seen


def _reaching_output(incoming, n_layers: int) -> set[int]:
    """Layers on a path to the output (one backward sweep)."""
    seen = {n_layers - 1}
    for k in range(n_layers - 1, 0, -1):
        if k in seen:
            seen.update(incoming[k])
    return seen


def _shared(value, name: str, dtype: str):
    return pytensor.shared(np.asarray(value, dtype=dtype), name=name)
