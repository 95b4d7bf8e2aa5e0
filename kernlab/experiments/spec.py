"""An experiment file: ``<folder>/experiment.yaml`` parsed and validated.

An experiment is a folder holding ``experiment.yaml`` and its sources. This module
turns the YAML into an ``Experiment`` (every error names the file and the key). Which
experiments there are and how a name finds one: ``kernlab.experiments.suite``; whether
one fits a kernel: ``kernlab.experiments.fit``; running: ``kernlab.experiments.run``;
expectations: ``kernlab.experiments.expect``. The format is ``experiments/README.md``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.spec import SpecFile
from kernlab.core.util import hash_tree, refuse_special_files, sha256_text
from kernlab.core.validate import inside_path, yaml_number
from kernlab.experiments.expect import Expectation, parse_expectations
from kernlab.guest import splats

SPEC_FILE = "experiment.yaml"
LIB_DIR = "_lib"
FORMAT_DOC = "see experiments/README.md"
STEP_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
CONFIG_KEY = re.compile(r"^CONFIG_[A-Z0-9_]+=(y|m|n|-?[0-9]+|\"[^\"\n]*\")$")  # a vars key on the .config
SIGNALS = ("INT", "TERM", "KILL")
DAY = 86400.0  # no timeout kernlab reads from a file may be longer
VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What ``${NAME}`` may name besides vars and SYM_<symbol>: the host build's environment
# (kernlab.expbuild.build_env, in cflags) and the guest's (exprun._guest_env).
BUILD_NAMES = frozenset({"KERNEL_VERSION", "KERNEL_RELEASE", "KERNEL_BUILD", "KHEADERS",
                         "SAMPLES_BPF", "VMLINUX", "CLANG", "CC"})
# What a run step's shell sees besides vars and SYM_<symbol> (run._guest_env), and what any
# shell has: ``${NAME}`` of another name in a step's cmd is a typo that expands to nothing.
GUEST_NAMES = frozenset({"KL_WORKDIR", "KERNEL_VERSION", "KERNEL_RELEASE"})
SHELL_NAMES = frozenset({"HOME", "PATH", "PWD", "OLDPWD", "USER", "SHELL", "TERM", "HOSTNAME",
                         "RANDOM", "PPID", "UID", "EUID", "BASHPID", "IFS", "LANG", "SECONDS",
                         "PYTHONUNBUFFERED", "LINENO"})
PATH_ENV = "KERNLAB_EXPERIMENT_PATH"  # more experiment folders, added to the suite
PATH_FILE = "experiment-path.txt"  # the same, one folder a line, in the project's root


@dataclass
class BuildStep:
    """One build action: ``bpf`` / ``program`` (host compilers) or a shell command."""

    kind: str  # bpf | program | host | guest
    source: str = ""
    out: str = ""
    cmd: str = ""
    cflags: list[str] = field(default_factory=list)
    libs: list[str] = field(default_factory=list)


@dataclass
class Step:
    """A guest command of the run; background steps run alongside later steps."""

    name: str
    cmd: str
    timeout: float = 60.0
    background: bool = False
    ready: str = ""
    ready_timeout: float = 180.0
    stop_signal: str = "INT"
    may_fail: bool = False
    bpftrace: str = ""  # a ``bpftrace:`` step: the program (file contents or inline text)
    bpftrace_file: str = ""  # the program's file in the experiment folder ('' when inline)
    command: str = ""  # a ``bpftrace:`` step's workload (bpftrace -c): it runs in the foreground


@dataclass
class Capture:
    trace_pipe: bool = True
    max_bytes: int = 8 << 20
    max_seconds: float = 600.0
    comm: list[str] = field(default_factory=list)


@dataclass
class Artifact:
    """A guest file (``path``) or a rendered view (``render``) kept in the bundle."""

    path: str = ""
    render: str = ""  # "" | hist
    source: str = ""  # for render: trace | output | step:NAME | file:PATH
    name: str = ""


@dataclass
class Experiment:
    name: str
    dir: Path
    title: str
    description: str
    kernel_min: str | None
    kernel_max: str | None
    kernel_reason: str
    features: dict[str, str]  # kernel facility -> the Linux release that added it
    config: list[str]
    symbols: dict[str, str]
    tools: list[str]
    outputs: list[str]
    variables: dict[str, dict[str, str]]
    build: list[BuildStep]
    steps: list[Step]
    run_timeout: float
    capture: Capture
    expectations: list[Expectation]
    artifacts: list[Artifact]
    warnings: list[str] = field(default_factory=list)  # traps the loader saw (not errors)
    drain: float = 0.5  # seconds after the last step before background steps are stopped
    splats_expected: list[str] = field(default_factory=list)  # kernel splat classes provoked on purpose
    network: NetworkHook | None = None  # the hook a network experiment attaches at (the matrix's section)

    @property
    def spec_path(self) -> Path:
        return self.dir / SPEC_FILE

    @property
    def lib_dir(self) -> Path:
        """The shared ``_lib`` it builds with: beside it, else the suite's."""
        beside = self.dir.parent / LIB_DIR
        return beside if beside.is_dir() else paths.experiments_dir() / LIB_DIR

    def content_hash(self) -> str:
        """Hash of the experiment folder plus the shared ``_lib`` it builds with."""
        lib = self.lib_dir
        return sha256_text(hash_tree(self.dir) + (hash_tree(lib) if lib.is_dir() else ""))

    def copy_to(self, parent: Path) -> Path:
        """Copy the folder and the ``_lib`` it builds with into ``parent`` (as ``NAME`` and
        ``_lib`` side by side), so the copy has the same content hash; returns the copy."""
        copy = parent / self.dir.name
        shutil.copytree(self.dir, copy, symlinks=True)
        if self.lib_dir.is_dir():
            shutil.copytree(self.lib_dir, parent / LIB_DIR, symlinks=True, dirs_exist_ok=True)
        return copy

    def origin(self) -> dict[str, str]:
        """Where it came from, for bundles: its folder and the content hash."""
        suite = paths.experiments_dir().resolve()
        where = "suite" if self.dir.resolve().parent == suite else "folder"
        return {"source": str(self.dir.resolve()), "origin": where, "hash": self.content_hash()}

    def needs_summary(self, tools: bool = True) -> str:
        """Its needs in a line (``tools=False``: without the guest tools, checked apart)."""
        def shown(symbol: str) -> str:
            var = re.fullmatch(r"\$\{(\w+)\}", symbol)
            return "|".join(self.variables.get(var.group(1), {}).values()) if var else symbol

        parts = [*self.config, *map(shown, self.symbols), *self.outputs, *(self.tools if tools else [])]
        return ", ".join(parts) if parts else "-"

    def kernels_summary(self) -> str:
        """The kernels it runs on: ``any``, or its features' releases and stated bounds."""
        parts = [f"{name} >= {release}" for name, release in self.features.items()]
        if self.kernel_min:
            parts.append(f">= {self.kernel_min}")
        if self.kernel_max:
            parts.append(f"<= {self.kernel_max}")
        return ", ".join(parts) or "any"


