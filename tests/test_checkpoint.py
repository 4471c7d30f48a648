"""Checkpoints: what they hold, and the one-line refusals of a checkpoint for another
optimiser, other parameters or another format; when a run stops
(:func:`dhf.run.stop_reason`)."""
import h5py
import numpy as np
import pytest

from dhf import checkpoint
from dhf.errors import CheckpointError
from dhf.layout import ParamLayout
from dhf.run import stop_reason
from dhf.rundir import Best


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


@pytest.mark.parametrize("update,valid_error,best,patience,expect", [
    (5, 0.0, (5, 0.0), 0, "solved"),
    (5, 0.2, (2, 0.1), 3, "early stopping"),
    (4, 0.2, (2, 0.1), 3, None),
    (9, 0.2, (2, 0.1), 0, None),
])
def test_stop_reasons(update, valid_error, best, patience, expect):
    best = Best(theta=None, error=best[1], update=best[0])
    validated = {"valid_error": valid_error, "valid_loss": 1.0}
    reason = stop_reason({"stop_valid_error": 0.0, "patience": patience}, update,
                         validated, best)
    assert (reason is None) if expect is None else reason.startswith(expect)


@pytest.mark.parametrize("patience, expect", [(0, None), (3, "early stopping: no better "
                                                          "validation loss in 3")])
def test_a_model_without_an_error_is_never_solved(patience, expect):
    """No error measure (valid_error None): a validation loss of 0 does not meet
    run.stop_valid_error = 0; run.patience follows the loss (the best's update)."""
    validated = {"valid_error": None, "valid_loss": 0.0}
    reason = stop_reason({"stop_valid_error": 0.0, "patience": patience}, 5, validated,
                         Best(theta=None, error=0.0, update=2))
    assert (reason is None) if expect is None else reason.startswith(expect)
    assert stop_reason({"stop_valid_error": 0.0, "patience": 3}, 5, {},
                       Best(theta=None, error=0.0, update=0)) is None
