"""What Martens' diagonal preconditioner costs against a gradient, in one run: the
per-example squared gradients Σ_i (∂f_i/∂θ)² summed from one backward pass ((h²)ᵀ(δ²),
the built-in feed-forward nets) and one gradient call per row (any other graph), on the
MNIST-shaped autoencoder of Martens (2010), 784-1000-500-250-30 mirrored, logistic units.

    OMP_NUM_THREADS=1 python scripts/bench/preconditioner.py --rows 256
"""
import argparse
import dataclasses
import time

import numpy as np

from dhf.nets import feedforward
from dhf.worker import Worker


def best_of(fn, repeats: int = 3) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    sizes = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
    nl = ["logistic"] * 3 + ["linear"] + ["logistic"] * 3 + ["logistic"]
    spec = feedforward(sizes, nonlinearities=nl, loss="sigmoid_xent", dtype=args.dtype)
    rng = np.random.default_rng(0)
    X = (rng.random((args.rows, 784)) < 0.2).astype(float)
    fast = Worker(spec, [X, X], mode="NUMBA")
    slow = Worker(dataclasses.replace(spec, dense=()), [X, X], mode="NUMBA")
    theta = fast.layout.flatten([p.get_value() for p in spec.params])
    rows = np.arange(args.rows)
    for w in (fast, slow):  # compile
        w.grad_sum(theta, rows[:16])
        w.squared_grad_sum(theta, rows[:16])
    grad = best_of(lambda: fast.grad_sum(theta, rows))
    batched = best_of(lambda: fast.squared_grad_sum(theta, rows))
    per_row = best_of(lambda: slow.squared_grad_sum(theta, rows), repeats=1)
    print(f"autoencoder {fast.layout.size} parameters, {args.rows} rows, {args.dtype}")
    print(f"  gradient                      {grad * 1e3:8.1f} ms")
    print(f"  squared gradients, batched    {batched * 1e3:8.1f} ms  "
          f"({batched / grad:.2f} x the gradient)")
    print(f"  squared gradients, per row    {per_row * 1e3:8.1f} ms  "
          f"({per_row / grad:.1f} x the gradient)")


if __name__ == "__main__":
    main()
