"""What a guest image holds, read from its ext4 file without booting or mounting it
(e2fsprogs' ``debugfs``, read-only): the programs on the guest's PATH and whether a file
exists. `check-experiment` checks an experiment's guest tools, bpftrace ``command:`` and
uprobe binaries against it. Cached per image (its key) under the work area.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.records import ImageRecord
from kernlab.core.util import atomic_write_text

# root's PATH in the guest (Debian's default for uid 0), in order
GUEST_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
TOP_LINKS = ("/bin", "/sbin", "/lib", "/lib64")  # symlinks into /usr on a merged-/usr Debian
LS_LINE = re.compile(r"^/(\d+)/(\d+)/\d+/\d+/(.*)/\d*/$")
DEBUGFS_TIMEOUT = 60.0


@dataclass
class ImageFiles:
    """Directory listings of an image: ``dirs`` {dir: {name: octal mode}}, ``links`` {top
    level symlink: its target directory} (``/bin`` -> ``/usr/bin``)."""

    dirs: dict[str, dict[str, str]]
    links: dict[str, str]
    packages: int = 0

    def _real(self, path: str) -> str:
        for link, target in self.links.items():
            if path == link or path.startswith(link + "/"):
                return target + path[len(link):]
        return path

    def exists(self, path: str) -> bool | None:
        """Whether ``path`` (absolute) is in the image; None: its folder was not listed."""
        real = PurePosixPath(self._real(path))
        names = self.dirs.get(str(real.parent))
        return None if names is None else real.name in names

    def on_path(self, name: str) -> list[str]:
        """Every ``DIR/name`` on the guest's PATH that is there (as ``which -a`` and bpftrace see
        them: ``/usr/bin/dd`` and ``/bin/dd`` are two on a merged /usr)."""
        found = []
        for folder in GUEST_PATH:
            mode = self.dirs.get(self._real(folder), {}).get(name)
            if mode is not None and not mode.startswith("4"):  # not a directory
                found.append(f"{folder}/{name}")
        return found

    def to_json(self) -> dict:
        return {"dirs": self.dirs, "links": self.links, "packages": self.packages}


def _debugfs(disk: str, commands: list[str]) -> str:
    tool = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
    if tool is None:
        raise KernlabError("debugfs is not installed, so the image's files cannot be read",
                           "apt-get install e2fsprogs")
    try:
        done = subprocess.run([tool, "-R", commands[0], disk] if len(commands) == 1 else
                              [tool, "-f", "-", disk], input="\n".join(commands) + "\n",
                              capture_output=True, text=True, timeout=DEBUGFS_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise KernlabError(f"debugfs took over {DEBUGFS_TIMEOUT:.0f}s on {disk}",
                           "check that the image file is not being written") from None
    if done.returncode != 0:
        raise KernlabError(f"debugfs could not read {disk}: {done.stderr.strip()[-200:]}",
                           "rebuild the image: `invoke build-image`")
    return done.stdout


def _parse(output: str, folders: list[str]) -> dict[str, dict[str, str]]:
    """``ls -p`` listings, in the order of ``folders`` (debugfs -f echoes each command)."""
    dirs: dict[str, dict[str, str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("debugfs: ls -p "):
            current = line.removeprefix("debugfs: ls -p ").strip()
            if current in folders:
                dirs[current] = {}
            continue
        match = LS_LINE.match(line.strip())
        if match and current in dirs:
            dirs[current][match.group(3)] = match.group(2)
    return dirs


def read_files(image: ImageRecord) -> ImageFiles:
    """The image's PATH folders and top-level links (cached per image)."""
    cache = paths.work_dir() / "image-files" / f"{image.key[:16]}.json"
    if cache.is_file():
        data = json.loads(cache.read_text())
        return ImageFiles(data["dirs"], data["links"], data.get("packages", 0))
    files = read_disk(str(image.disk), len(image.packages))
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(files.to_json()))
    return files


def read_disk(disk: str, packages: int = 0) -> ImageFiles:
    """An ext4 file's PATH folders and top-level links, read with debugfs."""
    root_out = _debugfs(disk, ["ls -p /"])
    root = {m.group(3): m.group(2) for m in map(LS_LINE.match, map(str.strip, root_out.splitlines())) if m}
    links = {}
    for link in TOP_LINKS:
        if root.get(link[1:], "").startswith("12"):  # a symlink: merged /usr points it at usr/X
            where = re.search(r'Fast link dest: "([^"]+)"', _debugfs(disk, [f"stat {link}"]))
            if where:
                dest = where.group(1)
                links[link] = dest if dest.startswith("/") else f"/{dest}"
    folders = sorted({links.get(f, f) for f in GUEST_PATH})
    return ImageFiles(_parse(_debugfs(disk, [f"ls -p {f}" for f in folders]), folders), links, packages)
