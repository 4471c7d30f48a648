"""theano-hf's memorisation problem: recall the first bit after T steps of noise.

Each sequence is T random bits, one per step (``x`` of shape ``(N, T, 1)``); the target is
the first bit, read out after the last step through a sigmoid with cross-entropy
(``hf_examples.example_RNN``, Boulanger-Lewandowski 2012).  Chance is 50 % error; the
problem is solved when no validation sequence is recalled wrongly.  theano-hf ran it at
T = 100 with 100 tanh units: "launch it on 4 cores, come back in 8 hours".
"""
from __future__ import annotations

import numpy as np

name = "memorization"
#: The global defaults of dhf.config are this task's settings.
defaults: dict = {}


def generate(params: dict, n: int, rng: np.random.Generator, first_row: int = 0
             ) -> list[np.ndarray]:
    """``[x (n, T, 1), y (n, 1)]`` with ``y = x[:, 0]`` (rows are independent draws:
    ``first_row`` is not needed)."""
    x = rng.integers(0, 2, size=(n, params["T"], 1)).astype(np.float64)
    return [x, x[:, 0, :].copy()]


def build_model(config: dict):
    """theano-hf's net (one tanh layer, weights U(-init_scale, init_scale), explicit fast
    Gv) unless ``[model]`` asks for another cell, depth or init."""
    from dhf import nets

    m, run = config["model"], config["run"]
    if (m["cell"] == "tanh" and m["layers"] == 1 and m["init"] == "uniform"
            and m["input_scale"] == 1.0 and not m["spectral_radius"]):
        return nets.rnn(1, m["hidden"], 1, loss="sigmoid_xent", output_steps="last",
                        init_scale=m["init_scale"], seed=run["seed"], dtype=run["dtype"])
    return nets.recurrent(1, [m["hidden"]] * m["layers"], 1, cell=m["cell"],
                          output_steps="last", loss="sigmoid_xent", init=m["init"],
                          init_scale=m["init_scale"], input_scale=m["input_scale"],
                          spectral_radius=m["spectral_radius"] or None, seed=run["seed"],
                          dtype=run["dtype"])
