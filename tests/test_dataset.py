"""HDF5 data sets and parameter files: round trips and the errors a user sees."""
import json

import h5py
import numpy as np
import pytest

from dhf import checkpoint, dataset, tasks
from dhf.cli import data_main, export_main, main
from dhf.config import load
from dhf.errors import CheckpointError, DataError
from dhf.layout import ParamLayout
from dhf.run import Best, _stop_reason
from tests.conftest import TINY, tiny_args
from tests.test_cli import metrics


def task_args():
    return [arg for item in TINY if item.startswith("task.") for arg in ("--set", item)]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "mem.h5"
    assert data_main(["memorization", "--out", str(path)] + task_args()) == 0
    return path


def test_data_file_round_trip(data_file):
    config = load(None, [item for item in TINY if item.startswith("task.")])
    expected = tasks.generate_splits(config, test=True)
    with h5py.File(data_file) as f:
        assert f.attrs["task"] == "memorization" and f.attrs["format_version"] == 1
        assert json.loads(f.attrs["task_params"])["T"] == 6
        assert set(f) == {"train", "valid", "test"}
    for split, arrays in expected.items():
        source = dataset.H5Source(data_file, split)
        rows = np.array([0, 3, 4, 9])
        for got, want in zip(source.read(rows), arrays):
            np.testing.assert_array_equal(got, want[rows])


def test_stacked_source_reads_across_the_boundary(data_file):
    train, valid = (dataset.H5Source(data_file, "train"),
                    dataset.H5Source(data_file, "valid"))
    both = dataset.StackedSource([train, valid])
    x, y = both.read(np.array([1, train.n_rows - 1, train.n_rows, train.n_rows + 5]))
    np.testing.assert_array_equal(x[2:], valid.read(np.array([0, 5]))[0])
    np.testing.assert_array_equal(y[:2], train.read(np.array([1, train.n_rows - 1]))[1])


def test_training_from_the_file_equals_training_from_the_generator(data_file, tmp_path):
    assert main(tiny_args() + ["--out", str(tmp_path / "gen")]) == 0
    assert main(tiny_args(f"data.path={str(data_file)!r}") +
                ["--out", str(tmp_path / "file")]) == 0
    assert [r["loss"] for r in metrics(tmp_path / "gen")] == \
        [r["loss"] for r in metrics(tmp_path / "file")]


def write_h5(path, train_x, train_y, valid_rows=20, attrs=None):
    with h5py.File(path, "w") as f:
        for split, (x, y) in {"train": (train_x, train_y),
                              "valid": (train_x[:valid_rows],
                                        train_y[:valid_rows])}.items():
            g = f.create_group(split)
            g["inputs"], g["targets"] = x, y
        f.attrs.update(attrs if attrs is not None else {"task": "memorization"})


def bad_files(tmp_path):
    x, y = np.zeros((600, 6, 1)), np.zeros((600, 1))
    cases = {}
    cases["missing"] = (tmp_path / "nope.h5", "data file not found")
    (tmp_path / "text.h5").write_text("not hdf5")
    cases["not-hdf5"] = (tmp_path / "text.h5", "not a readable HDF5 file")
    nan_x = x.copy()
    nan_x[417, 3, 0] = np.nan
    write_h5(tmp_path / "nan.h5", nan_x, y)
    cases["nan-row"] = (tmp_path / "nan.h5", "/train/inputs row 417 holds NaN or Inf")
    write_h5(tmp_path / "shape.h5", np.zeros((600, 6, 2)), y)
    cases["wrong-shape"] = (tmp_path / "shape.h5",
                            "/train/inputs has rows of shape (6, 2); "
                            "task memorization reads rows of shape (T, 1)")
    write_h5(tmp_path / "targets.h5", x, np.zeros((600, 2)))
    cases["wrong-targets"] = (tmp_path / "targets.h5", "/train/targets has rows of shape "
                                                       "(2,); task memorization reads rows "
                                                       "of shape (1,)")
    with h5py.File(tmp_path / "lengths.h5", "w") as f:
        f["train/inputs"], f["train/targets"] = x, y
        f["valid/inputs"], f["valid/targets"] = np.zeros((20, 5, 1)), y[:20]
        f.attrs["task"] = "memorization"
    cases["split-lengths"] = (tmp_path / "lengths.h5",
                              "/valid/inputs has rows of shape "
                              "(5, 1) but /train/inputs has (6, 1)")
    write_h5(tmp_path / "params.h5", x, y, attrs={"task": "memorization",
                                                  "task_params": "T = 6"})
    cases["task-params-not-json"] = (tmp_path / "params.h5",
                                     "attribute 'task_params' is not JSON")
    write_h5(tmp_path / "claims.h5", x, y, attrs={"task": "memorization",
                                                  "task_params": '{"T": 30}'})
    cases["task-params-T"] = (tmp_path / "claims.h5", "/train/inputs has rows of shape "
                                                      "(6, 1); task memorization with "
                                                      "T = 30 reads rows of shape (30, 1)")
    write_h5(tmp_path / "notask.h5", x, y, attrs={})
    cases["no-task"] = (tmp_path / "notask.h5", "attribute 'task' is missing")
    with h5py.File(tmp_path / "nodata.h5", "w") as f:
        f.create_group("train")["inputs"] = x
        f.create_group("valid")
        f.attrs["task"] = "memorization"
    cases["missing-dataset"] = (tmp_path / "nodata.h5", "dataset /train/targets is missing")
    write_h5(tmp_path / "strings.h5", x, np.array([b"a"] * 600))
    cases["wrong-dtype"] = (tmp_path / "strings.h5",
                            "/train/targets must be a numeric dataset")
    write_h5(tmp_path / "few.h5", x, y, valid_rows=1)
    cases["fewer-rows-than-ranks"] = (tmp_path / "few.h5", "/valid has 1 rows, fewer than")
    good = tmp_path / "good.h5"
    write_h5(good, x, y)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated"] = (truncated, str(truncated))
    return cases


