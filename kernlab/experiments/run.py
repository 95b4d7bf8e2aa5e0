"""Run experiments: kernel, image, VM, upload, guest driver, collect, check, bundle.

``run_experiment(name)`` goes from whatever state the machine is in to a checked,
saved bundle: it takes the kernel build `build-kernel` made (kernlab.builds; an unbuilt
version is built from the catalog) and the image (built if missing), boots or reuses the VM,
builds the experiment on the host, uploads it with the guest driver over the one
SSH connection, runs it, fetches what the driver wrote and checks expectations.
``run_suite()`` runs several experiments on one kernel, reusing one VM; those the kernel
cannot run (``needs.features``) get an n/a bundle with the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from kernlab.core import interrupt, paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord, ImageRecord, Manifest
from kernlab.experiments import driver
from kernlab.experiments.build import build_experiment
from kernlab.experiments.bundle import Bundle, hist_svg, manifest, parse_hist
from kernlab.experiments.expect import Evidence, Outcome, check_all, substitute
from kernlab.experiments.fit import check_needs, na_reason, resolve_vars
from kernlab.experiments.lanes import lane_count, last_seconds, longest_first, run_lanes
from kernlab.experiments.probecheck import check_targets
from kernlab.experiments.spec import Experiment, Step
from kernlab.experiments.suite import check_known, experiment_names, load_experiment
from kernlab.guest import health, remote
from kernlab.guest.ensure import Target, VmRefused
from kernlab.guest.health import console_tail
from kernlab.guest.vm import Vm, find_vm
from kernlab.kernel.selection import KernelChoice, choose_kernel

GUEST_ROOT = "/root/kernlab/exp"
COPY_DIR = "experiment"  # in a bundle: the copy of the experiment folder (and its _lib) that ran
DRIVER = Path(__file__).with_name("driver.py")
GUEST_BUILD_TIMEOUT = 900.0
DRIVER_SLACK = driver.BPFTRACE_STOP_GRACE + 60.0  # past the plan's timeout: stop grace and teardown
DRIVER_STOP_GRACE = 2.0  # after Ctrl-C: seconds the guest driver gets to stop its steps and exit
INTERRUPT_BUDGET = 3.5  # after Ctrl-C: seconds until the guest's output must be fetched
SSH_ERRORS = (paramiko.SSHException, OSError, EOFError, socket.timeout)
TRACE_LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[\d+\]")


class NotApplicable(KernlabError):
    """The experiment cannot run on this kernel; ``cause`` is the reason."""

    def __init__(self, experiment: str, reason: str) -> None:
        super().__init__(reason)
        self.experiment = experiment

    def line(self) -> str:
        """``buffermap needs bpf_probe_read_user (Linux 5.5); kernel 4.15 is older``."""
        return f"{self.experiment} {self.cause}"


@dataclass
class Session:
    """The kernel, image, VM and SSH connection shared by the runs of one command.

    ``kernel`` is what the user named: a catalog version or a build id. The build is the
    one `build-kernel` made (see kernlab.builds); only an unbuilt version is built here.
    Getting them is ``kernlab.guest.ensure.Target``'s work; a session adds the guest's
    facts and whether to keep the VM it booted.
    """

    kernel: str
    keep_vm: bool = False
    vm_name: str = "default"
    recipe: str = "bookworm"
    guest: dict = field(default_factory=dict)
    choice: KernelChoice | None = None
    flag: str = "--kernel"  # the command's flag that picks a kernel (for notes)
    target: Target | None = None  # given: reuse what another step (reproduce) already found

    def __post_init__(self) -> None:
        if self.choice is None:
            self.choice = self.target.choice if self.target and self.target.choice else \
                choose_kernel(self.kernel)
        if self.target is None:
            self.target = Target(self.choice, self.recipe, self.vm_name, self.flag)

    @property
    def ensure(self) -> Target:
        assert self.target is not None
        return self.target

    @property
    def chosen(self) -> KernelChoice:
        """The kernel ``kernel`` names (resolved when the session is made)."""
        assert self.choice is not None
        return self.choice

    @property
    def build(self) -> BuildRecord | None:
        return self.ensure.build

    @property
    def image(self) -> ImageRecord | None:
        return self.ensure.image

    @property
    def vm(self) -> Vm | None:
        return self.ensure.vm

    @property
    def started_vm(self) -> bool:
        return self.ensure.started_vm

    @property
    def version(self) -> str:
        """The catalog version of the kernel (a bundle's ``<kernel>`` directory)."""
        return self.chosen.version

    @property
    def release(self) -> str:
        """The kernel's Linux release: the build's, or the catalog's before it is built."""
        return (self.build.release if self.build else "") or self.chosen.release

    def kernel_and_image(self) -> tuple[BuildRecord, ImageRecord]:
        return self.ensure.kernel_and_image()

    def connection(self) -> Any:
        """An open connection to a VM running this session's kernel and image."""
        return remote.connect(self.ensure.up())

    def check_vm(self) -> Vm | None:
        """The VM running as ``vm_name`` (None: none runs); VmRefused when it runs another kernel
        or image, or does not answer (kernlab.health); it is left as it is."""
        return self.ensure.running()

    def close(self) -> None:
        """Stop the VM if this session booted it and --keep-vm was not given."""
        self.ensure.close(self.keep_vm)


# ---------------------------------------------------------------- guest I/O
def _guest(conn: Any, command: str, log: Path, timeout: float, check: bool = True, *,
           binary: bool = False, **stop: Any) -> Any:
    """Run a guest command; command, output and exit status go to ``log`` (a ``binary``
    stdout only by its size). ``stop``: remote.run's other arguments (``stop_grace``,
    ``stop_also``, ``stdin``)."""
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"\n$ {command}\n")
        try:
            result = remote.run(conn, command, timeout=timeout, check=False, **stop)
        except KernlabError as error:
            out.write(f"# {error.cause}\n")
            raise
        except KeyboardInterrupt:
            out.write(f"# interrupted (Ctrl-C) after {time.monotonic() - started:.1f}s; stopped there\n")
            raise
        out.write(f"# {len(result.data)} bytes on stdout\n" if binary else result.stdout)
        if result.stderr:
            out.write(f"# stderr:\n{result.stderr}")
        out.write(f"# exit {result.exited} after {time.monotonic() - started:.1f}s\n")
    if check and result.exited != 0:
        raise KernlabError(f"guest command failed (exit {result.exited}): {command}; "
                           f"log: {log}", "read the log",
                           details=(result.stdout + result.stderr).strip()[-2000:])
    return result


