"""A run directory, as rank 0 keeps it for every rank.

``config.toml`` (the resolved config), ``metrics.jsonl`` (one JSON object per update),
``checkpoint.h5`` (the optimiser's whole state, the best θ so far, the data's
fingerprint) and ``best.h5`` (the best θ alone).  Every method is called on every rank;
rank 0 alone touches the files, and what it reads, or the one-line error it meets, reaches
every rank (:func:`dhf.comm.on_root`), so that no rank is left waiting in a collective.

One run writes a directory at a time: rank 0 holds an exclusive lock on ``dhf.lock``
inside it (``flock``, which the kernel drops when the process ends, even by SIGKILL, and
which Linux's NFS client takes as a POSIX lock on the server) from the moment it reads a
run there, or makes a new one, until the run ends; a second start into the same
directory (a resume begun twice, a requeued job whose first allocation still runs) is
refused in one line naming the host and pid that hold it.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import socket
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from dhf import checkpoint
from dhf.comm import Communicator, on_root
from dhf.config import read_toml
from dhf.errors import CheckpointError, UserError
from dhf.layout import ParamLayout

#: What a resumed run must keep: the problem, the model and its arithmetic.  Changing
#: one would continue the checkpoint on another job (the parameter shapes may well agree:
#: task.T, run.dtype), so it is refused.  Anything else (max_updates, max_minutes, CG
#: settings...) may change on resume.
FIXED_ON_RESUME = {"task": None, "data": None, "model": None, "run": ("dtype", "seed")}


class Best(NamedTuple):
    """The parameters of the best validation error so far (the best validation loss for
    a model without an error measure), and when they were reached."""

    theta: np.ndarray
    error: float
    update: int


class Saved(NamedTuple):
    """What a checkpoint gives back: the optimiser's state fields by name, and the best."""

    state: dict[str, Any]
    best: Best


#: The file in a run directory whose lock says that a run is writing it.
LOCK_FILE = "dhf.lock"


