"""A throwaway one-node Slurm cluster for the tests: munged, slurmctld and slurmd on this
machine, every file (config, keys, sockets, state, spool, logs) in one temporary directory.

Debian's ``slurm-wlm`` and ``munge`` are installed with apt-get when ``slurmctld`` is
missing and ``DHF_TEST_INSTALL=1`` asks for it (CI does).  The configuration is
cgroup-free (proctrack/linuxproc, task/none), keeps no accounting, listens on free ports
and shortens the requeue delay (``cred_expire``) and the scheduler's interval so that a
requeued job restarts within seconds.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
PACKAGES = ("slurm-wlm", "munge")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}


class Unavailable(Exception):
    """Slurm cannot be had on this machine (the reason says why); the caller skips."""


def which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", "")] + list(SBIN))
    return shutil.which(name, path=path)


def privileged() -> list[str]:
    """The prefix that runs a command as root: nothing for root, else passwordless sudo."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0:
        return [sudo, "-n"]
    raise Unavailable("Slurm's daemons need root: not root, and no passwordless sudo")


def ensure_installed(timeout: float = 600) -> str:
    """Install slurm-wlm and munge with apt-get unless present, where DHF_TEST_INSTALL=1
    asks for it; returns the version line (``slurm-wlm 22.05.8``).  Raises Unavailable
    where that cannot be done or was not asked for."""
    tools = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "scancel")
    if not all(which(t) for t in tools):
        if os.environ.get("DHF_TEST_INSTALL") != "1":
            raise Unavailable("Slurm (slurm-wlm, munge) is not installed; "
                              "DHF_TEST_INSTALL=1 scripts/test.sh slurm installs it with "
                              "apt-get")
        prefix = privileged()
        apt = shutil.which("apt-get")
        if apt is None:
            raise Unavailable("Slurm is not installed, and no apt-get to install it")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = prefix + ["env", "DEBIAN_FRONTEND=noninteractive", apt, "install", "-y",
                            "-q", "--no-install-recommends", *PACKAGES]
        done = subprocess.run(install, capture_output=True, text=True, env=env,
                              timeout=timeout)
        if done.returncode != 0:  # a fresh machine has no package lists yet
            update = subprocess.run(prefix + [apt, "update", "-q"], capture_output=True,
                                    text=True, env=env, timeout=timeout)
            done = subprocess.run(install, capture_output=True, text=True, env=env,
                                  timeout=timeout)
            if done.returncode != 0:
                raise Unavailable("apt-get could not install " + " ".join(PACKAGES) + ": "
                                  + (update.stderr + done.stderr).strip()[-600:])
        missing = [t for t in tools if not which(t)]
        if missing:
            raise Unavailable(f"installed {' '.join(PACKAGES)} but {missing} still missing")
    return subprocess.run([which("slurmctld"), "-V"], capture_output=True,
                          text=True).stdout.strip()


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def clean_env(**extra: str) -> dict:
    """This process's environment without anything an enclosing Slurm job or MPI launcher
    set (it would leak into sbatch and the job), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "PMI_", "PMIX_",
                                "OMPI_", "HYDI_", "MPI_LOCAL"))}
    env.update(extra)
    return env


def parse_fields(line: str) -> dict:
    """``scontrol show -o`` output: Key=Value pairs separated by spaces."""
    return dict(re.findall(r"(\S+?)=(\S*)", line))


class SlurmCluster:
    """munged + slurmctld + slurmd on localhost, configured in ``root``; use as a context
    manager or call :meth:`start` and :meth:`stop`."""

    def __init__(self, root: Path, version: str = ""):
        self.root = Path(root)
        self.version = version
        self.conf = self.root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.prefix: list[str] = []
        self.env = clean_env(SLURM_CONF=str(self.conf))

    # -- setup ---------------------------------------------------------------------------
    def write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool", "jobs"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        ctld_port, slurmd_port = free_ports(2)
        probe = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True)
        found = re.search(r"\bCPUs=(\d+)", probe.stdout)
        cpus = int(found.group(1)) if found else (os.cpu_count() or 1)
        self.conf.write_text(f"""\
