"""Write ``configs/<task>.toml``, a commented config for every built-in problem, and
``docs/config.md``, the reference of every config key.

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
    for section, keys in config_mod.SCHEMA.items():
        lines.append(f"[{section}]")
        for key, (_, text) in keys.items():
            mark = "*" if key in recommended.get(section, {}) else " "
            value = config_mod._toml_value(cfg[section][key])
            lines.append(f"{f'{key} = {value}':<30} # {mark} {text}")
        lines.append("")
    return "\n".join(lines)


def reference() -> str:
    """docs/config.md: every section and key, its default and what it means."""
    lines = ["# Config reference", "",
             "Every key of a `dhf-train` TOML config (or `--set SECTION.KEY=VALUE`, or the "
             "`config` dict of `dhf.train`), with dhf's default. A task's recommended "
             "settings replace some defaults (see `configs/<task>.toml`, where they are "
             "marked `*`); your file replaces those, and `--set` replaces your file. "
             "Unknown keys and out-of-range values stop the run with a one-line error "
             "before any rank starts work. Written by `scripts/make_configs.py` from "
             "`dhf/config.py`.", ""]
    for section, keys in config_mod.SCHEMA.items():
        lines += [f"## [{section}]", "", "| key | default | meaning |", "|---|---|---|"]
        for key, (default, text) in keys.items():
            choices = config_mod._CHOICES.get((section, key))
            bounds = config_mod._RANGES.get((section, key))
            extra = f" One of: {', '.join(map(str, choices))}." if choices else ""
            if bounds:
                lo, hi = bounds
                extra += f" Range: ≥ {lo}." if hi is None else f" Range: [{lo}, {hi}]."
            lines.append(f"| `{key}` | `{config_mod._toml_value(default)}` | "
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
    (ROOT / "docs" / "config.md").write_text(reference())


if __name__ == "__main__":
    main()