def _plan(exp: Experiment, workdir: str, env: dict[str, str]) -> dict[str, Any]:
    guest_builds = [
        {"name": f"build-{i}", "cmd": s.cmd, "timeout": GUEST_BUILD_TIMEOUT}
        for i, s in enumerate(b for b in exp.build if b.kind == "guest")]
    steps = [{"name": s.name, "cmd": s.cmd, "timeout": s.timeout, "background": s.background,
              "ready": s.ready, "ready_timeout": s.ready_timeout,
              "stop_signal": s.stop_signal, **_bpftrace_plan(s, env)} for s in exp.steps]
    return {
        "workdir": workdir, "outdir": f"{workdir}/out", "env": env,
        "timeout": exp.run_timeout + GUEST_BUILD_TIMEOUT * len(guest_builds), "drain": exp.drain,
        "trace": {"enabled": exp.capture.trace_pipe, "max_bytes": exp.capture.max_bytes,
                  "max_seconds": exp.capture.max_seconds},
        "steps": guest_builds + steps,
    }


def _bpftrace_plan(step: Step, env: dict[str, str]) -> dict[str, Any]:
    """A bpftrace: step's program and command, ``${NAME}`` substituted (driver.Bpftrace)."""
    if not step.bpftrace:
        return {}
    return {"bpftrace": {"program": substitute(step.bpftrace, env),
                         "command": substitute(step.command, env)}}


def _upload(conn: Any, exp: Experiment, built: Path, plan: dict, bundle: Bundle,
            tools: list[str]) -> dict[str, str]:
    """Send sources, outputs, driver and plan as one tar stream on a guest command's stdin,
    unpacked there by the same command, which also checks the guest's tools."""
    workdir = plan["workdir"]
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        tar.add(built, arcname=".")
        tar.add(DRIVER, arcname="kernlab_driver.py")
        info = tarfile.TarInfo("plan.json")
        data = json.dumps(plan, indent=2).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    checks = " ".join(shlex.quote(t) for t in tools)
    script = (f"set -e; rm -rf {workdir}; mkdir -p {workdir}; tar xf - -C {workdir}; "
              f"read -r release </proc/sys/kernel/osrelease; echo release=$release; "
              f"for t in {checks}; do command -v $t >/dev/null || echo missing=$t; done")
    with open(bundle.log("remote"), "a") as out:
        out.write(f"\n# sending {stream.tell()} bytes (tar) on stdin\n")
    result = _guest(conn, script, bundle.log("remote"), timeout=120, stdin=stream.getvalue())
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    missing = [line.split("=", 1)[1] for line in result.stdout.splitlines()
               if line.startswith("missing=")]
    if missing:
        raise KernlabError(f"{', '.join(missing)} not installed in the guest image",
                           "add the package to vm/bookworm.yaml and run `invoke build-image`")
    return {"release": facts.get("release", "")}


