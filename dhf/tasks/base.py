"""What a built-in task is: the two shapes ``dhf-train`` drives.

Every task has a ``name``, its recommended settings ``defaults`` (by config section,
applied under the user's file and ``--set``) and ``build_model(config) -> ModelSpec``.
It then either **generates** its data, any number of rows from a seed (the synthetic
problems; fresh data needs this), or holds a **fixed** data set split once (the digits).
A task may add ``recommended(T)`` (settings that depend on the sequence length) and
``check(params)`` (constraints on ``[task]``, refused in one line).  Modules can be
tasks too (:mod:`dhf.tasks.memorization`, :mod:`dhf.tasks.plant`).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Task(Protocol):
    name: str
    defaults: dict

    def build_model(self, config: dict): ...


@runtime_checkable
class GeneratedTask(Task, Protocol):
    def generate(self, params: dict, n: int, rng: np.random.Generator, first_row: int = 0
                 ) -> list[np.ndarray]:
        """``[inputs, targets, (mask)]``, rows first; ``first_row`` is the global index
        of the first row (a problem that balances its classes does so across calls)."""


@runtime_checkable
class FixedTask(Task, Protocol):
    def splits(self, params: dict, test: bool = False) -> dict[str, list[np.ndarray]]:
        """``{"train": [...], "valid": [...]}`` (and ``"test"`` when asked)."""
