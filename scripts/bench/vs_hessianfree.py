"""Benchmark: dhf against the `hessianfree` 0.4.0 package on the same task, in one run.

    python scripts/bench/vs_hessianfree.py [--T 50] [--batch 1024] [--updates 3]

The peer is installed in its own virtual environment (``.bench/hessianfree-venv``, made
on first use: numpy, matplotlib, hessianfree==0.4.0 from PyPI).  Both train a tanh RNN
with 100 hidden units on sequences of T steps, batch 1024 for the gradient and the
curvature, with 60 CG iterations per update:

- hessianfree: ``RNNet([1, 100, 1])``, Tanh hidden, Logistic output, its default squared
  error and float32, ``HessianFree(CG_iter=60)``, 2 BLAS threads (its CG may stop before
  60 iterations, so the fair figure is the time per CG iteration);
- dhf: ``scripts/bench/engine.py``'s update (exactly 60 CG iterations, structural damping
  on) at 2 ranks, one BLAS thread each, float64 and float32, under dhf-train's default
  backend (JAX) and under Numba's fused kernels.

It prints seconds per HF update (first update excluded as warm-up) and the ratios.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".bench" / "hessianfree-venv"

PEER = r"""
import json, sys, time
import numpy as np
import hessianfree as hf
T, batch, updates = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.RandomState(0)
x = rng.randint(0, 2, size=(batch, T, 1)).astype(np.float32)
y = np.repeat(x[:, :1, :], T, axis=1)
net = hf.RNNet([1, 100, 1], layers=[hf.nl.Linear(), hf.nl.Tanh(), hf.nl.Logistic()],
               rng=rng)
opt = hf.opt.HessianFree(CG_iter=60, plotting=True)
times = []
for _ in range(updates + 1):
    t0 = time.perf_counter()
    net.run_epochs(x, y, optimizer=opt, max_epochs=1, minibatch_size=batch,
                   print_period=None)
    times.append(time.perf_counter() - t0)
print(json.dumps({"update_seconds": times[1:], "cg_iters": opt.plots["CG iterations"]}))
"""


def peer_python() -> str:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy", "matplotlib"],
                       check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "hessianfree==0.4.0"],
                       check=True)
    return str(python)


def run_json(cmd, env=None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{out.stdout}{out.stderr}")
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--peer-python", help="a Python that imports hessianfree 0.4.0 "
                    "(default: the virtual environment above, made on first use)")
    ap.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    a = ap.parse_args()
    sizes = [str(a.T), str(a.batch), str(a.updates)]
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    peer = run_json([a.peer_python or peer_python(), "-c", PEER, *sizes], env=env)
    t_peer = median(peer["update_seconds"])
    peer_iters = peer["cg_iters"][1:]  # the timed updates (its CG may stop before 60)
    per_iter_peer = sum(peer["update_seconds"]) / sum(peer_iters)
    print(f"tanh RNN H=100 T={a.T} batch={a.batch}, up to 60 CG iterations per update, "
          f"{os.cpu_count()} CPUs")
    print(f"  hessianfree 0.4.0, 2 threads: {t_peer:.2f} s per update, CG iterations "
          f"{peer_iters}, {1e3 * per_iter_peer:.0f} ms per CG iteration")
    engine = str(ROOT / "scripts" / "bench" / "engine.py")
    for backend, dtype in itertools.product(("auto", "numba"), ("float64", "float32")):
        ours = run_json([a.mpiexec, "-n", "2", sys.executable, engine, "--child", "--T",
                         str(a.T), "--batch", str(a.batch), "--updates", str(a.updates),
                         "--dtype", dtype, "--backend", backend])
        t_ours = median(ours["update_seconds"])
        per_iter = t_ours / ours["cg_iters"]
        print(f"  dhf {backend} {dtype}, 2 ranks: {t_ours:.2f} s per update, "
              f"{ours['cg_iters']} CG "
              f"iterations, {1e3 * per_iter:.0f} ms per CG iteration -> "
              f"{t_peer / t_ours:.2f}x per update, {per_iter_peer / per_iter:.2f}x per "
              "CG iteration")


if __name__ == "__main__":
    main()
