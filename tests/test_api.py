"""``dhf.train`` on a user's own graph: results, metrics, and one-line errors."""
import logging

import h5py
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import dhf
from dhf.comm import SerialComm
from dhf.errors import ConfigError, DataError, UserError
from tests.builders import FAST, autoencoder, binary_data


def test_train_an_autoencoder_from_arrays():
    spec = autoencoder()
    X, Xv = binary_data(400), binary_data(100, seed=2)
    result = dhf.train(spec, train=X, valid=Xv, config=FAST)
    assert set(result.params) == {"W", "b_h", "b_v"}
    assert result.params["W"].shape == (12, 4)
    assert [r["update"] for r in result.metrics] == [1, 2, 3, 4]
    losses = [r["loss"] for r in result.metrics]
    assert losses[-1] < 0.7 * losses[0]
    assert result.valid_error == result.metrics[-1]["valid_error"]
    # the model's shared variables hold the result, so the user's graph is trained
    np.testing.assert_array_equal(spec.params[0].get_value(), result.params["W"])
    assert result.out is None


def test_train_without_validation_keeps_files_when_asked(tmp_path):
    X = binary_data(300)
    result = dhf.train(autoencoder(), train=(X,), config=FAST, out=tmp_path / "run")
    assert result.valid_error is None and result.updates == 4
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    assert (tmp_path / "run" / "checkpoint.h5").exists()


def test_train_error_is_the_error_over_every_training_row():
    """run.train_error: the last row's train_error is the fraction of training rows with
    some output on the wrong side of ½ (the "sign" error), computed here in numpy from
    the returned parameters."""
    X, Xv = binary_data(400), binary_data(100, seed=2)
    config = {**FAST, "run": {**FAST["run"], "train_error": True}}
    result = dhf.train(autoencoder(), train=X, valid=Xv, config=config)
    p = result.params
    h = 1 / (1 + np.exp(-(X @ p["W"] + p["b_h"])))
    s = h @ p["W"].T + p["b_v"]
    expected = np.mean(np.any((s > 0) != (X > 0.5), axis=1))
    assert all(r["train_error"] is not None for r in result.metrics)
    assert result.metrics[-1]["train_error"] == pytest.approx(expected, abs=1e-12)
    assert expected != result.valid_error  # a different set of rows


def test_a_users_graph_trains_under_jax_as_under_the_default_backend():
    pytest.importorskip("jax")
    X, Xv = binary_data(400), binary_data(100, seed=2)
    results = {}
    for backend in ("default", "jax"):
        config = {**FAST, "run": {**FAST["run"], "backend": backend}}
        results[backend] = dhf.train(autoencoder(), train=X, valid=Xv, comm=SerialComm(),
                                     config=config)
    for key in ("loss", "valid_loss", "rho", "damping"):
        np.testing.assert_allclose([r[key] for r in results["jax"].metrics],
                                   [r[key] for r in results["default"].metrics],
                                   rtol=1e-6, err_msg=key)


def test_same_inputs_same_result():
    X = binary_data(300)
    a = dhf.train(autoencoder(), train=X, config=FAST, comm=SerialComm())
    b = dhf.train(autoencoder(), train=X, config=FAST, comm=SerialComm())
    np.testing.assert_array_equal(a.params["W"], b.params["W"])


@pytest.mark.parametrize("data, message", [
    ((np.zeros((10, 12)), np.zeros((10, 12))), "the model takes 1 arrays (x), got 2"),
    (np.zeros((10, 12, 1)), "train[0] (x): expected 2 dimensions, got shape (10, 12, 1)"),
    (np.array([["a"] * 12] * 10), "expected numbers"),
    (np.where(np.eye(10, 12) > 0, np.nan, 0.0), "train[0] (x) row 0 holds NaN or Inf"),
])
def test_bad_arrays_get_one_line_errors(data, message):
    with pytest.raises(DataError) as err:
        dhf.train(autoencoder(), train=data, config=FAST)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_rows_must_agree():
    x, y = pt.matrix("x"), pt.matrix("y")
    W = pytensor.shared(np.zeros((2, 1)), name="W")
    spec = dhf.ModelSpec(inputs=[x], targets=y, params=[W], output=pt.dot(x, W))
    with pytest.raises(DataError, match="y has 5 rows but x has 6"):
        dhf.train(spec, train=(np.zeros((6, 2)), np.zeros((5, 1))), config=FAST)


