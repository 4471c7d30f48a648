"""Logging set-up and the one-line-per-update format."""
from __future__ import annotations

import logging
import math
import sys


def setup_logging(rank: int, verbosity: int = 0) -> None:
    """Rank 0 logs INFO to stdout; other ranks only warnings and errors, to stderr."""
    level = logging.INFO - 10 * verbosity if rank == 0 else logging.WARNING
    stream = sys.stdout if rank == 0 else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(
        "%(message)s" if rank == 0 else f"[rank {rank}] %(levelname)s %(message)s"))
    root = logging.getLogger("dhf")
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.DEBUG))
    root.propagate = False


def format_update(row: dict) -> str:
    """``update 3  loss 0.6931  valid_error 0.480  rho 0.81  damping 0.333 ...``.

    HF rows show ρ, λ, CG iterations and the step size; SGD rows the gradient norm.
    """
    parts = [f"update {row['update']:>4d}", f"loss {row['loss']:.4g}"]
    if row.get("valid_loss") is not None:
        parts.append(f"valid_loss {row['valid_loss']:.4g}")
    if row.get("valid_error") is not None:
        parts.append(f"valid_error {row['valid_error']:.3f}")
    if row.get("train_error") is not None:
        parts.append(f"train_error {row['train_error']:.4g}")
    if "rho" in row:
        rho = row["rho"]
        parts.append(f"rho {rho:.3f}" if math.isfinite(rho) else f"rho {rho}")
        parts += [f"damping {row['damping']:.3g}", f"cg_iters {row['cg_iters']:>3d}",
                  f"step {row['step_size']:.3g}"]
    if "grad_norm" in row:
        parts.append(f"grad_norm {row['grad_norm']:.3g}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


class CGProgress:
    """A progress bar over the CG iterations (SGD: minibatch steps) of the current update
    (tqdm), for terminals.

    Called as ``progress(i, value)`` by CG (φ) or SGD (the minibatch loss); :meth:`close`
    clears it before the update's line is logged.  In batch logs (stdout not a terminal)
    dhf-train uses no bar at all.  The bar's length is the previous update's number of
    iterations (CG stops long before its cap), ``max_iters`` for the first; an update
    that goes further lengthens it.
    """

    def __init__(self, max_iters: int, desc: str = "CG", value: str = "phi"):
        self.expected, self.desc, self.value = max_iters, desc, value
        self.bar = None

    def __call__(self, i: int, phi: float) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.expected, desc=self.desc, unit="it", leave=False,
                            dynamic_ncols=True)
        if self.bar.n >= self.bar.total:
            self.bar.total = self.bar.n + 1
        self.bar.update(1)
        self.bar.set_postfix_str(f"{self.value} {phi:.4g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.expected = max(self.bar.n, 1)
            self.bar.close()
            self.bar = None
