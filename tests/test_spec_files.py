"""Every YAML file kernlab reads refuses an unknown key, and a syntax error, the same way.

The five file kinds (the kernel catalog, an experiment.yaml, a hosts file, an image
recipe, the recipe inside a pack) go through kernlab.core.spec; each case runs the real
command on a damaged copy and checks the one error line's shape:
``kernlab: error: <file>: unknown key 'K' in <where> (did you mean 'M'?); allowed: a, b``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_bad_input import ROOT, base_spec, experiments, host, hosts_file, isolated_env, run_cli

UNKNOWN = re.compile(r"^kernlab: error: (?P<file>\S+): unknown key '(?P<key>[^']+)' in (?P<where>.+?)"
                     r"(?: \(did you mean '(?P<close>[^']+)'\?\))?; allowed: (?P<allowed>[\w, ]+)$")
SYNTAX = re.compile(r"^kernlab: error: (?P<file>\S+):(?P<line>\d+):\d+: not valid YAML: .+; .+$")


def catalog_with(change: Callable[[dict], None] | None, raw: str = "") -> Callable[[Path], dict]:
    def setup(tmp: Path) -> dict:
        shutil.copytree(ROOT / "configs", tmp / "configs")
        path = tmp / "configs" / "kernels.yaml"
        data = yaml.safe_load(path.read_text())
        if change:
            change(data)
        path.write_text(raw or yaml.safe_dump(data))
        return {"KERNLAB_CONFIGS": str(tmp / "configs")}
    return setup


def recipe_root(tmp: Path, change: Callable[[dict], None] | None, raw: str = "") -> Path:
    """A copy of the project's vm/ under tmp/root, its bookworm recipe changed."""
    shutil.copytree(ROOT / "vm", tmp / "root" / "vm")
    path = tmp / "root" / "vm" / "bookworm.yaml"
    data = yaml.safe_load(path.read_text())
    if change:
        change(data)
    path.write_text(raw or yaml.safe_dump(data))
    return tmp / "root"


def recipe_with(change: Callable[[dict], None] | None, raw: str = "") -> Callable[[Path], dict]:
    def setup(tmp: Path) -> dict:
        return {"KERNLAB_ROOT": str(recipe_root(tmp, change, raw))}
    return setup


def pack_with(change: Callable[[dict], None]) -> Callable[[Path], dict]:
    """tmp/x.kernlab-pack.tar: a pack index, a catalog and a recipe; the recipe changed."""
    def setup(tmp: Path) -> dict:
        content = tmp / "content"
        recipe_root(content, change)
        shutil.copytree(ROOT / "configs", content / "root" / "configs")
        (content / "debs").mkdir()
        (content / "pack.json").write_text(json.dumps(
            {"format": 1, "image": {"recipe": "bookworm", "debs": ["x.deb"]}}))
        with tarfile.open(tmp / "x.kernlab-pack.tar", "w") as tar:
            for item in sorted(content.iterdir()):
                tar.add(item, arcname=item.name)
        shutil.rmtree(content)
        return {}
    return setup


def add(key: str, where: Callable[[dict], dict] = lambda d: d) -> Callable[[dict], None]:
    return lambda data: where(data).update({key: 1})


MATRIX = ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"]
CASES = {  # kind: (command, setup, file, key, where, close match)
    "catalog": (["list-kernels"], catalog_with(add("releas", lambda d: d["kernels"]["6.1"])),
                "configs/kernels.yaml", "releas", "kernels.6.1", "release"),
    "experiment": (["run-experiment", "t", "--kernel", "6.1"],
                   experiments({**base_spec(), "colour": "red"}),
                   "experiments/t/experiment.yaml", "colour", "the top level", None),
    "hosts": (MATRIX, hosts_file({"hosts": [host(adress="x")]}), "hosts.yaml", "adress", "host lab2",
              "address"),
    "recipe": (["build-image"], recipe_with(add("packges")), "root/vm/bookworm.yaml", "packges",
               "the top level", "packages"),
    "pack": (["reproduce", "x.kernlab-pack.tar"], pack_with(add("mirorr")),
             "state/packs/*/root/vm/bookworm.yaml", "mirorr", "the top level", "mirror"),  # *: its sha256
}


def error_line(args: list[str], setup: Callable[[Path], dict], tmp: Path) -> str:
    env = isolated_env(tmp)
    env.update(setup(tmp))
    done = run_cli(args, tmp, env)
    shown = f"exit {done.returncode}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode != 0 and "Traceback" not in done.stderr, shown
    errors = [line for line in done.stderr.splitlines() if line.startswith("kernlab: error:")]
    assert len(errors) == 1, shown
    return errors[0]


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_yaml_file_refuses_an_unknown_key_the_same_way(kind: str, tmp_path: Path) -> None:
    args, setup, file, key, where, close = CASES[kind]
    line = error_line(args, setup, tmp_path)
    match = UNKNOWN.match(line)
    assert match, line
    assert fnmatch.fnmatch(str(tmp_path / match["file"]), str(tmp_path / file)), line  # as given: relative
    # to the cwd, or whole
    assert (match["key"], match["where"], match["close"]) == (key, where, close), line
    assert key not in match["allowed"].split(", "), line


SYNTAX_CASES = {
    "catalog": (["list-kernels"], catalog_with(None, "default: 6.1\nkernels: [\n"), "configs/kernels.yaml"),
    "experiment": (["run-experiment", "t", "--kernel", "6.1"], experiments("title: t\nrun: [\n"),
                   "experiments/t/experiment.yaml"),
    "hosts": (MATRIX, hosts_file(None, raw="hosts:\n  - name: [lab2\n"), "hosts.yaml"),
    "recipe": (["build-image"], recipe_with(None, "suite: bookworm\npackages: {\n"), "root/vm/bookworm.yaml"),
}


@pytest.mark.parametrize("kind", sorted(SYNTAX_CASES))
def test_a_yaml_syntax_error_names_file_and_line(kind: str, tmp_path: Path) -> None:
    args, setup, file = SYNTAX_CASES[kind]
    line = error_line(args, setup, tmp_path)
    match = SYNTAX.match(line)
    assert match and tmp_path / match["file"] == tmp_path / file, line
    assert int(match["line"]) >= 2, line  # the broken line, not the start of the file
