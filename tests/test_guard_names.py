"""No name read from a file becomes a path unchecked, through the real CLI (issue 22, 22b).

matrix.json (`matrix --merge`, `--rerender`, a host's fetched run), a bundle's manifest
(`pack`) and a pack's pack.json (`reproduce PACK`) name experiments, kernels, bundles and
recipes that kernlab turns into folders: each name must be one plain path component, as
an experiment's artifact names already must. And `reproduce PACK` unpacks by the pack's
content, not its file name: a pack named like an earlier (damaged or other) one is its own.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_bad_input import isolated_env, run_cli, snapshot
from test_pack import bundle  # noqa: F401  (the fixture: a bundle of hellotrace on a tarball kernel 9.9)

from kernlab.artifacts.pack import SUFFIX, pack_bundle
from kernlab.compare.matrix import ERROR, Matrix, _add_host_cells

ESCAPE = "../../../../escaped-exp"


def one_error_line(done) -> str:
    """The run's one `kernlab: error:` line (its last line on stderr), no traceback."""
    shown = f"exit {done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode != 0, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kernlab: error:") and "kernlab bug" not in last, shown
    return last


def a_run(folder: Path, kernel: str, experiment: str, bundle_name: str = "20260101T000000Z") -> Path:
    """An earlier matrix run's --out: matrix.json naming ``experiment``, with its bundle."""
    bundle_dir = folder / "bundles" / bundle_name
    bundle_dir.mkdir(parents=True)
    (bundle_dir / "result.json").write_text(json.dumps({"status": "PASS"}))
    (folder / "matrix.json").write_text(json.dumps({
        "kernels": [kernel], "experiments": [experiment],
        "cells": [{"kernel": kernel, "experiment": experiment, "status": "PASS", "reason": "",
                   "bundle": str(bundle_dir)}]}))
    return folder


@pytest.mark.parametrize(("kernel", "experiment", "words"), [
    ("6.1", ESCAPE, f"'experiments' holds '{ESCAPE}' is not a plain name"),
    ("../../k", "readiter", "'kernels' holds '../../k' is not a plain name"),
    ("6.1", "/tmp/abs", "'experiments' holds '/tmp/abs' is not a plain name"),
])
def test_merge_refuses_a_name_that_would_leave_out(tmp_path: Path, kernel: str, experiment: str,
                                                    words: str) -> None:
    """Worst case 2: the merge wrote OUT/bundles/../../../../escaped-exp outside --out, exit 0."""
    a_run(tmp_path / "runs" / "a" / "b" / "c", kernel, experiment)
    before = snapshot(tmp_path)
    done = run_cli(["matrix", "--merge", "runs/a/b/c", "--out", "runs/a/b/c/merged"], tmp_path,
                   isolated_env(tmp_path))
    assert words in one_error_line(done)
    assert snapshot(tmp_path) == before  # nothing written anywhere, --out not even made


def test_rerender_refuses_the_same_names(tmp_path: Path) -> None:
    a_run(tmp_path / "report", "6.1", ESCAPE)
    done = run_cli(["matrix", "--rerender", "--out", "report"], tmp_path, isolated_env(tmp_path))
    assert "is not a plain name" in one_error_line(done)


def test_merge_refuses_a_bundle_folder_named_dot_dot(tmp_path: Path) -> None:
    run = a_run(tmp_path / "run", "6.1", "readiter")
    data = json.loads((run / "matrix.json").read_text())
    data["cells"][0]["bundle"] = str(run / "bundles" / "..")
    (run / "matrix.json").write_text(json.dumps(data))
    done = run_cli(["matrix", "--merge", "run", "--out", "merged"], tmp_path, isolated_env(tmp_path))
    assert "the bundle's folder name '..' is not a plain name" in one_error_line(done)


