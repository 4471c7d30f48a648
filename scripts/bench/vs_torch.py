"""dhf's gradient and Gv product against PyTorch's on the same tanh RNN, in one run.

    OMP_NUM_THREADS=1 python scripts/bench/vs_torch.py [--T 50] [--rows 1024] \\
        [--dtype float32] [--backends auto numba_gv numba]

The model is ``dhf.nets.rnn(1, 100, 1)`` (the `hessianfree` comparison's tanh RNN, read
out at the last step, logistic cross-entropy), on ``rows`` random binary sequences of
``T`` steps.  PyTorch gets the same weights and data and the idiomatic forms: autograd's
``backward()`` for the gradient, and ``torch.func.jvp`` then ``torch.func.vjp`` for the
Gauss-Newton product ``Jᵀ H_L J v`` (H_L the logistic loss's Hessian in the outputs),
each on the whole batch in one call.  dhf computes them as ``dhf-train`` does, chunk by
chunk (``Worker.grad_sum``; ``Worker.gv_sum`` on cached forward states).  One thread
each; the best of several calls; both results are checked against each other first.
Needs PyTorch (``pip install torch``, the CPU wheel will do); nothing else is timed
without it.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from engine import best_of  # noqa: E402  (engine.py)
from models import build  # noqa: E402  (models.py)


def torch_functions(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, dtype: str):
    """``(grad, gv)`` closures over PyTorch tensors of the model's parameters and data:
    ``grad()`` the summed loss's gradient, ``gv(v)`` the Gauss-Newton product, both as
    lists of arrays in ``params``' order."""
    import torch
    from torch.func import jvp, vjp

    torch.set_num_threads(1)
    tdtype = getattr(torch, dtype)
    theta = [torch.tensor(p, dtype=tdtype) for p in params]
    xs = torch.tensor(x, dtype=tdtype).transpose(0, 1).contiguous()  # (T, N, 1)
    ys = torch.tensor(y, dtype=tdtype)

    def output(W_in, W_rec, b_h, h0, W_out, b_out):
        x_proj = xs @ W_in + b_h  # one GEMM for every step's input, as dhf's model
        h = h0.expand(xs.shape[1], -1)
        for t in range(xs.shape[0]):
            h = torch.tanh(x_proj[t] + h @ W_rec)
        return h @ W_out + b_out

    def loss_of(s):
        return torch.nn.functional.binary_cross_entropy_with_logits(s, ys, reduction="sum")

    def grad():
        leaves = [p.detach().requires_grad_() for p in theta]
        loss_of(output(*leaves)).backward()
        return [p.grad.numpy() for p in leaves]

    def gv(v):
        tangents = tuple(torch.tensor(a, dtype=tdtype) for a in v)
        s, Js = jvp(output, tuple(theta), tangents)
        p = torch.sigmoid(s)
        u = p * (1 - p) * Js  # H_L J v: the logistic loss's Hessian is diagonal
        _, pullback = vjp(output, *theta)
        return [g.numpy() for g in pullback(u)]

    return grad, gv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--backends", nargs="+", default=["auto", "numba_gv", "numba"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("vs_torch.py needs PyTorch: pip install torch")
    rtol = 2e-3 if args.dtype == "float32" else 1e-8
    print(f"tanh RNN 1-100-1, T={args.T}, {args.rows} rows, {args.dtype}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch {torch.__version__}; "
          f"ms per call, best of {args.repeats}")
    print("| backend | dhf grad | torch grad | torch / dhf | dhf Gv | torch Gv | "
          "torch / dhf |")
    print("|---|---|---|---|---|---|---|")
    for backend in args.backends:
        spec, worker, _, _ = build("tanh_rnn", args.T, args.rows, args.dtype, backend)
        rows = np.arange(args.rows)
        params = [p.get_value() for p in spec.params]
        theta = worker.layout.flatten(params)
        x, y = (np.asarray(a[:args.rows]) for a in worker.source.read(rows))
        grad, gv = torch_functions(params, x, y, args.dtype)
        v = np.random.default_rng(1).standard_normal(theta.size)
        worker.prepare_curvature(theta, rows)
        # the same numbers first: gradient and Gv agree to float rounding
        ours = worker.grad_sum(theta, rows)[:theta.size]
        theirs = worker.layout.flatten(grad())
        ours_gv = worker.gv_sum(v, 0.0)
        theirs_gv = worker.layout.flatten(gv(worker.layout.unflatten(v)))
        for name, a, b in (("gradient", ours, theirs), ("Gv", ours_gv, theirs_gv)):
            err = np.max(np.abs(a - b)) / np.max(np.abs(b))
            if err > rtol:
                sys.exit(f"{backend}: dhf's and torch's {name} differ by {err:.1e}")
        t_grad = best_of(lambda: worker.grad_sum(theta, rows), args.repeats)
        t_torch = best_of(grad, args.repeats)
        t_gv = best_of(lambda: worker.gv_sum(v, 0.0), args.repeats)
        vs = worker.layout.unflatten(v)
        t_torch_gv = best_of(lambda: gv(vs), args.repeats)
        print(f"| {backend} | {1e3 * t_grad:.1f} | {1e3 * t_torch:.1f} | "
              f"{t_torch / t_grad:.2f} | {1e3 * t_gv:.1f} | {1e3 * t_torch_gv:.1f} | "
              f"{t_torch_gv / t_gv:.2f} |", flush=True)


if __name__ == "__main__":
    main()
