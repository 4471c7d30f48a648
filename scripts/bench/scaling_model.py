"""A model of an HF update's seconds at N ranks, built from parts measured here, and
checked against updates measured here at the rank counts this machine has.

    OMP_NUM_THREADS=1 python scripts/bench/scaling_model.py [--models default] \\
        [--ranks 1 2 4 16 64 256] [--check 1 2] [--cg-iters 60]

An update is (``dhf.coordinator.HFOptimizer.step``)

    t(N) = t_grad(N) + t_fwd(N) + n_cg · (t_Gv(N) + t_vec(N) + t_sum(N))
           + n_eval · t_loss(N)

- ``t_grad``, ``t_fwd``, ``t_Gv``, ``t_loss``: the busiest rank's own work, measured in
  this one process on exactly the chunks the plan gives that rank at N
  (:func:`dhf.worker.chunks_per_rank`), each chunk's sum added exactly as the
  coordinator adds it.  Measured, not fitted: the per-call overhead, the exact split and
  a share too small to fill a call are all in it.  It assumes N cores that do not slow
  each other down (``scripts/bench/ceiling.py`` says whether a machine has them).
- ``t_vec``: CG's own arithmetic on P-vectors per iteration (``dhf.cg.pcg`` with a
  diagonal operator, less the operator), divided among the N ranks (each updates its
  slice of the vectors), plus its three dot products' two small Allreduces each.
- ``t_sum``: the exact Allreduce of a Gv's parts (``dhf.allreduce.allreduce_exact``),
  measured under ``mpiexec -n 2`` here for one value (the latency α) and for a Gv
  (bytes at β), then ``α · log2 N + β · bytes · 2 (N − 1) / N`` (a reduce-scatter and
  an allgather); beyond one node the network's latency and bandwidth are added
  (``--net-latency``, ``--net-bandwidth``: assumptions, printed as such).

``--check`` runs real HF updates (exactly ``--cg-iters`` CG iterations, the first not
counted) at those rank counts and prints them beside the model.  The models: ``default``
is the default job's shape (tanh RNN, 100 units, T = 100, gradient batch 10 000,
curvature 1 000; the M&S recipe has the same), ``autoencoder`` Martens' MNIST
autoencoder (gradient 3 000, curvature 375).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from engine import best_of, child_seconds  # noqa: E402  (engine.py)

best = functools.partial(best_of, repeats=3)

#: name -> (models.py model, T, gradient rows, curvature rows, evaluation rows)
JOBS = {"default": ("tanh_rnn", 100, 10_000, 1_000, 1_000),
        "autoencoder": ("autoencoder", 0, 3_000, 375, 3_000)}


def parts(job: str, ranks: list[int], rows_scale: float) -> dict:
    """The busiest rank's seconds per phase at each of ``ranks``, and ``t_vec``."""
    from models import build

    from dhf import cg
    from dhf.reduction import ExactSum
    from dhf.worker import Chunks

    model, T, n_grad, n_curv, n_eval = JOBS[job]
    n_grad, n_curv, n_eval = (max(16, int(n * rows_scale))
                              for n in (n_grad, n_curv, n_eval))
    spec, worker, _, _ = build(model, T, n_grad // 3 + 1, "float32", "auto")
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    P = theta.size
    v = np.random.default_rng(1).normal(size=P)
    out = {"P": P, "looped": worker.looped, "per_rank": {}}
    for n in ranks:
        def share(rows):  # rank 0's chunks: the busiest (shard_bounds gives it the most)
            return Chunks(worker.plan(np.arange(rows))[:_first_share(worker, rows, n)])

        g, c, e = share(n_grad), share(n_curv), share(n_eval)
        t = {"grad": best(lambda: ExactSum.of(worker.grad_chunks(theta, g), P + 2)),
             "fwd": best(lambda: ExactSum.of(worker.curvature_chunks(theta, c), 2)),
             "loss": best(lambda: ExactSum.of(worker.loss_chunks(theta, e), 3))}
        list(worker.curvature_chunks(theta, c))
        parts_ = ExactSum(P)
        t["Gv"] = best(lambda: parts_.refill(worker.gv_chunks(v, 0.01)))
        t["rows"] = int(sum(len(x) for x in c))
        out["per_rank"][n] = t
    d = np.abs(np.random.default_rng(2).normal(size=P)) + 1.0
    iters = 30
    t_cg = best(lambda: cg.pcg(lambda x: d * x, -v, np.zeros(P), min_iters=iters,
                               max_iters=iters))
    t_op = best(lambda: [d * v for _ in range(iters)])
    out["vec"] = max(0.0, (t_cg - t_op) / iters)
    return out


def _first_share(worker, rows: int, n: int) -> int:
    from dhf.data import shard_bounds

    chunks = len(worker.plan(np.arange(rows)))
    return shard_bounds(chunks, 0, n)[1]


def allreduce_child(P: int, repeats: int) -> None:
    """Under mpiexec: seconds of ``allreduce_exact`` of a 1-value and a P-value sum (the
    medians of ``repeats``), printed as a JSON list by rank 0."""
    from dhf.allreduce import allreduce_exact
    from dhf.comm import get_comm
    from dhf.reduction import ExactSum

    comm = get_comm()
    medians = []
    for n in (1, P):
        total = ExactSum.of([np.random.default_rng(comm.rank).normal(size=n)])
        seconds = []
        for _ in range(repeats + 2):
            comm.barrier()
            t0 = time.perf_counter()
            allreduce_exact(comm, total, 0.0)
            seconds.append(time.perf_counter() - t0)
        medians.append(float(np.median(seconds[2:])))
    if comm.rank == 0:
        print(json.dumps(medians))


def update_child(job: str, cg_iters: int, n_eval_factor: float) -> None:
    """Under mpiexec: HF updates of exactly ``cg_iters`` CG iterations on the job's
    batches, printed as a JSON list of seconds by rank 0 (the first not counted)."""
    from engine import timed_updates
    from models import build

    from dhf.comm import get_comm
    from dhf.coordinator import HFConfig, HFOptimizer
    from dhf.data import BatchSampler

    model, T, n_grad, n_curv, n_eval = JOBS[job]
    n_grad, n_curv, n_eval = (max(16, int(n * n_eval_factor))
                              for n in (n_grad, n_curv, n_eval))
    comm = get_comm()
    spec, worker, _, _ = build(model, T, (n_grad + n_eval) // 3 + 1, "float32", "auto")
    cfg = HFConfig(cg_min_iters=cg_iters, cg_max_iters=cg_iters, init_damping=1.0)
    sampler = BatchSampler(worker.source.n_rows, n_grad, n_curv, n_eval, 0)
    opt = HFOptimizer(worker, comm, cfg, sampler)
    state = opt.init(worker.layout.flatten([p.get_value() for p in spec.params]))
    seconds, info = timed_updates(opt, state, comm, 2)
    if comm.rank == 0:
        print(json.dumps(seconds + [info.backtrack_evals + info.linesearch_tries]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(JOBS), choices=list(JOBS))
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 16, 64, 256])
    ap.add_argument("--check", type=int, nargs="*", default=[1, 2],
                    help="rank counts to run real updates at, beside the model")
    ap.add_argument("--cg-iters", type=int, default=60)
    ap.add_argument("--evals", type=int, default=6,
                    help="loss evaluations an update (backtracking and line search), "
                         "where --check measures none")
    ap.add_argument("--rows-scale", type=float, default=1.0,
                    help="every batch times this (a smoke test's small sizes)")
    ap.add_argument("--net-latency", type=float, default=5e-6,
                    help="seconds per step of an Allreduce between machines (assumed)")
    ap.add_argument("--net-bandwidth", type=float, default=10e9,
                    help="bytes per second between machines (assumed)")
    ap.add_argument("--ranks-per-node", type=int, default=64)
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child[0] == "allreduce":
            return allreduce_child(int(args.child[1]), 20)
        return update_child(args.child[1], args.cg_iters, args.rows_scale)
    for job in args.models:
        p = parts(job, sorted(set(args.ranks) | set(args.check)), args.rows_scale)
        P = p["P"]
        # the exact sum's Allreduce at 2 ranks, of 1 value and of P: alpha per step (the
        # latency), beta per byte; at n ranks log2(n) steps and 2 (n - 1) / n of the bytes
        # (a reduce-scatter and an allgather, as MPICH's and Open MPI's large Allreduce)
        t1v, t2 = child_seconds(args.mpiexec, 2, __file__, "--child", "allreduce",
                                str(P))
        nbytes = 5 * P * 8
        alpha = t1v
        beta = max(t2 - alpha, 0.0) / nbytes

        def t_sum(n, size=nbytes):
            """An exact Allreduce of ``size`` bytes at ``n`` ranks."""
            if n == 1:
                return 0.0
            local = n if n <= args.ranks_per_node else args.ranks_per_node
            t = alpha * math.log2(local) + beta * size * 2 * (local - 1) / local
            if n > args.ranks_per_node:
                hosts = n / args.ranks_per_node
                t += (args.net_latency * math.log2(hosts)
                      + 2 * size * (hosts - 1) / hosts / args.net_bandwidth)
            return t

        plan = "looped calls of fine chunks" if p["looped"] else "one chunk a call"
        head = ["ranks", "curvature rows", "grad", "Gv", "vec", "sum", "CG iteration",
                "update (model)", "efficiency", "update (measured)"]
        t1 = None
        measured, evals = {}, args.evals
        for n in args.check:
            s = child_seconds(args.mpiexec, n, __file__, "--child", "update", job,
                              "--cg-iters", str(args.cg_iters), "--rows-scale",
                              str(args.rows_scale))
            measured[n] = float(np.median(s[:-1]))
            evals = int(s[-1])  # the loss evaluations the real update made
        print(f"\n{job}: P = {P}, {plan}, "
              f"{args.cg_iters} CG iterations and {evals} loss evaluations an update; "
              f"CG's vector work {1e3 * p['vec']:.2f} ms an iteration at 1 rank, "
              f"divided among the ranks; "
              f"the exact Allreduce at 2 ranks of one value {1e6 * t1v:.0f} us, of a Gv "
              f"({nbytes / 1e6:.2f} MB of parts) {1e3 * t2:.2f} ms "
              f"({(1 / beta if beta else math.inf) / 1e9:.1f} GB/s); past "
              f"{args.ranks_per_node} ranks a node, assumed "
              f"{1e6 * args.net_latency:.0f} us and {args.net_bandwidth / 1e9:.0f} GB/s "
              f"between nodes")
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for n in sorted(set(args.ranks) | set(args.check)):
            t = p["per_rank"][n]
            # each rank's slice of CG's vector work, and its 3 dot products' 2 small
            # Allreduces each (the largest product, then 5 bins a group of 2**19 values)
            vec = p["vec"] / n + (6 * t_sum(n, 8 * 5 * math.ceil(P / 2 ** 19))
                                  if n > 1 else 0.0)
            it = t["Gv"] + vec + t_sum(n)
            total = (t["grad"] + t_sum(n) + t["fwd"] + args.cg_iters * it
                     + evals * (t["loss"] + t_sum(n, 5 * 3 * 8)))
            t1 = t1 or total
            cells = [str(n), str(t["rows"]), f"{t['grad']:.3f}", f"{1e3 * t['Gv']:.1f} ms",
                     f"{1e3 * vec:.2f} ms", f"{1e3 * t_sum(n):.2f} ms",
                     f"{1e3 * it:.1f} ms", f"{total:.2f}", f"{t1 / total / n:.0%}",
                     f"{measured[n]:.2f}" if n in measured else ""]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
