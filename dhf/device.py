"""Where a rank computes: ``run.device = "cpu"`` (every backend) or ``"gpu"`` (JAX only).

With ``"gpu"`` each rank takes one of its node's GPUs, by its index among the node's
ranks (:func:`dhf.launcher.local_rank`), so that ``mpirun -n 4`` on a 4-GPU node, or
``srun`` with one task per GPU, gives every rank its own device.  The compiled functions
run there; CG's vectors, the exact sums and the Allreduce stay float64 on the host.
"""
from __future__ import annotations

import os

from dhf.errors import ConfigError, UserError
from dhf.launcher import local_rank, one_thread_wanted


def use_device(device: str, backend: str) -> str:
    """Make ``device`` JAX's default for this process; returns what was chosen, in words.
    A GPU request that cannot be met is one :class:`~dhf.errors.UserError` line."""
    if device == "cpu":
        return "cpu"
    if backend != "jax":
        raise ConfigError(f"run.device = 'gpu' needs run.backend = 'jax' (got "
                          f"{backend!r}): PyTensor's other backends run on the CPU only")
    try:
        import jax
    except ImportError:
        raise UserError("run.device = 'gpu' needs JAX with CUDA: pip install "
                        "'jax[cuda12]' (or set run.device = 'cpu')") from None
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        raise UserError("run.device = 'gpu': JAX sees no GPU on this machine (install "
                        "'jax[cuda12]' where there is one, or set run.device = 'cpu')")
    gpu = gpus[local_rank() % len(gpus)]
    jax.config.update("jax_default_device", gpu)
    return str(gpu)


def jax_on_cpu() -> None:
    """Under ``run.device = "cpu"``, JAX computes on the CPU even where it sees a GPU,
    and never starts its GPU client: by default that client reserves 75 % of the GPU's
    memory in every process that starts it, so 16 CPU ranks on a GPU node would fight
    over one card they do not use.

    JAX's platforms are fixed once per process: where its clients have not started and
    ``JAX_PLATFORMS`` is not set, this process's JAX is then the CPU's for good (a later
    ``run.device = "gpu"`` in the same Python session, ``dhf.train`` in a notebook say,
    finds no GPU: set ``JAX_PLATFORMS=cuda,cpu`` to keep both).  Otherwise only the
    default device is set, to the CPU.
    """
    import jax
    from jax._src import xla_bridge

    started = getattr(xla_bridge, "backends_are_initialized", None)
    if started is not None and not started() and not os.environ.get("JAX_PLATFORMS"):
        jax.config.update("jax_platforms", "cpu")
    else:
        jax.config.update("jax_default_device", jax.devices("cpu")[0])


def one_xla_thread() -> bool:
    """Start JAX's CPU client with one compute thread, as BLAS runs (dhf-train's one
    thread per process, :mod:`dhf.launcher`); returns whether it did.

    XLA has no setting for its CPU thread pool: it sizes it by the CPUs this thread may
    run on when the client starts, and otherwise takes every core, so that two ranks on
    two cores ran four threads (slower: ``docs/benchmarks.md``, "Start-up") and a sum's
    bits depended on how many cores a machine has.  The calling thread is narrowed to
    one CPU while the client starts, then every thread of the process gets back the
    CPUs it had: nothing stays pinned.  Not done
    when a thread variable asks for more than one, when the client has started already,
    or where the OS has no CPU affinity (macOS).
    """
    if not one_thread_wanted() or not hasattr(os, "sched_setaffinity"):
        return False
    import jax
    from jax._src import xla_bridge

    started = getattr(xla_bridge, "backends_are_initialized", None)
    if started is None or started():
        return False
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        jax.devices("cpu")
    finally:
        os.sched_setaffinity(0, cpus)
        try:  # the threads the client started (Linux: one entry per thread)
            tasks = os.listdir("/proc/self/task")
        except OSError:
            tasks = []
        for task in tasks:
            try:
                os.sched_setaffinity(int(task), cpus)
            except OSError:  # a thread that has ended since
                pass
    return True
