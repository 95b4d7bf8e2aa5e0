"""`invoke check-experiment`: everything that can be checked about an experiment without
booting, in seconds once the kernels are built.

The YAML is checked by loading it (kernlab.experiments.spec: unknown keys, types, regexes,
every ``${NAME}`` defined, ``in:`` naming a step). Then, per kernel: whether it applies
(needs.features), its needs (config, symbols, build outputs), the host build (BPF objects
compiled against that kernel's headers, cached like a run's), each bpftrace program's
probes looked up in the kernel's System.map, and each program run through the host's own
bpftrace as a dry run (``--emit-elf``: parse, types, code generation, no attaching) against
that kernel's headers. bpftrace in the guest is Debian's 0.17, which has no ``--dry-run``;
``-d`` prints debug output and ``--emit-elf FILE`` stops before attaching. The host's
bpftrace cannot resolve tracepoints (their formats live in the target's tracefs): such a
program is checked with the same parse-only run (``--emit-elf``) in a running kernlab VM of
that kernel when there is one (`invoke vm.up --kernel V`; nothing is attached), else only
against System.map, and the result says which.
"""

from __future__ import annotations

import base64
import fnmatch
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.records import BuildRecord
from kernlab.core.util import short, staging_dir
from kernlab.experiments.build import build_experiment
from kernlab.experiments.expect import resolved, substitute
from kernlab.experiments.fit import check_needs, na_reason, resolve_vars
from kernlab.experiments.probecheck import experiment_targets, network_hooks, network_note
from kernlab.experiments.spec import Experiment, Step
from kernlab.experiments.suite import load_experiment
from kernlab.guest import remote
from kernlab.guest.image import find_image
from kernlab.guest.imagefiles import ImageFiles, read_files
from kernlab.guest.vm import Vm, list_vms
from kernlab.kernel import kheaders
from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.selection import select_build
from kernlab.probes.atlas import rows_kept

OK, FAIL, SKIP = "ok", "FAIL", "--"
DRY_RUN_TIMEOUT = 120.0
NOISE = ("couldn't set RLIMIT_MEMLOCK", "is not traceable", "available_filter_functions")
KPROBE = re.compile(r"(?:^|[\s,])(kprobe|kretprobe|k|kr):([A-Za-z0-9_.*?\[\]]+)", re.M)
UPROBE = re.compile(r"(?:^|[\s,])(?:uprobe|uretprobe|u|ur):([^:\s,{]+):", re.M)
TRACEPOINT = re.compile(r"(?:^|[\s,])(tracepoint|t):([A-Za-z0-9_*?]+):([A-Za-z0-9_*?]+)", re.M)


@dataclass
class Line:
    """One checked item: ok, FAIL or -- (not checked), what, and the detail."""

    status: str
    what: str
    detail: str


@dataclass
class KernelReport:
    kernel: str
    title: str
    lines: list[Line] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(line.status == FAIL for line in self.lines)


# ---------------------------------------------------------------- bpftrace programs
def _code_only(program: str) -> str:
    """The program without comments and string literals (probe names are looked up in it)."""
    program = re.sub(r"/\*.*?\*/", " ", program, flags=re.S)
    program = re.sub(r"//[^\n]*", " ", program)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', program)


