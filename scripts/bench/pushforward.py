"""J v built two ways: each Op's own pushforward against the pullback of a pullback
(``dhf.curvature.gauss_newton.jacobian_vector``), in the generic Gv of each model, in one
run.

    OMP_NUM_THREADS=1 python scripts/bench/pushforward.py [--models lstm rnn_2layer ...]
        [--backends jax numba] [--T 50] [--rows 256]

For each model and backend: the gradient and the Gv product per call on ``rows`` rows
(median of interleaved calls, the Gv's forward states cached as in an HF update), Gv /
gradient for both forms, and the two Gv products' largest difference relative to their
largest entry (they must agree to rounding).  What ``through = "auto"`` chooses comes from
these figures.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from unittest import mock

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

FORMS = ("ops", "pullbacks")


def measure(model: str, backend: str, T: int, rows: int, repeats: int) -> dict:
    from dhf.curvature import gauss_newton
    from models import build

    workers = {}
    for form in FORMS:
        form_jv = functools.partial(gauss_newton.jacobian_vector, through=form)
        with mock.patch.object(gauss_newton, "jacobian_vector", form_jv):
            spec, worker, *_ = build(model, T, rows, "float32", backend)
        workers[form] = worker
    theta = workers["ops"].layout.flatten([p.get_value() for p in spec.params])
    v = np.random.default_rng(0).standard_normal(theta.size)
    batch = np.arange(rows)
    Gv = {}
    for form, worker in workers.items():
        list(worker.curvature_chunks(theta, batch))
        Gv[form] = worker.gv_sum(v)  # compiles
    list(workers["ops"].grad_chunks(theta, batch))
    seconds = {"grad": [], **{form: [] for form in FORMS}}
    for _ in range(repeats):
        for form, worker in workers.items():
            t0 = time.perf_counter()
            list(worker.gv_chunks(v))
            seconds[form].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        list(workers["ops"].grad_chunks(theta, batch))
        seconds["grad"].append(time.perf_counter() - t0)
    ms = {key: 1e3 * float(np.median(s)) for key, s in seconds.items()}
    ms["difference"] = (np.max(np.abs(Gv["ops"] - Gv["pullbacks"]))
                        / np.max(np.abs(Gv["pullbacks"])))
    return ms


def main() -> None:
    from models import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tanh_rnn_generic", "lstm",
                                                    "rnn_2layer", "autoencoder"],
                    choices=[m for m in MODELS if m != "tanh_rnn"])
    ap.add_argument("--backends", nargs="+", default=["jax", "numba"],
                    choices=["jax", "numba"])
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"T={args.T} rows={args.rows} float32, OMP_NUM_THREADS="
          f"{os.environ['OMP_NUM_THREADS']}; per call in ms, median of {args.repeats}")
    print("| model | backend | grad | Gv, Ops' pushforward | Gv / grad | Gv, pullback of "
          "pullback | Gv / grad | difference |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        for backend in args.backends:
            ms = measure(model, backend, args.T, args.rows, args.repeats)
            print(f"| {model} | {backend} | {ms['grad']:.1f} | {ms['ops']:.1f} | "
                  f"{ms['ops'] / ms['grad']:.2f} | {ms['pullbacks']:.1f} | "
                  f"{ms['pullbacks'] / ms['grad']:.2f} | {ms['difference']:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
