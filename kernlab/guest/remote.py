"""SSH into a lab VM with fabric: the lab key, a host key known in advance, timeouts.

The guest's host key is made at image build, so kernlab writes a known_hosts entry
for ``[127.0.0.1]:PORT`` before the first connection and connects with paramiko's
RejectPolicy: an unknown or different host key is refused, never added. A fresh SSH
connection to a TCG guest costs about 2 s, so one Connection per VM is kept open.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, UnexpectedExit

from kernlab.core.errors import KernlabError
from kernlab.core.util import atomic_write_text

if TYPE_CHECKING:
    from invoke.runners import Result

CONNECT_TIMEOUT = 10.0  # per attempt, seconds (scaled by the VM's accel)


class Vm(Protocol):
    """What SSH needs of a guest (``kernlab.guest.vm.Vm`` is one): its record, port,
    console log, liveness and the connection it caches."""

    name: str
    ssh_port: int
    console_log: Path
    record: dict[str, Any]
    conn: Any

    def alive(self) -> bool: ...


def known_hosts_line(host: str, port: int, host_key_pub: str) -> str:
    """A known_hosts line for ``host:port`` (OpenSSH's ``[host]:port`` form)."""
    key_type, key_b64 = host_key_pub.split()[:2]
    return f"[{host}]:{port} {key_type} {key_b64}\n"


def write_ssh_files(vm: Vm, image: dict) -> None:
    """known_hosts and an ssh_config (``ssh -F``) for this VM in its run dir."""
    rec = vm.record
    atomic_write_text(Path(rec["known_hosts"]),
                      known_hosts_line(rec["host"], vm.ssh_port, image["host_key_pub"]))
    atomic_write_text(Path(rec["ssh_config"]), ssh_config_text(vm))


def ssh_alias(vm: Vm) -> str:
    return f"kernlab-{vm.name}"


def ssh_config_text(vm: Vm) -> str:
    rec = vm.record
    return (
        f"Host {ssh_alias(vm)}\n"
        f"  HostName {rec['host']}\n"
        f"  Port {vm.ssh_port}\n"
        f"  User {rec['user']}\n"
        f"  IdentityFile {rec['client_key']}\n"
        f"  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {rec['known_hosts']}\n"
        f"  GlobalKnownHostsFile /dev/null\n"
        f"  StrictHostKeyChecking yes\n"
        f"  PasswordAuthentication no\n"
        f"  BatchMode yes\n"
        f"  LogLevel ERROR\n"
    )


def ssh_client(known_hosts: Path) -> paramiko.SSHClient:
    """A paramiko client that trusts only the keys in ``known_hosts`` (RejectPolicy)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))  # not the user's ~/.ssh/known_hosts
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def key_only_connection(address: str, port: int, user: str, key: Path, known_hosts: Path,
                        timeout: float) -> Connection:
    """A fabric Connection (not yet open): this key only, these host keys only, no ~/.ssh/config."""
    conn = Connection(
        address, user=user, port=port, connect_timeout=timeout,
        config=Config(ssh_config=paramiko.SSHConfig()),
        connect_kwargs={"key_filename": [str(key)], "look_for_keys": False,
                        "allow_agent": False, "banner_timeout": timeout, "auth_timeout": timeout},
    )
    conn.client = ssh_client(known_hosts)  # replaces fabric's AutoAddPolicy
    return conn


def connection(vm: Vm, timeout: float | None = None) -> Connection:
    """A fabric Connection (not yet open) to ``vm`` with the lab key and the image's host key."""
    rec = vm.record
    limit = timeout or CONNECT_TIMEOUT * float(rec.get("timeout_scale", 1.0))
    return key_only_connection(rec["host"], vm.ssh_port, rec["user"], Path(rec["client_key"]),
                               Path(rec["known_hosts"]), limit)


def connect(vm: Vm) -> Connection:
    """The VM's open Connection, opened now if needed (one per VM, reused)."""
    conn = vm.conn
    if conn is not None and conn.is_connected:
        return conn
    conn = connection(vm)
    _open(conn, vm)
    vm.conn = conn
    return conn


def _open(conn: Connection, vm: Vm) -> None:
    try:
        conn.open()
    except paramiko.BadHostKeyException as error:
        raise KernlabError(
            f"VM {vm.name} at 127.0.0.1:{vm.ssh_port} offered a host key that is not the "
            f"image's ({error.key.get_name()})",
            "something else answers on that port: run `invoke vm.down` and `invoke vm.up`",
        ) from None
    except paramiko.SSHException as error:
        if "not found in known_hosts" in str(error):
            raise KernlabError(f"host key of 127.0.0.1:{vm.ssh_port} is not known ({error})",
                               "restart the VM so kernlab rewrites its known_hosts") from None
        raise


def run(conn: Connection, command: str, timeout: float, check: bool = True) -> Result:
    """Run ``command`` in the guest; output captured; raises on timeout or (if check) failure."""
    try:
        result = conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    except CommandTimedOut:
        raise KernlabError(f"guest command timed out after {timeout:.0f}s: {command}",
                           "raise the timeout or check the guest (invoke vm.ssh)") from None
    except UnexpectedExit as error:  # pragma: no cover - warn=True normally prevents it
        result = error.result
    if check and result.exited != 0:
        raise KernlabError(f"guest command failed (exit {result.exited}): {command}",
                           "see the output above",
                           details=(result.stdout + result.stderr).strip()[-2000:])
    return result


def wait_ready(vm: Vm, deadline: float, on_dead: Callable[[], Exception]) -> Connection:
    """Retry connecting until ``true`` runs in the guest; keeps the connection open."""
    last: Any = None
    while time.monotonic() < deadline:
        if not vm.alive():
            raise on_dead()
        try:
            conn = connect(vm)
            run(conn, "true", timeout=max(1.0, deadline - time.monotonic()))
            return conn
        except KernlabError as error:
            if "host key" in error.cause:
                raise
            last = error
        except (OSError, paramiko.SSHException, EOFError) as error:
            last = error
        if vm.conn is not None:
            with contextlib.suppress(Exception):
                vm.conn.close()
            vm.conn = None
        time.sleep(0.2)
    raise KernlabError(
        f"SSH to VM {vm.name} (127.0.0.1:{vm.ssh_port}) never answered ({last}); "
        f"console log: {vm.console_log}",
        "read the console log and /var/log/sshd.log in the guest")
