"""Isolated kernlab areas for in-process tests: own cache, work area, configs and lock, and
a one-kernel catalog (version 9.9) whose source the test chooses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.source import SourceOptions, resolve_source


def one_kernel_areas(tmp_path: Path, monkeypatch: Any, source: dict[str, Any],
                     **entry: Any) -> Path:
    """KERNLAB_CACHE, _WORK, _CONFIGS and _LOCK under ``tmp_path``; kernel 9.9 from ``source``."""
    for name in ("KERNLAB_CACHE", "KERNLAB_WORK", "KERNLAB_CONFIGS"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("KERNLAB_LOCK", str(tmp_path / "kernlab.lock"))
    monkeypatch.delenv("KERNLAB_LOCAL_KERNELS", raising=False)
    (tmp_path / "KERNLAB_CONFIGS" / "base.config").write_text("CONFIG_MODULES=y\n")
    kernel = {"release": "9.9", "compiler": "gcc", "sources": [source],
              "config": {"base": "tinyconfig", "fragments": ["base.config"]}, **entry}
    (tmp_path / "KERNLAB_CONFIGS" / "kernels.yaml").write_text(
        yaml.safe_dump({"kernels": {"9.9": kernel}}))
    return tmp_path


def resolve(base: Path, **opts: Any):
    """Kernel 9.9's source resolved through kernlab's real source code."""
    catalog = load_catalog()
    return resolve_source(catalog.kernel("9.9"), catalog, SourceOptions(**opts), base / "source.log")