def probe_targets(program: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(kprobe functions, (tracepoint category, name)) a bpftrace program attaches to."""
    code = _code_only(program)
    kprobes = sorted({m.group(2) for m in KPROBE.finditer(code)})
    tracepoints = sorted({(m.group(2), m.group(3)) for m in TRACEPOINT.finditer(code)})
    return kprobes, tracepoints


def _symbols(build: BuildRecord) -> set[str]:
    system_map = build.existing_output("System.map")
    if system_map is None:
        return set()
    with open(system_map) as handle:
        return {parts[2] for parts in (line.split() for line in handle) if len(parts) >= 3}


def _tracepoint_symbol(category: str, name: str) -> str:
    """The System.map symbol a tracepoint leaves: syscalls' metadata, else __tracepoint_X."""
    if category == "syscalls":
        return "__syscall_meta__" + re.sub(r"^sys_(enter|exit)_", "", name)
    return "__tracepoint_" + name


def check_probes(program: str, symbols: set[str]) -> list[str]:
    """Probe targets the kernel lacks (empty: all found)."""
    kprobes, tracepoints = probe_targets(program)
    missing = []
    for func in kprobes:
        found = fnmatch.filter(symbols, func) if any(c in func for c in "*?[") else \
            [func] if func in symbols else []
        if not found:
            clones = sorted(s for s in symbols if s.startswith(func + "."))
            missing.append(f"kprobe {func}" + (f" (only the gcc clone {clones[0]}: name it in "
                                               f"needs.symbols and use ${{SYM_{func}}})"
                                               if clones else ""))
    for category, name in tracepoints:
        wanted = _tracepoint_symbol(category, name)
        if not fnmatch.filter(symbols, wanted):
            missing.append(f"tracepoint {category}:{name}")
    return missing


def host_bpftrace() -> str | None:
    """The host's bpftrace, or None."""
    return shutil.which("bpftrace")


def kernel_source(build: BuildRecord) -> Path:
    """The build's headers merged like an in-tree build (kheaders.assemble: hard links,
    under a second), cached per build: what bpftrace's ``#include``s need."""
    final = paths.work_dir() / "kheaders" / f"{build.version}-{short(kheaders.stage_key(build))}.tree"
    if (final / "Makefile").exists():
        return final
    tree, obj = kheaders.build_dirs(build)
    arch = kheaders.source_arch(obj, build.version)
    with staging_dir(final) as stage:
        kheaders.assemble(tree, obj, stage, arch, build.version)
    return final


def _verdict(output: str, code: int, log: Path, how: str) -> Line:
    """A dry run's output as a line: FAIL with bpftrace's first ERROR, else ok saying how."""
    what = "bpftrace dry run"
    errors = [line for line in output.splitlines() if "ERROR" in line]
    if code != 0 or errors:
        detail = errors[0] if errors else output.strip().splitlines()[-1] if output.strip() else \
            f"exit {code}"
        return Line(FAIL, what, f"{detail.strip()} (log: {log})")
    return Line(OK, what, how)


def running_vm(build: BuildRecord) -> Vm | None:
    """A running kernlab VM booted with ``build`` (None if there is none)."""
    return next((vm for vm in list_vms() if vm.info.kernel_key_or_none == build.key and vm.alive()), None)


CHILD = ["-c", "/usr/bin/true"]  # a step's command: stands in for it (cpid needs a child command)


def guest_dry_run(program: str, vm: Vm, log: Path, name: str, child: bool = False) -> Line:
    """The guest's bpftrace on ``program``: parse, types, tracepoint formats, code; no attaching."""
    encoded = base64.b64encode(program.encode()).decode()
    command = (f"f=$(mktemp /tmp/kl-check-XXXXXX.bt) && echo {encoded} | base64 -d > $f && "
               f"bpftrace --emit-elf $f.elf {' '.join(CHILD) if child else ''} $f 2>&1; rc=$?; "
               "rm -f $f $f.elf; exit $rc")
    try:
        result = remote.run(remote.connect(vm), command, timeout=DRY_RUN_TIMEOUT, check=False)
    except KernlabError as error:
        return Line(SKIP, "bpftrace dry run", f"not checked: VM {vm.name} did not run it "
                    f"({error.one_line()})")
    output = re.sub(r"/tmp/kl-check-\w+\.bt", name, result.stdout + result.stderr)
    with open(log, "a") as out:
        out.write(f"\n# in VM {vm.name}: bpftrace --emit-elf program.elf {name}\n{program}\n"
                  f"# output:\n{output}\n# exit {result.exited}\n")
    return _verdict(output, result.exited or 0, log,
                    f"parse-only run in the running VM {vm.name} (bpftrace --emit-elf: "
                    "parse, types, tracepoint formats, code generation; no attaching)")


def dry_run(program: str, build: BuildRecord, log: Path, name: str = "program.bt",
            child: bool = False) -> Line:
    """bpftrace's own check of ``program`` for ``build``, no attaching: on the host against
    the build's headers; a program with tracepoints in a running VM of that kernel. ``child``:
    the step has a command (bpftrace -c; /usr/bin/true stands in for it)."""
    what = "bpftrace dry run"
    _kprobes, tracepoints = probe_targets(program)
    if tracepoints:
        vm = running_vm(build)
        if vm is not None:
            return guest_dry_run(program, vm, log, name, child)
        return Line(SKIP, what, "not checked: the program uses tracepoints, whose formats only "
                    "the kernel's tracefs has, and no VM of this kernel runs (with one up, "
                    f"`invoke vm.up --kernel {build.version}`, it is checked there); "
                    "probes: System.map only")
    tool = host_bpftrace()
    if tool is None:
        return Line(SKIP, what, "not checked: no bpftrace on this host (apt-get install "
                    "bpftrace; it is Debian's 0.17, like the guest's)")
    source = kernel_source(build)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / Path(name).name
        script.write_text(program)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "BPFTRACE_KERNEL_SOURCE": str(source),
               "BPFTRACE_KERNEL_BUILD": str(source)}
        try:
            done = subprocess.run([tool, "--emit-elf", str(Path(tmp) / "program.elf"),
                                   *(CHILD if child else []), str(script)],
                                  capture_output=True, text=True, env=env, timeout=DRY_RUN_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired:
            return Line(FAIL, what, f"bpftrace took over {DRY_RUN_TIMEOUT:.0f}s")
        output = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                           if not any(n in line for n in NOISE)).replace(str(script), name)
    with open(log, "a") as out:
        out.write(f"\n$ BPFTRACE_KERNEL_SOURCE={source} {tool} --emit-elf program.elf {name}\n"
                  f"{program}\n# output:\n{output}\n# exit {done.returncode}\n")
    return _verdict(output, done.returncode, log, "host bpftrace --emit-elf (parse, types, code "
                    "generation; no attaching) against this kernel's headers")


