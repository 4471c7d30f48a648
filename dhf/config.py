"""The run configuration: TOML sections ``[task]``/``[data]``, ``[model]``, ``[optimizer]``,
``[run]``, every key with a default, validated before any rank starts work.

A config is a plain nested dict (``config["optimizer"]["cg_max_iters"]``) resolved from
defaults, then a TOML file, then ``--set SECTION.KEY=VALUE`` overrides, in that order.
Unknown keys are errors that suggest the closest valid key; values are type- and
range-checked with messages that name the key.
"""
from __future__ import annotations

import copy
import difflib
import math
import tomllib
from pathlib import Path
from typing import Any

from dhf.damping import MAX_DAMPING, MIN_DAMPING
from dhf.errors import ConfigError

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

_RANGES = {
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
_CHOICES = {
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
    """One key's default: the one declaration that optimisers built in code
    (:class:`~dhf.coordinator.HFConfig`, :class:`~dhf.sgd.SGDConfig`) share with
    ``dhf-train``."""
    return SCHEMA[section][key][0]


def defaults() -> dict:
    """A fresh config holding every default."""
    return {sec: {k: v for k, (v, _) in keys.items()} for sec, keys in SCHEMA.items()}


def load(path: str | Path | None = None, overrides: list[str] = (),
         base: dict | None = None) -> dict:
    """Defaults (or ``base``), then the chosen task's recommended settings, then the TOML
    file at ``path``, then ``--set`` overrides, in that order.

    A task's recommendations may depend on the sequence length (Sutskever's λ₀ grows with
    the number of outputs, T of them for random permutation): they are taken at the
    ``task.T`` the whole config ends with.
    """
    values = read_toml(path) if path is not None else {}
    if base is not None:
        config = copy.deepcopy(base)
    else:
        config = defaults()
        name = _task_name(values, overrides, str(path))
        probe = defaults()
        merge(probe, _task_defaults(name), source=f"task {name!r} defaults")
        T = _apply_user_values(probe, values, overrides, str(path))["task"]["T"]
        merge(config, _task_defaults(name, T), source=f"task {name!r} defaults")
    _apply_user_values(config, values, overrides, str(path))
    validate(config)
    return config


def _apply_user_values(config: dict, values: dict, overrides, source: str) -> dict:
    """``config`` with the file's ``values``, then the ``--set`` overrides, applied."""
    merge(config, values, source=source)
    for item in overrides:
        apply_override(config, item)
    return config


def _task_name(values: dict, overrides, source: str) -> str:
    """The task the file and overrides choose (a data file's own task if they name one)."""
    probe = _apply_user_values(defaults(), values, overrides, source)
    if probe["data"]["path"]:
        from dhf.dataset import file_task

        try:
            return file_task(probe["data"]["path"])[0]
        except Exception:  # a bad file is reported, in one line, when it is loaded
            return probe["task"]["name"]
    return probe["task"]["name"]


def _task_defaults(name: str, T: int | None = None) -> dict:
    from dhf import tasks

    return tasks.defaults(name, T)


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None


def merge(config: dict, values: dict, *, source: str) -> None:
    """Set ``values`` (nested dict from TOML) into ``config``, checking every key."""
    for section, keys in values.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]"
                              f"{_suggest(section, SCHEMA)}")
        if not isinstance(keys, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of keys")
        for key, value in keys.items():
            config[section][key] = _coerce(section, key, value, source)


def apply_override(config: dict, item: str) -> None:
    """Apply one ``SECTION.KEY=VALUE``; VALUE is read as TOML (falls back to a string)."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, "
                          "e.g. --set optimizer.cg_max_iters=300")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    if section not in SCHEMA:
        raise ConfigError(f"--set {name}: unknown section {section!r}"
                          f"{_suggest(section, SCHEMA)}")
    config[section][key] = _coerce(section, key, value, "--set")


def _coerce(section: str, key: str, value: Any, source: str) -> Any:
    if key not in SCHEMA[section]:
        valid = {f"{section}.{k}": None for k in SCHEMA[section]}
        raise ConfigError(f"{source}: unknown key {section}.{key}"
                          f"{_suggest(f'{section}.{key}', valid)}")
    default = SCHEMA[section][key][0]
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not expected:
        raise ConfigError(f"{source}: {section}.{key} must be {expected.__name__}, "
                          f"got {value!r}")
    return value


def validate(config: dict) -> None:
    """Range and consistency checks that need the whole config."""
    for (section, key), (lo, hi) in _RANGES.items():
        value = config[section][key]
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{key} = {value!r} must be finite")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{section}.{key} = {value!r} is out of range; "
                              f"must be {span}")
    for (section, key), choices in _CHOICES.items():
        if config[section][key] not in choices:
            raise ConfigError(f"{section}.{key} = {config[section][key]!r}; expected one "
                              f"of {', '.join(choices)}")
    if config["data"]["fresh"] and config["data"]["path"]:
        raise ConfigError(f"data.fresh = true generates the training data; it cannot read "
                          f"data.path = {config['data']['path']!r} (set one of them)")
    opt = config["optimizer"]
    if opt["curvature_batch"] > opt["gradient_batch"]:
        raise ConfigError(f"optimizer.curvature_batch = {opt['curvature_batch']} "
                          f"must be <= optimizer.gradient_batch = {opt['gradient_batch']} "
                          "(it is a subset)")
    if opt["cg_min_iters"] > opt["cg_max_iters"]:
        raise ConfigError(f"optimizer.cg_min_iters = {opt['cg_min_iters']} must be <= "
                          f"optimizer.cg_max_iters = {opt['cg_max_iters']}")
    if not opt["min_damping"] <= opt["init_damping"] <= opt["max_damping"]:
        raise ConfigError("optimizer.init_damping must lie in [optimizer.min_damping, "
                          "optimizer.max_damping]")
    from dhf import tasks

    tasks.check(config)


def to_toml(config: dict) -> str:
    """The resolved config as TOML text (what ``config.toml`` in a run directory holds)."""
    lines = []
    for section, keys in config.items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else f"; valid: {', '.join(valid)}"
