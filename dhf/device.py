"""Where a rank computes: ``run.device = "cpu"`` (every backend) or ``"gpu"`` (JAX only).

With ``"gpu"`` each rank takes one of its node's GPUs, by its index among the node's
ranks (:func:`dhf.launcher.local_rank`), so that ``mpirun -n 4`` on a 4-GPU node, or
``srun`` with one task per GPU, gives every rank its own device.  The compiled functions
run there; CG's vectors, the exact sums and the Allreduce stay float64 on the host.
"""
from __future__ import annotations

from dhf.errors import ConfigError, UserError
from dhf.launcher import local_rank


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