# ---------------------------------------------------------------- one kernel
def _env(build: BuildRecord, variables: dict[str, str], symbols: dict[str, str]) -> dict[str, str]:
    return {"KERNEL_VERSION": build.version,
            "KERNEL_RELEASE": build.kernelrelease, **variables,
            **{f"SYM_{k}": v for k, v in symbols.items()}}


def _bpftrace_lines(step: Step, build: BuildRecord, env: dict[str, str], log: Path) -> list[Line]:
    program = substitute(step.bpftrace, env)
    where = f"step {step.name}"
    missing = check_probes(program, _symbols(build))
    kprobes, tracepoints = probe_targets(program)
    found = len(kprobes) + len(tracepoints)
    lines = [Line(FAIL, f"{where} probes", "not in this kernel: " + ", ".join(missing))
             if missing else Line(OK, f"{where} probes", f"{found} kprobe/tracepoint target(s) "
                                  "found in System.map" if found else "no kprobes or tracepoints")]
    dry = dry_run(program, build, log, step.bpftrace_file or f"{step.name}.bt", bool(step.command))
    dry.what = f"{where} {dry.what}"
    return [*lines, dry]


def check_kernel(exp: Experiment, kernel: str, log_dir: Path) -> KernelReport:
    """Every check of ``exp`` on one built kernel; problems become FAIL lines."""
    build = select_build(kernel)
    report = KernelReport(kernel, f"kernel {kernel} ({build.kernelrelease})")
    log = log_dir / f"check-{exp.name}-{kernel}.log"
    if reason := na_reason(exp, build.release_or_version):
        report.lines.append(Line(SKIP, "applies", f"n/a: {reason}"))
        return report
    try:
        variables = resolve_vars(exp, build.release_or_version)
        symbols = check_needs(exp, build, variables)
    except KernlabError as error:
        report.lines.append(Line(FAIL, "needs", error.one_line()))
        return report
    report.lines.append(Line(OK, "needs", exp.needs_summary(tools=False)))
    report.lines += guest_lines(exp, _image_files())
    report.lines += _value_lines(exp, {**variables, **{f"SYM_{k}": v for k, v in symbols.items()}})
    report.lines.append(_atlas_line(exp, build, variables))
    env = _env(build, variables, symbols)
    host_steps = [s for s in exp.build if s.kind != "guest"]
    if host_steps:
        try:
            built = build_experiment(exp, build, {k: v for k, v in env.items()
                                                  if not k.startswith("KERNEL_")}, log)
            report.lines.append(Line(OK, "build", f"{len(host_steps)} host step(s) against its "
                                     f"headers: {built}"))
        except KernlabError as error:
            report.lines.append(Line(FAIL, "build", error.one_line()))
    for step in (s for s in exp.steps if s.bpftrace):
        report.lines += _bpftrace_lines(step, build, env, log)
    return report


