"""A real apt repository on disk and a private apt configuration that uses only it.

``APT_CONFIG`` (apt's own variable) points apt-get and apt-cache at the private
configuration: its own sources, lists and caches, so the host's apt is untouched and no
network is used. The packages are real .deb files made (or repackaged) with dpkg-deb and
indexed with dpkg-scanpackages.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path


def kernel_tarball(files: dict[str, bytes], top: str) -> bytes:
    """A .tar.xz of ``files`` under ``top``/ (a miniature linux-source tarball)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def build_deb(work: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A linux-source-like .deb of ``package`` at ``version`` holding ``files`` (path: bytes)."""
    root = work / f"{package}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nSection: kernel\nPriority: optional\n"
        "Maintainer: kernlab tests <tests@kernlab.invalid>\nDescription: kernel source for tests\n")
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    out = work / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)], check=True,
                   capture_output=True)
    shutil.rmtree(root)
    return out


def repackage(deb: Path, version: str, work: Path) -> Path:
    """The same package with another Version (the archive moved on); content unchanged."""
    root = work / f"repack-{version}"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(root)], check=True)
    control = root / "DEBIAN" / "control"
    lines = [f"Version: {version}" if line.startswith("Version:") else line
             for line in control.read_text().splitlines()]
    control.write_text("\n".join(lines) + "\n")
    package = next(line.split(": ", 1)[1] for line in lines if line.startswith("Package:"))
    out = work / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", str(root), str(out)], check=True,
                   capture_output=True)
    shutil.rmtree(root)
    return out


class AptRepo:
    """A flat repository (``deb [trusted=yes] file:DIR ./``) and an apt config using only it."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "repo"
        self.state = base / "apt"
        for sub in ("repo", "apt/lists/partial", "apt/cache/archives/partial", "apt/sources.list.d",
                    "apt/preferences.d"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (self.state / "status").write_text("")
        (self.state / "sources.list").write_text(f"deb [trusted=yes] file:{self.dir} ./\n")
        self.config = self.state / "apt.conf"
        self.config.write_text("\n".join([
            f'Dir::Etc::sourcelist "{self.state}/sources.list";',
            f'Dir::Etc::sourceparts "{self.state}/sources.list.d";',
            f'Dir::Etc::preferences "{self.state}/preferences";',
            f'Dir::Etc::preferencesparts "{self.state}/preferences.d";',
            f'Dir::State::lists "{self.state}/lists";',
            f'Dir::State::status "{self.state}/status";',
            f'Dir::Cache "{self.state}/cache";',
            'APT::Sandbox::User "root";',
            'Acquire::Languages "none";',
            "",
        ]))

    @property
    def env(self) -> dict[str, str]:
        return {"APT_CONFIG": str(self.config)}

    def publish(self, *debs: Path) -> None:
        """Serve exactly ``debs`` (what was there before is withdrawn) and refresh the lists."""
        for old in self.dir.glob("*.deb"):
            old.unlink()
        for deb in debs:
            shutil.copy(deb, self.dir / deb.name)
        index = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=self.dir, check=True,
                               capture_output=True, text=True).stdout
        (self.dir / "Packages").write_text(index)
        env = {"APT_CONFIG": str(self.config), "PATH": "/usr/bin:/bin"}
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
