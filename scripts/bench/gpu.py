"""The device benchmark: one GPU (JAX) against the same machine's CPU cores, in one run.

    python scripts/bench/gpu.py                  # on a machine with a GPU and jax[cuda12]
    python scripts/bench/gpu.py --device cpu --quick     # a dry run of the script on a CPU

Nothing is downloaded.  On an H200 with 16 cores the device's part takes a few minutes
and the CPU comparison several more (16 ranks compiling each model): ``--cpu-ranks 0``
leaves it out.  Printed, as Markdown tables for ``docs/benchmarks.md``:

1. Per model, on the device (``run.backend = "jax"``, float32, one rank, chunks as
   ``dhf-train`` cuts them there, or of ``--chunk-rows``): forward, gradient and Gv per
   call over the batch, and one HF update of a fixed number of CG iterations.  Models:
   the tanh RNN (1-100-1) at T = 100 on 1 000 and 10 000 sequences, the LSTM (1-100-1)
   at T = 100 on 1 000, and Martens (2010)'s autoencoder on 7 500 cases with 250 CG
   iterations (the goal: ≤ 5 s on one H200).
2. theano-hf's memorisation problem at T = 100 trained to 0 validation errors on the
   device (``dhf-train``, at most ``--minutes``; the goal: ≤ 60 s).
3. The same HF updates and memorisation run on every CPU core of the machine (one rank
   per core under ``mpiexec``, ``run.backend = "auto"``), and the ratio; ``--cpu-ranks
   0`` leaves this part out.  The device's figures come first, each line printed as it
   is measured, so that a run cut short keeps them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import models  # noqa: E402  (scripts/bench/models.py)

HERE = Path(__file__).resolve().parent
#: (label, model, T, rows, CG iterations per update)
CASES = [("tanh RNN, 1 000 seq.", "tanh_rnn", 100, 1000, 60),
         ("tanh RNN, 10 000 seq.", "tanh_rnn", 100, 10_000, 60),
         ("LSTM, 1 000 seq.", "lstm", 100, 1000, 60),
         ("autoencoder, 7 500 cases", "autoencoder", 0, 7500, 250)]
QUICK = [("tanh RNN, 200 seq.", "tanh_rnn", 20, 200, 10),
         ("autoencoder, 200 cases", "autoencoder", 0, 200, 10)]


def device_row(model, T, rows, cg_iters, device, chunk_rows) -> dict:
    """Per-call milliseconds and one HF update's seconds on ``device``, one process, in
    chunks of at most ``chunk_rows`` (0: dhf-train's default there)."""
    from dhf.comm import SerialComm
    from dhf.coordinator import HFConfig, HFOptimizer
    from dhf.data import BatchSampler
    from dhf.device import use_device
    from engine import timed_updates

    where = use_device(device, "jax")
    built = models.build(model, T, rows, "float32", "jax", chunk_rows, device)
    t = models.per_call(model, T, rows, "float32", "jax", built=built)
    spec, worker, _, _ = built
    cfg = HFConfig(cg_min_iters=cg_iters, cg_max_iters=cg_iters, init_damping=1.0)
    opt = HFOptimizer(worker, SerialComm(), cfg,
                      BatchSampler(3 * rows, rows, rows, rows, 0))
    state = opt.init(worker.layout.flatten([p.get_value() for p in spec.params]))
    seconds, _ = timed_updates(opt, state, SerialComm(), 1)
    return {"where": where, "forward": t["forward"], "grad": t["grad"], "Gv": t["Gv"],
            "update": float(np.median(seconds)), "chunk_rows": worker.chunk_rows,
            "chunks": len(worker.plan(np.arange(rows)))}


def cpu_update(model, T, rows, cg_iters, ranks, mpiexec) -> float:
    """One HF update's seconds on ``ranks`` CPU ranks (scripts/bench/models.py's child);
    NaN, with the error's end printed, if the run failed."""
    out = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, str(HERE / "models.py"), "--child",
         model, "auto", "--T", str(T), "--rows", str(rows), "--dtype", "float32",
         "--updates", "1", "--cg-iters", str(cg_iters)],
        capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    if out.returncode != 0 or not lines:
        print(f"{model} on {ranks} CPU ranks failed (exit {out.returncode}): "
              f"{out.stderr.strip()[-300:]}", flush=True)
        return float("nan")
    return float(np.median(json.loads(lines[-1])))


