"""Fetch a kernel source tarball, verify it, and extract it safely.

Downloads land under a temporary ``.part`` name, resume where the server allows,
and are checked against the pinned sha256 before anything uses them. The cache is
keyed by checksum, so a cached source needs no network. Extraction refuses members
that would escape the tree. Debian sources are .deb files pinned by kernlab.lock
(debsource.py); every source is also named by its tree's content (identity.py).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from kernlab.core import filelock, inuse, lock, paths
from kernlab.core.errors import BuildInputError, KernlabError
from kernlab.core.proc import capture
from kernlab.core.progress import reporter
from kernlab.core.util import atomic_write_json, human_bytes, read_json, sha256_file, why_not_a_file
from kernlab.kernel import debsource, identity
from kernlab.kernel.catalog import Catalog, KernelSpec, SourceSpec, normalise_sha256

DOWNLOAD_ATTEMPTS = 3
CONNECT_TIMEOUT = 20.0


@dataclass
class SourceOptions:
    """User overrides of the catalog's sources (from build-kernel flags)."""

    tarball: Path | None = None
    git: Path | None = None
    ref: str = "HEAD"
    url: str | None = None
    sha256: str | None = None
    allow_unverified: bool = False
    deb: Path | None = None  # a linux-source .deb to use (verified against kernlab.lock)
    update_lock: bool = False  # accept a Debian package other than kernlab.lock's

    @classmethod
    def from_flags(cls, *, tarball: str | None = None, git: str | None = None, url: str | None = None,
                   ref: str | None = None, sha256: str | None = None, allow_unverified: bool = False,
                   deb: str | None = None, update_lock: bool = False) -> SourceOptions:
        """build-kernel's source flags, checked: one source at most; --ref only with --git,
        --sha256 not with it (a git tree is pinned by its commit), a well-formed sha256."""
        given = [f"--{n}" for n, v in (("tarball", tarball), ("git", git), ("url", url)) if v]
        if len(given) > 1:
            raise KernlabError(f"{' and '.join(given)} both name the kernel source",
                               "give only one of --tarball, --git and --url")
        if ref and not git:
            raise KernlabError("--ref is only used with --git", "add --git PATH, or leave --ref out")
        if sha256 and git:
            raise KernlabError("--sha256 pins a tarball; a --git source is pinned by its commit",
                               "leave --sha256 out, or use --ref COMMIT")
        if sha256:
            normalise_sha256(sha256, "--sha256")  # before anything is written
        return cls(tarball=Path(tarball) if tarball else None, git=Path(git) if git else None,
                   ref=ref or "HEAD", url=url, sha256=sha256, allow_unverified=allow_unverified,
                   deb=Path(deb) if deb else None, update_lock=update_lock)


@dataclass
class ResolvedSource:
    """A verified tarball (or git export) ready to extract, and how we got it."""

    kind: str
    origin: str
    sha256: str
    verified: bool
    tarball: Path | None = None
    git_dir: Path | None = None
    git_commit: str | None = None
    deb: Path | None = None  # a Debian package holding the tarball ``member``
    member: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The build record's ``source``: route (origin, file sha256 or commit) and tree identity."""
        data = {"kind": self.kind, "origin": self.origin, "sha256": self.sha256,
                "verified": self.verified, **self.extra}
        if self.git_commit:
            data["commit"] = self.git_commit
        return data

    @property
    def tree_sha256(self) -> str | None:
        """The route-independent identity of the unpatched tree, once known (identity.py)."""
        return self.extra.get("tree_sha256")

    def set_tree(self, tree_sha256: str) -> None:
        self.extra["tree_sha256"] = tree_sha256
        identity.remember(self.sha256, tree_sha256)


def requested_sources(spec: KernelSpec, opts: SourceOptions) -> list[SourceSpec]:
    """The user's explicit source if given, else the catalog's list in order."""
    sha = normalise_sha256(opts.sha256, "--sha256") if opts.sha256 else None
    if opts.tarball:
        return [SourceSpec("file", {"path": str(opts.tarball), "sha256": sha})]
    if opts.git:
        return [SourceSpec("git", {"path": str(opts.git), "ref": opts.ref})]
    if opts.url:
        return [SourceSpec("tarball", {"url": opts.url, "sha256": sha})]
    if opts.deb:
        debian = [s for s in spec.sources if s.kind == "debian"]
        if not debian:
            raise KernlabError(f"--deb needs a catalog entry with a debian source; {spec.version} has none",
                               "use --tarball PATH for a kernel tarball")
        return debian[:1]
    if sha:
        return [_pinned(s, sha) for s in spec.sources]
    return list(spec.sources)