@pytest.mark.parametrize("case", ["missing", "not-hdf5", "nan-row", "wrong-shape",
                                  "no-task", "missing-dataset", "wrong-dtype", "truncated",
                                  "wrong-targets", "split-lengths", "task-params-not-json",
                                  "task-params-T"])
def test_bad_data_files_give_one_line_errors(tmp_path, capsys, case):
    path, message = bad_files(tmp_path)[case]
    code = main(tiny_args(f"data.path={str(path)!r}") + ["--out", str(tmp_path / "run")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 2
    assert len(out) == 1 and message in out[0] and str(path) in out[0], out
    assert not (tmp_path / "run").exists()


def test_checkpoint_and_best_round_trip(tmp_path):
    layout = ParamLayout(["W", "b"], [(2, 3), (3,)])
    theta = np.arange(9.0)
    state = dict(theta=theta, cg_init=-theta, damping=0.25, update=7)
    checkpoint.save(tmp_path / "c.h5", state=state, optimizer="hf", best_theta=2 * theta,
                    best_valid_error=0.125, best_update=5, config_toml="[run]\n",
                    layout=layout)
    state = checkpoint.load(tmp_path / "c.h5", layout=layout)
    np.testing.assert_array_equal(state["cg_init"], -theta)
    assert (state["update"], state["damping"], state["best_update"]) == (7, 0.25, 5)
    np.testing.assert_array_equal(checkpoint.read_params(tmp_path / "c.h5")["W"],
                                  theta[:6].reshape(2, 3))
    with pytest.raises(CheckpointError, match="written by optimizer.name = 'hf'"):
        checkpoint.load(tmp_path / "c.h5", layout=layout, optimizer="sgd")
    other = ParamLayout(["W", "b"], [(2, 4), (4,)])
    with pytest.raises(CheckpointError, match="checkpoint is for parameters"):
        checkpoint.load(tmp_path / "c.h5", layout=other)
    with h5py.File(tmp_path / "c.h5", "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CheckpointError, match="format version 99"):
        checkpoint.load(tmp_path / "c.h5", layout=layout)


def test_export_writes_the_best_parameters_by_name(tmp_path):
    out = tmp_path / "run"
    assert main(tiny_args() + ["--out", str(out)]) == 0
    assert (out / "best.h5").exists()
    assert export_main([str(out), "--format", "npz"]) == 0
    assert export_main([str(out), "--format", "json"]) == 0
    npz = np.load(out / "params.npz")
    exported = json.loads((out / "params.json").read_text())
    as_json = exported["params"]
    best = checkpoint.read_params(out / "best.h5")
    order = ["W_in", "W_rec", "b_h", "h0", "W_out", "b_out"]  # the model's, everywhere
    assert list(best) == list(as_json) == npz.files[:-1] == order
    assert npz.files[-1] == "__model__"
    for name, value in best.items():
        np.testing.assert_array_equal(npz[name], value)
        np.testing.assert_allclose(np.array(as_json[name]), value, rtol=1e-15)
    model = exported["model"]
    assert json.loads(str(npz["__model__"])) == model and exported["dhf_params"] == 1
    assert (model["task"], model["T"], model["loss"]) == ("memorization", 6, "sigmoid_xent")
    assert model["output"] == "y_hat = sigmoid(s)" and "W of shape (inputs, outputs)" in \
        model["orientation"] and model["shapes"]["W_rec"] == [8, 8]


def test_exported_equations_compute_the_model_s_output(tmp_path):
    """The exported equations, coded in numpy from their text's orientation, give the
    run's own output: the metadata says what a user outside dhf needs."""
    from dhf import config, tasks
    from dhf.worker import Worker

    out = tmp_path / "run"
    assert main(tiny_args() + ["--out", str(out)]) == 0
    target = tmp_path / "m.json"
    assert export_main([str(out), "--out", str(target)]) == 0
    exported = json.loads(target.read_text())
    assert exported["model"]["equations"][0].startswith(
        "a_t = x_t @ W_in + h_{t-1} @ W_rec")
    p = {k: np.array(v) for k, v in exported["params"].items()}
    cfg = config.load(None, [a for a in tiny_args()[1::2]])
    x, y = tasks.generate_splits(cfg)["valid"][:2]
    x = x[:50].astype(float)
    h = np.broadcast_to(p["h0"], (len(x), p["h0"].size))
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ p["W_in"] + h @ p["W_rec"] + p["b_h"])
    s = h @ p["W_out"] + p["b_out"]
    loss = np.logaddexp(0, s) - y[:50] * s  # sigmoid_xent on s, per the export
    spec = tasks.get("memorization").build_model(cfg)
    for var, name in zip(spec.params, exported["params"]):
        var.set_value(p[name].astype(var.dtype))
    worker = Worker(spec, [x, y[:50].astype(float)])
    theta = worker.layout.flatten([v.get_value() for v in spec.params])
    np.testing.assert_allclose(worker.loss_sum(theta, np.arange(50))[0], loss.sum(),
                               rtol=1e-10)


@pytest.mark.parametrize("update,valid_error,best,patience,expect", [
    (5, 0.0, (5, 0.0), 0, "solved"),
    (5, 0.2, (2, 0.1), 3, "early stopping"),
    (4, 0.2, (2, 0.1), 3, None),
    (9, 0.2, (2, 0.1), 0, None),
])
def test_stop_reasons(update, valid_error, best, patience, expect):
    best = Best(theta=None, error=best[1], update=best[0])
    reason = _stop_reason({"stop_valid_error": 0.0, "patience": patience}, update,
                          valid_error, best)
    assert (reason is None) if expect is None else reason.startswith(expect)


def test_unreadable_data_error_type():
    with pytest.raises(DataError, match="data file not found"):
        dataset.file_task("/nonexistent/x.h5")


# -- fresh data -------------------------------------------------------------------------
def task_generator(name="addition", T=12):
    task = tasks.get(name)
    return lambda n, rng, first_row: task.generate({"T": T}, n, rng, first_row)


def test_fresh_rows_are_the_documented_draws():
    """Row ``u·FRESH_STRIDE + i`` is row ``i mod block`` of ``generate(block,
    default_rng([data_seed, run_seed, u, i // block, 1]), first_row)``, read in any
    order."""
    from dhf.data import FRESH_STRIDE

    generate = task_generator()
    source = dataset.FreshSource(generate, data_seed=11, run_seed=4, block=50)
    rows = 7 * FRESH_STRIDE + np.array([130, 3, 49, 50, 149])
    got = source.read(rows)
    for k, row in enumerate(rows):
        i = row - 7 * FRESH_STRIDE
        block = generate(50, np.random.default_rng([11, 4, 7, i // 50, 1]), i // 50 * 50)
        for g, b in zip(got, block):
            np.testing.assert_array_equal(g[k], b[i % 50])
    # Another run seed or update draws other sequences.
    other = dataset.FreshSource(generate, data_seed=11, run_seed=5, block=50)
    assert not np.array_equal(other.read(rows)[0], got[0])
    assert not np.array_equal(source.read(rows + FRESH_STRIDE)[0], got[0])


def test_fresh_source_keeps_only_the_update_being_read():
    source = dataset.FreshSource(task_generator(), data_seed=1, run_seed=0, block=10)
    from dhf.data import FRESH_STRIDE

    first = source.read(FRESH_STRIDE + np.arange(25))
    assert {u for u, _ in source._blocks} == {1}
    # A validation read through the stack reads no fresh row: the update's blocks stay.
    valid = dataset.ArraySource([np.zeros((5, 13, 2)), np.zeros((5, 13, 1)),
                                 np.ones((5, 13))])
    stacked = dataset.StackedSource([source, valid])
    x, y, mask = stacked.read(source.n_rows + np.arange(3))
    assert x.shape == (3, 13, 2) and mask.shape == (3, 13)
    assert {u for u, _ in source._blocks} == {1}
    source.read(2 * FRESH_STRIDE + np.arange(5))
    assert {u for u, _ in source._blocks} == {2}
    again = source.read(FRESH_STRIDE + np.arange(25))  # regenerated, identical
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_fresh_valid_and_test_sets_are_fixed_by_the_data_seed():
    cfg = load(None, ["task.name='addition'", "task.T=12", "task.n_valid=250"])
    a = tasks.generate_splits(cfg, test=True, train=False)
    b = tasks.generate_splits(cfg, test=True, train=False)
    assert set(a) == {"valid", "test"} and len(a["valid"][0]) == 250
    np.testing.assert_array_equal(a["valid"][0], b["valid"][0])
    assert not np.array_equal(a["valid"][0], a["test"][0])


@pytest.mark.parametrize("name, classes, block, sizes", [
    ("temporal_order_3bit", 8, 100, (1000, 10000)),
    ("noiseless_memorization_5bit", 32, 32, (32, 320)),
    ("random_permutation", 2, 100, (1000, 10000))])
def test_fresh_batches_are_class_balanced_as_the_releases_minibatches(name, classes, block,
                                                                      sizes):
    """The release balances each minibatch exactly (class ``b % k`` for row ``b``); fresh
    rows balance every batch of whole blocks the same way (5-bit memorisation: its 32
    patterns, each as often as the others)."""
    from dhf.data import FRESH_STRIDE

    T = {"noiseless_memorization_5bit": 11}.get(name, 12)
    source = dataset.FreshSource(task_generator(name, T), data_seed=3, run_seed=1,
                                 block=block)
    for n in sizes:
        x, y, mask = source.read(5 * FRESH_STRIDE + np.arange(n))
        if name == "temporal_order_3bit":
            label = y.max(axis=1).argmax(axis=1)
        elif name == "random_permutation":
            label = x[:, 0].argmax(axis=1)
        else:
            label = (x[:, :5].argmax(axis=2) * 2 ** np.arange(4, -1, -1)).sum(axis=1)
        counts = np.bincount(label, minlength=classes)
        assert counts.max() - counts.min() <= 1, (n, counts)


@pytest.mark.parametrize("sizes, block", [((10000, 1000, 1000, 1000), 100),
                                          ((320, 32, 32, 32), 32), ((100,), 100),
                                          ((300, 30), 30), ((7,), 7), ((1024, 512), 64)])
def test_fresh_blocks_divide_every_batch(sizes, block):
    assert dataset.fresh_block(sizes) == block


def test_dhf_data_keeps_an_existing_file_unless_forced(data_file, capsys):
    """A run trained on a file must not find other data there when it resumes."""
    before = data_file.read_bytes()
    assert data_main(["memorization", "--out", str(data_file), "--set", "task.T=5"]) == 2
    assert capsys.readouterr().out.strip().splitlines() == [
        f"rank 0: error: {data_file}: already exists; pass --force to overwrite it"]
    assert data_file.read_bytes() == before
    assert data_main(["memorization", "--out", str(data_file), "--force",
                      "--set", "task.T=5"]) == 0
    with h5py.File(data_file) as f:
        assert json.loads(f.attrs["task_params"])["T"] == 5


def test_resume_on_regenerated_data_is_refused_and_the_run_kept(data_file, tmp_path,
                                                                capsys):
    out = tmp_path / "run"
    args = tiny_args(f"data.path={str(data_file)!r}", "optimizer.max_updates=1")
    assert main(args + ["--out", str(out)]) == 0
    before = {f: (out / f).read_bytes() for f in ("checkpoint.h5", "config.toml",
                                                  "metrics.jsonl")}
    assert data_main(["memorization", "--out", str(data_file), "--force"] + task_args()
                     + ["--set", "task.seed=7"]) == 0
    capsys.readouterr()
    assert main(tiny_args(f"data.path={str(data_file)!r}", "optimizer.max_updates=2")
                + ["--out", str(out), "--resume"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "--resume on other data than the run trained on" in lines[0]
    assert {f: (out / f).read_bytes() for f in before} == before


def test_fingerprint_tells_data_apart():
    x = np.arange(600.0).reshape(100, 6, 1)
    same = dataset.fingerprint([dataset.ArraySource([x, x[:, 0]])])
    assert same == dataset.fingerprint([dataset.ArraySource([x.copy(), x[:, 0].copy()])])
    edited = x.copy()
    edited[99, 5, 0] = -1.0  # the last row is always sampled
    for other in ([edited, x[:, 0]], [x[:99], x[:99, 0]], [x.astype(np.float32), x[:, 0]]):
        assert dataset.fingerprint([dataset.ArraySource(other)]) != same
