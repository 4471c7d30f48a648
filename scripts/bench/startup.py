"""Time to the end of the first update, from empty compile caches and from warm ones.

Each case runs ``mpiexec -n RANKS dhf-train ... --set optimizer.max_updates=1`` twice
with PyTensor's whole cache directory (``base_compiledir``: its compiled C modules *and*
its Numba cache) and Numba's own cache (dhf's kernels) in a fresh temporary directory:
first cold (empty), then warm (what the cold run left); under JAX, XLA's persistent
cache lives there too (``base_compiledir/jax``).  For each it prints the whole
command's seconds to the end of its first update (its line, printed after the update's
validation pass) and to its exit (the checkpoint written), the start line's "compiled
in" and the update's own seconds.

    python scripts/bench/startup.py --ranks 1 2 --cases default memorization addition lstm
    python scripts/bench/startup.py --ranks 1 --cases memorization --backends numba c
    python scripts/bench/startup.py --ranks 2 --cases default --backends auto numba_gv
    python scripts/bench/startup.py --ranks 2 --cases lstm user_gru
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: What each case runs: the default job (temporal order, T = 100, 10 000-sequence
#: gradient), theano-hf's memorisation at T = 20 (the small job), a masked problem of
#: variable lengths (the explicit Gv kernels, fresh data), and an LSTM (the generic Gv
#: graph through scan): ``dhf-train`` with these ``--set`` items; and a user's own
#: recurrent graph (a GRU in ``scan``) through ``dhf.train``: the script
#: ``examples/gru.py``.
CASES = {
    "default": [],
    "memorization": ["task.name='memorization'"],
    "addition": ["task.name='addition'", "task.T=30"],
    "lstm": ["task.name='memorization'", "model.cell='lstm'"],
    "user_gru": ROOT / "examples" / "gru.py",
}


#: ``--backends`` choices: run.backend ("auto", dhf's default: JAX where installed), and
#: "numba_gv", JAX with the tanh RNN's fused Numba Gv kernels (run.gv_backend = "numba").
BACKENDS = {"auto": [], "numba": ["run.backend='numba'"], "c": ["run.backend='c'"],
            "jax": ["run.backend='jax'"], "numba_gv": ["run.gv_backend='numba'"]}


def command(case: str, backend: str, out: str) -> list[str]:
    """The command of one update of ``case`` under ``backend``, writing to ``out``."""
    if isinstance(CASES[case], Path):  # a user's script (dhf.train)
        return [sys.executable, str(CASES[case]), "--updates", "1", "--backend", backend,
                "--out", out]
    bin_dir = Path(sys.executable).parent
    train = ([str(bin_dir / "dhf-train")] if (bin_dir / "dhf-train").exists()
             else [sys.executable, "-m", "dhf.cli"])  # dhf not installed, on PYTHONPATH
    cmd = [*train, "--progress", "off", "--out", out]
    for item in CASES[case] + BACKENDS[backend] + ["optimizer.max_updates=1",
                                                   "run.stop_valid_error=-1.0"]:
        cmd += ["--set", item]
    return cmd


def run_once(ranks: int, cmd: list[str], cache: str, mpiexec: str) -> dict:
    """``cmd`` (one update) under ``mpiexec -n ranks`` with its caches in ``cache``: its
    wall time, the start line's compile seconds and the update's seconds."""
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={cache}/pytensor",
               NUMBA_CACHE_DIR=f"{cache}/numba")
    cmd = [mpiexec, "-n", str(ranks), *cmd]
    t0 = time.perf_counter()
    first = None  # when update 1's line came: the end of the first update
    lines = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT) as proc:
        for line in proc.stdout:
            lines.append(line)
            if first is None and re.match(r"update +1 ", line):
                first = time.perf_counter() - t0
        stderr = proc.stderr.read()
    seconds = time.perf_counter() - t0
    stdout = "".join(lines)
    if proc.returncode != 0:
        raise SystemExit(f"{ranks} ranks failed:\n{stdout}\n{stderr}")
    compiled = re.search(r"compiled in ([0-9.]+)s", stdout)
    update = re.search(r"update +1 .* ([0-9.]+)s\s*$", stdout, re.M)
    return {"wall": seconds, "first": first,
            "compile": float(compiled.group(1)) if compiled else None,
            "update": float(update.group(1)) if update else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--backends", nargs="+", default=["auto"],
                        choices=list(BACKENDS))
    parser.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    args = parser.parse_args()
    print("| case | backend | ranks | cold: to update 1 | cold: command | cold: compiling "
          "| cold: update 1 | warm: to update 1 | warm: command | warm: compiling "
          "| warm: update 1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        for backend in args.backends:
            for ranks in args.ranks:
                with tempfile.TemporaryDirectory() as tmp:
                    cold, warm = (run_once(ranks, command(case, backend, f"{tmp}/{run}"),
                                           f"{tmp}/cache", args.mpiexec)
                                  for run in ("cold", "warm"))
                cells = [f"{r[k]:.1f} s" if r[k] is not None else "?"
                         for r in (cold, warm)
                         for k in ("first", "wall", "compile", "update")]
                print(f"| {case} | {backend} | {ranks} | " + " | ".join(cells) + " |",
                      flush=True)


if __name__ == "__main__":
    main()
