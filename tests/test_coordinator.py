"""The HF loop against closed-form answers, and K simulated shards against one."""
import math

import numpy as np
import pytest

from dhf import nets
from dhf.comm import SerialComm
from dhf.coordinator import HFConfig, HFOptimizer
from dhf.data import BatchSampler, shard_bounds
from dhf.worker import Chunks, Worker

N, D = 120, 4


@pytest.fixture(scope="module")
def linear_problem():
    """Noise-free least squares: f(θ) = ½‖Xw + b − y‖² per row, a quadratic with G = H."""
    rng = np.random.default_rng(666)
    X = rng.normal(size=(N, D))
    w_true, b_true = rng.normal(size=(D, 1)), rng.normal(size=1)
    y = X @ w_true + b_true
    spec = nets.mlp([D, 1], loss="squared_error", seed=1)
    return spec, [X, y], np.concatenate([w_true.ravel(), b_true])


def optimizer_for(worker, n_rows, **cfg):
    defaults = dict(init_damping=1e-12, min_damping=0.0, cg_max_iters=50, cg_tol=1e-14)
    # Gradient = curvature = the first n_rows - 20 rows in some order; 20 held out.
    sampler = BatchSampler(n_rows, n_rows - 20, n_rows - 20, 20, seed=3)
    return HFOptimizer(worker, SerialComm(), HFConfig(**{**defaults, **cfg}), sampler)


def test_undamped_step_on_a_quadratic_is_the_newton_step(linear_problem):
    """With λ ≈ 0 one update lands on the minimiser, and ρ = 1 (the model is exact)."""
    spec, data, theta_true = linear_problem
    worker = Worker(spec, data)
    opt = optimizer_for(worker, N)
    state = opt.init(np.zeros(D + 1))
    state, info = opt.step(state)
    np.testing.assert_allclose(state.theta, theta_true, rtol=1e-8, atol=1e-8)
    assert info.accepted and info.step_size == 1.0
    assert info.rho == pytest.approx(1.0, abs=1e-6)


def test_damping_falls_when_the_model_is_good(linear_problem):
    spec, data, _ = linear_problem
    opt = optimizer_for(Worker(spec, data), N, init_damping=1.0, min_damping=1e-6)
    state, info = opt.step(opt.init(np.zeros(D + 1)))
    assert info.rho > 0.75 and state.damping == pytest.approx(2.0 / 3.0)


class ShardedWorker:
    """K in-process workers, each over its own contiguous run of the batch's chunks: a
    simulated K-rank Allreduce (the optimiser sums every chunk's result exactly)."""

    def __init__(self, workers):
        self.workers = workers
        self.layout = workers[0].layout

    def _split(self, chunks):
        k = len(self.workers)
        return [Chunks(chunks[slice(*shard_bounds(len(chunks), r, k))]) for r in range(k)]

    def shard(self, rows, rank, size):  # the optimiser runs as one rank of one
        return self.workers[0].shard(rows, rank, size)

    def _chunks(self, method, theta, chunks):
        for w, part in zip(self.workers, self._split(chunks)):
            yield from getattr(w, method)(theta, part)

    def loss_chunks(self, theta, chunks):
        return self._chunks("loss_chunks", theta, chunks)

    def grad_chunks(self, theta, chunks):
        return self._chunks("grad_chunks", theta, chunks)

    def curvature_chunks(self, theta, chunks):
        return self._chunks("curvature_chunks", theta, chunks)

    def gv_chunks(self, v, structural_weight=0.0):
        for w in self.workers:
            yield from w.gv_chunks(v, structural_weight)


@pytest.fixture(scope="module")
def rnn_problem():
    rng = np.random.default_rng(666)
    x = rng.integers(0, 2, size=(200, 5, 1)).astype(float)
    spec = nets.rnn(1, 6, 1, seed=2)
    return spec, [x, x[:, 0, :].copy()]


def run_updates(worker, n_updates=3):
    cfg = HFConfig(init_damping=0.5, structural_damping=0.3, cg_max_iters=20)
    opt = HFOptimizer(worker, SerialComm(), cfg, BatchSampler(200, 120, 40, 50, seed=5))
    state = opt.init(worker.layout.flatten(
        [p.get_value() for p in worker.workers[0].spec.params]
        if hasattr(worker, "workers") else
        [p.get_value() for p in worker.spec.params]))
    infos = []
    for _ in range(n_updates):
        state, info = opt.step(state)
        infos.append(info)
    return state, infos


