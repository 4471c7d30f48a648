"""The only module that touches MPI.

Nine verbs and two attributes are the whole distributed surface of dhf:
``allreduce_sum``, ``allreduce_max``, ``reduce_scatter_sum``, ``allgather``, ``bcast``,
``barrier``, ``node_ranks``, ``any_rank``, ``abort``, ``rank`` and ``size``;
:mod:`dhf.allreduce` builds the rank-count-independent sums on the first four.
:class:`SerialComm` is the size-1 case, so the optimiser has no "am I distributed?"
branches, and tests run it in one process.  :class:`MPIComm` wraps a duplicate of
``COMM_WORLD`` so dhf's traffic never matches a user's messages.

:func:`run_or_abort` is the guard every entry point runs under (the pattern of
``python -m mpi4py``): an uncaught exception on any rank is logged with its rank and the
whole job is aborted, so no rank waits forever inside a collective.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any, Callable, NoReturn, Protocol, TypeVar

import numpy as np

from dhf.launcher import launched_under_mpi

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Communicator(Protocol):
    """What the coordinator needs from MPI."""

    rank: int
    size: int
    #: Seconds spent so far in the sums' collectives (the coordinator's ``t_allreduce``).
    reduce_seconds: float

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray: ...
    def allreduce_max(self, buf: np.ndarray) -> np.ndarray: ...
    def reduce_scatter_sum(self, rows: np.ndarray, counts: list[int]) -> np.ndarray: ...
    def allgather(self, mine: np.ndarray, counts: list[int]) -> np.ndarray: ...
    def bcast(self, obj: T, root: int = 0) -> T: ...
    def barrier(self) -> None: ...
    def node_ranks(self) -> tuple[int, int]: ...
    def any_rank(self, flag: bool) -> bool: ...
    def abort(self, code: int = 1) -> NoReturn: ...


class SerialComm:
    """One process: every collective is the identity."""

    rank = 0
    size = 1
    reduce_seconds = 0.0  # time spent in the sums' collectives (none: nothing travels)

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        _check_buffer(buf)
        return buf

    def allreduce_max(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def reduce_scatter_sum(self, rows: np.ndarray, counts: list[int]) -> np.ndarray:
        return rows

    def allgather(self, mine: np.ndarray, counts: list[int]) -> np.ndarray:
        return mine

    def bcast(self, obj: T, root: int = 0) -> T:
        return obj

    def barrier(self) -> None:
        pass

    def node_ranks(self) -> tuple[int, int]:
        return 0, 1

    def any_rank(self, flag: bool) -> bool:
        return bool(flag)

    def abort(self, code: int = 1) -> NoReturn:
        logging.shutdown()
        os._exit(code)


class MPIComm:
    """``COMM_WORLD.Dup()``; sums travel as one flat float64 buffer, reduced in place."""

    def __init__(self, comm: Any = None):
        from mpi4py import MPI

        self._MPI = MPI
        self._comm = (comm if comm is not None else MPI.COMM_WORLD).Dup()
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        #: Seconds spent in the sums' collectives so far (:meth:`allreduce_sum`,
        #: :meth:`reduce_scatter_sum`, :meth:`allgather`): the transfer and the wait for
        #: the slowest rank.
        self.reduce_seconds = 0.0
        self._scattered = None  # reduce_scatter_sum's buffer, kept for the next call

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        """Sum ``buf`` over all ranks, in place; returns ``buf``."""
        return self._allreduce(buf, self._MPI.SUM)

    def allreduce_max(self, buf: np.ndarray) -> np.ndarray:
        """The elementwise maximum of ``buf`` over all ranks, in place; returns ``buf``."""
        return self._allreduce(buf, self._MPI.MAX)

    def _allreduce(self, buf: np.ndarray, op) -> np.ndarray:
        _check_buffer(buf)
        t0 = time.perf_counter()
        self._comm.Allreduce(self._MPI.IN_PLACE, buf, op=op)
        self.reduce_seconds += time.perf_counter() - t0
        return buf

    def reduce_scatter_sum(self, rows: np.ndarray, counts: list[int]) -> np.ndarray:
        """Each row of ``rows`` (k, n) summed over all ranks, this rank receiving its
        ``counts[rank]`` columns of each (the ranks' columns in rank order): (k, count),
        in a buffer this communicator keeps for the next call of that shape (a fresh one
        for the MNIST autoencoder's parts is 56 MB of pages to fault in, each CG
        iteration)."""
        t0 = time.perf_counter()
        shape = (rows.shape[0], counts[self.rank])
        if self._scattered is None or self._scattered.shape != shape:
            self._scattered = np.empty(shape)
        out = self._scattered
        for row, mine in zip(rows, out):
            self._comm.Reduce_scatter(np.ascontiguousarray(row), mine, recvcounts=counts,
                                      op=self._MPI.SUM)
        self.reduce_seconds += time.perf_counter() - t0
        return out

    def allgather(self, mine: np.ndarray, counts: list[int]) -> np.ndarray:
        """Every rank's float64 ``mine`` (``counts[r]`` values from rank r), concatenated
        in rank order, on every rank."""
        t0 = time.perf_counter()
        out = np.empty(sum(counts))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
        self._comm.Allgatherv(np.ascontiguousarray(mine, dtype=np.float64),
                              [out, list(counts), offsets, self._MPI.DOUBLE])
        self.reduce_seconds += time.perf_counter() - t0
        return out

    def bcast(self, obj: T, root: int = 0) -> T:
        """Broadcast a small Python object (pickled; never used in the inner loop)."""
        return self._comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self._comm.Barrier()

    def node_ranks(self) -> tuple[int, int]:
        """``(index, count)`` of this rank among the ranks that share its node (its
        shared-memory domain), whatever the launcher."""
        node = self._comm.Split_type(self._MPI.COMM_TYPE_SHARED)
        try:
            return node.Get_rank(), node.Get_size()
        finally:
            node.Free()

    def any_rank(self, flag: bool, poll: float = 0.05) -> bool:
        """Is ``flag`` true on any rank?  A rank that arrives early sleeps between polls
        rather than spinning as in a blocking collective (MPICH's waits take a core
        each), leaving the cores to the ranks still working."""
        buf = np.array([float(flag)])
        request = self._comm.Iallreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        while not request.Test():
            time.sleep(poll)
        return bool(buf[0])

    def abort(self, code: int = 1) -> NoReturn:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # Give the launcher a moment to forward what this rank just wrote: Abort makes
        # it kill every process, and output still in its pipes would be lost.
        time.sleep(0.5)
        self._MPI.COMM_WORLD.Abort(code)
        os._exit(code)  # Abort does not return; this is for type checkers.


def _check_buffer(buf: np.ndarray) -> None:
    if not (isinstance(buf, np.ndarray) and buf.dtype == np.float64 and buf.ndim == 1
            and buf.flags.c_contiguous):
        raise TypeError("allreduce_sum needs a 1-D contiguous float64 numpy array, got "
                        f"{type(buf).__name__} {getattr(buf, 'dtype', '')} "
                        f"shape {getattr(buf, 'shape', '')}")


def get_comm() -> Communicator:
    """An :class:`MPIComm` when launched by an MPI launcher, else a :class:`SerialComm`.

    Importing mpi4py without a launcher still works (singleton MPI), but it is slower to
    start and needs an MPI library, so plain ``dhf-train`` stays serial.
    """
    if launched_under_mpi():
        comm = MPIComm()
        if comm.size > 1:
            return comm
    return SerialComm()


def allreduce_scalars(comm: Communicator, *values: float) -> np.ndarray:
    """Sum a few scalars over ranks in one buffer."""
    return comm.allreduce_sum(np.array(values, dtype=np.float64))


def check_replicas(comm: Communicator, theta: np.ndarray) -> bool:
    """True when ``theta`` is bitwise identical on every rank (one tiny Allreduce).

    Each rank contributes its deviation from rank 0's checksum; the sum of absolute
    deviations is zero exactly when all agree.
    """
    checksum = float(np.sum(theta * np.arange(1, theta.size + 1)))
    reference = comm.bcast(checksum, root=0)
    return allreduce_scalars(comm, abs(checksum - reference)
                             + float(not np.isfinite(checksum)))[0] == 0.0


def on_root(comm: Communicator, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 and broadcast its result, or its
    :class:`~dhf.errors.UserError`, to every rank: one decision (a config read, a
    directory made, a checkpoint loaded) that all ranks then share.

    Every rank raises a broadcast error, marked :func:`on_every_rank`.
    """
    from dhf.errors import UserError

    outcome = None
    if comm.rank == 0:
        try:
            outcome = ("ok", fn())
        except UserError as err:
            outcome = ("error", err)
    outcome = comm.bcast(outcome) if comm.size > 1 else outcome
    if outcome[0] == "error":
        raise on_every_rank(outcome[1])
    return outcome[1]


def on_every_rank(err: Exception) -> Exception:
    """Mark ``err`` as raised by every rank at the same point (a decision they share):
    :func:`run_or_abort` then prints it once, on rank 0, and ends the job without an
    abort."""
    err.on_every_rank = True
    return err


@contextlib.contextmanager
def alike_on_every_rank():
    """A :class:`~dhf.errors.UserError` raised inside is marked :func:`on_every_rank`:
    for checks that follow from values every rank holds alike (the config, the rows'
    counts), which every rank therefore meets together, so that it is printed once."""
    from dhf.errors import UserError

    try:
        yield
    except UserError as err:
        raise on_every_rank(err) from None


def run_or_abort(comm: Communicator, fn: Callable[[], int]) -> int:
    """Run ``fn``; on an uncaught exception log it with the rank and abort every rank.

    Errors a user caused (:class:`dhf.errors.UserError`) are logged as one line; other
    exceptions with their traceback.  An error every rank raised (:func:`on_every_rank`)
    is logged by rank 0 alone, as the job's (``error: ...``), and every rank returns its
    exit code: no rank is left waiting, so no abort.  At size 1 the error is the job's
    too, and the exit code is returned instead of aborting, so in-process callers
    (tests, notebooks) see it.
    """
    from dhf.errors import UserError

    try:
        return fn()
    except UserError as err:
        if getattr(err, "on_every_rank", False) or comm.size == 1:
            if comm.rank == 0:  # the job's error, not one rank's: no rank named
                logger.error("error: %s", err)
            return 2
        logger.error("rank %d: error: %s", comm.rank, err)
        code = 2
    except KeyboardInterrupt:
        logger.error("rank %d: interrupted", comm.rank)
        code = 130
    except Exception as err:  # noqa: BLE001 - this is the last line of defence
        logger.exception("rank %d: %s: %s", comm.rank, type(err).__name__, err)
        code = 1
    if comm.size > 1:
        comm.abort(code)
    return code