def test_wrong_width_names_the_data():
    with pytest.raises(DataError, match="the data does not fit the model"):
        dhf.train(autoencoder(), train=np.zeros((300, 7)), config=FAST)


def test_unknown_config_key_is_named():
    with pytest.raises(ConfigError, match="optimizer.cg_max_iter; did you mean "
                                          "optimizer.cg_max_iters"):
        dhf.train(autoencoder(), train=binary_data(300),
                  config={"optimizer": {"cg_max_iter": 3}})


def test_spec_errors():
    x = pt.matrix("x")
    W = pytensor.shared(np.ones((3, 3)), name="W")
    with pytest.raises(UserError, match=r"params\[0\].*is not a shared variable"):
        dhf.ModelSpec(inputs=[x], targets=x, params=[pt.matrix("W")], output=x)
    with pytest.raises(UserError, match="other than through the output s"):
        dhf.ModelSpec(inputs=[x], targets=x, params=[W], output=pt.dot(x, W),
                      loss=lambda s, y: pt.sum((s - y) ** 2, axis=1) + pt.sum(W ** 2))
    with pytest.raises(UserError, match="error 'top5' is unknown"):
        dhf.ModelSpec(inputs=[x], targets=x, params=[W], output=pt.dot(x, W), error="top5")


def test_callable_loss_and_abs_error():
    """A callable loss trains; the 'abs' error counts outputs beyond the tolerance."""
    rng = np.random.default_rng(0)
    x, y = pt.matrix("x"), pt.matrix("y")
    W = pytensor.shared(np.zeros((3, 1)), name="W")
    spec = dhf.ModelSpec(inputs=[x], targets=y, params=[W], output=pt.dot(x, W),
                         loss=lambda s, t: pt.sum(pt.sqr(s - t), axis=1),
                         error="abs", error_tolerance=0.05)
    X = rng.normal(size=(300, 3))
    Y = X @ np.array([[1.0], [-2.0], [0.5]])
    # Curvature on the whole gradient batch and almost no damping: Newton's method on a
    # quadratic, exact in one update.
    config = {**FAST, "optimizer": {**FAST["optimizer"], "init_damping": 1e-8,
                                    "min_damping": 1e-9, "curvature_batch": 120,
                                    "max_updates": 2}}
    result = dhf.train(spec, train=(X, Y), valid=(X[:50], Y[:50]), config=config)
    np.testing.assert_allclose(result.params["W"].ravel(), [1.0, -2.0, 0.5], atol=1e-6)
    assert result.metrics[0]["rho"] == pytest.approx(1.0, abs=1e-6)
    assert result.valid_error == 0.0
    # at θ = 0 every row whose target is further than 0.05 from 0 is wrong
    _, errors, count = dhf.Worker(spec, [X, Y]).loss_sum(np.zeros(3), np.arange(300))
    assert (errors, count) == (np.sum(np.abs(Y) > 0.05), 300)


def test_a_model_without_an_error_measure_has_no_error_and_nothing_stops_on_it(tmp_path):
    """A regression MLP with the squared-error loss names no error measure: its
    validation error is None (not 0, which met run.stop_valid_error = 0 and ended the
    run after one update as 'solved'); run.stop_valid_error never stops it, and the best
    θ and run.patience follow the validation loss."""
    rng = np.random.default_rng(0)
    x, y = pt.matrix("x"), pt.matrix("y")
    W1 = pytensor.shared(0.5 * rng.normal(size=(3, 8)), name="W1")
    W2 = pytensor.shared(0.5 * rng.normal(size=(8, 1)), name="W2")
    spec = dhf.ModelSpec(inputs=[x], targets=y, params=[W1, W2],
                         output=pt.dot(pt.tanh(pt.dot(x, W1)), W2), loss="squared_error")
    X = rng.normal(size=(300, 3))
    Y = np.sin(X @ np.array([[1.0], [-2.0], [0.5]]))
    config = {**FAST, "optimizer": {**FAST["optimizer"], "max_updates": 5},
              "run": {**FAST["run"], "stop_valid_error": 0.0}}
    result = dhf.train(spec, train=(X, Y), valid=(X[:60], Y[:60]), config=config,
                       out=tmp_path / "run")
    assert result.updates == 5
    assert result.valid_error is None
    assert all(r["valid_error"] is None and r["valid_loss"] is not None
               for r in result.metrics)
    losses = [r["valid_loss"] for r in result.metrics]
    best = int(np.argmin(losses))
    with h5py.File(tmp_path / "run" / "best.h5", "r") as f:
        assert f.attrs["update"] == best + 1
        assert f.attrs["valid_loss"] == losses[best] and "valid_error" not in f.attrs
        np.testing.assert_array_equal(f["params/W1"][()], result.best_params["W1"])