def _fetch(conn: Any, exp: Experiment, workdir: str, bundle: Bundle, dest: Path,
           timeout: float = 120.0) -> None:
    """Bring back ``out/`` and the artifact files (whatever exists) into ``dest``: one guest
    command writes them as a tar stream on its stdout."""
    wanted = ["out"] + [a.path for a in exp.artifacts if a.path]
    names = " ".join(shlex.quote(w) for w in wanted)
    result = _guest(conn, f"cd {workdir} && mkdir -p out && tar cf - --ignore-failed-read "
                          f"$(for f in {names}; do [ -e \"$f\" ] && echo \"$f\"; done)",
                    bundle.log("remote"), timeout=timeout, binary=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(result.data)) as tar:
            tar.extractall(dest / "fetched", filter="data")
    except tarfile.TarError as error:
        raise KernlabError(f"the guest's output could not be unpacked ({error})",
                           "see logs/remote.log in the bundle") from None


# ---------------------------------------------------------------- collecting
def parse_cmdlines(text: str) -> dict[str, str]:
    """tracefs ``saved_cmdlines`` ("PID COMM" lines) as {pid: comm}."""
    pairs = (line.split(maxsplit=1) for line in text.splitlines())
    return {p[0]: p[1].strip() for p in pairs if len(p) == 2}


def filter_trace(raw: str, comms: list[str], cmdlines: dict[str, str] | None = None) -> str:
    """Trace lines whose task comm is one of ``comms`` (all lines when empty).

    A line whose comm the tracer printed as ``<...>`` (a task it had not remembered yet,
    often a short-lived one) gets its pid's name from ``cmdlines`` (the guest's
    saved_cmdlines at the end of the run), so it is judged, and shown, by its name.
    """
    names = cmdlines or {}
    kept = []
    for line in raw.splitlines():
        match = TRACE_LINE.match(line)
        if not match:
            if not comms:
                kept.append(line)
            continue
        comm = match.group(1).strip()
        if comm == "<...>" and names.get(match.group(2)):
            comm = names[match.group(2)]
            line = comm.rjust(match.end(1)) + line[match.end(1):]  # right-aligned, as ftrace prints it
        if not comms or comm in comms:
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def _collect(exp: Experiment, fetched: Path, bundle: Bundle) -> tuple[Evidence, list[Outcome]]:
    """Copy what the driver wrote into the bundle; build the evidence to check."""
    out = fetched / "out"
    known = {f"build-{i}" for i in range(len(exp.build))} | {s.name for s in exp.steps}
    steps = [s for s in _read_json(out / "steps.json").get("steps", [])
             if isinstance(s, dict) and s.get("name") in known]  # names become file names
    driver = _read_json(out / "driver.json")
    bundle.facts["steps"] = steps
    bundle.facts["capture"] = driver.get("capture")
    if driver.get("status") != "done":
        bundle.fail(driver.get("reason") or "the guest driver did not finish")
    texts: dict[str, str] = {}
    raw = _read_text(out / "trace.raw")
    if exp.capture.trace_pipe:
        bundle.write("trace.raw.txt", raw)
        names = _read_text(out / "saved_cmdlines")
        if names:
            bundle.write("saved_cmdlines.txt", names)
        kept = filter_trace(raw, exp.capture.comm, parse_cmdlines(names))
        texts["trace"] = bundle.write("trace.txt", kept).read_text()
    sections = []
    for step in steps:
        log = out / "steps" / f"{step['name']}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        bundle.write(f"steps/{step['name']}.log", text)
        texts[f"step:{step['name']}"] = text
        sections.append(f"==> {step['name']}: {step['cmd']} (exit {step['exit']}) <==\n{text}")
    texts["output"] = bundle.write("output.txt", "\n".join(sections)).read_text()
    _bpftrace_maps(exp, out, texts, bundle)
    for art in exp.artifacts:
        if art.path and (fetched / art.path).is_file():
            copied = bundle.copy_in(fetched / art.path, f"artifacts/{art.name}")
            texts[f"file:{art.path}"] = copied.read_text(errors="replace") if copied else ""
    _render(exp, texts, bundle)
    exits = {s["name"]: (None if s.get("timed_out") else s.get("exit")) for s in steps}
    return Evidence(texts=texts, exits=exits), _step_outcomes(exp, steps)