def check_experiment(exp: Experiment, kernels: list[str]) -> list[KernelReport]:
    """``exp`` (already loaded: the YAML is valid) checked on each kernel."""
    log_dir = paths.state_dir() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    _IMAGE.clear()
    return [check_kernel(exp, kernel, log_dir) for kernel in kernels]


# ---------------------------------------------------------------- the guest image
_IMAGE: dict[str, ImageFiles | str] = {}  # one reading per command: the files, or why none


def _image_files() -> ImageFiles | str:
    """The image a run boots, its files read without booting; or why they cannot be read."""
    if "image" not in _IMAGE:
        try:
            image = find_image()
            files: ImageFiles | str = read_files(image)
            _IMAGE["name"] = f"image {image.recipe}-{image.key[:12]}"
        except KernlabError as error:
            files = error.one_line()
        _IMAGE["image"] = files
    return _IMAGE["image"]


def _relative_ok(exp: Experiment, rel: str) -> str:
    """'' if a relative guest path is a file of the experiment or a build output; else why not."""
    rel = rel.removeprefix("./")
    outputs = {step.out for step in exp.build if step.out}
    if (exp.dir / rel).is_file() or rel in outputs:
        return ""
    if any(step.kind in ("host", "guest") for step in exp.build):
        return "?"  # a build command may make it
    return f"{rel} is neither in {exp.dir} nor a build output"


def _binary_problem(exp: Experiment, files: ImageFiles, what: str, name: str) -> tuple[str, str]:
    """(status, detail) of a program or uprobe binary the guest must have."""
    if "/" not in name:
        found = files.on_path(name)
        if not found:
            return FAIL, f"{what} {name}: not on the guest's PATH in the image"
        if what == "uprobe" and len(found) > 1:
            return FAIL, (f"uprobe binary {name} matches {len(found)} files ({', '.join(found)}): "
                          f"bpftrace refuses it; write uprobe:{found[0]}:...")
        given = " (given to bpftrace -c as that path)" if what == "command" else ""
        return OK, f"{name} is {found[0]}{given}"
    if name.startswith("/"):
        there = files.exists(name)
        if there is False:
            return FAIL, f"{what} {name}: no such file in the image"
        return (OK if there else SKIP), f"{what} {name}" + ("" if there else " (its folder not read)")
    problem = _relative_ok(exp, name)
    if problem == "?":
        return SKIP, f"{what} {name}: not checked (a build command may make it)"
    return (FAIL, f"{what} {problem}") if problem else (OK, f"{what} {name} (the experiment's)")


