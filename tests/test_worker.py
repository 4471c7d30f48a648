"""Tests for :class:`dhf.worker.Worker`: its sums against independent references."""
import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from dhf.errors import UserError
from dhf.model import ModelSpec
from dhf.nets import mlp, rnn
from dhf.worker import Worker

SEED = 666
N_ROWS = 10


# -- models and data ------------------------------------------------------------------
def build_mlp(rng):
    """A sigmoid cross-entropy MLP and 0/1 targets."""
    spec = mlp([3, 4, 2], loss="sigmoid_xent")
    x = rng.standard_normal((N_ROWS, 3))
    y = (rng.random((N_ROWS, 2)) > 0.5).astype(float)
    return spec, [x, y]


def build_rnn(rng):
    """A softmax cross-entropy RNN read out at every step, with a 0/1 mask on the steps."""
    base = rnn(2, 3, 3, loss="softmax_xent", output_steps="all")
    mask = pt.matrix("mask", dtype="float64")
    spec = ModelSpec(inputs=base.inputs, targets=base.targets, params=base.params,
                     output=base.output, loss=base.loss, mask=mask, hidden=base.hidden)
    x = rng.standard_normal((N_ROWS, 4, 2))
    y = np.eye(3)[rng.integers(0, 3, (N_ROWS, 4))]
    m = (rng.random((N_ROWS, 4)) > 0.3).astype(float)
    return spec, [x, y, m]


# -- independent numpy forward passes ---------------------------------------------------
def softplus(z):
    return np.logaddexp(0.0, z)


def mlp_reference(theta, worker, x, y):
    """Per-example sigmoid cross-entropy losses and 0/1 errors of the 3-4-2 tanh MLP."""
    W0, b0, W1, b1 = worker.layout.unflatten(theta)
    s = np.tanh(x @ W0 + b0) @ W1 + b1
    loss = np.sum(softplus(s) - y * s, axis=1)
    errors = np.any((s > 0) != (y > 0.5), axis=1)
    return loss, errors


def rnn_reference(theta, worker, x, y, mask):
    """Per-example masked softmax cross-entropy losses and errors of the tanh RNN."""
    W_in, W_rec, b_h, h0, W_out, b_out = worker.layout.unflatten(theta)
    h = np.tile(h0, (x.shape[0], 1))
    loss, errors = np.zeros(x.shape[0]), np.zeros(x.shape[0], dtype=bool)
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ W_in + b_h + h @ W_rec)
        s = h @ W_out + b_out
        lse = np.log(np.sum(np.exp(s), axis=1))
        loss += mask[:, t] * (lse - np.sum(y[:, t] * s, axis=1))
        errors |= (np.argmax(s, axis=1) != np.argmax(y[:, t], axis=1)) & (mask[:, t] > 0)
    return loss, errors


MODELS = {"mlp": (build_mlp, mlp_reference), "rnn": (build_rnn, rnn_reference)}


class Model:
    """A model at a random θ with a cached-forward and an uncached worker."""

    def __init__(self, name):
        rng = np.random.default_rng(SEED)
        build, self.reference = MODELS[name]
        self.spec, self.data = build(rng)
        self.worker = Worker(self.spec, self.data, cache_forward=True)
        # The uncached worker gets its own copy of the model (same data, same layout):
        # workers sharing one spec's shared variables would load θ over each other.
        spec, data = build(np.random.default_rng(SEED))
        self.workers = {True: self.worker, False: Worker(spec, data, cache_forward=False)}
        self.P = self.worker.layout.size
        self.theta = rng.normal(0.0, 0.5, self.P)
        # λμ for the RNN's structural damping (ignored by the MLP, which has no hidden).
        self.weight = 0.3

    def rows_ref(self, theta, rows):
        return self.reference(theta, self.worker, *[d[rows] for d in self.data])


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return Model(request.param)


def direction(rng, model):
    return rng.standard_normal(model.P)


