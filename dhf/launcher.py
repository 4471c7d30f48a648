"""Is this process one rank of an MPI job?  Deliberately free of heavy imports.

``dhf.cli`` asks before numpy is imported, so that it can pin each rank to one BLAS
thread: OpenBLAS reads ``OMP_NUM_THREADS`` once, when numpy loads it.
"""
import os

#: Variables that MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's srun) set in ranks.
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                      "SLURM_STEP_ID", "HYDI_CONTROL_FD", "MPI_LOCALNRANKS")

#: BLAS and compiler thread pools that would oversubscribe cores shared by ranks.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")


def launched_under_mpi() -> bool:
    """True when an MPI launcher started this process (mpiexec, mpirun, srun)."""
    return any(k in os.environ for k in LAUNCHER_VARIABLES)


def one_thread_per_rank() -> None:
    """Default every thread pool to one thread, unless the user set it (call before
    importing numpy)."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def threads_chosen() -> bool:
    """Did the user choose a thread count (any of :data:`THREAD_VARIABLES`)?"""
    return any(name in os.environ for name in THREAD_VARIABLES)


def one_thread_wanted() -> bool:
    """One thread per process, unless a variable of :data:`THREAD_VARIABLES` asks for
    more (``dhf-train`` sets them to 1 where the user did not)."""
    return all(os.environ.get(name, "1").strip() == "1" for name in THREAD_VARIABLES)


#: Variables holding a rank's index among the ranks on its node (MPICH/Hydra, Open MPI,
#: Slurm's srun), in the order they are trusted.
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID",
                        "PMI_LOCAL_RANK")


def local_rank() -> int:
    """This rank's index among the ranks of its node (0 when not under a launcher)."""
    for name in LOCAL_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0
