"""Apply patch series strictly and idempotently.

A series directory holds a ``series`` file (patch names in order; a first comment
``# written for: 6.1.192`` names the release it targets) and the patches. A hunk
that fails stops the build, naming the patch, the file and the target release.
A patch already applied (recorded in the tree, or detected by a reverse dry run)
is skipped, so re-running on a patched tree is a no-op.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.util import atomic_write_json, read_json, sha256_file

MARKER = ".kernlab-patches.json"
WRITTEN_FOR = re.compile(r"^#\s*written for:\s*(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Patch:
    path: Path
    series: Path
    written_for: str

    @property
    def name(self) -> str:
        return self.path.name

    def record(self) -> dict[str, str]:
        return {"name": self.name, "series": str(self.series), "sha256": sha256_file(self.path)}


def series_dir(name: str) -> Path:
    """A catalog patch entry is a directory under patches/, or any path for a user's own."""
    candidate = Path(name)
    return candidate if candidate.is_absolute() else paths.patches_dir() / name


def read_series(directory: Path) -> list[Patch]:
    """The patches a series directory lists, in order; errors name missing files."""
    series = directory / "series"
    if not series.is_file():
        if directory.is_dir() and not any(directory.glob("*.patch")):
            return []
        raise KernlabError(f"no series file in {directory}",
                           "list the patches in order in a file named `series`")
    written_for = "unknown"
    patches = []
    for number, line in enumerate(series.read_text().splitlines(), 1):
        stripped = line.strip()
        if match := WRITTEN_FOR.match(stripped):
            written_for = match.group(1)
        if not stripped or stripped.startswith("#"):
            continue
        path = directory / stripped.split()[0]
        if not path.is_file():
            raise KernlabError(f"{series}:{number}: {path.name} does not exist",
                               "fix the series file or add the patch")
        patches.append(Patch(path, directory, written_for))
    return patches


def collect_patches(directories: list[Path]) -> list[Patch]:
    patches: list[Patch] = []
    for directory in directories:
        patches.extend(read_series(directory))
    return patches


def apply_series(tree: Path, patches: list[Patch], release: str, log: Path) -> list[dict[str, str]]:
    """Apply ``patches`` to ``tree`` in order; return their records (name, sha256)."""
    marker = tree / MARKER
    applied: dict[str, str] = read_json(marker) if marker.exists() else {}
    records = []
    for patch in patches:
        record = patch.record()
        records.append(record)
        if applied.get(patch.name) == record["sha256"]:
            continue
        if _dry_run(tree, patch, log, reverse=True)[0]:
            reporter().note(f"{patch.name} is already applied")
        else:
            _apply(tree, patch, release, log)
            reporter().note(f"applied {patch.name}")
        applied[patch.name] = record["sha256"]
        atomic_write_json(marker, applied)
    return records


def _patch_cmd(patch: Patch, *, dry_run: bool, reverse: bool = False) -> list[str]:
    cmd = ["patch", "-p1", "--batch", "--no-backup-if-mismatch", "-i", str(patch.path)]
    cmd += ["--reverse", "--force"] if reverse else ["--forward"]
    if dry_run:
        cmd.append("--dry-run")
    return cmd


def _dry_run(tree: Path, patch: Patch, log: Path, *, reverse: bool = False) -> tuple[bool, str]:
    done = subprocess.run(_patch_cmd(patch, dry_run=True, reverse=reverse), cwd=tree,
                          capture_output=True, text=True, check=False)
    with open(log, "a") as out:
        out.write(f"\n$ patch {'--reverse ' if reverse else ''}--dry-run {patch.path}\n")
        out.write(done.stdout + done.stderr)
    return done.returncode == 0, done.stdout + done.stderr


def _apply(tree: Path, patch: Patch, release: str, log: Path) -> None:
    ok, output = _dry_run(tree, patch, log)
    if not ok:
        failed = failing_files(output)
        where = ", ".join(failed) if failed else "see the log"
        raise KernlabError(
            f"patch {patch.name} does not apply to {where} (tree is {release}; "
            f"the series in {patch.series} was written for {patch.written_for}); full log: {log}",
            "refresh the patch for this release, or build the release it was written for",
            details=output.strip()[-2000:],
        )
    done = subprocess.run(_patch_cmd(patch, dry_run=False), cwd=tree, capture_output=True,
                          text=True, check=False)
    with open(log, "a") as out:
        out.write(f"\n$ patch {patch.path}\n{done.stdout}{done.stderr}")
    if done.returncode:
        raise KernlabError(f"patch {patch.name} failed after a clean dry run; full log: {log}",
                           "inspect the tree for local changes")


def failing_files(patch_output: str) -> list[str]:
    """Files with failed hunks (or missing) in `patch` output."""
    files: list[str] = []
    current = None
    for line in patch_output.splitlines():
        if line.startswith(("patching file ", "checking file ")):
            current = line.split(" ", 2)[2].strip("'")
        elif current and ("FAILED" in line or "No file to patch" in line
                          or "Reversed (or previously applied)" in line):
            if current not in files:
                files.append(current)
        elif line.startswith("can't find file to patch"):
            current = None
            files.append("(a file missing from the tree)")
    return files
