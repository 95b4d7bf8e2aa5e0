"""The probe atlas for experiments: the targets an experiment uses, checked before it runs,
and `invoke probes` (given targets, an experiment's, or both; static, then ``--live``).

An experiment's targets: its BPF sources' ``SEC("kprobe/...")``, ``kretprobe/``,
``tracepoint/CAT/NAME`` (macros resolved from the step's ``-DNAME=...`` cflags and the
kernel's ``vars:``), bpftrace probes (``.bt`` files and ``bpftrace -e`` commands) and
``p:``/``r:`` lines written to ``kprobe_events``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.experiments.expect import substitute
from kernlab.experiments.fit import resolve_vars
from kernlab.experiments.spec import Experiment
from kernlab.experiments.suite import load_experiment
from kernlab.kernel.selection import built_versions
from kernlab.probes import live as live_check
from kernlab.probes.atlas import Kernel, Row, resolve_kernel, row_for, rows_kept
from kernlab.probes.target import Target, parse_targets

SEC = re.compile(r'SEC\(\s*((?:"[^"]*"\s*|[A-Za-z_]\w*\s*)+)\)')
BPFTRACE = re.compile(r"\b(kprobe|kretprobe|k|kr|tracepoint|t):([A-Za-z_][\w.]*(?::[A-Za-z_]\w*)?)")
KPROBE_EVENT = re.compile(r"""(?:^|['"\s])([pr])(?::[\w/]+)?\s+([A-Za-z_][\w.]*)(?:\+\d+)?[\s'"]""")
DEFINE = re.compile(r"""-D([A-Za-z_]\w*)=(?:\\?"|')?([^"'\s]*)""")


def _macros(cflags: list[str], variables: dict[str, str]) -> dict[str, str]:
    """-DNAME="value" of a bpf step, ${VARS} substituted (${SYM_x} left unresolved means x)."""
    found = {}
    for flag in cflags:
        text = re.sub(r"\$\{SYM_(\w+)\}", r"\1", substitute(flag, variables))
        for name, value in DEFINE.findall(text):
            found[name] = value.strip('"\\')
    return found


def _sec_targets(text: str, macros: dict[str, str]) -> list[str]:
    """Targets from SEC("kprobe/" NAME) lines; a macro's value comes from ``macros`` or its #define."""
    defaults = dict(re.findall(r'#define\s+(\w+)\s+"([^"]*)"', text))
    targets = []
    for match in SEC.finditer(text):
        parts = re.findall(r'"([^"]*)"|([A-Za-z_]\w*)', match.group(1))
        section = "".join(s or macros.get(m, defaults.get(m, m)) for s, m in parts)
        kind, _, rest = section.partition("/")
        if kind in ("kprobe", "kretprobe") and rest:
            targets.append(f"{kind}:{rest}")
        elif kind == "tracepoint" and rest.count("/") == 1:
            targets.append("tracepoint:" + rest.replace("/", ":"))
    return targets


# libbpf section names of programs that attach to a network device, not to a kernel function
NETWORK_SECTIONS = {"xdp": "XDP", "xdp.frags": "XDP", "xdp_devmap": "XDP", "xdp_cpumap": "XDP",
                    "tc": "tc", "classifier": "tc", "action": "tc", "tcx": "tc"}
BCC_NETWORK = {"attach_xdp": "XDP", "BPF.SCHED_CLS": "tc", "BPF.SCHED_ACT": "tc"}


def source_path(exp: Experiment, source: str) -> Path:
    """Where a build step's source is: the folder's, or the shared _lib's for ``lib/...``."""
    if source.startswith("lib/"):
        return exp.lib_dir / source.removeprefix("lib/")
    return exp.dir / source


def network_hooks(exp: Experiment) -> list[str]:
    """The network hooks ``exp``'s programs attach to (``XDP``, ``tc``): its libbpf sources'
    SEC() names and its bcc scripts' attach calls. The probe atlas does not check these."""
    found: list[str] = []
    for step in exp.build:
        path = source_path(exp, step.source) if step.source else None
        if step.kind == "bpf" and path and path.is_file():
            for match in SEC.finditer(path.read_text(errors="replace")):
                section = "".join(re.findall(r'"([^"]*)"', match.group(1))).partition("/")[0]
                found.append(NETWORK_SECTIONS.get(section, ""))
    for script in sorted(exp.dir.glob("*.py")):
        text = script.read_text(errors="replace")
        found += [hook for call, hook in BCC_NETWORK.items() if call in text]
    return sorted({hook for hook in found if hook})


def network_note(exp: Experiment) -> str:
    """What the atlas says of an experiment whose programs attach to network devices."""
    hooks = " and ".join(network_hooks(exp))
    return (f"its {hooks} programs attach to a network device (xdp:DEV, tc:DEV:ingress), which the "
            "probe atlas does not check: it answers for kernel functions, tracepoints and uprobes; "
            "whether a kernel has the hook is the experiment's needs.features and the matrix "
            "report's Networking section")


def experiment_targets(exp: Experiment, variables: dict[str, str]) -> list[Target]:
    """The probe targets ``exp`` attaches to on a kernel with these ``variables``."""
    words: list[str] = []
    for step in exp.build:
        path = source_path(exp, step.source) if step.source else None
        if step.kind == "bpf" and path and path.is_file():
            words += _sec_targets(path.read_text(errors="replace"), _macros(step.cflags, variables))
    scripts = [p.read_text(errors="replace") for p in sorted(exp.dir.glob("*.bt"))]
    commands = [substitute(s.cmd, variables) for s in exp.steps] + [s.cmd for s in exp.build if s.cmd]
    for text in scripts + [c for c in commands if "bpftrace" in c]:
        for kind, name in BPFTRACE.findall(text):
            kind = {"k": "kprobe", "kr": "kretprobe", "t": "tracepoint"}.get(kind, kind)
            if kind != "tracepoint" or ":" in name:
                words.append(f"{kind}:{name}")
    for command in commands:
        if "kprobe_events" in command:
            words += [f"{'kretprobe' if k == 'r' else 'kprobe'}:{n}"
                      for k, n in KPROBE_EVENT.findall(command)]
    return parse_targets(words)


def check_targets(exp: Experiment, build: BuildRecord, variables: dict[str, str]) -> None:
    """Before a run: every target ``exp`` uses must be attachable on ``build``; otherwise stop
    with the atlas's reason and fix (not a loader error from deep in libbpf)."""
    targets = experiment_targets(exp, variables)
    if not targets:
        return
    try:
        rows = rows_kept(targets, build)
    except KernlabError as error:  # a build without readable outputs: the run says what is wrong
        reporter().warn(f"probe targets not checked: {error.cause}")
        return
    for target, row in zip(targets, rows, strict=True):
        if not row.attachable:
            raise KernlabError(f"{exp.name}: {target} is not attachable on {row.kernel}: {row.reason}",
                               row.fix or "see `invoke probes " + str(target) + f" --kernels {row.kernel}`")


@dataclass
class AtlasResult:
    rows: list[Row]
    live: list[live_check.LiveResult] = field(default_factory=list)

    @property
    def defects(self) -> list[live_check.LiveResult]:
        return [r for r in self.live if not r.agrees]

    def to_json(self) -> dict[str, Any]:
        return {"rows": [r.to_json() for r in self.rows], "live": [r.to_json() for r in self.live],
                "defects": len(self.defects)}

    def text(self, table: Callable[[list[Row]], str]) -> str:
        out = table(self.rows)
        if self.live:
            out += "\n\n" + live_check.live_table(self.live)
        return out


def atlas_rows(words: list[str], kernels: list[str], experiment: str | None,
               live: bool = False, vm_name: str = "probes") -> AtlasResult:
    """`invoke probes`: the static rows for ``words`` and ``experiment``'s targets on each
    kernel (default: every built catalog version), then with ``live`` the booted check."""
    if not words and not experiment:
        raise KernlabError("no target given", "name functions, tracepoint:CAT:NAME or uprobe:BIN:FUNC, "
                           "or --experiment NAME")
    given = parse_targets(words)
    exp = load_experiment(experiment) if experiment else None
    rows: list[Row] = []
    chosen = kernels or built_versions()
    if not chosen:
        raise NotFound("no kernel is built, so there is nothing to check the targets against",
                       "build one first: `invoke build-kernel --version 6.1` (then `invoke probes` "
                       "checks every built catalog version, or name some with --kernels)")
    loaded = [Kernel(resolve_kernel(k)) for k in chosen]
    for kernel in loaded:
        targets = list(given)
        if exp is not None:
            used = experiment_targets(exp, resolve_vars(exp, kernel.release))
            targets += [t for t in used if t not in targets]
        rows += [row_for(t, kernel) for t in targets]
    if not rows and exp is not None and network_hooks(exp):
        raise KernlabError(f"experiment {experiment} uses no probe target: {network_note(exp)}",
                           f"`invoke list-experiments` shows the release each hook needs; `invoke matrix "
                           f"--experiments {experiment}` runs it on each kernel")
    if not rows:  # only --experiment, and it attaches to nothing kernlab can read
        raise KernlabError(f"experiment {experiment} uses no probe target kernlab can find (no SEC() "
                           "kprobe/tracepoint, bpftrace probe or kprobe_events line)",
                           "name the targets to check: `invoke probes FUNCTION ...`")
    result = AtlasResult(rows)
    if live:
        result.live = live_check.confirm(rows, {k.id: k.build for k in loaded}, vm_name)
    return result
