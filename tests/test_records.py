"""Stage records read today's JSON files and give them back unchanged, with named properties.

The files under tests/data/records/ are real records (a 4.15 and a 6.1 build, the bookworm
image, a hellotrace result) copied from a kernlab checkout, and a vm.json in the shape
``vm._record`` writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kernlab.core.records import BuildRecord, ImageRecord, RunResult, VmRecord
from kernlab.core.util import atomic_write_json

DATA = Path(__file__).resolve().parent / "data" / "records"
CASES = [("build-4.15.json", BuildRecord), ("build-6.1.json", BuildRecord),
         ("image-bookworm.json", ImageRecord), ("vm-default.json", VmRecord),
         ("result-hellotrace.json", RunResult)]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_a_record_round_trips_unchanged(tmp_path, name, kind):
    copied = shutil.copy(DATA / name, tmp_path / name)
    record = kind.load(Path(copied))
    assert record.to_json() == json.loads((DATA / name).read_text())
    again = tmp_path / "again.json"
    atomic_write_json(again, record.to_json())
    first = tmp_path / "first.json"
    atomic_write_json(first, json.loads((DATA / name).read_text()))
    assert again.read_bytes() == first.read_bytes()


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_a_record_is_frozen_and_its_json_a_copy(name, kind):
    record = kind.load(DATA / name)
    with pytest.raises(AttributeError):
        record.data = {}
    record.to_json()["key"] = "changed"
    assert record.to_json().get("key") != "changed"


def test_a_build_names_its_outputs():
    build = BuildRecord.load(DATA / "build-6.1.json")
    raw = json.loads((DATA / "build-6.1.json").read_text())
    assert (build.version, build.id, build.kernelrelease) == ("6.1", "6.1-80265ebe7847", "6.1.176-kernlab")
    assert build.bzimage == Path(raw["outputs"]["bzImage"]["path"])
    assert build.system_map == Path(raw["outputs"]["System.map"]["path"])
    assert build.output_sha256("bzImage") == raw["outputs"]["bzImage"]["sha256"]
    assert build.key == raw["key"] and build.build_dir == Path(raw["build_dir"])


def test_an_image_names_its_disk_and_packages():
    image = ImageRecord.load(DATA / "image-bookworm.json")
    raw = json.loads((DATA / "image-bookworm.json").read_text())
    assert image.recipe == "bookworm" and image.disk == Path(raw["image"]["path"])
    assert image.packages == dict(p.split("=", 1) for p in raw["packages"]) and image.packages
    assert image.host_key_pub.startswith("ssh-ed25519 ")


def test_a_vm_and_a_result_name_their_fields():
    vm = VmRecord.load(DATA / "vm-default.json")
    assert (vm.name, vm.pid, vm.ssh_port, vm.accel) == ("default", 4242, 10022, "tcg")
    result = RunResult.load(DATA / "result-hellotrace.json")
    assert (result.experiment, result.kernel) == ("hellotrace", "4.15")
    assert (result.status, result.passed) == ("PASS", True)
