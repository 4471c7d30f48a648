"""A training run from a resolved config: data, model, optimiser, outputs.

Every rank calls :func:`train`; rank 0 alone writes the run directory
(:class:`dhf.rundir.RunDir`).  A run is three steps: :func:`_set_up` builds what stays
fixed (data, model, compiled worker, optimiser) and the starting state, new or resumed;
:func:`_record` turns each update into its metrics row (with validation, the best θ and
the replicas' check); :func:`_result` is what the caller gets back.  Decisions that could
differ between ranks (the run directory, what a checkpoint holds) are made on rank 0 and
broadcast, errors included, so a bad ``--resume`` stops every rank with the same message
instead of leaving some waiting.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dhf import cg, dataset, heap, memory, tasks
from dhf.batches import BatchSizes
from dhf.backends import MODES, backend_of, chunk_rows_of, looped_of, modes
from dhf.comm import (Communicator, alike_on_every_rank, check_replicas, on_every_rank,
                      on_root)
from dhf.compiling import JaxCannotTrace, compile_worker, ranks_and_nodes
from dhf.config import to_toml
from dhf.dataset import StackedSource
from dhf.errors import ConfigError, UserError
from dhf.log import format_update
from dhf.model import ModelSpec
from dhf.optimizer import Optimizer, StopRequested
from dhf.optimizers import make_optimizer
from dhf.rundir import Best, RunDir
from dhf.sources import load_data, training_rows
from dhf.worker import Worker

logger = logging.getLogger(__name__)

#: Compiling longer than this (a cold cache) is announced while it runs.


@dataclasses.dataclass
class RunResult:
    """What a run did (on every rank): the ``result:`` line's numbers, the final and the
    best parameters by name, and every update's row of ``metrics.jsonl``."""

    updates: int
    stopped: bool  # a stop was requested (signal, time limit) before the run's end
    train_loss: float
    valid_loss: float | None
    valid_error: float | None
    seconds: float
    params: dict[str, np.ndarray]
    best_params: dict[str, np.ndarray]
    metrics: list[dict]


@dataclasses.dataclass
class _Job:
    """What stays fixed through one invocation of :func:`train` (built by
    :func:`_set_up`)."""

    config: dict
    comm: Communicator
    rundir: RunDir
    worker: Worker
    optimizer: Optimizer
    n_train: int
    n_valid: int
    config_toml: str
    data_fingerprint: str
    t_start: float
    wall_before: float  # wall time of the run's earlier invocations

    @property
    def has_error(self) -> bool:
        """Does the model have an error measure (else the best θ follows the validation
        loss, and nothing stops on an error)?"""
        return self.worker.spec.error_kind is not None

    def save(self, state, best: Best) -> None:
        self.rundir.save_checkpoint(self.optimizer.name, state, best,
                                    config_toml=self.config_toml,
                                    layout=self.worker.layout,
                                    data_fingerprint=self.data_fingerprint)


