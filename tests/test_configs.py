"""configs/: every built-in problem has a config; each loads and is current."""
from pathlib import Path

import pytest

from dhf import config as config_mod
from dhf import tasks
from scripts.make_configs import HAND_WRITTEN, reference, render

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_has_a_config_that_loads(name):
    path = CONFIGS / f"{name}.toml"
    assert path.exists(), f"{path} missing: run python scripts/make_configs.py"
    assert config_mod.load(path)["task"]["name"] == name


@pytest.mark.parametrize("name", sorted(set(tasks.TASKS) - HAND_WRITTEN))
def test_generated_configs_are_current(name):
    assert (CONFIGS / f"{name}.toml").read_text() == render(name), \
        "configs/ is stale: run python scripts/make_configs.py"


def test_config_reference_is_current():
    path = CONFIGS.parent / "docs" / "config.md"
    assert path.read_text() == reference(), \
        "docs/config.md is stale: run python scripts/make_configs.py"


@pytest.mark.parametrize("name, absent, present", [
    ("digits_autoencoder", ["T", "cell", "h0_scale", "loss_average", "fresh"],
     ["code", "nonlinearity", "n_valid"]),
    ("addition", ["nonlinearity", "code"], ["T", "cell", "h0_scale", "fresh"]),
    ("ff_xor", ["T", "cell", "code"], ["nonlinearity", "fresh"]),
])
def test_a_config_file_shows_the_keys_that_apply_to_its_problem(name, absent, present):
    """A key that means nothing for a task (a sequence length for an autoencoder) is left
    out of its file; loading the file still gives every key its value."""
    keys = {line.split("=")[0].strip() for line in
            (CONFIGS / f"{name}.toml").read_text().splitlines() if " = " in line}
    assert not keys & set(absent) and set(present) <= keys
    loaded = config_mod.load(CONFIGS / f"{name}.toml")
    assert all(key in loaded[section] for section, keys_ in config_mod.SCHEMA.items()
               for key in keys_)
