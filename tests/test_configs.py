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