def train(config: dict, comm: Communicator, out: Path, *, resume: bool = False,
          spec: ModelSpec | None = None, data: tuple | None = None,
          on_cg_iter: Callable[[int, float], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> RunResult:
    """Run (or resume) the configured job; returns the result summary on every rank.

    The model and data come from ``[task]`` (or ``data.path``) unless ``spec`` and
    ``data = (train_source, valid_source_or_None)`` are given (:func:`dhf.api.train`).
    When ``should_stop()`` turns true on any rank (a SIGTERM, say), the update in
    progress is abandoned, the last completed one is checkpointed, and the result has
    ``stopped = True``.
    """
    with RunDir(Path(out), comm) as rundir:
        return _train(config, rundir, resume, spec, data, on_cg_iter, should_stop)


def _train(config: dict, rundir: RunDir, resume: bool, spec, data, on_cg_iter,
           should_stop) -> RunResult:
    job, state, best = _set_up(config, rundir, resume, spec, data, should_stop)
    run_cfg, max_updates = config["run"], config["optimizer"]["max_updates"]
    complete = _already_complete(state.update, max_updates, best,
                                 run_cfg["stop_valid_error"] if job.has_error else -math.inf
                                 ) if resume else None
    if complete:
        logger.info("nothing to do: %s", complete)
        return _result(job, state, best, [job.rundir.last_metrics()], kept=[])
    rows: list[dict] = []
    validated: dict = {}  # the last row with a validation pass
    stopped = False
    while state.update < max_updates:
        t_update = time.perf_counter()
        try:
            state, info = job.optimizer.step(state, on_cg_iter)
        except StopRequested:
            _close(on_cg_iter)
            job.save(state, best)
            logger.info("stop requested: checkpointed update %d in %s; continue with "
                        "--resume", state.update, job.rundir.path)
            stopped = True
            break
        _close(on_cg_iter)
        state, best, row = _record(job, state, best, info, t_update)
        rows.append(row)
        validated = row if row["valid_loss"] is not None else validated
        reason = stop_reason(run_cfg, state.update, validated, best)
        every = run_cfg["checkpoint_every"]
        if reason or state.update >= max_updates or (every and state.update % every == 0):
            job.save(state, best)
        if reason:
            logger.info(reason)
            break
    if best.update > 0:
        job.rundir.save_best(job.worker.layout, best,
                             "valid_error" if job.has_error else "valid_loss")
    return _result(job, state, best, rows, kept=rows, stopped=stopped)


def _set_up(config: dict, rundir: RunDir, resume: bool, spec: ModelSpec | None,
            data: tuple | None, should_stop) -> tuple[_Job, Any, Best]:
    """Data, model, compiled worker and optimiser, then the starting state and best θ:
    the optimiser's ``init`` or the checkpoint's.  The run directory is written only
    once all of it is ready, so a failed start leaves nothing behind."""
    t_start = time.perf_counter()
    heap.keep_freed_memory()  # before JAX starts its threads (dhf.heap)
    comm, out = rundir.comm, rundir.path
    rundir.prepare(resume, config)
    generated = data is None and not config["data"]["path"] and isinstance(
        tasks.get(config["task"]["name"]), tasks.GeneratedTask)
    if generated:  # the model first, so that a run too big is refused before its data
        with alike_on_every_rank():
            spec = tasks.get(config["task"]["name"]).build_model(config)
        _check_memory(config, spec, comm, None)
    train_rows, valid_rows = data if data is not None else load_data(config, comm)
    fresh = getattr(train_rows, "on_demand", False)
    with alike_on_every_rank():  # follows from the config and the rows' counts
        if fresh and config["run"]["train_error"]:
            raise ConfigError("run.train_error = true needs a fixed training set; this "
                              "task draws fresh rows (data.fresh = true): set data.fresh "
                              "= false or run.train_error = false")
        if spec is None:
            spec = tasks.get(config["task"]["name"]).build_model(config)
    if not generated:
        _check_memory(config, spec, comm, (train_rows, valid_rows))
    sources = [train_rows] + ([valid_rows] if valid_rows is not None else [])
    data_fingerprint = "" if fresh else dataset.fingerprint(sources)
    if resume:
        rundir.check_same_data(data_fingerprint)
    with alike_on_every_rank():
        backend, gv_backend = modes(config["run"])
    batches = BatchSizes.of(config["optimizer"]).compiled_rows(
        train_rows.n_rows, valid_rows.n_rows if valid_rows is not None else 0,
        config["run"]["train_error"])
    n_train = train_rows.n_rows

    def build(backend: str, gv_backend: str) -> tuple[Worker, Optimizer]:
        """The worker and its optimiser (which checks the batches against the rows,
        before any compiling)."""
        worker = Worker(spec, StackedSource(sources), mode=MODES[backend],
                        gv_mode=MODES[gv_backend],
                        chunk_rows=chunk_rows_of(config["run"], spec),
                        gpu_ranks=comm.size if config["run"]["device"] == "gpu" else 0)
        with alike_on_every_rank():  # the batches against the rows, on every rank alike
            return worker, make_optimizer(config, worker, comm, n_train, should_stop)

    worker, optimizer = build(backend, gv_backend)
    theta0 = worker.layout.flatten([p.get_value() for p in spec.params])
    try:
        node_first = compile_worker(worker, comm, theta0, config,
                                    own_data=data is not None, batches=batches)
    except JaxCannotTrace as err:  # every rank, together (compile_worker decides it once)
        if config["run"]["device"] != "cpu":
            raise on_every_rank(UserError(
                f"JAX cannot compile this graph for run.device = "
                f"{config['run']['device']!r} ({err}); set run.device = 'cpu'")) from None
        if config["run"]["backend"] != "auto":
            raise on_every_rank(UserError(
                f"run.backend = 'jax' cannot compile this graph ({err}); set run.backend = "
                "'numba' (or 'auto', which falls back to it)")) from None
        logger.warning("dhf: JAX cannot compile this graph (%s); computing with Numba",
                       err)
        backend = gv_backend = "numba"
        worker, optimizer = build(backend, gv_backend)
        node_first = compile_worker(worker, comm, theta0, config,
                                    own_data=data is not None, batches=batches)
    state = optimizer.init(theta0)
    best = Best(state.theta, math.inf, 0)
    if resume:
        saved = rundir.load(worker.layout, optimizer.name,
                            dataclasses.fields(optimizer.State))
        state, best = optimizer.State(**saved.state), saved.best
        logger.info("resumed %s at update %d", out, state.update)
    config_toml = to_toml(config)
    rundir.start(config_toml, state.update)
    job = _Job(config, comm, rundir, worker, optimizer, n_train,
               valid_rows.n_rows if valid_rows is not None else 0, config_toml,
               data_fingerprint, t_start,
               # each invocation's start-up included: where the last kept row left off
               rundir.wall_so_far() if resume else 0.0)
    logger.info("dhf: %s, %s, %d parameters, %s, %s train / %d valid rows; "
                "compiled in %.1fs (%s%s)",
                config["task"]["name"] if data is None else "own model",
                optimizer.name, theta0.size, ranks_and_nodes(comm),
                "fresh" if fresh else n_train,
                job.n_valid, worker.compile_seconds, backend if gv_backend == backend
                else f"{backend}; Gv: {gv_backend}",
                "; each node's first rank, then the others from its cache" if node_first
                else "")
    return job, state, best


def _check_memory(config: dict, spec: ModelSpec, comm: Communicator, sources) -> None:
    """Refuse, in one line on every rank, a run whose estimated peak memory per rank
    (:mod:`dhf.memory`) exceeds what a rank of rank 0's node can have.  ``sources``: the
    run's (train, valid) rows once they are there (a data file, the caller's arrays, a
    fixed data set such as MNIST); None for a task's generated rows, not yet made.  On a
    GPU the states live in the device's memory, which this does not check."""
    if config["run"]["device"] != "cpu":
        return
    (need,) = memory_needs(config, spec, [comm.size], sources)
    _, on_node = comm.node_ranks()
    on_root(comm, lambda: memory.check(need, on_node))


def memory_needs(config: dict, spec: ModelSpec, ranks: list[int], sources=None
                 ) -> list[memory.Estimate]:
    """The estimated peak memory of a rank at each of ``ranks`` rank counts
    (:func:`dhf.memory.estimate`), for the run's rows: ``sources`` (train, valid) once
    they are there, else what the config says of them (a data file's or a task's rows;
    ``--dry-run`` and a run whose rows are not made yet)."""
    if sources is None:
        n_train = training_rows(config)
        path = config["data"]["path"]
        n_valid = (dataset.H5Source(path, "valid").n_rows if path
                   else config["task"]["n_valid"])
        sample = memory.sample_rows(config)
    else:
        train, valid = sources
        fresh = getattr(train, "on_demand", False)
        n_train = None if fresh else train.n_rows
        n_valid = valid.n_rows if valid is not None else 0
        sample = train.read(np.arange(1)) if not fresh else memory.sample_rows(config)
    cap = chunk_rows_of(config["run"], spec)
    plan = {"whole": backend_of(config["run"]) == "jax",
            "looped": looped_of(config["run"], spec, cap),
            "from_file": bool(config["data"]["path"])}
    return [memory.estimate(config, spec, sample, n_train, n_valid, n, cap, **plan)
            for n in ranks]


def _record(job: _Job, state, best: Best, info, t_update: float
            ) -> tuple[Any, Best, dict]:
    """One update's metrics row, after validating (when due) and checking that the
    replicas agree; the row is logged and appended to metrics.jsonl (before any
    checkpoint: a crash between the two leaves a row that --resume drops and redoes,
    never a checkpointed update missing from the metrics)."""
    run_cfg, update = job.config["run"], state.update
    row = {**info.metrics(), "valid_loss": None, "valid_error": None, "train_error": None}
    if row.get("cg_breakdown"):
        logger.warning("update %d: CG %s; damping raised to %.3g, the next CG starts "
                       "from zero", update, cg.STATUS_MESSAGES[row["cg_status"]],
                       row["damping"])
    if job.n_valid and (update % run_cfg["valid_every"] == 0
                        or update == job.config["optimizer"]["max_updates"]):
        row["valid_loss"], row["valid_error"] = job.optimizer.evaluate(
            state.theta, job.n_train, job.n_valid)
        if score(row) < best.error:
            best = Best(state.theta, score(row), update)
        if run_cfg["train_error"]:
            row["train_error"] = job.optimizer.evaluate(state.theta, 0, job.n_train)[1]
    every = run_cfg["check_replicas_every"]
    if every and update % every == 0 and not check_replicas(job.comm, state.theta):
        logger.warning("θ differed between ranks at update %d; using rank 0's", update)
        state = dataclasses.replace(state, **{
            f.name: job.comm.bcast(getattr(state, f.name))
            for f in dataclasses.fields(state) if np.ndim(getattr(state, f.name))})
    row["seconds"] = time.perf_counter() - t_update
    row["wall"] = job.wall_before + time.perf_counter() - job.t_start
    job.rundir.append_metrics(row)
    logger.info(format_update(row))
    return state, best, row


def _result(job: _Job, state, best: Best, rows: list[dict], *, kept: list[dict],
            stopped: bool = False) -> RunResult:
    """The run's result from its rows (``kept``: this invocation's, returned as
    ``metrics``); the model's shared variables are left at the final θ."""
    last = rows[-1] if rows else {}
    validated = next((r for r in reversed(rows) if r.get("valid_loss") is not None), {})
    job.worker.set_theta(state.theta)
    layout = job.worker.layout
    return RunResult(updates=state.update, stopped=stopped,
                     train_loss=last.get("loss", math.nan),
                     valid_loss=validated.get("valid_loss"),
                     valid_error=validated.get("valid_error"),
                     seconds=time.perf_counter() - job.t_start,
                     params=layout.as_dict(state.theta),
                     best_params=layout.as_dict(best.theta), metrics=kept)


def _already_complete(update: int, max_updates: int, best: Best, stop_error: float
                      ) -> str | None:
    """Why a resumed run has nothing left to do, or None."""
    if update >= max_updates:
        return (f"the run is complete at update {update} (optimizer.max_updates = "
                f"{max_updates}); raise it to continue")
    if best.update and best.error <= stop_error:
        return (f"the run was solved at update {best.update} (validation error "
                f"{best.error:.3g} <= run.stop_valid_error = {stop_error:.3g}); set it "
                "lower (-1: never stop) to continue")
    return None


def _close(progress) -> None:
    """Clear a progress display (see :class:`dhf.log.CGProgress`) before logging."""
    close = getattr(progress, "close", None)
    if close is not None:
        close()


def score(row: dict) -> float:
    """What the best θ and ``run.patience`` follow: a validated row's error rate, or its
    validation loss for a model without an error measure (whose error is None)."""
    return row["valid_error"] if row["valid_error"] is not None else row["valid_loss"]


def stop_reason(run_cfg: dict, update: int, validated: dict, best: Best) -> str | None:
    """Why the run should end after this update (``validated``: the last row with a
    validation pass, {} before the first), or None.  Only an error rate can meet
    ``run.stop_valid_error``: a model without an error measure is never "solved"."""
    valid_error = validated.get("valid_error")
    if valid_error is not None and valid_error <= run_cfg["stop_valid_error"]:
        return (f"solved: validation error {valid_error:.3g} <= "
                f"{run_cfg['stop_valid_error']:.3g}")
    patience = run_cfg["patience"]
    if patience and validated and update - best.update >= patience:
        measure = "error" if valid_error is not None else "loss"
        return (f"early stopping: no better validation {measure} in {patience} updates "
                f"(best {best.error:.3g} at update {best.update})")
    return None
