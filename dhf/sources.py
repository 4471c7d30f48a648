"""The rows a run trains and validates on: generated from ``[task]`` (once, or fresh for
every update) or read from the HDF5 file ``data.path``, whose task then sets ``[task]``.

A data file is checked on rank 0 before anything compiles (each split has a row for every
rank, its rows have the shape the task's model reads, the splits agree) and scanned for
NaN/Inf by every rank over its share; each problem is one line naming the file and row.
"""
from __future__ import annotations

import numpy as np

from dhf import dataset, tasks
from dhf.comm import Communicator, on_every_rank, on_root
from dhf.data import shard_bounds
from dhf.dataset import ArraySource, FreshSource, fresh_block
from dhf.errors import ConfigError, DataError


def load_data(config: dict, comm: Communicator):
    """The training and validation row sources: generated from ``[task]`` or read from the
    HDF5 file ``data.path`` (whose task then sets ``[task]``), checked for every rank."""
    path = config["data"]["path"]
    if config["data"]["fresh"]:
        task_cfg, task = config["task"], tasks.get(config["task"]["name"])
        if not isinstance(task, tasks.GeneratedTask):
            raise ConfigError(f"data.fresh = true needs a task that generates its data; "
                              f"task {task_cfg['name']!r} has a fixed data set")
        opt = config["optimizer"]
        sizes = ([opt["sgd_batch"]] if opt["name"] != "hf" else
                 [opt[f"{b}_batch"] for b in ("gradient", "curvature", "backtrack",
                                              "linesearch")])
        train = FreshSource(lambda n, rng, first_row: task.generate(task_cfg, n, rng,
                                                                    first_row),
                            task_cfg["seed"], config["run"]["seed"],
                            block=fresh_block(sizes))
        return train, ArraySource(tasks.generate_splits(config, train=False)["valid"])
    if not path:
        splits = tasks.generate_splits(config)
        return ArraySource(splits["train"]), ArraySource(splits["valid"])
    name, params = on_root(comm, lambda: _inspect_file(path, config["task"], comm.size))
    config["task"].update({"name": name, **{k: v for k, v in params.items()
                                            if k in config["task"] and k != "name"}})
    train, valid = dataset.H5Source(path, "train"), dataset.H5Source(path, "valid")
    _check_finite(path, (train, valid), comm)
    return train, valid


def _inspect_file(path: str, task_cfg: dict, n_ranks: int) -> tuple[str, dict]:
    """The data file's task and parameters, after checking (once, on rank 0) that it
    opens, that each split has a row for every rank and that its rows fit the task."""
    name, params = dataset.file_task(path)
    task_cfg = {**task_cfg, "name": name, **{k: v for k, v in params.items()
                                             if k in task_cfg and k != "name"}}
    sources = dataset.H5Source(path, "train"), dataset.H5Source(path, "valid")
    for src in sources:
        if src.n_rows < n_ranks:
            raise DataError(f"{path}: /{src.split} has {src.n_rows} rows, fewer than the "
                            f"{n_ranks} ranks")
    _check_shapes(path, task_cfg, "T" in params, sources)
    return name, params


def _check_shapes(path, task_cfg: dict, file_says_T: bool, sources) -> None:
    """Before anything compiles: each dataset's rows have the shape the task's model reads,
    a row the task generates (its width always; its length too when the file's
    ``task_params`` state T), and the splits agree with each other."""
    task = tasks.get(task_cfg["name"])
    if not isinstance(task, tasks.GeneratedTask):
        return
    try:
        want = [a.shape[1:] for a in task.generate(task_cfg, 1, np.random.default_rng(0))]
    except ValueError as err:
        raise DataError(f"{path}: task_params {task_cfg} do not describe a "
                        f"{task_cfg['name']} data set ({err})") from None
    first = sources[0]
    for src in sources:
        for d, base, shape in zip(src.datasets, first.datasets, want):
            found = d.shape[1:]
            if len(found) != len(shape) or found[-1:] != shape[-1:] or (
                    file_says_T and found != shape):
                where = f" with T = {task_cfg['T']}" if file_says_T else ""
                wanted = shape if file_says_T else str(
                    tuple(["T"] * (len(shape) - 1) + [shape[-1]])).replace("'", "")
                raise DataError(f"{path}: {d.name} has rows of shape {found}; task "
                                f"{task_cfg['name']}{where} reads rows of shape {wanted}")
            if found != base.shape[1:]:
                raise DataError(f"{path}: {d.name} has rows of shape {found} but "
                                f"{base.name} has {base.shape[1:]}; the splits must agree "
                                "(pad shorter sequences, with a zero mask)")


def _check_finite(path, sources, comm: Communicator) -> None:
    """Every rank scans its share of the rows; all learn the first NaN/Inf row of each
    dataset (one Allreduce: each rank fills its own slot)."""
    names = [d.name for src in sources for d in src.datasets]
    slots = np.zeros((len(names), comm.size))
    k = 0
    for src in sources:
        lo, hi = shard_bounds(src.n_rows, comm.rank, comm.size)
        bad = src.first_nonfinite_row(lo, hi)
        for d in src.datasets:
            slots[k, comm.rank] = bad.get(d.name, -1) + 1  # 0 = clean
            k += 1
    slots = comm.allreduce_sum(slots.ravel()).reshape(slots.shape)
    for name, row in zip(names, slots):
        found = row[row > 0]
        if found.size:
            raise on_every_rank(DataError(f"{path}: {name} row {int(found.min()) - 1} "
                                          "holds NaN or Inf"))


def training_rows(config: dict) -> int | None:
    """What ``--dry-run`` needs of the data without generating it: ``[task]`` updated from
    ``data.path``'s own task, and the number of training rows (None: fresh data; a fixed
    data set such as MNIST is read to count them)."""
    if config["data"]["fresh"]:
        return None
    path = config["data"]["path"]
    if not path and isinstance(tasks.get(config["task"]["name"]), tasks.GeneratedTask):
        return config["task"]["n_train"]
    if not path:  # a fixed data set (digits, MNIST): as many rows as its files give
        return ArraySource(tasks.generate_splits(config)["train"]).n_rows
    name, params = _inspect_file(path, config["task"], 1)
    config["task"].update({"name": name, **{k: v for k, v in params.items()
                                            if k in config["task"] and k != "name"}})
    return dataset.H5Source(path, "train").n_rows