@pytest.mark.mpi
def test_ranks_train_to_the_serial_result(comm):
    """Under mpiexec the unchanged call splits every batch over the ranks and returns
    the one-process result on every rank."""
    X = binary_data(300)
    spread = dhf.train(autoencoder(), train=X, valid=X[:60], config=FAST, comm=comm)
    alone = dhf.train(autoencoder(), train=X, valid=X[:60], config=FAST, comm=SerialComm())
    close = all(np.allclose(spread.params[k], alone.params[k], rtol=1e-8, atol=1e-12)
                for k in alone.params)
    failures = comm.allreduce_sum(np.array([0.0 if close else 1.0]))[0]
    assert failures == 0, f"rank {comm.rank}: {spread.metrics} vs {alone.metrics}"


@pytest.mark.mpi
def test_other_data_on_another_rank_is_refused_on_every_rank(comm):
    """Each rank passing its own slice (or other rows) would train on a mixture: every
    rank refuses, naming the ranks that differ, before any work."""
    X = binary_data(300 - 10 * (comm.rank % 2))
    if comm.size == 1:
        pytest.skip("one rank: nothing to differ")
    with pytest.raises(DataError) as err:
        dhf.train(autoencoder(), train=X, config=FAST, comm=comm)
    odd = ", ".join(str(r) for r in range(1, comm.size, 2))
    assert str(err.value).startswith(f"train: ranks {odd} passed other data than rank 0")
    assert err.value.on_every_rank


def test_a_shared_variable_left_out_of_params_is_reported(caplog):
    spec = autoencoder()
    spec = dhf.ModelSpec(inputs=spec.inputs, targets=spec.targets, params=spec.params[:2],
                         output=spec.output, loss=spec.loss)
    logger = logging.getLogger("dhf.api")  # dhf-train's set-up stops propagation at "dhf"
    logger.addHandler(caplog.handler)
    try:
        dhf.train(spec, train=binary_data(300), config=FAST, comm=SerialComm())
    finally:
        logger.removeHandler(caplog.handler)
    assert "shared variables b_v are used by the model but not in params: they stay " \
           "fixed" in caplog.text