# ---------------------------------------------------------------- validation
class _Spec:
    """Typed access to one YAML mapping; every error names file and key path."""

    def __init__(self, file: Path, data: Any, where: str = "") -> None:
        self.file = file
        self.where = where
        if not isinstance(data, dict):
            self.fail("", f"must be a mapping, got {type(data).__name__}")
        self.data: dict = data

    def fail(self, key: str, problem: str, fix: str = FORMAT_DOC) -> None:
        full = ".".join(p for p in (self.where, key) if p) or "(top level)"
        raise KernlabError(f"{self.file}: {full}: {problem}", fix)

    def sub(self, key: str, value: Any) -> _Spec:
        return _Spec(self.file, value, ".".join(p for p in (self.where, key) if p))

    def only(self, *allowed: str) -> None:
        SpecFile(self.file, FORMAT_DOC).known(self.data, allowed, self.where)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                self.fail(key, "is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.fail(key, f"must be a {names}, got {value!r}")
        return value

    def text(self, key: str, default: str = "", required: bool = False) -> str:
        value = self.get(key, (str, int, float), default, required)
        return str(value)

    def strings(self, key: str) -> list[str]:
        value = self.get(key, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.fail(f"{key}[{i}]", f"must be a non-empty string, got {item!r}")
        return list(value)

    def positive(self, key: str, default: float, high: float = DAY) -> float:
        """A finite number > 0 and <= ``high`` (``.inf`` and ``.nan`` are refused)."""
        if key not in self.data or self.data[key] is None:
            return default
        return yaml_number(self.data[key], key, self.fail, above=0, high=high)

    def path(self, key: str, default: str = "", required: bool = False) -> str:
        """A relative path that stays inside its directory (no absolute path, no '..')."""
        value = self.text(key, default, required)
        if value or required:
            problem = inside_path(value)
            if problem:
                self.fail(key, problem)
        return value

    def version(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        text = str(value)
        if not VERSION.match(text):
            self.fail(key, f"must be a kernel version like 5.4 or 6.1.192, got {value!r}")
        return text


def version_tuple(version: str) -> tuple[int, ...]:
    """(6, 1, 192) from '6.1.192'; trailing text such as '-rc1' or '+' is ignored."""
    match = re.match(r"^(\d+(?:\.\d+)*)", version)
    if not match:
        raise KernlabError(f"not a kernel version: {version!r}", "use a version like 6.1")
    return tuple(int(p) for p in match.group(1).split("."))


def _parse_build(spec: _Spec) -> list[BuildStep]:
    steps = []
    for i, raw in enumerate(spec.get("build", list, [])):
        item = spec.sub(f"build[{i}]", raw)
        item.only("bpf", "program", "host", "guest", "out", "cflags", "libs")
        kinds = [k for k in ("bpf", "program", "host", "guest") if k in item.data]
        if len(kinds) != 1:
            item.fail("", "needs exactly one of bpf, program, host, guest")
        kind = kinds[0]
        value = item.path(kind, required=True) if kind in ("bpf", "program") else \
            item.text(kind, required=True)
        step = BuildStep(kind=kind, cflags=item.strings("cflags"), libs=item.strings("libs"))
        if kind in ("bpf", "program"):
            if not (spec.file.parent / value).is_file() and not value.startswith("lib/"):
                item.fail(kind, f"source {value} not found in {spec.file.parent}")
            step.source = value
            default = Path(value).name.removesuffix(".c")
            step.out = item.path("out", default + (".o" if kind == "bpf" else ""))
        else:
            step.cmd = value
        steps.append(step)
    return steps


def _parse_steps(spec: _Spec) -> tuple[list[Step], float, float]:
    run = spec.sub("run", spec.get("run", dict, required=True))
    run.only("timeout", "drain", "steps")
    steps: list[Step] = []
    raw_steps = run.get("steps", list, required=True)
    if not raw_steps:
        run.fail("steps", "must list at least one step")
    for i, raw in enumerate(raw_steps):
        item = run.sub(f"steps[{i}]", raw)
        item.only("name", "cmd", "bpftrace", "command", "timeout", "background", "ready",
                  "ready_timeout", "stop_signal", "may_fail")
        name = item.text("name", required=True)
        if not STEP_NAME.match(name):
            item.fail("name", f"must match {STEP_NAME.pattern}, got {name!r}")
        if name in {s.name for s in steps}:
            item.fail("name", f"duplicate step name {name!r}")
        signal = item.text("stop_signal", "INT")
        if signal not in SIGNALS:
            item.fail("stop_signal", f"must be one of {', '.join(SIGNALS)}")
        ready = item.text("ready")
        _check_regex(item, "ready", ready)
        if ("cmd" in item.data) == ("bpftrace" in item.data):
            item.fail("", "needs exactly one of cmd (a shell command) or bpftrace (a program)")
        step = Step(
            name=name, cmd=item.text("cmd"),
            timeout=item.positive("timeout", 60.0),
            background=item.get("background", bool, False), ready=ready,
            ready_timeout=item.positive("ready_timeout", 180.0), stop_signal=signal,
            may_fail=item.get("may_fail", bool, False),
        )
        if "bpftrace" in item.data:
            _bpftrace_step(item, step)
        elif "command" in item.data:
            item.fail("command", "only a bpftrace: step runs a command (bpftrace -c)")
        elif not step.cmd.strip():
            item.fail("cmd", "is empty")
        steps.append(step)
    if all(s.background for s in steps):
        run.fail("steps", "needs at least one foreground step (the workload)")
    drain = run.data.get("drain")
    drain = DRAIN if drain is None else yaml_number(drain, "drain", run.fail, low=0, high=60)
    return steps, run.positive("timeout", 600.0), drain


DRAIN = 0.5  # run.drain's default: background tools (bpftrace, opensnoop) print what they saw

BPFTRACE_DOC = "see experiments/README.md, 'bpftrace steps'"


def _bpftrace_step(item: _Spec, step: Step) -> None:
    """``bpftrace: FILE.bt | PROGRAM`` (+ ``command:``): fill in what every bpftrace step needs.

    Without ``command`` it runs in the background from the first step on, ready once every
    probe is attached, stopped with SIGINT (so it prints its maps) after the last step; with
    ``command`` it is ``bpftrace -c COMMAND`` in the foreground, ending with the command.
    """
    value = item.text("bpftrace", required=True)
    if not value.strip():
        item.fail("bpftrace", "is empty")
    if "\n" not in value and "{" not in value and value.strip().endswith(".bt"):
        problem = inside_path(value.strip())
        if problem:
            item.fail("bpftrace", problem)
        file = item.file.parent / value.strip()
        if not file.is_file():
            item.fail("bpftrace", f"program file {value.strip()} not found in {item.file.parent}",
                      "give a .bt file in the experiment folder, or the program inline")
        step.bpftrace_file = value.strip()
        try:
            step.bpftrace = file.read_text()
        except (OSError, UnicodeDecodeError) as error:
            item.fail("bpftrace", f"cannot read {file} ({error})", "make it a UTF-8 text file")
    else:
        step.bpftrace = value
    if step.ready:
        item.fail("ready", "a bpftrace step is ready once all its probes are attached; "
                  "kernlab finds that itself", BPFTRACE_DOC)
    if step.stop_signal != "INT":
        item.fail("stop_signal", "bpftrace prints its maps only when stopped with INT", BPFTRACE_DOC)
    step.command = item.text("command")
    if step.command:
        if item.data.get("background"):
            item.fail("background", "a bpftrace step with command: runs in the foreground "
                      "(bpftrace -c ends with the command)", BPFTRACE_DOC)
        step.background = False
    elif item.data.get("background") is False:
        item.fail("background", "a bpftrace step without command: runs in the background "
                  "while later steps run; give command: to run a workload under bpftrace -c",
                  BPFTRACE_DOC)
    else:
        step.background = True
    step.cmd = f"bpftrace ({step.bpftrace_file or 'inline program'})"


BPFTRACE_WORD = re.compile(r"(^|[\s;&|(])bpftrace\s")


def _bpftrace_warnings(steps: list[Step]) -> list[str]:
    """The traps of a plain ``cmd:`` step that runs bpftrace (a bpftrace: step avoids them)."""
    warnings = []
    for i, step in enumerate(steps):
        if step.bpftrace or not BPFTRACE_WORD.search(step.cmd):
            continue
        traps = []
        if not re.search(r"-B\s*line", step.cmd):
            traps.append("no -B line (its output is lost when it is stopped)")
        if step.background:
            traps.append("as a background step nothing tells when its probes are attached "
                         "('Attaching N probes...' and a BEGIN printf come before that)")
            if step.stop_signal != "INT":
                traps.append(f"stopped with {step.stop_signal}, so it prints no maps")
        if traps:
            warnings.append(f"run.steps[{i}] ({step.name}) runs bpftrace in a plain cmd: step: "
                            f"{'; '.join(traps)}; use a bpftrace: step ({BPFTRACE_DOC})")
    return warnings


def _check_regex(spec: _Spec, key: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        spec.fail(key, f"bad regular expression {pattern!r}: {error}")


NETWORK_HOOKS = ("xdp", "tc")


@dataclass(frozen=True)
class NetworkHook:
    """``network: {hook: xdp|tc, mode: TEXT}``: where a network experiment attaches, and how
    (generic, native, test-run, ingress...): the matrix report's networking section."""

    hook: str
    mode: str

    def label(self) -> str:
        return f"{self.hook} {self.mode}"


def _parse_network(spec: _Spec) -> NetworkHook | None:
    if spec.get("network", dict) is None:
        return None
    table = spec.sub("network", spec.get("network", dict))
    table.only("hook", "mode")
    hook, mode = table.text("hook", required=True), table.text("mode", required=True).strip()
    if hook not in NETWORK_HOOKS:
        table.fail("hook", f"must be one of {', '.join(NETWORK_HOOKS)}, got {hook!r}")
    if not mode or len(mode) > 40:
        table.fail("mode", f"must be a short name (generic, native, test-run, ingress...), got {mode!r}")
    return NetworkHook(hook, mode)


def _parse_splats(spec: _Spec) -> list[str]:
    """``splats: {expected: [CLASS...], reason: TEXT}``: the kernel splat classes this
    experiment provokes on purpose (recorded, not a failure); a reason is required."""
    table = spec.sub("splats", spec.get("splats", dict, {}))
    table.only("expected", "reason")
    expected = table.strings("expected")
    for i, name in enumerate(expected):
        if name not in splats.NAMES:
            table.fail(f"expected[{i}]", f"unknown splat class {name!r} (known: {', '.join(splats.NAMES)})")
    if expected and not table.text("reason").strip():
        table.fail("reason", "say why the experiment provokes these splats")
    return expected


def _parse_capture(spec: _Spec) -> Capture:
    raw = spec.get("capture", dict, {})
    cap = spec.sub("capture", raw)
    cap.only("trace_pipe", "max_bytes", "max_seconds", "comm")
    return Capture(
        trace_pipe=cap.get("trace_pipe", bool, True),
        max_bytes=int(cap.positive("max_bytes", 8 << 20, high=1 << 40)),
        max_seconds=cap.positive("max_seconds", 600.0),
        comm=cap.strings("comm"),
    )


OLDER_FORMAT = "an older-format bound, no reason given"


def _parse_kernels(spec: _Spec, notes: list[str]) -> tuple[str | None, str | None, str]:
    """``kernels: {min, max, reason}``. A bound without a reason is the older format (before
    needs.features): it is read as it was meant, with a note in ``notes`` saying what to write."""
    kernels = spec.sub("kernels", spec.get("kernels", dict, {}))
    kernels.only("min", "max", "reason")
    low, high = kernels.version("min"), kernels.version("max")
    reason = kernels.text("reason").strip()
    if (low or high) and not reason:
        reason = OLDER_FORMAT
        notes += [_older_format_note(key, value) for key, value in (("min", low), ("max", high)) if value]
    return low, high, reason


def _older_format_note(key: str, version: str) -> str:
    """What to write instead of a bare ``kernels.min``/``max`` (read, but without a reason)."""
    if key == "min":
        return (f'kernels: {{min: "{version}"}} without a reason is the older format, read as '
                f"n/a before Linux {version}; name what older kernels lack instead: "
                f'needs: {{features: {{NAME: "{version}"}}}} (or drop kernels: to run on every kernel)')
    return (f'kernels: {{max: "{version}"}} without a reason is the older format, read as n/a '
            f'after Linux {version}; add the reason: kernels: {{max: "{version}", reason: "what newer '
            'kernels break"}')


def _parse_features(needs: _Spec) -> dict[str, str]:
    """``needs.features: {NAME: RELEASE}``: a kernel facility and the release that added it."""
    table = needs.sub("features", needs.get("features", dict, {}))
    features = {}
    for name, release in table.data.items():
        if not isinstance(name, str) or not name.strip() or "\n" in name:
            table.fail(str(name), "a feature name is a non-empty one-line string")
        if not isinstance(release, str) or not VERSION.match(release):
            table.fail(name, f'must be the quoted Linux release that added it, like "5.5", got '
                             f"{release!r} (YAML reads an unquoted 5.10 as 5.1)")
        features[name] = release
    return features


def _parse_needs(spec: _Spec) -> tuple[list[str], dict[str, str], list[str], list[str], dict[str, str]]:
    """``needs``: config options, symbols, guest tools, build outputs, kernel features."""
    needs = spec.sub("needs", spec.get("needs", dict, {}))
    needs.only("config", "symbols", "tools", "outputs", "features")
    config = [c.removeprefix("CONFIG_") for c in needs.strings("config")]
    raw_symbols = needs.get("symbols", (list, dict), [])
    if isinstance(raw_symbols, list):
        symbols = {s: "" for s in needs.strings("symbols")}
    else:
        symbols = {str(k): str(v or "") for k, v in raw_symbols.items()}
    return config, symbols, needs.strings("tools"), needs.strings("outputs"), _parse_features(needs)


def _parse_vars(spec: _Spec) -> dict[str, dict[str, str]]:
    """``vars: {NAME: {"<min version>": value, "CONFIG_X=y": value, ...}}``: a config entry the
    kernel's .config matches wins, else the highest min version <= the kernel's."""
    raw = spec.get("vars", dict, {})
    out: dict[str, dict[str, str]] = {}
    for name, table in raw.items():
        if not re.match(r"^[A-Z][A-Z0-9_]*$", str(name)):
            spec.fail(f"vars.{name}", "names are UPPER_CASE (they become environment variables)")
        sub = spec.sub(f"vars.{name}", table)
        for key in sub.data:
            if not VERSION.match(str(key)) and not CONFIG_KEY.match(str(key)):
                sub.fail(str(key), "keys are minimum kernel versions like '4.17' or '0', or config "
                                   "values like 'CONFIG_KPROBE_EVENTS_ON_NOTRACE=y'")
        out[str(name)] = {str(k): str(v) for k, v in sub.data.items()}
    return out


def _parse_artifacts(spec: _Spec) -> list[Artifact]:
    arts = []
    for i, raw in enumerate(spec.get("artifacts", list, [])):
        if isinstance(raw, str):
            problem = inside_path(raw)
            if problem:
                spec.fail(f"artifacts[{i}]", f"{problem}; an artifact is a file under the "
                          "experiment's guest workdir")
            arts.append(Artifact(path=raw, name=Path(raw).name))
            continue
        item = spec.sub(f"artifacts[{i}]", raw)
        item.only("path", "render", "from", "name")
        render = item.text("render")
        if render and render != "hist":
            item.fail("render", "only 'hist' (a bpftrace histogram) can be rendered")
        path = item.path("path")
        if not path and not render:
            item.fail("", "needs path (a guest file) or render")
        name = item.path("name", Path(path).name if path else "histogram")
        arts.append(Artifact(path=path, render=render, source=item.text("from", "output"),
                             name=name))
    names = [a.name for a in arts]
    for i, name in enumerate(names):
        if names.index(name) != i:
            spec.fail(f"artifacts[{i}].name", f"duplicate artifact name {name!r}")
    return arts


def assigned_names(cmd: str) -> set[str]:
    """Shell variables a command sets itself (``X=``, ``for X in``, ``read X``)."""
    names = set(re.findall(r"(?:^|[\s;&|(])([A-Za-z_]\w*)=", cmd))
    names |= set(re.findall(r"\bfor\s+([A-Za-z_]\w*)\s+in\b", cmd))
    for args in re.findall(r"\bread\s+((?:-\w+\s+)*(?:[A-Za-z_]\w*\s*)+)", cmd):
        names |= {a for a in args.split() if not a.startswith("-")}
    return names


def _check_references(spec: _Spec, symbols: dict[str, str], variables: dict[str, dict[str, str]],
                      build: list[BuildStep], expectations: list[Expectation],
                      steps: list[Step] | None = None) -> None:
    """Every ``${NAME}`` kernlab substitutes names something defined (else it never matches)."""
    sym_names = set()
    for raw in symbols:
        ref = re.fullmatch(r"\$\{(\w+)\}", raw)
        values = variables.get(ref.group(1), {}).values() if ref else [raw]
        sym_names |= {f"SYM_{v}" for v in values}
    defined = set(variables) | sym_names

    def check(key: str, text: str, allowed: set[str]) -> None:
        for name in VAR_REF.findall(text):
            if name not in allowed:
                shown = sorted(allowed - SHELL_NAMES - BUILD_NAMES | (allowed & GUEST_NAMES))
                spec.fail(key, f"${{{name}}} is not defined (defined here: "
                          f"{', '.join(shown) or 'none'}); add it under vars:")

    for raw in symbols:
        check(f"needs.symbols.{raw}", raw, set(variables))
    for i, step in enumerate(build):
        for j, flag in enumerate(step.cflags):
            check(f"build[{i}].cflags[{j}]", flag, defined | BUILD_NAMES)
    for i, exp in enumerate(expectations):
        for key, text in exp.texts().items():
            check(f"expect[{i}].{key}", text, defined)
    for i, step in enumerate(steps or []):
        if step.bpftrace:  # kernlab substitutes these before bpftrace sees the program
            where = f"run.steps[{i}].bpftrace" + (f" ({step.bpftrace_file})" if step.bpftrace_file else "")
            check(where, step.bpftrace, defined | GUEST_NAMES)
            check(f"run.steps[{i}].command", step.command, defined | GUEST_NAMES | SHELL_NAMES)
        else:  # the shell expands an unknown name to nothing
            check(f"run.steps[{i}].cmd", step.cmd,
                  defined | GUEST_NAMES | SHELL_NAMES | assigned_names(step.cmd))


def parse_experiment(file: Path) -> Experiment:
    """Validate one ``experiment.yaml``; raise KernlabError naming file and key."""
    refuse_special_files(file.parent)  # its content hash reads every file: a FIFO would hang it
    spec = _Spec(file, SpecFile(file, FORMAT_DOC).load(empty={}))
    spec.only("title", "description", "kernels", "needs", "vars", "build", "run", "capture",
              "expect", "artifacts", "splats", "network")
    notes: list[str] = []
    kernel_min, kernel_max, kernel_reason = _parse_kernels(spec, notes)
    steps, run_timeout, drain = _parse_steps(spec)
    config, symbols, tools, outputs, features = _parse_needs(spec)
    raw_expect = spec.get("expect", list, required=True)
    if not raw_expect:
        spec.fail("expect", "must list at least one expectation")
    step_names = [s.name for s in steps]
    expectations = parse_expectations(
        raw_expect, step_names, lambda key, msg: spec.fail(f"expect{key}", msg),
        lambda data, allowed, where: SpecFile(file, FORMAT_DOC).known(data, allowed, f"expect{where}"))
    variables, build = _parse_vars(spec), _parse_build(spec)
    _check_references(spec, symbols, variables, build, expectations, steps)
    return Experiment(
        name=file.parent.name, dir=file.parent,
        title=spec.text("title", required=True),
        description=spec.text("description", required=True).strip(),
        kernel_min=kernel_min, kernel_max=kernel_max, kernel_reason=kernel_reason,
        features=features, config=config, symbols=symbols, tools=tools, outputs=outputs,
        variables=variables, build=build, steps=steps,
        run_timeout=run_timeout, drain=drain, capture=_parse_capture(spec),
        expectations=expectations, artifacts=_parse_artifacts(spec),
        warnings=notes + _bpftrace_warnings(steps), splats_expected=_parse_splats(spec),
        network=_parse_network(spec),
    )
