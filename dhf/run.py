"""A training run from a resolved config: data, model, optimiser, outputs.

Every rank calls :func:`train`; rank 0 alone writes the run directory:
``config.toml`` (the resolved config), ``metrics.jsonl`` (one JSON object per update) and
``checkpoint.h5``.  Decisions that could differ between ranks (the run directory, what a
checkpoint holds) are made on rank 0 and broadcast, errors included, so a bad
``--resume`` stops every rank with the same message instead of leaving some waiting.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from dhf import cg, checkpoint, dataset, tasks
from dhf.comm import Communicator, check_replicas, on_every_rank, on_root
from dhf.config import read_toml, to_toml
from dhf.coordinator import HFConfig, HFOptimizer
from dhf.optimizer import StopRequested
from dhf.data import BatchSampler, FreshSampler, shard_bounds
from dhf.dataset import ArraySource, FreshSource, StackedSource, fresh_block
from dhf.errors import CheckpointError, ConfigError, DataError, UserError
from dhf.log import format_update
from dhf.model import ModelSpec
from dhf.sgd import AdamOptimizer, SGDConfig, SGDOptimizer
from dhf.worker import Worker

logger = logging.getLogger(__name__)

MODES = {"numba": "NUMBA", "c": "CVM", "jax": "JAX", "default": None}
FIRST_ORDER = {"sgd": SGDOptimizer, "adam": AdamOptimizer}


class Best(NamedTuple):
    """The parameters of the best validation error so far, and when they were reached."""

    theta: np.ndarray
    error: float
    update: int


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
    t_start = time.perf_counter()
    on_root(comm, lambda: _prepare_out(out, resume, config))
    train_rows, valid_rows = data if data is not None else load_data(config, comm)
    n_train = train_rows.n_rows
    n_valid = valid_rows.n_rows if valid_rows is not None else 0
    if spec is None:
        spec = tasks.get(config["task"]["name"]).build_model(config)
    sources = [train_rows] + ([valid_rows] if valid_rows is not None else [])
    data_fingerprint = ("" if getattr(train_rows, "on_demand", False)
                        else dataset.fingerprint(sources))
    if resume:
        on_root(comm, lambda: _check_same_data(out, data_fingerprint))
    worker = Worker(spec, StackedSource(sources), mode=_mode(config["run"]["backend"]))
    opt_cfg = config["optimizer"]
    optimizer = make_optimizer(config, worker, comm, n_train, should_stop)
    theta0 = worker.layout.flatten([p.get_value() for p in spec.params])
    _check_fit(worker, theta0, config, own_data=data is not None)
    state = optimizer.init(theta0)
    config_toml = to_toml(config)
    best = Best(state.theta, math.inf, 0)
    if resume:
        saved = on_root(comm, lambda: checkpoint.load(
            out / "checkpoint.h5", layout=worker.layout, optimizer=optimizer.name))
        state = optimizer.State(**{f.name: _scalar(saved[f.name])
                                   for f in dataclasses.fields(optimizer.State)})
        best = Best(saved["best_theta"], float(saved["best_valid_error"]),
                    int(saved["best_update"]))
        logger.info("resumed %s at update %d", out, state.update)
    on_root(comm, lambda: _start_outputs(out, config_toml, state.update))
    # Wall time since the run began, each invocation's start-up included: where the last
    # kept row of an earlier invocation left off.
    wall_before = on_root(comm, lambda: _wall_so_far(out)) if resume else 0.0
    logger.info("dhf: %s, %s, %d parameters, %d ranks, %s train / %d valid rows; "
                "compiled in %.1fs",
                config["task"]["name"] if data is None else "own model",
                optimizer.name, theta0.size, comm.size,
                "fresh" if getattr(train_rows, "on_demand", False) else n_train, n_valid,
                worker.compile_seconds)

    run_cfg = config["run"]
    row: dict = {}
    metrics: list[dict] = []
    valid_loss = valid_error = None
    stopped = False
    complete = _already_complete(state.update, opt_cfg["max_updates"], best,
                                 run_cfg["stop_valid_error"]) if resume else None
    if complete:
        logger.info("nothing to do: %s", complete)
        row = on_root(comm, lambda: _last_metrics(out))
        valid_loss, valid_error = row.get("valid_loss"), row.get("valid_error")
    while state.update < opt_cfg["max_updates"] and not complete:
        t_update = time.perf_counter()
        try:
            state, info = optimizer.step(state, on_cg_iter)
        except StopRequested:
            _close(on_cg_iter)
            _save(comm, out, optimizer.name, state, best, config_toml, worker.layout,
                  data_fingerprint)
            logger.info("stop requested: checkpointed update %d in %s; continue with "
                        "--resume", state.update, out)
            stopped = True
            break
        _close(on_cg_iter)
        row = {**info.metrics(), "valid_loss": None, "valid_error": None}
        if row.get("cg_breakdown"):
            logger.warning("update %d: CG %s; damping raised to %.3g, the next CG starts "
                           "from zero", state.update, cg.STATUS_MESSAGES[row["cg_status"]],
                           row["damping"])
        if n_valid and (state.update % run_cfg["valid_every"] == 0
                        or state.update == opt_cfg["max_updates"]):
            valid_loss, valid_error = optimizer.evaluate(state.theta, n_train, n_valid)
            row.update(valid_loss=valid_loss, valid_error=valid_error)
            if valid_error < best.error:
                best = Best(state.theta, valid_error, state.update)
        every = run_cfg["check_replicas_every"]
        if every and state.update % every == 0 and not check_replicas(comm, state.theta):
            logger.warning("θ differed between ranks at update %d; using rank 0's",
                           state.update)
            state = dataclasses.replace(state, **{
                f.name: comm.bcast(getattr(state, f.name))
                for f in dataclasses.fields(state) if np.ndim(getattr(state, f.name))})
        reason = _stop_reason(run_cfg, state.update, valid_error, best)
        row["seconds"] = time.perf_counter() - t_update
        row["wall"] = wall_before + time.perf_counter() - t_start
        # Metrics first, then the checkpoint: a crash between the two leaves a row that
        # --resume drops and redoes, never a checkpointed update missing from the metrics.
        _on_root_writing(comm, out, lambda: _append_metrics(out, row))
        metrics.append(row)
        logger.info(format_update(row))
        ckpt_every = run_cfg["checkpoint_every"]
        if reason or state.update >= opt_cfg["max_updates"] or (
                ckpt_every and state.update % ckpt_every == 0):
            _save(comm, out, optimizer.name, state, best, config_toml, worker.layout,
                  data_fingerprint)
        if reason:
            logger.info(reason)
            break
    if best.update > 0:
        _on_root_writing(comm, out, lambda: checkpoint.save_params(
            out / "best.h5", worker.layout, best.theta, update=best.update,
            valid_error=best.error))
    worker.set_theta(state.theta)  # leave the model's shared variables at the result
    return RunResult(updates=state.update, stopped=stopped,
                     train_loss=row.get("loss", math.nan), valid_loss=valid_loss,
                     valid_error=valid_error, seconds=time.perf_counter() - t_start,
                     params=worker.layout.as_dict(state.theta),
                     best_params=worker.layout.as_dict(best.theta), metrics=metrics)


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


def _wall_so_far(out: Path) -> float:
    """The last kept metrics row's ``wall`` (the sum of ``seconds`` for rows from a dhf
    that did not record it)."""
    path = out / "metrics.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] \
        if path.exists() else []
    if rows and "wall" in rows[-1]:
        return float(rows[-1]["wall"])
    return float(sum(r.get("seconds") or 0.0 for r in rows))


def _last_metrics(out: Path) -> dict:
    """The last row of ``out``'s metrics.jsonl ({} if none)."""
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


