"""Shared fixtures and the ``mpi`` marker.

The whole suite runs serially (``pytest``).  Under ``mpiexec -n N python -m pytest -m mpi``
only tests marked ``mpi`` run; they must issue the same collectives on every rank and
assert collectively, so that a failure on one rank fails all of them instead of hanging.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dhf.launcher import one_thread_per_rank

# The thread variables dhf-train sets, set here before numpy and Numba load: one thread
# per process (the pytest workers and MPI ranks are the parallelism), and Numba's cache
# keys, which change with NUMBA_NUM_THREADS, the same in a test process as in the
# dhf-train processes it starts, so that each compiles a graph once for both.
one_thread_per_rank()

import numpy as np  # noqa: E402
import pytensor  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Unit tests compile with FAST_COMPILE: a cold Numba compile of a scan graph costs about a
# minute and CI starts with an empty cache.  The Numba backend (dhf-train's default) is
# exercised by the CLI and MPI tests and by a dense-reference case that names it.
pytensor.config.mode = os.environ.get("DHF_TEST_MODE", "FAST_COMPILE")


def world_size() -> int:
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if key in os.environ:
            return int(os.environ[key])
    return 1


def pytest_report_header(config):
    return f"MPI world size: {world_size()}"


def pytest_collection_modifyitems(config, items):
    if world_size() > 1:
        skip = pytest.mark.skip(reason="serial test; this pytest runs under mpiexec")
        for item in items:
            if "mpi" not in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(666)


@pytest.fixture(scope="session")
def comm():
    from dhf.comm import MPIComm, SerialComm

    return MPIComm() if world_size() > 1 else SerialComm()


def venv_bin(name: str) -> str:
    """An executable next to the running Python (the venv's mpiexec, dhf-train)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not found next to {sys.executable} or on PATH")
    return found


#: A job small enough to compile and run in seconds: memorisation over 6 steps, under
#: Numba, whose compiled functions every later test process loads from its cache (under
#: JAX each process compiles each chunk shape again); JAX and run.backend = 'auto', the
#: default, are tested where they are named.
TINY = ["task.name='memorization'", "task.T=6", "task.n_train=600", "task.n_valid=200",
        "model.hidden=8", "optimizer.gradient_batch=300", "optimizer.curvature_batch=100",
        "optimizer.backtrack_batch=100", "optimizer.cg_max_iters=30",
        "optimizer.max_updates=3", "run.stop_valid_error=-1.0", "run.backend='numba'"]


def tiny_args(*extra: str) -> list[str]:
    args = []
    for item in TINY + list(extra):
        args += ["--set", item]
    return args


def file_args(path, *extra: str) -> list[str]:
    """:data:`TINY` on the data file ``path``, whose own task sets [task]."""
    args = []
    for item in [i for i in TINY if not i.startswith("task.")] + list(extra):
        args += ["--set", item]
    return args + ["--set", f"data.path={str(path)!r}"]


#: The shortest T each problem's layout fits, written out from its definition: two
#: marker windows and the end cue (6), the temporal orders' windows (4), a symbol and
#: the one it returns to (2), K symbols, a cue and K recall steps (2K + 1).
SHORTEST_T = {"addition": 6, "multiplication": 6, "xor": 6, "temporal_order_2bit": 4,
              "temporal_order_3bit": 4, "random_permutation": 2,
              "noiseless_memorization_5bit": 11, "noiseless_memorization_20bit": 21,
              "adding": 2}


def metrics(out: Path) -> list[dict]:
    """A run directory's metrics.jsonl, one dict per update."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def same_run(rows: list[dict]) -> list[dict]:
    """A run's metrics without its wall times: what must not depend on the rank count."""
    return [{k: v for k, v in r.items()
             if k not in ("seconds", "wall") and not k.startswith("t_")} for r in rows]


def run_mpi(n, args, timeout=300):
    """``mpiexec -n N dhf-train ARGS`` from the repository root, output captured."""
    cmd = [venv_bin("mpiexec"), "-n", str(n), venv_bin("dhf-train")] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
