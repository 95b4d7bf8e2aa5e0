"""Where kernlab keeps things: project files, work areas and the download cache.

Every location can be moved with an environment variable, which is how tests and
CI keep their state apart:

- ``KERNLAB_ROOT``   project root holding configs/, patches/, vm/, experiments/
- ``KERNLAB_WORK``   kernel sources and builds (default ``<root>/kernels``)
- ``KERNLAB_STATE``  images and running VMs (default ``<root>/.kernlab``)
- ``KERNLAB_RESULTS`` results bundles (default ``<root>/results``)
- ``KERNLAB_CACHE``  downloads, keyed by sha256 (default ``~/.cache/kernlab``)
"""

from __future__ import annotations

import os
from pathlib import Path

from kernlab.core.errors import KernlabError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _env_path(name: str, default: Path) -> Path:
    """``$name`` as a resolved directory path, else ``default``; a path that cannot be a
    directory (it, or a parent, is a file) is refused with a one-line error."""
    value = os.environ.get(name)
    path = Path(value).expanduser().resolve() if value else default
    _check_dir(name, value, path)
    return path


def _check_dir(name: str, value: str | None, path: Path) -> None:
    for candidate in (path, *path.parents):
        try:
            if candidate.exists():
                if candidate.is_dir():
                    return
                break
        except OSError:  # a path too long, a loop: let the first real use report it
            return
    else:
        return
    what = f"{name}={value}" if value else f"the default {name} ({path})"
    where = "is a file" if candidate == path else f"lies under {candidate}, which is a file"
    raise KernlabError(f"{what} {where}, not a directory",
                       f"point {name} at a directory (it is created when missing)")


def root() -> Path:
    return _env_path("KERNLAB_ROOT", PACKAGE_ROOT)


def configs_dir() -> Path:
    return _env_path("KERNLAB_CONFIGS", root() / "configs")


def patches_dir() -> Path:
    return root() / "patches"


def vm_dir() -> Path:
    return root() / "vm"


def experiments_dir() -> Path:
    return _env_path("KERNLAB_EXPERIMENTS", root() / "experiments")


def work_dir() -> Path:
    return _env_path("KERNLAB_WORK", root() / "kernels")


def state_dir() -> Path:
    return _env_path("KERNLAB_STATE", root() / ".kernlab")


def results_dir() -> Path:
    return _env_path("KERNLAB_RESULTS", root() / "results")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kernlab"
    return _env_path("KERNLAB_CACHE", default)


def downloads_dir() -> Path:
    return cache_dir() / "downloads"


def ccache_dir() -> Path:
    return _env_path("CCACHE_DIR", cache_dir() / "ccache")
