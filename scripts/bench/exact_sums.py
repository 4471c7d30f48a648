"""Benchmark: what the exact sums cost beside the work they sum.

    python scripts/bench/exact_sums.py [--T 100] [--rows 63] [--dtype float32]

One chunk's Gv of the 100-unit tanh RNN (10 401 parameters) against the exact add of its
result (``ExactSum.add``) and an exact dot product (``reduction.dot``) of that length,
and the same two for a 2.8 M-parameter vector (the MNIST autoencoder's size), all in
one run on one thread.
"""
from __future__ import annotations

import argparse
import os
import sys

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
    args = ap.parse_args()
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
        ratio = f"  ({add / gv:.1%} of the chunk's Gv)" if size == theta.size else ""
        print(f"  {size:>9} values: exact add {1e3 * add:8.3f} ms{ratio}, "
              f"exact dot {1e3 * inner:8.3f} ms")


if __name__ == "__main__":
    main()
