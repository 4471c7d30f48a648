"""Every config key, declared once: its default, its one-line description (what
``dhf-train --help`` and ``docs/config.md`` show), its range and its choices.

Plain data, below everything that reads it: :mod:`dhf.config` validates TOML and
``--set`` against it; :class:`~dhf.coordinator.HFConfig` and :class:`~dhf.sgd.SGDConfig`
take their defaults from it, so an optimiser built in code behaves as ``dhf-train`` does.
"""
from __future__ import annotations

from typing import Any

from dhf.damping import MAX_DAMPING, MIN_DAMPING

#: Every key, its default and a one-line description (shown by ``dhf-train --help``).
SCHEMA: dict[str, dict[str, tuple[Any, str]]] = {
    "task": {
        "name": ("memorization", "built-in problem to generate (see dhf.tasks.TASKS)"),
        "T": (20, "sequence length"),
        "n_train": (20000, "training sequences"),
        "n_valid": (1000, "validation sequences"),
        "seed": (1234, "seed of the generated data set"),
    },
    "data": {
        "path": ("", "HDF5 data set (from dhf-data) to train on instead of generating "
                     "[task]"),
        "fresh": (False, "generate new training sequences for every update (never reused; "
                         "task.n_train unused) instead of a fixed training set"),
    },
    "model": {
        "hidden": (100, "hidden units per layer"),
        "layers": (1, "hidden layers"),
        "cell": ("tanh", "recurrent cell: tanh or lstm"),
        "nonlinearity": ("tanh", "feed-forward hidden units: tanh, logistic, relu, "
                                 "softplus, linear"),
        "init": ("uniform", "weight init: sparse, gaussian, uniform, orthogonal "
                            "(see dhf.nets.init)"),
        "init_scale": (0.2, "memorization: weights U(-s, s); other tasks: a gain on "
                            "model.init's fan-in scale"),
        "input_scale": (1.0, "multiplier on the input weights (Sutskever: 0.25)"),
        "spectral_radius": (0.0, "rescale recurrent matrices to this (0: leave)"),
        "code": (8, "digits_autoencoder: code units"),
        "h0_scale": (0.0, "recurrent nets: learned initial states h0 start N(0, s^2) "
                          "(0: zeros; Sutskever's code: 1/sqrt(15))"),
        "loss_average": ("sequence", "masked recurrent tasks: the objective averages over "
                                     "sequences or over outputs (each sequence's terms "
                                     "over its number of targets, as Sutskever's release)"),
    },
    "optimizer": {
        "name": ("hf", "optimiser: hf (Hessian-free), sgd or adam (first-order baselines)"),
        "max_updates": (100, "updates in the whole run, resumed ones included"),
        "gradient_batch": (5000, "sequences per gradient (global, over all ranks)"),
        "curvature_batch": (1000, "sequences per Gv product, a subset of the gradient "
                                  "batch"),
        "backtrack_batch": (1000, "sequences for CG backtracking (and the line search when "
                                  "linesearch_batch = 0)"),
        "linesearch_batch": (0, "sequences for the line search, disjoint from the others "
                                "(0: search on the backtracking batch)"),
        "held_out": (True, "backtracking and line-search sequences are disjoint from the "
                           "gradient batch (false: rows of it, as Sutskever's code)"),
        "cg_min_iters": (1, "minimum CG iterations per update"),
        "cg_max_iters": (250, "maximum CG iterations per update"),
        "cg_tol": (5e-4, "Martens' relative-progress tolerance epsilon"),
        "cg_decay": (0.95, "CG warm start: this times the previous solution"),
        "init_damping": (0.5, "initial Tikhonov damping lambda"),
        "min_damping": (MIN_DAMPING, "lower bound on lambda"),
        "max_damping": (MAX_DAMPING, "upper bound on lambda"),
        "structural_damping": (1.0, "mu: structural damping weight relative to lambda"),
        "preconditioner": (False, "Martens' diagonal preconditioner"),
        "structural_d": ("paper", "structural damping's D for tanh units: paper (1 - h^2) "
                                  "or release (0.25 (1 - h^2), Sutskever's code)"),
        "rho_model": ("undamped", "rho's denominator: the undamped quadratic model "
                                  "(Martens 2010) or the damped one (Sutskever's code)"),
        "backtrack": ("martens", "CG backtracking: martens (iterates at 1.3^j, walk back) "
                                 "or release (every 10th iterate and the last, best one)"),
        "linesearch_c": (0.01, "Armijo constant c of the line search (0: any decrease, "
                               "as Sutskever's code)"),
        "boost_on_reject": (True, "a rejected line search raises lambda whatever rho says "
                                  "(false: lambda follows rho alone, as Sutskever's code)"),
        "l2": (0.0, "L2 weight cost: l2/2 times the squared norm of theta, on the loss, "
                    "gradient and curvature"),
        "learning_rate": (0.01, "sgd, adam: step size epsilon"),
        "momentum": (0.9, "sgd: momentum mu"),
        "nesterov": (False, "sgd: Nesterov's momentum (Sutskever et al. 2013)"),
        "clip_norm": (0.0, "sgd, adam: rescale gradients to at most this norm (0: off)"),
        "sgd_batch": (100, "sgd, adam: rows per minibatch (global, over all ranks)"),
        "sgd_steps": (100, "sgd, adam: minibatch steps per update (per metrics row)"),
        "adam_beta1": (0.9, "adam: decay of the gradient's running mean"),
        "adam_beta2": (0.999, "adam: decay of the squared gradient's running mean"),
        "adam_epsilon": (1e-8, "adam: added to the root mean square"),
    },
    "run": {
        "seed": (0, "seed of the model initialisation and the batch sampler"),
        "out": ("", "output directory (default: runs/<task>-<time>)"),
        "backend": ("numba", "PyTensor backend: numba, c, jax or default"),
        "dtype": ("float64", "model arithmetic: float64 or float32 (CG is float64)"),
        "checkpoint_every": (1, "updates between checkpoints (0: only at the end)"),
        "valid_every": (1, "updates between validation passes"),
        "stop_valid_error": (0.0, "stop once validation error <= this (-1: never)"),
        "patience": (0, "stop after this many updates without a better validation "
                        "error (0: never); best.h5 keeps the best parameters"),
        "max_minutes": (0.0, "stop cleanly, with a checkpoint, after this many minutes "
                             "of wall time (0: no limit); --resume continues, with no "
                             "limit unless given again"),
        "check_replicas_every": (10, "updates between checks that θ is equal on all ranks"),
    },
}

