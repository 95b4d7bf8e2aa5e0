"""A suite on one kernel: every experiment (or the ones named) triaged (n/a, broken, to run),
the runnable ones in lanes of VMs side by side, a bundle each; the suite's summary table."""

from __future__ import annotations

from pathlib import Path

from kernlab.core import interrupt, paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.experiments.bundle import Bundle, manifest
from kernlab.experiments.fit import na_reason
from kernlab.experiments.lanes import lane_count, last_seconds, longest_first, run_lanes
from kernlab.experiments.run import run_in_session, run_manifest
from kernlab.experiments.session import Session
from kernlab.experiments.spec import Experiment
from kernlab.experiments.suite import check_known, experiment_names, load_experiment
from kernlab.guest.ensure import Target, VmRefused
from kernlab.guest.vm import claim_free, find_vm
from kernlab.kernel.selection import choose_kernel, variant_of
from kernlab.kernel.variant import VariantSpec


def whole_suite(name: str | None, all_: bool, lanes: int | str | None) -> bool:
    """Whether `run-experiment` runs the whole suite (``--all``) or the experiment ``name``;
    the flags that do not go together are refused here."""
    if all_ and name:
        raise KernlabError(f"both an experiment ({name}) and --all given", "give one or the other")
    if lanes is not None and not all_:
        raise KernlabError("--lanes runs a suite's experiments side by side; one experiment "
                           "has one lane", "add --all, or drop --lanes")
    if not all_ and not name:
        raise KernlabError("no experiment named", "give one (invoke list-experiments) or --all")
    return all_


def run_suite(names: list[str] | None, kernel: str | None = None, keep_vm: bool = False,
              vm_name: str = "default", root: Path | None = None,
              flag: str = "--kernel", lanes: int | str | None = None) -> list[Bundle]:
    """Run several experiments (None: all of them) on one kernel; a bundle each, in order.

    An experiment the kernel cannot run gets an n/a bundle with the reason; one that
    fails, whose needs are unmet or whose experiment.yaml is invalid gets a FAIL bundle;
    none of them stops the others. Only an unknown name or kernel stops it, before any work.
    The others run in ``lanes`` parallel VMs (kernlab.experiments.lanes.lane_count: ``--lanes``,
    else KERNLAB_LANES, else its default), lane 1 on VM ``vm_name``.
    """
    names = experiment_names() if names is None else names
    if not names:
        raise KernlabError(f"no experiment ran: {paths.experiments_dir()} holds none",
                           "add one (see experiments/README.md) or set KERNLAB_EXPERIMENTS")
    check_known(names)
    lane_count(lanes, 1)  # a bad --lanes or KERNLAB_LANES stops it before any work
    choice = choose_kernel(kernel or None)
    session = Session(choice.asked, keep_vm=keep_vm, vm_name=vm_name, choice=choice, flag=flag)
    with interrupt.scope():
        try:
            variant = variant_of(session.version)  # the catalog read once, not per experiment
            triaged = {name: _triage(name, session, root, variant) for name in names}
            to_run = {name: t for name, t in triaged.items() if isinstance(t, Experiment)}
            count = lane_count(lanes, len(to_run))
            ran = dict(zip(to_run, _run_in_lanes(list(to_run.values()), session, root, count),
                           strict=True))
        finally:
            session.close()
    return [ran.get(name, triaged[name]) for name in triaged]


def _triage(name: str, session: Session, root: Path | None,
            variant: VariantSpec | None = None) -> Experiment | Bundle:
    """The experiment to run, or already its bundle: n/a with the reason, or FAIL when its
    experiment.yaml does not load. Never raises KernlabError."""
    try:
        exp = load_experiment(name)
        reason = na_reason(exp, session.release, variant)
    except KernlabError as error:
        reporter().warn(f"{name}: {error.one_line()}")
        return _error_bundle(name, error, session, root)
    if reason:
        reporter().note(f"{name}: n/a: {reason}")
        return not_applicable_bundle(exp, session, reason, root)
    return exp


