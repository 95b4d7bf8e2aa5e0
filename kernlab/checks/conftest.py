"""Fixtures for the guest checks: a testinfra host over kernlab's own SSH client.

testinfra's paramiko backend accepts unknown host keys (WarningPolicy); kernlab
hands it a client that already trusts only the image's host key, and puts a
timeout on every command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import testinfra

from kernlab.core.util import read_json
from kernlab.guest.remote import ssh_client

COMMAND_TIMEOUT = float(os.environ.get("KERNLAB_CHECK_TIMEOUT", "120"))


@pytest.fixture(scope="session")
def vm_record() -> dict[str, Any]:
    path = os.environ.get("KERNLAB_VM_JSON")
    if not path:
        pytest.exit("KERNLAB_VM_JSON is not set: run these checks with `invoke vm.verify`", 2)
    return read_json(Path(path))


@pytest.fixture(scope="session")
def guest(vm_record: dict[str, Any]) -> Any:
    """A testinfra host on the VM: one SSH connection, host key checked, timeouts."""
    rec = vm_record
    host = testinfra.get_host(f"paramiko://{rec['user']}@{rec['host']}:{rec['ssh_port']}",
                              ssh_identity_file=rec["client_key"])
    client = ssh_client(Path(rec["known_hosts"]))
    client.connect(rec["host"], port=rec["ssh_port"], username=rec["user"],
                   key_filename=rec["client_key"], look_for_keys=False, allow_agent=False,
                   timeout=60, banner_timeout=60, auth_timeout=60)
    host.backend.__dict__["client"] = client  # testinfra's cached_property, pre-filled
    host.backend._exec_command = _timed_exec(host.backend, COMMAND_TIMEOUT)
    yield host
    client.close()


def _timed_exec(backend: Any, timeout: float) -> Any:
    """testinfra's _exec_command with a channel timeout (it has none of its own)."""

    def exec_command(command: bytes) -> tuple[int, bytes, bytes]:
        chan = backend.client.get_transport().open_session()
        chan.settimeout(timeout)
        chan.exec_command(command)
        stdout = b"".join(chan.makefile("rb"))
        stderr = b"".join(chan.makefile_stderr("rb"))
        return chan.recv_exit_status(), stdout, stderr

    return exec_command
