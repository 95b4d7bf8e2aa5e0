"""Lab VM pieces that need no guest kernel: KVM probe, ports, keys, host key checking.

The only fakes here are the KVM probes' answers: whether this host's KVM works, or
how fast, is the host's business, so no test asserts it (this host's nested KVM
sometimes finishes the probe sector in time and sometimes not). The tests that need a
verdict fake ``qemu._run_probe`` and say so; everything else is the real QEMU, real
keys, a real SSH server.
"""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paramiko
import pytest

from kernlab.core.errors import KernlabError
from kernlab.core.records import BuildRecord, ImageRecord, VmRecord
from kernlab.guest import image, qemu, remote
from kernlab.guest.vm import Vm, find_vm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    monkeypatch.delenv("KERNLAB_ACCEL", raising=False)
    monkeypatch.delenv("KERNLAB_QUIET", raising=False)
    return tmp_path / "state"


# ---------------------------------------------------------------- accelerator
def test_probe_guest_runs_under_tcg() -> None:
    """The probe's boot sector really exits QEMU: a KVM failure is KVM's, not the probe's."""
    works, reason = qemu.probe_kvm(accel="tcg")
    assert works, reason


def fake_probes(monkeypatch: pytest.MonkeyPatch, answers: dict[tuple[str, str], float | None]) -> list:
    """FAKE: ``qemu._run_probe`` answers from ``answers[(accel, "sector"|"kernel")]``: the
    seconds the probe took, or None for "did not finish within its limit". The limits it
    was given are recorded (returned list of (accel, what, limit))."""
    asked = []

    def run_probe(argv: list[str], limit: float):
        accel = argv[argv.index("-accel") + 1].split(",")[0]
        what = "kernel" if "-kernel" in argv else "sector"
        asked.append((accel, what, limit))
        seconds = answers[(accel, what)]
        if seconds is None or seconds > limit:
            return None, "", limit
        if what == "sector":
            return qemu.PROBE_EXIT, "", seconds
        return 0, "Kernel panic - not syncing: VFS: Unable to mount root fs", seconds

    monkeypatch.setattr(qemu, "_run_probe", run_probe)
    monkeypatch.setattr(qemu.os, "access", lambda *a: True)  # /dev/kvm "accessible"
    return asked


def test_broken_kvm_falls_back_to_tcg_with_one_note(state: Path, monkeypatch, capsys) -> None:
    """FAKE probe answer: the KVM boot sector does not finish within its limit -> TCG, x5."""
    asked = fake_probes(monkeypatch, {("kvm", "sector"): None})
    accel = qemu.choose_accel()
    assert accel.name == "tcg" and asked == [("kvm", "sector", qemu.PROBE_LIMIT)]
    notes = [line for line in capsys.readouterr().err.splitlines() if "KVM" in line]
    assert len(notes) == 1 and "using TCG, timeouts x5" in notes[0]
    assert str(qemu.verdict_log()) in notes[0]
    assert accel.args()[:2] == ["-accel", "tcg,thread=single"]
    assert (state / "accel.json").is_file()
    asked.clear()
    assert qemu.choose_accel().name == "tcg"  # cached verdict: no second probe
    assert asked == []


def test_tcg_runs_the_vcpus_on_one_thread_unless_told_otherwise(monkeypatch) -> None:
    """Single-threaded TCG by default (no cross-vCPU race on re-patched kernel text);
    KERNLAB_TCG_THREADS=multi gives a thread per vCPU; KVM's arguments do not change."""
    tcg = qemu.Accel("tcg", "test")
    assert tcg.args() == ["-accel", "tcg,thread=single", "-cpu", "max"]
    monkeypatch.setenv("KERNLAB_TCG_THREADS", "Multi")
    assert tcg.args() == ["-accel", "tcg,thread=multi", "-cpu", "max"]
    assert qemu.Accel("kvm", "test").args() == ["-accel", "kvm", "-cpu", "host"]


def test_crawling_kvm_is_found_out_against_tcg(state: Path, monkeypatch, tmp_path) -> None:
    """FAKE probe answers: KVM runs the boot sector fast, but boots the kernel no faster than
    TCG (the nested-KVM case). The verdict is TCG, with the evidence in the verdict log."""
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    asked = fake_probes(monkeypatch, {("kvm", "sector"): 0.2, ("tcg", "kernel"): 4.0,
                                      ("kvm", "kernel"): 3.5})
    accel = qemu.choose_accel(kernel)
    assert accel.name == "tcg" and "KVM crawls here" in accel.reason
    assert asked == [("kvm", "sector", qemu.PROBE_LIMIT), ("tcg", "kernel", qemu.KERNEL_PROBE_LIMIT),
                     ("kvm", "kernel", 4.0 / qemu.KVM_SPEEDUP)]
    log = qemu.verdict_log().read_text()
    assert "verdict: tcg" in log and "kernel under tcg" in log and "root-mount panic after 4.0s" in log
    assert "kernel under kvm (limit 2.0s = tcg / 2)" in log