def _run_in_lanes(experiments: list[Experiment], session: Session, root: Path | None,
                  count: int) -> list[Bundle]:
    """Each experiment in one of ``count`` VMs (lane 1: the session's), longest first."""
    if count > 1:
        try:
            with reporter().step(f"VM {session.vm_name}, then {count - 1} more restored beside it"):
                session.ensure.up()  # lane 1 first: a cold boot saves the snapshot the others restore
        except KernlabError as error:
            reporter().warn(f"lanes: VM {session.vm_name} did not start ({error.one_line()}); "
                            "running the experiments one at a time")
            count = 1
    sessions = [session, *(_lane_session(session, n) for n in range(2, count + 1))]
    results = results_root() if root is None else root
    ordered = longest_first(experiments, lambda e: last_seconds(results, e.name, session.version))

    def run_one(exp: Experiment, lane: Session) -> Bundle:
        with reporter().step(f"experiment {exp.name}" + (f" (VM {lane.vm_name})" if count > 1 else "")):
            return _run_or_record(exp, lane, root)

    try:
        return run_lanes(ordered, sessions, run_one)
    finally:
        for lane in sessions[1:]:
            lane.close()


def _lane_session(session: Session, number: int) -> Session:
    """Lane ``number``'s session: the same kernel and image on VM ``<vm_name>-l<number>``, which
    it starts and always stops at the end (one left by a killed run is stopped first); when
another command holds that name, the first free ``<vm_name>-l<number>-N`` (vm.claim_free)."""
    build, image = session.kernel_and_image()
    name = claim_free(f"{session.vm_name[:28]}-l{number}")  # never a lane VM another command uses
    stale = find_vm(name)
    if stale is not None:
        reporter().note(f"VM {name} was left by an earlier run: stopping it")
        stale.stop()
    target = Target(session.chosen, session.recipe, name, session.flag, build=build, image=image,
                    claimed=True)  # its close() lets go of the name
    return Session(session.kernel, vm_name=name, recipe=session.recipe, choice=session.chosen,
                   flag=session.flag, target=target)


def _error_bundle(name: str, error: KernlabError, session: Session, root: Path | None) -> Bundle:
    """A FAIL bundle for an experiment that could not even be loaded."""
    bundle = Bundle.create(name, session.version, root)
    bundle.fail(error.one_line())
    bundle.finish(manifest(experiment={"name": name}, build=session.build, image=session.image,
                           vm=None, guest=None, variables={}))
    return bundle


def not_applicable_bundle(exp: Experiment, session: Session, reason: str,
                          root: Path | None) -> Bundle:
    """A bundle that records why ``exp`` did not run on this kernel (status n/a)."""
    bundle = Bundle.create(exp.name, session.version, root)
    bundle.not_applicable(reason)
    bundle.finish(run_manifest(exp, session, bundle))
    return bundle


def _run_or_record(exp: Experiment, session: Session, root: Path | None) -> Bundle:
    """In a suite, an unmet requirement becomes a failed bundle instead of stopping it."""
    try:
        return run_in_session(exp, session, root)
    except VmRefused:
        raise  # the same for every experiment: the suite stops, with the one line
    except KernlabError as error:
        bundle = Bundle.create(exp.name, session.version, root)
        bundle.fail(error.one_line())
        bundle.finish(run_manifest(exp, session, bundle))
        return bundle


def summary_table(bundles: list[Bundle]) -> str:
    """The suite's table (a whole one-line reason for each that did not pass), and a count."""
    rows = [("experiment", "result", "seconds", "reason / bundle")]
    for b in bundles:
        res = b.result()
        rows.append((b.experiment, b.status, f"{res['seconds']:.0f}", b.reason or str(b.dir)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    passed = sum(b.passed for b in bundles)
    skipped = sum(b.skipped for b in bundles)
    tail = f", {skipped} n/a" if skipped else ""
    return "\n".join(lines) + f"\n{passed}/{len(bundles) - skipped} passed{tail}"


def results_root() -> Path:
    return paths.results_dir()
