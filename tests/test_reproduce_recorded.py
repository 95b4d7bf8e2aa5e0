"""`invoke reproduce` reruns the experiment its bundle recorded, found by content hash.

Bundles are written here the way run_in_session writes them (the experiment's origin in
manifest.json, its folder and _lib copied into ``experiment/``); the suite is a tmp folder
(KERNLAB_EXPERIMENTS) holding a ``readiter`` of its own. Nothing is built or booted: what is
checked is which folder reproduce would rerun, the part that used to go by name.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from kernlab.compare.reproduce import bundle_experiment
from kernlab.core.errors import NotFound
from kernlab.core.records import Manifest
from kernlab.experiments.run import COPY_DIR
from kernlab.experiments.suite import load_experiment, load_path

EXPERIMENT = """\
title: read a file
description: the suite's
run:
  steps:
    - {name: workload, cmd: echo hello}
expect:
  - {in: "step:workload", contains: hello}
"""
MORE = '  - {in: "step:workload", contains: hel}\n'


@pytest.fixture
def suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "suite"
    (folder / "readiter").mkdir(parents=True)
    (folder / "readiter" / "experiment.yaml").write_text(EXPERIMENT)
    (folder / "_lib").mkdir()
    (folder / "_lib" / "common.h").write_text("/* shared */\n")
    monkeypatch.setenv("KERNLAB_EXPERIMENTS", str(folder))
    monkeypatch.delenv("KERNLAB_EXPERIMENT_PATH", raising=False)
    return folder


def run_bundle(exp_folder: Path, results: Path) -> Path:
    """A bundle of the experiment in ``exp_folder`` as run_in_session leaves it."""
    exp = load_path(exp_folder)
    bundle = results / exp.name / "6.1" / "20260101T000000Z"
    bundle.mkdir(parents=True)
    exp.copy_to(bundle / COPY_DIR)
    experiment = {"name": exp.name, "title": exp.title, **exp.origin(), "copy": f"{COPY_DIR}/{exp.name}"}
    (bundle / "manifest.json").write_text(json.dumps({"experiment": experiment, "build": None}))
    return bundle


def mine(tmp_path: Path, name: str) -> Path:
    """A copy of the suite's readiter elsewhere, with one more expectation."""
    folder = tmp_path / "mine" / name
    folder.mkdir(parents=True)
    (folder / "experiment.yaml").write_text(EXPERIMENT.replace("the suite's", "mine") + MORE)
    return folder


def test_a_path_run_experiment_reproduces_itself_not_the_suites_namesake(suite, tmp_path):
    folder = mine(tmp_path, "readiter")
    bundle = run_bundle(folder, tmp_path / "results")
    manifest = Manifest.of(bundle)

    exp, same = bundle_experiment(bundle, manifest, [])
    assert same and exp.dir == folder.resolve()
    assert len(exp.expectations) == len(load_experiment("readiter").expectations) + 1

    # the folder changes afterwards: the bundle's own copy is what ran, so it reruns
    (folder / "experiment.yaml").write_text(EXPERIMENT.replace("the suite's", "edited"))
    exp, same = bundle_experiment(bundle, manifest, [])
    assert same and exp.dir == bundle / COPY_DIR / "readiter" and len(exp.expectations) == 2
    assert exp.content_hash() == manifest.experiment_hash


def test_an_experiment_not_in_the_suite_reproduces_from_the_bundles_copy(suite, tmp_path):
    folder = mine(tmp_path, "myprobe")
    bundle = run_bundle(folder, tmp_path / "results")
    shutil.rmtree(folder)  # run by path from a folder since removed; no suite experiment has its name

    exp, same = bundle_experiment(bundle, Manifest.of(bundle), [])
    assert same and exp.name == "myprobe" and exp.dir == bundle / COPY_DIR / "myprobe"


def test_without_folder_or_copy_the_suites_namesake_is_not_taken(suite, tmp_path):
    """A bundle without a copy (made before copies) whose folder is gone: the suite's
    readiter has the name but not the hash, so reproduce stops instead of rerunning it."""
    folder = mine(tmp_path, "readiter")
    bundle = run_bundle(folder, tmp_path / "results")
    shutil.rmtree(bundle / COPY_DIR)
    shutil.rmtree(folder)
    with pytest.raises(NotFound, match=r"experiment readiter is gone from .* the bundle keeps no copy"):
        bundle_experiment(bundle, Manifest.of(bundle), [])


def test_an_old_manifest_naming_only_name_and_hash_finds_the_same_suite_experiment(suite, tmp_path):
    """Manifests from before recorded folders: the suite's folder of that name, when its hash matches."""
    exp = load_experiment("readiter")
    bundle = tmp_path / "old"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps(
        {"experiment": {"name": "readiter", "hash": exp.content_hash()}}))
    found, same = bundle_experiment(bundle, Manifest.of(bundle), [])
    assert same and found.dir == suite / "readiter"
    (suite / "readiter" / "experiment.yaml").write_text(textwrap.dedent(EXPERIMENT) + MORE)
    with pytest.raises(NotFound):
        bundle_experiment(bundle, Manifest.of(bundle), [])