# -- loss and gradient -----------------------------------------------------------------
def test_loss_sum_matches_numpy_forward_pass(model):
    rows = np.arange(N_ROWS)
    loss, errors = model.rows_ref(model.theta, rows)
    assert 0 < errors.sum() < N_ROWS  # both outcomes occur, so the error count is tested
    for r in rows:
        out = model.worker.loss_sum(model.theta.copy(), [r])
        np.testing.assert_allclose(out, [loss[r], errors[r], 1.0], rtol=1e-12)
    out = model.worker.loss_sum(model.theta.copy(), np.array([7, 2, 5, 0, 9, 1]))
    assert out.shape == (3,) and out.dtype == np.float64
    np.testing.assert_allclose(out, [loss[[7, 2, 5, 0, 9, 1]].sum(),
                                     errors[[7, 2, 5, 0, 9, 1]].sum(), 6], rtol=1e-12)


def test_grad_sum_matches_finite_differences_of_loss_sum(model):
    rng = np.random.default_rng(SEED)
    rows, eps = np.arange(N_ROWS), 1e-6
    out = model.worker.grad_sum(model.theta.copy(), rows)
    assert out.shape == (model.P + 2,)
    grad, loss, count = out[:model.P], out[model.P], out[model.P + 1]
    np.testing.assert_allclose(loss, model.worker.loss_sum(model.theta.copy(), rows)[0],
                               rtol=1e-13)
    assert count == N_ROWS
    for _ in range(4):
        d = direction(rng, model)
        plus = model.worker.loss_sum(model.theta + eps * d, rows)[0]
        minus = model.worker.loss_sum(model.theta - eps * d, rows)[0]
        np.testing.assert_allclose(grad @ d, (plus - minus) / (2 * eps), rtol=1e-7,
                                   atol=1e-8 * np.abs(grad).sum())


# -- sums over shards ------------------------------------------------------------------
def test_three_unequal_shards_sum_to_the_full_batch(model):
    rng = np.random.default_rng(SEED)
    worker, theta, v = model.worker, model.theta, direction(rng, model)
    shards = np.split(rng.permutation(N_ROWS), [2, 7])  # sizes 2, 5, 3
    everything = np.arange(N_ROWS)

    total_loss, total_grad, total_curv, total_gv = 0.0, 0.0, 0.0, 0.0
    for shard in shards:
        total_loss = total_loss + worker.loss_sum(theta.copy(), shard)
        total_grad = total_grad + worker.grad_sum(theta.copy(), shard)
        total_curv = total_curv + worker.prepare_curvature(theta.copy(), shard)
        total_gv = total_gv + worker.gv_sum(v, model.weight)

    np.testing.assert_allclose(total_loss, worker.loss_sum(theta.copy(), everything),
                               rtol=1e-12)
    np.testing.assert_allclose(total_grad, worker.grad_sum(theta.copy(), everything),
                               rtol=1e-12, atol=1e-13)
    full_curv = worker.prepare_curvature(theta.copy(), everything)
    full_gv = worker.gv_sum(v, model.weight)
    np.testing.assert_allclose(total_curv, full_curv, rtol=1e-12)
    np.testing.assert_allclose(total_gv, full_gv, rtol=1e-11,
                               atol=1e-12 * np.abs(full_gv).max())


# -- Gv ----------------------------------------------------------------------------------
def test_cached_and_uncached_forward_give_the_same_gv(model):
    rng = np.random.default_rng(SEED)
    rows = np.array([1, 4, 6, 8, 9])
    for worker in model.workers.values():
        worker.prepare_curvature(model.theta, rows)
    for weight in (0.0, model.weight):
        v = direction(rng, model)
        cached = model.workers[True].gv_sum(v, weight)
        uncached = model.workers[False].gv_sum(v, weight)
        assert np.abs(cached).max() > 0
        np.testing.assert_allclose(cached, uncached, rtol=1e-12,
                                   atol=1e-12 * np.abs(uncached).max())


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "uncached"])
def test_gv_uses_the_theta_given_to_prepare_curvature(model, cache):
    rng = np.random.default_rng(SEED)
    worker, rows, v = model.workers[cache], np.arange(N_ROWS), direction(rng, model)
    other = model.theta + rng.normal(0.0, 0.5, model.P)

    theta = model.theta.copy()
    worker.prepare_curvature(theta, rows)
    expected = worker.gv_sum(v, model.weight)

    # What the coordinator does while backtracking, and an in-place edit of θ.
    worker.loss_sum(other, rows)
    worker.grad_sum(other.copy(), rows)
    theta += 1.0
    np.testing.assert_array_equal(worker.gv_sum(v, model.weight), expected)

    # ... and the product does depend on θ, so the check above has teeth.
    worker.prepare_curvature(other, rows)
    assert not np.allclose(worker.gv_sum(v, model.weight), expected, rtol=1e-3)


