"""The memory estimate per rank (dhf.memory): the states it sizes are the ones a worker
caches, and a run that cannot fit is refused before it makes its data."""
import numpy as np
import pytest

from dhf import config as config_mod, memory, tasks
from dhf.cli import main
from dhf.worker import Worker

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("task, T", [("memorization", 7), ("temporal_order_2bit", 12)])
def test_the_cached_states_sized_are_those_a_worker_keeps(task, T):
    """cached_state_bytes, from shapes alone, equals the bytes of the forward states a
    JAX worker caches for Gv over its chunks, and grows linearly with a chunk's rows."""
    pytest.importorskip("jax")
    cfg = config_mod.load(None, [f"task.name={task!r}", f"task.T={T}", "model.hidden=6"])
    spec = tasks.get(task).build_model(cfg)
    data = tasks.get(task).generate(cfg["task"], 32, np.random.default_rng(0))
    worker = Worker(spec, data, mode="JAX", chunk_rows=32)
    theta = worker.layout.flatten([p.get_value() for p in spec.params])
    worker.prepare_curvature(theta, np.arange(32))
    chunks = worker.plan(np.arange(32))
    (size,) = {len(c) for c in chunks}  # chunks of one size (16 rows: two of them)
    cached = sum(int(np.asarray(a).nbytes) for args in worker.curvature.chunk_args
                 for a in args[len(data):])
    sample = [a[:1] for a in data]
    assert len(chunks) * memory.cached_state_bytes(spec, sample, size) == cached > 0
    per_row = [memory.cached_state_bytes(spec, sample, n) for n in (0, size, 2 * size)]
    assert per_row[2] - per_row[1] == per_row[1] - per_row[0] > 0  # linear in the rows


def test_a_run_that_cannot_fit_is_refused_before_its_data_is_made(
        tmp_path, capsys, monkeypatch):
    """task.T = 10^6: terabytes per rank. One line naming the estimate and what a rank
    can have, exit status 2, no run directory, and no sequence generated."""
    import dhf.run

    def no_data(*args, **kwargs):
        raise AssertionError("the data were made before the memory check")

    monkeypatch.setattr(dhf.run, "load_data", no_data)
    assert main(["--set", "task.T=1000000", "--out", str(tmp_path / "r")]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this run needs about ")
    assert "ranks on this machine can have" in lines[0]
    assert not (tmp_path / "r").exists()


def test_the_dry_run_gives_the_estimate_by_part(capsys):
    assert main(["--dry-run", "--set", "task.T=200", "--ranks", "1,4"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "estimated:" in ln]
    assert [ln.split(" at ")[1].split(",")[0] for ln in lines] == ["1 rank", "4 ranks"]
    for part in ("data", "states", "work", "cg", "base"):
        assert f"{part} " in lines[0]


def test_an_estimate_adds_its_parts():
    need = memory.Estimate(base=1, data=2, states=3, work=4, cg=5)
    assert need.total == 15 and need.describe().startswith("15 B (data 2 B")
    assert memory.format_bytes(3 * 2**30) == "3.0 GB"
