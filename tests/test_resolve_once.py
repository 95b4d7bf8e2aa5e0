"""A command resolves its kernel once: one catalog load and one build plan per run-experiment.

The build is a tiny fake (tests/test_kernel_select.py's, made with today's catalog recipe), the
image a record of a small file; the guest part of the run (VM, SSH) is replaced by a function
that writes the bundle, since what is counted is how the command finds its kernel.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from test_kernel_select import fake_build

from kernlab.core.records import ImageRecord, Manifest
from kernlab.core.util import atomic_write_json, sha256_file
from kernlab.experiments import bundle as bundles
from kernlab.experiments import run as run_module
from kernlab.guest import ensure
from kernlab.kernel import build, catalog

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Calls of load_catalog and make_plan, wherever a kernlab module or tasks.py holds them."""
    calls: Counter = Counter()
    for name, original in (("load_catalog", catalog.load_catalog), ("make_plan", build.make_plan)):
        def wrapper(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith(("kernlab", "tasks")) \
                    and getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for area in ("WORK", "STATE", "RESULTS"):
        monkeypatch.setenv(f"KERNLAB_{area}", str(tmp_path / area.lower()))
    plan = build.make_plan("6.1")
    record = fake_build(tmp_path / "work", "6.1", "a" * 64, release=plan.spec.release)
    record["patches"] = [p.record() for p in plan.patches]
    record["fragments"] = [{"path": str(f), "sha256": sha256_file(f)} for f in plan.fragments]
    atomic_write_json(Path(record["build_dir"]) / "build.json", record)
    disk = tmp_path / "disk.qcow2"
    disk.write_text("disk")
    image = ImageRecord.from_json({"recipe": "bookworm", "key": "b" * 64, "packages": [],
                                   "image": {"path": str(disk), "sha256": "c" * 64}})
    monkeypatch.setattr(ensure, "build_image", lambda recipe: image)
    monkeypatch.setattr(bundles, "tool_versions", dict)

    def guest_part(exp, session, root=None):
        session.kernel_and_image()
        made = bundles.Bundle.create(exp.name, session.version, root)
        made.status, made.reason = bundles.PASS, ""
        made.finish(Manifest.from_json({}))
        return made

    monkeypatch.setattr(run_module, "run_in_session", guest_part)
    return tmp_path


@pytest.mark.parametrize("kernel", ["6.1", None])
def test_a_run_loads_the_catalog_once_and_plans_once(lab, counted, capsys, kernel):
    import invoke

    import tasks

    tasks.run_experiment.body(invoke.Context(), "readiter", kernel=kernel)
    assert capsys.readouterr().out.strip().endswith("PASS")
    assert counted == {"load_catalog": 1, "make_plan": 1}


def test_a_run_on_a_build_id_plans_once_to_say_whether_it_is_stale(lab, counted, capsys):
    import invoke

    import tasks

    tasks.run_experiment.body(invoke.Context(), "readiter", kernel="6.1-" + "a" * 12)
    assert capsys.readouterr().out.strip().endswith("PASS")
    assert counted == {"load_catalog": 1, "make_plan": 1}
