"""Train built-in problems with HF and the first-order baselines; print a results table.

Each (task, optimiser, seed) is one ``mpiexec -n RANKS dhf-train`` run, stopped by its
own success criterion (``run.stop_valid_error``) or after ``--minutes`` of wall time
(``run.max_minutes``: dhf-train checkpoints and exits cleanly)::

    python scripts/bench/problems.py --tasks addition,xor --T 50 --seeds 0,1,2 \\
        --config 'configs/ms2011/{task}.toml' --minutes 20

``--config`` is a path pattern (``{task}`` is replaced) for each run's config file.  Extra
``--set`` apply to every run; ``--hf-set`` / ``--sgd-set`` / ``--adam-set`` to one
optimiser.  Runs go to ``runs/problems/<task>-T<T>-<opt>-s<seed>`` (``--tag`` adds a
folder level) and are not rerun when their ``metrics.jsonl`` exists, so an interrupted
sweep can be continued.

``--report RUN_DIR ...`` prints the table of existing run directories instead (any runs
of ``dhf-train``): for each, the updates and wall time until the validation error first
fell below 1 % and to 0.1 % or less (Martens & Sutskever's problems: under 1 % of 10,000
test sequences wrong is success, the release stops at 0.1 %), the CG iterations spent until
then, and the best error seen.  Wall time is the sum of the updates' ``seconds``
(compilation before the first update is not in it).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THRESHOLDS = (0.01, 0.001)


def run_one(task, T, opt, seed, args, extra) -> Path:
    out = ROOT / "runs" / "problems" / args.tag / f"{task}-T{T}-{opt}-s{seed}"
    if (out / "metrics.jsonl").exists():
        return out
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "mpiexec"), "-n", str(args.ranks), str(bin_dir / "dhf-train")]
    if args.config:
        cmd.append(args.config.format(task=task))
    cmd += ["--out", str(out), "-q", "--set", f"task.name={task!r}", "--set", f"task.T={T}",
            "--set", f"run.seed={seed}", "--set", f"optimizer.name={opt!r}",
            "--set", f"run.max_minutes={args.minutes}"]
    for item in args.set + extra:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{out.name}: exit {done.returncode}: {done.stdout[-500:]}", file=sys.stderr)
    print(f"{out.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def summarise(out: Path) -> dict:
    """What a run directory says: its task, optimiser, seed and how far it got."""
    config = tomllib.loads((out / "config.toml").read_text())
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] \
        if path.exists() else []
    result = {"run": out.name, "task": config["task"]["name"], "T": config["task"]["T"],
              "release_T": config["task"]["T"] * _release_T_factor(config["task"]["name"]),
              "opt": config["optimizer"]["name"], "seed": config["run"]["seed"],
              "updates": len(rows), "seconds": sum(r.get("seconds") or 0 for r in rows),
              "cg_iters": sum(r.get("cg_iters") or 0 for r in rows),
              "best_error": min((r["valid_error"] for r in rows
                                 if r.get("valid_error") is not None), default=None)}
    for threshold in THRESHOLDS:
        seconds = cg = 0.0
        result[threshold] = None
        for r in rows:
            seconds += r.get("seconds") or 0
            cg += r.get("cg_iters") or 0
            error = r.get("valid_error")
            # Under 1 % is success; the runs stop at ≤ 0.1 % (run.stop_valid_error).
            if error is not None and (error < threshold if threshold == THRESHOLDS[0]
                                      else error <= threshold):
                result[threshold] = {"update": r["update"], "seconds": seconds, "cg": cg}
                break
    return result


def _release_T_factor(task: str) -> int:
    """The release's global T over dhf's ``task.T`` (2 for xor, 1 otherwise)."""
    from dhf.tasks.pathological import PROBLEMS
    problem = PROBLEMS.get(task)
    return 1 if problem is None else problem.release_T_factor


def _reached(r: dict, threshold: float) -> str:
    hit = r[threshold]
    if hit is None:
        return "—"
    return f"{hit['update']} ({hit['seconds'] / 60:.1f} min, {hit['cg']:.0f} CG)"


def table(results: list[dict]) -> str:
    lines = ["| run | task | T | release T | optimiser | seed | "
             "< 1 % wrong: update (time, CG iters) | "
             "≤ 0.1 %: update (time, CG iters) | best error | updates run (time) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["task"], r["T"], r["opt"], r["run"])):
        best = "—" if r["best_error"] is None else f"{r['best_error']:.4f}"
        lines.append(f"| {r['run']} | {r['task']} | {r['T']} | {r['release_T']} | "
                     f"{r['opt']} | {r['seed']} | "
                     f"{_reached(r, THRESHOLDS[0])} | {_reached(r, THRESHOLDS[1])} | "
                     f"{best} | "
                     f"{r['updates']} ({r['seconds'] / 60:.1f} min) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", nargs="+", type=Path, metavar="RUN_DIR",
                        help="print the table of these run directories and exit")
    parser.add_argument("--tasks", help="comma-separated task names")
    parser.add_argument("--T", type=int)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--optimizers", default="hf,sgd")
    parser.add_argument("--config", default="", help="config path pattern, e.g. "
                        "'configs/ms2011/{task}.toml'")
    parser.add_argument("--tag", default="", help="a folder under runs/problems/")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0, help="per run")
    parser.add_argument("--set", action="append", default=[])
    for opt in ("hf", "sgd", "adam"):
        parser.add_argument(f"--{opt}-set", action="append", default=[])
    args = parser.parse_args()
    if args.report:
        dirs = [d for d in args.report if (d / "config.toml").exists()]
        print(table([summarise(d) for d in dirs]))
        return
    if not (args.tasks and args.T):
        parser.error("--tasks and --T are needed to run a sweep (or give --report)")
    outs = []
    for task in args.tasks.split(","):
        for opt in args.optimizers.split(","):
            for seed in map(int, args.seeds.split(",")):
                outs.append(run_one(task, args.T, opt, seed, args,
                                    getattr(args, f"{opt}_set")))
    print(table([summarise(d) for d in outs if (d / "config.toml").exists()]))


if __name__ == "__main__":
    main()