def _bpftrace_maps(exp: Experiment, out: Path, texts: dict[str, str], bundle: Bundle) -> None:
    """Each bpftrace: step's maps as ``artifacts/bpftrace-<step>.json`` (and its hists as
    SVG), and the program as it ran as ``steps/<step>.bt``."""
    for step in (s for s in exp.steps if s.bpftrace):
        ran = out / "bpftrace" / f"{step.name}.bt"
        if ran.is_file():
            bundle.write(f"steps/{step.name}.bt", ran.read_text(errors="replace"))
        maps = _read_json(out / "bpftrace" / f"{step.name}.json")
        if not maps:
            continue
        name = f"bpftrace-{step.name}"
        texts[f"file:{name}.json"] = bundle.write(f"artifacts/{name}.json",
                                                  json.dumps(maps, indent=2) + "\n").read_text()
        for hist in map_hists(maps):
            label = re.sub(r"[^A-Za-z0-9_.-]+", "_", hist["name"].lstrip("@")) or "map"
            bundle.write(f"artifacts/{name}-{label}.svg", hist_svg(hist))


def map_hists(output: dict) -> list[dict[str, Any]]:
    """The hist/lhist maps of a bpftrace step's JSON output, as kernlab's renderer takes them."""
    hists = []
    for name, entry in output.get("maps", {}).items():
        if not isinstance(entry, dict) or entry.get("type") != "hist":
            continue
        value = entry.get("value")
        keyed = value.items() if isinstance(value, dict) else [("", value)]
        for key, buckets in keyed:
            rows = [{"low": str(b.get("min", "-inf")), "high": str(b["max"] + 1 if "max" in b else "inf"),
                     "count": int(b.get("count", 0))} for b in buckets or [] if isinstance(b, dict)]
            hists.append({"name": f"{name}[{key}]" if key else name, "buckets": rows})
    return hists


def _step_outcomes(exp: Experiment, steps: list[dict]) -> list[Outcome]:
    """Implicit checks: each step that may not fail exited 0 (or was stopped by us)."""
    spec = {s.name: s for s in exp.steps}
    outcomes = []
    for step in steps:
        conf = spec.get(step["name"])
        if conf is not None and conf.may_fail:
            continue
        if step.get("timed_out"):
            ok, detail = False, f"timed out after {step.get('seconds')}s"
        elif step.get("stopped"):
            ok, detail = True, "ran until stopped"
        else:
            ok, detail = step.get("exit") == 0, f"exited {step.get('exit')}"
        outcomes.append(Outcome(f"step {step['name']} ran", "step", ok, detail))
    return outcomes


def _render(exp: Experiment, texts: dict[str, str], bundle: Bundle) -> None:
    for art in exp.artifacts:
        if art.render != "hist":
            continue
        hists = parse_hist(texts.get(art.source, ""))
        bundle.write(f"artifacts/{art.name}.json", json.dumps(hists, indent=2) + "\n")
        for i, hist in enumerate(hists):
            suffix = "" if i == 0 else f"-{i}"
            bundle.write(f"artifacts/{art.name}{suffix}.svg", hist_svg(hist))
        texts[f"file:{art.name}.json"] = json.dumps(hists)


def _read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- one run
def _guest_env(exp: Experiment, workdir: str, build: BuildRecord, variables: dict[str, str],
               symbols: dict[str, str]) -> dict[str, str]:
    return {"KL_WORKDIR": workdir, "KERNEL_VERSION": build.version,
            "KERNEL_RELEASE": build.kernelrelease, **variables,
            **{f"SYM_{k}": v for k, v in symbols.items()}}


def requirements(exp: Experiment, session: Session) -> tuple[dict[str, str], dict[str, str]]:
    """Kernel and image ready, needs met: (variables, symbols); raises naming what is missing."""
    build, _image = session.kernel_and_image()
    variables = resolve_vars(exp, session.release)
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
    plan = _plan(exp, workdir, _guest_env(exp, workdir, build, variables, symbols))
    with reporter().step("VM"):
        conn = session.connection()
    with reporter().step(f"upload {exp.name}"):
        session.guest = _upload(conn, exp, built, plan, bundle, exp.tools)
    if session.guest["release"] != build.kernelrelease:
        raise KernlabError(f"the guest runs {session.guest['release']}, not "
                           f"{build.kernelrelease}", "run `invoke vm.down` and retry")
    with tempfile.TemporaryDirectory() as tmp:
        run_error: KernlabError | None = None
        interrupted: float | None = None
        try:
            with reporter().step(f"run {exp.name} in the guest"):
                _guest(conn, f"cd {workdir} && python3 kernlab_driver.py plan.json",
                       bundle.log("remote"), timeout=plan["timeout"] + DRIVER_SLACK, check=False,
                       stop_grace=DRIVER_STOP_GRACE, stop_also=_kill_steps(plan["outdir"]))
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
        _fetch(conn, exp, workdir, bundle, tmp, timeout=timeout)
        evidence, step_outcomes = _collect(exp, tmp / "fetched", bundle)
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