def test_three_simulated_shards_give_the_full_batch_trajectory(rnn_problem):
    spec, data = rnn_problem
    theta0 = [p.get_value() for p in spec.params]
    full_state, full = run_updates(Worker(spec, data))
    for p, v in zip(spec.params, theta0):
        p.set_value(v)
    shard_state, sharded = run_updates(
        ShardedWorker([Worker(spec, data) for _ in range(3)]))
    for a, b in zip(full, sharded):  # exact sums: the same bits, not just close
        assert a._replace(seconds=0.0, times={}) == b._replace(seconds=0.0, times={})
    np.testing.assert_array_equal(shard_state.theta, full_state.theta)


@pytest.mark.parametrize("preconditioner", [False, True])
def test_cg_on_a_jax_device_takes_the_host_paths_bits(rnn_problem, monkeypatch,
                                                      preconditioner):
    """``cg_on_device``: CG's vectors stay where JAX computes and its dot products are
    taken there (dhf.reduction_jax); the trajectory is the host path's, bit for bit."""
    pytest.importorskip("jax")
    from dhf import reduction_jax

    spec, data = rnn_problem
    theta0 = [p.get_value() for p in spec.params]
    device_dots = []
    monkeypatch.setattr(reduction_jax, "dot", lambda a, b, _dot=reduction_jax.dot: (
        device_dots.append(type(a).__module__) or _dot(a, b)))
    runs = []
    for on_device in (False, True):
        for p, v in zip(spec.params, theta0):
            p.set_value(v)
        worker = Worker(spec, data, mode="JAX", chunk_rows=64)
        cfg = HFConfig(init_damping=0.5, structural_damping=0.3, cg_max_iters=20,
                       preconditioner=preconditioner)
        opt = HFOptimizer(worker, SerialComm(), cfg, BatchSampler(200, 120, 40, 50, seed=5),
                          cg_on_device=on_device)
        state = opt.init(worker.layout.flatten(theta0))
        infos = []
        for _ in range(3):
            state, info = opt.step(state)
            infos.append(info._replace(seconds=0.0, times={}))
        runs.append((state, infos))
    (host_state, host), (device_state, device) = runs
    assert device_dots and all(m.startswith("jax") for m in device_dots)
    assert host == device and sum(i.cg_iters for i in host) > 10
    np.testing.assert_array_equal(device_state.theta, host_state.theta)
    np.testing.assert_array_equal(device_state.cg_init, host_state.cg_init)


class FaultyWorker:
    """Wraps a worker and poisons one of its outputs with NaN."""

    def __init__(self, worker, poison):
        self.worker, self.poison, self.layout = worker, poison, worker.layout

    def __getattr__(self, name):
        method = getattr(self.worker, name)
        if name != self.poison:
            return method
        return lambda *a, **k: (x * math.nan for x in method(*a, **k))


@pytest.mark.parametrize("poison", ["grad_chunks", "gv_chunks", "loss_chunks"])
def test_nonfinite_values_reject_the_step_and_raise_damping(linear_problem, poison):
    spec, data, _ = linear_problem
    opt = optimizer_for(FaultyWorker(Worker(spec, data), poison), N, init_damping=1.0)
    state0 = opt.init(np.zeros(D + 1))
    state, info = opt.step(state0)
    assert not info.accepted and info.step_size == 0.0
    assert state.damping == pytest.approx(1.5)
    np.testing.assert_array_equal(state.theta, state0.theta)
    if poison == "loss_chunks":  # CG ran on finite numbers: its solution is kept, as
        # Martens' code keeps it after any rejected step (reject_warm_start = "keep")
        assert np.any(state.cg_init) and np.all(np.isfinite(state.cg_init))
    else:  # no CG ran
        assert not np.any(state.cg_init)


class NegativeCurvatureWorker(FaultyWorker):
    """Gv that turns negative after ``good`` calls: CG meets a direction of negative
    curvature (what a non-PSD curvature estimate, or a bug in one, would do)."""

    def __init__(self, worker, good):
        super().__init__(worker, poison=None)
        self.calls, self.good = 0, good

    def gv_chunks(self, v, structural_weight=0.0):
        self.calls += 1
        sign = 1.0 if self.calls <= self.good else -1.0
        return (sign * 1e3 * x for x in self.worker.gv_chunks(v, structural_weight))


@pytest.mark.parametrize("good", [0, 2])
def test_a_cg_breakdown_raises_damping_and_resets_the_warm_start(linear_problem, good):
    spec, data, _ = linear_problem
    worker = NegativeCurvatureWorker(Worker(spec, data), good)
    opt = optimizer_for(worker, N, init_damping=1.0)
    state, info = opt.step(opt.init(np.zeros(D + 1)))
    assert info.cg_status == "negative_curvature" and info.cg_breakdown
    assert info.metrics()["cg_breakdown"] is True
    assert info.cg_iters == good
    assert state.damping == pytest.approx(1.5)
    assert not np.any(state.cg_init)


