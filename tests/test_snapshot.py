"""Snapshot boot: what a snapshot is keyed by, and real restores of the 6.1 guest (TCG).

Fast tests check the key and the checks of a snapshot's files. The slow ones boot the real
kernel on the real image: each gives the guest a kernel parameter of its own
(``kernlab.test=...``), so it makes and restores its own snapshot whatever other tests and
engineers left in the state directory.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from kernlab.guest import remote, snapshot
from kernlab.guest.vm import start_vm


# ---------------------------------------------------------------- the key
def _argv(run_dir: str, name: str, port: int, memory: str = "2G") -> list[str]:
    return ["qemu-system-x86_64", "-name", f"kernlab-{name},process=kernlab-{name}", "-m", memory,
            "-drive", f"file={run_dir}/overlay.qcow2,if=virtio",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-qmp", f"unix:{run_dir}/qmp.sock,server=on,wait=off"]


def test_the_key_ignores_the_vm_name_run_dir_and_port_but_not_the_settings() -> None:
    facts = {"bzImage_sha256": "aa", "image_key": "bb", "qemu": "QEMU 7.2"}

    def key(run_dir: str, name: str, port: int, memory: str = "2G", **more: str) -> str:
        return snapshot.key_of(snapshot.inputs(_argv(run_dir, name, port, memory), Path(run_dir),
                                               name, {**facts, **more}))

    first = key("/s/vms/default", "default", 40001)
    assert key("/other/vms/bench", "bench", 50123) == first
    assert key("/s/vms/default", "default", 40001, memory="4G") != first
    assert key("/s/vms/default", "default", 40001, bzImage_sha256="cc") != first
    assert key("/s/vms/default", "default", 40001, qemu="QEMU 8.0") != first


def _fake_snapshot(root: Path, key: str) -> Path:
    where = snapshot.dir_for(key)
    where.mkdir(parents=True)
    (where / "disk.qcow2").write_bytes(b"d" * 10)
    (where / "ram.state").write_bytes(b"r" * 20)
    (where / "snapshot.json").write_text(json.dumps(
        {"key": key, "format": snapshot.FORMAT, "disk_bytes": 10, "state_bytes": 20}))
    return where


def test_a_snapshot_with_a_changed_file_or_other_key_is_deleted_with_a_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    key = "ab" * 32
    where = _fake_snapshot(tmp_path, key)
    found, why = snapshot.find(key)
    assert found is not None and found.state == where / "ram.state" and why == ""

    (where / "ram.state").write_bytes(b"short")
    found, why = snapshot.find(key)
    assert found is None and "changed ram.state" in why and not where.exists()

    where = _fake_snapshot(tmp_path, key)
    record = json.loads((where / "snapshot.json").read_text())
    (where / "snapshot.json").write_text(json.dumps(record | {"key": "cd" * 32}))
    found, why = snapshot.find(key)
    assert found is None and "made for other inputs" in why and not where.exists()
    assert snapshot.find(key) == (None, "")  # none at all: no reason to give


# ---------------------------------------------------------------- real restores
def _snapshots() -> set[Path]:
    where = snapshot.snapshots_dir()
    return {p for p in where.iterdir() if not p.name.startswith(".")} if where.is_dir() else set()


@pytest.fixture
def own_append():
    """A kernel parameter of this test's own (so its own snapshot key); the snapshots the
    test made are deleted after it, so they do not push the user's out (KEEP)."""
    before = _snapshots()
    yield lambda: f"kernlab.test={secrets.token_hex(4)}"
    for made in _snapshots() - before:
        snapshot.discard(made)


def _run(vm, command: str) -> str:
    return remote.run(remote.connect(vm), command, timeout=120).stdout.strip()


