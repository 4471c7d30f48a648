"""Built-in problems: each generates its data and builds the model that fits it.

A task is a module-level object with ``generate(params, n, rng) -> (inputs, targets)``
arrays (rows first) and ``build_model(config) -> ModelSpec``.  ``TASKS`` maps the names
that ``task.name`` accepts to them.
"""
from __future__ import annotations

import numpy as np

from dhf.errors import ConfigError
from dhf.tasks import memorization

TASKS = {"memorization": memorization}


def get(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"task.name = {name!r} is unknown; expected one of "
                          f"{', '.join(sorted(TASKS))}") from None


def generate_splits(config: dict, test: bool = False) -> dict[str, list[np.ndarray]]:
    """``{"train": [inputs, targets], "valid": [...]}`` for the configured task, and a
    ``"test"`` split of ``n_valid`` rows when asked."""
    task_cfg = config["task"]
    task = get(task_cfg["name"])
    rng = np.random.default_rng(task_cfg["seed"])
    splits = {"train": task.generate(task_cfg, task_cfg["n_train"], rng),
              "valid": task.generate(task_cfg, task_cfg["n_valid"], rng)}
    if test:
        splits["test"] = task.generate(task_cfg, task_cfg["n_valid"], rng)
    return splits
