"""Start-up cost at 1 and N ranks from empty compile caches, in one run.

Each case runs ``mpiexec -n RANKS dhf-train`` for one small update with PyTensor's
compile directory and Numba's cache in a fresh temporary directory, and reports the wall
time of the whole command (start-up dominates: the update itself takes well under a
second).  Issue 6's target: N ranks no slower than 1.

    python scripts/bench/startup.py --ranks 4 --task addition
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["task.T=12", "task.n_train=400", "task.n_valid=100",
         "optimizer.gradient_batch=100", "optimizer.curvature_batch=50",
         "optimizer.backtrack_batch=50",
         "optimizer.cg_max_iters=5", "optimizer.max_updates=1", "run.stop_valid_error=-1.0"]


def cold_run(ranks: int, task: str, mpiexec: str) -> float:
    bin_dir = Path(sys.executable).parent
    train = ([str(bin_dir / "dhf-train")] if (bin_dir / "dhf-train").exists()
             else [sys.executable, "-m", "dhf.cli"])  # dhf not installed, on PYTHONPATH
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTENSOR_FLAGS=f"compiledir={cache}/pytensor",
                   NUMBA_CACHE_DIR=f"{cache}/numba")
        cmd = [mpiexec, "-n", str(ranks), *train, "-q", "--out", f"{cache}/run",
               "--set", f"task.name={task!r}"]
        for item in SMALL:
            cmd += ["--set", item]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{ranks} ranks failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--task", default="addition")
    parser.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    args = parser.parse_args()
    one = cold_run(1, args.task, args.mpiexec)
    many = cold_run(args.ranks, args.task, args.mpiexec)
    print(f"task {args.task}, empty caches: 1 rank {one:.1f} s, {args.ranks} ranks "
          f"{many:.1f} s, ratio {many / one:.2f}")


if __name__ == "__main__":
    main()
