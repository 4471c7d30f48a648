"""Built-in problems: each generates its data and builds the model that fits it.

A task has a ``name``, ``defaults`` (recommended settings by config section, applied
under the user's file and ``--set``), ``build_model(config) -> ModelSpec`` and either
``generate(params, n, rng) -> [inputs, targets, (mask)]`` (rows first; a fresh draw per
split) or ``splits(params, test) -> {"train": [...], "valid": [...]}`` for a fixed data
set.  ``TASKS`` maps the names ``task.name`` accepts to them.  Nothing here imports
PyTensor: models are built on demand.

======================================  =================================================
memorization                            theano-hf's 1-bit memorisation (the default job)
addition, multiplication, xor,          Martens & Sutskever (2011)'s pathological
temporal_order_2bit, _3bit,             long-range problems, as Sutskever's released
random_permutation,                     code defines them (:mod:`dhf.tasks.pathological`)
noiseless_memorization_5bit, _20bit
ff_xor, ff_xor_xent, integrator,        the ``hessianfree`` package's demos
adding, plant                           (:mod:`dhf.tasks.demos`, :mod:`dhf.tasks.plant`)
digits, digits_autoencoder              scikit-learn's handwritten digits
======================================  =================================================
"""
from __future__ import annotations

import numpy as np

from dhf.errors import ConfigError
from dhf.tasks import demos, digits, memorization, pathological, plant
from dhf.tasks.problem import ProblemTask

#: Martens & Sutskever's settings (reference/distributed_anchors.md §2.2, Sutskever's
#: ``opt/r/demo.py``): 100 tanh units, sparse init with input weights × 0.25, gradient on
#: 10000 sequences, curvature on 1000, up to 300 CG steps, μ = 0.03, and λ₀ = 0.01 × the
#: number of outputs their code counts per sequence.
_PATHOLOGICAL = {
    "model": {"hidden": 100, "cell": "tanh", "init": "sparse", "init_scale": 1.0,
              "input_scale": 0.25},
    "optimizer": {"gradient_batch": 10000, "curvature_batch": 1000,
                  "backtrack_batch": 1000, "cg_max_iters": 300, "structural_damping": 0.03},
    "task": {"n_train": 20000, "n_valid": 1000},
    "run": {"stop_valid_error": 0.001},
}
_INIT_DAMPING = {"addition": 0.01, "multiplication": 0.01, "xor": 0.01,
                 "temporal_order_2bit": 0.08, "temporal_order_3bit": 0.08,
                 "random_permutation": 2.0, "noiseless_memorization_5bit": 20.0,
                 "noiseless_memorization_20bit": 100.0}


def _with(base: dict, **sections) -> dict:
    """``base`` with some sections' keys replaced."""
    return {sec: {**base.get(sec, {}), **sections.get(sec, {})}
            for sec in set(base) | set(sections)}


def _pathological(problem) -> ProblemTask:
    return ProblemTask(problem, _with(_PATHOLOGICAL, optimizer={
        "init_damping": _INIT_DAMPING[problem.name]}))


_SMALL_BATCHES = {"gradient_batch": 1000, "curvature_batch": 1000, "backtrack_batch": 500,
                  "cg_max_iters": 100}
_DEMOS = {
    # hessianfree demos.xor: FFNet([2, 5, 1]), logistic.
    "ff_xor": {"model": {"hidden": 5, "nonlinearity": "logistic", "init": "gaussian",
                         "init_scale": 1.0},
               "task": {"n_train": 400, "n_valid": 100},
               "optimizer": {"gradient_batch": 100, "curvature_batch": 100,
                             "backtrack_batch": 100, "cg_max_iters": 50,
                             "init_damping": 0.1}},
    # hessianfree demos.integrator: RNNet([1, 10, 1]); the cell here is tanh.
    "integrator": {"model": {"hidden": 10, "init": "gaussian", "init_scale": 1.0},
                   "task": {"n_train": 2000, "n_valid": 200},
                   "optimizer": {**_SMALL_BATCHES, "structural_damping": 0.03,
                                 "init_damping": 0.1}},
    # hessianfree demos.adding: T = 50, batches of 1024, 60 CG steps.
    "adding": {"model": {"hidden": 32, "init": "sparse", "init_scale": 1.0,
                         "input_scale": 0.25},
               "task": {"n_train": 9000, "n_valid": 1000},
               "optimizer": {"gradient_batch": 1024, "curvature_batch": 1024,
                             "backtrack_batch": 1024, "cg_max_iters": 60,
                             "structural_damping": 0.03, "init_damping": 1.0}},
}
_DEMOS["ff_xor_xent"] = _DEMOS["ff_xor"]

_DIGITS = {"model": {"hidden": 64, "init": "gaussian", "init_scale": 1.0},
           "task": {"n_train": 1497, "n_valid": 150},
           "optimizer": {"gradient_batch": 1000, "curvature_batch": 300,
                         "backtrack_batch": 300, "cg_max_iters": 100, "init_damping": 1.0},
           "run": {"stop_valid_error": -1.0}}

TASKS = {
    "memorization": memorization,
    **{name: _pathological(p) for name, p in pathological.PROBLEMS.items()},
    **{name: ProblemTask(p, _DEMOS[name]) for name, p in demos.PROBLEMS.items()},
    "plant": plant,
    "digits": digits.DigitsTask("digits", False, _DIGITS,
                                "classify 8x8 handwritten digits (scikit-learn)"),
    "digits_autoencoder": digits.DigitsTask(
        "digits_autoencoder", True,
        _with(_DIGITS, model={"hidden": 32, "nonlinearity": "logistic"}),
        "reconstruct 8x8 handwritten digits through a narrow code"),
}


def get(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"task.name = {name!r} is unknown; expected one of "
                          f"{', '.join(sorted(TASKS))}") from None


def defaults(name: str) -> dict:
    """The task's recommended settings by section (empty for an unknown name: the
    config's validation reports that)."""
    task = TASKS.get(name)
    return getattr(task, "defaults", {}) if task is not None else {}


def generate_splits(config: dict, test: bool = False) -> dict[str, list[np.ndarray]]:
    """``{"train": [inputs, targets, ...], "valid": [...]}`` for the configured task, and a
    ``"test"`` split of ``n_valid`` rows when asked."""
    task_cfg = config["task"]
    task = get(task_cfg["name"])
    if hasattr(task, "splits"):
        return task.splits(task_cfg, test)
    rng = np.random.default_rng(task_cfg["seed"])
    splits = {"train": task.generate(task_cfg, task_cfg["n_train"], rng),
              "valid": task.generate(task_cfg, task_cfg["n_valid"], rng)}
    if test:
        splits["test"] = task.generate(task_cfg, task_cfg["n_valid"], rng)
    return splits
