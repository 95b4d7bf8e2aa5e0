"""Results bundles: ``<KERNLAB_RESULTS>/<experiment>/<kernel>/<timestamp>/``.

A bundle is created at the start of a run and filled as the run goes: host and
guest command logs under ``logs/``, the trace (``trace.txt`` filtered,
``trace.raw.txt`` as captured), the program output (``output.txt`` and
``steps/<name>.log``), ``console.log``, artifacts, then ``manifest.json`` and,
last, ``result.json``. Every file is written atomically; a bundle whose run failed
or was interrupted still holds what was collected, with the reason.
"""

from __future__ import annotations

import getpass
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlab import __version__
from kernlab.core import paths, registry
from kernlab.core.errors import KernlabError
from kernlab.core.proc import capture
from kernlab.core.records import BuildRecord, ImageRecord, Manifest, VmRecord
from kernlab.core.util import atomic_write_json, atomic_write_text
from kernlab.core.validate import inside_path, plain_name
from kernlab.experiments.expect import Outcome
from kernlab.guest.image import IMAGE
from kernlab.kernel.layers import HEADERS, KERNEL

PASS, FAIL, NA = "PASS", "FAIL", "n/a"


def _timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


@dataclass
class Bundle:
    """One run's directory and what is known about the run so far."""

    dir: Path
    experiment: str
    kernel: str
    started: float = field(default_factory=time.time)
    status: str = FAIL
    reason: str = "run did not finish"
    outcomes: list[Outcome] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    finished: float | None = None

    @classmethod
    def create(cls, experiment: str, kernel: str, root: Path | None = None) -> Bundle:
        for what, name in (("experiment", experiment), ("kernel", kernel)):
            if problem := plain_name(name):
                raise KernlabError(f"cannot name a results bundle after the {what} {name!r}: {problem}",
                                   f"rename the {what}")
        base = (root or paths.results_dir()) / experiment / kernel
        base.mkdir(parents=True, exist_ok=True)
        stamp = _timestamp()
        target, n = base / stamp, 1
        while True:
            try:
                target.mkdir()
                break
            except FileExistsError:
                n += 1
                target = base / f"{stamp}-{n}"
        (target / "logs").mkdir()
        return cls(dir=target, experiment=experiment, kernel=kernel)

    def log(self, name: str) -> Path:
        """Path of a log file in the bundle (``logs/<name>.log``)."""
        return self.dir / "logs" / f"{name}.log"

    def inside(self, rel: str) -> Path:
        """``dir / rel``, refused unless it stays inside the bundle (names come from user files)."""
        problem = inside_path(rel)
        path = self.dir / rel
        if problem is None and not path.resolve().is_relative_to(self.dir.resolve()):
            problem = f"{rel!r} resolves outside the bundle"
        if problem:
            raise KernlabError(f"refusing to write into the bundle: {problem}",
                               "name bundle files (artifacts, steps) with plain relative names")
        return path

    def write(self, rel: str, text: str) -> Path:
        path = self.inside(rel)
        atomic_write_text(path, text)
        return path

    def copy_in(self, src: Path, rel: str) -> Path | None:
        """Copy ``src`` into the bundle (atomically); None if it does not exist."""
        if not src.is_file():
            return None
        dest = self.inside(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return dest

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def skipped(self) -> bool:
        """n/a: the kernel lacks what the experiment needs (``reason`` says what)."""
        return self.status == NA

    def not_applicable(self, reason: str) -> None:
        """Mark the experiment n/a on this kernel: it did not run, for ``reason``."""
        self.status, self.reason = NA, reason

    def fail(self, reason: str) -> None:
        """Mark the run failed; the first reason given is kept."""
        if self.status == PASS or self.reason == "run did not finish":
            self.reason = reason
        self.status = FAIL

    def settle(self) -> None:
        """PASS if every expectation passed and nothing else failed."""
        if self.reason != "run did not finish":
            self.status = FAIL
            return
        failed = [o.name for o in self.outcomes if not o.passed]
        if not self.outcomes:
            self.reason = "no expectation was checked"
        elif failed:
            self.reason = f"{len(failed)} of {len(self.outcomes)} expectations failed: " + \
                "; ".join(failed)
        else:
            self.status, self.reason = PASS, ""

    def result(self) -> dict[str, Any]:
        files = sorted(str(p.relative_to(self.dir)) for p in self.dir.rglob("*")
                       if p.is_file() and p.name != "result.json" and not p.name.startswith("."))
        return {
            "experiment": self.experiment,
            "kernel": self.kernel,
            "status": self.status,
            "passed": self.passed,
            "reason": self.reason,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round((self.finished or time.time()) - self.started, 2),
            "expectations": [o.to_json() for o in self.outcomes],
            **self.facts,
            "files": files,
        }

    def finish(self, manifest: Manifest) -> None:
        """Write manifest.json, then result.json (last: its presence means complete)."""
        self.finished = time.time()
        atomic_write_json(self.dir / "manifest.json", manifest.to_json())
        atomic_write_json(self.dir / "result.json", self.result())


def host_facts() -> dict[str, Any]:
    uname = platform.uname()
    return {"hostname": uname.node, "system": uname.system, "release": uname.release,
            "machine": uname.machine, "cpus": os.cpu_count(), "user": getpass.getuser(),
            "python": sys.version.split()[0]}


def tool_versions() -> dict[str, str]:
    """Versions of the host tools a run depends on (first line of --version)."""
    def first(cmd: list[str]) -> str:
        out = capture(cmd)
        return out.splitlines()[0] if out else "absent"

    import fabric
    import invoke
    import paramiko

    return {
        "kernlab": __version__,
        "qemu": first(["qemu-system-x86_64", "--version"]),
        "clang": first(["clang", "--version"]),
        "gcc": first(["gcc", "--version"]),
        "fabric": fabric.__version__, "invoke": invoke.__version__,
        "paramiko": paramiko.__version__,
        "libbpf": first(["pkg-config", "--modversion", "libbpf"]),
    }


KINDS = {"kernel": KERNEL, "kheaders": HEADERS, "image": IMAGE}  # what a manifest names digests of


def manifest(*, experiment: dict[str, Any], build: BuildRecord | None, image: ImageRecord | None,
             vm: VmRecord | None, guest: dict | None, variables: dict[str, str]) -> Manifest:
    """``manifest.json``: the records the run used, nested as their JSON objects (the VM's
    without its QEMU command line)."""
    return Manifest.from_json({
        "experiment": experiment,
        "variables": variables,
        "build": build.to_json() if build is not None else None,
        "image": image.to_json() if image is not None else None,
        "kheaders": vm.kheaders if vm is not None else None,  # the guest's kernel headers disk
        # the registry manifests (digests) of those, when pulled or pushed here: `reproduce` pulls them
        "artifacts": registry.bundle_digests(KINDS, build, image, vm.kheaders if vm is not None else None),
        "vm": {k: v for k, v in vm.to_json().items() if k != "argv"} if vm is not None else None,
        "guest": guest,
        "versions": tool_versions(),
        "host": host_facts(),
    })


def latest_bundle(experiment: str, kernel: str, root: Path | None = None) -> Path | None:
    """The newest complete bundle of ``experiment`` on ``kernel`` (has result.json)."""
    base = (root or paths.results_dir()) / experiment / kernel
    done = sorted(p.parent for p in base.glob("*/result.json"))
    return done[-1] if done else None


# ---------------------------------------------------------------- histograms
HIST_RANGE = r"^\[([^,\]]+), ([^)\]]+)\)\s+(\d+)\s*\|"
HIST_SINGLE = r"^\[([^,\]]+)\]\s+(\d+)\s*\|"


def parse_hist(text: str) -> list[dict[str, Any]]:
    """bpftrace ``hist()`` output as [{name, buckets: [{low, high, count}]}]."""
    import re

    maps: list[dict[str, Any]] = []
    for line in text.splitlines():
        header = re.match(r"^(@\w*)(\[.*\])?:\s*$", line)
        if header:
            maps.append({"name": header.group(1) + (header.group(2) or ""), "buckets": []})
            continue
        ranged = re.match(HIST_RANGE, line)
        single = re.match(HIST_SINGLE, line)
        if not maps or not (ranged or single):
            continue
        if ranged:
            low, high, count = ranged.groups()
        else:
            low, count = single.groups()
            high = low
        maps[-1]["buckets"].append({"low": low, "high": high, "count": int(count)})
    return [m for m in maps if m["buckets"]]


def hist_svg(hist: dict[str, Any], width: int = 640) -> str:
    """A plain SVG bar chart of one histogram (one row per bucket)."""
    from html import escape

    buckets = hist["buckets"]
    top = max((b["count"] for b in buckets), default=0) or 1
    row, label_w, bar_w = 18, 130, width - 200
    height = row * (len(buckets) + 2)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="monospace" font-size="12">',
             f'<text x="4" y="14">{escape(hist["name"])}</text>']
    for i, bucket in enumerate(buckets):
        y = row * (i + 1) + 4
        length = int(bar_w * bucket["count"] / top)
        label = f'[{bucket["low"]}, {bucket["high"]})' if bucket["low"] != bucket["high"] \
            else f'[{bucket["low"]}]'
        parts += [f'<text x="4" y="{y + 12}">{escape(label)}</text>',
                  f'<rect x="{label_w}" y="{y}" width="{length}" height="{row - 4}" '
                  f'fill="#4a7ab5"/>',
                  f'<text x="{label_w + length + 4}" y="{y + 12}">{bucket["count"]}</text>']
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
