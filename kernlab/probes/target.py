"""What a user names: ``vfs_read``, ``kprobe:vfs_read``, ``kretprobe:vfs_read``,
``tracepoint:sched:sched_switch``, ``uprobe:/bin/bash:readline``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kernlab.core.errors import KernlabError

KINDS = ("kprobe", "kretprobe", "tracepoint", "uprobe")
NAME = re.compile(r"^[A-Za-z_][\w.]*$")
FORMS = "NAME, kprobe:NAME, kretprobe:NAME, tracepoint:CAT:NAME or uprobe:BINARY:FUNC"


@dataclass(frozen=True)
class Target:
    kind: str  # kprobe | kretprobe | tracepoint | uprobe
    name: str  # function, tracepoint name or uprobe function
    where: str = ""  # tracepoint category or uprobe binary

    def __str__(self) -> str:
        if self.kind == "kprobe":
            return self.name
        if self.kind == "kretprobe":
            return f"kretprobe:{self.name}"
        return f"{self.kind}:{self.where}:{self.name}"


def parse_target(text: str) -> Target:
    """One target; a malformed one is a one-line error naming the accepted forms."""
    raw = text.strip()
    kind, _, rest = raw.partition(":") if ":" in raw else ("kprobe", "", raw)
    kind = {"k": "kprobe", "kr": "kretprobe", "t": "tracepoint", "u": "uprobe", "p": "kprobe",
            "r": "kretprobe"}.get(kind, kind)
    if kind in ("kprobe", "kretprobe") and NAME.match(rest):
        return Target(kind, rest)
    if kind == "tracepoint":
        category, _, name = rest.partition(":")
        if NAME.match(category) and NAME.match(name):
            return Target(kind, name, category)
    if kind == "uprobe":
        binary, _, func = rest.rpartition(":")
        if binary and NAME.match(func):
            return Target(kind, func, binary)
    raise KernlabError(f"target {text!r} is not a probe target", f"write it as {FORMS}")


def parse_targets(texts: list[str]) -> list[Target]:
    """Targets in order, duplicates dropped."""
    seen: dict[Target, None] = {}
    for text in texts:
        for part in text.split(","):
            if part.strip():
                seen.setdefault(parse_target(part), None)
    return list(seen)