def memorisation(command: list[str], settings: list[str], minutes: float) -> str:
    """Train memorisation at T = 100 to 0 validation errors: "N s (U updates)" to the first
    update with none wrong, or where it stood after ``minutes``."""
    with tempfile.TemporaryDirectory() as tmp:
        args = list(command) + ["--progress", "off", "--out", f"{tmp}/run"]
        for item in ["task.name='memorization'", "task.T=100", "run.stop_valid_error=0.0",
                     f"run.max_minutes={minutes}", *settings]:
            args += ["--set", item]
        t0 = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            return f"failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
        metrics = Path(f"{tmp}/run/metrics.jsonl")
        rows = ([json.loads(line) for line in open(metrics)] if metrics.exists()
                else [])
    solved = next((r for r in rows if r.get("valid_error") == 0.0), None)
    if solved is None:
        errors = [r["valid_error"] for r in rows if r["valid_error"] is not None]
        best = f", best error {min(errors):.3g}" if errors else ""
        return f"not solved in {wall:.0f} s ({len(rows)} updates{best})"
    return f"{solved['wall']:.0f} s ({solved['update']} updates; command {wall:.0f} s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    ap.add_argument("--cpu-ranks", type=int, default=os.cpu_count(),
                    help="ranks of the CPU comparison (0: none)")
    ap.add_argument("--minutes", type=float, default=2.0,
                    help="the memorisation runs' limit, each")
    ap.add_argument("--quick", action="store_true",
                    help="small cases: a check of the script")
    ap.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    ap.add_argument("--chunk-rows", type=int, default=0,
                    help="run.chunk_rows on the device (0: dhf-train's default there)")
    ap.add_argument("--cases", type=int, nargs="+",
                    help="which cases, by their place in the list (0 first)")
    args = ap.parse_args()
    cases = QUICK if args.quick else CASES
    cases = [cases[i] for i in args.cases] if args.cases else cases
    train = [str(Path(sys.executable).parent / "dhf-train")]
    T = ["task.T=20"] if args.quick else []
    # the device's figures first, each printed as it comes: a run cut short keeps them
    rows = []
    for i, (label, model, T_, n, cg_iters) in enumerate(cases):
        d = device_row(model, T_, n, cg_iters, args.device, args.chunk_rows)
        if i == 0:
            print(f"device: {d['where']}; float32; chunks of at most {d['chunk_rows']} "
                  "rows; per call over the batch in ms, HF update in s")
            print(f"| case | forward | gradient | Gv | Gv/grad "
                  f"| HF update ({args.device}) |")
            print("|---|---|---|---|---|---|")
        rows.append(d)
        print(f"| {label}, {cg_iters} CG, {d['chunks']} chunks | "
              f"{1e3 * d['forward']:.1f} | {1e3 * d['grad']:.1f} | {1e3 * d['Gv']:.1f} | "
              f"{d['Gv'] / d['grad']:.2f} | {d['update']:.2f} |", flush=True)
    print("\n| memorisation, T = 100, to 0 errors | time to solve |\n|---|---|")
    print(f"| {args.device}, 1 rank, JAX float32 | " + memorisation(
        train, ["run.backend='jax'", f"run.device='{args.device}'", "run.dtype='float32'",
                f"run.chunk_rows={args.chunk_rows}", *T], args.minutes) + " |", flush=True)
    if args.cpu_ranks < 1:
        return
    print(f"\nthe same HF updates on this machine's CPU: {args.cpu_ranks} ranks of "
          f"{os.cpu_count()} cores, run.backend = 'auto', float32")
    print(f"| case | HF update ({args.device}) | HF update (CPU, {args.cpu_ranks} ranks) "
          f"| CPU / {args.device} |\n|---|---|---|---|")
    for d, (label, model, T_, n, cg_iters) in zip(rows, cases):
        cpu = cpu_update(model, T_, n, cg_iters, args.cpu_ranks, args.mpiexec)
        print(f"| {label}, {cg_iters} CG | {d['update']:.2f} | {cpu:.2f} | "
              f"{cpu / d['update']:.1f} |", flush=True)
    print(f"| memorisation, CPU, {args.cpu_ranks} ranks, auto | " + memorisation(
        [args.mpiexec, "-n", str(args.cpu_ranks)] + train, T, args.minutes) + " |")


if __name__ == "__main__":
    main()
