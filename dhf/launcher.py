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
    importing numpy).  An empty variable is an unset one (``OMP_NUM_THREADS=`` in a
    script): it too gets 1, so that XLA computes on one thread and the run has the bits
    of every other (XLA's own pool size changes them)."""
    for name in THREAD_VARIABLES:
        if not _chosen(name):
            os.environ[name] = "1"


def threads_chosen() -> bool:
    """Did the user choose a thread count (any of :data:`THREAD_VARIABLES`, not empty)?"""
    return any(_chosen(name) for name in THREAD_VARIABLES)


def one_thread_wanted() -> bool:
    """One thread per process, unless a variable of :data:`THREAD_VARIABLES` asks for
    more (``dhf-train`` sets them to 1 where the user did not)."""
    return all(os.environ.get(name, "").strip() in ("", "1") for name in THREAD_VARIABLES)


def _chosen(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


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


#: Process names of MPI launchers and their per-node proxies (MPICH's Hydra, Open MPI's
#: and PMIx's), which stand between a rank and the terminal ``mpirun`` was typed in.
LAUNCHER_PROCESSES = ("mpiexec", "mpirun", "mpiexec.hydra", "hydra_pmi_proxy", "orterun",
                      "orted", "prterun", "prted")


def launcher_on_terminal(fd: int = 2) -> bool:
    """Is the launcher that started this rank writing its ``fd`` (stderr, where a
    progress bar goes) to a terminal?  Walks up from this process through the
    launcher's own processes (:data:`LAUNCHER_PROCESSES`, read from ``/proc``) and asks
    of the topmost: an interactive ``mpirun`` says yes; ``mpirun > log``, a batch job,
    or a launcher it cannot see (``srun``'s, on another host) says no.  Hydra starts
    each rank in its own session, so the rank itself cannot open ``/dev/tty``."""
    pid, top = os.getppid(), None
    for _ in range(8):  # rank -> proxy -> launcher, and a little room
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if name not in LAUNCHER_PROCESSES:
            break
        top, pid = pid, parent
    if top is None:
        return False
    try:
        target = os.readlink(f"/proc/{top}/fd/{fd}")
    except OSError:
        return False
    return target.startswith(("/dev/pts/", "/dev/tty", "/dev/console"))