# A one-node test cluster written by tests/slurm_cluster.py.
ClusterName=dhftest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start (120 s).
AuthInfo=socket={r}/munge.socket,cred_expire=5
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
InactiveLimit=0
KillWait=10
MinJobAge=600
# The node offers at least 2 CPUs, so that two ranks fit even on a one-core runner.
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={max(cpus, 2)} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.stdout", "wb")
        self.procs[name] = subprocess.Popen(self.prefix + cmd, stdout=log,
                                            stderr=subprocess.STDOUT, env=self.env,
                                            stdin=subprocess.DEVNULL, cwd=self.root)
        log.close()

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self.prefix = privileged()
        self.write_config()
        r = self.root
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        if self.prefix:  # munged insists on owning its key
            subprocess.run(self.prefix + ["chown", "root:root", str(key)], check=True)
        self._spawn("munged", [which("munged"), "--foreground", "--force",
                               f"--socket={r}/munge.socket", f"--key-file={key}",
                               f"--log-file={r}/munged.log", f"--pid-file={r}/munged.pid",
                               f"--seed-file={r}/munged.seed"])
        self._wait_for(lambda: (r / "munge.socket").exists(), timeout, "munged's socket")
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [which("slurmd"), "-D", "-f", str(self.conf),
                               "-N", self.node])
        self._wait_for(self._node_idle, timeout, f"node {self.node} to come up idle")
        return self

    def _node_idle(self) -> bool:
        out = self.scontrol("show", "node", self.node, "-o", check=False).stdout
        state = parse_fields(out).get("State", "")
        return state.startswith("IDLE") and "DRAIN" not in state

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}\n"
                                   + self.logs())
            if ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"no {what} after {timeout:.0f}s\n" + self.logs())

    def stop(self) -> None:
        """Cancel every job, wait for them to leave the node, stop the daemons."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            active = self.active_jobs()
            if active:
                self.client("scancel", "--full", *active, check=False)
            t0 = time.monotonic()
            while self.active_jobs() and time.monotonic() - t0 < 30:
                time.sleep(0.25)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------
    def client(self, tool: str, *args: str, check: bool = True, timeout: float = 30,
               env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
        done = subprocess.run([which(tool), *args], capture_output=True, text=True,
                              env=env or self.env, timeout=timeout, cwd=cwd)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: status {done.returncode}: "
                               f"{done.stdout}{done.stderr}\n" + self.logs())
        return done

    def scontrol(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.client("scontrol", *args, check=check)

    def active_jobs(self) -> list[str]:
        out = self.scontrol("show", "job", "-o", check=False).stdout
        jobs = [parse_fields(line) for line in out.splitlines() if "JobId=" in line]
        return [j["JobId"] for j in jobs if j.get("JobState") not in TERMINAL]

    def submit(self, script, *args: str, sbatch_args=(), env: dict | None = None,
               cwd=None) -> str:
        """sbatch ``script args`` with this cluster's SLURM_CONF and ``env`` added to the
        job's environment; returns the job id."""
        job_env = dict(self.env, **(env or {}))
        done = self.client("sbatch", "--parsable", *sbatch_args, str(script), *args,
                           env=job_env, cwd=cwd)
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        return parse_fields(self.scontrol("show", "job", "-o", job_id).stdout)

    def wait(self, job_id: str, timeout: float) -> dict:
        """Poll ``scontrol show job`` until the job ends (requeues pass through)."""
        t0 = time.monotonic()
        while True:
            info = self.job(job_id)
            if info.get("JobState") in TERMINAL:
                return info
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after "
                                   f"{timeout:.0f}s\n" + self.report(job_id))
            time.sleep(0.25)

    # -- diagnostics ---------------------------------------------------------------------
    def logs(self, tail: int = 60) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log", "slurmctld.stdout",
                     "slurmd.stdout", "munged.stdout"):
            path = self.root / name
            if path.exists() and path.stat().st_size:
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)

    def report(self, job_id: str) -> str:
        """Everything worth reading when a job went wrong: its record, its output file,
        the daemons' logs."""
        record = self.scontrol("show", "job", job_id, check=False)
        text = (f"--- {self.version or 'Slurm'}, {self.conf}\n"
                f"--- scontrol show job {job_id}\n{record.stdout}{record.stderr}")
        stdout = parse_fields(record.stdout.replace("\n", " ")).get("StdOut")
        if stdout and Path(stdout).exists():
            text += f"--- {stdout}\n{Path(stdout).read_text(errors='replace')[-8000:]}"
        return text + "\n" + self.logs()


def short_tempdir() -> Path:
    """A fresh directory with a short path: munged's socket path must fit in 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="dhf-slurm-", dir="/tmp"))
    root.chmod(0o755)  # munged's socket is in it, for jobs of any user
    return root
