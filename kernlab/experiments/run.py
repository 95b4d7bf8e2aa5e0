"""One experiment run: kernel, image and VM ready (``session``), the experiment built on the
host, uploaded and run by the guest driver (``transfer``), its output collected and checked
(``collect``), and the bundle written, whatever happened.

``run_experiment(exp, choice)`` takes a loaded experiment and a kernel choice (the command
resolves both once) and goes from whatever state the machine is in to a checked, saved
bundle, with a copy of the experiment (``experiment/``) that `reproduce` can rerun. A suite
on one kernel is ``kernlab.experiments.suiterun``.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import paramiko

from kernlab.core import interrupt
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord, Manifest
from kernlab.experiments.build import build_experiment
from kernlab.experiments.bundle import Bundle, manifest
from kernlab.experiments.collect import collect
from kernlab.experiments.expect import check_all
from kernlab.experiments.fit import check_needs, na_reason, resolve_vars
from kernlab.experiments.probecheck import check_targets
from kernlab.experiments.session import Session
from kernlab.experiments.spec import Experiment
from kernlab.experiments.splatcheck import check as check_splats
from kernlab.experiments.splatcheck import guest_dmesg, marked
from kernlab.experiments.transfer import (
    DRIVER_SLACK,
    driver_failure,
    driver_plan,
    fetch,
    guest_command,
    upload,
)
from kernlab.guest import dump, gdb, health
from kernlab.guest.ensure import Target
from kernlab.guest.health import console_tail
from kernlab.guest.vm import dump_of
from kernlab.kernel.kconfig import read_config
from kernlab.kernel.selection import KernelChoice, variant_of

GUEST_ROOT = "/root/kernlab/exp"
COPY_DIR = "experiment"  # in a bundle: the copy of the experiment folder (and its _lib) that ran
DRIVER_STOP_GRACE = 2.0  # after Ctrl-C: seconds the guest driver gets to stop its steps and exit
INTERRUPT_BUDGET = 3.5  # after Ctrl-C: seconds until the guest's output must be fetched
SSH_ERRORS = (paramiko.SSHException, OSError, EOFError, socket.timeout)


class NotApplicable(KernlabError):
    """The experiment cannot run on this kernel; ``cause`` is the reason."""

    def __init__(self, experiment: str, reason: str) -> None:
        super().__init__(reason)
        self.experiment = experiment

    def line(self) -> str:
        """``buffermap needs bpf_probe_read_user (Linux 5.5); kernel 4.15 is older``."""
        return f"{self.experiment} {self.cause}"


# ---------------------------------------------------------------- one run
def _guest_env(exp: Experiment, workdir: str, build: BuildRecord, variables: dict[str, str],
               symbols: dict[str, str]) -> dict[str, str]:
    return {"KL_WORKDIR": workdir, "KERNEL_VERSION": build.version,
            "KERNEL_RELEASE": build.kernelrelease, **variables,
            **{f"SYM_{k}": v for k, v in symbols.items()}}


def requirements(exp: Experiment, session: Session) -> tuple[dict[str, str], dict[str, str]]:
    """Kernel and image ready, needs met: (variables, symbols); raises naming what is missing."""
    build, _image = session.kernel_and_image()
    config = build.existing_output("config")
    variables = resolve_vars(exp, session.release, read_config(config) if config else None)
    check_targets(exp, build, variables)  # the probe atlas: an unattachable target stops here, with its fix
    symbols = check_needs(exp, build, variables)
    return {**variables, **{f"SYM_{k}": v for k, v in symbols.items()}}, symbols


def _execute(exp: Experiment, session: Session, bundle: Bundle,
             variables: dict[str, str], symbols: dict[str, str]) -> None:
    """Everything after the bundle exists; raises on the first problem."""
    build, _image = session.kernel_and_image()
    bundle.facts["variables"] = variables
    built = build_experiment(exp, build, variables, bundle.log("build"))
    workdir = f"{GUEST_ROOT}/{exp.name}"
    plan = driver_plan(exp, workdir, _guest_env(exp, workdir, build, variables, symbols))
    with reporter().step("VM"):
        conn = session.connection()
    if session.started_vm and not session.keep_vm and session.vm is not None:
        dump.hold_after_shutdown(session.vm.info.qmp_socket)  # a panic leaves memory to dump
    with reporter().step(f"upload {exp.name}"):
        session.guest = upload(conn, exp, built, plan, bundle, exp.tools)
    if session.guest["release"] != build.kernelrelease:
        raise KernlabError(f"the guest runs {session.guest['release']}, not "
                           f"{build.kernelrelease}", "run `invoke vm.down` and retry")
    # under a debugger the guest may sit at a breakpoint for as long as the user looks: the
    # host waits as long (the guest's own step timeouts run on its clock, which stops meanwhile)
    limit = plan["timeout"] + DRIVER_SLACK if session.gdb_port is None else math.inf
    if session.gdb_port is not None:
        gdb.wait_for_debugger(session.vm)
    with tempfile.TemporaryDirectory() as tmp:
        run_error: KernlabError | None = None
        interrupted: float | None = None
        try:
            with reporter().step(f"run {exp.name} in the guest"):
                driver = f"cd {workdir} && python3 kernlab_driver.py plan.json"
                ran = guest_command(conn, marked(exp, bundle, driver), bundle.log("remote"),
                                    timeout=limit, check=False,
                                    stop_grace=DRIVER_STOP_GRACE, stop_also=_kill_steps(plan["outdir"]))
            if failed := driver_failure(ran, bundle.log("remote")):
                bundle.fail(failed)  # the driver's own cause, before what collecting then finds
        except KeyboardInterrupt:  # the driver and its steps are stopped: collect, then stop
            interrupted = time.monotonic()
            interrupt.hold()
            bundle.fail("interrupted")
        except health.GuestDown:
            raise  # nothing to fetch from a frozen, panicked or silent guest
        except KernlabError as error:  # timed out: collect what there is, then report
            run_error = error
        if interrupted is None:
            _collect_all(exp, conn, workdir, bundle, Path(tmp), variables)
        else:
            _collect_interrupted(exp, conn, workdir, bundle, Path(tmp), variables, interrupted)
            raise interrupt.Interrupted(bundle)
        if run_error:
            raise run_error


def _kill_steps(outdir: str) -> str:
    """Shell code that SIGKILLs every step process group the driver listed (its last resort)."""
    return f"for g in $(cat {outdir}/pgids 2>/dev/null); do kill -KILL -- -$g 2>/dev/null; done"


def _collect_all(exp: Experiment, conn: Any, workdir: str, bundle: Bundle, tmp: Path,
                 variables: dict[str, str], timeout: float = 120.0) -> None:
    """Fetch what the driver wrote, copy it into the bundle and check the expectations."""
    with reporter().step("collect"):
        fetch(conn, exp, workdir, bundle, tmp, timeout=timeout)
        evidence, step_outcomes = collect(exp, tmp / "fetched", bundle)
    bundle.outcomes = step_outcomes + check_all(exp.expectations, evidence, variables)


def _collect_interrupted(exp: Experiment, conn: Any, workdir: str, bundle: Bundle, tmp: Path,
                         variables: dict[str, str], since: float) -> None:
    """After Ctrl-C: collect what there is within what is left of INTERRUPT_BUDGET, if anything."""
    left = INTERRUPT_BUDGET - (time.monotonic() - since)
    if left < 0.5:
        reporter().warn("interrupted: no time left to fetch the guest's output")
        return
    try:
        _collect_all(exp, conn, workdir, bundle, tmp, variables, timeout=left)
    except (KernlabError, *SSH_ERRORS) as error:
        reporter().warn(f"interrupted: the guest's output was not fetched ({error})")


def _console(session: Session, bundle: Bundle, since: int) -> str:
    """The run's slice of the serial console, written to the bundle (returned)."""
    vm = session.vm
    if vm is None or not Path(vm.console_log).exists():
        return ""
    data = Path(vm.console_log).read_bytes()
    text = data[since if since <= len(data) else 0:].decode(errors="replace")
    bundle.write("console.log", text)
    return text


