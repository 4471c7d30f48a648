"""Train built-in problems with HF and with the SGD baseline; print a results table.

Each (task, optimiser, seed) is one ``mpiexec -n RANKS dhf-train`` run, stopped by its
own success criterion (``run.stop_valid_error``) or after ``--minutes`` of wall time
(``run.max_minutes``: dhf-train checkpoints and exits cleanly).  The table gives, per task and optimiser, the
seeds solved, and for the solved ones the median updates and wall time::

    python scripts/bench/problems.py --tasks addition,xor --T 30 --seeds 0,1 \\
        --ranks 2 --minutes 10 --set optimizer.gradient_batch=2000

Extra ``--set`` apply to every run (both optimisers); ``--hf-set`` / ``--sgd-set`` to one.
Runs go to ``runs/problems/<task>-T<T>-<opt>-s<seed>`` and are reused (not rerun) when
their ``metrics.jsonl`` exists, so an interrupted sweep can be continued.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_one(task, T, opt, seed, args, extra) -> dict:
    out = ROOT / "runs" / "problems" / f"{task}-T{T}-{opt}-s{seed}"
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        bin_dir = Path(sys.executable).parent
        cmd = [str(bin_dir / "mpiexec"), "-n", str(args.ranks), str(bin_dir / "dhf-train"),
               "--out", str(out), "-q", "--set", f"task.name={task!r}",
               "--set", f"task.T={T}", "--set", f"run.seed={seed}",
               "--set", f"optimizer.name={opt!r}",
               "--set", f"run.max_minutes={args.minutes}"]
        for item in args.set + extra:
            cmd += ["--set", item]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{out.name}: exit {done.returncode}: {done.stdout[-500:]}",
                  file=sys.stderr)
        wall = time.perf_counter() - t0
    else:
        wall = None
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] \
        if metrics.exists() else []
    config = (out / "config.toml").read_text() if (out / "config.toml").exists() else ""
    stop = next((float(line.split("=")[1]) for line in config.splitlines()
                 if line.startswith("stop_valid_error")), 0.0)
    errors = [r["valid_error"] for r in rows if r.get("valid_error") is not None]
    seconds = sum(r.get("seconds") or 0 for r in rows)
    return {"task": task, "opt": opt, "seed": seed, "updates": len(rows),
            "best_error": min(errors) if errors else None,
            "solved": bool(errors) and min(errors) <= stop,
            "seconds": seconds, "wall": wall}


def table(results, T, ranks) -> str:
    lines = [f"| task | T | optimiser | seeds solved | best valid error | updates "
             f"(median, solved) | train time (median, solved) |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["task"], r["opt"]) for r in results})
    for task, opt in keys:
        rs = [r for r in results if (r["task"], r["opt"]) == (task, opt)]
        solved = [r for r in rs if r["solved"]]
        best = min((r["best_error"] for r in rs if r["best_error"] is not None),
                   default=None)
        upd = statistics.median(r["updates"] for r in solved) if solved else "—"
        sec = (f"{statistics.median(r['seconds'] for r in solved) / 60:.1f} min"
               if solved else "—")
        lines.append(f"| {task} | {T} | {opt} | {len(solved)}/{len(rs)} | "
                     f"{'—' if best is None else f'{best:.3f}'} | {upd} | {sec} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", required=True, help="comma-separated task names")
    parser.add_argument("--T", type=int, required=True)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--optimizers", default="hf,sgd")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0, help="per run")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--hf-set", action="append", default=[])
    parser.add_argument("--sgd-set", action="append", default=[])
    args = parser.parse_args()
    results = []
    for task in args.tasks.split(","):
        for opt in args.optimizers.split(","):
            for seed in map(int, args.seeds.split(",")):
                r = run_one(task, args.T, opt, seed, args,
                            args.hf_set if opt == "hf" else args.sgd_set)
                print(json.dumps(r), flush=True)
                results.append(r)
    print()
    print(table(results, args.T, args.ranks))


if __name__ == "__main__":
    main()
