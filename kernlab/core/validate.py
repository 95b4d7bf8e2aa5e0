"""Checks for what a user types or writes: numbers, sizes, names and paths.

Command-line options and YAML values go through these before anything uses them,
so that ``--jobs -3``, ``timeout: .nan`` or ``name: ../../x`` end in one line naming
the flag (or the file and key) instead of a traceback, a silent default or a file
written outside its directory.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from kernlab.core.errors import KernlabError

SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:i?B)?$", re.IGNORECASE)
SIZE_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
              "P": 1 << 50, "E": 1 << 60}  # QEMU's -m: a bare number is MiB
MIN_GUEST_MEMORY = 128 << 20
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class BadNumber:
    """A numeric command-line value that did not parse (reported by the task wrapper)."""

    def __init__(self, flag: str, raw: Any, kind: type) -> None:
        self.flag, self.raw, self.kind = flag, raw, kind

    def error(self) -> KernlabError:
        what = "a whole number" if self.kind is int else "a number"
        return KernlabError(f"--{self.flag} {self.raw!r} is not {what}",
                            f"give --{self.flag} {what}, e.g. --{self.flag} {_example(self.flag)}")


def _example(flag: str) -> str:
    return {"jobs": "4", "cpus": "2", "timeout": "60"}.get(flag, "1")


def number(flag: str, value: Any, *, low: float | None = None, high: float | None = None,
           integer: bool = False, above: float | None = None, fix: str = "") -> Any:
    """``value`` as a finite number within [low, high] (and > above); else one-line error."""
    if isinstance(value, BadNumber):
        raise value.error()
    what = "a whole number" if integer else "a number"
    try:
        parsed = float(value) if not integer else int(str(value).strip())
    except (TypeError, ValueError):
        raise KernlabError(f"--{flag} {value!r} is not {what}", fix or f"give --{flag} {what}") from None
    if not math.isfinite(parsed):
        raise KernlabError(f"--{flag} {value!r} is not a finite number",
                           fix or f"give --{flag} a finite number")
    want = " and ".join(b for b in (f"> {above:g}" if above is not None else "",
                                    f">= {low:g}" if low is not None else "",
                                    f"<= {high:g}" if high is not None else "") if b)
    if ((above is not None and parsed <= above) or (low is not None and parsed < low)
            or (high is not None and parsed > high)):
        raise KernlabError(f"--{flag} {value} is out of range (it must be {want})",
                           fix or f"give --{flag} a value {want}")
    return parsed


def not_empty(flag: str, value: str | None) -> str | None:
    """None stays None (the flag was not given); an empty or blank value is refused."""
    if value is None:
        return None
    if not str(value).strip():
        raise KernlabError(f"--{flag} is empty", f"give --{flag} a value, or leave the flag out")
    return str(value).strip()


def memory(flag: str, value: str) -> str:
    """A QEMU ``-m`` size (``2G``, ``512M``, ``2048``) of at least 128 MiB, normalised to MiB."""
    match = SIZE.match(str(value).strip())
    fix = f"give --{flag} a size like 2G or 512M (at least 128M)"
    if not match:
        raise KernlabError(f"--{flag} {value!r} is not a memory size", fix)
    amount = float(match.group(1)) * SIZE_UNITS[match.group(2).upper()]
    if amount < MIN_GUEST_MEMORY:
        raise KernlabError(f"--{flag} {value} is too small for the lab guest (it needs at least 128M)",
                           fix)
    return f"{int(amount // (1 << 20))}M"


def yaml_number(value: Any, where: str, fail: Any, *, low: float | None = None,
                high: float | None = None, above: float | None = None) -> float:
    """A YAML number that is finite and within range; ``fail(key, problem)`` raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(where, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        fail(where, f"must be a finite number, got {value!r}")
    if above is not None and number <= above:
        fail(where, f"must be > {above:g}, got {value!r}")
    if low is not None and number < low:
        fail(where, f"must be >= {low:g}, got {value!r}")
    if high is not None and number > high:
        fail(where, f"must be <= {high:g}, got {value!r}")
    return number


def inside_path(value: str) -> str | None:
    """Why ``value`` (a relative path from a user's file) would leave its directory; None if fine."""
    text = str(value)
    if not text or not text.strip():
        return "is empty"
    if "\0" in text:
        return "holds a NUL byte"
    path = PurePosixPath(text)
    if path.is_absolute() or text.startswith("~"):
        return f"{text!r} is an absolute path (it must stay inside its directory)"
    if ".." in path.parts:
        return f"{text!r} leaves its directory through '..'"
    return None


def plain_name(value: str) -> str | None:
    """Why ``value`` cannot be one path component (a file or folder name); None if fine."""
    text = str(value)
    if text in (".", "..") or not PLAIN_NAME.match(text):
        return (f"{text!r} is not a plain name (letters, digits, '.', '_', '+', '-'; "
                "no '/', no leading '.')")
    return None


def new_output(path: Path, flag: str) -> Path:
    """``path`` for a command to create: refused when something is already there (a file,
    a link, a directory that is not empty), which it would otherwise overwrite."""
    if path.is_dir() and not path.is_symlink():
        if not any(path.iterdir()):
            return path
    elif not os.path.lexists(path):
        return path
    raise KernlabError(f"{flag} {path} already exists and kernlab does not overwrite it",
                       f"give a new {flag}, or remove that one first")