def _console(session: Session, bundle: Bundle, since: int) -> None:
    vm = session.vm
    if vm is None or not Path(vm.console_log).exists():
        return
    data = Path(vm.console_log).read_bytes()
    bundle.write("console.log", data[since if since <= len(data) else 0:].decode(
        errors="replace"))


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


def run_in_session(exp: Experiment, session: Session, root: Path | None = None) -> Bundle:
    """Run ``exp`` with the session's kernel and VM; returns its written bundle.

    A kernel that lacks what the experiment needs raises before any bundle is made.
    """
    variables, symbols = requirements(exp, session)
    session.check_vm()  # a VM of the user's that runs another kernel: refused before any bundle
    bundle = Bundle.create(exp.name, session.version, root)
    reporter().note(f"bundle: {bundle.dir}")
    bundle.facts["source"] = exp.origin()  # where the experiment came from and its hash
    exp.copy_to(bundle.dir / COPY_DIR)  # what `reproduce` reruns once the folder has changed
    for warning in exp.warnings:
        reporter().warn(f"{exp.name}: {warning}")
    since = _console_size(session)
    try:
        _execute(exp, session, bundle, variables, symbols)
        bundle.settle()
    except health.GuestDown as error:
        _failed(bundle, error, session)
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
        _console(session, bundle, since)
        bundle.finish(_manifest(exp, session, bundle))
    return bundle


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


def _manifest(exp: Experiment, session: Session, bundle: Bundle) -> Manifest:
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
                   target: Target | None = None) -> Bundle:
    """Run the loaded experiment ``exp`` on the chosen kernel end to end; returns its bundle
    (check ``bundle.passed``).

    ``target``: the kernel, image and VM already found (reproduce). Raises NotApplicable,
    before any work, when the kernel lacks what the experiment needs.
    """
    reason = na_reason(exp, choice.release)
    if reason:
        raise NotApplicable(exp.name, reason)
    session = Session(choice.asked, keep_vm=keep_vm, vm_name=vm_name, choice=choice, target=target)
    with interrupt.scope():
        try:
            return run_in_session(exp, session, root)
        finally:
            session.close()


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
            triaged = {name: _triage(name, session, root) for name in names}
            to_run = {name: t for name, t in triaged.items() if isinstance(t, Experiment)}
            count = lane_count(lanes, len(to_run))
            ran = dict(zip(to_run, _run_in_lanes(list(to_run.values()), session, root, count),
                           strict=True))
        finally:
            session.close()
    return [ran.get(name, triaged[name]) for name in triaged]


def _triage(name: str, session: Session, root: Path | None) -> Experiment | Bundle:
    """The experiment to run, or already its bundle: n/a with the reason, or FAIL when its
    experiment.yaml does not load. Never raises KernlabError."""
    try:
        exp = load_experiment(name)
        reason = na_reason(exp, session.release)
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
    it starts and always stops at the end (one left by a killed run is stopped first)."""
    build, image = session.kernel_and_image()
    name = f"{session.vm_name[:28]}-l{number}"
    stale = find_vm(name)
    if stale is not None:
        reporter().note(f"VM {name} was left by an earlier run: stopping it")
        stale.stop()
    target = Target(session.chosen, session.recipe, name, session.flag, build=build, image=image)
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
    bundle.finish(_manifest(exp, session, bundle))
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
        bundle.finish(_manifest(exp, session, bundle))
        return bundle


def verdict_text(bundle: Bundle) -> str:
    """`invoke run-experiment NAME`: each expectation, the reason if it failed, and last the
    bundle's path and status."""
    lines = [f"  {'ok  ' if o.passed else 'FAIL'} {o.name}: {o.detail}" for o in bundle.outcomes]
    lines += [f"reason: {bundle.reason}"] if not bundle.passed else []
    return "\n".join([*lines, f"{bundle.dir} {bundle.status}"])


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
