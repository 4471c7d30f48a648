"""The global sampler and the shards: same rows at any rank count."""
import numpy as np
import pytest

from dhf.data import BatchSampler, local, shard_bounds


@pytest.mark.parametrize("n,size", [(10, 1), (10, 3), (7, 4), (3, 4), (1000, 16)])
def test_shards_partition_the_rows(n, size):
    bounds = [shard_bounds(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_batches_are_nested_disjoint_and_seeded():
    sampler = BatchSampler(1000, 300, 50, 100, seed=7)
    b = sampler.draw(3)
    assert len(b.gradient) == 300 and len(b.curvature) == 50 and len(b.backtrack) == 100
    assert set(b.curvature) <= set(b.gradient)
    assert not set(b.backtrack) & set(b.gradient)
    again = BatchSampler(1000, 300, 50, 100, seed=7).draw(3)
    assert all(np.array_equal(x, y) for x, y in zip(b, again))
    assert not np.array_equal(sampler.draw(4).gradient, b.gradient)


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_local_slices_reassemble_the_global_batch(size):
    rows = BatchSampler(500, 200, 40, 60, seed=1).draw(1).gradient
    parts = [local(rows, r, size) for r in range(size)]
    assert np.array_equal(np.concatenate(parts), rows)


def test_sampler_refuses_impossible_sizes():
    with pytest.raises(ValueError):
        BatchSampler(100, 90, 10, 20, seed=0)