def guest_lines(exp: Experiment, files: ImageFiles | str) -> list[Line]:
    """The guest tools (needs.tools, bpftrace for bpftrace steps) and each bpftrace step's
    command and uprobe binaries, looked up in the image's files."""
    tools = list(dict.fromkeys(exp.tools + (["bpftrace"] if any(s.bpftrace for s in exp.steps) else [])))
    binaries = [(f"step {s.name}", "command", s.command.split(" ")[0]) for s in exp.steps if s.command]
    binaries += [(f"step {s.name}", "uprobe", b) for s in exp.steps if s.bpftrace
                 for b in sorted(set(UPROBE.findall(_code_only(s.bpftrace))))]
    if not tools and not binaries:
        return []
    if isinstance(files, str):
        return [Line(SKIP, "guest tools", f"not checked: {files}")]
    image = _IMAGE.get("name", "the image")
    lines = []
    if tools:
        missing = [t for t in tools if not files.on_path(t)]
        lines.append(Line(FAIL, "guest tools", f"not in {image} ({files.packages} packages): "
                          f"{', '.join(missing)}; add the package that provides it to vm/bookworm.yaml "
                          "and run `invoke build-image`") if missing else
                     Line(OK, "guest tools", f"{', '.join(tools)} in {image}"))
    for where, what, name in binaries:
        if VAR_NAME.search(name):
            continue  # known per kernel: the run substitutes it
        status, detail = _binary_problem(exp, files, what, name)
        lines.append(Line(status, f"{where} {what}", detail))
    return lines


VAR_NAME = re.compile(r"\$\{\w+\}")


def _value_lines(exp: Experiment, variables: dict[str, str]) -> list[Line]:
    """A ``${NAME}`` in an expectation's min, max or exit code that is no number on this kernel."""
    lines = []
    for i, expectation in enumerate(exp.expectations):
        try:
            resolved(expectation, variables)
        except ValueError as problem:
            lines.append(Line(FAIL, f"expect[{i}] ({expectation.name})", f"{problem}: fix its vars: entry"))
    return lines


def _atlas_line(exp: Experiment, build: BuildRecord, variables: dict[str, str]) -> Line:
    """Every target the experiment attaches to (libbpf SEC(), bpftrace probes, kprobe_events
    lines) through the probe atlas, as the run checks them before it starts."""
    what = "probe targets (atlas)"
    targets = experiment_targets(exp, variables)
    if not targets and network_hooks(exp):
        return Line(SKIP, what, f"no kernel function: {network_note(exp)}")
    if not targets:
        return Line(OK, what, "none found in SEC(), bpftrace programs or kprobe_events lines")
    try:
        rows = rows_kept(targets, build)
    except KernlabError as error:
        return Line(SKIP, what, f"not checked: {error.one_line()}")
    bad = [f"{t}: {r.reason}" + (f" (fix: {r.fix})" if r.fix else "")
           for t, r in zip(targets, rows, strict=True) if not r.attachable]
    if bad:
        return Line(FAIL, what, "; ".join(bad))
    shown = [f"{t}" + (f" (as {r.use})" if r.verdict == "clone" else "")
             for t, r in zip(targets, rows, strict=True)]
    return Line(OK, what, f"{len(targets)} attachable: " + ", ".join(shown))


def report_text(exp: Experiment, reports: list[KernelReport]) -> str:
    """What `invoke check-experiment` prints."""
    lines = [f"{exp.name} ({exp.dir}): experiment.yaml ok"]
    lines += [f"  warn {warning}" for warning in exp.warnings]
    for report in reports:
        lines.append(report.title)
        lines += [f"  {line.status:<4} {line.what}: {line.detail}" for line in report.lines]
    return "\n".join(lines)


def check_command(name: str, kernels: list[str]) -> tuple[str, KernlabError | None]:
    """`invoke check-experiment NAME|PATH`: the report, and the error to exit with (if any).

    A YAML problem raises (one line, before any kernel); ``kernels`` empty: the default.
    """
    exp = load_experiment(name)
    reports = check_experiment(exp, kernels or [load_catalog().default])
    failed = [r.kernel for r in reports if r.failed]
    error = KernlabError(f"{exp.name} failed its checks on {', '.join(failed)}",
                         "fix what the FAIL lines say, then check again") if failed else None
    return report_text(exp, reports), error
