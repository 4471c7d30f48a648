r"""The first-order baselines: minibatch SGD with momentum, and Adam, run data-parallel
like HF.

``optimizer.name = "sgd"`` or ``"adam"`` trains the same models on the same data, so a user
can see what the curvature buys (the ``hessianfree`` package's ``use_hf=False``).
Classical momentum, or Nesterov's (Sutskever, Martens, Dahl & Hinton 2013, eqs. 1–4):

.. math::

    v_{k+1} = \mu v_k - \varepsilon\, \nabla f(\theta_k + [\text{nesterov}]\,\mu v_k),
    \qquad \theta_{k+1} = \theta_k + v_{k+1}

and Adam (Kingma & Ba 2015, Algorithm 1), with :math:`k` counting the steps since the
moments were zero (the start, or the reset after a diverged update):

.. math::

    m_k = \beta_1 m_{k-1} + (1 - \beta_1) g_k, \quad
    v_k = \beta_2 v_{k-1} + (1 - \beta_2) g_k^2, \quad
    \theta_k = \theta_{k-1} - \varepsilon\,
        \frac{m_k / (1 - \beta_1^k)}{\sqrt{v_k / (1 - \beta_2^k)} + \epsilon}

where μ is constant or, with ``momentum_schedule = "sutskever2013"``, rises with the
minibatch step :math:`t` (Sutskever et al. 2013, eq. 5) to the configured
``momentum`` = :math:`\mu_{max}`:

.. math::

    \mu_t = \min\bigl(1 - 2^{-1 - \log_2(\lfloor t / 250 \rfloor + 1)},\ \mu_{max}\bigr)

with the gradient optionally rescaled to norm at most ``clip_norm`` first (Pascanu,
Mikolov & Bengio 2013), the usual remedy for exploding RNN gradients.

One *update* (a metrics row, a checkpoint) is ``sgd_steps`` minibatch steps, so runs of
every optimiser read alike.  Minibatch ``k`` of update ``u`` is drawn from
``default_rng([seed, u, k])``, or is ``sgd_batch`` fresh rows with ``data.fresh``: the
same rows at any rank count, nothing to restore on resume.  Each step is one Allreduce of
``[Σ∇f, Σf, n]``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from dhf.comm import Communicator
from dhf.schema import check, default
from dhf.optimizer import Sums, broadcast_theta, evaluate, reduce_or_stop
from dhf.data import fresh_minibatch, minibatch
from dhf.reduction import ExactSum, dot
from dhf.worker import Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SGDConfig:
    """The first-order baselines' constants; defaults are ``dhf-train``'s."""

    learning_rate: float = default("optimizer", "learning_rate")
    momentum: float = default("optimizer", "momentum")
    nesterov: bool = default("optimizer", "nesterov")
    momentum_schedule: str = default("optimizer", "momentum_schedule")
    clip_norm: float = default("optimizer", "clip_norm")  # 0: no clipping
    sgd_batch: int = default("optimizer", "sgd_batch")
    sgd_steps: int = default("optimizer", "sgd_steps")
    adam_beta1: float = default("optimizer", "adam_beta1")
    adam_beta2: float = default("optimizer", "adam_beta2")
    adam_epsilon: float = default("optimizer", "adam_epsilon")

    def __post_init__(self):
        """Every field checked against the schema, as a config file's would be: a
        misspelt choice is refused here, not run as another rule or met mid-update."""
        for field in self.__dataclass_fields__:
            check("optimizer", field, getattr(self, field), "SGDConfig: ")

    @classmethod
    def from_config(cls, optimizer: dict) -> "SGDConfig":
        return cls(**{k: optimizer[k] for k in cls.__dataclass_fields__})


def momentum_at(t: int, mu_max: float, schedule: str = "constant") -> float:
    """μ at minibatch step ``t`` (0, 1, ... from the start of the run).

    >>> [round(momentum_at(t, 0.99, "sutskever2013"), 4) for t in (0, 250, 500, 12250)]
    [0.5, 0.75, 0.8333, 0.99]
    """
    if schedule == "constant":
        return mu_max
    return min(1.0 - 2.0 ** (-1.0 - math.log2(t // 250 + 1)), mu_max)


@dataclass(frozen=True)
class SGDState:
    theta: np.ndarray
    velocity: np.ndarray
    update: int = 0


@dataclass(frozen=True)
class AdamState:
    theta: np.ndarray
    first_moment: np.ndarray
    second_moment: np.ndarray
    update: int = 0
    step: int = 0  # minibatch steps since the moments were last zero (bias correction)


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
    """Data-parallel momentum SGD, an :class:`~dhf.optimizer.Optimizer` like
    :class:`~dhf.coordinator.HFOptimizer`."""

    name = "sgd"
    State = SGDState

    def __init__(self, worker: Worker, comm: Communicator, config: SGDConfig,
                 n_rows: int, seed: int, should_stop: Callable[[], bool] | None = None,
                 fresh: bool = False):
        self.worker, self.comm, self.config = worker, comm, config
        self.n_rows, self.seed, self.fresh = n_rows, seed, fresh
        self.should_stop = should_stop or (lambda: False)

    def init(self, theta0: np.ndarray) -> SGDState:
        theta = broadcast_theta(self.comm, theta0)
        return self._state(theta, [np.zeros_like(theta) for _ in self._moments], 0, 0)

    def _state(self, theta, moments, update: int, step: int):
        """The state from θ, the moment arrays, the update and the step count."""
        return self.State(theta, *moments, update)

    def _steps(self, state) -> int:
        """Minibatch steps since the moments were zero (Adam's bias correction)."""
        return 0

    #: The state's per-parameter arrays besides θ.
    _moments = ("velocity",)

    def _rows(self, update: int, step: int) -> np.ndarray:
        size = self.config.sgd_batch
        if self.fresh:
            return fresh_minibatch(size, update, step)
        return minibatch(self.n_rows, size, self.seed, update, step)

    def gradient(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """Global mean gradient and loss over ``rows`` (global indices)."""
        mine = self.worker.shard(rows, self.comm.rank, self.comm.size)
        P = theta.size
        buf = reduce_or_stop(self.comm, self.should_stop,
                             ExactSum.of(self.worker.grad_chunks(theta, mine), P + 2))
        sums, _ = Sums.read(buf, "grad", P)
        return sums.vector / sums.rows, sums.mean_loss

    def step(self, state, on_iter: Callable[[int, float], None] | None = None):
        """``sgd_steps`` minibatch steps from ``state``; ``on_iter(k, loss)`` after each."""
        t0 = time.perf_counter()
        cfg = self.config
        update = state.update + 1
        theta = state.theta.copy()
        moments = [getattr(state, name).copy() for name in self._moments]
        losses, norms, clipped = [], [], 0
        for k in range(cfg.sgd_steps):
            mu = momentum_at(state.update * cfg.sgd_steps + k, cfg.momentum,
                             cfg.momentum_schedule)
            g, loss = self.gradient(self._at(theta, moments, mu), self._rows(update, k))
            norm = math.sqrt(dot(g, g))
            if cfg.clip_norm and norm > cfg.clip_norm:
                g *= cfg.clip_norm / norm
                clipped += 1
            theta = self._move(theta, moments, g, self._steps(state) + k + 1, mu)
            losses.append(loss)
            norms.append(norm)
            if on_iter is not None:
                on_iter(k + 1, loss)
        info = SGDInfo(update, float(np.mean(losses)), float(np.mean(norms)), clipped,
                       time.perf_counter() - t0)
        if not (np.all(np.isfinite(theta)) and math.isfinite(info.loss)):
            logger.warning("%s diverged in update %d (non-finite loss or parameters); "
                           "keeping the previous parameters: lower "
                           "optimizer.learning_rate or set optimizer.clip_norm",
                           self.name, update)
            info = info._replace(loss=math.nan)  # NaN marks a diverged update
            zeros = [np.zeros_like(theta) for _ in self._moments]
            return self._state(state.theta, zeros, update, 0), info
        return self._state(theta, moments, update, self._steps(state) + cfg.sgd_steps), info

    def _at(self, theta, moments, mu):
        """Where the gradient is taken: θ, or with Nesterov's momentum θ + μv
        (Sutskever et al. 2013, eq. 3)."""
        return theta + mu * moments[0] if self.config.nesterov else theta

    def _move(self, theta, moments, g, k, mu):
        """Momentum's step (``moments = [v]``, updated in place) with momentum ``mu``;
        returns the new θ."""
        moments[0] = mu * moments[0] - self.config.learning_rate * g
        return theta + moments[0]

    def evaluate(self, theta: np.ndarray, first_row: int,
                 n_rows: int) -> tuple[float, float | None]:
        return evaluate(self.worker, self.comm, theta, first_row, n_rows)


class AdamOptimizer(SGDOptimizer):
    """Adam (Kingma & Ba 2015) with :class:`SGDOptimizer`'s minibatches and clipping."""

    name = "adam"
    State = AdamState
    _moments = ("first_moment", "second_moment")

    def _state(self, theta, moments, update: int, step: int):
        return AdamState(theta, *moments, update, step)

    def _steps(self, state) -> int:
        return state.step

    def _at(self, theta, moments, mu):
        """Adam takes the gradient at θ (Nesterov's look-ahead is momentum SGD's)."""
        return theta

    def _move(self, theta, moments, g, k, mu):
        """Adam's step number ``k`` (counted from 1 since the moments were zero: the start
        of the run, or the reset after a diverged update); ``mu`` is momentum SGD's."""
        cfg = self.config
        b1, b2 = cfg.adam_beta1, cfg.adam_beta2
        moments[0] = b1 * moments[0] + (1.0 - b1) * g
        moments[1] = b2 * moments[1] + (1.0 - b2) * g * g
        m_hat = moments[0] / (1.0 - b1 ** k)
        v_hat = moments[1] / (1.0 - b2 ** k)
        return theta - cfg.learning_rate * m_hat / (np.sqrt(v_hat) + cfg.adam_epsilon)
