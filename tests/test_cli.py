"""dhf-train end to end: in process, resumed, and under real mpiexec at 2 and 4 ranks."""
import json
import os
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest

from dhf.cli import main
from dhf.launcher import THREAD_VARIABLES
from tests.conftest import (ROOT, SHORTEST_T, TINY as TINY_ITEMS, metrics, run_mpi,
                            tiny_args, venv_bin)
from tests.test_ranks import JOBS

REQUIRED = {"update", "loss", "valid_loss", "valid_error", "rho", "damping", "cg_iters",
            "step_size", "seconds"}


def test_train_writes_metrics_config_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args() + ["--out", str(out)]) == 0
    rows = metrics(out)
    assert [r["update"] for r in rows] == [1, 2, 3]
    assert all(REQUIRED <= set(r) for r in rows)
    assert (out / "checkpoint.h5").exists()
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["task"]["T"] == 6 and resolved["run"]["out"] == str(out)
    stdout = capsys.readouterr().out
    assert "update    3" in stdout
    assert stdout.strip().splitlines()[-1].startswith("result: updates=3 train_loss=")


def test_compiling_comes_before_the_first_update_and_a_slow_one_is_announced(
        tmp_path, capsys, monkeypatch):
    """Every compiled function's code is generated before the start line, whose
    "compiled in" therefore counts it; a compile slower than COMPILE_NOTICE_SECONDS (a
    cold cache) is announced while it runs, before that line."""
    from dhf import compiling

    monkeypatch.setattr(compiling, "COMPILE_NOTICE_SECONDS", 0.0)
    assert main(tiny_args("optimizer.max_updates=1") + ["--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    notice = [i for i, line in enumerate(lines) if "compiling the model" in line]
    start = [i for i, line in enumerate(lines) if "compiled in" in line]
    assert len(notice) == len(start) == 1 and notice[0] < start[0], lines


def test_resume_continues_the_same_trajectory(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(tiny_args("optimizer.max_updates=6") + ["--out", str(straight)]) == 0
    assert main(tiny_args("optimizer.max_updates=3") + ["--out", str(split)]) == 0
    assert main(tiny_args("optimizer.max_updates=6")
                + ["--out", str(split), "--resume"]) == 0
    a, b = metrics(straight), metrics(split)
    assert [r["update"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["damping"] for r in a] == [r["damping"] for r in b]


def test_train_error_on_fresh_rows_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args("data.fresh=true", "run.train_error=true")
                + ["--out", str(out)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "run.train_error = true needs a fixed training set" \
        in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("backend, message", [
    ("numba", "run.device = 'gpu' needs run.backend = 'jax' (got 'numba')"),
    ("jax", "run.device = 'gpu'")])
def test_a_gpu_request_without_a_gpu_is_one_line(tmp_path, capsys, backend, message):
    """Without JAX, with a CPU-only JAX (CI), or with the wrong backend: one line saying
    what to install or set, exit status 2, nothing written."""
    out = tmp_path / "run"
    assert main(tiny_args("run.device='gpu'", f"run.backend='{backend}'")
                + ["--out", str(out)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert "jax[cuda12]" in lines[0] or backend == "numba"
    assert not out.exists()


@pytest.mark.parametrize("backend, gv_backend, want", [
    ("auto", "auto", ("jax", "jax")),  # seconds of compiling, not minutes
    ("auto", "numba", ("jax", "numba")),  # the explicit Gv's Numba kernels, on request
    ("numba", "auto", ("numba", "numba")),
    ("jax", "auto", ("jax", "jax")),
    ("auto", "c", ("jax", "c")),
])
def test_the_backends_that_run_settings_resolve_to(backend, gv_backend, want):
    pytest.importorskip("jax")
    from dhf import config as config_mod
    from dhf.backends import modes

    config = config_mod.load(None, TINY_ITEMS + [
        f"run.backend='{backend}'", f"run.gv_backend='{gv_backend}'"])
    assert modes(config["run"]) == want


def test_without_jax_auto_is_numba_and_jax_is_one_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    from dhf import config as config_mod
    from dhf.backends import modes

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else find_spec(name, *a))
    config = config_mod.load(None, TINY_ITEMS)
    assert modes(config["run"]) == ("numba", "numba")
    out = tmp_path / "run"
    assert main(tiny_args("run.gv_backend='jax'") + ["--out", str(out)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "run.gv_backend = 'jax' needs the jax package" in lines[0]
    assert not out.exists()


def test_resume_of_another_problem_is_refused_in_one_line(tmp_path, capsys):
    """A resume must repeat the run's problem: T and dtype leave the parameter shapes as
    they are, so only the saved config can tell that the job would change."""
    out = tmp_path / "run"
    assert main(tiny_args("optimizer.max_updates=1") + ["--out", str(out)]) == 0
    before = {f: (out / f).read_bytes() for f in ("checkpoint.h5", "config.toml")}
    capsys.readouterr()
    args = tiny_args("task.T=7", "run.dtype=float32") + ["--out", str(out), "--resume"]
    assert main(args) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    assert "--resume with task.T = 7 (the run has 6); run.dtype = 'float32' (the run has " \
           "'float64'): a resumed run keeps its task" in lines[0]
    assert {f: (out / f).read_bytes() for f in before} == before


def test_resume_without_repeating_the_options_continues_the_run(tmp_path):
    """``dhf-train --out DIR --resume`` takes the run's own config.toml: the trajectory
    is that of a straight run, not the default job's."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(tiny_args("optimizer.max_updates=4") + ["--out", str(straight)]) == 0
    assert main(tiny_args("optimizer.max_updates=2") + ["--out", str(split)]) == 0
    assert main(["--set", "optimizer.max_updates=4", "--out", str(split), "--resume"]) == 0
    assert [r["loss"] for r in metrics(split)] == [r["loss"] for r in metrics(straight)]
    assert tomllib.loads((split / "config.toml").read_text())["task"]["T"] == 6


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args("optimizer.max_updates=1") + ["--out", str(out)]) == 0
    before = (out / "metrics.jsonl").read_bytes()
    assert main(tiny_args() + ["--out", str(out)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().out
    assert (out / "metrics.jsonl").read_bytes() == before


def test_bad_key_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--set", "optimizer.cg_max_iter=3", "--out", str(tmp_path / "x")]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["error: --set: unknown key optimizer.cg_max_iter; did you mean "
                   "optimizer.cg_max_iters?"]
    assert not (tmp_path / "x").exists()


def test_dry_run_prints_config_and_split(capsys):
    assert main(["--dry-run", "--set", "task.name='memorization'", "--set",
                 "model.hidden=10"]) == 0
    out = capsys.readouterr().out
    assert "# parameters: 141" in out  # 1·10 + 10·10 + 10 + 10 + 10·1 + 1
    # JAX (run.backend = 'auto') compiles once per shape: chunks that divide the batch,
    # of 16 rows or down to 8, several a call (dhf.worker.loops_chunks)
    assert "# gradient_batch per rank (1 rank, chunks of 10 rows): [5000]" in out
    assert "# training rows: 20000 (task memorization)" in out
    assert main(["--dry-run", "--set", "task.name='memorization'", "--set",
                 "run.backend='numba'"]) == 0
    assert "# gradient_batch per rank (1 rank, chunks of 64 rows): [5000]" in (
        capsys.readouterr().out)
    assert main(["--dry-run", "--set", "task.name='memorization'", "--set",
                 "run.chunk_rows=20"]) == 0
    assert "# gradient_batch per rank (1 rank, chunks of 20 rows): [5000]" in (
        capsys.readouterr().out)
    from dhf.backends import chunk_rows_of
    assert [chunk_rows_of({"chunk_rows": 0, "device": d}) for d in ("cpu", "gpu")] == [
        64, 16384]
    # on a GPU, as few chunks as the ranks can share (one: no GPU is needed to plan)
    assert main(["--dry-run", "--set", "run.device='gpu'"]) == 0
    assert "# gradient_batch per rank (1 rank, chunks of 10000 rows): [10000]" in (
        capsys.readouterr().out)


def test_help_names_the_default_job_and_prints_toml_a_user_can_copy(capsys):
    """--help: the default job as it is (2-bit temporal order at T = 100), the keys'
    defaults as TOML literals (copied into --set, they are taken), and that a task's
    recommended settings replace them; a Python literal copied anyway says how to
    write it."""
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the built-in default job, temporal_order_2bit at T = 100" in text
    assert "recommended settings (configs/TASK.toml) replace these defaults" in text
    for literal in ("optimizer.held_out = true:", 'run.backend = "auto":'):
        assert literal in text
    assert main(["--dry-run", "--set", "optimizer.held_out=false"]) == 0
    capsys.readouterr()
    assert main(["--dry-run", "--set", "optimizer.held_out=False"]) == 2
    assert "must be bool, got 'False' (TOML writes it false)" in capsys.readouterr().out


def test_dry_run_shows_the_work_per_rank_at_any_rank_count(capsys):
    """--dry-run --ranks: each batch's busiest rank (rows / calls) and idle ranks at rank
    counts this process does not have. The default job cuts 1 000 rows in 100 chunks of
    10 and 10 000 in 625 of 16: at N ranks the busiest holds ceil(chunks / N) of them,
    in calls of 25 and 16 chunks, and N - chunks ranks have none."""
    assert main(["--dry-run", "--ranks", "1,3,64,128"]) == 0
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("# ")
             and ln.split("|")[0].strip("# ").isdigit()]
    for line, n in zip(table, (1, 3, 64, 128)):
        grad, curv = [cell.strip() for cell in line.split("|")[1:3]]
        mine = -(-625 // n), -(-100 // n)
        assert grad == f"{16 * mine[0]} / {-(-mine[0] // 16)} x 16, 0 idle"
        assert curv == f"{10 * mine[1]} / {-(-mine[1] // 25)} x 10, {max(0, n - 100)} idle"
    assert len(table) == 4
    with pytest.raises(SystemExit) as stop:
        main(["--dry-run", "--ranks", "0,2"])
    assert stop.value.code == 2 and "expected rank counts" in capsys.readouterr().err


def test_dry_run_reads_the_data_file_and_checks_the_batches_fit(tmp_path, capsys):
    """--dry-run shows the file's task and rows (not the generated task's) and refuses
    batches that do not fit them, as the run would."""
    from dhf.cli import data_main

    path = tmp_path / "d.h5"
    assert data_main(["memorization", "--out", str(path), "--set", "task.T=30",
                      "--set", "task.n_train=3000"]) == 0
    capsys.readouterr()
    base = ["--dry-run", "--set", f"data.path={str(path)!r}"]
    assert main(base + ["--set", "optimizer.gradient_batch=1500"]) == 0
    out = capsys.readouterr().out
    assert "\nT = 30\n" in out and "\nn_train = 3000\n" in out
    assert f"# training rows: 3000 ({path})" in out
    assert "# gradient_batch per rank (1 rank, chunks of 15 rows): [1500]" in out
    assert main(base) == 2  # 5000 + 1000 rows asked of 3000
    assert "exceeds the 3000 training rows" in capsys.readouterr().out


@pytest.mark.parametrize("settings, message", [
    (["task.name='addition'"], 'the data file holds task.name = "memorization", but --set '
                               'sets task.name = "addition"'),
    (["task.T=50"], "the data file holds task.T = 30, but --set sets task.T = 50"),
    (["task.T=30", "task.name='memorization'"], None),
])
def test_a_data_files_task_does_not_silently_replace_the_users(tmp_path, capsys, settings,
                                                               message):
    """data.path's task sets [task]; a task key the user set that the file contradicts
    is refused in one line naming both values (it used to be replaced silently:
    addition asked for, memorisation trained; T = 50 asked for, T = 30 run)."""
    from dhf.cli import data_main

    path = tmp_path / "mem30.h5"
    assert data_main(["memorization", "--out", str(path), "--set", "task.T=30",
                      "--set", "task.n_train=3000"]) == 0
    capsys.readouterr()
    argv = ["--dry-run", "--set", f"data.path={str(path)!r}",
            "--set", "optimizer.gradient_batch=1500"]
    for item in settings:
        argv += ["--set", item]
    if message is None:
        assert main(argv) == 0
        assert "\nT = 30\n" in capsys.readouterr().out
        return
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert message in out and out.count("\n") == 1, out


def test_a_data_file_of_a_fresh_data_task_and_a_missing_one_on_the_default_job(
        tmp_path, capsys):
    """The default job's task draws fresh data (data.fresh = true by its recipe): a
    data.path given instead trains on the file, and a missing one is named as missing,
    not as a clash with a data.fresh the user never set."""
    from dhf.cli import data_main

    path = tmp_path / "to.h5"
    assert data_main(["temporal_order_2bit", "--out", str(path), "--set", "task.T=20",
                      "--set", "task.n_train=600", "--set", "task.n_valid=100"]) == 0
    capsys.readouterr()
    assert main(["--dry-run", "--set", f"data.path={str(path)!r}",
                 "--set", "optimizer.gradient_batch=300",
                 "--set", "optimizer.curvature_batch=100",
                 "--set", "optimizer.backtrack_batch=100",
                 "--set", "optimizer.linesearch_batch=100"]) == 0
    out = capsys.readouterr().out
    assert "\nfresh = false\n" in out and f"# training rows: 600 ({path})" in out
    assert main(["--dry-run", "--set", "data.path='missing.h5'"]) == 2
    out = capsys.readouterr().out
    assert "missing.h5: data file not found" in out and "data.fresh" not in out, out


@pytest.mark.slow
@pytest.mark.parametrize("job", ["default", "masked"])
def test_the_jax_backend_follows_the_numba_trajectory(tmp_path, caplog, job):
    """run.backend = 'jax' (compiled per chunk shape, padding not trimmed, the tanh RNN's
    explicit recurrences as jax.lax.scan loops) and JAX with Numba's kernels for the
    explicit Gv (run.gv_backend = 'numba') take the Numba backend's path: float64, the
    first 3 updates to 1e-6.  (That each backend's bits do not depend on the rank count
    is tests/test_ranks.py, under mpiexec; the LSTM's generic Gv under JAX is checked
    against a dense J'HJ in tests/test_nets.py.)"""
    pytest.importorskip("jax")
    from dhf import config as config_mod
    from dhf.comm import SerialComm
    from dhf.run import train

    items = JOBS[job] + ["optimizer.max_updates=3", "run.dtype='float64'"]
    runs = {}
    jobs = [("numba", ["run.backend='numba'"]), ("jax", ["run.backend='jax'"]),
            ("mixed", ["run.backend='auto'", "run.gv_backend='numba'"])]
    for name, settings in jobs:
        caplog.clear()
        with caplog.at_level("INFO", logger="dhf"):
            result = train(config_mod.load(None, items + settings), SerialComm(),
                           tmp_path / name)
        start = next(r.getMessage() for r in caplog.records
                     if "compiled in" in r.getMessage())
        assert start.endswith({"numba": "(numba)", "jax": "(jax)",
                               "mixed": "(jax; Gv: numba)"}[name]), start
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
        runs[name] = result.metrics
    for name in ("jax", "mixed"):
        assert [r["cg_iters"] for r in runs[name]] == [r["cg_iters"] for r in runs["numba"]]
        for key in ("loss", "valid_loss", "rho", "damping", "held_out_loss"):
            np.testing.assert_allclose([r[key] for r in runs[name]],
                                       [r[key] for r in runs["numba"]], rtol=1e-6,
                                       err_msg=f"{name}: {key}")


def test_the_jax_backend_trains_in_float32(tmp_path):
    """JAX promotes some float32 values to float64 that PyTensor typed float32; the next
    function still takes them (dhf.static_shapes casts to the graph's dtypes)."""
    pytest.importorskip("jax")
    out = tmp_path / "run"
    assert main(tiny_args("run.backend='jax'", "run.dtype='float32'",
                          "optimizer.max_updates=2") + ["--out", str(out)]) == 0
    assert [r["update"] for r in metrics(out)] == [1, 2]


FAILING_RANK = """
import sys, time
from dhf.comm import get_comm, run_or_abort
from dhf.log import setup_logging
comm = get_comm(); setup_logging(comm.rank)
def job():
    if comm.rank == 1:
        raise RuntimeError("disk on fire")
    comm.barrier()  # rank 0 would wait here forever without the abort
    return 0
sys.exit(run_or_abort(comm, job))
"""


@pytest.mark.parametrize("n", [2, 4])
def test_an_exception_on_one_rank_ends_the_job(n):
    t0 = time.monotonic()
    done = subprocess.run([venv_bin("mpiexec"), "-n", str(n), sys.executable, "-c",
                           FAILING_RANK], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert time.monotonic() - t0 < 30
    assert "rank 1" in done.stderr and "disk on fire" in done.stderr


BAD_DATA = """
import numpy as np, dhf
from dhf.comm import get_comm
from dhf.errors import DataError
from tests.builders import FAST, autoencoder
comm = get_comm()
try:
    dhf.train(autoencoder(), train=np.zeros((300, 7)), config=FAST, comm=comm)
except DataError as err:
    print(f"rank {comm.rank}: {err}", flush=True)
"""


def test_data_that_does_not_fit_fails_on_every_rank_when_one_compiles_first():
    """4 ranks on 2 cores: the node's first rank compiles alone
    (dhf.compiling.compile_worker); its error must reach the three others, waiting for
    it, as an error of their own."""
    t0 = time.monotonic()
    done = subprocess.run([venv_bin("mpiexec"), "-n", "4", sys.executable, "-c", BAD_DATA],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout  # the ranks' lines may arrive interleaved
    assert all(out.count(f"rank {r}: ") == 1 for r in range(4)), out
    assert "rank 0: train: the data does not fit the model" in out
    if (os.cpu_count() or 1) < 4:
        assert out.count("compiling failed on another rank") == 3, out
    assert time.monotonic() - t0 < 150


@pytest.mark.parametrize("launcher, chosen, expect", [
    ({"PMI_SIZE": "2"}, {}, "1"), ({}, {}, "1"), ({}, {"OPENBLAS_NUM_THREADS": "2"}, "2"),
    ({"PMI_SIZE": "2"}, {"OPENBLAS_NUM_THREADS": ""}, "1")])
def test_blas_threads_are_pinned_before_numpy_loads(launcher, chosen, expect):
    """Under a launcher and serially, OpenBLAS must see one thread when numpy first loads
    it (dhf.cli decides before anything imports numpy), unless the user chose a count;
    an empty variable chooses none (with it XLA once kept its own pool, and the default
    job took other bits: rho 1.355 at update 1 instead of 1.356)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(launcher, **chosen)
    done = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import os, dhf.cli; print(os.environ['OPENBLAS_NUM_THREADS'])"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # importtime lists each module when its import completes, in order.
    modules = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:") and "|" in line]
    assert modules.index("dhf.launcher") < modules.index("numpy")
    assert done.stdout.strip() == expect


def test_dhf_train_trains_on_one_blas_thread_unless_told(monkeypatch):
    """numpy is loaded before dhf.train runs, so its BLAS is limited in place
    (threadpoolctl) while training, and given back after; a count the user set stays."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from dhf.api import _one_blas_thread

    def blas_threads():
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with threadpool_limits(limits=2, user_api="blas"):
        with _one_blas_thread():
            assert blas_threads() == {1}
        assert blas_threads() == {2}
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        with _one_blas_thread():
            assert blas_threads() == {2}


def test_time_limit_checkpoints_and_exits_cleanly(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args("run.max_minutes=1e-6") + ["--out", str(out)]) == 0
    assert "result: updates=0" in capsys.readouterr().out
    assert (out / "checkpoint.h5").exists()
    assert main(tiny_args() + ["--out", str(out), "--resume"]) == 0
    assert [r["update"] for r in metrics(out)] == [1, 2, 3]


@pytest.mark.slow
def test_time_limit_at_two_ranks_exits_zero_on_every_rank(tmp_path):
    """The ranks' clocks start apart; they still agree that the limit, not a signal,
    ended the run."""
    done = run_mpi(2, tiny_args("run.max_minutes=0.002") + ["--out", str(tmp_path / "r")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: updates=" in done.stdout


def test_a_problem_parameter_it_cannot_lay_out_is_one_line_and_exit_2(tmp_path, capsys):
    from dhf.cli import data_main

    bad = ["--set", "task.name='noiseless_memorization_20bit'", "--set", "task.T=15"]
    expected = ["error: task.T = 15 is too small for noiseless_memorization_20bit: "
                "must be >= 21"]
    assert main(bad + ["--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().out.strip().splitlines() == expected
    assert data_main(["noiseless_memorization_20bit", "--out", str(tmp_path / "d.h5"),
                      "--set", "task.T=15"]) == 2
    assert capsys.readouterr().out.strip().splitlines() == expected
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHORTEST_T))
def test_a_problem_parameter_error_under_mpiexec_is_one_line_and_exit_2(tmp_path, name):
    """Each problem's constraint, under mpiexec -n 2: one line, from rank 0, exit 2, no
    launcher banner, nothing written."""
    shortest = SHORTEST_T[name]
    done = run_mpi(2, ["--set", f"task.name='{name}'", "--set", f"task.T={shortest - 1}",
                       "--out", str(tmp_path / "run")], timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert lines == [f"error: task.T = {shortest - 1} is too small for {name}: "
                     f"must be >= {shortest}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_output_that_cannot_be_written_under_mpiexec_is_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("kept")
    done = run_mpi(2, tiny_args() + ["--out", str(a_file)], timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert lines == [f"error: --out {a_file}: is a file, not a directory"]
    assert a_file.read_text() == "kept"


def test_a_second_ctrl_c_stops_at_once():
    """The first SIGINT only asks for a stop (a flag the run polls); the second exits 130
    there and then."""
    script = ("import os, signal, time\n"
              "from dhf.cli import _catch_stop_signals\n"
              "from dhf.log import setup_logging\n"
              "setup_logging(0)\n"
              "received = _catch_stop_signals()\n"
              "os.kill(os.getpid(), signal.SIGINT)\n"
              "print('asked', received, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGINT)\n"
              "time.sleep(30)\n"
              "print('not stopped')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 130, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("received SIGINT: stopping after a checkpoint")
    assert lines[1:] == ["asked [2]",
                         "interrupted again: stopping now; the last checkpoint stays"]


def test_a_failed_start_leaves_no_directory_and_a_bare_resume_skips_one(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    done = tmp_path / "runs" / "memorization-20260101-000000"
    assert main(tiny_args("optimizer.max_updates=1") + ["--out", str(done)]) == 0
    failed = tmp_path / "runs" / "memorization-20260102-000000"
    assert main(tiny_args("data.path='missing.h5'") + ["--out", str(failed)]) == 2
    assert not failed.exists()
    failed.mkdir()  # as an older dhf left it
    capsys.readouterr()
    assert main(tiny_args("optimizer.max_updates=2") + ["--resume"]) == 0
    assert f"resumed {done.relative_to(tmp_path)} at update 1" in capsys.readouterr().out
    assert [r["update"] for r in metrics(done)] == [1, 2]


@pytest.mark.parametrize("command", ["train-file", "train", "data", "plot"])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, capsys, command):
    from dhf.cli import data_main, plot_main

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    nowhere = "/proc/dhf-test/out"  # no one, not even root, can create it
    run, expected = {
        "train-file": (lambda: main(tiny_args() + ["--out", str(a_file)]),
                       f"--out {a_file}: is a file, not a directory"),
        "train": (lambda: main(tiny_args() + ["--out", nowhere]),
                  f"--out {nowhere}: cannot write the run there: "
                  "No such file or directory"),
        "data": (lambda: data_main(["memorization", "--out", nowhere + ".h5"]),
                 f"{nowhere}.h5: cannot write: No such file or directory"),
        "plot": (lambda: plot_main([str(run_dir), "--out", nowhere + ".png"]),
                 f"{nowhere}.png: cannot write: No such file or directory"),
    }[command]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"update": u, "loss": 1.0 / u, "valid_loss": 1.0, "valid_error": 0.5,
                    "seconds": 1.0}) + "\n" for u in (1, 2)))
    if command == "plot":
        pytest.importorskip("matplotlib")
    code = run()
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 2 and lines == ["error: " + expected]


def test_resuming_a_finished_run_says_so_and_does_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args("optimizer.max_updates=2") + ["--out", str(out)]) == 0
    before = (out / "metrics.jsonl").read_bytes()
    last = metrics(out)[-1]
    capsys.readouterr()
    assert main(["--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert ("nothing to do: the run is complete at update 2 (optimizer.max_updates = 2); "
            "raise it to continue") in printed
    assert f"valid_error={last['valid_error']:.6g}" in printed and "nan" not in printed
    assert (out / "metrics.jsonl").read_bytes() == before
    # Solved: the resumed run does not take one more update first.
    assert main(["--out", str(out), "--resume", "--set", "optimizer.max_updates=5",
                 "--set", "run.stop_valid_error=1.0"]) == 0
    assert "nothing to do: the run was solved at update" in capsys.readouterr().out
    assert (out / "metrics.jsonl").read_bytes() == before


def test_progress_bar_follows_what_cg_does_and_shows_under_mpiexec_on_request(tmp_path):
    """The bar's length is the last update's CG iterations, not the 250 cap; --progress
    on draws it through mpiexec's pipes (what a terminal attached to mpirun gets)."""
    import io

    from dhf.log import CGProgress

    bar = CGProgress(250)
    for i in range(1, 41):
        bar(i, -1.0)
    assert bar.bar.total == 250
    bar.close()
    for i in range(1, 61):
        bar(i, -1.0)
    assert bar.bar.total == 60 and bar.bar.n == 60  # 40 expected, lengthened
    bar.bar.fp = io.StringIO()
    bar.close()
    assert bar.expected == 60

    done = run_mpi(2, tiny_args("optimizer.max_updates=1") + ["--out", str(tmp_path / "r"),
                                                              "--progress", "on"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CG:" in done.stderr and "it/s" in done.stderr
    quiet = run_mpi(2, tiny_args("optimizer.max_updates=1")
                    + ["--out", str(tmp_path / "q")])
    assert "CG:" not in quiet.stderr  # no terminal here: auto draws nothing


@pytest.mark.parametrize("backend, error", [
    ("auto", TypeError("Shapes must be 1D sequences of concrete values of integer type, "
                       "got (16, JitTracer(int64[]))")),
    ("auto", NotImplementedError("While Scan cannot yet be converted to JAX")),
    ("jax", TypeError("Shapes must be 1D sequences of concrete values of integer type, "
                      "got (16, JitTracer(int64[]))"))])
def test_a_graph_jax_cannot_compile_falls_back_to_numba_under_auto(
        monkeypatch, tmp_path, capsys, backend, error):
    """JAX cannot compile some scan gradients (a shape computed inside the loop); under
    ``auto`` the run goes on with Numba, saying so, and under ``jax`` it is one line.
    The JAX failure is simulated (the TINY job compiles under JAX); the fallback's Numba
    worker and the run are real."""
    pytest.importorskip("jax")
    from dhf.worker import Worker

    warm_up = Worker.warm_up

    def fails_under_jax(self, *args, **kwargs):
        if self.jax:
            raise error
        return warm_up(self, *args, **kwargs)

    monkeypatch.setattr(Worker, "warm_up", fails_under_jax)
    out = tmp_path / "run"
    args = tiny_args(f"run.backend='{backend}'", "optimizer.max_updates=1")
    code = main(args + ["--out", str(out)])
    captured = capsys.readouterr()
    if backend == "auto":
        assert code == 0
        said = captured.err + captured.out
        assert f"JAX cannot compile this graph ({str(error)[:20]}" in said
        assert "(numba)" in captured.out and "result: updates=1" in captured.out
    else:
        lines = captured.out.strip().splitlines()
        assert code == 2 and len(lines) == 1, captured.out
        assert "run.backend = 'jax' cannot compile this graph" in lines[0]
        assert not out.exists()


def test_a_pytensor_floatx_of_float32_is_refused_in_one_line_under_jax(tmp_path):
    """PyTensor's floatX = float32 turns JAX's float64 off, which the exact sums JAX takes
    on the device need (dhf.reduction_jax): refused before anything is written, not run
    with float32 bins whose sums would depend on the rank count."""
    pytest.importorskip("jax")
    env = dict(os.environ, PYTENSOR_FLAGS="floatX=float32")
    out = tmp_path / "run"
    done = subprocess.run([venv_bin("dhf-train"), "--set", "run.backend='jax'", "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in done.stdout.splitlines() + done.stderr.splitlines()
             if ln.strip() and not ln.startswith("WARNING")]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and "floatX = 'float32' turns JAX's float64 off" in lines[0]
    assert not out.exists()
