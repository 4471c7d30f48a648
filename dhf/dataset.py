"""Data sets on disk (HDF5) and the row sources the worker reads from.

File format (``format_version`` 1), one group per split::

    /train/inputs    (N, T, d) or (N, d)   float
    /train/targets   (N, ...)              float
    /train/mask      (N,) or (N, T)        optional, float weights (1 = counts)
    /valid/...       same datasets, same trailing shapes
    /test/...        optional
    attrs: format_version = 1, task = "<built-in task whose model fits>",
           task_params = JSON of the [task] keys used to generate it, seed

A rank never loads a whole file: :class:`H5Source` reads the rows it is asked for with
h5py slicing (rows sorted, as the sampler gives them).  :class:`ArraySource` is the
in-memory equivalent for data generated on the fly, :class:`FreshSource` generates each
update's rows when they are first read (``data.fresh``), and :class:`StackedSource` puts
the training and validation splits end to end in one row space.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dhf.data import FRESH_STRIDE
from dhf.errors import DataError

FORMAT_VERSION = 1
FIELDS = ("inputs", "targets", "mask")


class ArraySource:
    """Rows of in-memory arrays."""

    def __init__(self, arrays: Sequence[np.ndarray]):
        self.arrays = list(arrays)
        self.n_rows = len(self.arrays[0])

    def read(self, rows: np.ndarray,
             fields: Sequence[int] | None = None) -> list[np.ndarray]:
        """The arrays' ``rows`` (only the arrays at positions ``fields``, if given)."""
        arrays = self.arrays if fields is None else [self.arrays[i] for i in fields]
        return [a[rows] for a in arrays]


class H5Source:
    """Rows of one split of an HDF5 data set, read on demand."""

    def __init__(self, path: str | Path, split: str):
        import h5py

        self.path, self.split = Path(path), split
        self.file = open_h5(self.path)
        if split not in self.file:
            raise DataError(f"{self.path}: no /{split} group; expected /train and /valid")
        group = self.file[split]
        self.datasets = []
        for name in FIELDS:
            if name in group:
                self.datasets.append(group[name])
            elif name != "mask":
                raise DataError(f"{self.path}: dataset /{split}/{name} is missing")
        self.n_rows = len(self.datasets[0])
        for d in self.datasets:
            if not isinstance(d, h5py.Dataset) or d.dtype.kind not in "fiub":
                raise DataError(f"{self.path}: /{split}/{d.name.split('/')[-1]} must be a "
                                f"numeric dataset, got {getattr(d, 'dtype', type(d))}")
            if len(d) != self.n_rows:
                raise DataError(f"{self.path}: {d.name} has {len(d)} rows but "
                                f"{self.datasets[0].name} has {self.n_rows}")

    def read(self, rows: np.ndarray,
             fields: Sequence[int] | None = None) -> list[np.ndarray]:
        """The datasets' ``rows`` (only the datasets at positions ``fields``, if given)."""
        datasets = self.datasets if fields is None else [self.datasets[i] for i in fields]
        return self._read(datasets, np.asarray(rows, dtype=np.int64))

    def first_nonfinite_row(self, lo: int, hi: int, chunk: int = 4096) -> dict[str, int]:
        """``{dataset name: first row in [lo, hi) holding NaN or Inf}`` (absent if none)."""
        found = {}
        for d in self.datasets:
            for start in range(lo, hi, chunk):
                block, = self._read([d], np.arange(start, min(start + chunk, hi)))
                bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
                if bad.any():
                    found[d.name] = start + int(np.argmax(bad))
                    break
        return found

    def _read(self, datasets, rows: np.ndarray) -> list[np.ndarray]:
        """``rows`` (sorted) of ``datasets``: one slice when contiguous; damage is one
        line."""
        if len(rows) == 0:
            return [np.zeros((0,) + d.shape[1:], d.dtype) for d in datasets]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        try:
            if hi - lo == len(rows):
                return [d[lo:hi] for d in datasets]
            return [d[rows] for d in datasets]
        except OSError as err:  # a truncated or damaged file
            raise DataError(f"{self.path}: cannot read rows {lo}..{hi - 1} of "
                            f"/{self.split} ({str(err).split('(')[0].strip()})") from None