def test_gv_sum_before_prepare_curvature_raises():
    rng = np.random.default_rng(SEED)
    spec = mlp([2, 2], loss="squared_error")
    worker = Worker(spec, [rng.standard_normal((3, 2)), rng.standard_normal((3, 2))])
    with pytest.raises(RuntimeError):
        worker.gv_sum(np.zeros(worker.layout.size))


# -- preconditioner statistics -----------------------------------------------------------
def test_squared_grad_sum_is_the_sum_of_per_example_squared_gradients(model):
    worker = model.workers[False]
    rows = np.array([0, 3, 4, 5, 8])
    expected = sum(worker.grad_sum(model.theta.copy(), [r])[:model.P] ** 2 for r in rows)
    out = worker.squared_grad_sum(model.theta.copy(), rows)
    assert out.shape == (model.P,)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    # Not the square of the summed gradient: the per-example split matters.
    summed = worker.grad_sum(model.theta.copy(), rows)[:model.P]
    assert not np.allclose(out, summed ** 2)


@pytest.mark.parametrize("model", ["mlp", "rnn"], indirect=True)
def test_squared_grad_sum_leaves_the_model_differentiable(model):
    """Regression: PyTensor's vectorised jacobian through scan mutated the model's graph
    (pytensor#2028); the worker must not use it."""
    model.worker.squared_grad_sum(model.theta.copy(), np.arange(3))
    pytensor.grad(pt.sum(model.spec.example_losses()), model.spec.params)


# -- empty shards ------------------------------------------------------------------------
@pytest.mark.parametrize("cache", [True, False], ids=["cached", "uncached"])
def test_empty_rows_give_zero_sums_with_the_right_shapes(model, cache):
    worker, P, theta = model.workers[cache], model.P, model.theta.copy()
    empty = np.array([], dtype=int)
    for out, size in [(worker.loss_sum(theta, empty), 3),
                      (worker.grad_sum(theta, empty), P + 2),
                      (worker.prepare_curvature(theta, empty), 2),
                      (worker.gv_sum(np.ones(P), model.weight), P),
                      (worker.squared_grad_sum(theta, empty), P)]:
        assert out.shape == (size,) and out.dtype == np.float64
        assert not out.any()
    # A later non-empty curvature batch works as usual.
    worker.prepare_curvature(theta, np.arange(3))
    assert worker.gv_sum(np.ones(P), model.weight).any()


# -- ModelSpec validation --------------------------------------------------------------
def _tiny_graph():
    x, y = pt.matrix("x", dtype="float64"), pt.matrix("y", dtype="float64")
    W = pytensor.shared(np.ones((2, 2)), name="W")
    c = pytensor.shared(np.zeros(2), name="c")
    return x, y, W, c, pt.dot(x, W) + c


def test_loss_depending_on_a_parameter_outside_the_output_is_rejected():
    x, y, W, c, s = _tiny_graph()

    def leaky_loss(out, targets):
        return pt.sum(pt.sqr(out - targets), axis=1) + pt.sum(pt.sqr(c))

    with pytest.raises(UserError, match="other than through the output"):
        ModelSpec(inputs=[x], targets=y, params=[W, c], output=s, loss=leaky_loss)
    # The same loss without the leak is accepted.
    ModelSpec(inputs=[x], targets=y, params=[W, c], output=s,
              loss=lambda out, targets: pt.sum(pt.sqr(out - targets), axis=1))


