"""Apply patch series strictly and idempotently.

A series directory holds a ``series`` file (patch names in order; a first comment
``# written for: 6.1.192`` names the release it targets) and the patches. A hunk
that fails stops the build, naming the patch, the file and the target release; so
does a hunk that would only apply with fuzz or at an offset (``patch`` would take it,
maybe in the wrong place: a patch is applied exactly as written, or refreshed).
A patch already applied (recorded in the tree, or detected by a reverse dry run)
is skipped, so re-running on a patched tree is a no-op. A patch's header line
``Kernel:  6.1 (written for 6.1.192)`` names the release line it was written for.
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
HEADER_KERNEL = re.compile(r"^Kernel:\s+(\d+\.\d+)", re.MULTILINE)
HUNK = re.compile(r"^Hunk #(\d+) (succeeded|FAILED) at (\d+)(?: with fuzz (\d+))?"
                  r"(?: \(offset (-?\d+) lines?\))?")


@dataclass(frozen=True)
class Hunk:
    """One hunk of a patch as ``patch --dry-run`` reports it."""

    file: str
    number: int
    applied: bool
    line: int  # where it applies (or was tried) in the tree
    fuzz: int = 0
    offset: int = 0

    @property
    def exact(self) -> bool:
        return self.applied and not self.fuzz and not self.offset

    def describe(self) -> str:
        if not self.applied:
            return f"hunk #{self.number} of {self.file} does not apply"
        how = [f"fuzz {self.fuzz}"] if self.fuzz else []
        how += [f"an offset of {self.offset} lines"] if self.offset else []
        return (f"hunk #{self.number} of {self.file} applies only with {' and '.join(how)} "
                f"(at line {self.line})")


class PatchFailed(KernlabError):
    """A patch of the series does not apply exactly; ``patch`` and ``hunks`` say which and how."""

    def __init__(self, cause: str, fix: str, details: str, patch: Patch, hunks: list[Hunk]) -> None:
        super().__init__(cause, fix, details=details)
        self.patch = patch
        self.hunks = hunks


@dataclass(frozen=True)
class Patch:
    path: Path
    series: Path
    written_for: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def header_kernel(self) -> str:
        """The release line the patch's header says it was written for (``Kernel:  6.1 (...)``:
        6.1), '' when the header names none."""
        head = self.path.read_text(errors="replace").split("\n--- ", 1)[0]
        match = HEADER_KERNEL.search(head)
        return match.group(1) if match else ""

    def names_another_release(self, release: str) -> str:
        """The release line the header names when it is not ``release``'s ('' when it is, or
        when the header names none): a 6.1 patch in 6.12's series, say."""
        line = self.header_kernel
        mine = ".".join(release.split(".")[:2])
        return line if line and line != mine else ""

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


def _patch_cmd(patch: Patch, *, dry_run: bool, reverse: bool = False, fuzz: int = 0) -> list[str]:
    cmd = ["patch", "-p1", "--batch", "--no-backup-if-mismatch", f"--fuzz={fuzz}", "-i", str(patch.path)]
    cmd += ["--reverse", "--force"] if reverse else ["--forward"]
    if dry_run:
        cmd.append("--dry-run")
    return cmd


def hunks_of(patch_output: str) -> list[Hunk]:
    """Every hunk ``patch`` reports on, with the file it belongs to (a hunk applied exactly is
    reported only by failures and offsets: ``patch`` is silent on it, so it is not listed)."""
    hunks: list[Hunk] = []
    current = ""
    for line in patch_output.splitlines():
        if line.startswith(("patching file ", "checking file ")):
            current = line.split(" ", 2)[2].strip("'")
        elif match := HUNK.match(line):
            number, outcome, at, fuzz, offset = match.groups()
            hunks.append(Hunk(current, int(number), outcome == "succeeded", int(at),
                              int(fuzz or 0), int(offset or 0)))
    return hunks


def dry_run_report(tree: Path, patch: Patch, log: Path) -> tuple[bool, list[Hunk], str]:
    """(applies exactly, the hunks that do not, ``patch``'s output) for ``patch`` on ``tree``:
    a dry run that allows fuzz, so a fuzzy hunk is named as such rather than as failed."""
    ok, output = _dry_run(tree, patch, log, fuzz=2)
    inexact = [h for h in hunks_of(output) if not h.exact]
    return ok and not inexact, inexact, output


def _dry_run(tree: Path, patch: Patch, log: Path, *, reverse: bool = False,
             fuzz: int = 0) -> tuple[bool, str]:
    done = subprocess.run(_patch_cmd(patch, dry_run=True, reverse=reverse, fuzz=fuzz), cwd=tree,
                          capture_output=True, text=True, check=False)
    with open(log, "a") as out:
        out.write(f"\n$ patch {'--reverse ' if reverse else ''}--dry-run {patch.path}\n")
        out.write(done.stdout + done.stderr)
    return done.returncode == 0, done.stdout + done.stderr


def _apply(tree: Path, patch: Patch, release: str, log: Path) -> None:
    ok, inexact, output = dry_run_report(tree, patch, log)
    if not ok:
        failed = failing_files(output)
        written = f"tree is {release}; the series in {patch.series} was written for {patch.written_for}"
        if failed:
            cause = f"patch {patch.name} does not apply to {', '.join(failed)} ({written})"
        elif inexact:
            cause = f"patch {patch.name}: {'; '.join(h.describe() for h in inexact)} ({written})"
        else:
            cause = f"patch {patch.name} does not apply: see the log ({written})"
        raise PatchFailed(f"{cause}; full log: {log}",
                          "refresh the patch for this release (`patch` would have guessed where it "
                          "goes), or build the release it was written for",
                          output.strip()[-2000:], patch, inexact)
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
