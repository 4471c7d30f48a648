"""A training run from a resolved config: data, model, optimiser, outputs.

Every rank calls :func:`train`; rank 0 alone writes the run directory:
``config.toml`` (the resolved config), ``metrics.jsonl`` (one JSON object per update) and
``checkpoint.h5``.  Decisions that could differ between ranks (the run directory, what a
checkpoint holds) are made on rank 0 and broadcast, errors included, so a bad
``--resume`` stops every rank with the same message instead of leaving some waiting.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dhf import checkpoint, tasks
from dhf.comm import Communicator, check_replicas
from dhf.config import to_toml
from dhf.coordinator import HFConfig, HFOptimizer, HFState
from dhf.data import BatchSampler
from dhf.errors import UserError
from dhf.log import format_update
from dhf.worker import Worker

logger = logging.getLogger(__name__)

MODES = {"numba": "NUMBA", "c": "CVM", "jax": "JAX", "default": None}


def train(config: dict, comm: Communicator, out: Path, *, resume: bool = False,
          on_cg_iter: Callable[[int, float], None] | None = None) -> dict:
    """Run (or resume) the configured job; returns the result summary on every rank."""
    t_start = time.perf_counter()
    _on_root(comm, lambda: _prepare_out(out, resume))
    splits = tasks.generate_splits(config)
    n_train = len(splits["train"][0])
    n_valid = len(splits["valid"][0])
    data = [np.concatenate([a, b]) for a, b in zip(splits["train"], splits["valid"])]
    spec = tasks.get(config["task"]["name"]).build_model(config)
    worker = Worker(spec, data, mode=_mode(config["run"]["backend"]))
    opt_cfg = config["optimizer"]
    sampler = BatchSampler(n_train, opt_cfg["gradient_batch"], opt_cfg["curvature_batch"],
                           opt_cfg["backtrack_batch"], config["run"]["seed"])
    optimizer = HFOptimizer(worker, comm, HFConfig.from_config(opt_cfg), sampler)
    theta0 = worker.layout.flatten([p.get_value() for p in spec.params])
    state = optimizer.init(theta0)
    config_toml = to_toml(config)
    best = {"theta": state.theta, "error": math.inf, "update": 0}
    if resume:
        saved = _on_root(comm, lambda: checkpoint.load(
            out / "checkpoint.h5", param_names=worker.layout.names, n_params=theta0.size))
        state = HFState(saved["theta"], float(saved["damping"]), saved["cg_init"],
                        int(saved["update"]))
        best = {"theta": saved["best_theta"], "error": float(saved["best_valid_error"]),
                "update": int(saved["best_update"])}
        logger.info("resumed %s at update %d", out, state.update)
    _on_root(comm, lambda: _start_outputs(out, config_toml, state.update))
    logger.info("dhf: task %s, %d parameters, %d ranks, %d train / %d valid rows; "
                "compiled in %.1fs", config["task"]["name"], theta0.size, comm.size,
                n_train, n_valid, worker.compile_seconds)

    run_cfg = config["run"]
    row: dict = {}
    valid_loss = valid_error = None
    while state.update < opt_cfg["max_updates"]:
        t_update = time.perf_counter()
        state, info = optimizer.step(state, on_cg_iter)
        row = {"update": info.update, "loss": info.loss, "valid_loss": None,
               "valid_error": None, "rho": info.rho, "damping": info.damping,
               "cg_iters": info.cg_iters, "cg_status": info.cg_status,
               "backtrack_iter": info.backtrack_iter, "step_size": info.step_size,
               "accepted": info.accepted, "held_out_loss": info.loss_after}
        if state.update % run_cfg["valid_every"] == 0 or state.update == opt_cfg["max_updates"]:
            valid_loss, valid_error = optimizer.evaluate(state.theta, n_train, n_valid)
            row.update(valid_loss=valid_loss, valid_error=valid_error)
            if valid_error < best["error"]:
                best = {"theta": state.theta, "error": valid_error, "update": state.update}
        every = run_cfg["check_replicas_every"]
        if every and state.update % every == 0 and not check_replicas(comm, state.theta):
            logger.warning("θ differed between ranks at update %d; using rank 0's",
                           state.update)
            state = HFState(comm.bcast(state.theta), state.damping, comm.bcast(state.cg_init),
                            state.update)
        solved = valid_error is not None and valid_error <= run_cfg["stop_valid_error"]
        last = solved or state.update >= opt_cfg["max_updates"]
        ckpt_every = run_cfg["checkpoint_every"]
        if last or (ckpt_every and state.update % ckpt_every == 0):
            _save(comm, out, state, best, config_toml, worker.layout.names)
        row["seconds"] = time.perf_counter() - t_update
        if comm.rank == 0:
            _append_metrics(out, row)
        logger.info(format_update(row))
        if solved:
            logger.info("solved: validation error %.3g <= %.3g", valid_error,
                        run_cfg["stop_valid_error"])
            break
    return {"updates": state.update, "train_loss": row.get("loss", math.nan),
            "valid_loss": valid_loss, "valid_error": valid_error,
            "seconds": time.perf_counter() - t_start, "theta": state.theta,
            "params": worker.layout.as_dict(state.theta)}


def _mode(backend: str):
    """The PyTensor mode for ``run.backend``, checking that its package is installed."""
    if backend == "jax":
        try:
            import jax  # noqa: F401
        except ImportError:
            raise UserError("run.backend = 'jax' needs the jax package: pip install jax "
                            "(GPU: jax[cuda12])") from None
    return MODES[backend]


def _save(comm, out, state, best, config_toml, names):
    if comm.rank == 0:
        checkpoint.save(out / "checkpoint.h5", theta=state.theta, cg_init=state.cg_init,
                        damping=state.damping, update=state.update,
                        best_theta=best["theta"], best_valid_error=best["error"],
                        best_update=best["update"], config_toml=config_toml,
                        param_names=names)


def _prepare_out(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "checkpoint.h5").exists():
            raise UserError(f"{out}: no checkpoint.h5 to resume from")
        return
    if (out / "checkpoint.h5").exists() or (out / "metrics.jsonl").exists():
        raise UserError(f"{out}: already holds a run; pass --resume to continue it or "
                        "--out DIR to start a new one")
    out.mkdir(parents=True, exist_ok=True)


def _start_outputs(out: Path, config_toml: str, update: int) -> None:
    """Write config.toml; drop metrics rows past the checkpoint (updates to be redone)."""
    (out / "config.toml").write_text(config_toml)
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        rows = [ln for ln in metrics.read_text().splitlines()
                if ln.strip() and json.loads(ln)["update"] <= update]
        tmp = metrics.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(r + "\n" for r in rows))
        tmp.replace(metrics)


def _append_metrics(out: Path, row: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def _on_root(comm: Communicator, fn: Callable):
    """Run ``fn`` on rank 0 and broadcast its result, or its UserError, to every rank."""
    outcome = None
    if comm.rank == 0:
        try:
            outcome = ("ok", fn())
        except UserError as err:
            outcome = ("error", err)
    outcome = comm.bcast(outcome) if comm.size > 1 else outcome
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]