def test_merge_copies_only_results_bundles(tmp_path: Path) -> None:
    """A cell whose bundle is any folder (here the whole run directory's parent) is named,
    not copied into the merged report."""
    run = a_run(tmp_path / "run", "6.1", "readiter")
    data = json.loads((run / "matrix.json").read_text())
    (tmp_path / "elsewhere" / "big").mkdir(parents=True)
    data["cells"][0]["bundle"] = str(tmp_path / "elsewhere")
    (run / "matrix.json").write_text(json.dumps(data))
    done = run_cli(["matrix", "--merge", "run", "--out", "merged"], tmp_path, isolated_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "is not a results bundle (no result.json); not copied" in done.stderr
    assert not (tmp_path / "merged" / "bundles").exists()


def test_a_hosts_damaged_matrix_json_reports_no_cell() -> None:
    """A host's fetched matrix.json is checked like a local one: a name that is a path makes
    every cell of that host ERROR naming the damage (its names never become report files)."""
    matrix = Matrix(["6.1"], ["readiter"])
    run = SimpleNamespace(
        kernels=["6.1"], remote_out="/srv/run", local_dir=Path("/nonexistent"), error="", log="h.log",
        host=SimpleNamespace(name="lab2"),
        matrix={"kernels": ["6.1"], "experiments": [ESCAPE],
                "cells": [{"kernel": "6.1", "experiment": ESCAPE, "status": "PASS", "bundle": None}]})
    _add_host_cells(matrix, run, ["readiter"])
    assert list(matrix.cells) == [("6.1", "readiter")]
    cell = matrix.cells[("6.1", "readiter")]
    assert cell.status == ERROR and "lab2: its matrix.json is damaged" in cell.reason


def test_pack_refuses_a_manifest_whose_experiment_name_is_a_path(bundle, tmp_path: Path) -> None:  # noqa: F811
    folder, _, _ = bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["experiment"]["name"] = "../../../outside"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    env = {**isolated_env(tmp_path), **{name: str(tmp_path / name) for name in
                                        ("KERNLAB_CACHE", "KERNLAB_WORK", "KERNLAB_STATE", "KERNLAB_RESULTS",
                                         "KERNLAB_CONFIGS")}, "KERNLAB_LOCK": str(tmp_path / "kernlab.lock")}
    done = run_cli(["pack", str(folder)], tmp_path, env)
    assert "its experiment '../../../outside' is not a plain name" in one_error_line(done)
    assert not list(tmp_path.rglob(f"*{SUFFIX}"))


def _damaged_copy(pack: Path, into: Path) -> Path:
    """The same file name, one packed download's bytes changed (its sha256 no longer matches)."""
    into.mkdir(parents=True)
    damaged = into / pack.name
    with tarfile.open(pack) as source, tarfile.open(damaged, "w") as out:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if data is not None and member.name.startswith("cache/downloads/"):
                data = b"x" + data[1:]
            out.addfile(member, None if data is None else __import__("io").BytesIO(data))
    return damaged


def test_reproduce_pack_unpacks_by_content_not_file_name(bundle, tmp_path: Path) -> None:  # noqa: F811
    """Worst case 5: a good pack named like an earlier damaged one was called damaged (its
    unpacked copy was found by file name); now each pack content has its own folder."""
    folder, _, _ = bundle
    good = pack_bundle(folder, tmp_path / "good" / f"p{SUFFIX}")
    damaged = _damaged_copy(good, tmp_path / "bad")
    env = {**isolated_env(tmp_path), "KERNLAB_MIRROR": "http://127.0.0.1:9"}
    first = run_cli(["reproduce", str(damaged)], tmp_path, env)
    assert "does not match its sha256; the pack is damaged" in one_error_line(first)
    second = run_cli(["reproduce", str(good)], tmp_path, env)
    assert "damaged" not in second.stdout + second.stderr, second.stderr
    unpacked = sorted(p.name for p in (tmp_path / "state" / "packs").iterdir() if not p.name.startswith("."))
    assert len(unpacked) == 2  # one folder per content, whatever the file names
    shutil.rmtree(tmp_path / "state" / "packs")


def test_reproduce_pack_refuses_a_recipe_that_is_a_path(bundle, tmp_path: Path) -> None:  # noqa: F811
    folder, _, _ = bundle
    good = pack_bundle(folder, tmp_path / "good" / f"p{SUFFIX}")
    odd = tmp_path / "odd" / good.name
    odd.parent.mkdir()
    with tarfile.open(good) as source, tarfile.open(odd, "w") as out:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name == "pack.json":
                index = json.loads(data)
                index["image"] = {"recipe": "../../../etc/evil", "debs": True}
                data = json.dumps(index).encode()
                member.size = len(data)
            out.addfile(member, None if data is None else __import__("io").BytesIO(data))
    done = run_cli(["reproduce", str(odd)], tmp_path, isolated_env(tmp_path))
    assert "pack.json's image recipe '../../../etc/evil' is not a plain name" in one_error_line(done)
