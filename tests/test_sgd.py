"""The SGD baseline against a momentum recursion written out in numpy."""
import json

import numpy as np
import pytest

from dhf import nets
from dhf.cli import main
from dhf.comm import SerialComm
from dhf.data import minibatch
from dhf.sgd import AdamOptimizer, SGDConfig, SGDOptimizer
from dhf.worker import Worker
from tests.conftest import tiny_args

N, SEED = 200, 3


def linear_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 3))
    Y = X @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(N, 2))
    spec = nets.mlp([3, 2], seed=1)  # s = x W0 + b0, loss ½‖s − y‖²
    return spec, X, Y


def analytic_grad(th, X, Y, rows):
    """The gradient of the mean of ½‖xW + b − y‖² over ``rows``."""
    W, b = th[:6].reshape(3, 2), th[6:]
    r = X[rows] @ W + b - Y[rows]
    return np.concatenate([(X[rows].T @ r).ravel(), r.sum(0)]) / len(rows)


def reference(theta, X, Y, cfg, updates):
    """Classical or Nesterov momentum with clipping, on the analytic gradient."""
    def grad(th, rows):
        return analytic_grad(th, X, Y, rows)

    v = np.zeros_like(theta)
    t = 0  # minibatch steps so far
    for u in range(1, updates + 1):
        for k in range(cfg.sgd_steps):
            mu = cfg.momentum
            if cfg.momentum_schedule == "sutskever2013":  # Sutskever et al. 2013, eq. 5
                mu = min(1 - 2 ** (-1 - np.log2(np.floor(t / 250) + 1)), cfg.momentum)
            t += 1
            rows = minibatch(N, cfg.sgd_batch, SEED, u, k)
            g = grad(theta + mu * v if cfg.nesterov else theta, rows)
            norm = np.linalg.norm(g)
            if cfg.clip_norm and norm > cfg.clip_norm:
                g = g * cfg.clip_norm / norm
            v = mu * v - cfg.learning_rate * g
            theta = theta + v
    return theta


def adam_reference(theta, X, Y, cfg, updates):
    """Kingma & Ba (2015), Algorithm 1, with the step counted over the whole run and the
    gradient clipped first."""
    m, v, k = np.zeros_like(theta), np.zeros_like(theta), 0
    for u in range(1, updates + 1):
        for step in range(cfg.sgd_steps):
            g = analytic_grad(theta, X, Y, minibatch(N, cfg.sgd_batch, SEED, u, step))
            norm = np.linalg.norm(g)
            if cfg.clip_norm and norm > cfg.clip_norm:
                g = g * cfg.clip_norm / norm
            k += 1
            m = cfg.adam_beta1 * m + (1 - cfg.adam_beta1) * g
            v = cfg.adam_beta2 * v + (1 - cfg.adam_beta2) * g ** 2
            m_hat, v_hat = m / (1 - cfg.adam_beta1 ** k), v / (1 - cfg.adam_beta2 ** k)
            theta = theta - cfg.learning_rate * m_hat / (np.sqrt(v_hat) + cfg.adam_epsilon)
    return theta


def run_sgd(cfg, updates, comm=None, optimizer=SGDOptimizer):
    spec, X, Y = linear_problem()
    worker = Worker(spec, [X, Y])
    opt = optimizer(worker, comm or SerialComm(), cfg, N, SEED)
    state = opt.init(worker.layout.flatten([p.get_value() for p in spec.params]))
    theta0 = state.theta
    infos = []
    for _ in range(updates):
        state, info = opt.step(state)
        infos.append(info)
    return theta0, state, infos, X, Y


@pytest.mark.parametrize("cfg", [
    SGDConfig(learning_rate=0.05, momentum=0.9, sgd_batch=20, sgd_steps=5),
    SGDConfig(learning_rate=0.05, momentum=0.9, nesterov=True, sgd_batch=20, sgd_steps=5),
    SGDConfig(learning_rate=0.05, momentum=0.5, clip_norm=0.1, sgd_batch=30, sgd_steps=4),
    SGDConfig(learning_rate=0.01, momentum=0.8, nesterov=True, sgd_batch=20,
              sgd_steps=300, momentum_schedule="sutskever2013"),
], ids=["momentum", "nesterov", "clipped", "nesterov-sutskever2013"])
def test_sgd_follows_the_momentum_recursion(cfg):
    theta0, state, infos, X, Y = run_sgd(cfg, updates=3)
    np.testing.assert_allclose(state.theta, reference(theta0, X, Y, cfg, 3),
                               rtol=1e-10, atol=1e-12)
    assert [i.update for i in infos] == [1, 2, 3]
    if cfg.clip_norm:
        assert infos[0].clipped > 0


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_adam_follows_kingma_and_ba(clip):
    cfg = SGDConfig(learning_rate=0.01, sgd_batch=20, sgd_steps=5, clip_norm=clip,
                    adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6)
    theta0, state, infos, X, Y = run_sgd(cfg, updates=3, optimizer=AdamOptimizer)
    np.testing.assert_allclose(state.theta, adam_reference(theta0, X, Y, cfg, 3),
                               rtol=1e-10, atol=1e-12)
    assert state.update == 3 and state.second_moment.min() >= 0