def describe_sources(spec: KernelSpec, opts: SourceOptions, mirror: str) -> list[str]:
    """`--plan`'s lines: each source in order and what pins it (kernlab.lock for Debian's)."""
    locked = lock.read_lock()["kernels"].get(spec.base_version)
    lines = []
    for source in requested_sources(spec, opts):
        pin = source.pin(locked) if source.kind == "debian" else ""
        lines.append(source.describe(mirror) + (f" pinned by {pin}" if pin else ""))
    return lines


def _pinned(source: SourceSpec, sha256: str) -> SourceSpec:
    if source.kind != "tarball" or source.options.get("sha256"):
        return source
    return SourceSpec("tarball", {**source.options, "sha256": sha256})


def resolve_source(spec: KernelSpec, catalog: Catalog, opts: SourceOptions, log: Path) -> ResolvedSource:
    """Try each source in order; the first usable one wins, failures become notes."""
    problems: list[KernlabError] = []
    candidates = requested_sources(spec, opts)
    for source in candidates:
        try:
            resolved = _resolve_one(source, catalog.effective_mirror(), opts, log, spec.base_version)
        except debsource.PinError:
            raise  # kernlab.lock names this source: falling back to another would defeat the pin
        except KernlabError as error:
            if len(candidates) == 1:
                raise
            reporter().note(f"source {source.describe(catalog.effective_mirror())} not usable: "
                            f"{error.cause}")
            problems.append(error)
            continue
        if known := identity.remembered(resolved.sha256):
            resolved.extra["tree_sha256"] = known
        return resolved
    last = problems[-1]
    raise BuildInputError(
        f"no source for {spec.version} could be used ({'; '.join(p.cause for p in problems)})",
        last.fix or "set KERNLAB_MIRROR, or pass --tarball PATH or --git PATH",
        flags=getattr(last, "flags", ()) or ("--tarball PATH --sha256 SUM", "--git TREE"),
        other_fix=getattr(last, "other_fix", ""),
    )


def _resolve_one(source: SourceSpec, mirror: str, opts: SourceOptions, log: Path,
                 kernel: str) -> ResolvedSource:
    if source.kind == "debian":
        return _debian(source.options, kernel, opts, log)
    if source.kind == "file":
        return _local_tarball(Path(source.options["path"]), source.options.get("sha256"), opts)
    if source.kind == "git":
        return _git(Path(source.options["path"]), str(source.options.get("ref", "HEAD")))
    return _download(source.url(mirror), source.options.get("sha256"), opts)


# ---------------------------------------------------------------- Debian package
def _debian(options: dict[str, Any], kernel: str, opts: SourceOptions, log: Path) -> ResolvedSource:
    """The kernel tarball inside the linux-source .deb that kernlab.lock pins (or apt's, unpinned)."""
    pin = debsource.DebPin.from_lock(lock.read_lock()["kernels"].get(kernel))
    if pin and pin.package != options["package"]:
        pin = None  # the catalog names another package now: nothing to hold on to
    got = debsource.fetch(options["package"], options.get("suite"), kernel, pin, update=opts.update_lock,
                          given=opts.deb, log=log)
    debian = {**got.pin.to_json(), "suite": options.get("suite"), "file": str(got.deb)}
    return ResolvedSource(kind="debian", origin=f"{got.pin.package}={got.pin.version}",
                          sha256=got.tarball_sha256, verified=got.verified, deb=got.deb, member=got.member,
                          extra={"package_version": got.pin.version, "debian": debian})


def cached_sha256(path: Path) -> str:
    """sha256 of a large local file, remembered by (path, size, mtime)."""
    stat = path.stat()
    memo = paths.cache_dir() / "sha256-memo.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    table: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        table = read_json(memo)
    if key not in table:
        table[key] = sha256_file(path)
        atomic_write_json(memo, table)
    return table[key]


