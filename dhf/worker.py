"""The compute of one rank: compiled loss, gradient and Gv over its rows of the data.

A :class:`Worker` knows PyTensor and the arrays it was handed; it knows nothing of MPI.
Every method returns *sums and counts* over the rows it is asked for, packed in one
float64 vector, so the coordinator can Allreduce them in one call and divide by the
global count (never a mean of means).

Functions are compiled once, in ``__init__``.  The Gv product is compiled as a function
of the forward pass's states (:mod:`dhf.curvature.cache`): :meth:`prepare_curvature`
runs the forward pass once per update, and each :meth:`gv_sum` of the CG iterations that
follow reuses it.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Iterator

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import grad

from dhf import reduction
from dhf.reduction import Parts
from dhf.curvature import model_gauss_newton_product
from dhf.curvature.cache import split_at
from dhf.curvature.preconditioner import covers, dense_squared_grads
from dhf.curvature.tanh_recurrence import register_jax
from dhf.data import shard_bounds
from dhf.dataset import ArraySource, mask_lengths
from dhf.errors import DataError
from dhf.layout import ParamLayout
from dhf.static_shapes import StaticShapeFunction
from dhf.model import ModelSpec

logger = logging.getLogger(__name__)

#: The fewest chunks a batch is cut into (:meth:`Worker.plan`), enough to deal to 16
#: ranks, and the fewest rows in a chunk that this leaves.
MIN_CHUNKS = 16
MIN_CHUNK_ROWS = 16
#: Rows per compiled call, at most, on a CPU (``run.chunk_rows = 0``): 64 for
#: sequences, whose (T, rows, H) states then stay in L2; 256 for sequences in looped
#: calls (:func:`loops_chunks`), each chunk of ~16 rows computed in turn inside the call
#: (``docs/benchmarks.md``, "Fine chunks, several a call"); 512 for feed-forward nets,
#: whose every chunk returns all P of its gradient or Gv (2.8 M values for the MNIST
#: autoencoder) and whose weight gradients are GEMMs as deep as a chunk's rows.
CPU_CHUNK_ROWS = {"sequences": 64, "looped": 256, "feedforward": 512}
#: Rows per chunk, at most, on a GPU (``run.chunk_rows = 0``).  A GPU computes a chunk of
#: a few thousand rows in about the time of one of a few hundred, and every chunk costs
#: a round trip to the host (its P sums split exactly there, :mod:`dhf.reduction`;
#: ``docs/benchmarks.md``, "One GPU").  So on a GPU each batch is cut into as few chunks as
#: its ranks can share (:func:`chunk_size`'s ``ranks``), of at most this many rows.
GPU_CHUNK_ROWS = 16384
#: A looped call (:func:`loops_chunks`) returns each of its chunks' sums apart: at most
#: this many float64 values a call (32 MB), so that the MNIST autoencoder's 2.8 M
#: parameters keep one chunk a call.
LOOP_MAX_VALUES = 2 ** 22


def loops_chunks(jax: bool, chunk_rows: int, n_params: int, gpu: bool = False) -> bool:
    """Does a worker cut its batches into chunks of :data:`MIN_CHUNK_ROWS` rows (about)
    and compute several of them per compiled call, a loop inside the call
    (:meth:`dhf.static_shapes.StaticShapeFunction.loop`)?

    With every function under JAX on a CPU, where a call holds ``chunk_rows`` rows or
    more and the chunks' sums fit :data:`LOOP_MAX_VALUES`.  Each chunk's sums then have
    the bits of a call on that chunk alone, whatever call it falls in, so that a batch
    can be cut into chunks fine enough for ``rows / 16`` ranks (the plan follows the
    batch, never the rank count: :mod:`dhf.reduction`) while each rank still makes calls
    of ``chunk_rows`` rows: the default job's 1 000-row curvature batch is 100 chunks of
    10 rows, enough for 100 ranks, computed in calls of 25 at one rank.
    """
    most = chunks_per_call(MIN_CHUNK_ROWS // 2, chunk_rows)  # of the smallest chunks
    return (jax and not gpu and chunk_rows >= 2 * MIN_CHUNK_ROWS
            and n_params * most <= LOOP_MAX_VALUES)


def chunks_per_call(chunk: int, chunk_rows: int) -> int:
    """Chunks of ``chunk`` rows a looped call holds: ``chunk_rows`` rows, about."""
    return max(1, chunk_rows // max(chunk, 1))


def chunk_size(n_rows: int, chunk_rows: int = 64, *, whole: bool = False,
               ranks: int = 0, looped: bool = False) -> int:
    """Rows per chunk of an ``n_rows`` batch (:meth:`Worker.plan`): ``chunk_rows`` at
    most, and fewer for a small batch so that it has :data:`MIN_CHUNKS` chunks, but not
    fewer than a quarter of ``chunk_rows`` (nor :data:`MIN_CHUNK_ROWS`): below that a
    call costs more than its rows, and a batch that small is not one for 16 ranks.

    ``ranks`` (a GPU run's rank count; 0 on CPUs) cuts the batch instead into as few
    chunks as ``ranks`` can share, one each where ``chunk_rows`` allows (and none under
    :data:`MIN_CHUNK_ROWS` rows): a GPU's call costs about the same for any rows up to
    thousands (:data:`GPU_CHUNK_ROWS`).  The chunks then depend on the number of ranks
    unless ``chunk_rows`` is at most ``n_rows / ranks``.

    ``whole`` prefers, among the sizes from half that least one (or
    :data:`MIN_CHUNK_ROWS`) up, the largest that divides the batch, so that all its
    chunks have one shape (the JAX backend compiles once per shape): 10 000 and 1 000
    rows both go in chunks of 50, the autoencoder's 375 in chunks of 125; with
    ``ranks``, only one that gives no rank another call.

    ``looped`` (:func:`loops_chunks`): :data:`MIN_CHUNK_ROWS`, or the largest size down
    to half that which divides the batch (1 000 rows: 10, 10 000: 16, 375: 15).
    """
    if looped:
        return next((c for c in range(MIN_CHUNK_ROWS, MIN_CHUNK_ROWS // 2 - 1, -1)
                     if n_rows % c == 0), MIN_CHUNK_ROWS)
    if ranks:
        size = least = min(chunk_rows, max(MIN_CHUNK_ROWS, _ceil_div(n_rows, ranks)))
    else:
        least = min(chunk_rows, max(MIN_CHUNK_ROWS, chunk_rows // 4))
        size = min(chunk_rows, max(least, _ceil_div(n_rows, MIN_CHUNKS)))
    if whole:
        lowest = max(MIN_CHUNK_ROWS, least // 2)
        calls = _busiest_calls(n_rows, size, ranks)
        size = next((c for c in range(size, lowest - 1, -1) if n_rows % c == 0
                     and _busiest_calls(n_rows, c, ranks) == calls), size)
    return size


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _busiest_calls(n_rows: int, size: int, ranks: int) -> int:
    """Chunks of ``size`` rows the busiest of ``ranks`` computes (0 for CPUs, whose
    chunk sizes do not follow the rank count)."""
    return _ceil_div(_ceil_div(n_rows, size), ranks) if ranks else 0


def chunks_per_rank(n_rows: int, size: int, chunk_rows: int = 64, *,
                    whole: bool = False, gpu: bool = False, looped: bool = False
                    ) -> list[list[int]]:
    """The rows of each chunk each of ``size`` ranks computes (with rows sorted by length
    the short last chunk may fall to another rank): what a batch's plan gives every
    rank, worked out without starting them."""
    c = chunk_size(n_rows, chunk_rows, whole=whole, ranks=size if gpu else 0,
                   looped=looped)
    chunks = [min(c, n_rows - lo) for lo in range(0, n_rows, c)]
    return [chunks[slice(*shard_bounds(len(chunks), r, size))] for r in range(size)]


def calls_of(chunks: list[int], chunk_rows: int, looped: bool = False) -> int:
    """Compiled calls that compute a rank's ``chunks`` (their row counts, in order): one
    a chunk, or with ``looped`` one per run of up to :func:`chunks_per_call` chunks of
    one size."""
    if not looped:
        return len(chunks)
    return sum(_ceil_div(len(list(run)), chunks_per_call(rows, chunk_rows))
               for rows, run in itertools.groupby(chunks))


def rows_per_rank(n_rows: int, size: int, chunk_rows: int = 64, *,
                  whole: bool = False, gpu: bool = False, looped: bool = False
                  ) -> list[int]:
    """How many of a batch's rows each of ``size`` ranks computes
    (:func:`chunks_per_rank`)."""
    return [sum(c) for c in chunks_per_rank(n_rows, size, chunk_rows, whole=whole,
                                            gpu=gpu, looped=looped)]


class Chunks(list):
    """Arrays of global row indices, one per chunk: a batch's plan (:meth:`Worker.plan`)
    or one rank's share of it (:meth:`Worker.shard`)."""


@dataclasses.dataclass(frozen=True)
class CurvatureBatch:
    """What an update's Gv products are taken at (:meth:`Worker.curvature_chunks`): θ
    (and, under JAX, its arrays as the compiled functions take them), and each call's
    chunk count (1, or a looped call's) and arguments to the compiled Gv (its data and,
    with ``cache_forward``, the forward pass's states; on the device, under JAX)."""

    theta: np.ndarray
    chunk_args: list
    param_values: list | None = None
    counts: list | None = None


class Worker:
    """Loss, gradient, Gv and squared-gradient sums over rows of ``data``.

    Parameters
    ----------
    spec : the model.
    data : arrays aligned with ``spec.data_vars`` (inputs, targets, mask), rows first, or
        a row source with ``read(rows) -> arrays`` (:mod:`dhf.dataset`: an HDF5 file is
        read a chunk of rows at a time, never whole).
    mode : a PyTensor compilation mode (``"NUMBA"``, ``"C"``, ``"JAX"``...) or None for
        PyTensor's default.
    gv_mode : the mode of the Gv function alone, when it differs from ``mode``: JAX's
        gradient with the explicit recurrences' Numba kernels, on request
        (``run.gv_backend = "numba"``, :func:`dhf.backends.modes`).
    cache_forward : compile Gv against cached forward states (the fast path).
    explicit_gv : use the model's explicit Gv recurrences (``spec.gauss_newton``) when it
        has them; False forces the generic pushforward/pullback graph.
    chunk_rows : rows per compiled call; sums over a batch are accumulated chunk by chunk
        (under JAX on a CPU, of several chunks a call: :func:`loops_chunks`).
    gpu_ranks : on a GPU, the number of ranks, among which each batch is cut into as few
        chunks as they can share (:func:`chunk_size`); 0 on CPUs.
    """

    def __init__(self, spec: ModelSpec, data, *, mode=None, gv_mode=None,
                 cache_forward: bool = True, explicit_gv: bool = True,
                 chunk_rows: int = 64, gpu_ranks: int = 0):
        self.spec = spec
        self.source = data if hasattr(data, "read") else ArraySource(data)
        self.layout = ParamLayout(spec.param_names,
                                  [p.get_value(borrow=True).shape for p in spec.params])
        self.dtype = spec.params[0].dtype
        self.mode = mode
        self.gv_mode = mode if gv_mode is None else gv_mode
        self.cache_forward = cache_forward
        self.chunk_rows = int(chunk_rows)
        self.gpu_ranks = int(gpu_ranks)
        self.jax = _is_jax(mode)
        #: Every function under JAX: the curvature batch's data, its forward states, θ
        #: and v stay where JAX computes (a GPU); only each chunk's Gv comes to the host.
        self.on_device = self.jax and _is_jax(self.gv_mode)
        #: Several chunks per compiled call, each one's sums kept apart
        #: (:func:`loops_chunks`).
        self.looped = loops_chunks(self.on_device, self.chunk_rows, self.layout.size,
                                   gpu=bool(self.gpu_ranks))
        #: The parameters' values as the JAX functions take them (:meth:`set_theta`).
        self._param_values = [p.get_value(borrow=True) for p in spec.params]
        self.explicit_gv = explicit_gv and spec.gauss_newton is not None
        if _is_jax(self.gv_mode) and self.explicit_gv:
            register_jax()  # the explicit recurrences as jax.lax.scan loops
        # Trimming a chunk to its longest row saves the padded steps, but under JAX each
        # new length is a new compilation (dhf.static_shapes): JAX runs the padded steps.
        self.trim_padding = spec.trim_padding and not self.jax
        #: θ and the curvature batch of the Gv products (:meth:`curvature_chunks`).
        self.curvature: CurvatureBatch | None = None
        # Row lengths, for trimming padding: read once from the mask, or, for rows that
        # are generated when read (fresh data), from each batch's own mask.
        self.on_demand = getattr(self.source, "on_demand", False)
        self.lengths = (_row_lengths(self.source, spec)
                        if self.trim_padding and not self.on_demand else None)
        t0 = time.perf_counter()
        self._compile()
        #: Seconds spent building the compiled functions; their machine code (Numba's
        #: JIT) is made on first call, which :meth:`warm_up` adds.
        self.compile_seconds = time.perf_counter() - t0
        logger.debug("built worker functions in %.1fs", self.compile_seconds)

    # -- compilation ---------------------------------------------------------------
    def _function(self, inputs, outputs, mode="same", on_device=False, looped=0,
                  summed=False):
        """``inputs`` -> ``outputs`` compiled; under JAX per chunk shape, its first
        ``looped`` inputs stacks of chunks in :meth:`_calls`' looped calls, whose outputs
        are, with ``summed``, the chunks' exact parts added up."""
        mode = self.mode if mode == "same" else mode
        if _is_jax(mode):  # compiled per chunk shape, so that JAX sees no traced shapes
            return StaticShapeFunction(inputs, outputs, mode, params=self.spec.params,
                                       param_values=lambda: self._param_values,
                                       on_device=on_device, looped=looped,
                                       summed=summed, on_unused_input="ignore",
                                       accept_inplace=True)
        return pytensor.function(inputs, outputs, mode=mode, on_unused_input="ignore",
                                 accept_inplace=True)

    def _compile(self):
        spec, data_vars = self.spec, self.spec.data_vars
        losses = spec.example_losses()
        loss_sum = pt.sum(losses).astype("float64")
        errors = spec.example_errors()
        error_sum = (pt.sum(errors) if errors is not None
                     else pt.constant(0.0)).astype("float64")
        n = len(data_vars)
        self._eval_fn = self._function(data_vars, pt.stack([loss_sum, error_sum]),
                                       looped=n, summed=True)

        g = grad(pt.sum(losses), spec.params)
        self._grad_fn = self._function(data_vars, _flat(g + [loss_sum]), looped=n,
                                       summed=True)

        Gv, v, weight = gv_graph(spec, self.explicit_gv)
        #: Squared per-example gradients from one backward pass (``spec.dense``); that
        #: function is compiled when the preconditioner first asks for it.
        self.batched_squared_grads = covers(spec.dense, spec.params)
        self._sq_grad_fn = None
        if self.cache_forward:
            frontier, placeholders, (Gv_cached,) = split_at([Gv], [v, weight])
            self._forward_fn = self._function(data_vars, frontier + [loss_sum],
                                              on_device=self.on_device, looped=n)
            self._gv_fn = self._function(data_vars + placeholders + [v, weight], Gv_cached,
                                         self.gv_mode, looped=n + len(placeholders),
                                         summed=True)
        else:
            self._forward_fn = self._function(data_vars, [loss_sum], looped=n)
            self._gv_fn = self._function(data_vars + [v, weight], Gv, self.gv_mode,
                                         looped=n, summed=True)

    def warm_up(self, theta: np.ndarray, *, curvature: bool = True,
                batches: dict | None = None) -> float:
        """Call each compiled function once per chunk shape it will see, so that the
        backend's code is generated (or loaded from its cache) now rather than inside the
        first update (and the exact sums' loops, :func:`dhf.reduction.warm_up`); returns
        the seconds it took, which are added to :attr:`compile_seconds`.

        Numba compiles once per array layout: a chunk of two rows does for every size
        (not one row: the states of a one-row chunk are contiguous where those of every
        larger chunk are not).  JAX compiles once per shape: each function runs on every
        chunk size of the batches it will be given, ``batches`` = ``{"loss": [rows,
        ...], "grad": [...], "curvature": [...]}`` (a full chunk when not given).  A row
        of the wrong shape fails here, before any update.  ``curvature=False`` skips the
        forward-states and Gv functions (first-order optimisers).
        """
        t0 = time.perf_counter()
        kinds = ("loss", "grad", "curvature")
        n = self.source.n_rows
        if self.jax:
            batches = batches or {}
            sizes = {kind: sorted({len(c) for b in batches.get(kind, ())
                                   for c in self.plan(np.arange(min(b, n)))})
                     or [min(self.chunk_rows, n)] for kind in kinds}
        else:
            sizes = dict.fromkeys(kinds, [min(2, n)])
        one_chunk = {kind: [Chunks([np.arange(rows)]) for rows in sizes[kind]]
                     for kind in kinds}
        for chunks in one_chunk["loss"]:
            self.loss_sum(theta, chunks)
        for chunks in one_chunk["grad"]:
            self.grad_sum(theta, chunks)
        if curvature:
            for chunks in one_chunk["curvature"]:
                self.prepare_curvature(theta, chunks)
                self.gv_sum(np.zeros(self.layout.size))
            self.curvature = None
        reduction.warm_up()
        seconds = time.perf_counter() - t0
        self.compile_seconds += seconds
        return seconds

    # -- parameters ----------------------------------------------------------------
    def set_theta(self, theta: np.ndarray) -> None:
        """Load flat float64 parameters into the model's shared variables, and under JAX
        into the arrays its functions take as inputs (placed on the device once here).

        Done on every call (microseconds): the shared variables may have been changed by
        the caller, or by another worker built on the same model.
        """
        values = self.layout.unflatten(theta, self.dtype)
        for p, value in zip(self.spec.params, values):
            p.set_value(value, borrow=False)
        if self.jax:
            self._param_values = self._place(values)

    def _place(self, arrays: list) -> list:
        """``arrays`` where the JAX functions compute (the GPU) for an all-JAX worker;
        as they are otherwise."""
        if not self.on_device:
            return arrays
        import jax
        import pytensor.link.jax.dispatch  # noqa: F401  (float64 on, as for its functions)

        return [jax.device_put(a) for a in arrays]

    def _read(self, rows) -> list[np.ndarray]:
        arrays = self.source.read(rows)
        if len(arrays) < len(self.spec.data_vars):
            raise DataError(f"the model needs {len(self.spec.data_vars)} data arrays "
                            "(inputs, targets"
                            f"{', mask' if self.spec.mask is not None else ''})"
                            f", the data has {len(arrays)}")
        return [np.asarray(a, dtype=v.dtype) for a, v in zip(arrays, self.spec.data_vars)]

    def chunk_data(self, chunks):
        """The data of each chunk of rows (:meth:`plan`), cut, when padding is trimmed,
        to the chunk's longest row, so padded steps cost nothing.  The lengths are the
        ones read once at start-up, or, for rows generated when read, the chunk's own
        mask's."""
        for chunk in chunks:
            data = self._read(chunk)
            if self.trim_padding and len(chunk):
                lengths = (self.lengths[chunk] if self.lengths is not None else
                           mask_lengths(data[self.spec.data_vars.index(self.spec.mask)]))
                steps = int(lengths.max())
                # Contiguous, as an untrimmed chunk is: Numba compiles a function once
                # per array layout, and the warm-up's rows are contiguous.
                data = [np.ascontiguousarray(a[:, :steps]) if a.ndim >= 2 and v.ndim >= 2
                        else a for a, v in zip(data, self.spec.data_vars)]
            yield data

    def plan(self, rows) -> Chunks:
        """``rows`` cut into the batch's **global chunks**: on CPUs the same chunks, in the
        same order, whatever the number of ranks, so that each chunk's sum has the same
        bits wherever it is computed (:mod:`dhf.reduction`).

        Chunks hold at most ``chunk_rows`` rows, and fewer for small batches, so that a
        batch has at least ``MIN_CHUNKS`` of them to deal to ranks (but not fewer than
        ``MIN_CHUNK_ROWS``, below which a compiled call costs more than its rows); on a
        GPU, as few as ``gpu_ranks`` can share; under JAX, of a size that divides the
        batch where one does, and of about ``MIN_CHUNK_ROWS`` where several go in a call
        (:func:`chunk_size`, :func:`loops_chunks`).  When
        padding is trimmed and the row lengths are known, the rows go shortest first, so
        that each chunk holds rows of about one length; rows generated when read (fresh
        data) keep their order (their lengths are known only once generated), and each
        chunk is still cut to its own longest row.  :class:`Chunks` are a plan already.
        """
        if isinstance(rows, Chunks):
            return rows
        rows = np.asarray(rows, dtype=np.int64)
        if self.lengths is not None:
            rows = rows[np.argsort(self.lengths[rows], kind="stable")]
        size = chunk_size(len(rows), self.chunk_rows, whole=self.jax,
                          ranks=self.gpu_ranks, looped=self.looped)
        chunks = Chunks(rows[lo:lo + size] for lo in range(0, len(rows), size))
        if self.jax and len(chunks) > 1 and len(chunks[-1]) == 1:
            # a static dimension of 1 is a broadcastable one to PyTensor, which a scan's
            # outputs then contradict: under JAX the last row joins the chunk before
            chunks[-2:] = [np.concatenate(chunks[-2:])]
        return chunks

    def shard(self, rows, rank: int, size: int) -> Chunks:
        """Rank ``rank``'s chunks of the global ``rows`` (:meth:`plan`).  Sorted by
        length, the chunks are dealt in turn, so that every rank gets as many steps to
        compute as the others and they reach each Allreduce together; otherwise each
        rank takes a contiguous run of them, so that with fresh data no rank generates
        another's rows (their lengths are independent draws, and a few hundred of them
        hold as many steps as another few hundred to within a fraction of a percent)."""
        chunks = self.plan(rows)
        if self.lengths is not None:
            return Chunks(chunks[rank::size])
        lo, hi = shard_bounds(len(chunks), rank, size)
        return Chunks(chunks[lo:hi])

    # -- sums per chunk (what the coordinator adds exactly, :mod:`dhf.reduction`) -------
    def _calls(self, chunks) -> Iterator[tuple[list, list]]:
        """``(chunks, arguments)`` of each compiled call over ``chunks``: one chunk and
        its data, or, looped, a run of up to :func:`chunks_per_call` chunks of one size
        and their data stacked, zero-padded to that many (:meth:`_function`)."""
        if not self.looped:
            for chunk, data in zip(chunks, self.chunk_data(chunks)):
                yield [chunk], data
            return
        for rows, run in itertools.groupby(chunks, key=len):
            run, per_call = list(run), chunks_per_call(rows, self.chunk_rows)
            for lo in range(0, len(run), per_call):
                call = run[lo:lo + per_call]
                data = self._read(np.concatenate(call))
                yield call, [_stacked(a, per_call, rows) for a in data]

    def _sums(self, fn, chunks) -> Iterator[np.ndarray | Parts]:
        """``fn``'s output vector on each chunk with the chunk's row count appended; or,
        looped, on each call's chunks, their exact parts added up on the device
        (:class:`dhf.reduction.Parts`, the same bits once added to an
        :class:`~dhf.reduction.ExactSum`)."""
        for call, data in self._calls(chunks):
            if self.looped:
                yield _with_rows(fn.loop(len(call), *data), call)
            else:
                yield np.append(fn(*data), len(call[0]))

    def loss_chunks(self, theta: np.ndarray, rows) -> Iterator[np.ndarray | Parts]:
        """``[Σ loss, Σ errors, count]`` of each chunk of ``rows`` at ``theta`` (or of a
        looped call's chunks, as their exact :class:`~dhf.reduction.Parts`)."""
        self.set_theta(theta)
        yield from self._sums(self._eval_fn, self.plan(rows))

    def grad_chunks(self, theta: np.ndarray, rows) -> Iterator[np.ndarray | Parts]:
        """``[Σ ∇loss (P values), Σ loss, count]`` of each chunk of ``rows`` (or of a
        looped call's chunks, as their exact :class:`~dhf.reduction.Parts`)."""
        self.set_theta(theta)
        yield from self._sums(self._grad_fn, self.plan(rows))

    def curvature_chunks(self, theta: np.ndarray, rows) -> Iterator[np.ndarray]:
        """Fix θ and the curvature batch for :meth:`gv_chunks` (:attr:`curvature`): runs
        the forward pass once per chunk and keeps the states Gv needs; yields each
        chunk's ``[Σ loss, count]``.  A generator: the batch is fixed once it has been
        run to the end, and none is until then."""
        theta = np.array(theta, dtype=np.float64)
        self.curvature = None
        self.set_theta(theta)
        chunk_args, counts = [], []
        for call, data in self._calls(self.plan(rows)):
            if self.looped:
                *states, losses = self._forward_fn.loop(len(call), *data)
                losses = np.asarray(losses)
            else:
                *states, losses = self._forward_fn(*data)
                losses = [losses]
            if self.gv_mode != self.mode:  # JAX's arrays are read-only views, which
                # Numba types apart from the writable arrays its kernels are made for
                states = [np.require(s, requirements="CW") for s in states]
            chunk_args.append(self._place(data) + (states if self.cache_forward else []))
            counts.append(len(call))
            for chunk, loss in zip(call, losses):
                yield np.array([loss, len(chunk)], dtype=np.float64)
        self.curvature = CurvatureBatch(theta, chunk_args, self._param_values, counts)

    def gv_chunks(self, v: np.ndarray, structural_weight: float = 0.0
                  ) -> Iterator[np.ndarray]:
        r"""``Σ_i (J_iᵀ H_i J_i + w J_{a,i}ᵀ D_i J_{a,i}) v`` over each chunk of the
        curvature batch, at its θ (:attr:`curvature`).  ``structural_weight`` is λμ; 0
        gives the undamped Gauss-Newton product.  A looped call's chunks come as their
        exact :class:`~dhf.reduction.Parts`, added up on the device."""
        if self.curvature is None:
            raise RuntimeError("curvature_chunks() (or prepare_curvature()) must run to "
                               "the end before gv_chunks()")
        v = np.asarray(v, dtype=self.dtype)
        if _is_jax(self.gv_mode):  # θ as placed for the forward pass; v placed once
            self._param_values = self.curvature.param_values
            v = self._place([v])[0]
        else:
            self.set_theta(self.curvature.theta)
        weight = np.asarray(structural_weight, dtype=self.dtype)
        for count, args in zip(self.curvature.counts, self.curvature.chunk_args):
            if self.looped:
                yield Parts(self._gv_fn.loop(count, *args, v, weight), count)
            else:
                yield np.asarray(self._gv_fn(*args, v, weight), dtype=np.float64)

    def squared_grad_chunks(self, theta: np.ndarray, rows) -> Iterator[np.ndarray]:
        """``Σ_i (∂f_i/∂θ)²`` of each chunk of ``rows``: per-example squared gradients,
        for the diagonal preconditioner.

        For a model whose dense layers cover its parameters (``spec.dense``: the built-in
        feed-forward nets), one batched backward pass a chunk, (h²)ᵀ(δ²); otherwise one
        gradient call per row.  (PyTensor's vectorised ``jacobian`` through ``scan``
        rewrites the model's inner graph in place, pymc-devs/pytensor#2028, so it is not
        used.)
        """
        self.set_theta(theta)
        chunks = self.plan(rows)
        if self.batched_squared_grads:
            if self._sq_grad_fn is None:
                self._sq_grad_fn = self._function(
                    self.spec.data_vars, _flat(dense_squared_grads(self.spec)))
            for data in self.chunk_data(chunks):
                yield np.asarray(self._sq_grad_fn(*data), dtype=np.float64)
            return
        for chunk in chunks:
            total = np.zeros(self.layout.size)
            for row in chunk:
                if self.jax:  # no one-row shapes (plan): the row twice, its gradient twice
                    twice = [np.concatenate([a, a]) for a in self._read([row])]
                    g = self._grad_fn(*twice)[:self.layout.size] / 2
                else:
                    g = self._grad_fn(*self._read([row]))[:self.layout.size]
                total += np.square(g)
            yield total

    # -- sums over rows (one process: tests, benchmarks, a notebook) -----------------
    def loss_sum(self, theta: np.ndarray, rows) -> np.ndarray:
        """``[Σ loss, Σ errors, count]`` over ``rows`` at ``theta``."""
        return _total(self.loss_chunks(theta, rows), 3)

    def grad_sum(self, theta: np.ndarray, rows) -> np.ndarray:
        """``[Σ ∇loss (P values), Σ loss, count]`` over ``rows`` at ``theta``."""
        return _total(self.grad_chunks(theta, rows), self.layout.size + 2)

    def prepare_curvature(self, theta: np.ndarray, rows) -> np.ndarray:
        """Fix θ and the curvature batch for :meth:`gv_sum`; ``[Σ loss, count]``."""
        return _total(self.curvature_chunks(theta, rows), 2)

    def gv_sum(self, v: np.ndarray, structural_weight: float = 0.0) -> np.ndarray:
        """:meth:`gv_chunks` summed."""
        return _total(self.gv_chunks(v, structural_weight), self.layout.size)

    def squared_grad_sum(self, theta: np.ndarray, rows) -> np.ndarray:
        """:meth:`squared_grad_chunks` summed."""
        return _total(self.squared_grad_chunks(theta, rows), self.layout.size)


def gv_graph(spec: ModelSpec, explicit: bool = True):
    """``(Gv, v, structural_weight)``: the symbolic Gauss-Newton product of ``spec`` with
    the flat vector ``v`` (structural damping weighted by the scalar), through the
    model's own explicit Gv where it has one and ``explicit``, else the generic
    pushforward/pullback graph."""
    dtype = spec.params[0].dtype
    layout = ParamLayout(spec.param_names, [p.get_value(borrow=True).shape
                                            for p in spec.params])
    v = pt.vector("v", dtype=dtype)
    weight = pt.scalar("structural_weight", dtype=dtype)
    tangents = [v[lo:hi].reshape(shape) for shape, lo, hi in
                zip(layout.shapes, layout.offsets[:-1], layout.offsets[1:])]
    structural = weight if spec.hidden else None
    build = (spec.gauss_newton if explicit and spec.gauss_newton is not None
             else model_gauss_newton_product)
    return _flat(build(spec, tangents, structural)), v, weight


def _stacked(a: np.ndarray, chunks: int, rows: int) -> np.ndarray:
    """``a``'s rows as ``chunks`` chunks of ``rows``, the missing ones zeros: a looped
    call's stack (:meth:`Worker._calls`), which computes only the chunks it is told."""
    out = np.zeros((chunks * rows,) + a.shape[1:], a.dtype)
    out[:len(a)] = a
    return out.reshape((chunks, rows) + a.shape[1:])


def _is_jax(mode) -> bool:
    return str(mode).upper() == "JAX"


def _total(sums: Iterator[np.ndarray | Parts], n: int) -> np.ndarray:
    """The chunks' sums added (in float64, not exactly: for one process)."""
    total = np.zeros(n)
    for part in sums:
        total += part.value if isinstance(part, Parts) else part
    return total


def _with_rows(parts: np.ndarray, call: list) -> Parts:
    """A looped call's summed parts with the parts of its chunks' row counts after them,
    each chunk's split as :func:`dhf.reduction.split` does."""
    rows = np.zeros((reduction.BINS, 1))
    for chunk in call:
        reduction.split(np.array([float(len(chunk))]), out=rows)
    return Parts(np.concatenate([parts, rows], axis=1), len(call))


def _row_lengths(source, spec: ModelSpec, block: int = 4096) -> np.ndarray:
    """Each row's length: one past its last step the ``(N, T)`` mask keeps (the mask alone
    is read, once, a block of rows at a time)."""
    where = spec.data_vars.index(spec.mask)
    lengths = np.zeros(source.n_rows, dtype=np.int64)
    for lo in range(0, source.n_rows, block):
        rows = np.arange(lo, min(lo + block, source.n_rows))
        lengths[lo:lo + len(rows)] = mask_lengths(source.read(rows, fields=[where])[0])
    return lengths


def _flat(variables) -> pt.TensorVariable:
    """One float64 vector from a list of variables of any shapes."""
    return pt.concatenate([pt.flatten(x).astype("float64") for x in variables])
