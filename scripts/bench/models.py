"""Per model and backend, in one run: the forward pass, the gradient and the Gv product
per call, Gv / gradient, Gv's rate against the same run's GEMM rate, and the seconds of
an HF update (exactly 60 CG iterations) at 1 and 2 ranks.

Models: the tanh RNN of the `hessianfree` comparison (1-100-1, T steps) through its
explicit Gv kernels and through the generic pushforward/pullback graph, an LSTM (1-100-1),
a 2-layer tanh RNN (1-100-100-1), and Martens (2010)'s MNIST autoencoder
784-1000-500-250-30 mirrored (logistic).  Backends: numba, jax (compiled per chunk
shape), c, auto (dhf-train's default: JAX) and numba_gv (JAX, with the Numba kernels
for the tanh RNN's explicit Gv: run.gv_backend = "numba"), as given.

    OMP_NUM_THREADS=1 python scripts/bench/models.py [--T 50] [--rows 1024] \\
        [--dtype float32] [--backends numba jax auto] [--ranks 1 2] [--models ...]

Gv's rate counts 4 multiply-adds per weight, row and step (the R-forward pass's W·Ry and
V·y, the backward pass's Wᵀδ and δ·yᵀ); the GEMM rate is numpy's matmul of the model's
largest weight matrix against a chunk's rows, in the same dtype and thread count.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from dhf.heap import keep_freed_memory  # noqa: E402

keep_freed_memory()  # as dhf-train does, before anything allocates

import numpy as np  # noqa: E402

from engine import best_of, child_seconds, timed_updates  # noqa: E402  (engine.py)

#: backend -> (mode, Gv's mode); "auto" as dhf-train's run.backend = "auto".
MODES = {"numba": ("NUMBA", None), "jax": ("JAX", None), "c": ("CVM", None),
         "auto": ("JAX", None), "numba_gv": ("JAX", "NUMBA")}
MODELS = ("tanh_rnn", "tanh_rnn_generic", "lstm", "rnn_2layer", "autoencoder")
AE_SIZES = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]


def build(model: str, T: int, rows: int, dtype: str, backend: str, chunk_rows: int = 0,
          device: str = "cpu"):
    """``(spec, worker, gemm_shape, macs_per_row)`` for ``model`` on ``3 * rows`` rows,
    in chunks of ``chunk_rows`` (0: dhf-train's default for the model on ``device``);
    on a ``device`` other than the CPU, JAX's default device is the caller's to choose."""
    from dhf import nets
    from dhf.backends import chunk_rows_of
    from dhf.worker import Worker

    if "JAX" in MODES[backend]:
        from dhf.device import jax_on_cpu, one_xla_thread
        if device == "cpu":
            jax_on_cpu()  # as dhf-train's ranks: no GPU client on a GPU node
            one_xla_thread()  # one XLA thread, as dhf-train's ranks and numpy here
    rng = np.random.default_rng(0)
    options = {"explicit_gv": False} if model == "tanh_rnn_generic" else {}
    if model == "autoencoder":
        nl = ["logistic"] * 3 + ["linear"] + ["logistic"] * 3 + ["linear"]
        spec = nets.feedforward(AE_SIZES, nonlinearities=nl, loss="sigmoid_xent",
                                dtype=dtype, init="sparse")
        x = (rng.random((3 * rows, 784)) < 0.2).astype(np.float64)
        data = [x, x]
        macs = sum(a * b for a, b in zip(AE_SIZES, AE_SIZES[1:]))
        gemm = (1000, 784)
    else:
        x = rng.integers(0, 2, size=(3 * rows, T, 1)).astype(np.float64)
        hidden = {"rnn_2layer": [100, 100]}.get(model, [100])
        cell = "lstm" if model == "lstm" else "tanh"
        if model in ("tanh_rnn", "tanh_rnn_generic"):
            spec = nets.rnn(1, 100, 1, seed=0, dtype=dtype)  # the explicit-Gv model
        else:
            spec = nets.recurrent(1, hidden, 1, cell=cell, output_steps="last",
                                  loss="sigmoid_xent", seed=0, dtype=dtype)
        data = [x, x[:, 0, :].copy()]
        gates = 4 if cell == "lstm" else 1
        widths = [1] + hidden
        macs = T * sum(gates * (a * b + b * b) for a, b in zip(widths, widths[1:]))
        gemm = (100, gates * 100)
    mode, gv_mode = MODES[backend]
    run_cfg = {"chunk_rows": chunk_rows, "device": device,
               "backend": "jax" if mode == "JAX" else "numba",
               "gv_backend": "numba" if gv_mode == "NUMBA" else "auto"}
    chunk_rows = chunk_rows_of(run_cfg, spec)
    explicit = spec.gauss_newton is not None and options.get("explicit_gv", True)
    worker = Worker(spec, data, mode=mode, gv_mode=gv_mode if explicit else None,
                    chunk_rows=chunk_rows, gpu_ranks=int(device == "gpu"), **options)
    return spec, worker, gemm, macs


def gemm_rate(shape, rows, dtype) -> float:
    """FLOP/s of numpy's matmul of ``rows`` × shape[0] by shape[0] × shape[1]."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((rows, shape[0])).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    return 2.0 * rows * shape[0] * shape[1] / best_of(lambda: a @ b, repeats=10)


def per_call(model, T, rows, dtype, backend, chunk_rows=0, built=None) -> dict:
    """Forward, gradient and Gv seconds per call on ``rows`` rows (of ``built``, the
    :func:`build` result, when given)."""
    from dhf.worker import chunk_size

    spec, worker, gemm, macs = built or build(model, T, rows, dtype, backend, chunk_rows)
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    v = np.random.default_rng(1).normal(size=theta.size)
    batch = np.arange(rows)
    t = {"forward": best_of(lambda: worker.loss_sum(theta, batch), repeats=3),
         "grad": best_of(lambda: worker.grad_sum(theta, batch), repeats=3)}
    worker.prepare_curvature(theta, batch)
    t["Gv"] = best_of(lambda: worker.gv_sum(v, 0.0), repeats=3)
    chunk = chunk_size(rows, worker.chunk_rows, whole=worker.jax, ranks=worker.gpu_ranks,
                       looped=worker.looped)
    t["gemm_flops"] = gemm_rate(gemm, chunk, dtype)
    t["chunk"] = chunk
    t["gv_flops"] = 8.0 * macs * rows / t["Gv"]
    return t


def child(model, T, rows, dtype, backend, updates, cg_iters=60, chunk_rows=0):
    """Under mpiexec: HF updates of exactly ``cg_iters`` CG iterations on ``rows`` rows;
    prints their seconds as a JSON list."""
    from dhf.comm import get_comm
    from dhf.coordinator import HFConfig, HFOptimizer
    from dhf.data import BatchSampler

    comm = get_comm()
    spec, worker, _, _ = build(model, T, rows, dtype, backend, chunk_rows)
    cfg = HFConfig(cg_min_iters=cg_iters, cg_max_iters=cg_iters, init_damping=1.0)
    opt = HFOptimizer(worker, comm, cfg, BatchSampler(3 * rows, rows, rows, rows, 0))
    state = opt.init(worker.layout.flatten([p.get_value() for p in spec.params]))
    seconds, _ = timed_updates(opt, state, comm, updates)
    if comm.rank == 0:
        print(json.dumps(seconds))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--updates", type=int, default=2)
    ap.add_argument("--cg-iters", type=int, default=60, help="CG iterations per update")
    ap.add_argument("--chunk-rows", type=int, default=0,
                    help="rows per chunk, at most (0: dhf-train's default for the model)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    installed = ["numba"] + (["jax", "numba_gv"] if importlib.util.find_spec("jax") else [])
    ap.add_argument("--backends", nargs="+", default=installed, choices=list(MODES))
    ap.add_argument("--ranks", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "BACKEND"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, backend = args.child
        return child(model, args.T, args.rows, args.dtype, backend, args.updates,
                     args.cg_iters, args.chunk_rows)
    print(f"T={args.T} rows={args.rows} {args.dtype}, OMP_NUM_THREADS="
          f"{os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} CPUs; per call in ms, "
          f"HF update ({args.cg_iters} CG iterations) in s")
    head = ["model", "backend", "chunk", "forward", "grad", "Gv", "Gv/grad", "Gv/GEMM"]
    head += [f"update@{n}" for n in args.ranks]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for model in args.models:
        for backend in args.backends:
            t = per_call(model, args.T, args.rows, args.dtype, backend, args.chunk_rows)
            cells = [model, backend, str(t["chunk"]), f"{1e3 * t['forward']:.1f}",
                     f"{1e3 * t['grad']:.1f}",
                     f"{1e3 * t['Gv']:.1f}", f"{t['Gv'] / t['grad']:.2f}",
                     f"{t['gv_flops'] / t['gemm_flops']:.0%}"]
            for n in args.ranks:
                seconds = child_seconds(
                    args.mpiexec, n, __file__, "--child", model, backend, "--T",
                    str(args.T), "--rows", str(args.rows), "--dtype", args.dtype,
                    "--updates", str(args.updates), "--cg-iters", str(args.cg_iters),
                    "--chunk-rows", str(args.chunk_rows))
                cells.append(f"{np.median(seconds):.2f}")
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
