#!/usr/bin/env bash
# Set up a virtual environment with dhf (JAX's CPU build comes with it) and its test
# extras (the mpich wheel brings mpiexec), then lint (flake8) and run dhf's doctests, run
# the whole suite serially (but the slurm-marked tests), the MPI subset under mpiexec -n 2
# and -n 4, and the Slurm tests, which start a one-node Slurm (and apt-get install
# slurm-wlm and munge first if missing; they skip, saying why, where that is impossible).  Every stage runs under a
# timeout so that a hang fails instead of stalling.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# One BLAS thread per process: the MPI ranks are the parallelism.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export PATH="$PWD/.venv/bin:$PATH"
echo "== lint and doctests"
timeout -k 10 300 python -m flake8 dhf tests scripts examples
timeout -k 10 300 python -m pytest -q --doctest-modules dhf -p no:cacheprovider
echo "== serial suite"
timeout -k 10 2700 python -m pytest tests -q -ra -m "not slurm" --durations=25
for n in 2 4; do
  echo "== MPI subset under mpiexec -n $n"
  timeout -k 10 900 mpiexec -n "$n" python -m pytest tests -q -m mpi -p no:cacheprovider
done
echo "== Slurm: scripts/slurm/dhf-train.sbatch on a one-node cluster"
timeout -k 10 600 python -m pytest tests -q -ra -m slurm
