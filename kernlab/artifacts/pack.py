"""`invoke pack BUNDLE` and `invoke reproduce PACK`: a results bundle that travels.

A pack is one tar file holding everything another machine needs to reproduce a bundle
with no network:

    pack.json                      what is inside (bundle, kernel, source, image)
    bundle/                        the results bundle itself
    root/                          a project root for this bundle alone (KERNLAB_ROOT):
      configs/kernels.yaml         the bundle's kernel entry, its source made to work offline
      configs/<fragments>  patches/<series>/  vm/<recipe>.yaml vm/init vm/fstab
      experiments/<name>/  experiments/_lib/  kernlab.lock (the kernel's entry)
    cache/downloads/<sha256>-<name> the exact kernel source file (.tar.xz or .deb)
    debs/                          the image's .deb files, exactly the installed versions

``--small`` leaves the source file and the .debs out: the pack then names them by
version and sha256 (its lock holds the image's package versions too), and the receiving
machine fetches them (network) or has them.

``reproduce PACK`` unpacks into ``<state>/packs/<sha256 of the pack>/``, seeds the cache with the
source file, serves the .debs as a local apt repository to mmdebstrap, and runs the
ordinary ``reproduce`` with that root: kernel rebuilt from the packed source, image
rebuilt from the packed .debs (compared by package versions: its host keys are new),
experiment rerun, expectations and masked trace compared.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from kernlab import __version__
from kernlab.compare.reproduce import bundle_experiment, load_bundle, reproduce
from kernlab.core import inuse, lock, paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord, ImageRecord, Manifest
from kernlab.core.spec import SpecFile
from kernlab.core.util import atomic_write_json, read_json, scoped_environ, sha256_file
from kernlab.core.validate import new_output, plain_name
from kernlab.guest.image import (
    GUEST_FILES,
    IMAGE,
    RECIPE_KEYS,
    deb_cache,
    image_key,
    input_files_sha256,
    recipe_path,
)
from kernlab.kernel import layers
from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.debsource import cached_deb, kernel_entry_pinned, pin_of_record
from kernlab.kernel.source import cached_download, safe_extract

FORMAT = 1
SUFFIX = ".kernlab-pack.tar"
PACK_PLACE = "{pack}"  # in a packed catalog: the folder the pack was unpacked into


# ---------------------------------------------------------------- making a pack
def pack_bundle(bundle: Path, out: Path | None = None, small: bool = False) -> Path:
    """Write the pack of ``bundle``; returns its path."""
    bundle = bundle.resolve()
    manifest, _ = load_bundle(bundle)
    build, image = manifest.build, manifest.image
    if build is None:
        raise KernlabError(f"{bundle} records no kernel build", "pack a bundle of a run that had one")
    for what, value in (("experiment", manifest.experiment_name), ("kernel version", build.version)):
        if problem := plain_name(value):  # it names the pack's file
            raise KernlabError(f"{bundle / 'manifest.json'}: its {what} {problem}",
                               "pack a bundle written by `invoke run-experiment`")
    name = f"{manifest.experiment_name}-{build.version}-{bundle.name}{SUFFIX}"
    out = new_output(out or paths.results_dir() / "packs" / name, "--out")
    staging = Path(tempfile.mkdtemp(prefix=".pack-", dir=_scratch()))
    with inuse.using(staging, f"staging of {out.name}", temporary=True), \
            contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, staging, ignore_errors=True)
        root = staging / "root"
        shutil.copytree(bundle, staging / "bundle", symlinks=True)
        source = _pack_source(build, staging, small)
        _pack_kernel_inputs(build, source["catalog_source"], root)
        image_info = _pack_image(image, staging, root, small) if image else None
        if image and small:  # the recipe travels unchanged: its packages can be held to the bundle's
            _lock_image(root / "kernlab.lock", image)
        _pack_experiment(bundle, manifest, root)
        if small:  # what it ran on, pinned to the registry digests its manifest names
            _lock_artifacts(root / "kernlab.lock", manifest)
        index = {"format": FORMAT, "kernlab": __version__, "made": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "small": small, "experiment": manifest.experiment_name, "kernel": build.version,
                 "bundle": bundle.name, "source": {k: v for k, v in source.items() if k != "catalog_source"},
                 "image": image_info}
        atomic_write_json(staging / "pack.json", index)
        _write_tar(staging, out)
    return out


def _scratch() -> Path:
    folder = paths.state_dir() / "packs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _pack_source(build: BuildRecord, staging: Path, small: bool) -> dict[str, Any]:
    """Put the exact source file in the pack (unless ``small``); how the packed catalog names it."""
    source = build.source
    kind, sha = source["kind"], source["sha256"]
    info: dict[str, Any] = {"kind": kind, "origin": source["origin"], "sha256": sha,
                            "tree_sha256": source.get("tree_sha256"), "file": None}
    if kind == "debian":
        pin = pin_of_record(source, paths.cache_dir() / "pack-apt.log")
        info["debian"] = pin.to_json()
        info["catalog_source"] = {"debian": {"package": pin.package,
                                             **({"suite": s} if (s := source.get("debian", {}).get("suite"))
                                                else {})}}
        if not small:
            deb = cached_deb(pin.deb_sha256)
            assert deb is not None  # pin_of_record keeps it in the cache
            info["file"] = _add_download(staging, deb)
        return info
    if kind == "git":
        tarball = _git_export(source, staging)
        sha = sha256_file(tarball)
        info.update(sha256=sha, exported_from=source.get("commit"))
        info["catalog_source"] = {"file": {"path": f"{PACK_PLACE}/cache/downloads/{tarball.name}",
                                           "sha256": sha}}
        info["file"] = f"cache/downloads/{tarball.name}"
        return info
    found = _source_file(kind, source)
    if kind == "tarball":
        info["catalog_source"] = {"tarball": {"url": source["origin"], "sha256": sha}}
    else:
        name = f"{sha}-{Path(source['origin']).name}"
        info["catalog_source"] = {"file": {"path": f"{PACK_PLACE}/cache/downloads/{name}", "sha256": sha}}
    if small and kind == "file":
        raise KernlabError(f"the bundle's source is the local file {source['origin']}: a small pack "
                           "cannot point at it", "make a full pack (drop --small)")
    if not small:
        info["file"] = _add_download(staging, found)
    return info


def _source_file(kind: str, source: dict[str, Any]) -> Path:
    """The tarball the build used, verified by its sha256."""
    sha = source["sha256"]
    candidates = [cached_download(sha)] if kind == "tarball" else [Path(source["origin"])]
    for candidate in candidates:
        if candidate is not None and candidate.is_file() and sha256_file(candidate) == sha:
            return candidate
    raise KernlabError(f"the bundle's source file ({source['origin']}, sha256 {sha[:16]}) is not here",
                       "rebuild the kernel from that source once (it lands in the cache), or pass --small")


def _git_export(source: dict[str, Any], staging: Path) -> Path:
    git_dir = str(source["origin"]).rsplit("@", 1)[0]
    out = staging / "cache" / "downloads" / f"git-{source['commit'][:12]}.tar"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as handle:
        subprocess.run(["git", "-C", git_dir, "archive", "--format=tar", "--prefix=linux/", source["commit"]],
                       stdout=handle, check=True)
    final = out.with_name(f"{sha256_file(out)}-{out.name}")
    os.replace(out, final)
    return final


def _add_download(staging: Path, file: Path) -> str:
    """Hard-link (or copy) ``file`` into the pack's cache/downloads as ``<sha256>-<name>``."""
    sha = sha256_file(file)
    name = file.name if file.name.startswith(f"{sha}-") else f"{sha}-{file.name}"
    target = staging / "cache" / "downloads" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(file, target)
    except OSError:
        shutil.copyfile(file, target)
    return f"cache/downloads/{name}"


