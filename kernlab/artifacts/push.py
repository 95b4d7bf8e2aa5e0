"""`invoke push`: publish what this machine built, as OCI artifacts tagged by key.

Kernels by version or build id (with their headers disks: made in a scratch area when
no VM has needed one yet, so pushing writes nothing into the work area), the image of a
recipe, or everything (``--all``). Each line names the reference, digest and size; the
digests are kept for `invoke lock` in ``<cache>/oci/published.json``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlab.core import oci, paths, registry
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.core.util import human_bytes, scoped_environ
from kernlab.guest.image import IMAGE, find_image
from kernlab.kernel import kheaders, layers
from kernlab.kernel.selection import complete_builds, find_build


@dataclass(frozen=True)
class Pushed:
    """One artifact pushed: what, where, which digest, how many bytes."""

    what: str
    reference: str
    digest: str
    size: int

    def line(self) -> str:
        return f"pushed {self.what}: {self.reference} {self.digest[:19]} ({human_bytes(self.size)})"


def require_registry(value: str | None, insecure: bool = False) -> oci.Client:
    """The client of ``--registry`` / KERNLAB_REGISTRY; an error when neither is set."""
    address = oci.configured(value, insecure)
    if address is None:
        raise KernlabError("no registry to push to", f"give --registry HOST[:PORT]/NAMESPACE or set "
                           f"{oci.REGISTRY_ENV}")
    client = oci.Client(address)
    client.ping()
    return client


def push(client: oci.Client, kernels: list[str], recipes: list[str], every: bool = False) -> list[Pushed]:
    """Push the builds ``kernels`` names (all complete builds with ``every``) and the images
    of ``recipes`` (every recipe's current image with ``every``)."""
    builds = [b.record for b in complete_builds()] if every else [find_build(k, "--kernel") for k in kernels]
    builds = [b for b in builds if b is not None]
    if every:
        recipes = sorted({p.stem for p in paths.vm_dir().glob("*.yaml")})
    if not builds and not recipes:
        raise KernlabError("nothing to push", "give --kernel VERSION, --image, or --all")
    done = []
    with tempfile.TemporaryDirectory(prefix="push-headers-", dir=_scratch_base()) as scratch:
        for build in builds:
            done.append(_push_one(client, layers.KERNEL, build, extra=(build.version,)))
            try:
                headers = _headers(build, Path(scratch))
            except KernlabError as error:  # the puller's first boot then needs the source tree
                reporter().warn(f"headers disk of {build.version} not pushed: {error.cause}")
                continue
            done.append(_push_one(client, layers.HEADERS, headers))
    for recipe in recipes:
        try:
            image = find_image(recipe)
        except KernlabError:
            if every:
                continue  # --all: the recipes that have an image
            raise
        done.append(_push_one(client, IMAGE, image.to_json(), extra=(recipe,)))
    return done


def _push_one(client: oci.Client, kind: registry.Kind, record: registry.Record,
              extra: tuple[str, ...] = ()) -> Pushed:
    record = registry.as_json(record)
    name = f"{kind.noun} {record[kind.name_field]}"
    pulled = registry.pulled(record)
    if pulled.get("registry") == str(client.address):
        reporter().note(f"{name} was pulled from {client.address} ({pulled['digest'][:19]}): already there")
        return Pushed(name, pulled["reference"], pulled["digest"], 0)
    if pulled:
        for title in pulled.get("lazy", {}):  # pushed on to another registry: whole
            registry.lazy_layer(kind, record, title, registry.lock_file_of(kind, record))
    with reporter().step(f"push {name}"):
        reference, digest, size = registry.publish(kind, record, client, extra)
    registry.remember_published(kind, record, digest)
    return Pushed(name, reference, digest, size)


def _headers(build: BuildRecord, scratch: Path) -> dict[str, Any]:
    """The headers disk record of ``build``: the one made, else one made under ``scratch``
    (pushing writes nothing into the work area)."""
    if made := kheaders.find_headers(build):
        return made
    with scoped_environ({"KERNLAB_WORK": str(scratch)}):
        return kheaders.ensure_headers(build)


def _scratch_base() -> Path:
    base = paths.cache_dir() / "oci"
    base.mkdir(parents=True, exist_ok=True)
    return base