def test_the_documented_names_are_reachable_from_a_bare_import():
    """``import dhf`` then ``dhf.nets.feedforward(...)``, as docs/own-model.md writes it
    (a fresh interpreter: here the test session has imported the modules already)."""
    import subprocess
    import sys

    names = ["dhf.nets.feedforward", "dhf.nets.recurrent", "dhf.nets.init", "dhf.nets.rnn",
             "dhf.nets.mlp", "dhf.losses", "dhf.tasks.TASKS", "dhf.train", "dhf.ModelSpec"]
    done = subprocess.run([sys.executable, "-c", "import dhf; " + "; ".join(names)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def classifier(n_in=4, n_classes=3):
    x, y = pt.matrix("x"), pt.matrix("y")
    W = pytensor.shared(np.zeros((n_in, n_classes)), name="W")
    return dhf.ModelSpec(inputs=[x], targets=y, params=[W], output=pt.dot(x, W),
                         loss="softmax_xent")


@pytest.mark.parametrize("targets, message", [
    (np.arange(30.0).reshape(10, 3) % 3, "softmax_xent targets must lie in [0, 1], got "
                                         "values from 0 to 2 (integer labels? one-hot"),
    (np.full((10, 3), 0.5), "softmax_xent targets are one-hot rows (or probabilities "
                            "summing to 1); a row sums to 1.5"),
])
def test_softmax_targets_that_are_not_one_hot_are_refused_before_compiling(targets,
                                                                           message):
    with pytest.raises(DataError) as err:
        dhf.train(classifier(), train=(np.zeros((10, 4)), targets), config=FAST)
    assert message in str(err.value) and "train[1] (y)" in str(err.value)


def test_one_hot_and_probability_targets_train():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    result = dhf.train(classifier(), train=(X, np.eye(3)[labels]), config=FAST,
                       comm=SerialComm())
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"]


def test_default_batches_shrink_to_a_small_data_set_and_set_ones_stay():
    """docs/own-model.md's call with 300 rows: the defaults (5 000 + 1 000 rows) fit
    themselves to the data; a size the caller sets is kept (and checked)."""
    X = binary_data(300)
    result = dhf.train(autoencoder(), train=X, config={"optimizer": {"max_updates": 2}},
                       comm=SerialComm())
    assert result.updates == 2
    with pytest.raises(ConfigError, match="= 350 exceeds the 300 training rows"):
        dhf.train(autoencoder(), train=X, comm=SerialComm(),
                  config={"optimizer": {"max_updates": 1, "gradient_batch": 290,
                                        "backtrack_batch": 60}})


def test_full_batch_hf_trains_on_every_row_as_martens_2010():
    """gradient_batch = 0: the loss an update starts from is that of every training row
    (checked against the model's per-example losses at the initial θ, in numpy), and a
    data set too small for the minibatch defaults needs nothing else."""
    X = binary_data(300)
    spec = autoencoder()
    W, b_h, b_v = (p.get_value() for p in spec.params)
    h = 1 / (1 + np.exp(-(X @ W + b_h)))
    s = h @ W.T + b_v
    full_loss = np.mean(np.sum(np.logaddexp(0, s) - X * s, axis=1))
    config = {"optimizer": {"gradient_batch": 0, "curvature_batch": 100, "max_updates": 3,
                            "init_damping": 0.05, "cg_max_iters": 20},
              "run": {"backend": "default", "stop_valid_error": -1.0}}
    result = dhf.train(spec, train=X, config=config, comm=SerialComm())
    assert result.metrics[0]["loss"] == pytest.approx(full_loss, rel=1e-10)
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"]
    with pytest.raises(ConfigError, match="curvature_batch = 400 exceeds the 300"):
        dhf.train(autoencoder(), train=X, comm=SerialComm(),
                  config={"optimizer": {"gradient_batch": 0, "curvature_batch": 400}})


TRAIN_SCRIPT = """
import logging, sys
import numpy as np
sys.path.insert(0, {root!r})
from tests.builders import FAST, autoencoder, binary_data
import dhf
if {basic}:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
dhf.train(autoencoder(), train=binary_data(300), config=FAST, verbose={verbose})
"""


@pytest.mark.slow
@pytest.mark.parametrize("ranks, basic, verbose, lines", [
    (1, False, True, 4), (1, False, False, 0), (2, True, True, 4), (2, True, False, 0)])
def test_dhf_train_reports_progress_once_from_rank_0(tmp_path, ranks, basic, verbose,
                                                     lines):
    """In a notebook dhf.train shows its updates by default; under mpirun only rank 0
    does, even with logging configured on every rank; verbose=False keeps it quiet."""
    import subprocess
    import sys

    from tests.conftest import ROOT, venv_bin

    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(root=str(ROOT), basic=basic, verbose=verbose))
    launch = [venv_bin("mpiexec"), "-n", str(ranks)] if ranks > 1 else []
    done = subprocess.run(launch + [sys.executable, str(script)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = (done.stdout + done.stderr).splitlines()
    assert sum(ln.startswith("update ") for ln in printed) == lines, printed


def test_a_full_disk_is_one_error_on_every_rank_and_the_checkpoint_stays(tmp_path,
                                                                         monkeypatch):
    """Rank 0's writes go through one shared decision: a failed write is a UserError on
    every rank (none is left waiting in the next collective), naming the run."""
    import errno

    from dhf import rundir

    out = tmp_path / "run"
    dhf.train(autoencoder(), train=binary_data(300), config=FAST, out=out,
              comm=SerialComm())
    before = (out / "checkpoint.h5").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "_append", full)
    more = {**FAST, "optimizer": {**FAST["optimizer"], "max_updates": 6}}
    with pytest.raises(UserError, match=r"run: cannot write the run \(No space left on "
                                        r"device\); its last checkpoint stays"):
        dhf.train(autoencoder(), train=binary_data(300), config=more, out=out,
                  resume=True, comm=SerialComm())
    assert (out / "checkpoint.h5").read_bytes() == before
