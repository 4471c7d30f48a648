"""Benchmark: what the exact sums cost beside the work they sum.

    python scripts/bench/exact_sums.py [--T 100] [--rows 63] [--dtype float32] [--ranks 2]

One chunk's Gv of the 100-unit tanh RNN (10 401 parameters) against the exact add of its
result (``ExactSum.add``) and an exact dot product (``reduction.dot``, beside NumPy's
BLAS ``np.dot``) of that length, and the same for a 2.8 M-parameter vector (the MNIST
autoencoder's size), all in one run on one thread; then, under ``mpiexec -n RANKS``, the
float64 Allreduce of such a vector as it is (P values) and as exact-sum parts (5 P).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402


def main() -> None:
    from engine import best_of, build

    from dhf.reduction import ExactSum, dot

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--rows", type=int, default=63)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--ranks", type=int, default=2, help="ranks of the Allreduce (0: skip)")
    ap.add_argument("--child-allreduce", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_allreduce:
        return allreduce_child()
    spec, worker = build(args.T, args.rows, dtype=args.dtype)
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    rows = np.arange(args.rows)
    worker.prepare_curvature(theta, rows)
    v = np.random.default_rng(1).standard_normal(theta.size)
    gv = best_of(lambda: worker.gv_sum(v, 0.1))
    print(f"tanh RNN, {theta.size} parameters, T={args.T}, one chunk of {args.rows} rows, "
          f"{args.dtype}, one thread")
    print(f"  Gv of the chunk       {1e3 * gv:8.3f} ms")
    for size in (theta.size, 2_800_000):
        x = np.random.default_rng(2).standard_normal(size)
        total = ExactSum(size)
        add = best_of(lambda: total.add(x))
        inner = best_of(lambda: dot(x, x))
        blas = best_of(lambda: np.dot(x, x))
        ratio = f"  ({add / gv:.1%} of the chunk's Gv)" if size == theta.size else ""
        print(f"  {size:>9} values: exact add {1e3 * add:8.3f} ms{ratio}, "
              f"exact dot {1e3 * inner:8.3f} ms (np.dot {1e3 * blas:.3f} ms)")
    # the launcher beside this Python (the mpich extra's), else the one on PATH
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if args.ranks and mpiexec:
        print(f"  Allreduce at {args.ranks} ranks:")
        out = subprocess.run([mpiexec, "-n", str(args.ranks), sys.executable,
                              os.path.abspath(__file__), "--child-allreduce"],
                             capture_output=True, text=True, check=True)
        print(out.stdout, end="")


def allreduce_child(size: int = 2_800_000, repeats: int = 6) -> None:
    """Under mpiexec: the best of ``repeats`` in-place float64 Allreduces of P and of the
    exact sums' 5 P values, the ranks starting each together."""
    from mpi4py import MPI

    from dhf import comm as dhf_comm
    from dhf.allreduce import allreduce_exact
    from dhf.reduction import BINS, ExactSum

    comm = MPI.COMM_WORLD

    def best(fn) -> float:
        seconds = []
        for _ in range(repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t0)
        return min(seconds)

    ours = dhf_comm.MPIComm()
    parts = ExactSum.of([np.random.default_rng(comm.rank).standard_normal(size)])
    exact = best(lambda: allreduce_exact(ours, parts))
    times = {}
    for n in (size, BINS * size):
        buf = np.ones(n)
        times[n] = best(lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
    if comm.rank == 0:
        p, bins = times[size], times[BINS * size]
        print(f"    {size} float64 ({8 * size / 1e6:.1f} MB) {1e3 * p:8.1f} ms; as "
              f"{BINS} exact-sum bins ({8 * BINS * size / 1e6:.0f} MB) {1e3 * bins:8.1f} "
              f"ms ({bins / p:.1f} x); dhf's exact sum of them (reduce-scatter the "
              f"bins, total, allgather) {1e3 * exact:8.1f} ms ({exact / p:.1f} x)")


if __name__ == "__main__":
    main()