@pytest.mark.slow
def test_restored_guests_start_from_a_clean_disk_with_the_host_s_clock(
        lab_kernel: dict, lab_image: dict, vm_name, own_append) -> None:
    append = own_append()
    first = start_vm(lab_kernel, lab_image, vm_name("snap"), append=append)
    try:
        assert first.info.boot == "snapshot"  # made by a cold boot, then restored
        saved = Path(first.info.snapshot["dir"])
        _run(first, "echo left-behind > /root/written-by-run-1 && sync")
        uuid_first = _run(first, "cat /proc/sys/kernel/random/uuid")
    finally:
        first.stop()
    time.sleep(8)  # the saved guest's clock is now 8 s (and more) behind the host's

    # as a run does: the clock and the seed are set by the first command, this date
    second = start_vm(lab_kernel, lab_image, vm_name("snap"), append=append, defer_settle=True)
    try:
        assert second.info.boot == "snapshot" and second.info.settle == "pending"
        assert second.info.snapshot["dir"] == str(saved)
        guest = float(_run(second, "date +%s.%N"))
        assert abs(guest - time.time()) < 2.0
        assert json.loads((second.run_dir / "vm.json").read_text())["settle"] == "done"
        assert _run(second, "ls /root/written-by-run-1 2>&1 || echo absent").endswith("absent")
        assert _run(second, "cat /proc/sys/kernel/random/uuid") != uuid_first
        assert "KERNLAB-READY" in second.console_log.read_text()  # the saved boot's console
    finally:
        second.stop()


@pytest.mark.slow
def test_a_corrupted_snapshot_falls_back_to_a_cold_boot_and_is_replaced(
        lab_kernel: dict, lab_image: dict, vm_name, own_append, capsys: pytest.CaptureFixture) -> None:
    append = own_append()
    start_vm(lab_kernel, lab_image, vm_name("snapbad"), append=append).stop()
    saved = next(p for p in snapshot.snapshots_dir().iterdir()
                 if append in " ".join(json.loads((p / "snapshot.json").read_text())["inputs"]["argv"]))
    state = saved / "ram.state"
    state.chmod(0o644)
    with open(state, "r+b") as handle:  # same size, garbage inside: only QEMU can tell
        handle.seek(0)
        handle.write(b"\0" * 4096)
    made = json.loads((saved / "snapshot.json").read_text())["created_at"]
    capsys.readouterr()

    vm = start_vm(lab_kernel, lab_image, vm_name("snapbad"), append=append)
    try:
        assert _run(vm, "uname -r") == lab_kernel.data["kernelrelease"]
        err = capsys.readouterr().err
        assert f"restoring snapshot {saved.name} failed" in err and "booting cold" in err
        assert json.loads((saved / "snapshot.json").read_text())["created_at"] > made  # a new one
    finally:
        vm.stop()


@pytest.mark.slow
def test_cold_boots_cold_and_leaves_snapshots_alone(lab_kernel: dict, lab_image: dict, vm_name,
                                                     own_append) -> None:
    append = own_append()
    before = _snapshots()
    vm = start_vm(lab_kernel, lab_image, vm_name("cold"), append=append, cold=True)
    try:
        assert vm.info.boot == "cold" and vm.info.snapshot is None
        assert "-incoming" not in vm.info.argv
        assert _run(vm, "uname -r") == lab_kernel.data["kernelrelease"]
    finally:
        vm.stop()
    assert _snapshots() <= before


@pytest.mark.slow
def test_two_first_boots_of_one_key_at_once_both_come_up_and_leave_one_snapshot(
        lab_kernel: dict, lab_image: dict, vm_name, own_append) -> None:
    from concurrent.futures import ThreadPoolExecutor

    append = own_append()
    before = _snapshots()
    with ThreadPoolExecutor(2) as pool:
        vms = list(pool.map(lambda n: start_vm(lab_kernel, lab_image, vm_name(n), append=append),
                            ("snapa", "snapb")))
    try:
        for vm in vms:
            assert _run(vm, "uname -r") == lab_kernel.data["kernelrelease"]
        assert len(_snapshots() - before) == 1
    finally:
        for vm in vms:
            vm.stop()
