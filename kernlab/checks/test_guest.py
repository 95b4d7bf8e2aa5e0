"""What a lab guest must offer before an experiment runs in it."""

from __future__ import annotations

from typing import Any

import pytest

BPF_MAP_CREATE = r"""
import ctypes, struct, os
libc = ctypes.CDLL(None, use_errno=True)
attr = struct.pack("IIII", 2, 4, 8, 1) + bytes(112)   # BPF_MAP_TYPE_ARRAY, key 4, value 8, 1
buf = ctypes.create_string_buffer(attr, len(attr))
fd = libc.syscall(321, 0, buf, len(attr))             # bpf(BPF_MAP_CREATE, ...)
print(fd if fd >= 0 else -ctypes.get_errno())
"""


def test_running_kernel_is_the_built_one(guest: Any, vm_record: dict[str, Any]) -> None:
    assert guest.check_output("uname -r") == vm_record["kernel"]["kernelrelease"]


def test_root_is_ext4_on_virtio(guest: Any) -> None:
    assert guest.check_output("findmnt -n -o SOURCE,FSTYPE /").split() == ["/dev/vda", "ext4"]


@pytest.mark.parametrize("where,fstype", [("/sys/kernel/debug", "debugfs"),
                                          ("/sys/kernel/tracing", "tracefs")])
def test_tracing_filesystems_mounted(guest: Any, where: str, fstype: str) -> None:
    mount = guest.mount_point(where)
    assert mount.exists, f"{where} is not mounted"
    assert mount.filesystem == fstype


def test_bpf_syscall_creates_a_map(guest: Any) -> None:
    out = guest.check_output("python3 -c %s", BPF_MAP_CREATE)
    assert int(out) >= 0, f"bpf(BPF_MAP_CREATE) failed: errno {-int(out)}"


def test_kprobe_events_writable(guest: Any) -> None:
    events = "/sys/kernel/tracing/kprobe_events"
    add = guest.run(f"echo 'p:kernlab_verify vfs_read' >> {events}")
    assert add.rc == 0, add.stderr
    assert "kernlab_verify" in guest.file(events).content_string
    remove = guest.run(f"echo '-:kernlab_verify' >> {events}")
    assert remove.rc == 0, remove.stderr


def test_bpftrace_runs_a_one_liner(guest: Any) -> None:
    """A kprobe one-liner that sees the reads of the command it runs (an idle guest reads
    nothing, so the probe must not wait for other activity)."""
    out = guest.run("bpftrace -e 'kprobe:vfs_read /comm == \"cat\"/ { @reads = count(); }' "
                    "-c '/bin/cat /etc/hostname'")
    assert out.rc == 0, out.stderr
    reads = [line for line in out.stdout.splitlines() if line.startswith("@reads:")]
    assert reads and int(reads[0].split()[1]) > 0, out.stdout


def test_copyout_in_kallsyms(guest: Any, vm_record: dict[str, Any]) -> None:
    symbol = (vm_record["kernel"].get("symbols") or {}).get("copyout")
    if not symbol:
        pytest.skip("the build record has no copyout symbol (copyout patch not applied)")
    assert guest.run(f"grep -qw {symbol} /proc/kallsyms").rc == 0


def test_copyout_accepts_a_kprobe(guest: Any, vm_record: dict[str, Any]) -> None:
    """The readiter probe: 5.x refuses notrace functions unless KPROBE_EVENTS_ON_NOTRACE."""
    symbol = (vm_record["kernel"].get("symbols") or {}).get("copyout")
    if not symbol:
        pytest.skip("the build record has no copyout symbol (copyout patch not applied)")
    events = "/sys/kernel/tracing/kprobe_events"
    add = guest.run(f"echo 'p:readiter_copyout {symbol}' >> {events}")
    assert add.rc == 0, f"kprobe on {symbol} refused: {add.stderr}"
    assert "readiter_copyout" in guest.file(events).content_string
    assert guest.run(f"echo '-:readiter_copyout' >> {events}").rc == 0
