"""HDF5 data sets and parameter files: round trips and the errors a user sees."""
import json

import h5py
import numpy as np
import pytest

from dhf import dataset, tasks
from dhf.cli import data_main, main
from dhf.config import load
from dhf.errors import DataError
from tests.builders import bad_files
from tests.conftest import TINY, file_args, metrics, tiny_args


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


@pytest.mark.parametrize("case", ["missing", "not-hdf5", "nan-row", "wrong-shape",
                                  "no-task", "missing-dataset", "wrong-dtype", "truncated",
                                  "wrong-targets", "split-lengths", "task-params-not-json",
                                  "task-params-T"])
def test_bad_data_files_give_one_line_errors(tmp_path, capsys, case):
    path, message = bad_files(tmp_path)[case]
    code = main(file_args(path) + ["--out", str(tmp_path / "run")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 2
    assert len(out) == 1 and message in out[0] and str(path) in out[0], out
    assert not (tmp_path / "run").exists()


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
        f"error: {data_file}: already exists; pass --force to overwrite it"]
    assert data_file.read_bytes() == before
    assert data_main(["memorization", "--out", str(data_file), "--force",
                      "--set", "task.T=5"]) == 0
    with h5py.File(data_file) as f:
        assert json.loads(f.attrs["task_params"])["T"] == 5


def test_fingerprint_tells_data_apart():
    x = np.arange(600.0).reshape(100, 6, 1)
    same = dataset.fingerprint([dataset.ArraySource([x, x[:, 0]])])
    assert same == dataset.fingerprint([dataset.ArraySource([x.copy(), x[:, 0].copy()])])
    edited = x.copy()
    edited[99, 5, 0] = -1.0  # the last row is always sampled
    for other in ([edited, x[:, 0]], [x[:99], x[:99, 0]], [x.astype(np.float32), x[:, 0]]):
        assert dataset.fingerprint([dataset.ArraySource(other)]) != same


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
