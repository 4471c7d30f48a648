"""Collectives with closed-form answers; they pass at any world size."""
import numpy as np
import pytest

from dhf import allreduce as allreduce_module
from dhf.allreduce import SCATTER_VALUES, allreduce_exact, dot_sliced, reduce_exact_slice
from dhf.comm import SerialComm, allreduce_scalars, check_replicas
from dhf.data import shard_bounds
from dhf.reduction import ExactSum, dot

pytestmark = pytest.mark.mpi


def test_allreduce_sum_of_ranks(comm):
    """Σ_r (r, 1) over the world is (size(size−1)/2, size), identical on every rank."""
    buf = np.array([float(comm.rank), 1.0])
    out = comm.allreduce_sum(buf)
    assert out is buf  # in place
    assert out.tolist() == [comm.size * (comm.size - 1) / 2, comm.size]


def test_allreduce_scalars_and_bcast(comm):
    assert allreduce_scalars(comm, 2.0, 0.5).tolist() == [2.0 * comm.size, 0.5 * comm.size]
    assert comm.bcast({"from": comm.rank}) == {"from": 0}


@pytest.mark.parametrize("bad", [np.zeros(3, np.float32), np.zeros((2, 2)), [1.0, 2.0],
                                 np.zeros(6)[::2]],
                         ids=["float32", "2d", "list", "strided"])
def test_allreduce_rejects_non_contiguous_float64(comm, bad):
    with pytest.raises(TypeError, match="1-D contiguous float64"):
        comm.allreduce_sum(bad)


def test_check_replicas_detects_a_differing_rank(comm):
    theta = np.linspace(0.0, 1.0, 11)
    assert check_replicas(comm, theta)
    if comm.size > 1:
        changed = theta.copy()
        if comm.rank == comm.size - 1:
            changed[3] += 1e-12
        assert not check_replicas(comm, changed)


def test_serial_comm_is_the_size_one_case():
    comm = SerialComm()
    buf = np.arange(3.0)
    assert comm.allreduce_sum(buf) is buf and comm.size == 1 and comm.rank == 0


def test_any_rank_and_node_ranks(comm):
    """any_rank is true where one rank's flag is (the last rank's), false where none is;
    node_ranks counts this node's ranks (all of them, on one machine)."""
    assert comm.any_rank(comm.rank == comm.size - 1) is True
    assert comm.any_rank(False) is False
    index, count = comm.node_ranks()
    assert count == comm.size and index == comm.rank


@pytest.mark.parametrize("n", [5, SCATTER_VALUES + 3])
def test_allreduce_exact_is_the_one_rank_sum_by_either_route(comm, n, monkeypatch):
    """Every rank adds its share of 12 wide-ranging vectors (rank r the r-th, r+size-th,
    ...): the result is the bits one process gets adding all 12, on every rank, whether
    the parts travel in one Allreduce (short sums) or are reduce-scattered and their
    totals allgathered (long ones, also at an odd length), and the flags come back
    summed."""
    rng = np.random.default_rng(5)
    vectors = [rng.standard_normal(n) * 10.0 ** rng.uniform(-12, 12, n) for _ in range(12)]
    alone = ExactSum.of(vectors).value
    for threshold in (SCATTER_VALUES, 1):  # the default routes, then always slices
        monkeypatch.setattr(allreduce_module, "SCATTER_VALUES", threshold)
        mine = ExactSum.of(vectors[comm.rank::comm.size], n)
        value, flags = allreduce_exact(comm, mine, 1.0, float(comm.rank == 0))
        assert value.tobytes() == alone.tobytes()
        assert flags.tolist() == [comm.size, 1.0]
        assert check_replicas(comm, value)


@pytest.mark.parametrize("n", [5, SCATTER_VALUES + 3])
def test_each_rank_keeps_its_slice_of_the_one_rank_sum(comm, n, monkeypatch):
    """reduce_exact_slice: rank r gets values shard_bounds(n, r, size) of the sum one
    process gets, by either route, and the flags summed."""
    rng = np.random.default_rng(6)
    vectors = [rng.standard_normal(n) * 10.0 ** rng.uniform(-12, 12, n) for _ in range(7)]
    lo, hi = shard_bounds(n, comm.rank, comm.size)
    alone = ExactSum.of(vectors).value[lo:hi]
    for threshold in (SCATTER_VALUES, 1):
        monkeypatch.setattr(allreduce_module, "SCATTER_VALUES", threshold)
        mine, flags = reduce_exact_slice(comm, ExactSum.of(vectors[comm.rank::comm.size],
                                                           n), 1.0)
        assert mine.tobytes() == alone.tobytes() and flags.tolist() == [comm.size]


@pytest.mark.parametrize("n", [3, 2 ** 20 + 77])
def test_a_dot_product_of_slices_is_the_whole_vectors_one(comm, n):
    """dot_sliced over the ranks' slices (some empty at 4 ranks of 3 values; cuts
    inside the 2**19-value groups) is dhf.reduction.dot of the whole vectors, bit for
    bit, on every rank; and NaN where a product is not finite."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
    b = rng.standard_normal(n)
    lo, hi = shard_bounds(n, comm.rank, comm.size)
    value = dot_sliced(comm, a[lo:hi], b[lo:hi], n)
    assert value == dot(a, b)
    assert check_replicas(comm, np.array([value]))
    a[-1] = np.inf
    assert np.isnan(dot_sliced(comm, a[lo:hi], b[lo:hi], n))
