"""``dhf.train``: Hessian-free training of your own PyTensor graph from Python.

theano-hf's promise, with dhf's optimiser: describe the model as a
:class:`~dhf.model.ModelSpec` (inputs, targets, parameters as shared variables, the
output ``s`` the loss is applied to, and the loss), hand over the data as arrays, get the
trained parameters back by name::

    spec = dhf.ModelSpec(inputs=[x], targets=y, params=[W, b], output=s,
                         loss="softmax_xent")
    result = dhf.train(spec, train=(X, Y), valid=(Xv, Yv),
                       config={"optimizer": {"max_updates": 20}})
    result.params["W"], result.metrics[-1]["loss"]

The same script runs serially (a notebook) and, unchanged, under ``mpirun -n N``: each
rank then computes its share of every batch and all ranks return the same result.
``config`` has the sections and keys of the TOML file (``dhf-train --help`` lists them);
``[task]`` and ``[model]`` are ignored, the spec is the model.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from dhf import config as config_mod
from dhf.comm import Communicator, get_comm, on_every_rank, on_root
from dhf.batches import BatchSizes
from dhf.dataset import ArraySource
from dhf.errors import DataError, UserError
from dhf.model import ModelSpec

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank): :class:`dhf.run.RunResult`'s fields,
    and the run directory.

    Attributes
    ----------
    params : the final parameters by name (the shared variables hold them too).
    best_params : the parameters of the best validation error (``params`` without
        validation data).
    metrics : one dict per update, the rows of ``metrics.jsonl``.
    updates, train_loss, valid_loss, valid_error, seconds : the ``result:`` line.
    out : the run directory, or None when ``train`` used a temporary one.
    """

    params: dict[str, np.ndarray]
    best_params: dict[str, np.ndarray]
    metrics: list[dict] = field(repr=False)
    updates: int
    train_loss: float
    valid_loss: float | None
    valid_error: float | None
    seconds: float
    out: Path | None = None


def train(spec: ModelSpec, train: Sequence[np.ndarray] | np.ndarray,
          valid: Sequence[np.ndarray] | np.ndarray | None = None,
          config: dict | None = None, *, out: str | Path | None = None,
          resume: bool = False, comm: Communicator | None = None,
          verbose: bool = True) -> TrainResult:
    """Train ``spec`` on ``train`` (arrays aligned with ``spec.data_vars``: inputs,
    targets unless they are an input, mask) with the optimiser ``config`` names.

    Parameters
    ----------
    spec : the model.
    train, valid : row-major arrays (a single array for a one-input autoencoder whose
        targets are its input).  Without ``valid`` no validation pass is made.
    config : nested dict of config sections, over the defaults; validated as the TOML
        file is.  Under JAX on the CPU (``run.device = "cpu"``, the default) this
        process's JAX is kept to the CPU from then on, unless ``JAX_PLATFORMS`` is set
        (:func:`dhf.device.jax_on_cpu`).
    out : run directory for ``metrics.jsonl``, ``checkpoint.h5`` and ``best.h5``
        (default: a temporary directory, removed afterwards).
    resume : continue the run in ``out`` from its checkpoint.
    comm : the communicator (default: MPI when launched by mpirun, else serial).
    verbose : rank 0 prints the start line and one line per update, as ``dhf-train``
        does (other ranks print only warnings, whatever logging is configured); False:
        warnings only.
    """
    from dhf import run

    cfg = config_mod.defaults()
    config_mod.merge(cfg, config or {}, source="config")
    comm = comm if comm is not None else get_comm()
    sources = (_source(spec, train, "train"),
               _source(spec, valid, "valid") if valid is not None else None)
    for split, source in zip(("train", "valid"), sources):
        if source is not None:
            _check_same_on_every_rank(comm, split, source.arrays)
    _fit_batches(cfg["optimizer"], (config or {}).get("optimizer", {}), sources[0].n_rows,
                 comm.rank == 0)
    config_mod.validate(cfg)
    if comm.rank == 0:
        _warn_frozen(spec)
    temporary = out is None
    if temporary:
        out = on_root(comm, _temporary_directory)
    out = Path(out)
    cfg["run"]["out"] = str(out)
    try:
        with _reporting(comm.rank == 0 and verbose), _one_blas_thread():
            summary = run.train(cfg, comm, out, resume=resume, spec=spec, data=sources)
    finally:
        if temporary and comm.rank == 0:
            shutil.rmtree(out, ignore_errors=True)
    shared = {f.name: getattr(summary, f.name) for f in fields(TrainResult)
              if f.name != "out"}
    return TrainResult(**shared, out=None if temporary else out)


@contextlib.contextmanager
def _one_blas_thread():
    """One BLAS thread while training, as ``dhf-train`` runs (numpy is loaded already, so
    through threadpoolctl rather than the environment), unless the user chose a count
    with ``OMP_NUM_THREADS`` or the like."""
    from dhf.launcher import threads_chosen

    if threads_chosen():
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextlib.contextmanager
def _reporting(report: bool):
    """Progress lines from dhf's loggers on this rank while training: if ``report``, on
    stdout (through the caller's logging set-up when there is one), otherwise only
    warnings."""
    dhf_logger = logging.getLogger("dhf")
    handler = None

    def quiet(record):  # a handler filter: warnings and errors only
        return record.levelno >= logging.WARNING

    level = dhf_logger.level
    if report and not dhf_logger.hasHandlers():  # no handler here or above: add one
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        dhf_logger.addHandler(handler)
        if dhf_logger.getEffectiveLevel() > logging.INFO:
            dhf_logger.setLevel(logging.INFO)
    elif not report:
        for h in dhf_logger.handlers + logging.getLogger().handlers:
            h.addFilter(quiet)
    try:
        yield
    finally:
        dhf_logger.setLevel(level)
        if handler is not None:
            dhf_logger.removeHandler(handler)
        for h in dhf_logger.handlers + logging.getLogger().handlers:
            h.removeFilter(quiet)


