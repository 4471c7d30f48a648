"""Write ``configs/<task>.toml``, a commented config for every built-in problem,
``configs/ms2011/<problem>.toml``, Martens & Sutskever's recipe for each of their
problems, and ``docs/config.md``, the reference of every config key.

Each file holds every key with the value ``dhf-train --set task.name=<task>`` would use
(dhf's defaults under the task's recommended settings) and the key's description as a
comment, so a user can copy one and edit it.  ``configs/memorization.toml`` is written
by hand and left alone.  ``tests/test_configs.py`` checks that the files are current:

    python scripts/make_configs.py
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from dhf import config as config_mod
from dhf import tasks
from dhf.tasks import pathological

ROOT = Path(__file__).resolve().parents[1]
HAND_WRITTEN = {"memorization"}


def render(name: str) -> str:
    cfg = config_mod.load(None, [f"task.name={name!r}"])
    task = tasks.get(name)
    doc = " ".join((getattr(task, "__doc__", None) or "").split())
    head = [f"# {name}: {doc}" if doc else f"# {name}",
            f"#   mpirun -n 4 dhf-train configs/{name}.toml",
            "#   (values marked * are this task's recommended settings, the rest dhf's "
            "defaults;",
            "#   written by scripts/make_configs.py)", ""]
    lines = [textwrap.fill(line, 92, subsequent_indent="#   ") if line.startswith("# ")
             else line for line in head]
    recommended = tasks.defaults(name)
    kinds = tasks.kinds(name)
    for section, keys in config_mod.SCHEMA.items():
        lines.append(f"[{section}]")
        for key, (_, text, _, _, applies) in keys.items():
            if applies is not None and applies not in kinds:
                continue
            mark = "*" if key in recommended.get(section, {}) else " "
            value = config_mod.toml_value(cfg[section][key])
            lines.append(f"{f'{key} = {value}':<30} # {mark} {text}")
        lines.append("")
    return "\n".join(lines)


#: Where each value of Martens & Sutskever's recipe comes from (Sutskever's HF-RNN
#: release, barapa/HF-RNN: ``opt/r/demo.py``, ``opt/hf.py``, ``opt/d/seq/``).
MS2011_NOTES = {
    ("task", "n_valid"): "dhf's test set, generated once (the release: 10 minibatches)",
    ("data", "fresh"): "forget(): 10 new minibatches every update (but the curvature's)",
    ("model", "hidden"): "demo.py: h = 100",
    ("model", "cell"): "hid_nonlin = nonlin.Tanh",
    ("model", "init_scale"): "no gain on top of the 1/sqrt(15) scale",
    ("model", "init"): "initialize_self(num_in=15, scale=1/sqrt(15)): sparse",
    ("model", "input_scale"): "model.W_vh *= 0.25, 'a VERY IMPORTANT LINE'",
    ("model", "h0_scale"): "h_init is sparsified too: N(0, 1/15)",
    ("model", "loss_average"): "DataAccess.size(): the loss is divided by the mask's sum",
    ("optimizer", "gradient_batch"): "grad_batches: all 10 minibatches",
    ("optimizer", "curvature_batch"): "GN_batches = [0]",
    ("optimizer", "backtrack_batch"): "BT_batches = [1], BT_eval = 'objective'",
    ("optimizer", "linesearch_batch"): "line_search_batches = [2]",
    ("optimizer", "held_out"): "minibatches 0, 1, 2 are among grad_batches",
    ("optimizer", "cg_max_iters"): "max_cg_iter = 300 (the progress rule still stops it)",
    ("optimizer", "init_damping"): "0.01 x data_object.num_outputs",
    ("optimizer", "structural_damping"): "init_damping = [1, 0.03] x ...: mu = 0.03",
    ("optimizer", "structural_d"): "nonlin.Tanh.H_prod: 0.25 (1 - h^2)",
    ("optimizer", "rho_model"): "RHO_denom = model(..., damp=True)",
    ("optimizer", "backtrack"): "cg_eval_freq = 10 (and where CG stopped), argmin",
    ("optimizer", "linesearch_c"): "line_search: first 0.8^i that lowers the loss",
    ("optimizer", "reject_warm_start"): "line_search: step == 0 sets CG_x to zero",
    ("optimizer", "boost_on_reject"): "damping_heuristic(rho) only; no boost on reject",
    ("optimizer", "l2"): "L2_decay = 2e-5 on loss, gradient and Gv",
    ("optimizer", "max_updates"): "maxnum_iter = 5e4; run.max_minutes is the budget",
    ("optimizer", "clip_norm"): "sgd and adam only: clipped (Pascanu et al. 2013)",
    ("run", "stop_valid_error"): "the release: zero-one loss < 0.001; dhf: <= 0.1 % of "
                                 "sequences",
    ("run", "dtype"): "dhf's choice: 2 x faster; CG and sums stay float64",
}
MS2011_T = 100  # the release's T of the table these configs reproduce


def render_ms2011(name: str) -> str:
    """``configs/ms2011/<name>.toml``: the recipe's keys only, each with its source."""
    task = tasks.get(name)
    problem = task.problem
    T = MS2011_T // problem.release_T_factor
    recipe = tasks.defaults(name, T)
    doc = " ".join((task.__doc__ or "").split())
    t_note = ("release T = 100: sequences of 50-55; task.T = 100 (100-110) is its T = 200"
              if problem.release_T_factor != 1
              else "the release's T = 100 (its default: 200)")
    lines = [f"# Martens & Sutskever (2011): {name}, {doc}.",
             "# The recipe of Sutskever's released HF-RNN code (barapa/HF-RNN), which is "
             "also",
             "# this task's recommended settings; the file lists it to say where each",
             "# value comes from. Any T: --set task.T=... (lambda_0 follows the task's "
             "outputs).",
             f"#   mpirun -n 2 dhf-train configs/ms2011/{name}.toml --out runs/{name}",
             "# Success: under 1 % of the 10,000 test sequences wrong (the release stops "
             "at 0.1 %).",
             "# Written by scripts/make_configs.py.", "",
             "[task]", f'name = {config_mod.toml_value(name)}',
             f'{f"T = {T}":<30} # {t_note}']
    for section in config_mod.SCHEMA:
        keys = recipe.get(section, {})
        if section != "task":
            lines += ["", f"[{section}]"]
        for key, value in keys.items():
            if (section, key) in (("task", "n_train"), ("task", "T")):
                continue  # T is above; n_train is unused with fresh data
            text = f"{key} = {config_mod.toml_value(value)}"
            if key == "init_damping":  # left to the task, so that it follows task.T
                lines.append(f"# {text} here: the task sets 0.01 x the release's "
                             f"num_outputs ({problem.num_outputs(T)} at T = {T})")
                continue
            note = MS2011_NOTES.get((section, key), "")
            if (section, key) == ("model", "loss_average") and value == "sequence":
                note = ("dhf: per sequence; the release's per-output average stalls "
                        "(docs/results.md)")
            lines.append(f"{text:<30} # {note}".rstrip())
    return "\n".join(lines) + "\n"


