"""scikit-learn's handwritten digits (1797 8×8 images, UCI; Alpaydin & Kaynak 1998): a
real data set that ships inside the scikit-learn wheel, so it needs no download.

``digits``: classify the 64 pixel intensities (scaled to [0, 1]) into 10 classes with a
feed-forward net and softmax cross-entropy.  ``digits_autoencoder``: reconstruct them
through a narrow code, Martens (2010)'s deep-autoencoder recipe in miniature: logistic
hidden units, a linear code layer, sigmoid cross-entropy on the pixels; an image counts
as wrong when its mean squared reconstruction error exceeds ``RECONSTRUCTION_TOLERANCE``.

The split is fixed by ``task.seed``: a permutation of the 1797 rows, the first
``n_valid`` for validation, the next ``n_valid`` for test, the rest (at most ``n_train``)
for training.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dhf.errors import UserError

N_ROWS, N_PIXELS, N_CLASSES = 1797, 64, 10
#: Mean squared pixel error above which a reconstruction counts as wrong.
RECONSTRUCTION_TOLERANCE = 0.01


def load() -> tuple[np.ndarray, np.ndarray]:
    """Pixels in [0, 1] ``(1797, 64)`` and labels ``(1797,)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("task digits needs scikit-learn: pip install 'dhf[digits]' "
                        "(or pip install scikit-learn)") from None
    data = load_digits()
    return data.data / 16.0, data.target


class DigitsTask:
    def __init__(self, name: str, autoencoder: bool, defaults: dict, doc: str):
        self.name, self.autoencoder, self.defaults, self.__doc__ = (
            name, autoencoder, defaults, doc)

    def splits(self, params: dict, test: bool = False) -> dict[str, list[np.ndarray]]:
        pixels, labels = load()
        n_valid = params["n_valid"]
        if 2 * n_valid >= N_ROWS:
            raise UserError(f"task.n_valid = {n_valid}: digits has {N_ROWS} rows, and "
                            "validation and test take n_valid each; use at most "
                            f"{N_ROWS // 2 - 1}")
        order = np.random.default_rng(params["seed"]).permutation(N_ROWS)
        parts = {"valid": order[:n_valid], "test": order[n_valid:2 * n_valid],
                 "train": order[2 * n_valid:][:params["n_train"]]}
        targets = pixels if self.autoencoder else np.eye(N_CLASSES)[labels]
        return {name: [pixels[rows], targets[rows]] for name, rows in parts.items()
                if name != "test" or test}

    def build_model(self, config: dict):
        from dhf import nets

        model, run = config["model"], config["run"]
        h = model["hidden"]
        if self.autoencoder:
            sizes = [N_PIXELS, h, model["code"], h, N_PIXELS]
            nonlinearities = [model["nonlinearity"], "linear", model["nonlinearity"],
                              "linear"]
            loss = "sigmoid_xent"
        else:
            sizes = [N_PIXELS] + [h] * model["layers"] + [N_CLASSES]
            nonlinearities, loss = model["nonlinearity"], "softmax_xent"
        spec = nets.feedforward(sizes, nonlinearities=nonlinearities, loss=loss,
                                init=model["init"], init_scale=model["init_scale"],
                                seed=run["seed"], dtype=run["dtype"])
        if self.autoencoder:
            spec = dataclasses.replace(spec, error=reconstruction_error)
        return spec


def reconstruction_error(s, y):
    """1 where the mean squared error of ``sigmoid(s)`` against the pixels exceeds
    :data:`RECONSTRUCTION_TOLERANCE` (one value per image)."""
    import pytensor.tensor as pt

    return pt.gt(pt.mean(pt.sqr(pt.sigmoid(s) - y), axis=-1), RECONSTRUCTION_TOLERANCE)
