"""HDF5 checkpoints: versioned, complete, written atomically by rank 0.

Layout (format version 1)::

    /theta, /best_theta                     float64 datasets
    /<array field of the optimiser state>   HF: /cg_init; SGD: /velocity; Adam:
                                            /first_moment, /second_moment
    attrs: format_version, optimizer ("hf", "sgd" or "adam"), the state's scalar fields
           (HF: damping, update; SGD, Adam: update), best_valid_error, best_update,
           config (the resolved TOML), param_names, param_shapes (JSON lists),
           data_fingerprint (of a data file or arrays; empty for generated data)

``best.h5`` (:func:`save_params`) holds the best parameters by name, ``/params/<name>``,
for export and for use outside dhf.

The file is written to ``<path>.tmp``, flushed and fsynced, then renamed over ``path``,
so a crash at any moment leaves either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from dhf.errors import CheckpointError
from dhf.layout import ParamLayout

FORMAT_VERSION = 1


def save(path: str | Path, *, state: dict, optimizer: str, best_theta,
         best_valid_error: float, best_update: int, config_toml: str,
         layout: ParamLayout, data_fingerprint: str = "") -> None:
    """Atomically write a checkpoint (call on rank 0 only).

    ``data_fingerprint`` (:func:`dhf.dataset.fingerprint`) names the training data, so
    that a resume on other data can be refused.

    ``state`` holds the optimiser's state by field name (``dataclasses.asdict`` of
    :class:`~dhf.coordinator.HFState`, :class:`~dhf.sgd.SGDState` or
    :class:`~dhf.sgd.AdamState`): arrays become datasets, scalars attributes.
    """
    with atomic_h5(path) as f:
        for name, value in state.items():
            if np.ndim(value):
                f.create_dataset(name, data=np.asarray(value, np.float64))
            else:
                f.attrs[name] = value
        f.create_dataset("best_theta", data=np.asarray(best_theta, np.float64))
        f.attrs.update(format_version=FORMAT_VERSION, optimizer=optimizer,
                       best_valid_error=float(best_valid_error),
                       best_update=int(best_update), config=config_toml,
                       param_names=json.dumps(layout.names),
                       param_shapes=json.dumps(layout.shapes),
                       data_fingerprint=data_fingerprint)


def save_params(path: str | Path, layout: ParamLayout, theta: np.ndarray, **attrs) -> None:
    """Atomically write parameters by name (``/params/<name>``) with ``attrs``."""
    with atomic_h5(path) as f:
        group = f.create_group("params")
        for name, value in layout.as_dict(theta).items():
            group.create_dataset(name, data=value)
        f.attrs.update(format_version=FORMAT_VERSION, param_names=json.dumps(layout.names),
                       **attrs)


def read_params(path: str | Path) -> dict[str, np.ndarray]:
    """Parameters by name from ``best.h5`` (``/params``) or a checkpoint (``/theta``)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "params" in f:  # in the model's order (HDF5 lists names alphabetically)
                names = json.loads(f.attrs.get("param_names", "null")) or list(f["params"])
                return {name: f["params"][name][()] for name in names}
            layout = ParamLayout(json.loads(f.attrs["param_names"]),
                                 json.loads(f.attrs["param_shapes"]))
            return layout.as_dict(f["theta"][()])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (OSError, KeyError) as err:
        raise CheckpointError(
            f"{path}: not a readable dhf parameter file ({err})") from None


@contextlib.contextmanager
def atomic_h5(path: str | Path):
    """An HDF5 file written to ``<path>.tmp``, fsynced, then renamed over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        yield f
        f.flush()
        os.fsync(f.id.get_vfd_handle())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def data_fingerprint(path: str | Path) -> str:
    """The fingerprint of the data the checkpoint's run trained on ("" if none)."""
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("data_fingerprint", ""))
    except OSError as err:
        raise CheckpointError(f"{path}: not a readable dhf checkpoint ({err})") from None


def load(path: str | Path, *, layout: ParamLayout, optimizer: str = "hf") -> dict:
    """Read a checkpoint: every dataset and attribute by name.  One from another model,
    another optimiser or a newer format is refused."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            version = int(f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION or version < 1:
                raise CheckpointError(f"{path}: checkpoint format version {version}; this "
                                      f"dhf reads version {FORMAT_VERSION}")
            state = {name: d[()] for name, d in f.items()}
            state.update(f.attrs)
            saved_names = json.loads(f.attrs["param_names"])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint to resume from") from None
    except (OSError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable dhf checkpoint ({err})") from None
    saved_optimizer = state.get("optimizer", "hf")
    if saved_optimizer != optimizer:
        raise CheckpointError(f"{path}: checkpoint was written by optimizer.name = "
                              f"{saved_optimizer!r}, this run uses {optimizer!r}")
    if saved_names != layout.names or state["theta"].size != layout.size:
        raise CheckpointError(f"{path}: checkpoint is for parameters {saved_names} "
                              f"({state['theta'].size} values), but the model has "
                              f"{layout.names} ({layout.size} values)")
    return state