def test_fast_kvm_is_used_for_a_kernel(state: Path, monkeypatch, tmp_path, capsys) -> None:
    """FAKE probe answers: KVM boots the kernel 8x faster than TCG -> KVM, no TCG note."""
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    fake_probes(monkeypatch, {("kvm", "sector"): 0.1, ("tcg", "kernel"): 4.0, ("kvm", "kernel"): 0.5})
    accel = qemu.choose_accel(kernel)
    assert (accel.name, accel.scale) == ("kvm", 1.0) and "8.0x faster than TCG" in accel.reason
    assert accel.args() == ["-accel", "kvm", "-cpu", "host"]
    assert "TCG" not in capsys.readouterr().err
    assert "verdict: kvm" in qemu.verdict_log().read_text()


def test_a_sector_only_verdict_is_probed_again_with_the_kernel(state: Path, monkeypatch, tmp_path) -> None:
    """FAKE probe answers: a KVM verdict made without a kernel is not trusted for a kernel boot."""
    asked = fake_probes(monkeypatch, {("kvm", "sector"): 0.1, ("tcg", "kernel"): 4.0,
                                      ("kvm", "kernel"): None})
    assert qemu.choose_accel().name == "kvm"  # the sector alone
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    assert qemu.choose_accel(kernel).name == "tcg"
    assert [what for _, what, _ in asked] == ["sector", "sector", "kernel", "kernel"]


def test_the_verdict_rule() -> None:
    assert qemu.judge(4.0, 1.0, 2.0)[0] and not qemu.judge(4.0, None, 2.0)[0]
    assert not qemu.judge(4.0, 2.5, 2.0)[0]


def test_bad_accel_override_is_one_line_error(state: Path, monkeypatch) -> None:
    monkeypatch.setenv("KERNLAB_ACCEL", "hvf")
    with pytest.raises(KernlabError, match="KERNLAB_ACCEL='hvf' is not kvm or tcg"):
        qemu.choose_accel()


def test_missing_qemu_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KernlabError) as error:
        qemu.qemu_binary()
    assert "qemu-system-x86_64 is not installed" in error.value.cause
    assert "apt-get install qemu-system-x86" in error.value.fix