def test_non_shared_parameter_is_rejected():
    x, y, W, _, _ = _tiny_graph()
    c = pt.vector("c", dtype="float64")
    with pytest.raises(UserError, match="not a shared variable"):
        ModelSpec(inputs=[x], targets=y, params=[W, c], output=pt.dot(x, W) + c)


def test_unknown_loss_and_duplicate_names_are_rejected():
    x, y, W, c, s = _tiny_graph()
    with pytest.raises(UserError, match="unknown"):
        ModelSpec(inputs=[x], targets=y, params=[W, c], output=s, loss="hinge")
    twin = pytensor.shared(np.zeros(2), name="c")
    with pytest.raises(UserError, match="unique"):
        ModelSpec(inputs=[x], targets=y, params=[W, c, twin], output=s + twin)


# -- padding: variable-length sequences --------------------------------------------------
def padded_problem(n=37, max_t=9, seed=0):
    """A masked tanh RNN on sequences of random lengths, padded to ``max_t`` with garbage
    (which masked steps must ignore)."""
    import dataclasses

    from dhf import nets

    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_t + 1, n)
    x = rng.normal(size=(n, max_t, 2))
    y = rng.normal(size=(n, max_t, 1))
    mask = (np.arange(max_t) < lengths[:, None]).astype(float)
    mask[:, 0] = 0.0  # targets need not start at the first step
    spec = nets.recurrent(2, [4], 1, mask=True, seed=1)
    untrimmed = dataclasses.replace(spec, trim_padding=False)
    return spec, untrimmed, [x, y, mask], lengths


def test_trimmed_padding_gives_the_same_sums():
    spec, untrimmed, data, lengths = padded_problem()
    trimmed, full = Worker(spec, data, chunk_rows=8), Worker(untrimmed, data, chunk_rows=8)
    np.testing.assert_array_equal(trimmed.lengths, lengths)
    theta = trimmed.layout.flatten([p.get_value() for p in spec.params])
    rows = np.arange(0, 37, 2)
    np.testing.assert_allclose(trimmed.loss_sum(theta, rows), full.loss_sum(theta, rows),
                               rtol=1e-12)
    np.testing.assert_allclose(trimmed.grad_sum(theta, rows), full.grad_sum(theta, rows),
                               rtol=1e-11, atol=1e-13)
    v = np.random.default_rng(3).normal(size=theta.size)
    for w in (trimmed, full):
        w.prepare_curvature(theta, rows)
    np.testing.assert_allclose(trimmed.gv_sum(v, 0.3), full.gv_sum(v, 0.3),
                               rtol=1e-11, atol=1e-13)
    # the chunks really are cut: shortest rows first, each chunk to its longest row
    steps = [a[0].shape[1] for a in trimmed.chunk_data(trimmed.plan(rows))]
    assert steps == sorted(steps) and steps[0] < 9


def test_length_balanced_shards_partition_the_batch():
    spec, _, data, lengths = padded_problem(n=200, max_t=30)
    worker = Worker(spec, data)
    rows = np.arange(0, 200, 3)
    shards = [np.concatenate(worker.shard(rows, r, 4)) for r in range(4)]
    assert sorted(np.concatenate(shards).tolist()) == rows.tolist()
    work = [lengths[s].sum() for s in shards]
    chunk = 16  # rows per chunk: a small batch is cut into 16-row chunks
    assert max(work) - min(work) <= chunk * 30  # at most one chunk of longest rows apart


def test_lengths_are_read_from_the_mask_of_an_hdf5_file(tmp_path):
    from dhf import dataset

    spec, _, data, lengths = padded_problem()
    dataset.write(tmp_path / "d.h5", {"train": [a[:30] for a in data],
                                      "valid": [a[30:] for a in data]},
                  task="addition", task_params={}, seed=0)
    source = dataset.StackedSource([dataset.H5Source(tmp_path / "d.h5", "train"),
                                    dataset.H5Source(tmp_path / "d.h5", "valid")])
    np.testing.assert_array_equal(Worker(spec, source).lengths, lengths)


