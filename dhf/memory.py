"""How much memory a run needs per rank, estimated before anything is allocated, and
whether the machine has it.

The estimate adds what a rank holds at its peak, in an HF update's CG:

- ``base``: the process itself, Python with PyTensor, JAX and dhf loaded and compiled
  (:data:`BASE_BYTES`, measured: ``scripts/bench/memory_estimate.py``);
- ``data``: the rows it holds: a generated training set and the validation set whole
  (every rank has them), fresh rows only for its share of the update's batches, nothing
  of a data file but the chunk being read;
- ``states``: the forward states cached for Gv over its share of the curvature batch,
  sized by PyTensor's shape inference on the very graph the worker compiles (the part of
  the Gv graph that does not depend on v, :func:`dhf.curvature.cache.split_at`);
- ``work``: one chunk's Gv or gradient call in flight, taken as four times its cached
  states;
- ``cg``: CG's float64 vectors, the iterates kept for backtracking and the exact sums'
  bins, P values each.

:func:`check` refuses, in one line, a run whose estimate exceeds what a rank can have:
the machine's memory (or its cgroup's limit, which a Slurm job's is) shared by the ranks
on the node.  On three jobs from 450 MB to 1.5 GB the estimate was 0.84 to 1.06 times
the measured peak RSS (``scripts/bench/memory_estimate.py``, ``docs/benchmarks.md``).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from dhf import cg, tasks
from dhf.errors import ConfigError
from dhf.model import ModelSpec
from dhf.reduction import BINS
from dhf.worker import calls_of, chunk_size, chunks_per_call, chunks_per_rank

#: RSS of a rank before it holds data: Python, numpy, PyTensor, JAX, dhf and the
#: compiled functions (the peak RSS of a small job, scripts/bench/memory_estimate.py).
BASE_BYTES = 450 * 2**20
#: A chunk's call in flight (intermediates, the backend's buffers) over its cached states.
WORK_FACTOR = 4
#: CG's own vectors (x, r, p, z, Gv, g, the warm start, δ, θ and a spare), P float64 each.
CG_VECTORS = 10


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Peak bytes per rank, by part."""

    base: int
    data: int
    states: int
    work: int
    cg: int

    @property
    def total(self) -> int:
        return self.base + self.data + self.states + self.work + self.cg

    def describe(self) -> str:
        parts = ", ".join(f"{name} {format_bytes(getattr(self, name))}" for name in
                          ("data", "states", "work", "cg", "base"))
        return f"{format_bytes(self.total)} ({parts})"


