"""theano-hf's memorisation problem: recall the first bit after T steps of noise.

Each sequence is T random bits, one per step (``x`` of shape ``(N, T, 1)``); the target is
the first bit, read out after the last step through a sigmoid with cross-entropy
(``hf_examples.example_RNN``, Boulanger-Lewandowski 2012).  Chance is 50 % error; the
problem is solved when no validation sequence is recalled wrongly.  theano-hf ran it at
T = 100 with 100 tanh units: "launch it on 4 cores, come back in 8 hours".
"""
from __future__ import annotations

import numpy as np

from dhf import model


def generate(params: dict, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``[x (n, T, 1), y (n, 1)]`` with ``y = x[:, 0]``."""
    x = rng.integers(0, 2, size=(n, params["T"], 1)).astype(np.float64)
    return [x, x[:, 0, :].copy()]


def build_model(config: dict) -> model.ModelSpec:
    return model.rnn(1, config["model"]["hidden"], 1, loss="sigmoid_xent",
                     output_steps="last", init_scale=config["model"]["init_scale"],
                     seed=config["run"]["seed"], dtype=config["run"]["dtype"])
