"""Every built-in problem generates, builds its model and trains; task defaults apply
under the user's settings."""
import numpy as np
import pytest

from dhf import config as config_mod
from dhf import run, tasks
from dhf.dataset import ArraySource
from dhf.tasks import digits
from dhf.worker import Worker

#: The smallest T each problem accepts comfortably (its generator refuses smaller ones).
SMALL_T = {"noiseless_memorization_5bit": 11, "noiseless_memorization_20bit": 21,
           "memorization": 6}


def small(name, *extra):
    settings = [f"task.name={name!r}", f"task.T={SMALL_T.get(name, 12)}",
                "task.n_train=300", "task.n_valid=60", "model.hidden=6",
                "optimizer.gradient_batch=150", "optimizer.curvature_batch=50",
                "optimizer.backtrack_batch=50", "optimizer.linesearch_batch=50",
                "optimizer.cg_max_iters=5",
                "optimizer.max_updates=1", "run.backend='default'",
                "run.check_replicas_every=1", *extra]
    return config_mod.load(None, settings)


@pytest.mark.mpi
@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_trains_an_update(comm, tmp_path, name):
    """Each task's data, model and batches through an update, on one rank and under
    mpiexec -n 2.  (What changes with more ranks, uneven shards and ranks without a
    slice, is the tasks' shared code: tests/test_ranks.py runs it at 3 and 4.)"""
    if comm.size > 2:
        pytest.skip("a task at 4 ranks takes the paths it takes at 2")
    if name.startswith("digits"):
        pytest.importorskip("sklearn")
    result = run.train(small(name), comm, tmp_path / "run")
    assert result.updates == 1
    # an error rate, but for the autoencoder's squared reconstruction error per image
    most = 784 if name == "mnist_autoencoder" else 1
    assert np.isfinite(result.train_loss) and 0 <= result.valid_error <= most


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_trains_with_sgd(tmp_path, name):
    if name.startswith("digits"):
        pytest.importorskip("sklearn")
    config = small(name, "optimizer.name='sgd'", "optimizer.sgd_batch=20",
                   "optimizer.sgd_steps=3")
    from dhf.comm import SerialComm

    result = run.train(config, SerialComm(), tmp_path / "run")
    assert result.updates == 1 and np.isfinite(result.train_loss)


def test_task_defaults_sit_under_the_users_settings(tmp_path):
    cfg = config_mod.load(None, ["task.name='addition'"])
    assert cfg["task"]["T"] == 200 and cfg["optimizer"]["init_damping"] == 0.01
    assert cfg["model"]["init"] == "sparse" and cfg["model"]["input_scale"] == 0.25
    assert cfg["optimizer"]["gradient_batch"] == 10000
    path = tmp_path / "c.toml"
    path.write_text('[task]\nname = "addition"\nT = 50\n[optimizer]\ninit_damping = 0.5\n')
    cfg = config_mod.load(path, ["optimizer.init_damping=0.2"])
    assert (cfg["task"]["T"], cfg["optimizer"]["init_damping"]) == (50, 0.2)
    assert cfg["optimizer"]["curvature_batch"] == 1000  # still the task's
    # memorisation, theano-hf's task, keeps dhf's own defaults
    assert config_mod.load(None, ["task.name='memorization'"])["task"]["T"] == \
        config_mod.SCHEMA["task"]["T"][0]


def test_random_permutation_is_judged_at_the_last_step_only():
    cfg = small("random_permutation")
    spec = tasks.get("random_permutation").build_model(cfg)
    x, y, mask = tasks.get("random_permutation").generate(cfg["task"], 40,
                                                          np.random.default_rng(0))
    worker = Worker(spec, ArraySource([x, y, mask]))
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    worker.set_theta(theta)
    # Targets equal to the net's own argmax at the last step: no row may count as wrong,
    # whatever the other steps predict.
    import pytensor

    predict = pytensor.function([spec.inputs[0]], spec.output)
    s = predict(x.astype(spec.inputs[0].dtype))
    y_last = y.astype(float).copy()
    y_last[:, -1] = np.eye(y.shape[-1])[s[:, -1].argmax(-1)]
    _, errors, _ = Worker(spec, ArraySource([x, y_last, mask])).loss_sum(
        theta, np.arange(40))
    assert errors == 0
    y_last[:, -1] = np.roll(y_last[:, -1], 1, axis=-1)  # now every last step is wrong
    _, errors, _ = Worker(spec, ArraySource([x, y_last, mask])).loss_sum(
        theta, np.arange(40))
    assert errors == 40


