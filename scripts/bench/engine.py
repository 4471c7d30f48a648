"""Benchmark: Gv cost / gradient cost, and the 1 -> 2 rank speed-up of an HF update.

Configuration of the `hessianfree` 0.4.0 reference (issue 2): tanh RNN with 100 hidden
units, T = 50, gradient and curvature batch 1024, exactly 60 CG iterations per update.

    python scripts/bench/engine.py [--T 50] [--batch 1024] [--updates 3] [--ranks 1 2]
    python scripts/bench/engine.py --ranks 1 2 4 8 16 --scaling-only   # a 16-core machine

Prints, from one run: per-call times of the gradient, the forward pass (once per update)
and three Gv paths (see VARIANTS), their ratios to the gradient, then the seconds per HF
update at each number of ranks (mpiexec children, one thread each, first update excluded
as warm-up) and the speed-up and parallel efficiency against one rank.
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
from dhf.heap import keep_freed_memory  # noqa: E402

keep_freed_memory()  # as dhf-train does, before anything allocates

import numpy as np  # noqa: E402


def build(T, batch, dtype="float64", **worker_options):
    from dhf import nets
    from dhf.worker import Worker

    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(3 * batch, T, 1)).astype(np.float64)
    spec = nets.rnn(1, 100, 1, seed=0, dtype=dtype)
    return spec, Worker(spec, [x, x[:, 0, :].copy()], **worker_options)


def best_of(fn, repeats=5):
    fn()  # warm-up (first calls JIT-compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


#: The Gv paths compared: dhf's default (explicit RNN recurrences on cached forward
#: states), the generic pushforward/pullback graph on cached states, and the generic graph
#: recomputing the forward pass (what a naive PyTensor HF does).
VARIANTS = {"Gv_explicit": {}, "Gv_generic_cached": dict(explicit_gv=False),
            "Gv_generic_naive": dict(explicit_gv=False, cache_forward=False)}


def per_call(T, batch, dtype):
    t = {}
    rows = np.arange(batch)
    for name, options in VARIANTS.items():
        spec, worker = build(T, batch, dtype=dtype, **options)
        theta = worker.layout.flatten([p.get_value() for p in spec.params])
        v = np.random.default_rng(1).normal(size=theta.size)
        worker.prepare_curvature(theta, rows)
        if not t:
            t["grad"] = best_of(lambda: worker.grad_sum(theta, rows))
            t["forward"] = best_of(lambda: worker.prepare_curvature(theta, rows))
        t[name] = best_of(lambda: worker.gv_sum(v, 0.1))
    return t


def hf_update(spec, worker, comm, batch):
    """The benchmarked HF update: exactly 60 CG iterations, structural damping on, ``batch``
    rows for gradient, curvature and backtracking.  Returns ``(optimizer, state)``."""
    from dhf.coordinator import HFConfig, HFOptimizer
    from dhf.data import BatchSampler

    cfg = HFConfig(cg_min_iters=60, cg_max_iters=60, init_damping=1.0,
                   structural_damping=0.03)
    opt = HFOptimizer(worker, comm, cfg, BatchSampler(3 * batch, batch, batch, batch, 0))
    return opt, opt.init(worker.layout.flatten([p.get_value() for p in spec.params]))


#: Worker options per ``--backend``: PyTensor's default mode (Numba, the tanh RNN's fused
#: Gv kernels, chunks of 64 rows), or dhf-train's default (JAX: chunks of ~16 rows,
#: calls of 256).
BACKENDS = {"numba": {}, "auto": {"mode": "JAX", "chunk_rows": 256}}


def child(T, batch, updates, dtype, backend="numba"):
    """Run under mpiexec: time HF updates with exactly 60 CG iterations."""
    from dhf.comm import get_comm

    comm = get_comm()
    if backend == "auto":
        from dhf.device import one_xla_thread

        one_xla_thread()  # as dhf-train's ranks
    spec, worker = build(T, batch, dtype=dtype, **BACKENDS[backend])
    opt, state = hf_update(spec, worker, comm, batch)
    seconds, info = timed_updates(opt, state, comm, updates)
    if comm.rank == 0:
        print(json.dumps({"update_seconds": seconds, "cg_iters": info.cg_iters}))


def child_seconds(mpiexec: str, ranks: int, script: str, *args: str) -> list[float]:
    """Run ``script`` with ``args`` under ``mpiexec -n ranks``; the JSON list of seconds
    its rank 0 printed last (a benchmark's ``--child`` mode, :func:`timed_updates`)."""
    out = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, script, *args],
                         capture_output=True, text=True, check=True)
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("[")][-1])


def timed_updates(opt, state, comm, updates):
    """Seconds of each of ``updates`` HF updates, the ranks starting each together, after
    one untimed update (the first compiles what the warm-up did not), and the last
    update's info."""
    seconds = []
    for _ in range(updates + 1):
        comm.barrier()
        t0 = time.perf_counter()
        state, info = opt.step(state)
        seconds.append(time.perf_counter() - t0)
    return seconds[1:], info


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2],
                    help="rank counts to time an HF update at (the first is the reference)")
    ap.add_argument("--scaling-only", action="store_true",
                    help="skip the per-call times, time HF updates only")
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--backend", default="numba", choices=list(BACKENDS),
                    help="the HF updates' backend (numba: PyTensor's default mode; auto: "
                    "dhf-train's default, JAX)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.T, args.batch, args.updates, args.dtype, args.backend)
    print(f"tanh RNN H=100 T={args.T} batch={args.batch} {args.dtype}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} CPUs")
    if not args.scaling_only:
        t = per_call(args.T, args.batch, args.dtype)
        for k, v in t.items():
            print(f"  {k:12s} {1e3 * v:8.1f} ms")
        for name in VARIANTS:
            print(f"  {name}/grad = {t[name] / t['grad']:.2f}")
        print(f"  Gv_generic_naive/Gv_explicit = "
              f"{t['Gv_generic_naive'] / t['Gv_explicit']:.2f}")
    per_rank = {}
    for n in args.ranks:
        out = subprocess.run([args.mpiexec, "-n", str(n), sys.executable, __file__,
                              "--child", "--T", str(args.T), "--batch", str(args.batch),
                              "--updates", str(args.updates), "--dtype", args.dtype,
                              "--backend", args.backend],
                             capture_output=True, text=True, check=True)
        result = json.loads([ln for ln in out.stdout.splitlines()
                             if ln.startswith("{")][-1])
        per_rank[n] = float(np.median(result["update_seconds"]))
        print(f"  HF update ({result['cg_iters']} CG iters) at {n} rank(s): "
              f"{per_rank[n]:.2f} s  (updates: "
              f"{', '.join(f'{s:.2f}' for s in result['update_seconds'])})")
    first = args.ranks[0]
    for n in args.ranks[1:]:
        speedup = per_rank[first] / per_rank[n]
        print(f"  speed-up {first} -> {n} ranks = {speedup:.2f}  "
              f"(efficiency {speedup * first / n:.0%})")


if __name__ == "__main__":
    main()
