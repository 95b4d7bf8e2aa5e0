"""Kernel builds, headers disks and images as OCI artifacts: pushed, pulled by key, verified.

A stage output (a directory named by its key, with its JSON record) becomes one OCI
artifact in ``<registry>/<kind>`` tagged ``<name>-<key>`` (``kernel:6.1-<key>``,
``kheaders:6.1-<key>``, ``image:bookworm-<key>``), with its own ``artifactType``, the
record in the manifest's annotations, and one layer per thing a user of it needs, each
named by ``org.opencontainers.image.title`` so that ``oras pull`` writes the same files.
vmlinux (DWARF, for `probes`) is a layer of its own, pulled only when a command reads it.

A pull is used only if every blob matches its digest and size, the record's key and name
equal the ones this checkout computed, and each output the record lists hashes to the
sha256 it records. It happens in a staging directory that is renamed into place whole,
under the same per-key lock as a build; verified blobs wait in ``<cache>/oci/blobs`` so
that an interrupted pull resumes, and are removed once the artifact is in place.

This module knows directories, records and layers; the stages (kernel/build.py,
kernel/kheaders.py: kernel/layers.py; guest/image.py) say which files of theirs are which
layer; `invoke push` (kernlab/artifacts/push.py) drives the pushing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlab.core import filelock, lock, oci, paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord, ImageRecord
from kernlab.core.util import atomic_write_json, human_bytes, read_json, sha256_file, short, staging_dir

VENDOR = "application/vnd.kernlab"
TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
ANNOTATION = "dev.kernlab"
RECORD_ANNOTATION = f"{ANNOTATION}.record"
LAZY_ANNOTATION = f"{ANNOTATION}.lazy"
PULLED_FIELD = "pulled"  # what a pulled record says about where it came from
ZSTD_LEVEL = "-3"
MIB = 1 << 20


@dataclass(frozen=True)
class Layer:
    """One layer: ``members`` (paths relative to the artifact's root) as ``shape``.

    ``file``: one file as it is; ``zst``: one file, zstd-compressed (sparse on unpack);
    ``tar``: the members (files or directories) as a zstd-compressed tar.
    """

    title: str
    media_type: str
    shape: str
    members: tuple[str, ...]
    lazy: bool = False
    required: bool = True


@dataclass(frozen=True)
class Kind:
    """What one stage's artifacts look like: repository, type, record and layers."""

    name: str  # repository under the namespace: kernel, kheaders, image
    noun: str  # how notes and errors call one: "kernel build", "headers disk", "image"
    record_name: str  # the record's file in the root (build.json, kheaders.json, image.json)
    name_field: str  # the record field the tag's name comes from (version, recipe)
    root_of: Callable[[dict[str, Any]], Path]  # where the record says its root is
    layers: Callable[[dict[str, Any], Path], list[Layer]]  # the layers of one record, at root
    placed: Callable[[dict[str, Any]], dict[str, Any]] = lambda record: record  # fix-ups after a pull

    @property
    def artifact_type(self) -> str:
        return f"{VENDOR}.{self.name}.v1"

    @property
    def record_type(self) -> str:
        return f"{VENDOR}.{self.name}.record.v1+json"

    def tag(self, name: str, key: str) -> str:
        return f"{name}-{key}"

    def lock_name(self, name: str, key: str) -> str:
        """How kernlab.lock's ``artifacts`` names one artifact: ``kernel:6.1-<key>``."""
        return f"{self.name}:{self.tag(name, key)}"


@dataclass
class Pulled:
    """What a pull fetched: the record (paths rebased), digest, bytes and seconds."""

    record: dict[str, Any]
    reference: str
    digest: str
    fetched: int = 0
    seconds: float = 0.0
    layers: dict[str, int] = field(default_factory=dict)


Record = Mapping[str, Any] | Any  # a stage record (core.records: ``.to_json()``) or its JSON


def as_json(record: Record) -> dict[str, Any]:
    """The JSON object of a stage record (``BuildRecord``, ``ImageRecord``) or of a mapping."""
    return record.to_json() if hasattr(record, "to_json") else dict(record)


# ---------------------------------------------------------------- which registry
_unreachable: set[str] = set()  # registries already noted as unreachable by this process


def client(address: oci.Address | None = None) -> oci.Client | None:
    """A client of the configured registry (``KERNLAB_REGISTRY``), or None when none is set."""
    address = address or oci.configured()
    return oci.Client(address) if address else None


def _skip_note(address: oci.Address, error: KernlabError, what: str) -> None:
    """One note per registry and process: it is not used, and why; the command goes on."""
    if str(address) in _unreachable:
        return
    if isinstance(error, oci.RegistryUnreachable | oci.RegistryDenied):
        _unreachable.add(str(address))
    reporter().note(f"registry: {error.cause}; {what}")


# ---------------------------------------------------------------- packing
def _zstd() -> str:
    found = shutil.which("zstd")
    if not found:
        raise KernlabError("zstd is not installed (layers are zstd-compressed)",
                           "run `invoke setup` (or apt-get install zstd)")
    return found


def _run(cmd: list[str], what: str, **kwargs: Any) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise _disk_or(OSError(done.stderr.strip()), what)


def _pack_layer(layer: Layer, root: Path, out: Path) -> Path:
    """The blob of ``layer`` (files under ``root``) written to ``out``."""
    if layer.shape == "file":
        return root / layer.members[0]
    if layer.shape == "zst":
        _run([_zstd(), "-q", "-f", "-T0", ZSTD_LEVEL, str(root / layer.members[0]), "-o", str(out)],
             f"compressing {layer.title}")
        return out
    tar = subprocess.Popen(["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
                            "--numeric-owner", "-C", str(root), "-cf", "-", *layer.members],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _run([_zstd(), "-q", "-f", "-T0", ZSTD_LEVEL, "-o", str(out)], f"compressing {layer.title}",
         stdin=tar.stdout)
    _, err = tar.communicate()
    if tar.returncode != 0:
        raise KernlabError(f"tar of {layer.title} failed: {err.decode().strip()[:200]}",
                           f"check the files under {root}")
    return out


def _unpack_layer(layer: Layer, blob: Path, root: Path) -> None:
    """Put ``blob`` (already verified) into ``root`` as ``layer`` says."""
    if layer.shape == "file":
        shutil.copyfile(blob, _inside(root, layer.members[0]))
    elif layer.shape == "zst":
        _run([_zstd(), "-d", "-q", "-f", "--sparse", str(blob), "-o",
              str(_inside(root, layer.members[0]))], f"unpacking {layer.title}")
    else:
        unzstd = subprocess.Popen([_zstd(), "-d", "-q", "-c", str(blob)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        try:
            with tarfile.open(fileobj=unzstd.stdout, mode="r|") as tar:
                tar.extractall(root, filter="data")  # refuses absolute paths, escapes, devices
        except (tarfile.TarError, EOFError) as error:
            raise oci.ArtifactRefused(f"layer {layer.title} is not a safe tar archive ({error})",
                                      "push the artifact again from a trusted build") from None
        finally:
            unzstd.wait()


def _inside(root: Path, relative: str) -> Path:
    """``root/relative``, refused unless it stays under ``root`` (a name from a record)."""
    target = (root / relative).resolve()
    if root.resolve() not in target.parents:
        raise oci.ArtifactRefused(f"{relative!r} would land outside {root}", "do not use this artifact")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _disk_or(error: OSError, what: str) -> KernlabError:
    if error.errno == errno.ENOSPC or "No space left" in str(error):
        return KernlabError(f"disk full while {what}", "free space under KERNLAB_WORK / KERNLAB_STATE "
                            "(`invoke clean --yes`) and run the command again")
    return KernlabError(f"{what} failed: {str(error)[:200]}", "check the disk and run the command again")


# ---------------------------------------------------------------- push
def publish(kind: Kind, record: Record, client_: oci.Client,
            extra_tags: tuple[str, ...] = ()) -> tuple[str, str, int]:
    """Push the artifact of ``record`` (its files under the record's root); returns
    (reference, digest, bytes). The manifest is put last: until then no tag names it."""
    record = {k: v for k, v in as_json(record).items() if k != PULLED_FIELD}  # pushed on: as made
    root = kind.root_of(record)
    name, key = str(record[kind.name_field]), str(record["key"])
    tag = kind.tag(name, key)
    layers = kind.layers(record, root)
    missing = [m for layer in layers if layer.required for m in layer.members if not (root / m).exists()]
    if missing:
        raise KernlabError(f"{kind.noun} {root.name} lacks {', '.join(missing)}",
                           "rebuild it before pushing")
    descriptors, total = [], 0
    with _scratch() as scratch:
        for layer in layers:
            if not layer.members or not all((root / m).exists() for m in layer.members):
                continue
            with reporter().step(f"push {layer.title}"):
                blob = _pack_layer(layer, root, scratch / layer.title)
                descriptor = client_.push_blob(kind.name, blob, layer.media_type, layer.title)
                if layer.lazy:
                    descriptor["annotations"][LAZY_ANNOTATION] = "true"
                descriptors.append(descriptor)
                total += int(descriptor["size"])
                if blob.parent == scratch:
                    blob.unlink()
        document = {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST_TYPE,
            "artifactType": kind.artifact_type,
            "config": client_.push_empty(kind.name),
            "layers": descriptors,
            "annotations": _annotations(kind, record),
        }
        digest = client_.push_manifest(kind.name, tag, document)
        for extra in extra_tags:
            client_.push_manifest(kind.name, extra, document)
    return f"{client_.address.repository(kind.name)}:{tag}", digest, total


def _annotations(kind: Kind, record: dict[str, Any]) -> dict[str, str]:
    return {
        f"{ANNOTATION}.kind": kind.name,
        f"{ANNOTATION}.key": str(record["key"]),
        f"{ANNOTATION}.name": str(record[kind.name_field]),
        RECORD_ANNOTATION: json.dumps(record, sort_keys=True, separators=(",", ":")),
        "org.opencontainers.image.title":
            f"{kind.noun} {record[kind.name_field]}-{short(str(record['key']))}",
    }


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    base = paths.cache_dir() / "oci"
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="push-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- pull
def blobs_dir() -> Path:
    """Verified blobs of unfinished pulls (resumed by the next pull, removed when done)."""
    return paths.cache_dir() / "oci" / "blobs"


def pinned_digest(kind: Kind, name: str, key: str) -> str | None:
    """The digest kernlab.lock pins for this artifact, if any."""
    return (lock.read_lock().get("artifacts") or {}).get(kind.lock_name(name, key))


def lookup(kind: Kind, name: str, key: str, final: Path, lock_file: Path,
           client_: oci.Client | None = None, digest: str | None = None) -> Pulled | None:
    """Pull ``kind`` ``name``-``key`` into ``final`` if the registry has it.

    None (and one note) when no registry is set, it cannot be reached, denies access or
    lacks the artifact: the caller then makes the output itself. A refused artifact
    (digest, type, key or output hash mismatch) is an error. ``digest`` (a bundle's)
    or kernlab.lock's pin is the only manifest accepted when given.
    """
    address = client_.address if client_ else oci.configured()
    if address is None or str(address) in _unreachable:
        return None
    client_ = client_ or oci.Client(address)
    wanted = digest or pinned_digest(kind, name, key)
    try:
        with filelock.exclusive(lock_file, f"pull of {kind.noun} {name}-{short(key)}"):
            if (final / kind.record_name).is_file():  # pulled or built while we waited
                return Pulled(read_json(final / kind.record_name), "", "")
            for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a pull killed -9
                shutil.rmtree(stale, ignore_errors=True)
            return pull(kind, name, key, final, client_, wanted)
    except (oci.RegistryUnreachable, oci.RegistryDenied, oci.NotInRegistry) as error:
        _skip_note(address, error, f"making the {kind.noun} here")
        return None


def pull(kind: Kind, name: str, key: str, final: Path, client_: oci.Client,
         digest: str | None = None) -> Pulled:
    """Fetch, verify and place one artifact (the caller holds the key's lock)."""
    started = time.monotonic()
    tag = kind.tag(name, key)
    document, got = client_.manifest(kind.name, digest or tag)
    reference = f"{client_.address.repository(kind.name)}@{got}"
    _check_manifest(kind, document, name, key, tag)
    if digest is None:
        reporter().note(f"registry: {kind.lock_name(name, key)} is not pinned in kernlab.lock: using "
                        f"{got[:19]} on the strength of its key (`invoke lock` pins it)")
    layers = _wanted_layers(kind, document)
    total = sum(int(d["size"]) for d, layer in layers if not layer.lazy)
    result = Pulled({}, reference, got)
    with reporter().step(f"pull {kind.noun} {name}-{short(key)} ({human_bytes(total)})"):
        try:
            with staging_dir(final) as stage:
                blobs = [(d, layer, _blob(client_, kind, d, total)) for d, layer in layers if not layer.lazy]
                for descriptor, layer, blob in blobs:
                    _unpack_layer(layer, blob, stage)
                    result.layers[layer.title] = int(descriptor["size"])
                record = _placed_record(kind, stage, final, name, key)
                record[PULLED_FIELD] = _provenance(client_, kind, reference, got, layers)
                _check_outputs(kind, record, stage, final)
                atomic_write_json(stage / kind.record_name, record)
        except OSError as error:
            raise _disk_or(error, f"pulling {kind.noun} {name} into {final.parent}") from None
    for _, _, blob in blobs:
        blob.unlink(missing_ok=True)
    result.record, result.fetched = record, total
    result.seconds = round(time.monotonic() - started, 1)
    reporter().note(f"pulled {kind.noun} {name}-{short(key)}: {human_bytes(total)} in {result.seconds}s "
                    f"({got[:19]})")
    return result


def _check_manifest(kind: Kind, document: dict[str, Any], name: str, key: str, tag: str) -> None:
    """The artifact is a ``kind`` whose annotations name ``name`` and ``key``."""
    found = document.get("artifactType") or (document.get("config") or {}).get("mediaType")
    if found != kind.artifact_type:
        raise oci.ArtifactRefused(f"{kind.name}:{tag} is a {found or 'untyped artifact'}, "
                                  f"not a {kind.artifact_type}",
                                  f"the tag points at the wrong artifact: push the {kind.noun} again")
    notes = document.get("annotations") or {}
    for field_, want in (("key", key), ("name", name)):
        have = notes.get(f"{ANNOTATION}.{field_}")
        if have != want:
            raise oci.ArtifactRefused(f"{kind.name}:{tag} is annotated with {field_} {have!r}, "
                                      f"this checkout wants {want!r}", "do not use it; push the right build")


def _wanted_layers(kind: Kind, document: dict[str, Any]) -> list[tuple[dict[str, Any], Layer]]:
    """The manifest's layers matched (by title) to the kind's; a required one missing is refused."""
    known = {layer.title: layer for layer in kind.layers({}, Path("/"))}
    found = []
    for descriptor in document.get("layers") or []:
        title = (descriptor.get("annotations") or {}).get(oci.TITLE, "")
        if title in known:
            found.append((descriptor, known[title]))
    titles = {layer.title for _, layer in found}
    missing = [t for t, layer in known.items() if layer.required and t not in titles]
    if missing:
        raise oci.ArtifactRefused(f"the {kind.noun} artifact lacks the layers {', '.join(missing)}",
                                  "push it again with this kernlab")
    return found


def _blob(client_: oci.Client, kind: Kind, descriptor: dict[str, Any], total: int) -> Path:
    """The verified blob, from an interrupted pull's leftovers or downloaded now."""
    directory = blobs_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / str(descriptor["digest"]).replace(":", "-")
    if path.is_file() and path.stat().st_size == int(descriptor["size"]) and \
            "sha256:" + sha256_file(path) == descriptor["digest"]:
        return path
    title = descriptor["annotations"][oci.TITLE]
    started = time.monotonic()

    def progress(got: int) -> None:
        rate = got / max(time.monotonic() - started, 0.001)
        reporter().status(f"{title}: {human_bytes(got)} of {human_bytes(int(descriptor['size']))}"
                          f" ({human_bytes(rate)}/s)")

    return client_.fetch_blob(kind.name, descriptor, path, progress)


def _placed_record(kind: Kind, stage: Path, final: Path, name: str, key: str) -> dict[str, Any]:
    """The record from the artifact, checked against ``name``/``key``, paths rebased to ``final``."""
    try:
        record = read_json(stage / kind.record_name)
    except (OSError, ValueError):
        raise oci.ArtifactRefused(f"the {kind.noun} artifact's {kind.record_name} is not JSON",
                                  "push it again") from None
    if not isinstance(record, dict):
        raise oci.ArtifactRefused(f"the {kind.noun} artifact's {kind.record_name} is not a record",
                                  "push it again")
    for field_, want in (("key", key), (kind.name_field, name)):
        if str(record.get(field_)) != want:
            raise oci.ArtifactRefused(f"the pulled {kind.noun}'s record names {field_} "
                                      f"{str(record.get(field_))[:64]!r}, this checkout wants {want!r}",
                                      "do not use it; push the build this checkout makes")
    old = str(kind.root_of(record))
    return kind.placed(rebase(record, old, str(final)))


def rebase(value: Any, old: str, new: str) -> Any:
    """``value`` with every path string under ``old`` moved under ``new``."""
    if isinstance(value, dict):
        return {k: rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + "/")):
        return new + value[len(old):]
    return value


def _outputs(value: Any) -> Iterator[dict[str, Any]]:
    """Every ``{"path", "sha256"}`` mapping in a record."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str) and isinstance(value.get("sha256"), str):
            yield value
        for item in value.values():
            yield from _outputs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _outputs(item)


def _check_outputs(kind: Kind, record: dict[str, Any], stage: Path, final: Path) -> None:
    """Each output the record hashes, under the artifact's root and not lazy, hashes so."""
    lazy = {final / v["path"] for v in record[PULLED_FIELD]["lazy"].values()}
    for output in _outputs({k: v for k, v in record.items() if k != PULLED_FIELD}):
        path = Path(output["path"])
        if final not in path.parents or path in lazy:
            continue
        here = stage / path.relative_to(final)
        if not here.is_file():
            raise oci.ArtifactRefused(f"the pulled {kind.noun} lacks {path.relative_to(final)}, "
                                      "which its record lists", "push it again")
        if sha256_file(here) != output["sha256"]:
            raise oci.ArtifactRefused(f"{path.relative_to(final)} of the pulled {kind.noun} does not "
                                      f"hash to its record's sha256 {output['sha256'][:16]}",
                                      "do not use it; push the build again")


def _provenance(client_: oci.Client, kind: Kind, reference: str, digest: str,
                layers: list[tuple[dict[str, Any], Layer]]) -> dict[str, Any]:
    """The record's ``pulled`` field: where from, which manifest, and the lazy layers."""
    lazy = {layer.title: {"digest": d["digest"], "size": d["size"], "mediaType": d["mediaType"],
                          "path": str(layer.members[0])}
            for d, layer in layers if layer.lazy}
    return {"reference": reference, "digest": digest, "registry": str(client_.address),
            "kind": kind.name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "lazy": lazy}


def lazy_layer(kind: Kind, record: Record, title: str, lock_file: Path) -> Path:
    """The file of lazy layer ``title`` of a pulled ``record`` (fetched now if absent)."""
    record = as_json(record)
    info = (record.get(PULLED_FIELD) or {}).get("lazy", {}).get(title)
    root = kind.root_of(record)
    if info is None:
        raise KernlabError(f"the {kind.noun} {root.name} has no {title}", "rebuild it locally")
    target = _inside(root, info["path"]) if not Path(info["path"]).is_absolute() else Path(info["path"])
    if target.is_file():
        return target
    expected = next((o["sha256"] for o in _outputs(record) if o["path"] == str(target)), None)
    address = oci.configured() or oci.parse_address(record[PULLED_FIELD]["registry"])
    layer = next(layer for layer in kind.layers({}, Path("/")) if layer.title == title)
    descriptor = {"digest": info["digest"], "size": info["size"], "mediaType": info["mediaType"],
                  "annotations": {oci.TITLE: title}}
    with filelock.exclusive(lock_file, f"pull of {title} for {root.name}"):
        if target.is_file():
            return target
        with reporter().step(f"pull {title} of {root.name} ({human_bytes(int(info['size']))})"):
            blob = _blob(oci.Client(address), kind, descriptor, int(info["size"]))
            part = target.with_name(target.name + ".part")
            try:
                _unpack_layer(Layer(title, layer.media_type, layer.shape, (part.name,)), blob, target.parent)
                if expected and sha256_file(part) != expected:
                    raise oci.ArtifactRefused(f"{title} of {root.name} does not hash to its record's "
                                              f"sha256 {expected[:16]}",
                                              "do not use it; push the build again")
                os.replace(part, target)
            except OSError as error:
                raise _disk_or(error, f"pulling {title}") from None
            finally:
                part.unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
    return target


def lock_file_of(kind: Kind, record: Record) -> Path:
    """The lock of one artifact's key, as its stage takes it (a build's is its build lock)."""
    record = as_json(record)
    root = kind.root_of(record)
    prefix = "build-" if kind.name == "kernel" else f"{kind.name}-"
    return filelock.locks_dir(root.parent.parent) / f"{prefix}{root.name}.lock"


# ---------------------------------------------------------------- lock
def pulled(record: Record) -> dict[str, Any]:
    """What a pulled record says about its pull ({} when made here): reference, digest,
    registry, lazy layers."""
    return dict(as_json(record).get(PULLED_FIELD) or {})


def pulled_digest(record: Record) -> str | None:
    """The manifest digest a pulled record came from (None: made here)."""
    return pulled(record).get("digest")


def is_lazy(record: Record, title: str) -> bool:
    """Whether the pulled ``record``'s layer ``title`` waits in the registry until read."""
    return title in pulled(record).get("lazy", {})


def published_path() -> Path:
    """Digests this machine pushed (``{lock name: digest}``), for `invoke lock`."""
    return paths.cache_dir() / "oci" / "published.json"


def remember_published(kind: Kind, record: Record, digest: str) -> None:
    record = as_json(record)
    path = published_path()
    data = read_json(path) if path.is_file() else {}
    data[kind.lock_name(str(record[kind.name_field]), str(record["key"]))] = digest
    with contextlib.suppress(OSError):  # a read-only state area: the digest was printed
        atomic_write_json(path, data)


def digest_of(kind: Kind, record: Record) -> str | None:
    """The digest of ``record``'s artifact: the one it was pulled at, else the one pushed."""
    record = as_json(record)
    return pulled_digest(record) or published_digest(kind, str(record[kind.name_field]), str(record["key"]))


def published_digest(kind: Kind, name: str, key: str) -> str | None:
    """The digest this machine pushed ``kind`` ``name``-``key`` as (None: not pushed here)."""
    path = published_path()
    data = read_json(path) if path.is_file() else {}
    return data.get(kind.lock_name(name, key))


def bundle_digests(kinds_: dict[str, Kind], build: BuildRecord | None, image: ImageRecord | None,
                   headers: dict[str, Any] | None) -> dict[str, str]:
    """``{kernel, image, kheaders: manifest digest}`` of what a run used, where known (pulled
    here or pushed from here): what a bundle's manifest names for `reproduce` to pull."""
    found = {}
    for kind_name, record in (("kernel", build), ("image", image)):
        if record is not None and (digest := digest_of(kinds_[kind_name], record.to_json())):
            found[kind_name] = digest
    if headers and build is not None:
        digest = headers.get("digest") or published_digest(kinds_["kheaders"], build.version,
                                                           str(headers.get("key")))
        if digest:
            found["kheaders"] = digest
    return found
