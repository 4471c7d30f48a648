"""The global sampler and the shards: same rows at any rank count."""
import numpy as np
import pytest

from dhf.data import (FRESH_STRIDE, BatchSampler, FreshSampler, FullBatchSampler, local,
                      shard_bounds)


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


def test_line_search_batch_is_disjoint_from_the_others():
    b = BatchSampler(1000, 300, 50, 100, seed=7, linesearch=200).draw(2)
    assert len(b.linesearch) == 200
    assert not set(b.linesearch) & (set(b.gradient) | set(b.backtrack))
    # Without one, the draws are those of a sampler that never had the option.
    old = BatchSampler(1000, 300, 50, 100, seed=7).draw(2)
    assert all(np.array_equal(x, y) for x, y in zip(old[:3], BatchSampler(
        1000, 300, 50, 100, seed=7, linesearch=0).draw(2)[:3]))
    assert len(old.linesearch) == 0


def test_fresh_batches_are_new_rows_every_update():
    sampler = FreshSampler(1000, 100, 200, 300)
    b3, b4 = sampler.draw(3), sampler.draw(4)
    assert [len(x) for x in b3] == [1000, 100, 200, 300]
    assert set(b3.curvature) <= set(b3.gradient)
    parts = [set(b3.gradient), set(b3.backtrack), set(b3.linesearch)]
    assert sum(map(len, parts)) == len(set().union(*parts))  # disjoint
    assert set().union(*parts).isdisjoint(set(b4.gradient) | set(b4.backtrack))
    assert (b3.gradient // FRESH_STRIDE == 3).all()
    assert all(np.array_equal(x, y) for x, y in zip(b3, FreshSampler(1000, 100, 200,
                                                                     300).draw(3)))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 6, 16])
def test_each_ranks_fresh_curvature_rows_lie_in_or_next_to_its_gradient_rows(size):
    """So that a rank generates at most a block of rows (100) at each end of its share that
    another rank generates too (the held-out regime spreads the curvature batch evenly
    through the gradient batch)."""
    b = FreshSampler(10000, 1000, 1000).draw(1)
    for r in range(size):
        grad = local(b.gradient, r, size)
        curv = local(b.curvature, r, size)
        assert grad[0] - 100 <= curv[0] and curv[-1] <= grad[-1] + 100


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "fixed"])
def test_without_held_out_rows_every_batch_is_part_of_the_gradient_batch(fresh):
    """Sutskever's release: curvature, backtracking and line search are minibatches 0, 1
    and 2 of the 10 its gradient is taken on, disjoint from each other."""
    sampler = (FreshSampler(10000, 1000, 1000, 1000, held_out=False) if fresh else
               BatchSampler(20000, 10000, 1000, 1000, seed=2, linesearch=1000,
                            held_out=False))
    b = sampler.draw(4)
    assert [len(x) for x in b] == [10000, 1000, 1000, 1000]
    parts = [set(b.curvature), set(b.backtrack), set(b.linesearch)]
    assert set().union(*parts) <= set(b.gradient)
    assert sum(map(len, parts)) == len(set().union(*parts))
    if fresh:
        base = 4 * FRESH_STRIDE
        assert b.curvature[0] == base and b.backtrack[0] == base + 1000
    with pytest.raises(ValueError, match="inside the gradient batch"):
        FreshSampler(1000, 500, 400, 200, held_out=False)


def test_full_batch_regime_uses_every_row_and_cycles_the_curvature_chunks():
    """Martens (2010): gradient, backtracking and line search on every row; the curvature
    on chunk u mod K of one fixed shuffle, so K updates visit every row exactly once."""
    sampler = FullBatchSampler(100, 25, seed=3)
    seen = []
    for update in range(1, 5):
        b = sampler.draw(update)
        np.testing.assert_array_equal(b.gradient, np.arange(100))
        np.testing.assert_array_equal(b.backtrack, np.arange(100))
        assert len(b.linesearch) == 0 and len(b.curvature) == 25
        seen.append(b.curvature)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(100))
    np.testing.assert_array_equal(sampler.draw(5).curvature, seen[0])
    assert not np.array_equal(seen[0], np.arange(25))  # shuffled, not the first rows
    with pytest.raises(ValueError):
        FullBatchSampler(10, 11, seed=0)