class RunDir:
    """The run directory ``path``, read and written by rank 0 of ``comm``; a context
    manager whose exit lets go of the directory's lock (taken by :meth:`prepare` or
    :meth:`start`)."""

    def __init__(self, path: Path, comm: Communicator):
        self.path = Path(path)
        self.comm = comm
        self._lock: int | None = None  # rank 0's descriptor of the locked LOCK_FILE
        self._check: Callable[[], None] = lambda: None  # prepare's, again once locked

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing it releases the lock
            self._lock = None

    # -- before the run ----------------------------------------------------------------
    def prepare(self, resume: bool, config: dict) -> None:
        """Check that ``path`` can take a new run, or holds the same job to resume; a
        directory that holds a run is locked first, so that a run writing it is
        named."""
        self._check = lambda: _prepare(self.path, resume, config)

        def prepare():
            if any((self.path / name).exists() for name in (LOCK_FILE, "checkpoint.h5",
                                                            "metrics.jsonl")):
                self._take_lock()
            self._check()
        on_root(self.comm, prepare)

    def _take_lock(self) -> None:
        if self._lock is None:
            self._lock = lock(self.path)

    def check_same_data(self, data_fingerprint: str) -> None:
        """Refuse to resume on training data other than the run's (a data file
        regenerated under the same name, other arrays): before anything compiles."""
        on_root(self.comm, lambda: _check_same_data(self.path, data_fingerprint))

    def load(self, layout: ParamLayout, optimizer: str, state_fields) -> Saved:
        """The checkpoint's state (``state_fields``: the optimiser's ``State`` fields) and
        best parameters."""
        saved = on_root(self.comm, lambda: checkpoint.load(
            self.path / "checkpoint.h5", layout=layout, optimizer=optimizer))
        state = {f.name: _scalar(saved[f.name]) for f in state_fields}
        return Saved(state, Best(saved["best_theta"], float(saved["best_valid_error"]),
                                 int(saved["best_update"])))

    def start(self, config_toml: str, update: int) -> None:
        """Make the directory (only once the model and data are ready, so that a failed
        start leaves nothing behind), write config.toml, and drop metrics rows past the
        checkpoint's ``update`` (updates to be redone)."""
        def start():
            _make(self.path)
            self._take_lock()
            self._check()  # another start may have made a run here since prepare's
            _start(self.path, config_toml, update)
        on_root(self.comm, start)

    def wall_so_far(self) -> float:
        """The last kept metrics row's ``wall`` (the sum of ``seconds`` for rows from a
        dhf that did not record it); 0 for a new run."""
        return on_root(self.comm, lambda: _wall_so_far(self._rows()))

    def last_metrics(self) -> dict:
        """The last row of metrics.jsonl ({} if none)."""
        return on_root(self.comm, lambda: (self._rows() or [{}])[-1])

    # -- during and after the run ------------------------------------------------------
    def append_metrics(self, row: dict) -> None:
        self._write(lambda: _append(self.path / "metrics.jsonl", row))

    def save_checkpoint(self, optimizer: str, state, best: Best, *, config_toml: str,
                        layout: ParamLayout, data_fingerprint: str) -> None:
        """The optimiser's ``state`` (a dataclass) and ``best``, atomically."""
        self._write(lambda: checkpoint.save(
            self.path / "checkpoint.h5", state=dataclasses.asdict(state),
            optimizer=optimizer, best_theta=best.theta, best_valid_error=best.error,
            best_update=best.update, config_toml=config_toml, layout=layout,
            data_fingerprint=data_fingerprint))

    def save_best(self, layout: ParamLayout, best: Best, measure: str = "valid_error"
                  ) -> None:
        """best.h5: the parameters of the best validation error (``measure``, its
        attribute's name: ``valid_loss`` for a model without an error measure)."""
        self._write(lambda: checkpoint.save_params(
            self.path / "best.h5", layout, best.theta, update=best.update,
            **{measure: best.error}))

    def _write(self, write: Callable[[], None]) -> None:
        """Rank 0 writes; a failure (a full disk) reaches every rank as one line.
        Checkpoints are atomic: the last one written stays whole."""
        def guarded():
            try:
                write()
            except OSError as err:
                reason = err.strerror or str(err).split("(")[0].strip()
                raise UserError(f"{self.path}: cannot write the run ({reason}); its last "
                                "checkpoint stays, --resume continues from it") from None
        on_root(self.comm, guarded)

    def _rows(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        return ([json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
                if path.exists() else [])


def lock(out: Path) -> int:
    """An open descriptor of ``out/dhf.lock`` holding its exclusive lock, with this host
    and pid written in it; a :class:`UserError` naming the holder if another process
    has it."""
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write the run there: {err.strerror}"
                        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"{out}: another run is writing this directory ({holder}); wait "
                        "for it to end (or stop it), or pass --out DIR") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
    return fd


def _prepare(out: Path, resume: bool, config: dict) -> None:
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


def _check_same_data(out: Path, data_fingerprint: str) -> None:
    before = checkpoint.data_fingerprint(out / "checkpoint.h5")
    if before and data_fingerprint and before != data_fingerprint:
        raise CheckpointError(f"{out}: --resume on other data than the run trained on "
                              f"(fingerprint {data_fingerprint}, the run's {before}); "
                              "restore its data or start a new run (--out DIR)")


def _make(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write the run there: {err.strerror}"
                        ) from None


def _start(out: Path, config_toml: str, update: int) -> None:
    try:
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


def _wall_so_far(rows: list[dict]) -> float:
    if rows and "wall" in rows[-1]:
        return float(rows[-1]["wall"])
    return float(sum(r.get("seconds") or 0.0 for r in rows))


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")


def _jsonable(v):
    """JSON has no Inf or NaN: ±1e308 and null stand for them."""
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def _scalar(value):
    """numpy scalars read from HDF5 attributes as Python numbers."""
    return value.item() if isinstance(value, np.generic) else value