# ---------------------------------------------------------------- local tarball and git
def _local_tarball(path: Path, pinned: str | None, opts: SourceOptions) -> ResolvedSource:
    if not path.is_file():
        raise KernlabError(f"tarball {path} {why_not_a_file(path)}", "check the --tarball path")
    actual = cached_sha256(path)
    if pinned and actual != pinned:
        raise KernlabError(f"{path} has sha256 {actual}, expected {pinned}",
                           "use the right file or pin its checksum")
    if not pinned and not opts.allow_unverified:
        raise BuildInputError(
            f"{path} has no pinned sha256 (it is {actual})",
            f"pass --sha256 {actual} to pin it, or --allow-unverified",
            flags=(f"--tarball {path} --sha256 {actual}", "--allow-unverified"),
        )
    return ResolvedSource(kind="file", origin=str(path.resolve()), sha256=actual,
                          verified=bool(pinned), tarball=path)


def _git(path: Path, ref: str) -> ResolvedSource:
    if not (path / ".git").exists() and not (path / "HEAD").exists():
        raise KernlabError(f"{path} is not a git tree", "pass --git a kernel git checkout")
    commit = capture(["git", "--git-dir", _git_dir(path), "rev-parse", "--verify", f"{ref}^{{commit}}"])
    if not commit:
        raise KernlabError(f"ref '{ref}' not found in {path}", "pass an existing --ref")
    return ResolvedSource(kind="git", origin=f"{path.resolve()}@{ref}", sha256=commit,
                          verified=True, git_dir=Path(_git_dir(path)), git_commit=commit)


def _git_dir(path: Path) -> str:
    return str(path / ".git") if (path / ".git").exists() else str(path)


# ---------------------------------------------------------------- download
def cached_download(sha256: str) -> Path | None:
    for candidate in paths.downloads_dir().glob(f"{sha256}-*"):
        if not candidate.name.endswith(".part"):
            return candidate
    return None


def _download(url: str, pinned: str | None, opts: SourceOptions) -> ResolvedSource:
    if pinned and (hit := cached_download(pinned)):
        reporter().note(f"using cached {hit.name.split('-', 1)[1]} (sha256 {pinned[:12]}, no network)")
        return ResolvedSource(kind="tarball", origin=url, sha256=pinned, verified=True, tarball=hit)
    if not pinned and not opts.allow_unverified:
        raise BuildInputError(
            f"{url} has no pinned sha256 in the catalog",
            "pin one with --sha256 SUM (or in configs/kernels.yaml), or pass --allow-unverified",
            flags=("--sha256 SUM", "--tarball PATH --sha256 SUM", "--git TREE", "--allow-unverified"),
            other_fix="pin its sha256 in configs/kernels.yaml",
        )
    mirror = os.environ.get("KERNLAB_MIRROR")
    check_url(url, f"KERNLAB_MIRROR={mirror}" if mirror and url.startswith(mirror.rstrip("/"))
              else "the source URL (--url or configs/kernels.yaml)")
    name = PurePosixPath(urllib.request.urlparse(url).path).name or "download"
    lock_file = filelock.locks_dir(paths.cache_dir()) / f"download-{pinned or 'unverified'}-{name}.lock"
    with filelock.exclusive(lock_file, f"download of {name}"):
        if pinned and (hit := cached_download(pinned)):  # fetched by the process we waited for
            reporter().note(f"using {hit.name.split('-', 1)[1]}, downloaded meanwhile (sha256 {pinned[:12]})")
            return ResolvedSource(kind="tarball", origin=url, sha256=pinned, verified=True, tarball=hit)
        return _download_locked(url, pinned, name)


def _download_locked(url: str, pinned: str | None, name: str) -> ResolvedSource:
    """Fetch ``url`` into the cache (resuming its ``.part``), verify, move into place; under
    the download's lock, so one process at a time writes a ``.part`` file."""
    downloads = paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / f"{pinned or 'unverified'}-{name}.part"
    fetch_with_resume(url, part)
    actual = sha256_file(part)
    if pinned and actual != pinned:
        part.unlink()
        raise KernlabError(
            f"checksum mismatch for {url}: got {actual}, expected {pinned}; the download was deleted",
            "check the mirror (KERNLAB_MIRROR) or the pinned sha256",
        )
    final = downloads / f"{actual}-{name}"
    os.replace(part, final)
    if not pinned:
        reporter().warn(f"{name} is UNVERIFIED (sha256 {actual}); the build record says so")
    return ResolvedSource(kind="tarball", origin=url, sha256=actual, verified=bool(pinned), tarball=final)


