r"""The first-order baseline: minibatch SGD with momentum, run data-parallel like HF.

``optimizer.name = "sgd"`` trains the same models on the same data, so a user can see
what the curvature buys (the ``hessianfree`` package's ``use_hf=False``).  Classical
momentum, or Nesterov's (Sutskever, Martens, Dahl & Hinton 2013, eqs. 1–4):

.. math::

    v_{k+1} = \mu v_k - \varepsilon\, \nabla f(\theta_k + [\text{nesterov}]\,\mu v_k),
    \qquad \theta_{k+1} = \theta_k + v_{k+1}

with the gradient optionally rescaled to norm at most ``clip_norm`` (Pascanu, Mikolov &
Bengio 2013), the usual remedy for exploding RNN gradients.

One *update* (a metrics row, a checkpoint) is ``sgd_steps`` minibatch steps, so runs of
both optimisers read alike.  Minibatch ``k`` of update ``u`` is drawn from
``default_rng([seed, u, k])``: the same rows at any rank count, nothing to restore on
resume.  Each step is one Allreduce of ``[Σ∇f, Σf, n]``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from dhf.comm import Communicator
from dhf.coordinator import StopRequested, evaluate
from dhf.data import minibatch
from dhf.worker import Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SGDConfig:
    learning_rate: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    clip_norm: float = 0.0  # 0: no clipping
    sgd_batch: int = 100
    sgd_steps: int = 100

    @classmethod
    def from_config(cls, optimizer: dict) -> "SGDConfig":
        return cls(**{k: optimizer[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SGDState:
    theta: np.ndarray
    velocity: np.ndarray
    update: int = 0


class SGDInfo(NamedTuple):
    update: int
    loss: float  # mean minibatch loss over the update's steps
    grad_norm: float  # mean gradient norm (before clipping)
    clipped: int  # steps whose gradient was clipped
    seconds: float

    def metrics(self) -> dict:
        return {"update": self.update, "loss": self.loss, "grad_norm": self.grad_norm,
                "clipped": self.clipped}


class SGDOptimizer:
    """Data-parallel momentum SGD with the interface of :class:`~dhf.coordinator.HFOptimizer`."""

    name = "sgd"
    State = SGDState

    def __init__(self, worker: Worker, comm: Communicator, config: SGDConfig,
                 n_rows: int, seed: int, should_stop: Callable[[], bool] | None = None):
        self.worker, self.comm, self.config = worker, comm, config
        self.n_rows, self.seed = n_rows, seed
        self.should_stop = should_stop or (lambda: False)

    def init(self, theta0: np.ndarray) -> SGDState:
        theta = np.asarray(self.comm.bcast(np.asarray(theta0, np.float64)), np.float64)
        return SGDState(theta, np.zeros_like(theta))

    def gradient(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """Global mean gradient and loss over ``rows`` (global indices)."""
        mine = self.worker.shard(rows, self.comm.rank, self.comm.size)
        buf = np.append(self.worker.grad_sum(theta, mine), float(self.should_stop()))
        buf = self.comm.allreduce_sum(buf)
        if buf[-1] > 0:
            raise StopRequested()
        P = theta.size
        return buf[:P] / buf[P + 1], buf[P] / buf[P + 1]

    def step(self, state: SGDState, on_iter: Callable[[int, float], None] | None = None
             ) -> tuple[SGDState, SGDInfo]:
        """``sgd_steps`` minibatch steps from ``state``; ``on_iter(k, loss)`` after each."""
        t0 = time.perf_counter()
        cfg = self.config
        update = state.update + 1
        theta, v = state.theta.copy(), state.velocity.copy()
        losses, norms, clipped = [], [], 0
        for k in range(cfg.sgd_steps):
            rows = minibatch(self.n_rows, cfg.sgd_batch, self.seed, update, k)
            at = theta + cfg.momentum * v if cfg.nesterov else theta
            g, loss = self.gradient(at, rows)
            norm = float(np.linalg.norm(g))
            if cfg.clip_norm and norm > cfg.clip_norm:
                g *= cfg.clip_norm / norm
                clipped += 1
            v = cfg.momentum * v - cfg.learning_rate * g
            theta = theta + v
            losses.append(loss)
            norms.append(norm)
            if on_iter is not None:
                on_iter(k + 1, loss)
        info = SGDInfo(update, float(np.mean(losses)), float(np.mean(norms)), clipped,
                       time.perf_counter() - t0)
        if not (np.all(np.isfinite(theta)) and math.isfinite(info.loss)):
            logger.warning("sgd diverged in update %d (non-finite loss or parameters); "
                           "keeping the previous parameters: lower "
                           "optimizer.learning_rate or set optimizer.clip_norm", update)
            info = info._replace(loss=math.nan)  # NaN marks a diverged update
            return SGDState(state.theta, np.zeros_like(v), update), info
        return SGDState(theta, v, update), info

    def evaluate(self, theta: np.ndarray, first_row: int, n_rows: int) -> tuple[float, float]:
        return evaluate(self.worker, self.comm, theta, first_row, n_rows)
