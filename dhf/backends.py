"""Which backend and device a run computes on, and how many rows a compiled call
takes: ``run.backend``, ``run.gv_backend``, ``run.device`` and ``run.chunk_rows``
resolved (``auto`` included) and checked, before anything is compiled.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from dhf.device import jax_on_cpu, one_xla_thread, use_device
from dhf.errors import ConfigError, UserError
from dhf.model import ModelSpec
from dhf.worker import CPU_CHUNK_ROWS, GPU_CHUNK_ROWS, loops_chunks

logger = logging.getLogger(__name__)

#: PyTensor's mode for each backend.
MODES = {"numba": "NUMBA", "c": "CVM", "jax": "JAX", "default": None}


def chunk_rows_of(run_cfg: dict, spec: ModelSpec | None = None) -> int:
    """Rows per compiled call, at most: ``run.chunk_rows``, or on a GPU
    :data:`dhf.worker.GPU_CHUNK_ROWS`, and on a CPU :data:`dhf.worker.CPU_CHUNK_ROWS`
    for ``spec``'s kind: sequences (data of three axes, rows × steps × features), in
    calls of several chunks where :func:`looped_of` says so, or feed-forward (rows ×
    features)."""
    if run_cfg["chunk_rows"]:
        return run_cfg["chunk_rows"]
    if run_cfg["device"] == "gpu":
        return GPU_CHUNK_ROWS
    sequences = spec is None or any(v.ndim >= 3 for v in spec.data_vars)
    if not sequences:
        return CPU_CHUNK_ROWS["feedforward"]
    looped = spec is not None and looped_of(run_cfg, spec, CPU_CHUNK_ROWS["looped"])
    return CPU_CHUNK_ROWS["looped" if looped else "sequences"]


def looped_of(run_cfg: dict, spec: ModelSpec, chunk_rows: int) -> bool:
    """Does a run compute several chunks of about 16 rows per call, in calls of
    ``chunk_rows`` rows (:func:`dhf.worker.loops_chunks`: every function under JAX, on a
    CPU, for a model small enough)?"""
    jax = (backend_of(run_cfg) == "jax"
           and run_cfg.get("gv_backend", "auto") in ("auto", "jax"))
    n_params = sum(p.get_value(borrow=True).size for p in spec.params)
    return loops_chunks(jax, chunk_rows, n_params, gpu=run_cfg["device"] == "gpu")


def backend_of(run_cfg: dict) -> str:
    """The backend ``run.backend`` names, ``auto`` resolved (:func:`modes`)."""
    if run_cfg.get("backend", "auto") != "auto":
        return run_cfg["backend"]
    return "jax" if importlib.util.find_spec("jax") is not None else "numba"


def modes(run_cfg: dict) -> tuple[str, str]:
    """``(backend, gv_backend)`` that ``run.backend`` and ``run.gv_backend`` resolve to,
    checked (their packages installed), with ``run.device`` made the backend's default
    device.

    ``auto`` is JAX where it is installed, for every function: XLA compiles a model in
    seconds from empty caches where Numba takes minutes, and its updates are the faster
    (``docs/benchmarks.md``, "Backends through dhf-train" and "Start-up").
    ``run.gv_backend = "numba"`` keeps the tanh RNN's fused Numba Gv kernels under JAX's
    other functions, for a minute more compiling at a first run.  Numba throughout
    where JAX is not installed.
    """
    has_jax = importlib.util.find_spec("jax") is not None
    backend = backend_of(run_cfg)
    gv_backend = run_cfg["gv_backend"]
    if gv_backend == "auto":
        gv_backend = backend
    where = use_device(run_cfg["device"], backend)
    if run_cfg["device"] != "cpu" and gv_backend != backend:
        raise ConfigError(f"run.device = {run_cfg['device']!r} computes Gv on the device: "
                          f"set run.gv_backend = 'auto' (got {gv_backend!r})")
    if "jax" in (backend, gv_backend):
        key = "backend" if backend == "jax" else "gv_backend"
        if not has_jax:
            raise UserError(f"run.{key} = 'jax' needs the jax package: pip install "
                            "'jax[cpu]' (GPU: jax[cuda12])")
        import jax
        import pytensor
        import pytensor.link.jax.dispatch  # noqa: F401  (sets JAX's float64 from floatX)

        if not jax.config.jax_enable_x64:
            raise ConfigError(
                f"PyTensor's floatX = {pytensor.config.floatX!r} turns JAX's float64 off, "
                f"and run.{key} = 'jax' adds its sums exactly in float64: leave floatX at "
                "'float64' (run.dtype = 'float32' computes the model in float32)")

        if run_cfg["device"] == "cpu":
            jax_on_cpu()
            one_xla_thread()
        # XLA's compiled code kept beside PyTensor's, so that a later run loads it: all
        # of it (by default JAX keeps only what took a second or more to compile, and a
        # model's functions mostly take less, each compiled per chunk shape)
        jax.config.update("jax_compilation_cache_dir",
                          str(Path(pytensor.config.base_compiledir) / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if where != "cpu":
        logger.info("dhf: computing on %s", where)
    return backend, gv_backend