def _checked(path: Path, sha: str, what: str) -> Path:
    """``path`` if it still holds ``sha``; else the file of the same name in this checkout's
    patches/ or configs/ when that holds it (a build made in another checkout or a removed
    worktree names its files there); else a one-line error."""
    here = paths.root() / ("patches" if what == "patch" else "configs")
    moved = here / path.parent.name / path.name if what == "patch" else here / path.name
    for candidate in (path, moved):
        if candidate.is_file() and sha256_file(candidate) == sha:
            return candidate
    raise KernlabError(f"the bundle's {what} {path} changed since the bundle (or is gone)",
                       "check out the kernlab commit the bundle was made with, then pack it")


def _pack_kernel_inputs(build: BuildRecord, catalog_source: dict[str, Any], root: Path) -> None:
    """Patches, fragments, the catalog entry and the kernel's lock entry, as the build had them."""
    spec = load_catalog().kernel(build.version)
    series: list[str] = []
    for patch in build.patches:
        directory = Path(patch["series"])
        name = directory.name
        if name not in series:
            series.append(name)
            (root / "patches" / name).mkdir(parents=True)
            listed = _checked(directory / patch["name"], patch["sha256"], "patch").parent / "series"
            heading = [line for line in listed.read_text().splitlines()[:1]
                       if line.startswith("#")] if listed.is_file() else []
            (root / "patches" / name / "series").write_text("\n".join(heading) + "\n" if heading else "")
        with open(root / "patches" / name / "series", "a") as listing:
            listing.write(patch["name"] + "\n")  # exactly the build's patches, in its order
        shutil.copyfile(_checked(directory / patch["name"], patch["sha256"], "patch"),
                        root / "patches" / name / patch["name"])
    (root / "configs").mkdir(parents=True)
    for fragment in build.fragments:
        source = _checked(Path(fragment["path"]), fragment["sha256"], "config fragment")
        shutil.copyfile(source, root / "configs" / source.name)
    entry = {"release": spec.release, "description": spec.description, "sources": [catalog_source],
             "patches": series, "config": {"base": build.config_base,
                                           "fragments": [Path(f["path"]).name for f in build.fragments]},
             "compiler": spec.compiler, "samples_bpf": list(spec.samples_bpf), "symbols": list(spec.symbols),
             "arch": spec.arch}
    catalog = {"default": build.version, "kernels": {build.version: entry}}
    (root / "configs" / "kernels.yaml").write_text(
        "# kernlab pack: the bundle's kernel only; {pack} is where the pack was unpacked\n"
        + yaml.safe_dump(catalog, sort_keys=False))
    locked = {build.version: kernel_entry_pinned(build)}
    atomic_write_json(root / "kernlab.lock", {"format": lock.LOCK_FORMAT, "kernels": locked, "images": {}})