# -- chunk shapes under JAX --------------------------------------------------------------
def test_whole_chunks_divide_the_batch_where_a_size_can():
    from dhf.worker import MIN_CHUNK_ROWS, chunk_size

    assert chunk_size(10_000) == 64 and chunk_size(1_000) == 63
    assert chunk_size(10_000, whole=True) == chunk_size(1_000, whole=True) == 50
    for n in (10_000, 1_000, 600, 256, 97, 5):
        c = chunk_size(n, whole=True)
        assert MIN_CHUNK_ROWS <= c <= chunk_size(n) or c == chunk_size(n)
        # the largest such size that divides n, or none divides and the usual size
        dividing = [k for k in range(MIN_CHUNK_ROWS, chunk_size(n) + 1) if n % k == 0]
        assert c == (max(dividing) if dividing else chunk_size(n))


def test_on_a_gpu_a_batch_goes_in_as_few_chunks_as_its_ranks_can_share():
    """One chunk per rank where the cap allows (each chunk costs a round trip to the
    host: on an H200 the tanh RNN's Gv over 10 000 sequences took 59 ms in 16 chunks,
    7 ms in one); of one size under JAX; never more rows than the cap."""
    from dhf.worker import GPU_CHUNK_ROWS, MIN_CHUNK_ROWS, chunk_size, rows_per_rank

    assert chunk_size(10_000, GPU_CHUNK_ROWS, whole=True, ranks=1) == 10_000
    assert chunk_size(7_500, GPU_CHUNK_ROWS, whole=True, ranks=2) == 3_750
    assert chunk_size(5_000, 1024, whole=True, ranks=1) == 1_000  # run.chunk_rows
    assert rows_per_rank(5_000, 4, GPU_CHUNK_ROWS, whole=True, gpu=True) == [1250] * 4
    # a size that divides the batch only where it gives no rank a second call (the
    # JAX backend then compiles two shapes instead of one)
    assert rows_per_rank(1_000, 3, GPU_CHUNK_ROWS, whole=True, gpu=True) == [334, 334, 332]
    assert rows_per_rank(10_000, 3, GPU_CHUNK_ROWS, whole=True, gpu=True) == [
        3334, 3334, 3332]

    def busiest(n, c, ranks):  # the calls of the rank with the most chunks
        return math.ceil(math.ceil(n / c) / ranks)

    for n, ranks in [(10_000, 6), (7_500, 7), (10_000, 12), (40_000, 1), (999, 4)]:
        c = chunk_size(n, GPU_CHUNK_ROWS, whole=True, ranks=ranks)
        assert c <= GPU_CHUNK_ROWS
        even = min(GPU_CHUNK_ROWS, math.ceil(n / ranks))  # before looking for a divisor
        assert busiest(n, c, ranks) == busiest(n, even, ranks)
    # no batch, or fewer rows than ranks: chunks of MIN_CHUNK_ROWS, never of 0 or 1 row
    assert rows_per_rank(0, 2, GPU_CHUNK_ROWS, whole=True, gpu=True) == [0, 0]
    assert chunk_size(3, GPU_CHUNK_ROWS, whole=True, ranks=4) == MIN_CHUNK_ROWS
    assert chunk_size(5_000, 64, whole=True) == 50  # CPUs: as before


def test_a_gpu_workers_plan_shares_each_batch_among_its_ranks():
    from dhf import nets

    spec = nets.feedforward([3, 4, 2], loss="squared_error", dtype="float32")
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(900, 3)), rng.normal(size=(900, 2))]
    worker = Worker(spec, data, mode="JAX", chunk_rows=16384, gpu_ranks=2)
    chunks = worker.plan(np.arange(900))
    assert [len(c) for c in chunks] == [450, 450]
    assert [len(c) for c in worker.shard(np.arange(900), 1, 2)] == [450]
    np.testing.assert_array_equal(np.concatenate(chunks), np.arange(900))