class SkewedWorker:
    """Rank 1's kernels rounding otherwise (another CPU's BLAS): every chunk result off by
    a relative 1e-13."""

    def __init__(self, worker):
        self.worker, self.layout = worker, worker.layout

    def __getattr__(self, name):
        method = getattr(self.worker, name)
        if not name.endswith("_chunks"):
            return method
        return lambda *a, **k: (x * (1 + 1e-13) for x in method(*a, **k))


@pytest.mark.mpi
def test_ranks_take_the_same_branches_when_one_rank_computes_otherwise(comm, rnn_problem):
    """Every decision (CG's stop, backtracking, Armijo, the damping rule) is taken from
    reduced sums, which are the same bits on every rank, and from dhf.reduction.dot of
    vectors that are too: a rank whose own arithmetic differs still follows the others,
    step for step, and no rank waits in a collective the others skipped."""
    spec, data = rnn_problem
    worker = Worker(spec, data)
    if comm.rank == 1:
        worker = SkewedWorker(worker)
    cfg = HFConfig(init_damping=0.5, structural_damping=0.3, cg_max_iters=20, l2=1e-4)
    opt = HFOptimizer(worker, comm, cfg, BatchSampler(200, 120, 40, 50, seed=5))
    state = opt.init(worker.layout.flatten([p.get_value() for p in spec.params]))
    infos = []
    for _ in range(4):
        state, info = opt.step(state)
        infos.append(info._replace(seconds=0.0, times={}))
    mine = (state.theta.tobytes(), state.damping, infos)
    same = comm.bcast(mine) == mine
    assert comm.allreduce_sum(np.array([0.0 if same else 1.0]))[0] == 0


def test_no_branch_is_taken_on_a_blas_dot_product():
    """The modules that decide (CG, the HF and SGD steps, damping, line search) use
    dhf.reduction.dot, never ``@``, np.dot or np.linalg.norm, whose bits depend on the
    BLAS and CPU."""
    import ast
    import inspect

    from dhf import cg, coordinator, damping, linesearch, sgd

    for module in (cg, coordinator, damping, linesearch, sgd):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)), \
                f"{module.__name__} line {node.lineno}: @"
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"dot", "vdot", "inner", "norm"} or (
                    isinstance(node.value, ast.Name) and node.value.id == "reduction"), \
                    f"{module.__name__} line {node.lineno}: .{node.attr}"


def test_each_update_counts_its_loss_evaluations(linear_problem):
    """The row of metrics.jsonl says how many loss evaluations backtracking and the line
    search spent (BacktrackInfo.evaluations, LineSearchInfo.tries), breakdown or not."""
    spec, data, _ = linear_problem
    for worker in (Worker(spec, data), NegativeCurvatureWorker(Worker(spec, data), 2)):
        opt = optimizer_for(worker, N, init_damping=1.0)
        _, info = opt.step(opt.init(np.zeros(D + 1)))
        row = info.metrics()
        assert row["backtrack_evals"] >= 1 and row["linesearch_tries"] >= 1


def test_each_update_says_where_its_time_went(linear_problem):
    """t_gradient + t_preconditioner + t_cg + t_search partition the update's seconds (up
    to the statements between the update's first clock and the phases'); Allreduce takes
    none of it in one process."""
    spec, data, _ = linear_problem
    opt = optimizer_for(Worker(spec, data), N, init_damping=1.0, preconditioner=True)
    _, info = opt.step(opt.init(np.zeros(D + 1)))
    row = info.metrics()
    phases = [row[f"t_{p}"] for p in ("gradient", "preconditioner", "cg", "search")]
    assert all(t > 0 for t in phases)
    assert info.seconds - 1e-3 < sum(phases) <= info.seconds
    assert 0 < row["t_gv"] < row["t_cg"]  # CG's Gv products, a part of CG
    assert row["t_allreduce"] == 0.0


@pytest.mark.parametrize("field, value, message", [
    ("backtrack", "relase", "HFConfig: optimizer.backtrack = 'relase'; expected one of "
                            "martens, release"),
    ("structural_d", "papr", "expected one of paper, release"),
    ("cg_max_iters", 0, "optimizer.cg_max_iters = 0 is out of range"),
    ("init_damping", math.nan, "optimizer.init_damping = nan must be finite"),
])
def test_a_config_built_in_code_is_checked_as_a_file_would_be(field, value, message):
    """HFConfig(backtrack="relase") used to run Martens' rule silently, and a misspelt
    structural_d crashed mid-update: both are refused when built, naming the field."""
    from dhf.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        HFConfig(**{field: value})
    assert message in str(refused.value)