def fetch_with_resume(url: str, part: Path) -> None:
    """Download ``url`` into ``part``, resuming a partial file where the server allows."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        have = part.stat().st_size if part.exists() else 0
        try:
            complete = _fetch_once(url, part, have)
        except urllib.error.HTTPError as error:
            if error.code == 416 and have:
                part.unlink()
                continue
            raise KernlabError(
                f"{url} answered HTTP {error.code} {error.reason}",
                "check the version and the mirror (KERNLAB_MIRROR)" if error.code == 404
                else "retry later or use another mirror (KERNLAB_MIRROR)",
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            if have == 0 and not part.exists():
                raise BuildInputError(
                    f"cannot reach {_host(url)}: {reason}",
                    "set KERNLAB_MIRROR to a reachable mirror or pass --tarball PATH",
                    flags=("--tarball PATH --sha256 SUM", "--git TREE"),
                    other_fix="set KERNLAB_MIRROR to a reachable mirror",
                ) from None
            complete = False
        if complete:
            return
        got = part.stat().st_size if part.exists() else 0
        reporter().note(f"download interrupted at {human_bytes(got)} (attempt {attempt}); resuming")
    got = part.stat().st_size if part.exists() else 0
    raise KernlabError(
        f"download of {url} truncated at {got} bytes after {DOWNLOAD_ATTEMPTS} attempts; "
        f"partial file kept at {part}",
        "run the command again to resume",
    )


def check_url(url: str, where: str) -> None:
    """A download URL must have a scheme urllib can fetch (``KERNLAB_MIRROR=mirror.example``
    would otherwise end in a ValueError traceback)."""
    parsed = urllib.request.urlparse(url)
    if parsed.scheme not in ("http", "https", "ftp", "file") or not (parsed.netloc or parsed.path):
        raise KernlabError(f"{where} gives {url!r}, which is not an http(s), ftp or file URL",
                           "write it with its scheme, e.g. https://cdn.kernel.org/pub/linux/kernel")


def _host(url: str) -> str:
    parsed = urllib.request.urlparse(url)
    return parsed.netloc or url


def _fetch_once(url: str, part: Path, have: int) -> bool:
    """One request; True when the file is complete. Appends when the server resumes."""
    request = urllib.request.Request(url, headers={"User-Agent": "kernlab"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
        resumed = response.status == 206
        if have and not resumed:
            reporter().note("server does not support resuming; starting over")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out:
            written = have
            try:
                while block := response.read(1 << 16):
                    out.write(block)
                    written += len(block)
                    _show_progress(part.name, written, total)
            except (ConnectionError, OSError, ValueError):
                return False
    return total is None or written >= total


def _show_progress(name: str, written: int, total: int | None) -> None:
    if total:
        reporter().status(f"{name.removesuffix('.part')}: {human_bytes(written)} / "
                          f"{human_bytes(total)} ({100 * written // total}%)")
    else:
        reporter().status(f"{name}: {human_bytes(written)}")


# ---------------------------------------------------------------- extraction
def check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """Refuse a member whose path or link target would land outside ``dest`` (read from disk:
    for a ``dest`` that already holds files; an empty one is checked by ``MemberCheck``)."""
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise _escape(member, "absolute path")
    target = (dest / name).resolve()
    if not _inside(target, dest):
        raise _escape(member, "path leaves the tree")
    if member.issym():
        link_target = (dest / name).parent / member.linkname
        if member.linkname.startswith("/") or not _inside(link_target.resolve(), dest):
            raise _escape(member, f"symlink to {member.linkname} points outside the tree")
    if member.islnk() and not _inside((dest / member.linkname).resolve(), dest):
        raise _escape(member, f"hard link to {member.linkname} points outside the tree")
    if member.isdev():
        raise _escape(member, "device node")


class MemberCheck:
    """``check_member`` for a tree that starts empty, without touching the disk: paths are
    resolved as realpath would, through the symlinks the archive's own members made."""

    MAX_FOLLOWS = 40  # as the kernel's ELOOP limit

    def __init__(self) -> None:
        self.links: dict[str, str] = {}  # where a symlink member sits (resolved) -> its target

    def __call__(self, member: tarfile.TarInfo) -> None:
        name = member.name
        if name.startswith("/"):
            raise _escape(member, "absolute path")
        parent, _, base = name.rstrip("/").rpartition("/")
        if self.walk(name) is None:
            raise _escape(member, "path leaves the tree")
        if member.issym():
            where = self.walk(parent)
            if member.linkname.startswith("/") or where is None or self.walk(
                    member.linkname, start=where) is None:
                raise _escape(member, f"symlink to {member.linkname} points outside the tree")
            self.links["/".join([*where, base])] = member.linkname
        if member.islnk() and (member.linkname.startswith("/") or self.walk(member.linkname) is None):
            raise _escape(member, f"hard link to {member.linkname} points outside the tree")
        if member.isdev():
            raise _escape(member, "device node")

    def walk(self, path: str, start: list[str] | None = None) -> list[str] | None:
        """The components of ``path`` (from ``start``, else the top) after following the
        symlinks seen so far; None where it leaves the tree or loops."""
        stack, todo, follows = list(start or []), path.split("/"), 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    return None
                stack.pop()
                continue
            stack.append(part)
            target = self.links.get("/".join(stack))
            if target is not None:
                follows += 1
                if follows > self.MAX_FOLLOWS or target.startswith("/"):
                    return None
                stack.pop()
                todo = target.split("/") + todo
        return stack