def _console_size(session: Session) -> int:
    vm = session.vm
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return Path(vm.console_log).stat().st_size
    return 0


def _ssh_lost(session: Session, error: BaseException) -> KernlabError:
    """The error for a dropped SSH connection: the VM's fault if it has one (kernlab.health)."""
    vm = session.vm
    if vm is not None and not (health_now := health.state(vm)).ok:
        return health.GuestDown(vm, health_now)
    alive = vm is not None and vm.alive()
    state = "the VM is still running" if alive else "the VM is gone"
    tail = console_tail(vm) if vm is not None else ""
    return KernlabError(f"SSH connection lost mid-run ({type(error).__name__}: {error}); {state}",
                        "read console.log in the bundle", details=tail)


def _keep_copy(exp: Experiment, bundle: Bundle) -> None:
    """The experiment as it ran, in the bundle: what `reproduce` reruns once its folder has
    changed or is gone. A folder that cannot be copied only loses that (a warning)."""
    try:
        exp.copy_to(bundle.dir / COPY_DIR)
    except (OSError, shutil.Error) as error:
        reporter().warn(f"{exp.name}: no copy of the experiment in the bundle ({error}); "
                        "`reproduce` will need its folder unchanged")


def run_in_session(exp: Experiment, session: Session, root: Path | None = None) -> Bundle:
    """Run ``exp`` with the session's kernel and VM; returns its written bundle.

    A kernel that lacks what the experiment needs raises before any bundle is made.
    """
    variables, symbols = requirements(exp, session)
    running = session.check_vm()  # a VM of the user's that runs another kernel: refused before any bundle
    if session.gdb_port is not None and running is not None:
        gdb.stub_port(running)  # --gdb on a VM booted without a stub: refused before any bundle
    bundle = Bundle.create(exp.name, session.version, root)
    reporter().note(f"bundle: {bundle.dir}")
    bundle.facts["source"] = exp.origin()  # where the experiment came from and its hash
    _keep_copy(exp, bundle)
    for warning in exp.warnings:
        reporter().warn(f"{exp.name}: {warning}")
    since = _console_size(session)
    try:
        _execute(exp, session, bundle, variables, symbols)
        bundle.settle()
    except health.GuestDown as error:
        _failed(bundle, error, session)
        _keep_vmcore(bundle, session, error)
    except KernlabError as error:
        bundle.fail(error.one_line())
        bundle.write("logs/error.log", f"{error.one_line()}\n{error.details}\n")
    except SSH_ERRORS as error:
        _failed(bundle, _ssh_lost(session, error), session)
    except KeyboardInterrupt as stop:
        interrupt.hold()
        bundle.fail("interrupted")
        raise interrupt.Interrupted(bundle) from stop
    finally:
        console = _console(session, bundle, since)
        _splats(exp, session, bundle, console)
        bundle.finish(run_manifest(exp, session, bundle))
    return bundle


