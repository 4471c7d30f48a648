"""dhf: distributed Hessian-free optimisation with PyTensor and MPI.

Public API (imported lazily, so ``import dhf`` stays cheap)::

    dhf.train, dhf.TrainResult                        train your own graph
    dhf.ModelSpec, dhf.nets.rnn, dhf.nets.mlp       what to train
    dhf.gauss_newton_product                          the symbolic Gv
    dhf.pcg, dhf.update_damping                       the pure numerical core
    dhf.HFOptimizer, dhf.HFConfig, dhf.HFState        the HF loop
    dhf.nets, dhf.losses, dhf.tasks, dhf.reduction    modules, as the docs write them
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "train": "dhf.api",
    "TrainResult": "dhf.api",
    "ModelSpec": "dhf.model",
    "gauss_newton_product": "dhf.curvature",
    "pcg": "dhf.cg",
    "update_damping": "dhf.damping",
    "HFOptimizer": "dhf.coordinator",
    "HFConfig": "dhf.coordinator",
    "HFState": "dhf.coordinator",
    "Worker": "dhf.worker",
}

#: Submodules reachable as ``dhf.NAME`` without importing them first.
_SUBMODULES = ("nets", "model", "losses", "tasks", "reduction", "config", "curvature",
               "dataset", "checkpoint")

__all__ = list(_EXPORTS) + list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"dhf.{name}")
    raise AttributeError(f"module 'dhf' has no attribute {name!r}")
