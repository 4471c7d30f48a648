"""Config resolution and the one-line errors a user sees."""
import pytest

from dhf import config
from dhf.errors import ConfigError
from tests.conftest import SHORTEST_T


def test_defaults_then_file_then_set(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[optimizer]\ncg_max_iters = 100\ninit_damping = 2\n[task]\nT = 40\n")
    cfg = config.load(path, ["optimizer.cg_max_iters=300"])
    assert cfg["optimizer"]["cg_max_iters"] == 300
    assert cfg["optimizer"]["init_damping"] == 2.0 and cfg["task"]["T"] == 40
    assert cfg["run"]["seed"] == config.SCHEMA["run"]["seed"][0]


def test_a_config_that_names_no_task_runs_the_default_job(tmp_path):
    """The default job is 2-bit temporal order at T = 100 with Martens & Sutskever's
    recipe, exactly as configs/ms2011/temporal_order_2bit.toml writes it out; a T given
    alone changes its length; naming a task (or a data file) leaves it."""
    from tests.conftest import ROOT

    recipe = config.load(ROOT / "configs" / "ms2011" / "temporal_order_2bit.toml")
    assert config.load(None) == recipe
    assert (recipe["task"]["name"], recipe["task"]["T"]) == ("temporal_order_2bit", 100)
    assert config.load(None, ["task.T=50"])["task"]["T"] == 50
    assert config.load(None, ["task.name='addition'"])["task"]["T"] == 200
    named = config.load(None, ["task.name='memorization'"])
    assert (named["task"]["T"], named["data"]["fresh"]) == (20, False)
    path = tmp_path / "c.toml"
    path.write_text("[task]\nname = 'memorization'\n")
    assert config.load(path, ["task.T=30"])["task"]["name"] == "memorization"


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = config.load(None, ["run.out=some dir", "optimizer.preconditioner=true"])
    path = tmp_path / "resolved.toml"
    path.write_text(config.to_toml(cfg))
    assert config.load(path) == cfg


@pytest.mark.parametrize("override,message", [
    ("optimizer.cg_max_iter=3", "unknown key optimizer.cg_max_iter; did you mean "
                                "optimizer.cg_max_iters?"),
    ("optimzer.cg_max_iters=3", "unknown section 'optimzer'; did you mean optimizer?"),
    ("optimizer.cg_decay=1.5",
     "optimizer.cg_decay = 1.5 is out of range; must be in [0.0, 1.0]"),
    ("task.T=0", "task.T = 0 is out of range; must be >= 1"),
    ("task.T=abc", "task.T must be int, got 'abc'"),
    ("run.dtype=float16", "run.dtype = 'float16'; expected one of float64, float32"),
    ("optimizer.curvature_batch=20000", "must be <= optimizer.gradient_batch"),
    ("optimizer.max_updates", "expected SECTION.KEY=VALUE"),
], ids=["typo-key", "typo-section", "range", "range-int", "type", "choice", "subset",
        "syntax"])
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


@pytest.mark.parametrize("overrides,message", [
    (["data.fresh=true", "data.path='x.h5'"], "data.fresh = true generates the training "
                                              "data; it cannot read data.path = 'x.h5'"),
    (["model.loss_average='step'"], "model.loss_average = 'step'; expected one of "
                                    "sequence, output"),
    (["optimizer.rho_model='exact'"], "optimizer.rho_model = 'exact'; expected one of "
                                      "undamped, damped"),
    (["optimizer.linesearch_c=2"], "optimizer.linesearch_c = 2.0 is out of range"),
    (["data.fresh=true", "optimizer.gradient_batch=0"], "optimizer.gradient_batch = 0 "
                                                        "trains on every row of a fixed"),
], ids=["fresh-and-path", "loss-average", "rho-model", "armijo-c", "full-batch-fresh"])
def test_bad_recipe_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        config.load(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_first_order_optimisers_ignore_hf_batch_sizes():
    """A task whose HF recipe is full-batch (gradient_batch = 0) still takes SGD and Adam,
    which draw sgd_batch rows; HF's own subset rule still holds for HF."""
    for name in ("sgd", "adam"):
        cfg = config.load(None, ["task.name='mnist_autoencoder'",
                                 f"optimizer.name='{name}'"])
        assert cfg["optimizer"]["gradient_batch"] == 0
    with pytest.raises(ConfigError, match="curvature_batch = 500 must be <= "):
        config.load(None, ["optimizer.gradient_batch=400", "optimizer.curvature_batch=500"])


def test_fresh_data_needs_a_generated_task(tmp_path):
    from dhf import run
    from dhf.comm import SerialComm

    pytest.importorskip("sklearn")
    cfg = config.load(None, ["task.name='digits'", "data.fresh=true"])
    with pytest.raises(ConfigError, match="^data.fresh = true needs a task that generates "
                                          "its data; task 'digits' has a fixed data set$"):
        run.train(cfg, SerialComm(), tmp_path / "r")


def test_a_fixed_set_too_small_for_the_batches_names_the_keys_and_the_way_out(tmp_path):
    from dhf import run
    from dhf.comm import SerialComm

    cfg = config.load(None, ["task.name='memorization'", "task.T=4", "task.n_train=500",
                             "task.n_valid=10",
                             "model.hidden=4", "optimizer.gradient_batch=300",
                             "optimizer.curvature_batch=50",
                             "optimizer.backtrack_batch=100",
                             "optimizer.linesearch_batch=200"])
    with pytest.raises(ConfigError, match=r"gradient_batch \+ backtrack_batch \+ "
                                          r"linesearch_batch = 600 exceeds the 500 "
                                          r"training rows.*data.fresh = true"):
        run.train(cfg, SerialComm(), tmp_path / "r")


@pytest.mark.parametrize("name", sorted(SHORTEST_T))
def test_a_T_too_short_for_the_problem_is_a_config_error(name):
    shortest = SHORTEST_T[name]
    config.load(None, [f"task.name='{name}'", f"task.T={shortest}"])
    with pytest.raises(ConfigError) as err:
        config.load(None, [f"task.name='{name}'", f"task.T={shortest - 1}"])
    assert str(err.value) == (f"task.T = {shortest - 1} is too small for {name}: "
                              f"must be >= {shortest}")


def test_a_data_file_s_T_is_not_checked_against_the_task():
    """With data.path the file's own T counts (checked when the file is read)."""
    config.load(None, ["task.name='xor'", "task.T=2", "data.fresh=false",
                       "data.path='file.h5'"])


def test_optimisers_built_in_code_have_dhf_train_s_defaults():
    """One declaration per key: HFConfig(), SGDConfig(), dhf.train's config and
    dhf-train's config for a task without recommendations of its own (memorisation)
    resolve to the same optimiser settings."""
    from dhf import damping
    from dhf.coordinator import HFConfig
    from dhf.sgd import SGDConfig

    cli = config.load(None, ["task.name='memorization'"])["optimizer"]
    api = config.defaults()["optimizer"]  # what dhf.train starts from
    for cls in (HFConfig, SGDConfig):
        assert cls() == cls.from_config(cli) == cls.from_config(api)
    assert damping.update_damping(1e8, -1.0) == cli["max_damping"]
    assert damping.update_damping(1e-6, 1.0) == cli["min_damping"]
