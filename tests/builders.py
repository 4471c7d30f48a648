"""Shared builders of test inputs: a small model with its data (``dhf.train``'s tests and
the scripts they run), and HDF5 data files, good and bad, for the loader's tests."""
import h5py
import numpy as np
import pytensor
import pytensor.tensor as pt

import dhf

FAST = {"optimizer": {"gradient_batch": 120, "curvature_batch": 40, "backtrack_batch": 40,
                      "cg_max_iters": 20, "max_updates": 4, "init_damping": 0.05},
        "run": {"backend": "default", "stop_valid_error": -1.0}}


def autoencoder(n_visible=12, n_hidden=4, seed=0):
    """The tied-weight autoencoder of seeds/004: h = σ(xW + b_h), x̂ = σ(hWᵀ + b_v),
    binary cross-entropy; ``s`` is x̂'s pre-activation, the targets are the input."""
    rng = np.random.default_rng(seed)
    W = pytensor.shared(0.1 * rng.normal(size=(n_visible, n_hidden)), name="W")
    b_h = pytensor.shared(np.zeros(n_hidden), name="b_h")
    b_v = pytensor.shared(np.zeros(n_visible), name="b_v")
    x = pt.matrix("x")
    h = pt.sigmoid(pt.dot(x, W) + b_h)
    s = pt.dot(h, W.T) + b_v
    return dhf.ModelSpec(inputs=[x], targets=x, params=[W, b_h, b_v], output=s,
                         loss="sigmoid_xent")


def binary_data(n, n_visible=12, seed=1):
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 2, size=(3, n_visible))
    flips = rng.random((n, n_visible)) < 0.05
    return np.abs(prototypes[rng.integers(0, 3, n)] - flips).astype(float)


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