def make_optimizer(config: dict, worker: Worker, comm: Communicator, n_train: int,
                   should_stop=None):
    """The optimiser ``optimizer.name`` names, with its batches checked against the data."""
    opt_cfg, seed = config["optimizer"], config["run"]["seed"]
    fresh = config["data"]["fresh"]
    if opt_cfg["name"] in FIRST_ORDER:
        check_batches(opt_cfg, n_train, fresh)
        return FIRST_ORDER[opt_cfg["name"]](worker, comm, SGDConfig.from_config(opt_cfg),
                                            n_train, seed, should_stop, fresh=fresh)
    sizes = check_batches(opt_cfg, n_train, fresh)
    held_out = opt_cfg["held_out"]
    if fresh:
        sampler = FreshSampler(*sizes, held_out=held_out)
    else:
        sampler = BatchSampler(n_train, sizes[0], sizes[1], sizes[2], seed,
                               linesearch=sizes[3], held_out=held_out)
    return HFOptimizer(worker, comm, HFConfig.from_config(opt_cfg), sampler, should_stop)


def check_batches(opt_cfg: dict, n_train: int, fresh: bool) -> list[int]:
    """The HF batch sizes (gradient, curvature, backtracking, line search), after checking
    that they fit each other and ``n_train`` training rows (any number when fresh)."""
    if opt_cfg["name"] in FIRST_ORDER:
        if not fresh and opt_cfg["sgd_batch"] > n_train:
            raise ConfigError(f"optimizer.sgd_batch = {opt_cfg['sgd_batch']} exceeds the "
                              f"{n_train} training rows")
        return [opt_cfg["sgd_batch"]]
    sizes = [opt_cfg[f"{name}_batch"] for name in ("gradient", "curvature", "backtrack",
                                                   "linesearch")]
    held_out = opt_cfg["held_out"]
    if not held_out and sizes[1] + sizes[2] + sizes[3] > sizes[0]:
        raise ConfigError(
            f"optimizer.curvature_batch + backtrack_batch + linesearch_batch = "
            f"{sizes[1] + sizes[2] + sizes[3]} exceeds "
            f"optimizer.gradient_batch = {sizes[0]}"
            "; with optimizer.held_out = false they are disjoint rows of the gradient "
            "batch")
    needed = sizes[0] + (sizes[2] + sizes[3] if held_out else 0)
    if not fresh and needed > n_train:
        keys = ("optimizer.gradient_batch + backtrack_batch + linesearch_batch"
                if held_out else "optimizer.gradient_batch")
        raise ConfigError(
            f"{keys} = {needed} exceeds the {n_train} training rows; lower them "
            "(linesearch_batch = 0 searches on the backtracking batch) or set "
            "data.fresh = true")
    return sizes


