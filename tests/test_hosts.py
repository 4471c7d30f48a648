"""Two hosts as MPI sees them, on one machine.

MPICH's ``mpiexec -launcher ssh`` starts each host's ranks through ``tests/fake-ssh``, an
ssh stand-in that gives them the host's name and an empty ``/tmp`` of their own (UTS and
mount namespaces), while the software, the compile caches and the run directory sit on
the file system the hosts share, as on a cluster.  Ranks on different hosts talk over
MPICH's network path, not shared memory.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, metrics, run_mpi, same_run, tiny_args, venv_bin

FAKE_SSH = ROOT / "tests" / "fake-ssh"


def _can_make_hosts() -> bool:
    try:
        return subprocess.run(["unshare", "--uts", "--mount", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not _can_make_hosts(), reason="a host of its own needs unshare's UTS and mount "
                                  "namespaces (root)")]


#: The repository (its .venv and runs/) stays shared where it lies under /tmp.
os.environ["FAKE_SSH_KEEP"] = str(ROOT)


def on_hosts(hosts: dict[str, int], command: list[str]) -> list[str]:
    """``mpiexec`` placing ``hosts[name]`` ranks on each named host."""
    return [venv_bin("mpiexec"), "-launcher", "ssh", "-launcher-exec", str(FAKE_SSH),
            "-hosts", ",".join(f"{h}:{n}" for h, n in hosts.items()),
            "-n", str(sum(hosts.values()))] + command


@pytest.fixture
def shared():
    """A directory on the shared file system (a host's /tmp is its own)."""
    (ROOT / "runs").mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="test-hosts-", dir=ROOT / "runs"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


WHERE = """
import os, socket
from mpi4py import MPI
world = MPI.COMM_WORLD
node = world.Split_type(MPI.COMM_TYPE_SHARED)
ranks = world.gather((world.rank, socket.gethostname(), node.size,
                      os.path.exists({marker!r})))
if world.rank == 0:  # (the launcher interleaves the ranks' lines)
    print(ranks)
"""


def test_each_host_has_its_own_name_and_tmp_and_its_ranks_share_a_node(tmp_path):
    marker = tmp_path / "here"
    marker.touch()
    done = subprocess.run(on_hosts({"node-a": 2, "node-b": 1}, [
        sys.executable, "-c", WHERE.format(marker=str(marker))]),
        capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == str([(0, "node-a", 2, False), (1, "node-a", 2, False),
                                       (2, "node-b", 1, False)]), done.stdout


def test_ranks_on_two_hosts_train_the_one_rank_trajectory(tmp_path, shared):
    """3 ranks on node-a and 2 on node-b, 2 cores: a node with more ranks than cores, so
    each node's first rank compiles and the others load its work; the metrics are the
    one-rank run's, bit for bit."""
    args = tiny_args("run.backend='jax'")  # seconds to compile from an empty cache
    alone = run_mpi(1, args + ["--out", str(tmp_path / "alone")])
    assert alone.returncode == 0, alone.stdout + alone.stderr
    done = subprocess.run(on_hosts({"node-a": 3, "node-b": 2}, [
        venv_bin("dhf-train")] + args + ["--out", str(shared / "hosts")]),
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    start = next(line for line in done.stdout.splitlines() if "compiled in" in line)
    assert "5 ranks on 2 nodes" in start, start
    assert "each node's first rank" in start, start
    assert same_run(metrics(shared / "hosts")) == same_run(metrics(tmp_path / "alone"))


def _rank_pid(rank: int, out: Path) -> int | None:
    """The pid of the dhf-train rank ``rank`` training into ``out``."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if (any(part.endswith(b"dhf-train") for part in cmdline)
                and str(out).encode() in cmdline
                and f"PMI_RANK={rank}".encode() in environ):
            return int(proc.name)
    return None


def test_a_rank_killed_on_the_other_host_ends_every_rank(shared):
    out = shared / "killed"
    proc = subprocess.Popen(on_hosts({"node-a": 2, "node-b": 2}, [
        # (JAX: seconds to compile from an empty cache, where Numba takes minutes)
        venv_bin("dhf-train")] + tiny_args("optimizer.max_updates=100000",
                                           "run.backend='jax'")
        + ["--out", str(out)]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT)
    try:
        t0 = time.monotonic()
        while not (out / "metrics.jsonl").exists() or not (
                out / "metrics.jsonl").read_text().strip():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 300, "no update in 5 minutes"
            time.sleep(0.2)
        victim = _rank_pid(3, out)  # the last rank: on node-b
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode != 0
        # every other rank, on both hosts, ends too (the launcher kills them)
        while any(_rank_pid(rank, out) for rank in range(4)):
            assert time.monotonic() - t_kill < 30, "ranks left running"
            time.sleep(0.2)
        json.loads((out / "metrics.jsonl").read_text().splitlines()[0])  # intact
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