# ---------------------------------------------------------------- ports
def test_taken_port_is_replaced_by_a_free_one(tmp_path: Path, capsys) -> None:
    """Real QEMU whose hostfwd port is taken fails; launch() retries on another port."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    sock = tmp_path / "qmp.sock"

    def argv(port: int) -> list[str]:
        return [qemu.qemu_binary(), "-machine", "pc", "-accel", "tcg", "-m", "16",
                "-nodefaults", "-display", "none", "-no-user-config",
                "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
                "-device", "virtio-net-pci,netdev=n0",
                "-qmp", f"unix:{sock},server=on,wait=off"]

    proc, port = qemu.launch(argv, sock, tmp_path / "qemu.log", first_port=taken)
    try:
        assert port != taken
        assert f"port {taken} on 127.0.0.1 is taken" in capsys.readouterr().err
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # QEMU listens on the new port, on 127.0.0.1 only
        assert "Could not set up host forwarding" in (tmp_path / "qemu.log").read_text()
    finally:
        qemu.kill(proc.pid)
        busy.close()
    assert proc.poll() is not None


def test_a_qemu_start_failure_reports_qemu_s_own_error_line(tmp_path: Path, capsys) -> None:
    """Real QEMU asked for 1T of guest memory: its own message, not a port conflict, and no
    retry on other ports (the logged command line holds "hostfwd", which once fooled it)."""
    sock = tmp_path / "qmp.sock"
    tried = []

    def argv(port: int) -> list[str]:
        tried.append(port)
        return [qemu.qemu_binary(), "-machine", "pc", "-accel", "tcg", "-m", "1T",
                "-nodefaults", "-display", "none", "-no-user-config",
                "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
                "-device", "virtio-net-pci,netdev=n0",
                "-qmp", f"unix:{sock},server=on,wait=off"]

    with pytest.raises(KernlabError) as error:
        qemu.launch(argv, sock, tmp_path / "qemu.log")
    assert error.value.cause.startswith("QEMU failed to start: cannot set up guest memory 'pc.ram'")
    assert "free memory on this host" in error.value.fix
    assert len(tried) == 1 and "is taken" not in capsys.readouterr().err


# ---------------------------------------------------------------- keys
def test_keys_are_private_and_installed(tmp_path: Path) -> None:
    """Keys made at image build: private 0600; the guest gets host key + authorized_keys."""
    image.make_keys(tmp_path)
    for name in ("host_ed25519", "client_ed25519"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
        assert (tmp_path / "keys" / f"{name}.pub").read_text().startswith("ssh-ed25519 ")
    root = tmp_path / "root"
    for sub in ("etc/ssh", "root", "sbin"):
        (root / sub).mkdir(parents=True)
    (root / "etc/ssh/ssh_host_rsa_key").write_text("old key made by the package")
    image.customize(root, tmp_path, {"hostname": "kernlab"})
    host_key = root / "etc/ssh/ssh_host_ed25519_key"
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    assert not (root / "etc/ssh/ssh_host_rsa_key").exists()
    auth = root / "root/.ssh/authorized_keys"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "root/.ssh").stat().st_mode) == 0o700
    assert auth.read_text() == (tmp_path / "keys/client_ed25519.pub").read_text()
    assert stat.S_IMODE((root / "sbin/kernlab-init").stat().st_mode) == 0o755


# ---------------------------------------------------------------- host key checking
class _Server(paramiko.ServerInterface):
    def __init__(self, client_pub: str) -> None:
        self.client_pub = client_pub.split()[1]

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "root" and key.get_base64() == self.client_pub
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        def answer() -> None:
            channel.send(b"guest says hi\n")
            channel.send_exit_status(0)
            channel.close()

        threading.Timer(0.05, answer).start()  # after the exec request is acknowledged
        return True


def _ssh_server(host_key: Path, client_pub: str) -> int:
    """A real SSH server (paramiko) on 127.0.0.1 with ``host_key``; returns its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            sock, _ = listener.accept()
            transport = paramiko.Transport(sock)
            transport.add_server_key(paramiko.Ed25519Key.from_private_key_file(str(host_key)))
            transport.start_server(server=_Server(client_pub))

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def _vm_for(tmp_path: Path, port: int, known_host_pub: str) -> Vm:
    record = {"name": "t-keys", "pid": 0, "host": "127.0.0.1", "ssh_port": port,
              "user": "root", "client_key": str(tmp_path / "keys/client_ed25519"),
              "known_hosts": str(tmp_path / "known_hosts"),
              "ssh_config": str(tmp_path / "ssh_config"),
              "console_log": str(tmp_path / "console.log"), "timeout_scale": 1.0}
    vm = Vm(tmp_path, VmRecord.from_json(record))
    remote.write_ssh_files(vm, ImageRecord.from_json({"host_key_pub": known_host_pub}))
    return vm


def test_known_host_key_is_accepted_and_a_wrong_one_rejected(tmp_path: Path) -> None:
    image.make_keys(tmp_path)
    keys = tmp_path / "keys"
    client_pub = (keys / "client_ed25519.pub").read_text()
    (tmp_path / "other").mkdir()
    image.make_keys(tmp_path / "other")  # an impostor's host key
    right = _ssh_server(keys / "host_ed25519", client_pub)
    wrong = _ssh_server(tmp_path / "other/keys/host_ed25519", client_pub)
    expected = (keys / "host_ed25519.pub").read_text()

    good = _vm_for(tmp_path, right, expected)
    conn = remote.connect(good)
    conn.kernlab_vm = None  # no QEMU behind this stand-in server: nothing for remote.run to watch
    assert remote.run(conn, "true", timeout=10).stdout == "guest says hi\n"
    conn.close()

    bad = _vm_for(tmp_path, wrong, expected)
    with pytest.raises(KernlabError, match="offered a host key that is not the image's"):
        remote.connect(bad)
    # fabric would auto-add an unknown key; kernlab must refuse it and leave known_hosts alone
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(KernlabError, match="is not known"):
        remote.connect(bad)
    assert (tmp_path / "known_hosts").read_text() == ""


def test_ssh_config_pins_key_and_known_hosts(tmp_path: Path) -> None:
    image.make_keys(tmp_path)
    vm = _vm_for(tmp_path, 2222, (tmp_path / "keys/host_ed25519.pub").read_text())
    text = (tmp_path / "ssh_config").read_text()
    assert "StrictHostKeyChecking yes" in text and "HostName 127.0.0.1" in text
    assert f"UserKnownHostsFile {vm.info.known_hosts}" in text
    assert (tmp_path / "known_hosts").read_text().startswith("[127.0.0.1]:2222 ssh-ed25519 ")