def _inside(path: Path, root: Path) -> bool:
    root = root.resolve()
    return path == root or root in path.parents


def _escape(member: tarfile.TarInfo, why: str) -> KernlabError:
    return KernlabError(f"archive member '{member.name}' refused: {why}",
                        "the archive is unsafe or corrupt; get it from a trusted source")


ARCHIVE_ERRORS = (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile,
                  UnicodeDecodeError)


def safe_extract(archive: Path | None, dest: Path, *, stream: Any = None) -> Path:
    """Extract into ``dest`` refusing escaping members; return the single top directory.

    A file that is not a tar archive, or an empty or truncated one, is a one-line error
    naming it (the caller's staging directory is then removed). An archive file is checked
    whole first and then unpacked by GNU tar, where the host has it (twice as fast as
    Python's tarfile on a kernel tree); a stream is checked member by member as it unpacks.
    """
    dest.mkdir(parents=True, exist_ok=True)
    what = str(archive) if archive is not None else "the archive stream"
    if archive is not None and archive.is_file() and archive.stat().st_size == 0:
        raise _not_a_tar(what, "it is empty")
    if archive is not None and gnu_tar():
        return extract_checked(lambda: open(archive, "rb"), dest, what)
    check = _member_check(dest)
    with _reading(what) as count, _open_tar(archive, stream) as tar:
        for member in tar:
            check(member)
            tar.extract(member, dest, set_attrs=not member.issym(), filter="fully_trusted")
            _counted(count, "extracted")
    return _top_of(dest)


Opener = Callable[[], AbstractContextManager[io.BufferedReader]]  # a peekable archive, anew per pass


def extract_checked(open_stream: Opener, dest: Path, what: str) -> Path:
    """Two passes over the archive ``open_stream`` opens: every member checked (through the
    symlinks the members before it make, as they will be on disk), then GNU tar unpacks it,
    with its own refusal of ``..`` and absolute names as well."""
    dest.mkdir(parents=True, exist_ok=True)
    check = _member_check(dest)
    with _reading(what) as count, open_stream() as raw, _plain(raw) as plain, \
            tarfile.open(fileobj=plain, mode="r|*") as tar:
        for member in tar:
            check(member)
            _counted(count, "checked")
    reporter().status(f"unpacking {count[0]} files with tar")
    with open_stream() as raw:
        _gnu_tar_unpack(raw, dest, what)
    return _top_of(dest)


