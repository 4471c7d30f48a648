"""The batch scripts for real: scripts/slurm/dhf-train.sbatch on a one-node Slurm started
here (installed with apt-get when missing, if DHF_TEST_INSTALL=1; marked ``slurm``), and
scripts/pbs/dhf-train.pbs in a faked PBS environment (marked ``slow``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_args, venv_bin

SBATCH = ROOT / "scripts" / "slurm" / "dhf-train.sbatch"
PBS = ROOT / "scripts" / "pbs" / "dhf-train.pbs"


def updates(run: Path) -> list[int]:
    """The ``update`` of every complete row of the run's metrics.jsonl (the job may be
    writing the next one)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line)["update"] for line in complete if line.strip()]


def job_env(runs: Path) -> dict:
    """What the job needs from us: our dhf-train (the venv that runs these tests) and a
    run root in the temporary directory."""
    return {"DHF_BIN": str(Path(venv_bin("dhf-train")).parent), "DHF_RUN_ROOT": str(runs)}


@pytest.fixture(scope="module")
def cluster():
    from tests import slurm_cluster

    try:
        version = slurm_cluster.ensure_installed()
    except slurm_cluster.Unavailable as why:
        pytest.skip(str(why))
    except subprocess.TimeoutExpired as err:
        pytest.skip(f"installing Slurm timed out: {err}")
    root = slurm_cluster.short_tempdir()
    cluster = slurm_cluster.SlurmCluster(root, version=version)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    # Keep the directory (logs) only when a daemon failed to stop.
    if all(p.poll() is not None for p in cluster.procs.values()):
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slurm
def test_sbatch_trains_on_two_ranks(cluster):
    runs = cluster.root / "runs-1"
    job = cluster.submit(SBATCH, *tiny_args(), env=job_env(runs),
                         sbatch_args=["--ntasks-per-node=2", "--job-name=tiny",
                                      f"--output={cluster.root}/jobs/%x-%j.out"],
                         cwd=cluster.root)
    info = cluster.wait(job, timeout=120)
    report = cluster.report(job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), report
    assert updates(runs / f"tiny-{job}") == [1, 2, 3], report
    output = Path(info["StdOut"]).read_text()
    assert "mpiexec -n 2 " in output, report  # the default launcher
    assert "MPI world of 2 ranks" in output, report
    assert "2 ranks, 600 train" in output, report
    result = [ln for ln in output.splitlines() if ln.startswith("result: ")]
    assert len(result) == 1 and result[0].startswith("result: updates=3 "), report


def submit_and_wait_for_training(cluster, name, runs, args):
    """Submit a 2-task job and wait until its first update is in metrics.jsonl."""
    job = cluster.submit(SBATCH, *args, env=job_env(runs),
                         sbatch_args=["--ntasks-per-node=2", f"--job-name={name}",
                                      f"--output={cluster.root}/jobs/%x-%j.out"],
                         cwd=cluster.root)
    run = runs / f"{name}-{job}"
    t0 = time.monotonic()
    while len(updates(run)) < 1:
        state = cluster.job(job).get("JobState")
        assert state in ("PENDING", "RUNNING"), f"job {state} early\n" + cluster.report(job)
        assert time.monotonic() - t0 < 120, "no training progress\n" + cluster.report(job)
        time.sleep(0.1)
    return job, run


@pytest.mark.slurm
def test_stop_signal_checkpoints_requeues_and_resumes(cluster):
    """What Slurm does before the time limit (--signal=B:TERM@120): SIGTERM to the batch
    shell.  The job must checkpoint, requeue itself and finish with every update once."""
    runs = cluster.root / "runs-2"
    n = 50
    args = tiny_args(f"optimizer.max_updates={n}", "task.T=12", "optimizer.cg_max_iters=60")
    job, run = submit_and_wait_for_training(cluster, "stop", runs, args)
    cluster.client("scancel", "--batch", "--signal=TERM", job)
    info = cluster.wait(job, timeout=150)
    report = cluster.report(job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), report
    assert info["Restarts"] == "1", report
    assert updates(run) == list(range(1, n + 1)), report
    output = Path(info["StdOut"]).read_text()
    assert "received SIGTERM" in output and "requeueing job" in output, report
    assert "(resuming)" in output and "resumed " in output, report
    assert f"result: updates={n} " in output, report


@pytest.mark.slurm
def test_scancel_is_not_undone_by_a_requeue(cluster):
    runs = cluster.root / "runs-3"
    args = tiny_args("optimizer.max_updates=400", "task.T=12", "optimizer.cg_max_iters=60")
    job, run = submit_and_wait_for_training(cluster, "cancel", runs, args)
    cluster.client("scancel", job)
    info = cluster.wait(job, timeout=60)
    time.sleep(2)  # a wrongful requeue would show by now
    info = cluster.job(job)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", cluster.report(job)


@pytest.mark.slurm
def test_srun_with_a_pmi_the_mpi_cannot_use_stops_before_training(cluster):
    """srun --mpi=none starts N one-rank MPI worlds; the script must refuse to train."""
    runs = cluster.root / "runs-4"
    env = dict(job_env(runs), DHF_LAUNCHER="srun", DHF_SRUN_MPI="none")
    job = cluster.submit(SBATCH, *tiny_args(), env=env,
                         sbatch_args=["--ntasks-per-node=2", "--job-name=nopmi",
                                      f"--output={cluster.root}/jobs/%x-%j.out"],
                         cwd=cluster.root)
    info = cluster.wait(job, timeout=60)
    report = cluster.report(job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", report
    output = Path(info["StdOut"]).read_text()
    assert "srun --mpi=none" in output, report
    assert "do not form one MPI world" in output, report
    assert updates(runs / f"nopmi-{job}") == [], report


def fake_pbs(tmp_path: Path, job_id: str, *args: str, ranks: int = 2):
    nodefile = tmp_path / "nodefile"
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    nodefile.write_text(f"{host}\n" * ranks)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PBS_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "HYDI_"))}
    env.update(PBS_JOBID=job_id, PBS_JOBNAME="dhf-train", PBS_O_WORKDIR=str(tmp_path),
               PBS_NODEFILE=str(nodefile), DHF_BIN=str(Path(venv_bin("dhf-train")).parent))
    return subprocess.run(["bash", str(PBS), *args], capture_output=True, text=True,
                          env=env, cwd="/", timeout=300)


def test_pbs_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(PBS)]).returncode == 0
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0


@pytest.mark.slow
def test_pbs_script_trains_and_a_rerun_resumes(tmp_path):
    first = fake_pbs(tmp_path, "42.pbs", *tiny_args())
    assert first.returncode == 0, first.stdout + first.stderr
    run = tmp_path / "runs" / "dhf-train-42.pbs"
    assert updates(run) == [1, 2, 3]
    assert "2 ranks x 1 threads" in first.stdout
    assert first.stdout.count("result: updates=3 ") == 1
    # qrerun: the same job id runs the script again, which resumes from the checkpoint.
    again = fake_pbs(tmp_path, "42.pbs", *tiny_args("optimizer.max_updates=5"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(resuming)" in again.stdout and "result: updates=5 " in again.stdout
    assert updates(run) == [1, 2, 3, 4, 5]