RANGES = {
    ("task", "T"): (1, None), ("task", "n_train"): (1, None),
    ("task", "n_valid"): (1, None),
    ("model", "hidden"): (1, None), ("model", "init_scale"): (0.0, None),
    ("model", "layers"): (1, None), ("model", "input_scale"): (0.0, None),
    ("model", "spectral_radius"): (0.0, None), ("model", "code"): (1, None),
    ("model", "h0_scale"): (0.0, None),
    ("optimizer", "max_updates"): (0, None), ("optimizer", "gradient_batch"): (1, None),
    ("optimizer", "curvature_batch"): (1, None),
    ("optimizer", "backtrack_batch"): (1, None),
    ("optimizer", "cg_min_iters"): (0, None), ("optimizer", "cg_max_iters"): (1, None),
    ("optimizer", "cg_tol"): (0.0, None), ("optimizer", "cg_decay"): (0.0, 1.0),
    ("optimizer", "init_damping"): (0.0, None), ("optimizer", "min_damping"): (0.0, None),
    ("optimizer", "max_damping"): (0.0, None),
    ("optimizer", "structural_damping"): (0.0, None),
    ("optimizer", "learning_rate"): (0.0, None), ("optimizer", "momentum"): (0.0, 1.0),
    ("optimizer", "clip_norm"): (0.0, None), ("optimizer", "sgd_batch"): (1, None),
    ("optimizer", "sgd_steps"): (1, None), ("optimizer", "linesearch_batch"): (0, None),
    ("optimizer", "linesearch_c"): (0.0, 1.0), ("optimizer", "l2"): (0.0, None),
    ("optimizer", "adam_beta1"): (0.0, 1.0), ("optimizer", "adam_beta2"): (0.0, 1.0),
    ("optimizer", "adam_epsilon"): (0.0, None),
    ("run", "checkpoint_every"): (0, None), ("run", "valid_every"): (1, None),
    ("run", "check_replicas_every"): (0, None), ("run", "max_minutes"): (0.0, None),
    ("run", "patience"): (0, None),
}
CHOICES = {
    ("model", "cell"): ("tanh", "lstm"),
    ("model", "nonlinearity"): ("tanh", "logistic", "relu", "softplus", "linear"),
    ("model", "init"): ("sparse", "gaussian", "uniform", "orthogonal"),
    ("optimizer", "name"): ("hf", "sgd", "adam"),
    ("optimizer", "structural_d"): ("paper", "release"),
    ("optimizer", "rho_model"): ("undamped", "damped"),
    ("optimizer", "backtrack"): ("martens", "release"),
    ("model", "loss_average"): ("sequence", "output"),
    ("run", "backend"): ("numba", "c", "jax", "default"),
    ("run", "dtype"): ("float64", "float32"),
}


def default(section: str, key: str):
    """One key's default."""
    return SCHEMA[section][key][0]
