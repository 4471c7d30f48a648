"""The scaling issue's case through ``dhf-train``, per backend and rank count, in one run:
seconds per HF update, each backend against the fastest, and 2-rank efficiency.

    OMP_NUM_THREADS=1 python scripts/bench/backends.py [--backends auto numba numba_gv] \\
        [--ranks 1 2] [--updates 4]

The case: ``task.name = addition``, ``task.T = 50``, 100 tanh units, gradient and
curvature batch 1 024, held-out backtracking batch 1 024, no line-search batch, exactly
60 CG iterations, float32.  An update's seconds are its phases' (gradient with the
curvature batch's forward pass, CG with its Gv products, backtracking and the line
search; the validation pass is left out), the median over updates 2 to ``--updates``
(the first one is warm-up).  ``auto`` is dhf-train's default (JAX throughout),
``numba`` ``run.backend = "numba"``, ``numba_gv`` ``run.gv_backend = "numba"`` (the
tanh RNN's fused Numba Gv kernels).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASE = ["task.name=addition", "task.T=50", "model.hidden=100",
        "optimizer.gradient_batch=1024", "optimizer.curvature_batch=1024",
        "optimizer.held_out=true", "optimizer.backtrack_batch=1024",
        "optimizer.linesearch_batch=0", "optimizer.cg_min_iters=60",
        "optimizer.cg_max_iters=60", "run.dtype=float32", "run.stop_valid_error=-1",
        "task.n_valid=100"]
BACKENDS = {"auto": [], "numba": ["run.backend=numba"],
            "numba_gv": ["run.gv_backend=numba"]}
PHASES = ("t_gradient", "t_preconditioner", "t_cg", "t_search")


def update_seconds(metrics: Path) -> list[float]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [sum(r[p] or 0.0 for p in PHASES) for r in rows if r.get("t_cg") is not None]


def run(backend: str, ranks: int, updates: int, mpiexec: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        sets = CASE + BACKENDS[backend] + [f"optimizer.max_updates={updates}"]
        cmd = [mpiexec, "-n", str(ranks), str(Path(sys.executable).parent / "dhf-train"),
               "--out", out, "--quiet"]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return statistics.median(update_seconds(Path(out) / "metrics.jsonl")[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--updates", type=int, default=4)
    ap.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seconds = {(b, n): run(b, n, args.updates, args.mpiexec)
               for b in args.backends for n in args.ranks}
    print(f"addition T=50, 100 tanh units, 1 024 rows, 60 CG, float32; seconds per update "
          f"(median of updates 2-{args.updates}), {os.cpu_count()} CPUs")
    print("| backend | " + " | ".join(f"{n} rank{'s' * (n > 1)}" for n in args.ranks)
          + " | " + " | ".join(f"/ fastest at {n}" for n in args.ranks)
          + (f" | efficiency at {args.ranks[-1]} |" if len(args.ranks) > 1 else " |"))
    print("|---" * (1 + 2 * len(args.ranks) + (len(args.ranks) > 1)) + "|")
    fastest = {n: min(seconds[b, n] for b in args.backends) for n in args.ranks}
    for b in args.backends:
        cells = [f"{seconds[b, n]:.2f}" for n in args.ranks]
        cells += [f"{seconds[b, n] / fastest[n]:.2f}" for n in args.ranks]
        if len(args.ranks) > 1:
            lo, hi = args.ranks[0], args.ranks[-1]
            cells.append(f"{seconds[b, lo] * lo / (seconds[b, hi] * hi):.0%}")
        print(f"| {b} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
