"""`invoke setup`: the host packages kernlab needs, installed idempotently."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.proc import capture, run_logged
from kernlab.core.progress import reporter

HOST_PACKAGES = [
    # kernel builds
    "build-essential", "gcc-12", "flex", "bison", "bc", "libelf-dev", "libssl-dev", "dwarves",
    "ccache", "cpio", "kmod", "lz4", "rsync", "xz-utils", "zstd", "patch", "git", "python3",
    # samples/bpf and host-built BPF objects
    "clang", "llvm", "lld", "libbpf-dev", "libcap-dev", "pkg-config",
    # check-experiment: bpftrace programs compiled (--emit-elf) against a kernel's headers
    "bpftrace",
    # images and the VM
    "qemu-system-x86", "qemu-utils", "mmdebstrap", "e2fsprogs", "openssh-client",
]

# only for the tests: a second sshd on 127.0.0.1 stands in for another lab host (--hosts);
# shellcheck, which actionlint runs on the workflow's scripts; munge and slurm-wlm, whose
# daemons tests/slurmcluster.py starts as a one-node cluster (--slurm)
TEST_PACKAGES = ["openssh-server", "shellcheck", "munge", "slurm-wlm",
                 "crash", "python3-drgn",  # tests/test_debug_slow.py opens vmcores with them
                 # tests/test_registry*.py: a real OCI registry (the CNCF distribution registry) and htpasswd
                 "docker-registry", "apache2-utils"]
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

SUITES = {
    "bookworm": "http://deb.debian.org/debian",
    "bullseye": "http://deb.debian.org/debian",
}


def missing_packages(packages: list[str]) -> list[str]:
    """Packages from ``packages`` that dpkg does not report as installed."""
    out = capture(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages])
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def setup_host(dry_run: bool = False, extra: list[str] | None = None) -> list[str]:
    """Install what is missing; returns the packages installed (or that would be)."""
    wanted = HOST_PACKAGES + list(extra or [])
    missing = missing_packages(wanted)
    if not missing:
        reporter().note(f"all {len(wanted)} host packages are installed")
        return []
    reporter().note(f"installing: {' '.join(missing)}")
    if not dry_run:
        install_debian_packages(missing, log=paths.cache_dir() / "setup.log")
    return missing


def _ensure_suite(suite: str) -> None:
    """Add an apt source for an older Debian suite (e.g. bullseye for linux-source-5.10)."""
    release = capture(["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME"])
    if not suite or suite == release or suite not in SUITES:
        return
    listing = Path(f"/etc/apt/sources.list.d/kernlab-{suite}.sources")
    if listing.exists() or _suite_listed(suite):
        return
    reporter().note(f"adding Debian {suite} to apt sources ({listing})")
    listing.write_text(
        f"Types: deb\nURIs: {SUITES[suite]}\nSuites: {suite}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def _suite_listed(suite: str) -> bool:
    """Whether some apt source already names ``suite`` (as a word: not bullseye-security)."""
    import re

    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    pattern = re.compile(rf"(^|\s){re.escape(suite)}(\s|$)", re.MULTILINE)
    return any(p.is_file() and pattern.search(p.read_text(errors="replace")) for p in sources)


def install_debian_packages(packages: list[str], suite: str | None = None, log: Path | None = None) -> None:
    """apt-get install ``packages`` (from ``suite`` when given); needs root."""
    log = log or paths.cache_dir() / "apt.log"
    if os.geteuid() != 0:
        raise KernlabError(f"installing {' '.join(packages)} needs root",
                           f"run: sudo apt-get install {' '.join(packages)}")
    if not shutil.which("apt-get"):
        raise KernlabError("apt-get not found: kernlab's setup supports Debian and Ubuntu hosts",
                           f"install the equivalents of: {' '.join(packages)}")
    if suite:
        _ensure_suite(suite)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    with reporter().step(f"apt-get install {' '.join(packages)}"), _services_not_started():
        run_logged(["apt-get", "update"], log, what="apt-get update", env=env)
        target = ["-t", suite] if suite and suite in SUITES else []
        run_logged(["apt-get", "install", "-y", "--no-install-recommends", *target, *packages],
                   log, what=f"apt-get install {' '.join(packages)}", env=env,
                   fix="check the package names and your apt sources")


def update_apt_lists(suite: str | None, log: Path) -> None:
    """Add ``suite`` to apt's sources when it is an older Debian suite, then apt-get update."""
    if suite:
        _ensure_suite(suite)
    run_logged(["apt-get", "update"], log, what="apt-get update", env={"DEBIAN_FRONTEND": "noninteractive"},
               fix="check your apt sources and network")


@contextlib.contextmanager
def _services_not_started() -> Iterator[None]:
    """Packages such as openssh-server must not start a daemon on 0.0.0.0 when installed."""
    if POLICY_RC_D.exists():  # an existing policy (Docker images ship one) is left alone
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# kernlab: no service starts during its package installs\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)
