"""What dhf trains: a PyTensor graph split at the output ``s`` (theano-hf's contract).

A :class:`ModelSpec` names the symbolic data (``inputs``, ``targets``, an optional
``mask``), the parameters (shared variables, the things HF optimises), the output ``s`` on
which the matching loss is applied, and the loss.  Everything is batch-major: the first
axis of every data variable indexes examples, so a rank's shard is a slice of rows.

The built-in models' builders are in :mod:`dhf.nets`; they return a ModelSpec like any
user's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import ancestors

from dhf import losses
from dhf.errors import UserError


@dataclass
class ModelSpec:
    """A differentiable model split at ``output`` for Gauss-Newton curvature.

    Attributes
    ----------
    inputs : symbolic inputs, batch-major.
    targets : symbolic targets, batch-major.
    params : shared variables to optimise.
    output : ``s``, the variable the matching loss is applied to.
    loss : ``"squared_error"``, ``"sigmoid_xent"``, ``"softmax_xent"``, or a callable
        ``(output, targets) -> per-example losses (N,)`` convex in ``output``.
    mask : optional symbolic ``(N,)`` or ``(N, T)`` data input saying which loss terms
        count (nonzero) and weighing them.
    loss_weights : optional weights of the loss terms computed from ``mask`` (the
        builders' ``loss_average="output"``: each term over its row's number of
        terms); None weighs them by ``mask`` itself.
    hidden : ``(pre_activation, nonlinearity, weights)`` triples for structural damping;
        ``weights`` broadcasts against the pre-activation (a mask) or is None.
    error : how a prediction is judged wrong, for the error rate: ``"sign"``,
        ``"argmax"``, ``"abs"`` (with ``error_tolerance``) or a callable
        ``(output, targets) -> 0/1 per output vector`` (or, returning one value per
        example, any per-example error whose mean is then the reported error: the
        autoencoders' squared reconstruction error); None takes the loss's own
        (sign for sigmoid, argmax for softmax, none for squared error).  An example is
        wrong when any of its (unmasked) output vectors is.
    error_tolerance : the ``"abs"`` error's tolerance.
    trim_padding : the model reads its ``(N, T, ...)`` data step by step and its loss
        only at steps the ``(N, T)`` mask keeps, so steps after a row's last kept one are
        padding that changes nothing; the worker may then drop them (it sorts rows by
        length and cuts each chunk to its longest row).  :func:`dhf.nets.recurrent` sets
        it; leave it False for a model that reads its sequences backwards or at the last
        step.
    gauss_newton : optional explicit builder ``(spec, tangents, structural_weight) ->
        [Gv per parameter]`` that a built-in model provides as a faster equivalent of the
        generic pushforward/pullback product.
    dense : optional ``(a, [(h, W), ...], b)`` per dense layer ``a = b + Σ h W`` (rows
        are examples).  When they cover every parameter, the diagonal preconditioner's
        per-example squared gradients are summed from one batched backward pass:
        Σ_i (∂f_i/∂W)² = (h²)ᵀ (δ²) and Σ_i (∂f_i/∂b)² = Σ_i δ_i², with δ = ∂(Σ_i f_i)/∂a,
        whose row i is example i's (Martens 2010, §4.7, needs them per example).
    """

    inputs: Sequence[pt.TensorVariable]
    targets: pt.TensorVariable
    params: Sequence[SharedVariable]
    output: pt.TensorVariable
    loss: str | Callable = "squared_error"
    mask: pt.TensorVariable | None = None
    hidden: Sequence[tuple] = field(default_factory=tuple)
    error: str | Callable | None = None
    error_tolerance: float = 0.0
    trim_padding: bool = False
    gauss_newton: Callable | None = None
    loss_weights: pt.TensorVariable | None = None
    dense: Sequence[tuple] = field(default_factory=tuple)

    def __post_init__(self):
        self.inputs = list(self.inputs)
        self.params = list(self.params)
        for i, p in enumerate(self.params):
            if not isinstance(p, SharedVariable):
                raise UserError(f"params[{i}] ({p}) is not a shared variable; create "
                                "parameters with pytensor.shared(...)")
        if isinstance(self.loss, str) and self.loss not in losses.LOSSES:
            raise UserError(f"loss {self.loss!r} is unknown; expected one of "
                            f"{', '.join(losses.LOSSES)} or a callable")
        if isinstance(self.error, str) and self.error not in losses.ERRORS:
            raise UserError(f"error {self.error!r} is unknown; expected one of "
                            f"{', '.join(losses.ERRORS)} or a callable")
        names = [p.name or f"param{i}" for i, p in enumerate(self.params)]
        if len(set(names)) != len(names):
            raise UserError(f"parameter names must be unique, got {names}")
        if self.trim_padding and (self.mask is None or self.mask.ndim != 2):
            raise UserError("trim_padding needs an (N, T) mask saying which steps count")
        self._check_split()

    @property
    def data_vars(self) -> list:
        """The symbolic variables fed from a dataset, in order: inputs, targets (unless
        they are one of the inputs, as in an autoencoder), mask."""
        targets = [] if any(self.targets is x for x in self.inputs) else [self.targets]
        return self.inputs + targets + ([self.mask] if self.mask is not None else [])

    @property
    def param_names(self) -> list[str]:
        return [p.name or f"param{i}" for i, p in enumerate(self.params)]

    def example_losses(self, output=None):
        """Loss of each example, shape ``(N,)``; ``output`` replaces ``s`` if given."""
        s = self.output if output is None else output
        if callable(self.loss):
            terms = self.loss(s, self.targets)
            if terms.ndim != 1:
                raise UserError("a callable loss must return one loss per example, "
                                f"shape (N,); got {terms.ndim} dimensions")
            return terms
        return self._reduce(losses.elementwise(self.loss, s, self.targets))

    @property
    def error_kind(self) -> str | Callable | None:
        """The error measure: ``error``, else the loss's own (:data:`losses.DEFAULT_ERROR`),
        else None: a model with none (squared error, a callable loss) has no error rate,
        and nothing may stop on one."""
        if self.error is None and isinstance(self.loss, str):
            return losses.DEFAULT_ERROR.get(self.loss)
        return self.error

    def example_errors(self):
        """Per-example 0/1 error (any wrong unmasked output), or None when there is no
        error metric."""
        kind = self.error_kind
        if kind is None:
            return None
        if callable(kind):
            wrong = kind(self.output, self.targets)
        else:
            wrong = losses.element_errors(kind, self.output, self.targets,
                                          self.error_tolerance)
        if self.mask is not None:
            wrong = wrong * (self.mask > 0)
        if wrong.ndim == 1:
            return wrong
        return pt.gt(wrong.reshape((wrong.shape[0], -1)).sum(axis=1), 0)

    def _reduce(self, terms):
        if self.mask is not None:
            terms = terms * (self.mask if self.loss_weights is None else self.loss_weights)
        return terms.reshape((terms.shape[0], -1)).sum(axis=1) if terms.ndim > 1 else terms

    def _check_split(self):
        """The loss may depend on the parameters only through ``output``."""
        stand_in = self.output.type()
        loss = pt.sum(clone_replace(self.example_losses(), {self.output: stand_in}))
        leaked = [p for p in self.params if p in set(ancestors([loss]))]
        if leaked:
            raise UserError("the loss depends on parameters other than through the "
                            f"output s: {[p.name for p in leaked]}; move those terms "
                            "into the graph of s or drop them")