def _pack_image(image: ImageRecord, staging: Path, root: Path, small: bool) -> dict[str, Any]:
    """The image recipe (as the bundle's image was keyed) and its exact .deb files."""
    recipe = image.recipe
    if image_key(recipe) != image.key:
        raise KernlabError(f"vm/{recipe}.yaml, vm/init or vm/fstab changed since the bundle's image",
                           "check out the kernlab commit the bundle was made with, then pack it")
    (root / "vm").mkdir(parents=True)
    shutil.copyfile(recipe_path(recipe), root / "vm" / f"{recipe}.yaml")
    for name in GUEST_FILES:
        shutil.copyfile(paths.vm_dir() / name, root / "vm" / name)
    packages = image.packages
    info = {"recipe": recipe, "suite": image.suite, "packages": packages, "debs": None}
    if small:
        return info
    missing = []
    (staging / "debs").mkdir()
    for name, version in sorted(packages.items()):
        found = sorted(deb_cache(image.suite).glob(f"{name}_{version.replace(':', '%3a')}_*.deb"))
        if not found:
            missing.append(f"{name}={version}")
            continue
        try:
            os.link(found[0], staging / "debs" / found[0].name)
        except OSError:
            shutil.copyfile(found[0], staging / "debs" / found[0].name)
    if missing:
        raise KernlabError(f"{len(missing)} of the image's packages are not in {deb_cache(image.suite)} "
                           f"(e.g. {', '.join(missing[:3])})",
                           "pass --small to pack their versions only, or rebuild the image to fill the cache")
    info["debs"] = "debs/"
    return info


def _lock_image(path: Path, image: ImageRecord) -> None:
    """Add the image's recipe key and package versions to the packed lock (small packs)."""
    data = read_json(path)
    data["images"][image.recipe] = lock.image_entry(image.key, image.packages,
                                                    input_files_sha256(image.recipe))
    atomic_write_json(path, data)


def _lock_artifacts(path: Path, manifest: Manifest) -> None:
    """Pin the bundle's kernel, headers disk and image to the digests its manifest names, so
    that `reproduce PACK` with KERNLAB_REGISTRY set pulls exactly those."""
    digests = manifest.artifacts
    build, image, headers = manifest.build, manifest.image, manifest.to_json().get("kheaders") or {}
    if build is None:
        return
    names = {"kernel": layers.KERNEL.lock_name(build.version, build.key),
             "kheaders": layers.HEADERS.lock_name(build.version, str(headers.get("key")))}
    if image is not None:
        names["image"] = IMAGE.lock_name(image.recipe, image.key)
    pins = {names[kind]: digest for kind, digest in digests.items() if kind in names}
    if pins:
        data = read_json(path) if path.is_file() else {"format": 1, "kernels": {}, "images": {}}
        data.setdefault("artifacts", {}).update(pins)
        atomic_write_json(path, data)


def _pack_experiment(bundle: Path, manifest: Manifest, root: Path) -> None:
    """The experiment the bundle ran (by content hash: its folder or the bundle's copy)."""
    exp, same = bundle_experiment(bundle, manifest, [])
    if not same:
        raise KernlabError(f"experiment {exp.name} changed since the bundle",
                           "check out the kernlab commit the bundle was made with, then pack it")
    (root / "experiments").mkdir(parents=True, exist_ok=True)
    exp.copy_to(root / "experiments")