@contextlib.contextmanager
def _reading(what: str) -> Iterator[list[int]]:
    """A member counter; archive errors (not the disk's) become the one-line not-a-tar error."""
    count = [0]
    try:
        yield count
    except (*ARCHIVE_ERRORS, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise  # the disk, not the archive (bz2's "Invalid data stream" has no errno)
        why = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, EOFError) or "unexpected end of data" in why:
            why = "it ends in the middle of a member: cut short"
        raise _not_a_tar(what, f"{why}; {count[0]} members were read" if count[0] else why) from None
    if count[0] == 0:
        raise _not_a_tar(what, "it holds no files")


def _counted(count: list[int], verb: str) -> None:
    count[0] += 1
    if count[0] % 2000 == 0:
        reporter().status(f"{verb} {count[0]} files")


def _member_check(dest: Path) -> Callable[[tarfile.TarInfo], None]:
    """The member check for ``dest``: resolved in memory when it starts empty, else on disk."""
    if any(dest.iterdir()):
        return lambda member: check_member(member, dest)
    return MemberCheck()


XZ_MAGIC = b"\xfd7zXZ\x00"
COMPRESSION = {XZ_MAGIC: "--xz", b"\x1f\x8b": "--gzip", b"BZh": "--bzip2",
               b"\x28\xb5\x2f\xfd": "--zstd"}  # by magic: GNU tar does not sniff a pipe


def _xz_threads() -> list[str] | None:
    """``xz`` decompressing on every core, when the host has it, for the check pass (Debian's
    tarballs are multi-block: the pass over 6.1's takes 9 s so, 15 s with Python's lzma).
    Not for tar's own pass: `tar -I 'xz -T0'` spent 65 s in the kernel where `tar -J` spent 9."""
    return ["xz", "-d", "-c", "-T0"] if shutil.which("xz") else None


@contextlib.contextmanager
def _plain(raw: io.BufferedReader) -> Iterator[IO[bytes]]:
    """``raw`` as an uncompressed tar stream: an xz archive through ``xz -T0`` (fed from a
    thread, since ``raw`` may be a member of a .deb), anything else as it is (tarfile's
    ``r|*`` sniffs it). Its magic is peeked, not read. A corrupt or cut xz stream is a
    tarfile.ReadError."""
    command = _xz_threads() if raw.peek(len(XZ_MAGIC)).startswith(XZ_MAGIC) else None
    if command is None:
        yield raw
        return
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    feeder = threading.Thread(target=_feed, args=(raw, proc.stdin), daemon=True)
    feeder.start()
    try:
        yield proc.stdout
        while proc.stdout.read(1 << 20):  # what follows tar's end marker, so that xz can end
            pass
        if proc.wait():  # an xz stream cut at a member's end still reads as a whole tar
            raise tarfile.ReadError("xz says the compressed data is corrupt or cut short")
    finally:
        proc.kill()
        proc.wait()
        feeder.join()
        proc.stdout.close()


def _feed(raw: IO[bytes], sink: IO[bytes]) -> None:
    """Copy ``raw`` into ``sink`` and close it (a reader gone early is no error)."""
    with contextlib.suppress(BrokenPipeError, ValueError, OSError):
        shutil.copyfileobj(raw, sink, 1 << 20)
    with contextlib.suppress(BrokenPipeError, OSError):
        sink.close()


def _gnu_tar_unpack(raw: IO[bytes], dest: Path, what: str) -> None:
    """Feed the (compressed) archive to ``tar -x`` in ``dest``; its error is one line."""
    head = raw.read(6)
    flags = [flag for magic, flag in COMPRESSION.items() if head.startswith(magic)]
    command = ["tar", "-x", *flags, "-f", "-", "-C", str(dest), "--no-same-owner"]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=errors)
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(head)
            shutil.copyfileobj(raw, proc.stdin, 1 << 20)
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        if proc.wait():
            errors.seek(0)
            first = (errors.read().decode(errors="replace").strip().splitlines() or ["no message"])[0]
            raise KernlabError(f"tar could not unpack {what}: {first}",
                               "free disk space under the work area (`df -h`), then run the command again")