def estimate(config: dict, spec: ModelSpec, sample: list[np.ndarray], n_train: int | None,
             n_valid: int, ranks: int, chunk_rows: int, *, whole: bool = False,
             looped: bool = False, from_file: bool = False) -> Estimate:
    """The peak memory of one of ``ranks`` ranks (the busiest) for ``config``'s batches
    on ``spec``, whose data rows look like ``sample`` (one row of each array);
    ``n_train`` None: fresh rows every update; ``whole`` and ``looped``: the chunk plan
    (:func:`dhf.worker.chunk_size`)."""
    opt = config["optimizer"]
    row_bytes = sum(a[:1].nbytes for a in sample)
    hf = opt["name"] == "hf"
    curvature = opt["curvature_batch"] if hf else 0
    if n_train is None:  # fresh rows: this rank's share of the update's batches
        batch = opt["gradient_batch"] if hf else opt["sgd_batch"]
        if hf and opt["held_out"]:
            batch += opt["backtrack_batch"] + opt["linesearch_batch"]
        held = -(-batch // ranks)
    else:
        held = 0 if from_file else n_train
    data = (held + (0 if from_file else n_valid)) * row_bytes
    states = work = 0
    if hf and curvature:
        size = chunk_size(curvature, chunk_rows, whole=whole, looped=looped)
        mine = max(chunks_per_rank(curvature, ranks, chunk_rows, whole=whole,
                                   looped=looped), key=sum)
        per_chunk = cached_state_bytes(spec, sample, size)
        # a looped call keeps its states in stacks of chunks_per_call chunks, its last
        # one padded; the states are linear in the rows
        per_call = per_chunk * (chunks_per_call(size, chunk_rows) if looped else 1)
        states = per_call * calls_of(mine, chunk_rows, looped)
        work = WORK_FACTOR * per_chunk
    P = sum(p.get_value(borrow=True).size for p in spec.params)
    kept = len(cg.storage_points(opt["cg_max_iters"])) + 1 if hf else 0
    cg_bytes = P * 8 * (CG_VECTORS + kept + 2 * (BINS + 1)) if hf else P * 8 * 6
    return Estimate(BASE_BYTES, int(data), int(states), int(work), int(cg_bytes))


def cached_state_bytes(spec: ModelSpec, sample: list[np.ndarray], rows: int) -> int:
    """Bytes of the forward states a chunk of ``rows`` rows caches for Gv: the shapes of
    the Gv graph's v-free part, inferred by PyTensor from the data's shapes alone (the
    data are zero-stride arrays: nothing the size of a chunk is allocated)."""
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.basic import Constant
    from pytensor.graph.fg import FunctionGraph
    from pytensor.graph.traversal import graph_inputs
    from pytensor.tensor.rewriting.shape import ShapeFeature

    from dhf.curvature.cache import split_at
    from dhf.worker import gv_graph

    Gv, v, weight = gv_graph(spec)
    frontier, _, _ = split_at([Gv], [v, weight])
    if not frontier:
        return 0
    inputs = [i for i in graph_inputs(frontier) if not isinstance(i, Constant)]
    shapes = ShapeFeature()
    graph = FunctionGraph(inputs, frontier, features=[shapes], clone=True)
    data = [graph.inputs[inputs.index(d)] for d in spec.data_vars if d in inputs]
    sizes = [np.dtype(f.dtype).itemsize
             * (pt.prod(pt.stack([pt.cast(d, "int64") for d in shapes.shape_of[f]]))
                if f.ndim else pt.constant(1, dtype="int64"))
             for f in graph.outputs]
    total = pytensor.function(data, pt.sum(pt.stack(sizes)), mode="FAST_COMPILE",
                              on_unused_input="ignore")
    fake = {d: np.broadcast_to(np.zeros((), d.dtype), (rows,) + a.shape[1:])
            for d, a in zip(spec.data_vars, sample)}
    return int(total(*[fake[d] for d in spec.data_vars if d in inputs]))


def sample_rows(config: dict) -> list[np.ndarray]:
    """One row of each data array of ``config``'s task (or of its data file)."""
    path = config["data"]["path"]
    if path:
        from dhf.dataset import H5Source

        return H5Source(path, "train").read(np.arange(1))
    task = tasks.get(config["task"]["name"])
    if isinstance(task, tasks.GeneratedTask):
        return task.generate(config["task"], 1, np.random.default_rng(0))
    return [a[:1] for a in tasks.generate_splits(config)["train"]]


def available_per_rank(ranks_on_node: int) -> int | None:
    """What one of ``ranks_on_node`` ranks can have: the machine's memory, or its cgroup's
    limit where lower (a Slurm job's), shared evenly; None where neither can be read."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max",
                 "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            limits.append(int(text))
    return min(limits) // max(1, ranks_on_node) if limits else None


def check(need: Estimate, ranks_on_node: int) -> None:
    """Refuse, in one line, a run that cannot fit: ``need`` per rank above what each of
    the node's ranks can have.  ``DHF_MEMORY_CHECK=0`` turns it off."""
    if os.environ.get("DHF_MEMORY_CHECK", "1") == "0":
        return
    have = available_per_rank(ranks_on_node)
    if have is not None and need.total > have:
        raise ConfigError(
            f"this run needs about {need.describe()} per rank, and each of the "
            f"{ranks_on_node} ranks on this machine can have {format_bytes(have)}: lower "
            "the batches or task.T, use more machines, or set DHF_MEMORY_CHECK=0 to try "
            "anyway")


def format_bytes(n: float) -> str:
    """``n`` bytes for a person: ``512 B``, ``3.2 MB``, ``41.0 GB``."""
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit != "MB" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
