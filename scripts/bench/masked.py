"""The masked path against the unmasked one, same sizes, in one run: per call and per
HF update.

The pathological problems (addition, temporal order, ...) read a target at one step of
each row, through a loss mask over every step (``nets.recurrent(mask=True,
output_steps="all")``); the unmasked benchmark of the same size reads out at the last
step (``output_steps="last"``).  Cases, all the tanh RNN's explicit Gv under JAX with
Numba's kernels for Gv (``run.gv_backend = "numba"``), structural damping on:

- ``last``: 2-100-1, read out at the last step, no mask;
- ``masked``: the same net and rows with a mask holding one 1, at the last step, so
  that the two compute the same function of the same data;
- ``masked, lengths``: each row's target at a step drawn from [T/1.1, T), as the
  problems draw it from [T', 1.1 T') padded to 1.1 T' (``dhf.tasks.pathological``);
  nothing after a row's end.

    OMP_NUM_THREADS=1 python scripts/bench/masked.py [--T 50] [--batch 1024] \\
        [--dtype float32] [--ranks 1 2] [--updates 2] [--gv-backend numba]

Prints per-call milliseconds of the gradient, the forward pass and Gv on the batch, and
the seconds of an HF update of exactly 60 CG iterations at each rank count, with each
case's ratio to ``last``.  ``--gv-backend jax`` takes Gv under JAX as well (dhf-train's
default).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from engine import (best_of, child_seconds, hf_update,  # noqa: E402  (engine.py)
                    timed_updates)

CASES = ("last", "masked", "masked, lengths")


#: Gv's PyTensor mode (``--gv-backend``).
GV_MODE = {"numba": "NUMBA", "jax": "JAX"}


def build(case: str, T: int, batch: int, dtype: str, gv_backend: str = "numba"):
    """``(spec, worker)`` for ``case`` on ``3 * batch`` rows."""
    from dhf import nets
    from dhf.device import one_xla_thread
    from dhf.worker import Worker

    one_xla_thread()
    rng = np.random.default_rng(0)
    n = 3 * batch
    x = rng.uniform(0.0, 1.0, size=(n, T, 2))
    if case == "last":
        spec = nets.recurrent(2, 100, 1, output_steps="last", loss="squared_error",
                              seed=0, dtype=dtype)
        return spec, Worker(spec, [x, x[:, -1, :1].copy()], mode="JAX",
                            gv_mode=GV_MODE[gv_backend])
    t_end = (np.full(n, T - 1) if case == "masked"
             else rng.integers(int(T / 1.1), T, size=n))
    x[np.arange(T)[None, :] > t_end[:, None]] = 0.0  # nothing after a row's end
    y = np.zeros((n, T, 1))
    mask = np.zeros((n, T))
    y[np.arange(n), t_end, 0] = x[np.arange(n), t_end, 0]
    mask[np.arange(n), t_end] = 1.0
    spec = nets.recurrent(2, 100, 1, output_steps="all", mask=True, loss="squared_error",
                          seed=0, dtype=dtype)
    return spec, Worker(spec, [x, y, mask], mode="JAX", gv_mode=GV_MODE[gv_backend])


def per_call(case, T, batch, dtype, gv_backend) -> dict:
    spec, worker = build(case, T, batch, dtype, gv_backend)
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    v = np.random.default_rng(1).normal(size=theta.size)
    rows = np.arange(batch)
    t = {"grad": best_of(lambda: worker.grad_sum(theta, rows)),
         "forward": best_of(lambda: worker.prepare_curvature(theta, rows))}
    worker.prepare_curvature(theta, rows)
    t["Gv"] = best_of(lambda: worker.gv_sum(v, 0.03))
    return t


def child(case, T, batch, dtype, updates, gv_backend):
    """Under mpiexec: HF updates of exactly 60 CG iterations, structural damping on
    (engine.py's benchmarked update)."""
    from dhf.comm import get_comm

    comm = get_comm()
    spec, worker = build(case, T, batch, dtype, gv_backend)
    opt, state = hf_update(spec, worker, comm, batch)
    seconds, _ = timed_updates(opt, state, comm, updates)
    if comm.rank == 0:
        print(json.dumps(seconds))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--updates", type=int, default=2)
    ap.add_argument("--ranks", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--gv-backend", default="numba", choices=list(GV_MODE))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.T, args.batch, args.dtype, args.updates,
                     args.gv_backend)
    print(f"tanh RNN 2-100-1, T={args.T}, batch={args.batch}, {args.dtype}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} CPUs; "
          "per call in ms, HF update (60 CG iterations) in s; (x) = against 'last'")
    head = ["case", "grad", "forward", "Gv"] + [f"update@{n}" for n in args.ranks]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    base = {}
    for case in args.cases:
        t = per_call(case, args.T, args.batch, args.dtype, args.gv_backend)
        for n in args.ranks:
            seconds = child_seconds(args.mpiexec, n, __file__, "--child", case, "--T",
                                    str(args.T), "--batch", str(args.batch), "--dtype",
                                    args.dtype, "--updates", str(args.updates),
                                    "--gv-backend", args.gv_backend)
            t[f"update@{n}"] = float(np.median(seconds))
        base = base or t
        cells = [case]
        for key in head[1:]:
            value = f"{1e3 * t[key]:.1f}" if key in ("grad", "forward", "Gv") else (
                f"{t[key]:.2f}")
            cells.append(f"{value} ({t[key] / base[key]:.2f}×)")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
