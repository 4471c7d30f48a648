"""``dhf-plot``: training curves from one or more run directories' ``metrics.jsonl``.

Eight panels, runs overlaid: training loss (solid) and validation loss (dashed), and
validation error, against updates and against wall time since the run began (start-up
included, so a slow first compile shows), λ, ρ, CG iterations and seconds per update
(the ``hessianfree`` dataplotter's content, for several runs at once).  Each run is
labelled, from its ``config.toml``, with its optimiser (HF, SGD, Adam), its task and T,
and its directory.  matplotlib is an optional extra (``pip install 'dhf[plot]'``).
"""
from __future__ import annotations

import json
import math
from typing import Callable
from pathlib import Path

from dhf.errors import UserError


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: not found; is {run_dir} a dhf-train run "
                        "directory?") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}: line {number} is not JSON") from None
    if not rows:
        raise UserError(f"{path}: no updates recorded yet")
    return rows


def _series(rows, key, x, clip=None):
    """``(xs, ys)`` of ``key`` against ``x`` ("update" or "time": the row's ``wall``,
    else the cumulative ``seconds``); values outside ``clip = (lo, hi)`` are drawn at its
    edge, ±inf (``±1e308`` in ``metrics.jsonl``) included."""
    xs, ys, elapsed = [], [], 0.0
    for r in rows:
        elapsed = r["wall"] if r.get("wall") is not None else (
            elapsed + (r.get("seconds") or 0.0))
        value = r.get(key)
        if value is None or math.isnan(value):
            continue
        if clip is not None:
            value = min(max(value, clip[0]), clip[1])
        elif not abs(value) < 1e300:
            continue
        xs.append(r["update"] if x == "update" else elapsed)
        ys.append(value)
    return xs, ys


#: (metrics key, title, x axis, y scale, clip, y label) of each panel.  ρ is drawn in
#: [−1, 2]: a rejected or failed step's ρ (down to −∞) sits on the lower edge.  The loss
#: panels draw ``valid_loss`` too, dashed, and the error panels ``train_error``
#: (``run.train_error``) where the run has it.
PANELS = [("loss", "loss: training (solid), validation (dashed)", "update", "log", None,
           "mean loss"),
          ("loss", "loss: training (solid), validation (dashed)", "time", "log", None,
           "mean loss"),
          ("valid_error", "error: validation (solid), training (dashed)", "update",
           "linear", None, "error (the task's measure)"),
          ("valid_error", "error: validation (solid), training (dashed)", "time",
           "linear", None, "error (the task's measure)"),
          ("damping", "damping λ after the update", "update", "log", None, "λ"),
          ("rho", "reduction ratio ρ (clipped to [−1, 2])", "update", "linear", (-1.0, 2.0),
           "ρ"),
          ("cg_iters", "CG iterations", "update", "linear", None, "iterations"),
          ("seconds", "seconds per update", "update", "linear", None, "s")]


#: How the legend names each ``optimizer.name``.
OPTIMIZERS = {"hf": "HF", "sgd": "SGD", "adam": "Adam"}


def run_label(run_dir: str | Path,
              recurrent: Callable[[str], bool] = lambda task: True) -> str:
    """``OPTIMISER, TASK, T = … (DIR)`` from the run's config.toml (no T where
    ``recurrent(TASK)`` says it means nothing; the directory alone without a config)."""
    import tomllib

    name = Path(run_dir).name
    try:
        config = tomllib.loads((Path(run_dir) / "config.toml").read_text())
        task = config["task"]
        optimizer = config.get("optimizer", {}).get("name", "hf")
        t = f", T = {task['T']}" if recurrent(task["name"]) else ""
        return f"{OPTIMIZERS.get(optimizer, optimizer)}, {task['name']}{t} ({name})"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return name


def plot_runs(run_dirs: list[str], out: str | Path,
              labels: list[str] | None = None) -> Path:
    """Draw the runs' curves into ``out`` (PNG), each labelled ``labels[i]`` (default:
    :func:`run_label`); returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UserError("dhf-plot needs matplotlib: pip install 'dhf[plot]' "
                        "(or pip install matplotlib)") from None
    runs = {str(d): read_metrics(d) for d in run_dirs}
    labels = dict(zip(runs, labels or [run_label(d) for d in run_dirs]))
    fig, axes = plt.subplots(2, 4, figsize=(18, 8), constrained_layout=True)
    for ax, (key, title, x, scale, clip, ylabel) in zip(axes.flat, PANELS):
        for name, rows in runs.items():
            line, = ax.plot(*_series(rows, key, x, clip), marker=".", label=labels[name])
            dashed = {"loss": "valid_loss", "valid_error": "train_error"}.get(key)
            if dashed:
                ax.plot(*_series(rows, dashed, x), linestyle="--", color=line.get_color())
        ax.set_title(title)
        ax.set_xlabel("update" if x == "update"
                      else "wall time since the start, start-up included (s)")
        ax.set_ylabel(ylabel)
        ax.set_yscale(scale)
        if x == "update":  # updates are whole: no tick at 2.5
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
