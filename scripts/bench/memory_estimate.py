"""dhf's memory estimate per rank (``dhf-train --dry-run``) against the peak RSS a run
measures, for jobs of different sizes, in one run.

    python scripts/bench/memory_estimate.py [--jobs small default long]

Each job runs serially for one or two updates; its peak RSS is the child's
``ru_maxrss`` (what ``/usr/bin/time -v`` reports); the table gives the estimate's parts, the
measured peak and their ratio.  The estimate is meant to be within 25 % (dhf.memory).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

JOBS = {
    "small": ["--set", "task.name='memorization'", "--set", "optimizer.max_updates=2"],
    "default": ["--set", "optimizer.max_updates=1", "--set", "optimizer.cg_max_iters=30"],
    "long": ["--set", "task.T=1000", "--set", "optimizer.max_updates=1",
             "--set", "optimizer.cg_max_iters=10"],
}


def dhf_train() -> str:
    return os.path.join(os.path.dirname(sys.executable), "dhf-train")


def estimate(args: list[str]) -> tuple[float, str]:
    out = subprocess.run([dhf_train(), *args, "--dry-run"], capture_output=True,
                         text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if "estimated:" in ln)
    total = line.split("estimated: ")[1]
    value, unit = re.match(r"([\d.]+) (\w+)", total).groups()
    return float(value) * {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}[unit], total


def measured(args: list[str]) -> float:
    """Peak RSS of one run (bytes): the largest child's ru_maxrss, from a fresh process."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss)")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", code, dhf_train(), *args, "--out",
                              os.path.join(tmp, "run"), "-q"], capture_output=True,
                             text=True, check=True).stdout
    return float(out.split()[-1]) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print("| job | estimate (data, states, work, cg, base) | measured peak | estimate / "
          "measured |")
    print("|---|---|---|---|")
    for name in args.jobs:
        want, text = estimate(JOBS[name])
        peak = measured(JOBS[name])
        print(f"| {name} | {text} | {peak / 2**20:.1f} MB | {want / peak:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
