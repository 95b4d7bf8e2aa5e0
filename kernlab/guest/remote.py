"""SSH into a lab VM with fabric: the lab key, a host key known in advance, timeouts.

The guest's host key is made at image build, so kernlab writes a known_hosts entry
for ``[127.0.0.1]:PORT`` before the first connection and connects with paramiko's
RejectPolicy: an unknown or different host key is refused, never added. A fresh SSH
connection to a TCG guest costs about 2 s, so one Connection per VM is kept open.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paramiko
from fabric import Config, Connection

from kernlab.core import interrupt
from kernlab.core.errors import KernlabError
from kernlab.core.records import ImageRecord
from kernlab.core.util import atomic_write_text
from kernlab.guest.health import Watch

CONNECT_TIMEOUT = 10.0  # per attempt, seconds (scaled by the VM's accel)
# paramiko's transport thread logs a failed handshake (a traceback) besides raising it; with
# no handler, Python's last-resort handler would print that on stderr. The raised error is
# what kernlab reports.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class Vm(Protocol):
    """What SSH needs of a guest (``kernlab.guest.vm.Vm`` is one): its record, port,
    console log, liveness and the connection it caches."""

    name: str
    ssh_port: int
    console_log: Path
    record: dict[str, Any]
    conn: Any

    def alive(self) -> bool: ...

    def save(self) -> None: ...  # writes ``record`` back (vm.json)


def known_hosts_line(host: str, port: int, host_key_pub: str) -> str:
    """A known_hosts line for ``host:port`` (OpenSSH's ``[host]:port`` form)."""
    key_type, key_b64 = host_key_pub.split()[:2]
    return f"[{host}]:{port} {key_type} {key_b64}\n"


def write_ssh_files(vm: Vm, image: ImageRecord) -> None:
    """known_hosts and an ssh_config (``ssh -F``) for this VM in its run dir."""
    atomic_write_text(vm.info.known_hosts, known_hosts_line(vm.info.host, vm.ssh_port, image.host_key_pub))
    atomic_write_text(vm.info.ssh_config, ssh_config_text(vm))


def ssh_alias(vm: Vm) -> str:
    return f"kernlab-{vm.name}"


def ssh_config_text(vm: Vm) -> str:
    info = vm.info
    return (
        f"Host {ssh_alias(vm)}\n"
        f"  HostName {info.host}\n"
        f"  Port {vm.ssh_port}\n"
        f"  User {info.user}\n"
        f"  IdentityFile {info.client_key}\n"
        f"  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {info.known_hosts}\n"
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
    info = vm.info
    limit = timeout or CONNECT_TIMEOUT * info.timeout_scale
    return key_only_connection(info.host, vm.ssh_port, info.user, info.client_key, info.known_hosts, limit)


def connect(vm: Vm, timeout: float | None = None) -> Connection:
    """The VM's open Connection, opened now if needed (one per VM, reused); ``timeout``
    bounds each step of opening it (default: CONNECT_TIMEOUT scaled by the accelerator)."""
    conn = vm.conn
    if conn is not None and conn.is_connected:
        return conn
    conn = connection(vm, timeout)
    _open(conn, vm)
    conn.kernlab_vm = vm  # remote.run watches the VM while a command runs
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


SETTLE = "settle"  # a VM record's key: "pending" until a restored guest's clock and seed are set


def settle_command() -> str:
    """What a guest restored from a snapshot runs before its first command: the host's time
    now (its clock stood still while saved) and 32 host random bytes into its pool."""
    return (f"date -s @{time.time():.3f} >/dev/null; "
            f"echo {secrets.token_hex(32)} >/dev/urandom")


@dataclass
class GuestResult:
    """A finished guest command: its output and exit status (-1: killed by a signal)."""

    command: str
    stdout: str
    stderr: str
    exited: int
    data: bytes = b""  # stdout as bytes (a tar stream, say)

    @property
    def ok(self) -> bool:
        return self.exited == 0


class ConnectionLost(paramiko.SSHException):
    """The SSH connection closed while a command ran (no exit status came)."""


STOP_GRACE = 1.0  # seconds a stopped guest command gets between SIGTERM and SIGKILL


def run(conn: Connection, command: str, timeout: float, check: bool = True, *,
        stop_grace: float = STOP_GRACE, stop_also: str = "", stream: bool = False,
        stdin: bytes = b"") -> GuestResult:
    """Run ``command`` in the guest, output captured; raises on timeout or (if check) failure.

    The command runs in its own process group (sshd makes its shell a session leader),
    whose id it leaves in a file: a timeout or Ctrl-C here stops the whole group (SIGTERM,
    SIGKILL after ``stop_grace`` seconds, then the shell code ``stop_also``) before the
    error or the KeyboardInterrupt goes on, so nothing is left running in the guest. On a
    VM's connection, the VM is watched while the command runs (kernlab.health): a VM that
    freezes, panics or stops answering ends the command with a GuestDown error.
    ``stream`` copies the output to this process's stdout and stderr as it comes; ``stdin``
    is sent to the command's standard input, which is then closed (a tarball in one go, with
    no SFTP session to start in the guest).
    """
    transport = _transport(conn)
    pid_file = f"/tmp/kernlab-cmd-{secrets.token_hex(6)}.pid"
    vm = getattr(conn, "kernlab_vm", None)
    settle = vm is not None and vm.info.settle == "pending"
    channel = transport.open_session(timeout=30)
    channel.exec_command(f"{settle_command() + '; ' if settle else ''}"
                         f"echo $$ > {pid_file}; (\n{command}\n); rc=$?; rm -f {pid_file}; exit $rc")
    try:
        if stdin:
            channel.sendall(stdin)
            channel.shutdown_write()
        result = _finish(conn, channel, command, pid_file, timeout, check, stop_grace, stop_also, stream)
        if settle:
            vm.note(**{SETTLE: "done"})
            vm.save()
        return result
    except KeyboardInterrupt:
        _stop(transport, channel, pid_file, stop_grace, stop_also)
        raise
    finally:
        channel.close()


def _transport(conn: Connection) -> paramiko.Transport:
    transport = conn.client.get_transport() if conn.is_connected else None
    if transport is None or not transport.is_active():
        raise ConnectionLost("SSH connection is closed")
    return transport


def _finish(conn: Connection, channel: Any, command: str, pid_file: str, timeout: float, check: bool,
            stop_grace: float, stop_also: str, stream: bool) -> GuestResult:
    """Collect the running command's output until it exits; the watch, the timeout."""
    vm = getattr(conn, "kernlab_vm", None)
    watch = None
    if vm is not None:
        watch = Watch(vm, channel.get_transport())
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    heard = time.monotonic()
    while True:
        if _drain(channel, out, err, stream):
            heard = time.monotonic()
            continue
        if channel.exit_status_ready():
            _drain(channel, out, err, stream)
            break
        if watch is not None and (down := watch.check(time.monotonic() - heard)):
            raise down
        interrupt.check()  # a worker thread (a suite's lane) stopped with the run
        if time.monotonic() > deadline:
            _stop(channel.get_transport(), channel, pid_file, stop_grace, stop_also)
            raise KernlabError(f"guest command timed out after {timeout:.0f}s: {command} "
                               "(stopped in the guest)",
                               "raise the timeout or check the guest (invoke vm.ssh)")
        time.sleep(0.02)
    if channel.exit_status == -1 and not channel.get_transport().is_active():
        if watch is not None and (down := watch.explain()):
            raise down
        raise ConnectionLost(f"SSH connection lost while running: {command}")
    result = GuestResult(command, out.decode(errors="replace"), err.decode(errors="replace"),
                         channel.exit_status, bytes(out))
    if check and result.exited != 0:
        raise KernlabError(f"guest command failed (exit {result.exited}): {command}",
                           "see the output above",
                           details=(result.stdout + result.stderr).strip()[-2000:])
    return result


def _drain(channel: Any, out: bytearray, err: bytearray, stream: bool = False) -> bool:
    """Move what the channel has into ``out``/``err`` (and, streaming, to our stdout/stderr);
    True if there was anything."""
    got = False
    for ready, receive, buffer, shown in ((channel.recv_ready, channel.recv, out, sys.stdout),
                                          (channel.recv_stderr_ready, channel.recv_stderr, err, sys.stderr)):
        while ready():
            data = receive(1 << 16)
            buffer += data
            got = True
            if stream:
                raw = getattr(shown, "buffer", None)
                raw.write(data) if raw is not None else shown.write(data.decode(errors="replace"))
                shown.flush()
    return got


def _stop(transport: Any, channel: Any, pid_file: str, grace: float, also: str) -> None:
    """Stop a guest command's process group: SIGTERM, SIGKILL after ``grace`` s, then ``also``.

    Runs on a second channel of the same connection; gives up quietly if that is gone.
    """
    if channel.exit_status_ready() and not also:
        return
    tries = max(1, int(grace * 10))
    script = (f"p=$(cat {pid_file} 2>/dev/null); "
              f"if [ -n \"$p\" ]; then kill -TERM -- -$p 2>/dev/null; i=0; "
              f"while kill -0 -- -$p 2>/dev/null && [ $i -lt {tries} ]; do sleep 0.1; i=$((i+1)); done; "
              f"kill -KILL -- -$p 2>/dev/null; fi; {also or ':'}; rm -f {pid_file}")
    with contextlib.suppress(Exception):  # a dead connection: nothing more to do from here
        stopper = transport.open_session(timeout=3)
        stopper.exec_command(script)
        deadline = time.monotonic() + grace + 4
        while not stopper.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        stopper.close()


def wait_ready(vm: Vm, deadline: float, on_dead: Callable[[], Exception],
               command: bool = True) -> Connection:
    """Retry connecting until ``true`` runs in the guest (``command`` False: until the SSH
    handshake is done); keeps the connection open."""
    last: Any = None
    while time.monotonic() < deadline:
        if not vm.alive():
            raise on_dead()
        try:
            conn = connect(vm)
            if command:
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