def test_a_small_batch_is_cut_no_finer_than_a_quarter_of_chunk_rows():
    """16 chunks for a batch that has the rows, but a chunk no smaller than a quarter
    of ``chunk_rows``: the MNIST autoencoder's 375-row curvature batch went in 24-row
    chunks whose 2.8 M-value Gv each cost more than their rows."""
    from dhf.worker import chunk_size

    assert chunk_size(375, 512) == 128 and chunk_size(375, 512, whole=True) == 125
    assert chunk_size(402, 512, whole=True) == 67  # half the least chunk, 64, or more
    assert chunk_size(1147, 512, whole=True) == 128  # 37 divides it, but is too few rows
    assert chunk_size(20_000, 512) == 512 and chunk_size(4_000, 512) == 250
    assert chunk_size(375, 64) == 24 and chunk_size(100, 64) == 16  # sequences: as before
    assert chunk_size(10, 8) == 8 and chunk_size(100, 8) == 8  # a cap below the floor


def test_the_default_chunk_cap_follows_the_model_kind():
    from dhf import nets
    from dhf.backends import chunk_rows_of

    rnn = nets.rnn(1, 10, 1, seed=0)
    ff = nets.feedforward([4, 8, 2])
    cpu, gpu = {"chunk_rows": 0, "device": "cpu"}, {"chunk_rows": 0, "device": "gpu"}
    numba = {**cpu, "backend": "numba"}
    assert chunk_rows_of(numba, rnn) == 64 and chunk_rows_of(cpu, ff) == 512
    assert chunk_rows_of(gpu, ff) == chunk_rows_of(gpu, rnn) == 16384
    assert chunk_rows_of({"chunk_rows": 20, "device": "cpu"}, ff) == 20
    # JAX throughout: calls of many ~16-row chunks (dhf.worker.loops_chunks)
    jax = {**cpu, "backend": "jax"}
    assert chunk_rows_of(jax, rnn) == 256
    assert chunk_rows_of({**jax, "gv_backend": "numba"}, rnn) == 64


# -- fine chunks, several a call (JAX on a CPU) ------------------------------------------
def test_a_looped_call_sums_its_chunks_with_the_bits_of_calls_on_each_alone():
    """A looped call adds its chunks' exact parts on the device: those equal bit for bit
    the exact sum of the same function called on each chunk alone and split on the host
    (any count, any position in the call, the short last call).  This is what makes a
    batch's exact sum independent of how its chunks are dealt to ranks and calls (the
    rank-count trajectory tests in test_ranks.py check the same end to end)."""
    from dhf.reduction import ExactSum, Parts
    from dhf.worker import Chunks

    spec = rnn(2, 6, 1, loss="sigmoid_xent", output_steps="last", dtype="float32")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 5, 2))
    worker = Worker(spec, [x, (x[:, -1, :1] > 0).astype(float)], mode="JAX",
                    chunk_rows=64)
    assert worker.looped
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    v = rng.normal(size=theta.size)
    chunks = worker.plan(np.arange(150))
    assert [len(c) for c in chunks] == [15] * 10  # 150 rows: the divisor 15, 4 a call
    grads = list(worker.grad_chunks(theta, chunks))
    losses = list(worker.loss_chunks(theta, chunks))
    list(worker.curvature_chunks(theta, chunks))
    gvs = list(worker.gv_chunks(v, 0.3))
    assert [p.terms for p in grads] == [p.terms for p in gvs] == [4, 4, 2]
    for call, (lo, hi) in enumerate([(0, 4), (4, 8), (8, 10)]):
        alone = {"grad": [], "loss": [], "gv": []}
        for chunk in chunks[lo:hi]:
            data = worker._read(chunk)
            alone["grad"].append(np.append(worker._grad_fn(*data), len(chunk)))
            alone["loss"].append(np.append(worker._eval_fn(*data), len(chunk)))
            list(worker.curvature_chunks(theta, Chunks([chunk])))
            (one,) = worker.gv_chunks(v, 0.3)
            assert isinstance(one, Parts) and one.terms == 1
            alone["gv"].append(one.value)
        for kind, looped in (("grad", grads), ("loss", losses), ("gv", gvs)):
            np.testing.assert_array_equal(looped[call].parts,
                                          ExactSum.of(alone[kind]).parts, err_msg=kind)