def _splats(exp: Experiment, session: Session, bundle: Bundle, console: str) -> None:
    """The run's kernel splat check (kernlab.experiments.splatcheck); after Ctrl-C only the
    console is searched (no time to ask the guest)."""
    conn = session.vm.conn if session.vm is not None else None
    asked = conn is not None and bundle.reason != "interrupted"
    check_splats(exp, bundle, guest_dmesg(conn, exp, bundle) if asked else None, console)


VMCORE = "vmcore/vmcore.kdump"  # in a bundle whose guest panicked: kdump-compressed, for crash


def _keep_vmcore(bundle: Bundle, session: Session, error: health.GuestDown) -> None:
    """A panicked guest's memory into the bundle (``vmcore/``, with how to open it), when the
    run's own VM holds it paused (``hold_after_shutdown``); else a note why there is none."""
    vm = session.vm
    if error.health.state != health.PANICKED or vm is None or not session.started_vm or session.keep_vm:
        return
    if not vm.alive() or health.qmp_status(vm) != "shutdown":
        reporter().note("no vmcore: QEMU did not hold the panicked guest (it needs QEMU 6.0's set-action)")
        return
    try:
        record = dump_of(vm, bundle.dir / VMCORE, "kdump-zlib")
    except KernlabError as failed:
        reporter().warn(f"no vmcore of the panicked guest: {failed.one_line()}")
        return
    bundle.facts["vmcore"] = VMCORE
    opener = record.get("open", {}).get("crash", "")
    reporter().note(f"vmcore of the panicked guest: {bundle.dir / VMCORE}"
                    + (f"; open it: {opener}" if opener else ""))


