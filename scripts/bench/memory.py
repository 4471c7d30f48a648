"""Benchmark: peak resident memory per rank as the data set grows (issue 4).

    python scripts/bench/memory.py [--ranks 4] [--sizes 20000 80000 320000]

For each training-set size, writes a memorisation data set (T = 50) with ``dhf-data``,
then runs 2 HF updates at ``--ranks`` ranks reading it from HDF5 (``data.path``) and,
for comparison, generating it in memory on every rank (the ``[task]`` path).  Each rank
reports its peak RSS (``getrusage``); the table shows the largest over ranks.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile

BATCH = ["optimizer.gradient_batch=2000", "optimizer.curvature_batch=500",
         "optimizer.backtrack_batch=500", "optimizer.max_updates=2",
         "optimizer.cg_max_iters=10",
         "run.stop_valid_error=-1.0", "run.checkpoint_every=0", "task.T=50",
         "task.name='memorization'"]


def child(args: list[str]) -> None:
    """Under mpiexec: train, then print this rank's peak RSS."""
    from dhf.cli import main

    code = main(args)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"PEAK_RSS_MB {peak_mb:.1f}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(ranks: int, args: list[str]) -> float:
    bin_dir = os.path.dirname(sys.executable)
    out = subprocess.run([os.path.join(bin_dir, "mpiexec"), "-n", str(ranks),
                          sys.executable, __file__, "--child", *args],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stdout + out.stderr)
    # Ranks share stderr, so their lines may interleave: match the numbers, not lines.
    peaks = [float(x) for x in re.findall(r"PEAK_RSS_MB (\d+\.\d)", out.stderr)]
    assert len(peaks) == ranks, out.stderr
    return max(peaks)


def main() -> None:
    if "--child" in sys.argv:
        return child(sys.argv[sys.argv.index("--child") + 1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000, 80000, 320000])
    a = ap.parse_args()
    sets = [x for item in BATCH for x in ("--set", item)]
    print(f"{a.ranks} ranks, T = 50, gradient batch 2000; "
          "peak RSS of the largest rank (MB)")
    print(f"{'n_train':>8} {'file MB':>8} {'HDF5 (data.path)':>17} {'in memory':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            path = os.path.join(tmp, f"mem{n}.h5")
            subprocess.run([os.path.join(os.path.dirname(sys.executable), "dhf-data"),
                            "memorization", "--out", path, "--set", f"task.n_train={n}",
                            "--set", "task.T=50", "--set", "task.n_valid=1000"], check=True,
                           capture_output=True)
            from_file = run(a.ranks, sets + ["--set", f"data.path={path!r}",
                                             "--out", os.path.join(tmp, f"f{n}")])
            in_memory = run(a.ranks, sets + ["--set", f"task.n_train={n}",
                                             "--out", os.path.join(tmp, f"m{n}")])
            size = os.path.getsize(path) / 2**20
            print(f"{n:>8} {size:>8.0f} {from_file:>17.0f} {in_memory:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
