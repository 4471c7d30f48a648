"""Portable parameter files: a run's parameters by name, in the model's order, with what a
program outside dhf needs to use them — the equations, which matrix multiplies what, and
the output nonlinearity.

``params.json``::

    {"dhf_params": 1,
     "model": {"task": ..., "T": ..., "loss": ..., "orientation": ..., "equations": [...],
               "output": ..., "config": {the run's [model] section},
               "shapes": {name: shape}},
     "params": {name: nested lists, in the model's parameter order}}

``params.npz`` holds the same arrays by name and the ``model`` object as JSON text in
the entry ``__model__``.
"""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import numpy as np

from dhf.errors import UserError

FORMAT = 1

ORIENTATION = ("row vectors, batch first: every layer computes x @ W + b with W of shape "
               "(inputs, outputs); sequences are (N, T, features)")

#: What the output s (the loss's argument) becomes as a prediction.
OUTPUT = {"squared_error": "y_hat = s",
          "sigmoid_xent": "y_hat = sigmoid(s)",
          "softmax_xent": "y_hat = softmax(s) over the last axis"}

#: Equations by parameter-name family (dhf.nets.rnn, dhf.nets.recurrent with tanh or
#: LSTM layers, dhf.nets.feedforward).
RNN = ["a_t = x_t @ W_in + h_{t-1} @ W_rec + b_h, with h_{-1} = h0",
       "h_t = tanh(a_t)",
       "s = h_{T-1} @ W_out + b_out  (the last step)"]
RECURRENT_TANH = ["layer k = 0, 1, ...: a^k_t = h^{k-1}_t @ W_in_k + b_k + h^k_{t-1} @ "
                  "W_rec_k, with h^{-1}_t = x_t and h^k_{-1} = h0_k",
                  "h^k_t = tanh(a^k_t)",
                  "s_t = h^K_t @ W_out + b_out  (every step; K the last layer)"]
RECURRENT_LSTM = ["layer k: z_t = h^{k-1}_t @ W_in_k + b_k + h^k_{t-1} @ W_rec_k, the "
                  "gates stacked [i, f, o, g] along the last axis (H each); "
                  "h^{-1}_t = x_t, h^k_{-1} = h0_k, c^k_{-1} = 0",
                  "i, f, o = sigmoid(z^i_t), sigmoid(z^f_t), sigmoid(z^o_t); "
                  "g = tanh(z^g_t)",
                  "c_t = f * c_{t-1} + i * g;  h^k_t = o * tanh(c_t)",
                  "s_t = h^K_t @ W_out + b_out  (every step; K the last layer)"]
FEEDFORWARD = ["layers j = 1, 2, ...: h_j = f(sum over i -> j of h_i @ W_i_j + b_j), "
               "with h_0 = x; f = the hidden nonlinearity (model.nonlinearity), the "
               "identity for the last layer, whose h is s"]


def equations(names: list[str], model: dict) -> list[str]:
    """The model's equations, told from its parameter names and ``[model]``."""
    if {"W_in", "W_rec", "b_h", "h0", "W_out", "b_out"} <= set(names):
        return RNN
    if any(re.fullmatch(r"W_rec_\d+", n) for n in names):
        return RECURRENT_LSTM if model.get("cell") == "lstm" else RECURRENT_TANH
    if all(re.fullmatch(r"W_\d+_\d+|b_\d+", n) for n in names):
        return FEEDFORWARD
    return ["see the task's model builder in dhf (its parameter names: "
            + ", ".join(names) + ")"]


def describe(run_dir: Path, params: dict[str, np.ndarray]) -> dict:
    """The ``model`` object of a run's export, from its ``config.toml``."""
    from dhf import tasks

    try:
        config = tomllib.loads((run_dir / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"{run_dir}/config.toml: cannot read the run's config ({err})"
                        ) from None
    from dhf import config as config_mod

    resolved = config_mod.load(None, base=config)
    spec = tasks.get(resolved["task"]["name"]).build_model(resolved)
    loss = spec.loss if isinstance(spec.loss, str) else "callable"
    return {"task": resolved["task"]["name"], "T": resolved["task"]["T"], "loss": loss,
            "orientation": ORIENTATION, "equations": equations(list(params),
                                                               resolved["model"]),
            "output": OUTPUT.get(loss, "see the loss"), "config": resolved["model"],
            "shapes": {name: list(value.shape) for name, value in params.items()}}


def write(path: Path, params: dict[str, np.ndarray], model: dict) -> None:
    """``params`` (in their order) and ``model`` to ``path`` (.npz or .json)."""
    if path.suffix == ".npz":
        np.savez(path, **params, __model__=np.array(json.dumps(model)))
    else:
        path.write_text(json.dumps({"dhf_params": FORMAT, "model": model,
                                    "params": {k: v.tolist() for k, v in params.items()}}))