def _write_tar(staging: Path, out: Path) -> None:
    """The pack as one tar, written under a temporary name and renamed when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with inuse.temporary(out.with_name(f".{out.name}.part"), f"writing {out.name}") as part:
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            for item in sorted(staging.iterdir()):
                tar.add(item, arcname=item.name)
        new_output(out, "--out")  # made meanwhile by another command: it stays
        os.replace(part, out)


# ---------------------------------------------------------------- reproducing a pack
def is_pack(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SUFFIX)


def unpack(pack: Path) -> Path:
    """Unpack (safely) into <state>/packs/<sha256 of the pack>/ and seed the cache; returns
    the folder. Keyed by content: two packs of one file name never share a folder."""
    with reporter().step(f"hash {pack.name}"):
        dest = paths.state_dir() / "packs" / sha256_file(pack)[:32]
    if not (dest / "pack.json").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        with reporter().step(f"unpack {pack.name}"):
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=_scratch()))
            with inuse.temporary(staging, f"unpacking {pack.name}"):
                safe_extract(pack, staging)
                os.replace(staging, dest)
    index = read_json(dest / "pack.json")
    if index.get("format") != FORMAT:
        raise KernlabError(f"{pack} is a pack of format {index.get('format')}, this kernlab reads {FORMAT}",
                           "use the kernlab version that made it")
    _check_names(pack, index)
    _seed_cache(dest)
    catalog = dest / "root" / "configs" / "kernels.yaml"
    catalog.write_text(catalog.read_text().replace(PACK_PLACE, str(dest)))
    if index.get("image") and index["image"].get("debs"):
        _local_archive(dest, index["image"]["recipe"])
    return dest


def _check_names(pack: Path, index: dict[str, Any]) -> None:
    """pack.json's names become paths in the unpacked folder: each must be one plain name."""
    entry = index.get("image") or {}
    named = {"experiment": index.get("experiment"), "kernel": index.get("kernel"),
             "image recipe": entry.get("recipe") if isinstance(entry, dict) else entry}
    for what, name in named.items():
        if name is not None and (problem := plain_name(str(name))):
            raise KernlabError(f"{pack}: pack.json's {what} {problem}",
                               "the pack is damaged or not kernlab's: make it again with `invoke pack`")


def _seed_cache(dest: Path) -> None:
    """Verified copies of the pack's source files in this machine's download cache."""
    downloads = paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    for file in sorted((dest / "cache" / "downloads").glob("*")):
        sha = file.name.split("-", 1)[0]
        if sha256_file(file) != sha:
            raise KernlabError(f"{file.name} in the pack does not match its sha256", "the pack is damaged")
        target = downloads / file.name
        if not target.is_file():
            with inuse.temporary(target.with_name(f".{target.name}.seed.part"), "seeding the cache") as part:
                shutil.copyfile(file, part)
                os.replace(part, target)


def _local_archive(dest: Path, recipe: str) -> None:
    """Index the packed .debs and point the recipe's mirror at them (a flat local archive)."""
    path = dest / "root" / "vm" / f"{recipe}.yaml"
    recipe_file = SpecFile(path, "repack it with `invoke pack`")
    spec = recipe_file.mapping(recipe_file.load(empty={}), allowed=RECIPE_KEYS)
    debs = dest / "debs"
    index = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=debs, check=True,
                           capture_output=True, text=True).stdout
    (debs / "Packages").write_text(index)
    spec["mirror"] = f"deb [trusted=yes] copy://{debs} ./"  # copy: mmdebstrap's chroot cannot see file:
    path.write_text("# kernlab pack: the image's own .debs, served from the pack\n"
                    + yaml.safe_dump(spec, sort_keys=False))


def packed_project(dest: Path) -> contextlib.AbstractContextManager[None]:
    """kernlab's paths pointed at the unpacked root and its lock, for the duration."""
    return scoped_environ(
        {"KERNLAB_ROOT": str(dest / "root"), "KERNLAB_LOCK": str(dest / "root" / "kernlab.lock")},
        unset=("KERNLAB_CONFIGS", "KERNLAB_EXPERIMENTS", "KERNLAB_LOCAL_KERNELS"))


def reproduce_pack(pack: Path, anyway: bool = False, keep_vm: bool = False, vm_name: str = "default"):
    """Unpack ``pack`` and reproduce its bundle from the packed inputs alone."""
    dest = unpack(pack.resolve())
    name = read_json(dest / "pack.json").get("experiment", "")
    copies = [dest / "root" / "experiments" / name] if name and not plain_name(name) else []
    with packed_project(dest):
        return reproduce(dest / "bundle", anyway=anyway, keep_vm=keep_vm, vm_name=vm_name, copies=copies)
