"""A real single-node Slurm cluster on this machine, for the tests: munged, slurmctld and
slurmd (Debian's `munge` and `slurm-wlm`) with their own key, slurm.conf, sockets, state and
logs under a temporary folder; no systemd, nothing of the machine's own /etc used.

- Processes: ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` (no cgroups:
  a container's cgroup tree is seldom delegated to it).
- A finished job's state and reason without slurmdbd: the controller keeps every finished
  job's record for ``MinJobAge`` seconds (here an hour), so ``scontrol show job`` answers
  with its JobState, Reason and ExitCode after it ended; ``JobCompType=jobcomp/filetxt``
  also writes one line per finished job into ``log/jobcomp.txt`` for a human to read.
  (``sacct`` needs slurmdbd: here it says "Slurm accounting storage is disabled".)
- Ports: KERNLAB_TEST_SLURM_PORTS="CTLD,SLURMD" (two TCP ports on 127.0.0.1), else two
  free ones the kernel hands out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SBIN = ("munged", "slurmctld", "slurmd")
NODE = "kl1"
PARTITION = "lab"


def running(tmp_path_factory: Any) -> Iterator[Cluster]:
    """For a module fixture (``yield from running(tmp_path_factory)``): a cluster, stopped at
    the end; the test is skipped where the daemons are not installed."""
    if not available():
        pytest.skip("needs root, munge and slurm-wlm (invoke setup)")
    cluster = start(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


def available() -> bool:
    """Root (slurmd runs jobs as their users) and the munge and Slurm daemons installed."""
    return os.geteuid() == 0 and all(shutil.which(c) for c in (*SBIN, "sbatch", "scontrol"))


@dataclass
class Cluster:
    root: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        """The environment a Slurm command needs to talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def log(self, name: str) -> str:
        path = self.root / "log" / name
        return path.read_text(errors="replace") if path.is_file() else ""

    def stop(self) -> None:
        """Cancel every job (their processes go with them), then stop the daemons."""
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "--partition", PARTITION, check=False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(1)
        for pid_file in ("spool/slurmd.pid", "ctld/slurmctld.pid", "munge/munged.pid"):
            _stop_pid(self.root / pid_file)


def _stop_pid(pid_file: Path, wait: float = 20.0) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


def ports() -> tuple[int, int]:
    """slurmctld's and slurmd's TCP ports."""
    given = os.environ.get("KERNLAB_TEST_SLURM_PORTS", "")
    if given:
        ctld, slurmd = (int(p) for p in given.split(","))
        return ctld, slurmd
    found = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            found.append(probe.getsockname()[1])
    return found[0], found[1]


def slurm_conf(root: Path, ctld_port: int, slurmd_port: int) -> str:
    """One controller, one node (this machine: its cores and memory), one partition."""
    cpus = os.cpu_count() or 1
    memory_mb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal:"))) // 1024 - 512
    short = socket.gethostname().split(".")[0]
    plugins = next((p for p in ("/usr/lib/x86_64-linux-gnu/slurm-wlm", "/usr/lib/aarch64-linux-gnu/slurm-wlm",
                                "/usr/lib/slurm-wlm") if Path(p).is_dir()), "")
    return f"""\
ClusterName=kernlabtest
SlurmctldHost={short}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/ctld/slurmctld.pid
SlurmdPidFile={root}/spool/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
MinJobAge=3600
KillWait=10
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
{f"PluginDir={plugins}" if plugins else ""}
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs={cpus} \
RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def start(root: Path, timeout: float = 60.0) -> Cluster:
    """munged, slurmctld and slurmd under ``root``; returns once the node is idle."""
    for sub in ("munge", "ctld", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, *ports()))
    cluster = Cluster(root, conf)
    try:
        _daemon(["munged", f"--key-file={key}", f"--socket={root}/munge/munge.sock",
                 f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/log/munged.log",
                 f"--seed-file={root}/munge/seed", "--force"], cluster)
        _daemon(["slurmctld", "-f", str(conf), "-i"], cluster)
        _daemon(["slurmd", "-f", str(conf), "-N", NODE], cluster)
        _wait_idle(cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _daemon(argv: list[str], cluster: Cluster) -> None:
    done = subprocess.run(argv, env=cluster.env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} did not start (exit {done.returncode}): {done.stderr.strip()}; "
                           f"logs in {cluster.root / 'log'}")


def _wait_idle(cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = cluster.run("sinfo", "-h", "-n", NODE, "-o", "%T", check=False).stdout.strip()
        if state == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"node {NODE} is {state or 'unknown'}, not idle, after {timeout:.0f} s; "
                       f"slurmctld.log: {cluster.log('slurmctld.log')[-800:]}")
