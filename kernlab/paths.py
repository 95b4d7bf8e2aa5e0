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

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


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
