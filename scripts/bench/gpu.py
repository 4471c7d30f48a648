"""The device benchmark: one GPU (JAX) against the same machine's CPU cores, in one run.

    python scripts/bench/gpu.py                  # on a machine with a GPU and jax[cuda12]
    python scripts/bench/gpu.py --device cpu --quick     # a dry run of the script on a CPU

Nothing is downloaded; the whole run takes under 8 minutes on an H200 with 16 cores.
Printed, as Markdown tables for ``docs/benchmarks.md``:

1. Per model, on the device (``run.backend = "jax"``, float32, one rank, chunks of up to
   1 024 rows): forward, gradient and Gv per call over the batch, and one HF update of a
   fixed number of CG iterations; beside it, the HF update on every CPU core (one rank
   per core, ``run.backend = "auto"``: JAX with the tanh RNN's Numba Gv kernels), and
   the ratio.  Models: the tanh RNN (1-100-1) at T = 100 on 1 000 and 10 000 sequences,
   the LSTM (1-100-1) at T = 100 on 1 000, and Martens (2010)'s autoencoder on 7 500
   cases with 250 CG iterations (the goal: ≤ 5 s on one H200).
2. theano-hf's memorisation problem at T = 100 trained to 0 validation errors
   (``dhf-train``, at most ``--minutes`` each): on the device (goal: ≤ 60 s) and on every
   CPU core under ``mpiexec``.
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
DEVICE_CHUNK = 1024


def device_row(model, T, rows, cg_iters, device) -> dict:
    """Per-call milliseconds and one HF update's seconds on ``device``, one process."""
    from dhf.comm import SerialComm
    from dhf.coordinator import HFConfig, HFOptimizer
    from dhf.data import BatchSampler
    from dhf.device import use_device
    from engine import timed_updates

    where = use_device(device, "jax")
    built = models.build(model, T, rows, "float32", "jax", DEVICE_CHUNK)
    t = models.per_call(model, T, rows, "float32", "jax", built=built)
    spec, worker, _, _ = built
    cfg = HFConfig(cg_min_iters=cg_iters, cg_max_iters=cg_iters, init_damping=1.0)
    opt = HFOptimizer(worker, SerialComm(), cfg,
                      BatchSampler(3 * rows, rows, rows, rows, 0))
    state = opt.init(worker.layout.flatten([p.get_value() for p in spec.params]))
    seconds, _ = timed_updates(opt, state, SerialComm(), 1)
    return {"where": where, "forward": t["forward"], "grad": t["grad"], "Gv": t["Gv"],
            "update": float(np.median(seconds))}


def cpu_update(model, T, rows, cg_iters, ranks, mpiexec) -> float:
    """One HF update's seconds on ``ranks`` CPU ranks (scripts/bench/models.py's child)."""
    out = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, str(HERE / "models.py"), "--child",
         model, "auto", "--T", str(T), "--rows", str(rows), "--dtype", "float32",
         "--updates", "1", "--cg-iters", str(cg_iters)],
        capture_output=True, text=True, check=True)
    return float(np.median(json.loads([ln for ln in out.stdout.splitlines()
                                       if ln.startswith("[")][-1])))


def memorisation(command: list[str], settings: list[str], minutes: float) -> str:
    """Train memorisation at T = 100 to 0 validation errors: "N s (U updates)" to the first
    update with none wrong, or where it stood after ``minutes``."""
    with tempfile.TemporaryDirectory() as tmp:
        args = list(command) + ["--progress", "off", "--out", f"{tmp}/run"]
        for item in ["task.name='memorization'", "task.T=100", "run.stop_valid_error=0.0",
                     f"run.max_minutes={minutes}", *settings]:
            args += ["--set", item]
        t0 = time.perf_counter()
        subprocess.run(args, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in open(f"{tmp}/run/metrics.jsonl")]
    solved = next((r for r in rows if r.get("valid_error") == 0.0), None)
    if solved is None:
        best = min(r["valid_error"] for r in rows if r["valid_error"] is not None)
        return f"not solved in {wall:.0f} s ({len(rows)} updates, best error {best:.3g})"
    return f"{solved['wall']:.0f} s ({solved['update']} updates; command {wall:.0f} s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    ap.add_argument("--cpu-ranks", type=int, default=os.cpu_count())
    ap.add_argument("--minutes", type=float, default=2.0,
                    help="the memorisation runs' limit, each")
    ap.add_argument("--quick", action="store_true",
                    help="small cases: a check of the script")
    ap.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    args = ap.parse_args()
    cases = QUICK if args.quick else CASES
    first = device_row(*cases[0][1:], args.device)
    print(f"device: {first['where']}; CPU: {args.cpu_ranks} ranks of {os.cpu_count()} "
          "cores; float32; per call over the batch in ms, HF update in s")
    print(f"| case | forward | gradient | Gv | Gv/grad | HF update ({args.device}) "
          f"| HF update (CPU, {args.cpu_ranks} ranks) | CPU / {args.device} |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (label, model, T, rows, cg_iters) in enumerate(cases):
        d = first if i == 0 else device_row(model, T, rows, cg_iters, args.device)
        cpu = cpu_update(model, T, rows, cg_iters, args.cpu_ranks, args.mpiexec)
        print(f"| {label}, {cg_iters} CG | {1e3 * d['forward']:.1f} | "
              f"{1e3 * d['grad']:.1f} | {1e3 * d['Gv']:.1f} | {d['Gv'] / d['grad']:.2f} | "
              f"{d['update']:.2f} | {cpu:.2f} | {cpu / d['update']:.1f} |", flush=True)
    bin_dir = Path(sys.executable).parent
    train = [str(bin_dir / "dhf-train")]
    T = ["task.T=20"] if args.quick else []
    print("\n| memorisation, T = 100, to 0 errors | time to solve |\n|---|---|")
    print(f"| {args.device}, 1 rank, JAX float32 | " + memorisation(
        train, ["run.backend='jax'", f"run.device='{args.device}'", "run.dtype='float32'",
                *T], args.minutes) + " |", flush=True)
    print(f"| CPU, {args.cpu_ranks} ranks, auto | " + memorisation(
        [args.mpiexec, "-n", str(args.cpu_ranks)] + train, T, args.minutes) + " |")


if __name__ == "__main__":
    main()
