"""Under mpiexec -n N: a job's metrics.jsonl is the same, bit for bit, at 1, N - 1 and N
ranks, and across a resume at another rank count.

Every sum is taken over fixed global chunks and added exactly (dhf.reduction), so nothing
an update computes may depend on the number of ranks.  The world splits in two: rank 0
runs the job alone while ranks 1 … N-1 run it together, then all N run it, each in this
pytest process (no process starts, the compiled functions reused).  Under the suite's
stages, ``mpiexec -n 2`` and ``-n 4``, that is 1, 2, 3 and 4 ranks.  Serially there is
nothing to compare and the tests skip.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from dhf import config as config_mod
from dhf.comm import MPIComm, SerialComm
from tests.conftest import TINY, metrics, same_run

pytestmark = pytest.mark.mpi


#: Four models: memorisation (tanh RNN, last-step loss), a masked problem of variable
#: lengths with trimmed padding (addition, the explicit Gv kernels, fixed data so that the
#: rows are sorted by length), Martens (2010)'s regime (gradient and backtracking on all
#: 600 rows, the curvature on a cycled sixth, his preconditioner and the training error),
#: and under JAX (the default backend, compiled per chunk shape, padding not trimmed) the
#: masked problem and an LSTM (the generic Gv graph; a minute and more to compile cold
#: under Numba, seconds under JAX).
MASKED = ["task.name='addition'", "task.T=12", "task.n_train=900", "task.n_valid=200",
          "data.fresh=false", "model.hidden=8", "optimizer.gradient_batch=400",
          "optimizer.curvature_batch=150", "optimizer.backtrack_batch=150",
          "optimizer.linesearch_batch=100", "optimizer.cg_max_iters=40",
          "run.dtype='float64'", "run.stop_valid_error=-1.0", "run.backend='numba'"]
JOBS = {
    "default": TINY,
    "masked": MASKED,
    "lstm_jax": TINY + ["model.cell='lstm'", "model.hidden=5", "run.backend='jax'"],
    "full_batch": TINY + ["optimizer.gradient_batch=0", "optimizer.curvature_batch=100",
                          "optimizer.preconditioner=true", "run.train_error=true"],
    "masked_jax": MASKED + ["run.backend='jax'"],
}

#: Martens & Sutskever's recipe (fresh data, the release's options) on a tiny addition.
FRESH = ["task.name='addition'", "task.T=8", "task.n_valid=200", "model.hidden=8",
         "optimizer.gradient_batch=300", "optimizer.curvature_batch=100",
         "optimizer.backtrack_batch=100", "optimizer.linesearch_batch=100",
         "optimizer.cg_max_iters=30", "run.dtype='float64'", "run.stop_valid_error=-1.0",
         "run.backend='numba'"]


class Ranks:
    """The world, its two groups (rank 0 alone; ranks 1 … N-1), and a directory they
    share, removed at the end."""

    def __init__(self, comm):
        from mpi4py import MPI

        self.world = MPI.COMM_WORLD
        self.comm = comm
        self.alone = comm.rank == 0
        sub = self.world.Split(0 if self.alone else 1, comm.rank)
        self.group = SerialComm() if sub.Get_size() == 1 else MPIComm(sub)
        sub.Free()
        self.base = Path(self.world.bcast(tempfile.mkdtemp(prefix="dhf-ranks-")
                                          if self.alone else None))
        self.rest = f"{comm.size - 1} ranks"

    def train(self, comm, name, settings, resume=False):
        """Train the job into ``base/name`` on ``comm``; its metrics, on every rank of
        ``comm``."""
        from dhf.run import train

        config = config_mod.load(None, settings)
        out = self.base / name
        train(config, comm, out, resume=resume)
        comm.barrier()
        return same_run(metrics(out))

    def in_groups(self, settings, names=("1 rank", None)):
        """The job at 1 rank and at N - 1 ranks at once: both metrics, on every rank."""
        name = names[0] if self.alone else (names[1] or self.rest)
        mine = self.train(self.group, name, settings)
        return self.world.bcast(mine, root=0), self.world.bcast(mine, root=1)

    def agree(self, failure):
        """Assert on every rank that no rank found ``failure`` (a message, or None)."""
        failures = [f for f in self.world.allgather(failure) if f]
        assert not failures, failures[0]

    def close(self):
        self.world.Barrier()
        if self.alone:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def ranks(comm):
    if comm.size == 1:
        pytest.skip("one rank: nothing to compare")
    ranks = Ranks(comm)
    yield ranks
    ranks.close()


@pytest.mark.parametrize("job", sorted(JOBS))
def test_the_trajectory_is_the_same_bits_at_1_and_n_minus_1_and_n_ranks(ranks, job):
    items = JOBS[job] + ["optimizer.max_updates=5"]
    one, rest = ranks.in_groups(items)
    every = ranks.train(ranks.comm, f"{ranks.comm.size} ranks", items)
    failure = None
    if len(one) != 5 or len({r["loss"] for r in one}) == 1:
        failure = f"{job}: 5 updates that train expected, got {one}"
    for name, rows in ((ranks.rest, rest), (f"{ranks.comm.size} ranks", every)):
        if rows != one and failure is None:
            failure = f"{job} at {name}: {rows}\n  differs from 1 rank: {one}"
    ranks.agree(failure)


def test_fresh_data_is_the_same_at_any_rank_count_and_across_a_resume_at_another(ranks):
    """Every update draws new sequences (data.fresh), the same ones at any rank count:
    4 updates at 1 rank and at N - 1; 2 at N ranks resumed for 2 more at N - 1."""
    one, rest = ranks.in_groups(FRESH + ["optimizer.max_updates=4"])
    ranks.train(ranks.comm, "resumed", FRESH + ["optimizer.max_updates=2"])
    resumed = None
    if not ranks.alone:
        resumed = ranks.train(ranks.group, "resumed", FRESH + ["optimizer.max_updates=4"],
                              resume=True)
    resumed = ranks.world.bcast(resumed, root=1)
    failure = None
    if len({r["loss"] for r in one}) != 4:  # a new batch, a new loss, every update
        failure = f"fresh data: 4 different losses expected, got {one}"
    for name, rows in ((ranks.rest, rest), (f"{ranks.comm.size} then {ranks.rest}",
                                            resumed)):
        if rows != one and failure is None:
            failure = f"fresh data at {name}: {rows}\n  differs from 1 rank: {one}"
    ranks.agree(failure)


def test_cg_on_the_device_keeps_the_host_paths_bits_at_any_rank_count(ranks, monkeypatch):
    """CG's vector slices kept where JAX computes, their dot products taken there (what
    ``run.device = "gpu"`` does; here on JAX's CPU device): rank 0 alone on the host
    path, then ranks 1 … N-1 and all N with CG on the device, the same metrics."""
    from dhf import optimizers
    from dhf.coordinator import HFOptimizer

    class OnDevice(HFOptimizer):
        def __init__(self, *args, cg_on_device=False, **kwargs):
            super().__init__(*args, cg_on_device=True, **kwargs)

    items = JOBS["masked_jax"] + ["optimizer.max_updates=3"]
    if not ranks.alone:
        monkeypatch.setattr(optimizers, "HFOptimizer", OnDevice)
    one, rest = ranks.in_groups(items)
    monkeypatch.setattr(optimizers, "HFOptimizer", OnDevice)
    every = ranks.train(ranks.comm, f"{ranks.comm.size} ranks", items)
    failure = None
    for name, rows in ((ranks.rest, rest), (f"{ranks.comm.size} ranks", every)):
        if rows != one and failure is None:
            failure = f"CG on the device at {name}: {rows}\n  differs from 1 rank: {one}"
    ranks.agree(failure)