def test_one_hot_data_is_stored_compactly():
    cfg = small("temporal_order_2bit")
    x, y, mask = tasks.get("temporal_order_2bit").generate(cfg["task"], 10,
                                                           np.random.default_rng(0))
    assert x.dtype == y.dtype == mask.dtype == np.uint8


def test_digits_splits_are_disjoint_and_complete():
    pytest.importorskip("sklearn")
    task = tasks.get("digits")
    params = {"n_train": 10000, "n_valid": 200, "seed": 5}
    parts = task.splits(params, test=True)
    pixels, labels = digits.load()
    rows = {}
    for name, (x, y) in parts.items():
        rows[name] = {pixels.tolist().index(r) for r in x[:5].tolist()}
        assert x.shape[1] == 64 and y.shape[1] == 10 and np.all(y.sum(1) == 1)
    assert sum(len(p[0]) for p in parts.values()) == 1797
    assert len(parts["valid"][0]) == len(parts["test"][0]) == 200
    x_all = np.concatenate([p[0] for p in parts.values()])
    assert len(np.unique(x_all, axis=0)) == len(np.unique(pixels, axis=0))


def test_plant_follows_its_dynamics():
    """With a constant control u = (0, c), the net's output is the plant's state after T
    steps of p += 0.2 v, v += c tanh(p) (hessianfree demos.plant), iterated in numpy."""
    import pytensor

    from dhf.tasks import plant

    cfg = small("plant", "task.T=7")
    spec = plant.build_model(cfg)
    params = {p.name: p for p in spec.params}
    params["W_out"].set_value(np.zeros_like(params["W_out"].get_value()))
    params["b_out"].set_value(np.array([5.0, 0.3]))
    z0, _ = plant.generate(cfg["task"], 6, np.random.default_rng(1))
    final = pytensor.function(spec.inputs, spec.output)(z0)
    p, v = z0[:, 0].copy(), z0[:, 1].copy()
    for _ in range(7):
        p, v = p + 0.2 * v, v + 0.3 * np.tanh(p)
    np.testing.assert_allclose(final, np.column_stack([p, v]), rtol=1e-12)


def test_memorization_takes_the_general_net_when_asked_for_its_options():
    """The fast theano-hf net has no input scale or spectral radius: asking for them
    builds the general one, which honours them."""
    fast = tasks.get("memorization").build_model(small("memorization"))
    general = tasks.get("memorization").build_model(small("memorization",
                                                          "model.spectral_radius=1.1"))
    assert [p.name for p in fast.params][:2] == ["W_in", "W_rec"]
    W_rec = {p.name: p for p in general.params}["W_rec_0"].get_value()
    assert np.max(np.abs(np.linalg.eigvals(W_rec))) == pytest.approx(1.1)


def test_every_task_has_one_of_the_two_written_shapes():
    """dhf.tasks.base's interfaces, not hasattr: each built-in task is a Task that either
    generates its data or holds a fixed set."""
    from dhf.tasks.base import FixedTask, GeneratedTask, Task

    for name, task in tasks.TASKS.items():
        assert isinstance(task, Task), name
        assert isinstance(task, GeneratedTask) != isinstance(task, FixedTask), name


def test_the_optimisers_are_what_run_drives():
    from dhf.comm import SerialComm
    from dhf.nets import mlp
    from dhf.optimizer import Optimizer
    from dhf.optimizers import make_optimizer

    worker = Worker(mlp([2, 1]), [np.zeros((300, 2)), np.zeros((300, 1))])
    for name in ("hf", "sgd", "adam"):
        cfg = config_mod.load(None, ["task.name='memorization'",
                                     f"optimizer.name='{name}'",
                                     "optimizer.gradient_batch=100",
                                     "optimizer.curvature_batch=50",
                                     "optimizer.backtrack_batch=50"])
        assert isinstance(make_optimizer(cfg, worker, SerialComm(), 300), Optimizer), name


def test_task_kinds_say_which_tasks_are_recurrent():
    from dhf import tasks

    assert "recurrent" in tasks.kinds("memorization")
    assert "recurrent" in tasks.kinds("addition") and "generated" in tasks.kinds("addition")
    assert tasks.kinds("mnist_autoencoder") == {"feedforward", "autoencoder", "mnist"}