def test_dhf_train_adam_resumes_exactly(tmp_path):
    args = ["optimizer.name='adam'", "optimizer.sgd_batch=50", "optimizer.sgd_steps=10",
            "optimizer.learning_rate=0.003"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(tiny_args(*args, "optimizer.max_updates=4") + ["--out", str(straight)]) == 0
    assert main(tiny_args(*args, "optimizer.max_updates=2") + ["--out", str(split)]) == 0
    assert main(tiny_args(*args, "optimizer.max_updates=4")
                + ["--out", str(split), "--resume"]) == 0
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (straight, split)]
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]


def test_sgd_descends():
    cfg = SGDConfig(learning_rate=0.05, momentum=0.9, sgd_batch=20, sgd_steps=20)
    _, _, infos, _, _ = run_sgd(cfg, updates=3)
    assert infos[-1].loss < 0.2 * infos[0].loss


def test_divergence_keeps_the_last_good_parameters():
    cfg = SGDConfig(learning_rate=1e6, momentum=0.9, sgd_batch=20, sgd_steps=50)
    theta0, state, infos, _, _ = run_sgd(cfg, updates=1)
    assert np.isnan(infos[0].loss)
    np.testing.assert_array_equal(state.theta, theta0)


def test_adam_restarts_its_bias_correction_with_its_moments():
    """After a diverged update Adam's moments are zero again, and so is its step count:
    its next step is the first step of Kingma & Ba's algorithm, lr·sign(g) per
    coordinate (a step count carried on would make it lr·(1 − β₁)/√(1 − β₂) ≈ 3.2 lr)."""
    spec, X, Y = linear_problem()
    worker = Worker(spec, [X, Y])

    def adam(lr, steps):
        return AdamOptimizer(worker, SerialComm(), SGDConfig(learning_rate=lr, sgd_batch=20,
                                                             sgd_steps=steps), N, SEED)

    state = adam(0.01, 3).init(worker.layout.flatten([p.get_value() for p in spec.params]))
    state, _ = adam(0.01, 3).step(state)
    assert state.step == 3
    reset, info = adam(1e200, 5).step(state)  # θ overflows: the update is discarded
    assert np.isnan(info.loss) and reset.step == 0 and not reset.first_moment.any()
    np.testing.assert_array_equal(reset.theta, state.theta)
    after, _ = adam(0.01, 1).step(reset)
    moved = np.abs(after.theta - reset.theta)
    assert after.step == 1 and moved.max() == pytest.approx(0.01, rel=1e-4)


def sgd_args(*extra):
    return tiny_args("optimizer.name='sgd'", "optimizer.sgd_batch=50",
                     "optimizer.sgd_steps=10", *extra)


def test_dhf_train_sgd_resumes_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(sgd_args("optimizer.max_updates=4") + ["--out", str(straight)]) == 0
    assert main(sgd_args("optimizer.max_updates=2") + ["--out", str(split)]) == 0
    assert main(sgd_args("optimizer.max_updates=4")
                + ["--out", str(split), "--resume"]) == 0
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (straight, split)]
    assert [r["update"] for r in rows[1]] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]
    assert all("grad_norm" in r and "rho" not in r for r in rows[0])


def test_hf_checkpoint_is_not_resumed_by_sgd(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args("optimizer.max_updates=1") + ["--out", str(out)]) == 0
    capsys.readouterr()
    assert main(sgd_args() + ["--out", str(out), "--resume"]) != 0
    assert "written by optimizer.name = 'hf'" in capsys.readouterr().out


@pytest.mark.mpi
def test_sgd_ranks_follow_the_serial_trajectory(comm):
    cfg = SGDConfig(learning_rate=0.05, momentum=0.9, nesterov=True, sgd_batch=21,
                    sgd_steps=5)
    _, spread, _, _, _ = run_sgd(cfg, 2, comm)
    _, alone, _, _, _ = run_sgd(cfg, 2)
    close = np.allclose(spread.theta, alone.theta, rtol=1e-10, atol=1e-12)
    assert comm.allreduce_sum(np.array([0.0 if close else 1.0]))[0] == 0


def test_sgd_config_is_checked_when_built():
    from dhf.errors import ConfigError
    from dhf.sgd import SGDConfig

    with pytest.raises(ConfigError, match="SGDConfig: optimizer.momentum_schedule = "
                                          "'sutskever'; expected one of"):
        SGDConfig(momentum_schedule="sutskever")
