"""The tanh RNN's two Gv recurrences alone: Numba's fused kernels against their
``jax.lax.scan`` form (dhf.curvature.tanh_recurrence), one call each, in one run.

    OMP_NUM_THREADS=1 python scripts/bench/recurrences.py [--T 100] [--rows 50] [--H 100]

Prints the milliseconds of the R-forward and backward recurrences on (T, rows, H)
float32 and their ratio: what ``run.gv_backend = "numba"`` gains on this CPU.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def best_ms(fn, repeats: int = 30) -> float:
    fn()  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--H", type=int, default=100)
    args = ap.parse_args()

    import jax
    import pytensor.tensor as pt
    from pytensor.link.jax.dispatch import jax_funcify

    from dhf.curvature import tanh_recurrence as tr
    from dhf.device import one_xla_thread

    one_xla_thread()  # one XLA thread, as dhf-train's ranks and Numba's kernels

    tr.register_jax()
    T, N, H = args.T, args.rows, args.H
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    forward = (arr(T, N, H), np.tanh(arr(T, N, H)), arr(N, H), arr(N, H),
               0.1 * arr(H, H), 0.1 * arr(H, H))
    backward = (arr(T, N, H), np.tanh(arr(T, N, H)), arr(N, H), 0.1 * arr(H, H))
    inputs = {"R-forward": (tr.tanh_r_forward, forward),
              "backward": (tr.tanh_backward, backward)}
    print(f"T={T} rows={N} H={H} float32, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print("| recurrence | Numba kernel (ms) | jax.lax.scan (ms) | JAX / Numba |")
    print("|---|---|---|---|")
    for name, (op, values) in inputs.items():
        node = op.make_node(*[pt.as_tensor_variable(v) for v in values])
        numba_fn = tr._compiled[type(op).kernel]
        jax_fn = jax.jit(jax_funcify(op, node=node))
        t_numba = best_ms(lambda: numba_fn(*values))
        t_jax = best_ms(lambda: jax.block_until_ready(jax_fn(*values)))
        print(f"| {name} | {t_numba:.2f} | {t_jax:.2f} | {t_jax / t_numba:.2f} |")


if __name__ == "__main__":
    main()
