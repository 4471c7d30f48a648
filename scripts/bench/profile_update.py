"""Benchmark: where one HF update's time goes, by worker call.

    python scripts/bench/profile_update.py [--rows 512] [--dtype float32] [--updates 3] \\
        [--backend numba]

One rank's share of ``engine.py``'s configuration (tanh RNN, 100 units, T = 50, 512 rows
for gradient and curvature, exactly 60 CG iterations).  Every :class:`dhf.worker.Worker`
method is wrapped in a timer; what is left of the update is the coordinator's own work
(CG vector arithmetic, damping, line search bookkeeping, the exact sums of the chunks'
results and the serial "Allreduce").  ``--backend numba`` (PyTensor's default mode, the
tanh RNN's fused Numba Gv kernels) or ``jax`` (dhf-train's default: chunks of ~16 rows,
several a call, their sums added on the device).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: Worker methods timed, and what they are in an update.
CALLS = {"gv_chunks": "Gv (one per CG iteration)", "grad_chunks": "gradient",
         "curvature_chunks": "forward pass, states cached for Gv",
         "loss_chunks": "loss (CG backtracking, line search, damping's rho)"}


def main() -> None:
    from dhf.comm import get_comm
    from engine import build, hf_update

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--backend", default="numba", choices=("numba", "jax"))
    args = ap.parse_args()
    options = {"mode": "JAX", "chunk_rows": 256} if args.backend == "jax" else {}
    spec, worker = build(50, args.rows, dtype=args.dtype, **options)
    seconds, calls = defaultdict(float), defaultdict(int)
    for name in CALLS:
        def timed(*a, _f=getattr(worker, name), _name=name, **k):
            t0 = time.perf_counter()
            try:
                return list(_f(*a, **k))  # the chunks' sums, all computed here
            finally:
                seconds[_name] += time.perf_counter() - t0
                calls[_name] += 1
        setattr(worker, name, timed)
    rows = args.rows
    opt, state = hf_update(spec, worker, get_comm(), rows)
    state, _ = opt.step(state)  # warm-up
    seconds.clear()
    calls.clear()
    t0 = time.perf_counter()
    for _ in range(args.updates):
        state, _ = opt.step(state)
    total = (time.perf_counter() - t0) / args.updates
    print(f"HF update, {rows} rows, T=50, H=100, {args.dtype}, 60 CG iterations, "
          f"one thread: {total:.2f} s")
    print(f"  {'call':18s} {'per update':>10s} {'calls':>6s} "
          f"{'per call':>9s} {'share':>6s}")
    for name, what in CALLS.items():
        s, n = seconds[name] / args.updates, calls[name] / args.updates
        print(f"  {name:18s} {s:9.3f}s {n:6.0f} {1e3 * s / max(n, 1):7.1f}ms "
              f"{s / total:6.1%}  {what}")
    rest = total - sum(seconds.values()) / args.updates
    print(f"  {'coordinator':18s} {rest:9.3f}s {'':6s} {'':9s} {rest / total:6.1%}  "
          "CG arithmetic, damping, bookkeeping")
    gv_rate, gemm_rate = flop_rates(worker, seconds["gv_chunks"] / calls["gv_chunks"], rows,
                                    args.dtype)
    print(f"  Gv: {gv_rate:.0f} GFLOP/s; a GEMM of the same shapes, alone: {gemm_rate:.0f} "
          f"GFLOP/s; Gv at {gv_rate / gemm_rate:.0%} of it")


def flop_rates(worker, gv_seconds: float, rows: int, dtype: str, T: int = 50, H: int = 100):
    """Gv's achieved GFLOP/s and one core's GEMM rate on a chunk's shapes.

    The explicit Gv's work is four GEMM-sized products per row and step, each 2·H²
    flops: R h_{t-1} W_rec and h_{t-1} V_rec in the R-forward kernel, δa_t W_recᵀ in the
    backward one, and the batched W_rec gradient (the input, output and bias terms are
    O(H), ignored).
    """
    import numpy as np

    gv_flops = 4 * 2 * H * H * T * rows
    a = np.random.rand(T * worker.chunk_rows, H).astype(dtype)
    b = np.random.rand(H, H).astype(dtype)
    out = np.empty((a.shape[0], H), dtype=dtype)
    best = float("inf")
    for _ in range(50):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return gv_flops / gv_seconds / 1e9, 2 * a.shape[0] * H * H / best / 1e9


if __name__ == "__main__":
    main()
