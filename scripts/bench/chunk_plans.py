"""What the fine chunk plan costs: HF updates with batches cut into ~16-row chunks computed
several per call (``looped``, dhf's default under JAX on a CPU) against one chunk of up to
``chunk_rows`` rows per call (``single``, the plan that keeps ranks past rows / 64 idle),
at each rank count, in one run.

    OMP_NUM_THREADS=1 python scripts/bench/chunk_plans.py [--models tanh_rnn lstm] \\
        [--T 50] [--rows 1024] [--cg-iters 60] [--ranks 1 2] [--updates 3]

Each cell is the median of ``--updates`` HF updates of exactly ``--cg-iters`` CG
iterations (the first update, which compiles, is not counted), JAX throughout, float32,
under ``mpiexec -n N`` (:func:`models.child`); ``looped / single`` is their ratio.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from engine import child_seconds  # noqa: E402  (engine.py)

PLANS = ("single", "looped")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tanh_rnn", "lstm"])
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cg-iters", type=int, default=60)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "PLAN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, plan = args.child
        if plan == "single":
            import dhf.run
            import dhf.worker
            dhf.worker.loops_chunks = dhf.run.loops_chunks = lambda *a, **k: False
        from models import child
        return child(model, args.T, args.rows, "float32", "jax", args.updates,
                     args.cg_iters)
    print(f"T={args.T} rows={args.rows} float32 JAX, {args.cg_iters} CG iterations an "
          f"update, seconds per update (median of {args.updates})")
    head = ["model", "ranks", *PLANS, "looped / single"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for model in args.models:
        for n in args.ranks:
            t = {plan: np.median(child_seconds(
                args.mpiexec, n, __file__, "--child", model, plan, "--T", str(args.T),
                "--rows", str(args.rows), "--cg-iters", str(args.cg_iters),
                "--updates", str(args.updates))) for plan in PLANS}
            print(f"| {model} | {n} | {t['single']:.2f} | {t['looped']:.2f} | "
                  f"{t['looped'] / t['single']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