@functools.cache
def gnu_tar() -> bool:
    """Whether ``tar`` is GNU tar (its flags are the ones used here)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return "GNU tar" in subprocess.run(["tar", "--version"], capture_output=True, text=True,
                                           check=False).stdout
    return False


def _top_of(dest: Path) -> Path:
    entries = [p for p in dest.iterdir() if not p.name.startswith("pax_global_header")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def _not_a_tar(what: str, why: str) -> KernlabError:
    return KernlabError(f"{what} is not a complete tar archive ({why})",
                        "pass a whole kernel source tarball (linux-X.Y.tar.xz or .tar.gz); "
                        "download it again if it was cut short")


def _open_tar(archive: Path | None, stream: Any) -> tarfile.TarFile:
    if stream is not None:
        return tarfile.open(fileobj=stream, mode="r|*")
    return tarfile.open(archive, "r:*")


def extract_source(source: ResolvedSource, dest: Path, log: Path) -> Path:
    """Put the source tree under ``dest``; returns the tree's top directory."""
    if source.deb:
        deb, member = source.deb, source.member
        if gnu_tar():
            return extract_checked(lambda: _tarball_in(deb, member), dest, f"the kernel tarball in {deb}")
        with debsource.open_tarball(deb, member) as (_, stream):
            return safe_extract(None, dest, stream=stream)
    if source.git_dir:
        log.parent.mkdir(parents=True, exist_ok=True)
        with subprocess.Popen(
            ["git", "--git-dir", str(source.git_dir), "archive", "--format=tar",
             "--prefix=linux/", source.git_commit or "HEAD"],
            stdout=subprocess.PIPE, stderr=open(log, "a"),
        ) as proc:
            top = safe_extract(None, dest, stream=proc.stdout)
        if proc.returncode:
            raise KernlabError(f"git archive of {source.origin} failed; full log: {log}",
                               "check the tree and the ref")
        return top
    assert source.tarball is not None
    return safe_extract(source.tarball, dest)


@contextlib.contextmanager
def _tarball_in(deb: Path, member: str | None) -> Iterator[io.BufferedReader]:
    with debsource.open_tarball(deb, member) as (_, stream):
        assert isinstance(stream, io.BufferedReader)  # tarfile's member file: peekable
        yield stream


def tree_release(tree: Path, origin: str = "") -> str:
    """The kernel release a tree's top Makefile declares (e.g. 6.1.192)."""
    fields: dict[str, str] = {}
    makefile_path = tree / "Makefile"
    shown = origin or str(tree)
    if not makefile_path.is_file():
        raise KernlabError(f"{shown} holds no kernel tree: no top-level Makefile in {tree.name}/",
                           "pass a Linux source tarball or git tree (its top directory has the "
                           "kernel's Makefile)")
    with open(makefile_path, errors="replace") as makefile:
        for line in makefile:
            key, sep, value = line.partition("=")
            if sep and key.strip() in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
                fields.setdefault(key.strip(), value.strip())
            if len(fields) == 4:
                break
    if not fields.get("VERSION", "").isdigit() or not fields.get("PATCHLEVEL", "").isdigit():
        raise KernlabError(f"{shown}: {tree.name}/Makefile declares no kernel version "
                           "(VERSION = / PATCHLEVEL =)",
                           "pass a Linux source tree; this Makefile is not the kernel's")
    release = f"{fields.get('VERSION', '?')}.{fields.get('PATCHLEVEL', '?')}"
    if fields.get("SUBLEVEL", "0") not in ("", "0"):
        release += f".{fields['SUBLEVEL']}"
    return release + fields.get("EXTRAVERSION", "")


def tree_identity(source: ResolvedSource, scratch: Path, log: Path) -> str:
    """The identity of ``source``'s unpatched tree: remembered, or extracted into ``scratch`` once."""
    if source.tree_sha256:
        return source.tree_sha256
    if known := identity.remembered(source.sha256):
        source.extra["tree_sha256"] = known
        return known
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".identity-", dir=scratch))
    try:
        with inuse.using(work, f"identity of {source.origin}", temporary=True), \
                reporter().step(f"identity of {source.origin}"):
            source.set_tree(identity.tree_sha256(extract_source(source, work, log)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert source.tree_sha256
    return source.tree_sha256
