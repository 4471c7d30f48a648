"""Compiling a run's functions before its first update: each node's first rank alone
where a node has more ranks than cores, the others loading its work from the compile
caches; a notice while a first compile takes long; data that does not fit the model
refused in one line; JAX's failure to trace a graph told apart, for a fallback.
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from dhf.comm import Communicator
from dhf.errors import DataError
from dhf.worker import Worker

logger = logging.getLogger(__name__)

#: Seconds of compiling after which the user is told what is happening.
COMPILE_NOTICE_SECONDS = 5.0


def ranks_and_nodes(comm: Communicator) -> str:
    """``1 rank``, ``4 ranks`` (one node) or ``4 ranks on 2 nodes`` (a collective)."""
    if comm.size == 1:
        return "1 rank"
    index, _ = comm.node_ranks()
    nodes = int(comm.allreduce_sum(np.array([float(index == 0)]))[0])
    return f"{comm.size} ranks" + (f" on {nodes} nodes" if nodes > 1 else "")


def compile_worker(worker: Worker, comm: Communicator, theta: np.ndarray, config: dict,
                   own_data: bool, batches: dict | None = None) -> bool:
    """Generate the compiled functions' code now (:meth:`Worker.warm_up`, for the chunk
    shapes of ``batches``, :meth:`dhf.batches.BatchSizes.compiled_rows`), so that the
    start line says what compiling cost and the first update is an update; a first run
    of a model compiles for seconds (JAX) to minutes (Numba), and the user is told so
    while it waits.  Data of the wrong shape fails here, in one line.

    Where a node has more ranks than cores, its first rank compiles alone while the
    others sleep, and they then load its work from the compile caches: ranks compiling
    the same functions at once on shared cores each take as long as all of them
    (``docs/benchmarks.md``, "Start-up").  Returns whether it went so (every rank
    alike).
    """
    index, on_node = comm.node_ranks()
    # decided together (one collective), so that nodes with and without more ranks than
    # cores take the same branch and its collectives match
    node_first = comm.any_rank(on_node > (os.cpu_count() or 1))
    if node_first:
        failed = None
        if index == 0:
            try:
                _warm_up(worker, theta, config, own_data, batches)
            except Exception as err:  # noqa: BLE001  (re-raised below, on every rank)
                failed = err
        # every rank learns whether a node's first rank failed, so none waits for it, and
        # whether JAX could not compile the graph (then every rank falls back together)
        if comm.any_rank(failed is not None):
            if comm.any_rank(isinstance(failed, JaxCannotTrace)):
                raise failed or JaxCannotTrace("on the node's first rank")
            raise failed or DataError("compiling failed on another rank (see its error)")
        if index == 0:
            return True
    _warm_up(worker, theta, config, own_data, batches)
    return node_first


def _warm_up(worker: Worker, theta: np.ndarray, config: dict, own_data: bool,
             batches: dict | None) -> None:
    notice = threading.Timer(COMPILE_NOTICE_SECONDS, logger.info, [
        "compiling the model, or loading it from the compile cache: a first run of a "
        "model on this machine compiles for seconds under JAX, a minute or two under "
        "Numba; later runs load it, in seconds"])
    notice.daemon = True
    notice.start()
    try:
        worker.warm_up(theta, curvature=config["optimizer"]["name"] == "hf",
                       batches=batches)
    except (ValueError, IndexError, TypeError, AssertionError, NotImplementedError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if worker.jax and (isinstance(err, NotImplementedError) or _traced(err)):
            raise JaxCannotTrace(first) from None
        if isinstance(err, NotImplementedError):
            raise
        source = ("train" if own_data else
                  config["data"]["path"] or f"task {config['task']['name']}")
        raise DataError(f"{source}: the data does not fit the model ({first})") from None
    finally:
        notice.cancel()


class JaxCannotTrace(Exception):
    """JAX could not compile a function of the graph: a shape it needs concrete is
    computed inside it (PyTensor's scan gradients of some graphs allocate so), or
    PyTensor has no JAX form for one of its operations."""


def _traced(err: Exception) -> bool:
    """Is ``err`` JAX failing to trace a function (rather than data of a wrong shape)?"""
    import jax

    return isinstance(err, jax.errors.JAXTypeError) or "Tracer" in str(err)