#: Generator keys end in a nonzero tag naming the split.  (numpy's SeedSequence reads
#: ``[a, b]`` and ``[a, b, 0]`` as the same seed, so keys have one length and no zero end.)
TRAIN_TAG, VALID_TAG, TEST_TAG = 1, 2, 3


def generate_blocks(generate: Callable, n: int, key: Sequence[int], block: int
                    ) -> list[np.ndarray]:
    """``n`` rows from ``generate(n_rows, rng, first_row)``: block ``b`` of ``block`` rows
    from ``default_rng([*key[:-1], b, key[-1]])`` (``key`` ends in its tag).  Generating a
    block at a time keeps the temporaries small: a 1-of-100 input at T = 200 is 16 MB in
    float64 per 100 rows, before it is stored as uint8."""
    parts = [generate(min(block, n - lo), np.random.default_rng([*key[:-1], b, key[-1]]),
                      lo)
             for b, lo in enumerate(range(0, n, block))]
    return [np.concatenate(cols) for cols in zip(*parts)]


class FreshSource:
    """Training rows that exist for one update only (Sutskever's release: every update
    draws new sequences and discards them after it).

    Row ``u · FRESH_STRIDE + i`` (:class:`dhf.data.FreshSampler`) is row ``i % block`` of
    block ``b = i // block`` of update ``u``, generated by ``generate(block,
    default_rng([data_seed, run_seed, u, b, TRAIN_TAG]), first_row=b · block)``: it depends
    on nothing but the seeds and its number, so every rank count and a resumed run see the
    same sequences, and each rank generates only the blocks its own rows fall in.  Blocks
    are kept until a read asks for another update's rows (an empty read, as the
    validation pass makes through :class:`StackedSource`, keeps them).
    """

    on_demand = True
    n_rows = FRESH_STRIDE * 2 ** 36  # updates 0 … 2³⁶ − 1

    def __init__(self, generate: Callable, data_seed: int, run_seed: int, block: int = 100):
        self.generate, self.block = generate, int(block)
        self.key = (int(data_seed), int(run_seed))
        self._blocks: dict[tuple[int, int], list[np.ndarray]] = {}
        self._empty: list[np.ndarray] | None = None  # zero-row arrays of each field

    def _get(self, update: int, b: int) -> list[np.ndarray]:
        if (update, b) not in self._blocks:
            rng = np.random.default_rng([*self.key, update, b, TRAIN_TAG])
            arrays = self.generate(self.block, rng, b * self.block)
            self._blocks[update, b] = arrays
            self._empty = [a[:0] for a in arrays]
        return self._blocks[update, b]

    def read(self, rows: np.ndarray, fields: Sequence[int] | None = None
             ) -> list[np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            if self._empty is None:
                self._get(0, 0)
            return [self._empty[f] for f in (range(len(self._empty)) if fields is None
                                             else fields)]
        update, index = np.divmod(rows, FRESH_STRIDE)
        blocks, within = np.divmod(index, self.block)
        wanted = set(np.unique(update).tolist())
        for key in [k for k in self._blocks if k[0] not in wanted]:
            del self._blocks[key]
        template = self._get(int(update[0]), int(blocks[0]))
        fields = range(len(template)) if fields is None else fields
        out = [np.empty((len(rows),) + template[f].shape[1:], template[f].dtype)
               for f in fields]
        keys = np.stack([update, blocks], axis=1)
        for u, b in np.unique(keys, axis=0):
            here = np.flatnonzero((update == u) & (blocks == b))
            arrays = self._get(int(u), int(b))
            for o, f in zip(out, fields):
                o[here] = arrays[f][within[here]]
        return out


def fresh_block(batch_sizes: Sequence[int], largest: int = 100) -> int:
    """The largest divisor of every batch size that is at most ``largest``: fresh rows are
    generated in blocks of it, so that every batch is made of whole blocks, and a block's
    classes are balanced (:func:`dhf.tasks.pathological.balanced_labels`)."""
    g = math.gcd(*[int(n) for n in batch_sizes if n])
    return max(d for d in range(1, min(g, largest) + 1) if g % d == 0)


def fingerprint(sources: Sequence, samples: int = 64) -> str:
    """A short hash of data sets: each field's row shape and dtype, the row count and the
    bytes of ``samples`` rows spread over the whole (the first and last among them), so
    that regenerated or edited data are told apart without reading all of it."""
    digest = hashlib.sha256()
    for source in sources:
        n = source.n_rows
        rows = np.unique(np.linspace(0, n - 1, min(samples, n)).astype(np.int64))
        digest.update(f"{n}".encode())
        for a in source.read(rows):
            a = np.ascontiguousarray(a)
            digest.update(f"{a.shape[1:]}{a.dtype.str}".encode())
            digest.update(a.view(np.uint8).tobytes())
    return digest.hexdigest()[:16]


def mask_lengths(mask: np.ndarray) -> np.ndarray:
    """Each row's length: one past its last nonzero entry of the ``(N, T)`` ``mask``
    (0 for a row with none)."""
    kept = np.asarray(mask) != 0
    return np.where(kept.any(axis=1), kept.shape[1] - np.argmax(kept[:, ::-1], axis=1), 0)


class StackedSource:
    """Several sources end to end: rows ``[0, n_0)`` are the first, and so on."""

    def __init__(self, sources: Sequence):
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [s.n_rows for s in self.sources])
        self.n_rows = int(self.offsets[-1])

    @property
    def on_demand(self) -> bool:
        """Some rows are generated when read (their lengths are not known in advance)."""
        return any(getattr(s, "on_demand", False) for s in self.sources)

    def read(self, rows: np.ndarray,
             fields: Sequence[int] | None = None) -> list[np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        parts = []
        for src, lo, hi in zip(self.sources, self.offsets[:-1], self.offsets[1:]):
            mine = rows[(rows >= lo) & (rows < hi)] - lo
            if len(mine) or not parts:
                parts.append(src.read(mine, fields))
        return ([np.concatenate(cols) for cols in zip(*parts)] if len(parts) > 1
                else parts[0])


def open_h5(path: Path):
    """Open an HDF5 file read-only with one-line errors for the usual failures."""
    import h5py

    if not path.exists():
        raise DataError(f"{path}: data file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file "
                        f"({str(err).split('(')[0].strip()})") from None
    version = f.attrs.get("format_version")
    if version is not None and int(version) > FORMAT_VERSION:
        raise DataError(f"{path}: data format version {int(version)} is newer than this "
                        f"dhf reads ({FORMAT_VERSION})")
    return f


def file_task(path: str | Path) -> tuple[str, dict]:
    """The task name and parameters a data file was generated with."""
    with open_h5(Path(path)) as f:
        if "task" not in f.attrs:
            raise DataError(f"{path}: attribute 'task' is missing; set it to the built-in "
                            "task whose model fits the data (e.g. 'memorization')")
        try:
            params = json.loads(f.attrs.get("task_params", "{}"))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: attribute 'task_params' is not JSON ({err})"
                            ) from None
        if not isinstance(params, dict):
            raise DataError(f"{path}: attribute 'task_params' must be a JSON object, "
                            f"got {params!r}")
        return str(f.attrs["task"]), params


def write(path: str | Path, splits: dict[str, list[np.ndarray]], *, task: str,
          task_params: dict, seed: int) -> None:
    """Write ``{"train": [inputs, targets(, mask)], ...}`` to ``path`` atomically."""
    from dhf.checkpoint import atomic_h5

    with atomic_h5(path) as f:
        for split, arrays in splits.items():
            group = f.create_group(split)
            for name, array in zip(FIELDS, arrays):
                group.create_dataset(name, data=array, chunks=True)
        f.attrs.update(format_version=FORMAT_VERSION, task=task,
                       task_params=json.dumps(task_params), seed=int(seed))