def _temporary_directory() -> str:
    try:
        return tempfile.mkdtemp(prefix="dhf-")
    except OSError as err:
        raise UserError(f"cannot make a temporary run directory ({err.strerror}); pass "
                        "out=DIR") from None


def _fit_batches(opt: dict, given: dict, n_rows: int, report: bool) -> None:
    """Batch sizes the caller left at their defaults, shrunk to a data set too small for
    them (the defaults want 6 000 rows; :meth:`dhf.batches.BatchSizes.fitted`).  Sizes the
    caller set stay."""
    batches = BatchSizes.hf(opt)
    fit = batches.fitted(n_rows, given)
    for key, value in zip(("gradient_batch", "curvature_batch", "backtrack_batch",
                           "linesearch_batch"), fit.sizes):
        opt[key] = value
    if report and batches.rows_needed > n_rows and not batches.full:
        logger.info("%d training rows: gradient_batch %d, curvature_batch %d, "
                    "backtrack_batch %d (the defaults need %d rows)", n_rows,
                    fit.gradient, fit.curvature, fit.backtrack, batches.rows_needed)


def _check_targets(spec: ModelSpec, arrays, names, split: str) -> None:
    """The targets' format for the built-in losses (docs/own-model.md): sigmoid_xent
    wants values in [0, 1], softmax_xent one-hot rows (or probabilities summing to 1);
    integer class labels are the usual mistake, caught here rather than after compiling."""
    if spec.loss not in ("sigmoid_xent", "softmax_xent"):
        return
    i = next(i for i, v in enumerate(spec.data_vars) if v is spec.targets)
    y, name = arrays[i], names[i]
    if y.size and (y.min() < 0 or y.max() > 1):
        hint = (" (integer labels? one-hot encode them: np.eye(n_classes)[labels])"
                if spec.loss == "softmax_xent" else "")
        raise DataError(f"{split}[{i}] ({name}): {spec.loss} targets must lie in [0, 1], "
                        f"got values from {y.min():g} to {y.max():g}{hint}")
    if spec.loss == "softmax_xent" and y.ndim >= 2 and y.size:
        sums = y.sum(axis=-1)
        if spec.mask is not None:  # masked steps may hold anything; judge the rest
            sums = sums[sums != 0]
        if sums.size and np.abs(sums - 1).max() > 1e-6:
            raise DataError(f"{split}[{i}] ({name}): softmax_xent targets are one-hot rows "
                            f"(or probabilities summing to 1); a row sums to "
                            f"{sums.flat[np.argmax(np.abs(sums - 1))]:g} (integer labels? "
                            "np.eye(n_classes)[labels])")


def _check_same_on_every_rank(comm: Communicator, split: str, arrays) -> None:
    """Every rank must pass the same data (dhf shards it itself): the row counts and a
    CRC-32 of the bytes, compared with rank 0's in one small Allreduce."""
    rows = len(arrays[0])
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).view(np.uint8), crc)
    reference = comm.bcast((rows, crc))
    differs = np.zeros(comm.size)
    differs[comm.rank] = float((rows, crc) != reference)
    differs = comm.allreduce_sum(differs)
    if differs.any():
        others = ", ".join(str(r) for r in np.flatnonzero(differs))
        raise on_every_rank(DataError(
            f"{split}: ranks {others} passed other data than rank 0 ({rows} rows here); "
            "pass every rank the whole data set, dhf shards it"))


def _warn_frozen(spec: ModelSpec) -> None:
    """A shared variable the model uses but ``params`` leaves out is silently fixed."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import graph_inputs

    trained = {id(p) for p in spec.params}
    frozen = sorted({v.name or "unnamed" for v in graph_inputs([spec.output])
                     if isinstance(v, SharedVariable) and id(v) not in trained})
    if frozen:
        logger.warning("shared variables %s are used by the model but not in params: "
                       "they stay fixed", ", ".join(frozen))


def _source(spec: ModelSpec, arrays, split: str) -> ArraySource:
    """Arrays checked against the spec's data variables: count, rank, rows, finiteness."""
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    arrays = [np.asarray(a) for a in arrays]
    variables = spec.data_vars
    names = [v.name or f"data[{i}]" for i, v in enumerate(variables)]
    if len(arrays) != len(variables):
        raise DataError(f"{split}: the model takes {len(variables)} arrays "
                        f"({', '.join(names)}), got {len(arrays)}")
    for i, (a, v, name) in enumerate(zip(arrays, variables, names)):
        if a.ndim != v.ndim:
            raise DataError(f"{split}[{i}] ({name}): expected {v.ndim} dimensions, got "
                            f"shape {a.shape}")
        if a.dtype.kind not in "biuf":
            raise DataError(f"{split}[{i}] ({name}): expected numbers, got dtype {a.dtype}")
        if len(a) != len(arrays[0]):
            raise DataError(f"{split}: {name} has {len(a)} rows but {names[0]} has "
                            f"{len(arrays[0])}")
        bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
        if bad.any():
            raise DataError(f"{split}[{i}] ({name}) row {int(np.argmax(bad))} holds NaN "
                            "or Inf")
    if not len(arrays[0]):
        raise DataError(f"{split}: no rows")
    _check_targets(spec, arrays, names, split)
    return ArraySource([a.astype(v.dtype, copy=False) for a, v in zip(arrays, variables)])
