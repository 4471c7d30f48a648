"""What every optimiser is (HF, and the SGD and Adam baselines), and the three things they
share: the starting θ broadcast from rank 0, the exact sum of a batch's chunk results
with the stop flag riding along, and the validation pass.

:mod:`dhf.run` drives any :class:`Optimizer`: it builds the state with :meth:`init` (or
from a checkpoint, through ``State``'s fields), calls :meth:`step` once an update, and
:meth:`evaluate` on the validation rows.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import numpy as np

from dhf.allreduce import allreduce_exact, reduce_exact_slice
from dhf.comm import Communicator
from dhf.reduction import ExactSum
from dhf.worker import Worker


class StopRequested(Exception):
    """Some rank asked to stop (a signal); raised on every rank at the same point."""


@runtime_checkable
class Optimizer(Protocol):
    """An optimiser as :mod:`dhf.run` uses it.

    ``State`` is a dataclass whose fields are the optimiser's whole state (``theta``,
    ``update`` and its own arrays and scalars): the checkpoint stores them by name.
    ``step`` returns the new state and an info object whose ``metrics()`` is the update's
    row of ``metrics.jsonl``; it raises :class:`StopRequested` on every rank at once when
    a stop was asked for.
    """

    name: str
    State: type

    def init(self, theta0: np.ndarray) -> Any: ...

    def step(self, state: Any, on_iter: Callable[[int, float], None] | None = None
             ) -> tuple[Any, Any]: ...

    def evaluate(self, theta: np.ndarray, first_row: int, n_rows: int
                 ) -> tuple[float, float | None]: ...


class Sums(NamedTuple):
    """A batch's exact sums, named as the worker lays them out in a reduced buffer:
    ``[Σ ∇f_i (P values), Σ f_i, rows]`` (:meth:`~dhf.worker.Worker.grad_chunks`),
    ``[Σ f_i, Σ errors, rows]`` (``loss_chunks``), ``[Σ f_i, rows]``
    (``curvature_chunks``), or ``[Σ Gv (P values)]`` (``gv_chunks``); the parts a layout
    lacks are empty or 0."""

    vector: np.ndarray
    loss: float = 0.0
    rows: float = 0.0
    errors: float = 0.0

    @property
    def mean_loss(self) -> float:
        return self.loss / self.rows if self.rows else math.nan

    @classmethod
    def read(cls, buf: np.ndarray, layout: str, P: int = 0) -> tuple["Sums", np.ndarray]:
        """The sums of ``layout`` ("grad", "loss", "curvature" or "gv") at the start of
        ``buf``, and what follows them."""
        if layout == "grad":
            return cls(buf[:P], buf[P], buf[P + 1]), buf[P + 2:]
        if layout == "loss":
            return cls(buf[:0], buf[0], buf[2], buf[1]), buf[3:]
        if layout == "curvature":
            return cls(buf[:0], buf[0], buf[1]), buf[2:]
        if layout == "gv":
            return cls(buf[:P]), buf[P:]
        raise ValueError(f"Sums.read: no layout {layout!r}")


def broadcast_theta(comm: Communicator, theta0: np.ndarray) -> np.ndarray:
    """Rank 0's starting θ, as float64, on every rank."""
    return np.asarray(comm.bcast(np.asarray(theta0, np.float64)), np.float64)


def reduce_or_stop(comm: Communicator, should_stop: Callable[[], bool],
                   *sums: ExactSum) -> np.ndarray:
    """``sums`` (concatenated) summed over ranks exactly, with this rank's stop flag;
    :class:`StopRequested` on every rank if any rank asks."""
    total, (stop,) = allreduce_exact(comm, ExactSum.join(*sums), float(should_stop()))
    if stop:
        raise StopRequested()
    return total


def reduce_slice_or_stop(comm: Communicator, should_stop: Callable[[], bool],
                         total: ExactSum) -> np.ndarray:
    """:func:`reduce_or_stop`, each rank keeping its slice of the sum only
    (:func:`dhf.allreduce.reduce_exact_slice`)."""
    mine, (stop,) = reduce_exact_slice(comm, total, float(should_stop()))
    if stop:
        raise StopRequested()
    return mine


def evaluate(worker: Worker, comm: Communicator, theta: np.ndarray, first_row: int,
             n_rows: int) -> tuple[float, float | None]:
    """Mean loss and error rate over rows ``[first_row, first_row + n_rows)``, split over
    ranks in the batch's global chunks and summed exactly; the error rate is None for a
    model without an error measure (:attr:`dhf.model.ModelSpec.error_kind`)."""
    mine = worker.shard(np.arange(first_row, first_row + n_rows), comm.rank, comm.size)
    buf, _ = allreduce_exact(comm, ExactSum.of(worker.loss_chunks(theta, mine), 3))
    sums, _ = Sums.read(buf, "loss")
    has_error = worker.spec.error_kind is not None
    return sums.mean_loss, sums.errors / sums.rows if has_error else None
