"""A real second sshd on 127.0.0.1 that stands in for another lab host.

It runs OpenSSH's own sshd with a host key and an authorized client key made for the
test, key-only root login, bound to loopback on a free port. The test gets the hosts
file entry (key 0600, a known_hosts holding exactly this host key) to give kernlab.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class LoopbackSshd:
    dir: Path
    port: int
    process: subprocess.Popen

    @property
    def client_key(self) -> Path:
        return self.dir / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def host_entry(self, name: str, workdir: Path, **extra) -> dict:
        """A hosts-file entry for this sshd."""
        return {"name": name, "address": "127.0.0.1", "port": self.port, "user": "root",
                "key": str(self.client_key), "known_hosts": str(self.known_hosts),
                "workdir": str(workdir), **extra}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def available() -> bool:
    return Path(SSHD).is_file() and os.geteuid() == 0 and shutil.which("ssh-keygen") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start(directory: Path) -> LoopbackSshd:
    """Start sshd on a free 127.0.0.1 port; returns once it accepts connections."""
    directory.mkdir(parents=True, exist_ok=True)
    _keygen(directory / "host_ed25519")
    _keygen(directory / "client_ed25519")
    shutil.copyfile(directory / "client_ed25519.pub", directory / "authorized_keys")
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory}/host_ed25519\n"
        f"AuthorizedKeysFile {directory}/authorized_keys\nPidFile {directory}/sshd.pid\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
        "AcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n")
    host_pub = (directory / "host_ed25519.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = (directory / "sshd.log").open("w")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(directory / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return LoopbackSshd(directory, port, process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("sshd did not listen within 15 s")
