"""State that survives: resume across rank counts, SIGTERM, SIGKILL, bad input under MPI.

These run real ``mpiexec`` jobs in subprocesses (marked slow).
"""
import os
import random
import select
import signal
import socket
import subprocess
import time

import h5py
import numpy as np
import pytest

from tests.builders import bad_files
from tests.conftest import ROOT, file_args, metrics, run_mpi, tiny_args, venv_bin

pytestmark = pytest.mark.slow


def start(n, args):
    """``dhf-train args`` under ``mpiexec -n n`` (serially when n is None)."""
    launch = [] if n is None else [venv_bin("mpiexec"), "-n", str(n)]
    cmd = launch + [venv_bin("dhf-train")] + args
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)


def wait_for_rows(out, n, proc, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        path = out / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no progress")


def test_sigterm_checkpoints_exits_and_resumes_without_gaps(tmp_path):
    out = tmp_path / "run"
    args = tiny_args("optimizer.max_updates=40", "task.T=12", "optimizer.cg_max_iters=60")
    proc = start(2, args + ["--out", str(out)])
    wait_for_rows(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "continue with --resume" in stdout
    with h5py.File(out / "checkpoint.h5") as f:
        assert int(f.attrs["update"]) == len(metrics(out))
    done = run_mpi(2, args + ["--out", str(out), "--resume"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["update"] for r in metrics(out)] == list(range(1, 41))


def test_sigkill_at_random_moments_always_leaves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = tiny_args("optimizer.max_updates=12", "task.T=12") + ["--out", str(out)]
    rng = random.Random(666)
    proc = start(1, args)
    wait_for_rows(out, 1, proc)
    for _ in range(3):
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.communicate()
        with h5py.File(out / "checkpoint.h5") as f:  # loads: never half-written
            assert np.all(np.isfinite(f["theta"][()]))
        if len(metrics(out)) >= 12:
            break
        proc = start(1, args + ["--resume"])
        wait_for_rows(out, len(metrics(out)) + 1, proc)
    proc.kill()
    proc.communicate()
    # A checkpoint write killed half-way leaves only a stray .tmp, which must not matter.
    (out / "checkpoint.h5.tmp").write_bytes(b"half a checkpoint")
    done = run_mpi(1, args + ["--resume"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["update"] for r in metrics(out)] == list(range(1, 13))


@pytest.mark.parametrize("ranks", [None, 2])
def test_one_run_writes_a_directory_at_a_time_and_a_killed_one_lets_go(tmp_path, ranks):
    """While a run trains in --out DIR, a second start there (a resume begun twice, a
    requeued job) is refused in one line naming the holder's host and pid, serially and
    under mpiexec; once the holder is killed with SIGKILL, the directory resumes, its
    metrics one row per update."""
    out = tmp_path / "run"
    args = tiny_args("optimizer.max_updates=2000", "task.T=12") + ["--out", str(out)]
    holder = start(None, args)
    wait_for_rows(out, 2, holder)
    for extra in (["--resume"], []):
        second = start(ranks, args + extra)
        stdout, stderr = second.communicate(timeout=120)
        lines = [ln for ln in (stdout + stderr).splitlines() if ln.strip()]
        assert second.returncode == 2, stdout + stderr
        assert len(lines) == 1 and (f"{out}: another run is writing this directory (host "
                                    f"{socket.gethostname()} pid {holder.pid})") in lines[0]
    assert holder.poll() is None, "the holder must still be training"
    holder.kill()
    holder.communicate()
    done = len(metrics(out))
    resumed = run_mpi(ranks or 1, tiny_args(f"optimizer.max_updates={done + 1}",
                                            "task.T=12") + ["--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [r["update"] for r in metrics(out)] == list(range(1, done + 2))


@pytest.mark.parametrize("case", ["missing", "not-hdf5", "nan-row", "wrong-shape",
                                  "no-task", "missing-dataset", "wrong-dtype", "truncated",
                                  "fewer-rows-than-ranks", "wrong-targets",
                                  "split-lengths", "task-params-not-json", "task-params-T"])
def test_bad_data_under_two_ranks_stops_every_rank_in_one_line(tmp_path, case):
    path, message = bad_files(tmp_path)[case]
    t0 = time.monotonic()
    done = run_mpi(2, file_args(path) + ["--out", str(tmp_path / "r")], timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - t0 < 60
    # One line, from one rank, and no launcher banner: every rank met the same error.
    assert [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()] == \
        [ln for ln in done.stdout.splitlines() if message in ln], done.stdout + done.stderr
    assert not (tmp_path / "r").exists()


def in_a_terminal(cmd, timeout=180):
    """``cmd``'s output as a terminal shows it: its stdin, stdout and stderr on a
    pseudo-terminal, as when a user types it; (exit status, text)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                            start_new_session=True)
    os.close(slave)
    out, t0 = b"", time.monotonic()
    while time.monotonic() - t0 < timeout:
        if select.select([master], [], [], 1.0)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), out.decode(errors="replace")


def test_an_interactive_mpiexec_shows_the_progress_bar_and_a_batch_log_does_not(
        tmp_path):
    """Under mpiexec typed in a terminal, rank 0 says at once what it starts, then
    draws the CG progress bar, though Hydra starts each rank in a session of its own
    with pipes for stdout and stderr; the same job with its output in pipes (a batch
    job's log) draws none."""
    args = tiny_args("optimizer.max_updates=2")
    cmd = [venv_bin("mpiexec"), "-n", "2", venv_bin("dhf-train")] + args
    code, text = in_a_terminal(cmd + ["--out", str(tmp_path / "tty")])
    assert code == 0, text
    assert "CG:" in text and "it/s" in text, text
    assert text.lstrip().startswith("dhf: starting memorization on 2 ranks"), text
    logged = run_mpi(2, args + ["--out", str(tmp_path / "log")])
    assert logged.returncode == 0 and "CG:" not in logged.stdout + logged.stderr


@pytest.mark.parametrize("settings, message", [
    # the batch rules, met by every rank as it builds its optimiser (the case)
    (["task.name='addition'", "task.T=30", "optimizer.linesearch_batch=1000"],
     "optimizer.curvature_batch + backtrack_batch + linesearch_batch = 1200 exceeds "
     "optimizer.gradient_batch = 300"),
    (["optimizer.name='sgd'", "optimizer.sgd_batch=5000"],
     "optimizer.sgd_batch = 5000 exceeds the 600 training rows"),
    (["optimizer.gradient_batch=550", "optimizer.held_out=true"],
     "exceeds the 600 training rows"),
    # the data's rule, met as the rows are drawn
    (["task.name='addition'", "task.T=30", "data.fresh=true", "run.train_error=true"],
     "run.train_error = true needs a fixed training set"),
    # the backend's, met as it is chosen
    (["run.device='gpu'", "run.backend='jax'", "run.gv_backend='numba'"], "run.device"),
    # the config's own, met on rank 0 as it is read
    (["optimizer.cg_min_iters=500"], "optimizer.cg_min_iters = 500 must be <="),
])
def test_a_refused_config_is_one_line_once_under_two_ranks(tmp_path, settings, message):
    """Every rule that refuses a config at set-up, under mpiexec -n 2: exit status 2,
    one line (not one per rank), no launcher banner, no run directory."""
    done = run_mpi(2, tiny_args(*settings) + ["--out", str(tmp_path / "r")], timeout=120)
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "r").exists()


def test_checkpoint_of_another_model_is_refused_under_two_ranks(tmp_path):
    out = tmp_path / "run"
    assert run_mpi(2, tiny_args("optimizer.max_updates=1") + ["--out", str(out)]
                   ).returncode == 0
    before = (out / "checkpoint.h5").read_bytes()
    done = run_mpi(2, tiny_args("model.hidden=9") + ["--out", str(out), "--resume"])
    assert done.returncode != 0
    assert "--resume with model.hidden = 9 (the run has 8)" in done.stdout
    assert (out / "checkpoint.h5").read_bytes() == before


@pytest.mark.parametrize("ranks", [None, 2])
def test_ctrl_c_is_a_stop_with_a_checkpoint_and_a_second_one_is_prompt(tmp_path, ranks):
    """SIGINT takes SIGTERM's path (checkpoint, best.h5, exit 130, no traceback), serially
    and through mpiexec, which forwards it to the ranks; a second one stops at once."""
    out = tmp_path / "run"
    args = tiny_args("optimizer.max_updates=40", "task.T=12", "optimizer.cg_max_iters=60")
    proc = start(ranks, args + ["--out", str(out)])
    wait_for_rows(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, stdout + stderr
    assert "continue with --resume" in stdout and "Traceback" not in stdout + stderr
    assert (out / "best.h5").exists()
    with h5py.File(out / "checkpoint.h5") as f:
        assert int(f.attrs["update"]) == len(metrics(out))

    proc = start(ranks, args + ["--out", str(out), "--resume"])
    wait_for_rows(out, len(metrics(out)) + 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10
    # Serially 130 (or death by SIGINT, which a shell also shows as 130, when the second
    # one lands after Python has restored its default handler on the way out); mpiexec
    # answers a second Ctrl-C by aborting the job itself (255), unless the second signal
    # reaches Hydra while its proxies are closing after the first stop, a race in
    # MPICH's Hydra (pmodels/mpich#7036) that it reports as "assert (!closed) failed",
    # with an exit status of its own (non-zero, or 0 when the ranks had ended cleanly).
    if ranks is None:
        assert proc.returncode in (130, -signal.SIGINT), stdout + stderr
    elif "assert (!closed) failed" in stdout + stderr:  # the proxy writes to either
        pass
    else:
        assert proc.returncode == 255, stdout + stderr
    assert "Traceback" not in stdout + stderr
    with h5py.File(out / "checkpoint.h5") as f:  # the last checkpoint stays readable
        assert np.all(np.isfinite(f["theta"][()]))