def reference() -> str:
    """docs/config.md: every section and key, its default and what it means."""
    lines = ["# Config reference", "",
             "Every key of a `dhf-train` TOML config (or `--set SECTION.KEY=VALUE`, or the "
             "`config` dict of `dhf.train`), with dhf's default. A task's recommended "
             "settings replace some defaults (see `configs/<task>.toml`, where they are "
             "marked `*`); your file replaces those, and `--set` replaces your file. "
             "Unknown keys and out-of-range values stop the run with a one-line error "
             "before any rank starts work. Written by `scripts/make_configs.py` from "
             "`dhf/schema.py`.", ""]
    for section, keys in config_mod.SCHEMA.items():
        lines += [f"## [{section}]", "", "| key | default | meaning |", "|---|---|---|"]
        for key, (default, text, *_) in keys.items():
            choices = config_mod.CHOICES.get((section, key))
            bounds = config_mod.RANGES.get((section, key))
            extra = f" One of: {', '.join(map(str, choices))}." if choices else ""
            if bounds:
                lo, hi = bounds
                extra += f" Range: ≥ {lo}." if hi is None else f" Range: [{lo}, {hi}]."
            lines.append(f"| `{key}` | `{config_mod.toml_value(default)}` | "
                         f"{text.replace('|', '/')}.{extra} |")
        lines.append("")
    lines += ["## Tasks", "", "| `task.name` | what it is |", "|---|---|"]
    for name in sorted(tasks.TASKS):
        doc = " ".join((getattr(tasks.TASKS[name], "__doc__", "") or "").split())
        lines.append(f"| `{name}` | {doc.split('. ')[0]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    for name in sorted(tasks.TASKS):
        if name not in HAND_WRITTEN:
            (ROOT / "configs" / f"{name}.toml").write_text(render(name))
    (ROOT / "configs" / "ms2011").mkdir(exist_ok=True)
    for name in sorted(pathological.PROBLEMS):
        (ROOT / "configs" / "ms2011" / f"{name}.toml").write_text(render_ms2011(name))
    (ROOT / "docs" / "config.md").write_text(reference())


if __name__ == "__main__":
    main()
