"""The real lab image: mmdebstrap + mke2fs -d, keys, record, cache (slow on a cold cache)."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

import pytest

from kernlab.core.errors import KernlabError, NotFound
from kernlab.guest import image

pytestmark = pytest.mark.slow


def _debugfs(img: str, request: str) -> str:
    """Read the ext4 image without mounting it (e2fsprogs' debugfs)."""
    return subprocess.run(["debugfs", "-R", request, img], capture_output=True, text=True,
                          check=True).stdout


def test_cached_image_is_reused_at_once(lab_image: dict) -> None:
    started = time.monotonic()
    again = image.build_image("bookworm")
    assert time.monotonic() - started <= 1.0
    assert again == lab_image
    assert image.find_image("bookworm") == lab_image


def test_record_lists_installed_package_versions(lab_image: dict) -> None:
    names = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in lab_image.data["packages"]}
    for wanted in ("openssh-server", "bpftrace", "bpfcc-tools", "python3", "clang", "libbpf-dev"):
        assert names.get(wanted), f"{wanted} missing from the image record"
    assert "systemd" not in names  # kernlab's own init, no systemd
    assert lab_image.data["key"] == image.image_key("bookworm")
    assert Path(lab_image.data["image"]["path"]).name == "rootfs.ext4"


def test_image_holds_init_keys_and_sshd_config(lab_image: dict) -> None:
    img = lab_image.data["image"]["path"]
    header = subprocess.run(["dumpe2fs", "-h", img], capture_output=True, text=True).stdout
    assert "Filesystem volume name:   kernlab-root" in header
    host_key = _debugfs(img, "stat /etc/ssh/ssh_host_ed25519_key")
    assert "Mode:  0600" in host_key and "User:     0" in host_key
    auth = _debugfs(img, "cat /root/.ssh/authorized_keys")
    assert auth == Path(lab_image.data["client_key"] + ".pub").read_text()
    assert "UseDNS no" in _debugfs(img, "cat /etc/ssh/sshd_config.d/kernlab.conf")
    assert "Mode:  0755" in _debugfs(img, "stat /sbin/kernlab-init")
    assert "ssh_host_rsa_key" not in _debugfs(img, "ls /etc/ssh")
    assert stat.S_IMODE(Path(lab_image.data["client_key"]).stat().st_mode) == 0o600


def test_recipe_change_changes_the_key(tmp_path: Path, monkeypatch) -> None:
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    source = image.paths.vm_dir()
    for name in ("init", "fstab", "bookworm.yaml"):
        (vm_dir / name).write_text((source / name).read_text())
    monkeypatch.setenv("KERNLAB_ROOT", str(tmp_path))
    before = image.image_key("bookworm")
    with open(vm_dir / "bookworm.yaml", "a") as recipe:
        recipe.write("  - jq\n")
    after_recipe = image.image_key("bookworm")
    assert after_recipe != before
    with open(vm_dir / "init", "a") as init:
        init.write("# changed\n")
    assert image.image_key("bookworm") not in (before, after_recipe)
    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    with pytest.raises(NotFound, match="run `invoke build-image --recipe bookworm`"):
        image.find_image("bookworm")


def test_bad_recipes_are_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "vm").mkdir()
    monkeypatch.setenv("KERNLAB_ROOT", str(tmp_path))
    with pytest.raises(NotFound, match="no image recipe"):
        image.load_recipe("sid")
    (tmp_path / "vm/broken.yaml").write_text("suite: bookworm\n")
    with pytest.raises(KernlabError, match="lacks mirror, packages"):
        image.load_recipe("broken")
