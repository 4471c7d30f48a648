"""dhf-export: the best parameters by name, in the model's order, with the model's
equations; the equations, coded outside dhf, give the run's own output."""
import json

import numpy as np

from dhf import checkpoint
from dhf.cli import export_main, main
from tests.conftest import tiny_args


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


def test_a_directory_that_is_not_a_run_is_named_as_such(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert export_main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().out.strip() == (
        f"error: {tmp_path / 'empty'}: not a run directory of dhf-train (it has no "
        "best.h5 or checkpoint.h5)")
    assert export_main([str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: no such run directory" in capsys.readouterr().out
