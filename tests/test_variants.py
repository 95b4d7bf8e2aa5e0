"""Kernel variants (VERSION+NAME): the catalog's entries, what a variant build plans, how it
is chosen and named, and what it does to experiments (n/a reasons, config-keyed vars).
No kernel is built here: tests/test_variants_slow.py builds 5.4.286+no-notrace."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.util import hash_inputs
from kernlab.experiments.fit import na_reason, resolve_vars
from kernlab.experiments.suite import load_experiment
from kernlab.kernel.build import BuildOptions, make_plan
from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.selection import choose_kernel, variant_of

ROOT = Path(__file__).resolve().parent.parent
ENTRY = """kernels:
  '6.1':
    release: 6.1.1
    compiler: gcc
    sources:
      - debian: {package: linux-source-6.1}
    config:
      base: tinyconfig
      fragments: [lab.config]
"""


def catalog_with(tmp_path: Path, monkeypatch, variants: str):
    (tmp_path / "lab.config").write_text("CONFIG_MODULES=y\n")
    (tmp_path / "kernels.yaml").write_text(ENTRY + variants)
    monkeypatch.setenv("KERNLAB_CONFIGS", str(tmp_path))
    return load_catalog()


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False)


def test_the_shipped_no_notrace_variant_is_5_4_without_the_thesis_fix():
    spec = load_catalog().kernel("5.4.286+no-notrace")
    assert spec.version == "5.4.286+no-notrace" and spec.base_version == "5.4.286"
    assert spec.release == "5.4.286" and spec.variant is not None
    assert spec.variant.unset == ("KPROBE_EVENTS_ON_NOTRACE",)
    assert "# CONFIG_KPROBE_EVENTS_ON_NOTRACE is not set" in spec.variant.fragment_text()


@pytest.mark.parametrize(("variants", "message"), [
    ("variants:\n  Bad_Name: {unset: [X]}\n", "variants.Bad_Name: 'Bad_Name' is not a variant name"),
    ("variants:\n  v: {unset: [kprobes]}\n", "'kprobes' is not a config option name"),
    ("variants:\n  v: {set: {KASAN: maybe}}\n", "variants.v.set.KASAN: 'maybe' is not a config value"),
    ("variants:\n  v: {unset: [X], kernels: ['9.9']}\n", "variants.v.kernels[0]: '9.9' is not in kernels"),
    ("variants:\n  v: {description: nothing}\n", "variants.v: changes nothing"),
    ("variants:\n  v: {unset: [X], colour: red}\n", "colour"),
])
def test_a_bad_variant_entry_names_its_key(tmp_path, monkeypatch, variants, message):
    with pytest.raises(KernlabError) as caught:
        catalog_with(tmp_path, monkeypatch, variants)
    assert message in str(caught.value) and "kernels.yaml" in str(caught.value)


def test_an_unknown_or_foreign_variant_lists_what_there_is(tmp_path, monkeypatch):
    catalog = catalog_with(tmp_path, monkeypatch, "variants:\n  a: {unset: [X], kernels: ['6.1']}\n"
                                                  "  b: {set: {Y: y}}\n")
    with pytest.raises(NotFound, match=r"unknown variant 'c' of kernel 6.1 \(variants: a, b\)"):
        catalog.kernel("6.1+c")
    with pytest.raises(NotFound, match=r"unknown kernel version '9.9'"):
        catalog.kernel("9.9+a")
    assert catalog.kernel("6.1+b").variant.set == (("Y", "y"),)


def test_a_variant_plans_its_own_fragment_and_key_on_the_base_kernels_pins():
    base, variant = make_plan("5.4.286"), make_plan("5.4.286+no-notrace")
    assert variant.fragments[:-1] == base.fragments
    assert variant.fragments[-1] == variant.variant_fragment
    assert variant.variant_fragment.read_text().endswith("# CONFIG_KPROBE_EVENTS_ON_NOTRACE is not set\n")
    assert [p.name for p in variant.patches] == [p.name for p in base.patches]
    source = "0" * 64
    assert hash_inputs(variant.inputs(source)) != hash_inputs(base.inputs(source))
    assert variant.inputs(source)["version"] == "5.4.286+no-notrace"

    class Source:
        sha256, extra = source, {}

    assert variant.lock_entry(Source()) == base.lock_entry(Source())  # checked against 5.4.286's pins


def test_update_lock_on_a_variant_is_refused():
    with pytest.raises(KernlabError, match=re.escape("5.4.286+no-notrace is a variant; --update-lock")):
        make_plan("5.4.286+no-notrace", BuildOptions(update_lock=True))


def test_an_unbuilt_variant_is_chosen_by_name_and_a_typo_names_the_variants(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNLAB_WORK", str(tmp_path))
    choice = choose_kernel("5.4.286+no-notrace")
    assert (choice.version, choice.release, choice.build) == ("5.4.286+no-notrace", "5.4.286", None)
    assert variant_of("5.4.286+no-notrace").name == "no-notrace" and variant_of("5.4.286") is None
    typo = re.escape("unknown variant 'no-notrac' of kernel 5.4.286 (variants: no-notrace")
    with pytest.raises(NotFound, match=typo):
        choose_kernel("5.4.286+no-notrac")


def test_a_variant_for_other_kernels_is_refused_on_4_15():
    """4.15 predates KPROBE_EVENTS_ON_NOTRACE (4.19): the variant is not made for it."""
    done = invoke("build-kernel", "--version", "4.15+no-notrace", "--plan")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kernlab: error: variant 'no-notrace' is not made for kernel 4.15")


def test_list_kernels_shows_the_variants():
    done = invoke("list-kernels")
    assert done.returncode == 0, done.stderr
    assert "no-notrace: -KPROBE_EVENTS_ON_NOTRACE; kernels: 5.4, 5.4.286" in done.stdout


def test_an_experiment_needing_what_a_variant_unsets_is_n_a_with_the_variant_named():
    readiter = load_experiment("readiter")
    variant = variant_of("5.4.286+no-notrace")
    assert na_reason(readiter, "5.4.286", variant) == \
        "needs CONFIG_KPROBE_EVENTS_ON_NOTRACE, which variant no-notrace unsets"
    assert na_reason(readiter, "5.4.286") == ""
    assert na_reason(load_experiment("notrace"), "5.4.286", variant) == ""


def test_vars_keyed_by_config_win_over_versions_and_an_absent_option_is_n():
    notrace = load_experiment("notrace")
    assert resolve_vars(notrace, "5.4.286", {"KPROBE_EVENTS_ON_NOTRACE": "y"})["VERDICT"] == "accepted"
    assert resolve_vars(notrace, "5.4.286", {"KPROBES": "y"})["VERDICT"] == "refused"
    assert resolve_vars(notrace, "4.15", {})["VERDICT"] == "accepted"  # before 4.19: no such check
    assert resolve_vars(notrace, "5.4.286")["VERDICT"] == "refused"  # no config known: versions only


def test_a_vars_key_that_is_neither_a_version_nor_a_config_value_is_refused(tmp_path, monkeypatch):
    exp = tmp_path / "x"
    exp.mkdir()
    (exp / "experiment.yaml").write_text(
        'title: t\nvars:\n  V: {"CONFIG_X": a}\nrun:\n  steps:\n    - name: s\n      cmd: "true"\n'
        "expect:\n  - in: step:s\n    contains: x\n")
    monkeypatch.setenv("KERNLAB_EXPERIMENTS", str(tmp_path))
    with pytest.raises(KernlabError, match=re.escape("vars.V.CONFIG_X: keys are minimum kernel versions")):
        load_experiment("x")
