r"""The Hessian-free loop, run identically on every rank (SPMD).

One update (Martens 2010, Alg. 1; Martens & Sutskever 2012, §20):

1. draw the update's batches (the same global rows at any rank count);
2. gradient and loss on the gradient batch, the forward pass of the curvature batch —
   one Allreduce of ``[Σ∇f, Σf, n, Σf_c, n_c]``;
3. optionally Martens' diagonal preconditioner (one Allreduce);
4. CG on :math:`(G + \lambda I + \lambda\mu D)\,\delta = -g`, warm-started from
   0.95 × the previous solution — one Allreduce of ``Σ Gv`` per iteration;
5. backtracking over the kept CG iterates on a held-out batch;
6. ρ from the quadratic model on the curvature batch; Levenberg–Marquardt λ;
7. line search on the line-search batch (or the backtracking batch); accept or reject.

The objective is the mean loss plus :math:`\tfrac{l_2}{2}\lVert\theta\rVert^2` (Sutskever's
release: 2e-5 on the loss, the gradient and the curvature).  Every branch is decided from
Allreduced numbers, so all ranks take it together.  CG, damping and line search are the
pure functions of :mod:`dhf.cg`, :mod:`dhf.damping` and :mod:`dhf.linesearch`; this
module only wires them to the worker and the communicator.

Where Martens' code (``nnet_train_2.m``, ``conjgrad_1.m``) and Sutskever's HF-RNN release
(``opt/hf.py``) differ, :class:`HFConfig` offers both; the defaults are Martens':

=====================  ==========================  ================================
option                 Martens' code               the release (M&S 2011's code)
=====================  ==========================  ================================
``rho_model``          undamped model              damped model (λI and λμS in it)
``structural_d``       D = 1 − h² ("paper")        D = ¼(1 − h²) ("release")
``backtrack``          ⌈5·1.3^j⌉ and the last,     1, 11, 21, … and the iterate CG
                       walk back while no worse    stopped at (unless at its cap), argmin
``linesearch_c``       Armijo, c = 1e-2            any decrease, c = 0
``reject_warm_start``  keep: the next CG starts    reset: ``CG_x *= 0`` after a step
                       from 0.95 × this solution   size of 0
=====================  ==========================  ================================

In both, λ follows ρ alone.  dhf adds rules of its own: ``boost_on_reject`` (off by
default) raises λ after a rejected line search whatever ρ says; a CG run that meets
non-positive or non-finite curvature (``cg_status`` ``negative_curvature`` or
``nonfinite``) raises λ as ρ = −∞ would and restarts the next CG from zero; NaN losses
count as +∞ in backtracking.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

import numpy as np

from dhf import cg, damping, linesearch, reduction
from dhf.allreduce import allreduce_exact, dot_sliced, slice_counts
from dhf.comm import Communicator
from dhf.schema import check, default
from dhf.data import BatchSampler, shard_bounds
from dhf.preconditioner import martens_preconditioner
from dhf.optimizer import (Sums, broadcast_theta, evaluate, reduce_or_stop,
                           reduce_slice_or_stop)
from dhf.reduction import ExactSum, dot
from dhf.worker import Worker


#: D of structural damping relative to the curvature of tanh's matching loss, 1 − h².
#: Sutskever's release multiplies it by ¼ (``nonlin.Tanh.H_prod``), so at equal μ its
#: structural damping is 4 × weaker than the paper's.
STRUCTURAL_D = {"paper": 1.0, "release": 0.25}
#: Where an update's time goes (metrics ``t_gradient`` ...): the gradient with the
#: curvature batch's forward pass, the preconditioner's squared gradients, CG (its Gv
#: products), CG backtracking with ρ and the line search; ``t_gv``, the part of CG in its
#: Gv products (the compiled Gv over this rank's chunks and their exact sum: ``t_cg −
#: t_gv`` is CG's own vector work); and ``t_allreduce``, the part of them all spent in
#: Allreduce (transfer and waiting for the slowest rank).
PHASES = ("gradient", "preconditioner", "cg", "search", "gv", "allreduce")
#: CG exits after which the quadratic model cannot be trusted: λ is raised as for ρ = −∞.
CG_BREAKDOWNS = ("negative_curvature", "nonfinite")


def _vectors(on_device: bool):
    """``(xp, sums, host, place)`` for CG's vectors: their array module, the module of
    their exact dot products (:func:`dhf.allreduce.dot_sliced`'s ``sums``), and the moves to
    the host and back; NumPy's and :mod:`dhf.reduction`, or, ``on_device``, JAX's and
    :mod:`dhf.reduction_jax`."""
    if not on_device:
        return np, reduction, np.asarray, np.asarray
    import jax
    import jax.numpy as jnp
    import pytensor.link.jax.dispatch  # noqa: F401  (float64 on, as for its functions)

    from dhf import reduction_jax

    return jnp, reduction_jax, np.array, jax.device_put  # JAX's default device


class _Stopwatch:
    """Seconds per phase of one update (:data:`PHASES`), each :meth:`lap` closing one,
    and the Allreduce seconds of the communicator in the meantime."""

    def __init__(self, comm: Communicator):
        self.comm, self.times, self.t = comm, {}, time.perf_counter()
        self.reduce0 = comm.reduce_seconds

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.times[phase] = self.times.get(phase, 0.0) + now - self.t
        self.t = now

    def add(self, phase: str, seconds: float) -> None:
        """Count ``seconds`` in ``phase``, a part of another (Gv's inside CG's)."""
        self.times[phase] = self.times.get(phase, 0.0) + seconds

    def split(self) -> dict:
        return {**self.times,
                "allreduce": self.comm.reduce_seconds - self.reduce0}


@dataclass(frozen=True)
class HFConfig:
    """The optimiser's constants; defaults are ``dhf-train``'s (``dhf-train --help``)."""

    cg_min_iters: int = default("optimizer", "cg_min_iters")
    cg_max_iters: int = default("optimizer", "cg_max_iters")
    cg_tol: float = default("optimizer", "cg_tol")
    cg_decay: float = default("optimizer", "cg_decay")
    init_damping: float = default("optimizer", "init_damping")
    min_damping: float = default("optimizer", "min_damping")
    max_damping: float = default("optimizer", "max_damping")
    structural_damping: float = default("optimizer", "structural_damping")  # mu
    preconditioner: bool = default("optimizer", "preconditioner")
    structural_d: str = default("optimizer", "structural_d")  # "paper" or "release"
    rho_model: str = default("optimizer", "rho_model")  # "undamped"; "damped": the release
    l2: float = default("optimizer", "l2")
    backtrack: str = default("optimizer", "backtrack")  # "martens" or "release"
    linesearch_c: float = default("optimizer", "linesearch_c")
    reject_warm_start: str = default("optimizer", "reject_warm_start")  # "reset": release
    boost_on_reject: bool = default("optimizer", "boost_on_reject")  # dhf's own rule

    def __post_init__(self):
        """Every field checked against the schema, as a config file's would be: a
        misspelt choice is refused here, not run as another rule or met mid-update."""
        for field in self.__dataclass_fields__:
            check("optimizer", field, getattr(self, field), "HFConfig: ")

    @classmethod
    def from_config(cls, optimizer: dict) -> "HFConfig":
        return cls(**{k: optimizer[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class HFState:
    """Everything the optimiser carries from one update to the next."""

    theta: np.ndarray
    damping: float
    cg_init: np.ndarray  # the previous CG solution (before the 0.95 decay)
    update: int = 0  # updates completed


class StepInfo(NamedTuple):
    """What one update did (returned, never printed, by the library)."""

    update: int
    loss: float  # gradient-batch loss at the start of the update
    rho: float
    damping: float  # λ after the update
    cg_iters: int
    cg_status: str
    backtrack_iter: int
    step_size: float  # the line search's α; 0 when the step was rejected
    accepted: bool
    loss_after: float  # line-search batch loss after the update
    seconds: float
    cg_breakdown: bool = False  # CG met non-positive or non-finite curvature
    backtrack_evals: int = 0  # loss evaluations of CG backtracking
    linesearch_tries: int = 0  # step sizes the line search tried
    times: dict = {}  # seconds per phase (:data:`PHASES`) and in Allreduce

    def metrics(self) -> dict:
        """The update's row of ``metrics.jsonl`` (without validation and timing)."""
        return {"update": self.update, "loss": self.loss, "rho": self.rho,
                "damping": self.damping, "cg_iters": self.cg_iters,
                "cg_status": self.cg_status, "cg_breakdown": self.cg_breakdown,
                "backtrack_iter": self.backtrack_iter,
                "step_size": self.step_size, "accepted": self.accepted,
                "held_out_loss": self.loss_after, "backtrack_evals": self.backtrack_evals,
                "linesearch_tries": self.linesearch_tries,
                **{f"t_{phase}": self.times.get(phase) for phase in PHASES}}


class HFOptimizer:
    """Data-parallel HF (an :class:`~dhf.optimizer.Optimizer`): ``worker`` computes sums
    over this rank's rows, ``comm`` adds them.

    ``should_stop`` is polled at the update's first reduction and at every CG iteration:
    its value rides in the buffers already being reduced, so when any rank wants to stop,
    every rank raises :class:`~dhf.optimizer.StopRequested` at the same point and the
    update in progress is abandoned.

    ``cg_on_device`` keeps CG's vectors (this rank's slices) where JAX computes, a GPU:
    their updates are JAX operations and their dot products
    :func:`dhf.reduction_jax.dot`, so that only scalars, the bins of a dot product, the
    direction each Gv is applied to and Gv's slice cross to the host, once a CG
    iteration.  The bits are the host path's (``tests/test_coordinator.py``).
    """

    name = "hf"
    State = HFState

    def __init__(self, worker: Worker, comm: Communicator, config: HFConfig,
                 sampler: BatchSampler, should_stop: Callable[[], bool] | None = None,
                 cg_on_device: bool = False):
        self.worker, self.comm, self.config, self.sampler = worker, comm, config, sampler
        self.should_stop = should_stop or (lambda: False)
        self.cg_on_device = cg_on_device

    def _reduce(self, *sums: ExactSum) -> np.ndarray:
        return reduce_or_stop(self.comm, self.should_stop, *sums)

    def init(self, theta0: np.ndarray) -> HFState:
        """The starting state, with rank 0's θ broadcast to all ranks."""
        theta = broadcast_theta(self.comm, theta0)
        return HFState(theta, self.config.init_damping, np.zeros_like(theta))

    def _local(self, rows: np.ndarray) -> list[np.ndarray]:
        return self.worker.shard(rows, self.comm.rank, self.comm.size)

    def mean_loss(self, theta: np.ndarray, rows_local: list[np.ndarray]) -> float:
        """Global mean loss at ``theta`` over the union of every rank's chunks."""
        buf, _ = allreduce_exact(self.comm, ExactSum.of(
            self.worker.loss_chunks(theta, rows_local), 3))
        return Sums.read(buf, "loss")[0].mean_loss

    def objective(self, theta: np.ndarray, rows_local: np.ndarray) -> float:
        """The mean loss plus the L2 term ``l2/2 ‖θ‖²``."""
        return self.mean_loss(theta, rows_local) + self._l2_term(theta)

    def _l2_term(self, theta: np.ndarray) -> float:
        return 0.5 * self.config.l2 * dot(theta, theta) if self.config.l2 else 0.0

    def step(self, state: HFState,
             on_cg_iter: Callable[[int, float], None] | None = None
             ) -> tuple[HFState, StepInfo]:
        """One HF update from ``state``."""
        t0 = time.perf_counter()
        clock = _Stopwatch(self.comm)
        cfg, worker = self.config, self.worker
        update = state.update + 1
        theta, lam = state.theta, state.damping
        batches = self.sampler.draw(update)
        grad_rows, curv_rows = self._local(batches.gradient), self._local(batches.curvature)
        bt_rows = self._local(batches.backtrack)
        ls_rows = self._local(batches.linesearch) if len(batches.linesearch) else bt_rows
        P = theta.size

        buf = self._reduce(ExactSum.of(worker.grad_chunks(theta, grad_rows), P + 2),
                           ExactSum.of(worker.curvature_chunks(theta, curv_rows), 2))
        grad_sums, rest = Sums.read(buf, "grad", P)
        curv_sums, _ = Sums.read(rest, "curvature")
        n_curv = curv_sums.rows
        g = grad_sums.vector / grad_sums.rows + cfg.l2 * theta
        loss, loss_curv = grad_sums.mean_loss, curv_sums.mean_loss + self._l2_term(theta)
        clock.lap("gradient")
        if not (np.all(np.isfinite(g)) and math.isfinite(loss)):
            return self._reject(state, update, loss, "nonfinite_gradient", t0, clock)

        precond = None
        if cfg.preconditioner:
            sq = self._reduce(ExactSum.of(worker.squared_grad_chunks(theta, curv_rows),
                                          P)) / n_curv
            precond = martens_preconditioner(sq, lam + cfg.l2)
            clock.lap("preconditioner")

        structural_weight = lam * cfg.structural_damping * STRUCTURAL_D[cfg.structural_d]

        # CG works on slices: each rank updates its own part of the iterate, residual and
        # direction, and of Gv; the direction is gathered whole for the compiled Gv, and
        # the kept iterates at the end
        lo, hi = shard_bounds(P, self.comm.rank, self.comm.size)
        counts = slice_counts(self.comm, P)
        gv_parts = ExactSum(P)  # one buffer for every CG iteration's sum
        xp, sums, host, place = _vectors(self.cg_on_device)

        def damped_Gv(v_mine):
            t = time.perf_counter()
            v = self.comm.allgather(host(v_mine), counts)
            Gv = reduce_slice_or_stop(self.comm, self.should_stop, gv_parts.refill(
                worker.gv_chunks(v, structural_weight)))
            Gv /= n_curv
            clock.add("gv", time.perf_counter() - t)
            return place(Gv) + (lam + cfg.l2) * v_mine

        def any_rank(flag):
            return self.comm.allreduce_sum(np.array([float(flag)]))[0] > 0.0

        release_bt = cfg.backtrack == "release"
        _, cg_info = cg.pcg(damped_Gv, place(-g[lo:hi]),
                            place(cfg.cg_decay * state.cg_init[lo:hi]),
                            precond=None if precond is None else place(precond[lo:hi]),
                            min_iters=cfg.cg_min_iters, max_iters=cfg.cg_max_iters,
                            tol=cfg.cg_tol, store_every=10 if release_bt else 0,
                            callback=on_cg_iter,
                            dot=lambda a, b: dot_sliced(self.comm, a, b, P, sums),
                            any_rank=any_rank, xp=xp)
        kept = [(i, self.comm.allgather(host(x_mine), counts))
                for i, x_mine in cg_info.kept]
        x = kept[-1][1]  # the last iterate, always kept
        clock.lap("cg")
        breakdown = cg_info.status in CG_BREAKDOWNS

        if release_bt and cg_info.status == "max_iters" and (kept[-1][0] - 1) % 10:
            kept = kept[:-1] or kept  # at its cap the release looks at every 10th only
        choose = linesearch.backtrack_argmin if release_bt else linesearch.backtrack
        delta, bt = choose(kept, lambda d: self.objective(theta + d, bt_rows))

        slope = dot(g, delta)
        rho = self._rho(theta, delta, slope, loss_curv, curv_rows, n_curv, lam,
                        structural_weight)
        new_lam = damping.update_damping(lam, -math.inf if breakdown else rho,
                                         min_damping=cfg.min_damping,
                                         max_damping=cfg.max_damping)

        def ls_objective(alpha):
            return self.objective(theta + alpha * delta, ls_rows)

        ls = linesearch.armijo(ls_objective, ls_objective(0.0), slope,
                               first_loss=bt.loss if ls_rows is bt_rows else None,
                               c=cfg.linesearch_c)
        if ls.accepted:
            # After a breakdown the last iterate is no warm start: CG restarts from zero.
            new_state = HFState(theta + ls.step_size * delta, new_lam,
                                np.zeros_like(x) if breakdown else x, update)
        else:  # keep θ; the next CG starts from this one's solution (Martens' code) or
            # from zero (the release), and (dhf's option) λ grows whatever ρ said
            if cfg.boost_on_reject:
                new_lam = damping.update_damping(lam, -math.inf,
                                                 min_damping=cfg.min_damping,
                                                 max_damping=cfg.max_damping)
            keep = cfg.reject_warm_start == "keep" and not breakdown
            new_state = HFState(theta, new_lam, x if keep else np.zeros_like(x), update)
        clock.lap("search")
        info = StepInfo(update, loss, rho, new_lam, cg_info.iters, cg_info.status,
                        bt.iteration, ls.step_size, ls.accepted, ls.loss,
                        time.perf_counter() - t0, breakdown, bt.evaluations, ls.tries,
                        clock.split())
        return new_state, info

    def _rho(self, theta, delta, slope, loss_curv, curv_rows, n_curv, lam,
             structural_weight) -> float:
        """ρ on the curvature batch, from the undamped model's curvature ``δᵀGδ`` or the
        damped one's ``δᵀ(G + λμS + λI)δ`` (L2 in both): one Allreduce of ``[Σ Gδ,
        Σ f_c(θ + δ), n_c]``."""
        cfg, P = self.config, theta.size
        damped = cfg.rho_model == "damped"
        buf, _ = allreduce_exact(self.comm, ExactSum.join(
            ExactSum.of(self.worker.gv_chunks(delta, structural_weight if damped else 0.0),
                        P),
            ExactSum.of(self.worker.loss_chunks(theta + delta, curv_rows), 3)))
        gv_sums, rest = Sums.read(buf, "gv", P)
        loss_sums, _ = Sums.read(rest, "loss")
        curvature = (dot(delta, gv_sums.vector) / n_curv
                     + (cfg.l2 + (lam if damped else 0.0)) * dot(delta, delta))
        loss_after = loss_sums.mean_loss + self._l2_term(theta + delta)
        return damping.reduction_ratio(loss_curv, loss_after, slope, curvature)

    def _reject(self, state, update, loss, status, t0, clock):
        lam = damping.update_damping(state.damping, -math.inf,
                                     min_damping=self.config.min_damping,
                                     max_damping=self.config.max_damping)
        new_state = replace(state, damping=lam, cg_init=np.zeros_like(state.theta),
                            update=update)
        return new_state, StepInfo(update, loss, -math.inf, lam, 0, status, 0, 0.0, False,
                                   math.nan, time.perf_counter() - t0,
                                   times=clock.split())

    def evaluate(self, theta: np.ndarray, first_row: int,
                 n_rows: int) -> tuple[float, float | None]:
        return evaluate(self.worker, self.comm, theta, first_row, n_rows)
