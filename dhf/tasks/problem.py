"""A :class:`~dhf.tasks.pathological.Problem` (a numpy generator) with the model that fits
it: the bridge between the benchmark definitions and ``dhf-train``.

Recurrent problems get :func:`dhf.nets.recurrent` with a linear readout at every step and
the problem's mask, so a variable-length sequence's loss, gradient, Gv and structural
damping see only its own steps; feed-forward ones get :func:`dhf.nets.feedforward`.  The
model's width, cell and initialisation come from ``[model]``, its loss and success
criterion from the problem.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dhf.errors import ConfigError
from dhf.tasks.pathological import Problem


class ProblemTask:
    """``dhf-train --set task.name=NAME`` for one problem.

    ``defaults`` are the problem's recommended settings, by config section; they sit
    between dhf's defaults and the user's file and ``--set`` (see :func:`dhf.config.load`).
    """

    def __init__(self, problem: Problem, defaults: dict):
        self.problem, self.name = problem, problem.name
        self.defaults = {**defaults,
                         "task": {"T": problem.default_T, **defaults.get("task", {})}}
        self.__doc__ = problem.doc

    def check(self, params: dict) -> None:
        """Refuse, in one line, a ``[task]`` the generator cannot lay out."""
        if params["T"] < self.problem.min_T:
            raise ConfigError(f"task.T = {params['T']} is too small for {self.name}: "
                              f"must be >= {self.problem.min_T}")

    def generate(self, params: dict, n: int, rng: np.random.Generator, first_row: int = 0
                 ) -> list[np.ndarray]:
        """``[x, y, mask]`` (feed-forward problems: ``[x, y]``), 0/1 arrays as uint8.

        ``first_row`` is the global index of the first row: a problem with balanced
        classes balances them over consecutive rows, across calls (fresh data).
        """
        extra = {"first_row": first_row} if self.problem.balanced_classes else {}
        arrays = self.problem.generate(params["T"], n, rng, **extra)
        if not self.problem.recurrent:
            arrays = arrays[:2]
        return [compact(a) for a in arrays]

    def build_model(self, config: dict):
        from dhf import nets

        p, model, run = self.problem, config["model"], config["run"]
        common = dict(loss=p.loss, init=model["init"], init_scale=model["init_scale"],
                      seed=run["seed"], dtype=run["dtype"])
        if p.recurrent:
            spec = nets.recurrent(
                p.n_in, [model["hidden"]] * model["layers"], p.n_out, cell=model["cell"],
                output_steps="all", mask=True, input_scale=model["input_scale"],
                spectral_radius=model["spectral_radius"] or None,
                loss_average=model["loss_average"], h0_scale=model["h0_scale"], **common)
        else:
            sizes = [p.n_in] + [model["hidden"]] * model["layers"] + [p.n_out]
            spec = nets.feedforward(sizes, nonlinearities=model["nonlinearity"], **common)
        error = last_step_error(p.error) if p.error_last_step_only else p.error
        return dataclasses.replace(spec, error=error, error_tolerance=p.tolerance)


def last_step_error(kind: str):
    """An error callable that judges only the last step (random permutation: the loss
    counts every step, success only the last)."""
    def error(s, y):
        import pytensor.tensor as pt

        from dhf.losses import element_errors

        wrong = element_errors(kind, s, y)  # (N, T)
        return wrong * pt.eq(pt.arange(wrong.shape[1]), wrong.shape[1] - 1)
    return error


def compact(a: np.ndarray) -> np.ndarray:
    """``a`` as uint8 when it holds only 0 and 1 (one-hot symbols, masks): 8× less memory
    per rank; the worker casts each chunk to the model's dtype as it reads it."""
    if a.dtype.kind == "f" and np.all((a == 0) | (a == 1)):
        return a.astype(np.uint8)
    return a