def _failed(bundle: Bundle, error: KernlabError, session: Session) -> None:
    """Record a lost guest (panicked, frozen, SSH gone) in the bundle; drop its connection.

    The reason is the fault alone when the run's own VM is stopped at its end (what to do
    about that VM would be moot); with the user's VM, or --keep-vm, the fix comes too.
    """
    own = session.started_vm and not session.keep_vm
    reason = error.in_bundle() if own and isinstance(error, health.GuestDown) else error.one_line()
    bundle.fail(reason)
    bundle.write("logs/error.log", f"{error.one_line()}\n{error.details}\n")
    if session.vm is not None:
        session.vm.conn = None


def run_manifest(exp: Experiment, session: Session, bundle: Bundle) -> Manifest:
    vm = session.vm
    copy = f"{COPY_DIR}/{exp.dir.name}"
    return manifest(
        experiment={"name": exp.name, "title": exp.title, **exp.origin(),
                    "spec": str(exp.spec_path), **({"copy": copy} if (bundle.dir / copy).is_dir() else {})},
        build=session.build, image=session.image,
        vm=vm.info if vm else None,
        guest=session.guest or None, variables=bundle.facts.get("variables", {}))


def run_experiment(exp: Experiment, choice: KernelChoice, keep_vm: bool = False,
                   vm_name: str = "default", root: Path | None = None,
                   target: Target | None = None, gdb_port: int | None = None) -> Bundle:
    """Run the loaded experiment ``exp`` on the chosen kernel end to end; returns its bundle
    (check ``bundle.passed``).

    ``target``: the kernel, image and VM already found (reproduce). Raises NotApplicable,
    before any work, when the kernel lacks what the experiment needs. ``gdb_port``: the VM
    boots with QEMU's gdbstub there and the workload waits for a debugger (kernlab.guest.gdb).
    """
    reason = na_reason(exp, choice.release, variant_of(choice.version))
    if reason:
        for warning in exp.warnings:  # an older-format bound's note: why, and what to write
            reporter().warn(f"{exp.name}: {warning}")
        raise NotApplicable(exp.name, reason)
    session = Session(choice.asked, keep_vm=keep_vm, vm_name=vm_name, choice=choice, target=target,
                      gdb_port=gdb_port)
    with interrupt.scope():
        try:
            return run_in_session(exp, session, root)
        finally:
            session.close()


def verdict_text(bundle: Bundle) -> str:
    """`invoke run-experiment NAME`: each expectation, the reason if it failed, and last the
    bundle's path and status."""
    lines = [f"  {'ok  ' if o.passed else 'FAIL'} {o.name}: {o.detail}" for o in bundle.outcomes]
    lines += [f"reason: {bundle.reason}"] if not bundle.passed else []
    return "\n".join([*lines, f"{bundle.dir} {bundle.status}"])


