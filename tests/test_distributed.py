"""Under mpiexec: the optimiser over real MPI ranks follows the one-process trajectory.

Every rank also runs the full batch alone (SerialComm) and compares; the verdict is
Allreduced so that all ranks pass or fail together.
"""
import numpy as np
import pytest

from dhf import nets
from dhf.comm import SerialComm
from dhf.coordinator import HFConfig, HFOptimizer
from dhf.data import BatchSampler
from dhf.worker import Worker

pytestmark = pytest.mark.mpi


def trajectory(comm, n_updates=3):
    rng = np.random.default_rng(666)
    x = rng.integers(0, 2, size=(300, 5, 1)).astype(float)
    spec = nets.rnn(1, 6, 1, seed=4)
    worker = Worker(spec, [x, x[:, 0, :].copy()])
    cfg = HFConfig(init_damping=0.5, structural_damping=0.5, cg_max_iters=25)
    opt = HFOptimizer(worker, comm, cfg, BatchSampler(300, 150, 60, 60, seed=9))
    state = opt.init(worker.layout.flatten([p.get_value() for p in spec.params]))
    losses = []
    for _ in range(n_updates):
        state, info = opt.step(state)
        losses.append([info.loss, info.rho, info.damping, info.cg_iters])
    return np.array(losses), state.theta


def test_ranks_follow_the_serial_trajectory(comm):
    (mpi_losses, mpi_theta), (serial_losses, serial_theta) = trajectory(comm), \
        trajectory(SerialComm())
    close = (np.allclose(mpi_losses, serial_losses, rtol=1e-8, atol=0)
             and np.allclose(mpi_theta, serial_theta, rtol=1e-7, atol=1e-10))
    failures = comm.allreduce_sum(np.array([0.0 if close else 1.0]))[0]
    assert failures == 0, f"rank {comm.rank}: {mpi_losses} vs {serial_losses}"


def test_every_sum_reduced_in_slices_gives_the_same_bits(comm, monkeypatch):
    """With every sum over the reduce-scatter route (``SCATTER_VALUES = 1``: the
    3-value loss sums too, so some ranks receive no slice at 4 ranks), the ranks' θ and
    losses are the one-process run's, bit for bit."""
    from dhf import allreduce as allreduce_module

    serial_losses, serial_theta = trajectory(SerialComm(), n_updates=2)
    monkeypatch.setattr(allreduce_module, "SCATTER_VALUES", 1)
    losses, theta = trajectory(comm, n_updates=2)
    same = np.array_equal(losses, serial_losses) and np.array_equal(theta, serial_theta)
    failures = comm.allreduce_sum(np.array([0.0 if same else 1.0]))[0]
    assert failures == 0, f"rank {comm.rank}: {losses} vs {serial_losses}"
