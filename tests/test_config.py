"""Config resolution and the one-line errors a user sees."""
import pytest

from dhf import config
from dhf.errors import ConfigError


def test_defaults_then_file_then_set(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[optimizer]\ncg_max_iters = 100\ninit_damping = 2\n[task]\nT = 40\n")
    cfg = config.load(path, ["optimizer.cg_max_iters=300"])
    assert cfg["optimizer"]["cg_max_iters"] == 300
    assert cfg["optimizer"]["init_damping"] == 2.0 and cfg["task"]["T"] == 40
    assert cfg["run"]["seed"] == config.SCHEMA["run"]["seed"][0]


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = config.load(None, ["run.out=some dir", "optimizer.preconditioner=true"])
    path = tmp_path / "resolved.toml"
    path.write_text(config.to_toml(cfg))
    assert config.load(path) == cfg


@pytest.mark.parametrize("override,message", [
    ("optimizer.cg_max_iter=3", "unknown key optimizer.cg_max_iter; did you mean "
                                "optimizer.cg_max_iters?"),
    ("optimzer.cg_max_iters=3", "unknown section 'optimzer'; did you mean optimizer?"),
    ("optimizer.cg_decay=1.5", "optimizer.cg_decay = 1.5 is out of range; must be in [0.0, 1.0]"),
    ("task.T=0", "task.T = 0 is out of range; must be >= 1"),
    ("task.T=abc", "task.T must be int, got 'abc'"),
    ("run.dtype=float16", "run.dtype = 'float16'; expected one of float64, float32"),
    ("optimizer.curvature_batch=6000", "must be <= optimizer.gradient_batch"),
    ("optimizer.max_updates", "expected SECTION.KEY=VALUE"),
], ids=["typo-key", "typo-section", "range", "range-int", "type", "choice", "subset", "syntax"])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        config.load(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[optimizer]\ncg_max_iters = = 3\n")
    with pytest.raises(ConfigError, match=r"broken.toml: TOML syntax error: .*line 2"):
        config.load(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.toml: config file not found"):
        config.load("nope.toml")


def test_an_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nhiden = 3\n")
    with pytest.raises(ConfigError, match=f"^{path}: unknown key model.hiden; did you mean "
                                          "model.hidden"):
        config.load(path)