def training_rows(config: dict) -> int | None:
    """What ``--dry-run`` needs of the data without loading it: ``[task]`` updated from
    ``data.path``'s own task, and the number of training rows (None: fresh data)."""
    if config["data"]["fresh"]:
        return None
    path = config["data"]["path"]
    if not path:
        return config["task"]["n_train"]
    name, params = _inspect_file(path, config["task"], 1)
    config["task"].update({"name": name, **{k: v for k, v in params.items()
                                            if k in config["task"] and k != "name"}})
    return dataset.H5Source(path, "train").n_rows


def _scalar(value):
    """numpy scalars read from HDF5 attributes as Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def _close(progress) -> None:
    """Clear a progress display (see :class:`dhf.log.CGProgress`) before logging."""
    close = getattr(progress, "close", None)
    if close is not None:
        close()


def _check_fit(worker: Worker, theta: np.ndarray, config: dict, own_data: bool) -> None:
    """Evaluate one row so that data of the wrong shape fails here, in one line."""
    try:
        worker.loss_sum(theta, np.array([0]))
    except (ValueError, IndexError, TypeError, AssertionError) as err:
        source = ("train" if own_data else
                  config["data"]["path"] or f"task {config['task']['name']}")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{source}: the data does not fit the model ({first})") from None


def _stop_reason(run_cfg: dict, update: int, valid_error, best: Best) -> str | None:
    """Why the run should end after this update, or None."""
    if valid_error is not None and valid_error <= run_cfg["stop_valid_error"]:
        return (f"solved: validation error {valid_error:.3g} <= "
                f"{run_cfg['stop_valid_error']:.3g}")
    patience = run_cfg["patience"]
    if patience and valid_error is not None and update - best.update >= patience:
        return (f"early stopping: no better validation error in {patience} updates "
                f"(best {best.error:.3g} at update {best.update})")
    return None


def load_data(config: dict, comm: Communicator):
    """The training and validation row sources: generated from ``[task]`` or read from the
    HDF5 file ``data.path`` (whose task then sets ``[task]``), checked for every rank."""
    path = config["data"]["path"]
    if config["data"]["fresh"]:
        task_cfg, task = config["task"], tasks.get(config["task"]["name"])
        if not isinstance(task, tasks.GeneratedTask):
            raise ConfigError(f"data.fresh = true needs a task that generates its data; "
                              f"task {task_cfg['name']!r} has a fixed data set")
        opt = config["optimizer"]
        sizes = ([opt["sgd_batch"]] if opt["name"] in FIRST_ORDER else
                 [opt[f"{b}_batch"] for b in ("gradient", "curvature", "backtrack",
                                              "linesearch")])
        train = FreshSource(lambda n, rng, first_row: task.generate(task_cfg, n, rng,
                                                                    first_row),
                            task_cfg["seed"], config["run"]["seed"],
                            block=fresh_block(sizes))
        return train, ArraySource(tasks.generate_splits(config, train=False)["valid"])
    if not path:
        splits = tasks.generate_splits(config)
        return ArraySource(splits["train"]), ArraySource(splits["valid"])
    name, params = on_root(comm, lambda: _inspect_file(path, config["task"], comm.size))
    config["task"].update({"name": name, **{k: v for k, v in params.items()
                                            if k in config["task"] and k != "name"}})
    train, valid = dataset.H5Source(path, "train"), dataset.H5Source(path, "valid")
    _check_finite(path, (train, valid), comm)
    return train, valid


def _inspect_file(path: str, task_cfg: dict, n_ranks: int) -> tuple[str, dict]:
    """The data file's task and parameters, after checking (once, on rank 0) that it
    opens, that each split has a row for every rank and that its rows fit the task."""
    name, params = dataset.file_task(path)
    task_cfg = {**task_cfg, "name": name, **{k: v for k, v in params.items()
                                             if k in task_cfg and k != "name"}}
    sources = dataset.H5Source(path, "train"), dataset.H5Source(path, "valid")
    for src in sources:
        if src.n_rows < n_ranks:
            raise DataError(f"{path}: /{src.split} has {src.n_rows} rows, fewer than the "
                            f"{n_ranks} ranks")
    _check_shapes(path, task_cfg, "T" in params, sources)
    return name, params


def _check_shapes(path, task_cfg: dict, file_says_T: bool, sources) -> None:
    """Before anything compiles: each dataset's rows have the shape the task's model reads,
    a row the task generates (its width always; its length too when the file's
    ``task_params`` state T), and the splits agree with each other."""
    task = tasks.get(task_cfg["name"])
    if not isinstance(task, tasks.GeneratedTask):
        return
    try:
        want = [a.shape[1:] for a in task.generate(task_cfg, 1, np.random.default_rng(0))]
    except ValueError as err:
        raise DataError(f"{path}: task_params {task_cfg} do not describe a "
                        f"{task_cfg['name']} data set ({err})") from None
    first = sources[0]
    for src in sources:
        for d, base, shape in zip(src.datasets, first.datasets, want):
            found = d.shape[1:]
            if len(found) != len(shape) or found[-1:] != shape[-1:] or (
                    file_says_T and found != shape):
                where = f" with T = {task_cfg['T']}" if file_says_T else ""
                wanted = shape if file_says_T else str(
                    tuple(["T"] * (len(shape) - 1) + [shape[-1]])).replace("'", "")
                raise DataError(f"{path}: {d.name} has rows of shape {found}; task "
                                f"{task_cfg['name']}{where} reads rows of shape {wanted}")
            if found != base.shape[1:]:
                raise DataError(f"{path}: {d.name} has rows of shape {found} but "
                                f"{base.name} has {base.shape[1:]}; the splits must agree "
                                "(pad shorter sequences, with a zero mask)")


def _check_finite(path, sources, comm: Communicator) -> None:
    """Every rank scans its share of the rows; all learn the first NaN/Inf row of each
    dataset (one Allreduce: each rank fills its own slot)."""
    names = [d.name for src in sources for d in src.datasets]
    slots = np.zeros((len(names), comm.size))
    k = 0
    for src in sources:
        lo, hi = shard_bounds(src.n_rows, comm.rank, comm.size)
        bad = src.first_nonfinite_row(lo, hi)
        for d in src.datasets:
            slots[k, comm.rank] = bad.get(d.name, -1) + 1  # 0 = clean
            k += 1
    slots = comm.allreduce_sum(slots.ravel()).reshape(slots.shape)
    for name, row in zip(names, slots):
        found = row[row > 0]
        if found.size:
            raise on_every_rank(DataError(f"{path}: {name} row {int(found.min()) - 1} "
                                          "holds NaN or Inf"))


def _mode(backend: str):
    """The PyTensor mode for ``run.backend``, checking that its package is installed."""
    if backend == "jax":
        try:
            import jax  # noqa: F401
        except ImportError:
            raise UserError("run.backend = 'jax' needs the jax package: pip install jax "
                            "(GPU: jax[cuda12])") from None
    return MODES[backend]


def _save(comm, out, optimizer_name, state, best, config_toml, layout, data_fingerprint):
    _on_root_writing(comm, out, lambda: checkpoint.save(
        out / "checkpoint.h5", state=dataclasses.asdict(state), optimizer=optimizer_name,
        best_theta=best.theta, best_valid_error=best.error,
        best_update=best.update, config_toml=config_toml, layout=layout,
        data_fingerprint=data_fingerprint))


def _on_root_writing(comm: Communicator, out: Path, write: Callable[[], None]) -> None:
    """Rank 0 writes (metrics, a checkpoint, best.h5); a failure (a full disk) reaches
    every rank as one line, so that none waits in the next collective.  Checkpoints are
    atomic: the last one written stays whole."""
    def guarded():
        try:
            write()
        except OSError as err:
            reason = err.strerror or str(err).split("(")[0].strip()
            raise UserError(f"{out}: cannot write the run ({reason}); its last "
                            "checkpoint stays, --resume continues from it") from None
    on_root(comm, guarded)


def _check_same_data(out: Path, data_fingerprint: str) -> None:
    """Refuse to resume on training data other than the run's (a data file regenerated
    under the same name, other arrays): before anything compiles."""
    before = checkpoint.data_fingerprint(out / "checkpoint.h5")
    if before and data_fingerprint and before != data_fingerprint:
        raise CheckpointError(f"{out}: --resume on other data than the run trained on "
                              f"(fingerprint {data_fingerprint}, the run's {before}); "
                              "restore its data or start a new run (--out DIR)")


#: What a resumed run must keep: the problem, the model and its arithmetic.  Changing
#: one would continue the checkpoint on another job (the parameter shapes may well agree:
#: task.T, run.dtype), so it is refused.  Anything else (max_updates, max_minutes, CG
#: settings...) may change on resume.
FIXED_ON_RESUME = {"task": None, "data": None, "model": None, "run": ("dtype", "seed")}


def _prepare_out(out: Path, resume: bool, config: dict) -> None:
    if resume:
        if not (out / "checkpoint.h5").exists():
            raise UserError(f"{out}: no checkpoint.h5 to resume from")
        _check_same_job(out, config)
        return
    if (out / "checkpoint.h5").exists() or (out / "metrics.jsonl").exists():
        raise UserError(f"{out}: already holds a run; pass --resume to continue it or "
                        "--out DIR to start a new one")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a directory")


def _check_same_job(out: Path, config: dict) -> None:
    """Refuse to resume the run in ``out`` with a ``config`` whose problem-defining keys
    differ from those it was started with (its ``config.toml``)."""
    path = out / "config.toml"
    if not path.exists():
        return
    saved = read_toml(path)
    changed = []
    for section, keys in FIXED_ON_RESUME.items():
        old, new = saved.get(section, {}), config.get(section, {})
        for key in keys or sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                changed.append(f"{section}.{key} = {new.get(key)!r} (the run has "
                               f"{old.get(key)!r})")
    if changed:
        raise UserError(f"{out}: --resume with {'; '.join(changed)}: a resumed run keeps "
                        "its task, data, model, dtype and seed; start a new run "
                        "(--out DIR) to change them")


def _start_outputs(out: Path, config_toml: str, update: int) -> None:
    """Make ``out`` (only now that the model and data are ready, so that a failed start
    leaves nothing behind), write config.toml, and drop metrics rows past the checkpoint
    (updates to be redone)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(config_toml)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write the run there: {err.strerror}"
                        ) from None
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