def test_a_fine_plan_gives_every_rank_a_share_and_does_not_follow_the_rank_count():
    from dhf.worker import calls_of, chunk_size, chunks_per_rank

    # the default job's batches: 10 000 and 1 000 rows, calls of 256 rows at most
    assert chunk_size(10_000, 256, looped=True) == 16
    assert chunk_size(1_000, 256, looped=True) == 10
    assert chunk_size(375, 256, looped=True) == 15
    assert chunk_size(1_021, 256, looped=True) == 16  # a prime: 16s and a last 13
    for rows in (10_000, 1_000, 1_024):
        plans = {n: chunks_per_rank(rows, n, 256, whole=True, looped=True)
                 for n in (1, 2, 3, 4, 16, 64)}
        for n, share in plans.items():
            # the same chunks in the same order, whatever the rank count
            assert sum(share, []) == plans[1][0]
            if n <= rows // 16:
                assert all(share), (rows, n)  # every rank has rows to compute
        assert calls_of(plans[1][0], 256, looped=True) == -(-rows // 256) or rows == 1_000
    assert calls_of(plans[1][0], 256, looped=True) == 4  # 1 024 rows: 64 chunks, 16 a call
    assert calls_of([10] * 100, 256, looped=True) == 4  # 25 a call
    assert calls_of([16, 16, 13], 256, looped=True) == 2  # one size a call
    assert calls_of([16, 16, 13], 256) == 3


def test_the_jax_warm_up_compiles_every_chunk_shape_the_batches_will_use():
    """After warm_up(batches=...), a loss, gradient and Gv over those batches compile
    nothing more: the first update is not spent compiling."""
    pytest.importorskip("jax")
    rng = np.random.default_rng(SEED)
    spec = rnn(2, 3, 2, loss="sigmoid_xent", output_steps="last")
    x = rng.standard_normal((120, 4, 2))
    data = [x, (rng.random((120, 2)) > 0.5).astype(float)]
    worker = Worker(spec, data, mode="JAX")
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    batches = {"loss": [120, 37], "grad": [100], "curvature": [37]}
    worker.warm_up(theta, batches=batches)
    functions = [worker._eval_fn, worker._grad_fn, worker._forward_fn, worker._gv_fn]
    compiled = [f.shapes_compiled for f in functions]
    # chunks of 16 rows or a divisor down to 8, several a call: 120 = 8 x 15,
    # 37 = 2 x 16 + 5, 100 = 10 x 10; one compilation per chunk size
    assert worker.looped
    assert compiled == [3, 1, 2, 2]
    worker.loss_sum(theta, np.arange(120))
    worker.loss_sum(theta, np.arange(37))
    worker.grad_sum(theta, np.arange(100))
    worker.prepare_curvature(theta, np.arange(37))
    worker.gv_sum(np.ones(theta.size))
    assert [f.shapes_compiled for f in functions] == compiled


def test_under_jax_a_batch_with_a_one_row_tail_and_per_row_squared_gradients_work():
    """A static dimension of 1 is broadcastable to PyTensor, which a scan's outputs
    contradict: the last row joins the chunk before, and a row's own gradient is taken on
    the row twice.  Sums as the default backend's."""
    pytest.importorskip("jax")
    built = Model("rnn")
    spec, data = build_rnn(np.random.default_rng(SEED))
    jax_worker = Worker(spec, data, mode="JAX", chunk_rows=3)
    rows = np.arange(N_ROWS)  # 10 rows in chunks of at most 3: 3, 3, 4
    assert [len(c) for c in jax_worker.plan(rows)] == [3, 3, 4]
    np.testing.assert_allclose(jax_worker.loss_sum(built.theta, rows),
                               built.worker.loss_sum(built.theta, rows), rtol=1e-10)
    np.testing.assert_allclose(jax_worker.squared_grad_sum(built.theta, rows),
                               built.worker.squared_grad_sum(built.theta, rows), rtol=1e-10)