# ---------------------------------------------------------------- run dirs and the CLI
def test_stale_vm_is_cleaned_up(state: Path, capsys) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_dir = state / "vms/t-stale"
    run_dir.mkdir(parents=True)
    (run_dir / "vm.json").write_text(
        f'{{"name": "t-stale", "pid": {dead.pid}, "ssh_port": 1, '
        f'"console_log": "{run_dir}/console.log"}}')
    (run_dir / "console.log").write_text("boot messages\n")
    assert find_vm("t-stale") is None
    assert not (run_dir / "vm.json").exists()
    assert (run_dir / "console.log").exists()  # kept for the post-mortem
    assert f"VM t-stale is gone (QEMU (pid {dead.pid}) exited): cleaned up" in capsys.readouterr().err


def _invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def test_vm_up_without_a_built_kernel_says_what_to_build(tmp_path: Path) -> None:
    done = _invoke("vm.up", "--kernel", "6.1",
                   env={"KERNLAB_WORK": str(tmp_path / "work"),
                        "KERNLAB_STATE": str(tmp_path / "state")})
    assert done.returncode == 1
    assert "kernlab: error: kernel 6.1 is not built" in done.stderr
    assert "invoke build-kernel --version 6.1" in done.stderr


def test_vm_commands_without_a_vm_fail_cleanly(tmp_path: Path) -> None:
    env = {"KERNLAB_STATE": str(tmp_path / "state")}
    assert "no VMs running" in _invoke("vm.status", env=env).stdout
    done = _invoke("vm.ssh", "-c", "true", "--name", "nope", env=env)
    assert done.returncode == 1
    assert "no running VM nope; start one: `invoke vm.up --kernel VERSION --name nope`" in done.stderr
    bad = _invoke("vm.status", "--name", "Bad Name", env=env)
    assert bad.returncode == 1 and "bad VM name" in bad.stderr


def test_failed_image_build_unmounts_before_cleanup(tmp_path: Path) -> None:
    """A mount left in the staging root (as a killed mmdebstrap leaves /proc) is unmounted
    before the staging dir is deleted, so the cleanup never deletes through it."""
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    stage = tmp_path / "stage"
    target = stage / "root/proc"
    target.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    (target / "keep").write_text("outside file system")
    try:
        image._unmount_under(stage)
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
    assert image._mounts_under(str(stage) + "/") == []
    assert not (target / "keep").exists()  # we see the empty mount point again


def test_a_vm_being_started_elsewhere_is_not_touched(state: Path, tmp_path: Path) -> None:
    """Two processes starting the same VM name: the second is refused, the run dir kept."""
    import fcntl

    from kernlab.guest.vm import start_vm, vms_dir

    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"not booted")
    vms_dir().mkdir(parents=True)
    (vms_dir() / "t-busy").mkdir()
    (vms_dir() / "t-busy/console.log").write_text("the other process's guest\n")
    with open(vms_dir() / ".t-busy.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(KernlabError, match="VM t-busy is being started by another process"):
            start_vm(BuildRecord.from_json({"version": "9.9", "outputs": {"bzImage": {"path": str(kernel)}}}),
                     ImageRecord.from_json({}), "t-busy")
    assert (vms_dir() / "t-busy/console.log").read_text() == "the other process's guest\n"


# ---------------------------------------------------------------- gdb
def test_a_debugger_on_the_stub_is_seen_only_while_connected() -> None:
    """`run-experiment --gdb` starts the workload once a debugger is connected to the stub
    (and the guest runs on): the connection is what /proc/net/tcp shows, a listener alone is not."""
    with socket.socket() as stub:
        stub.bind(("127.0.0.1", 0))
        stub.listen(1)
        port = stub.getsockname()[1]
        assert not qemu.gdb_attached(port)
        with socket.create_connection(("127.0.0.1", port)):  # the debugger
            accepted, _ = stub.accept()
            with accepted:
                assert qemu.gdb_attached(port)
                assert not qemu.gdb_attached(qemu.free_port())
        assert not qemu.gdb_attached(port)  # the debugger left


def test_run_experiment_gdb_is_for_one_experiment(tmp_path: Path) -> None:
    env = {"KERNLAB_STATE": str(tmp_path / "state")}
    done = _invoke("run-experiment", "--all", "--gdb", "1234", env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "kernlab: error: --gdb stops one experiment's workload for a debugger, not a suite's; "
        "name one experiment: `invoke run-experiment NAME --gdb`")
    bad = _invoke("run-experiment", "readiter", "--gdb", "70000", env=env)
    assert bad.returncode == 1 and "--gdb 70000" in bad.stderr and "Traceback" not in bad.stderr
