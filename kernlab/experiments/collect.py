"""What a run showed: the fetched output turned into evidence (the trace filtered to the
experiment's commands, steps' exits, bpftrace maps and their histograms, rendered artifacts)
and the step outcomes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kernlab.experiments.bundle import Bundle, hist_svg, parse_hist
from kernlab.experiments.expect import Evidence, Outcome
from kernlab.experiments.spec import Experiment
from kernlab.experiments.transfer import disk_full, guest_disk_full

TRACE_LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[\d+\]")


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


def collect(exp: Experiment, fetched: Path, bundle: Bundle) -> tuple[Evidence, list[Outcome]]:
    """Copy what the driver wrote into the bundle; build the evidence to check."""
    out = fetched / "out"
    known = {f"build-{i}" for i in range(len(exp.build))} | {s.name for s in exp.steps}
    steps = [s for s in _read_json(out / "steps.json").get("steps", [])
             if isinstance(s, dict) and s.get("name") in known]  # names become file names
    driver = _read_json(out / "driver.json")
    bundle.facts["steps"] = steps
    bundle.facts["capture"] = driver.get("capture")
    for step in steps:  # a full disk is the cause of whatever failed after it
        log = out / "steps" / f"{step.get('name')}.log"
        if step.get("exit") not in (0, None) and (full := disk_full(_read_text(log))):
            bundle.fail(f"step {step['name']}: {guest_disk_full(full).one_line()}")
    if driver.get("status") != "done":
        bundle.fail(driver.get("reason") or "the guest driver did not finish")
    may_fail = {s.name for s in exp.steps if s.may_fail}
    for step in steps:  # a step killed, by kernlab or not: said before any expectation's verdict
        if (why := killed(step)) and (step["name"] not in may_fail or step.get("killed")):
            bundle.fail(f"step {step['name']} {why}")
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
        elif why := killed(step):
            ok, detail = False, why
        elif step.get("stopped"):
            ok, detail = True, "ran until stopped"
        else:
            ok, detail = step.get("exit") == 0, f"exited {step.get('exit')}"
        outcomes.append(Outcome(f"step {step['name']} ran", "step", ok, detail))
    return outcomes


KILL_EXITS = (-9, 137)  # SIGKILL: the process itself (-9), or the step's shell reporting it (128 + 9)


def killed(step: dict) -> str:
    """Why a step was killed ('' if it was not): kernlab's own note, or a SIGKILL kernlab did
    not send (the guest's OOM killer, a user): whatever failed after it follows from that."""
    if step.get("killed"):
        return str(step["killed"])
    if step.get("exit") in KILL_EXITS and not step.get("stopped") and not step.get("timed_out"):
        return ("was killed (SIGKILL) by something other than kernlab: the guest's OOM killer? "
                "(see console.log)")
    return ""


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
