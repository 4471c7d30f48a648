"""Benchmark: how much of N single-core speeds a machine gives to N busy cores at once.

    python scripts/bench/ceiling.py --copies 1 2 4 8 16

A control for the rank-scaling figures of ``engine.py``: it starts N independent copies
of one rank's work (no MPI, nothing shared), each pinned to its own core, all starting
together, and prints the median and the slowest copy's time for a Gv product over 256
rows (T = 50, 100 tanh units, float32) and its rate for a 3200 x 100 x 100 GEMM.

An HF update waits at every Allreduce for its slowest rank, so
``Gv(1 copy) / Gv(slowest of N)`` bounds the parallel efficiency any N-rank run can show
on that machine: on virtual machines whose cores share caches, memory bandwidth or
physical cores, it is well below 1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def copy(start: float, repeats: int = 40) -> None:
    """One copy: build, warm up, wait for ``start``, then time Gv and a GEMM."""
    sys.path.insert(0, HERE)
    from engine import build

    spec, worker = build(50, 256, dtype="float32")
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    v = np.random.default_rng(1).normal(size=theta.size)
    worker.prepare_curvature(theta, np.arange(256))
    worker.gv_sum(v, 0.1)
    a = np.random.rand(3200, 100).astype(np.float32)
    b = np.random.rand(100, 100).astype(np.float32)
    time.sleep(max(0.0, start - time.time()))
    gv, gemm = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        worker.gv_sum(v, 0.1)
        gv.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a @ b
        gemm.append(time.perf_counter() - t0)
    print(json.dumps({"gv": float(np.median(gv)),
                      "gflops": 2 * 3200 * 100 * 100 / float(np.median(gemm)) / 1e9}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--start-after", type=float, default=30.0,
                    help="seconds allowed for every copy to compile before timing starts")
    ap.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return copy(args.child)
    cores = sorted(os.sched_getaffinity(0))
    print(f"Gv over 256 rows (T=50, H=100, float32) in N pinned copies, {len(cores)} cores")
    reference = None
    for n in args.copies:
        if n > len(cores):
            raise SystemExit(f"--copies {n}: only {len(cores)} cores are available")
        start = time.time() + args.start_after
        procs = [subprocess.Popen([sys.executable, __file__, "--child", str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True,
                                  preexec_fn=lambda c=c: os.sched_setaffinity(0, {c}))
                 for c in cores[:n]]
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        gv = sorted(r["gv"] for r in results)
        rates = sorted(r["gflops"] for r in results)
        reference = reference or gv[0]
        print(f"  {n:2d} copies: Gv median {1e3 * gv[len(gv) // 2]:.1f} ms, slowest "
              f"{1e3 * gv[-1]:.1f} ms; GEMM slowest {rates[0]:.0f} GFLOP/s; "
              f"ceiling on efficiency {reference / gv[-1]:.0%}")


if __name__ == "__main__":
    main()
