"""Kernel splats: the reports a guest kernel prints when something went wrong in it.

The classes are those the kernel's BPF CI fails a run on (libbpf/ci's
``check-kernel-splats``: a deny list over dmesg): a ``WARNING:`` with its call trace,
``BUG:``, KASAN/KFENCE/UBSAN reports, lockdep, RCU stalls, hung tasks, soft and hard
lockups, an Oops and a panic. ``find_splats`` turns a log (dmesg or the serial console,
with or without ``[ time]`` prefixes) into one ``Splat`` per report: its class, its first
line and its whole text (up to the report's end marker). A run fails on any splat whose
class its experiment does not declare expected (``splats: {expected: [...]}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Most specific first: the first pattern a line matches names its class.
CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    ("kasan", r"BUG: KASAN: |KASAN: .* in "),
    ("kfence", r"BUG: KFENCE: "),
    ("ubsan", r"UBSAN: "),
    ("lockdep", r"possible circular locking dependency detected|inconsistent lock state|"
                r"possible recursive locking detected|suspicious RCU usage|"
                r"possible irq lock inversion dependency detected|"
                r"lock held when returning to user space|bad unlock balance detected"),
    ("rcu-stall", r"rcu: INFO: rcu_\w+ (self-)?detected stall|INFO: rcu_\w+ (self-)?detected stall|"
                  r"rcu_\w+ self-detected stall on CPU"),
    ("hung-task", r"INFO: task .+ blocked for more than \d+ seconds"),
    ("soft-lockup", r"BUG: soft lockup"),
    ("hard-lockup", r"Watchdog detected hard LOCKUP|NMI watchdog: .*hard LOCKUP"),
    ("warning", r"WARNING: CPU: \d+ PID: \d+ at |WARNING: at "),
    ("oops", r"Oops: |general protection fault|BUG: unable to handle"),
    ("bug", r"BUG: |kernel BUG at "),
    ("panic", r"Kernel panic - not syncing"),
))
NAMES = tuple(name for name, _ in CLASSES)
END = re.compile(r"---\[ end (trace|Kernel panic)")
TIME = re.compile(r"^\[\s*\d+\.\d+\]\s?")
MAX_LINES = 80  # a report longer than this is cut (its first lines are what a reader needs)
KMSG_MARK = "kernlab: run {tag} begins"


@dataclass(frozen=True)
class Splat:
    """One kernel report: its class (one of NAMES), first line, and full text."""

    kind: str
    line: str
    text: str

    def first_lines(self, count: int = 4) -> list[str]:
        """The report's first ``count`` lines, without timestamps."""
        return [TIME.sub("", line) for line in self.text.splitlines()[:count]]

    def to_json(self, expected: bool = False) -> dict[str, object]:
        return {"class": self.kind, "line": self.line, "expected": expected}


def classify(line: str) -> str | None:
    """The splat class whose report starts at ``line``, or None."""
    for name, pattern in CLASSES:
        if pattern.search(line):
            return name
    return None


def find_splats(text: str) -> list[Splat]:
    """Every report in ``text`` (a kernel log), in order. A report runs from its first line
    to its end marker (``---[ end trace``), the next report, or MAX_LINES."""
    found: list[Splat] = []
    current: list[str] = []
    kind = ""

    def close() -> None:
        if current:
            found.append(Splat(kind, TIME.sub("", current[0]).strip(), "\n".join(current) + "\n"))
            current.clear()

    for line in text.splitlines():
        starts = classify(line)
        if starts and not (current and _same_report(kind, starts)):
            close()
            kind = starts
            current.append(line)
        elif current:
            current.append(line)
            if END.search(line) or len(current) >= MAX_LINES:
                close()
    close()
    return found


def _same_report(open_kind: str, new_kind: str) -> bool:
    """A line of class ``new_kind`` inside an open ``open_kind`` report that belongs to it
    (an Oops names its ``BUG: unable to handle`` first and ``Oops:`` next; a panic follows
    the Oops it ends)."""
    return open_kind == "oops" and new_kind in ("oops", "bug")


def unique(splats: list[Splat]) -> list[Splat]:
    """``splats`` without repeats of one first line (the console and dmesg show the same report)."""
    seen: set[str] = set()
    kept = []
    for splat in splats:
        if splat.line not in seen:
            seen.add(splat.line)
            kept.append(splat)
    return kept


def after_mark(dmesg: str, tag: str) -> str:
    """The part of ``dmesg`` after the run's mark (all of it when the mark is gone: the ring
    buffer wrapped)."""
    mark = KMSG_MARK.format(tag=tag)
    where = dmesg.rfind(mark)
    if where < 0:
        return dmesg
    return dmesg[dmesg.find("\n", where) + 1:] if "\n" in dmesg[where:] else ""


def mark_command(tag: str) -> str:
    """A guest shell command that writes the run's mark into the kernel log (KERN_INFO, so
    a ``quiet`` console does not show it)."""
    return f"echo '<6>{KMSG_MARK.format(tag=tag)}' > /dev/kmsg"


def summary(splats: list[Splat]) -> str:
    """``2 warning, 1 hung-task`` (or ``none``)."""
    counts: dict[str, int] = {}
    for splat in splats:
        counts[splat.kind] = counts.get(splat.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"


def report_text(splats: list[Splat], expected: list[str]) -> str:
    """The artifact's text: each report, headed by its class and whether it was expected."""
    parts = []
    for splat in splats:
        how = "expected by the experiment" if splat.kind in expected else "unexpected: fails the run"
        parts.append(f"==> {splat.kind} ({how}) <==\n{splat.text}")
    return "\n".join(parts)
