"""Expectations: what a run's trace and output must (not) show, and their checking.

Kinds, one per YAML item (``in`` picks the text: ``trace``, ``output``,
``step:NAME`` or ``file:PATH``):

- ``contains: RE`` with optional ``min`` / ``max`` line counts (default min 1)
- ``absent: RE``: no line matches
- ``sequence: [RE, ...]``: lines matching each, in this order (others may come between)
- ``value: RE-with-one-group`` and ``equals`` / ``min`` / ``max``: every match's value
- ``rejected: {step, message}``: the step failed and its output holds the message
  (an expected verifier rejection)
- ``exit: {step, code}``: a step's exit status (``code: nonzero`` allowed)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kernlab.core.validate import yaml_number

KINDS = ("contains", "absent", "sequence", "value", "rejected", "exit")
MAX_LINES = 20


@dataclass
class Expectation:
    kind: str
    name: str
    source: str = "trace"
    patterns: list[str] = field(default_factory=list)
    min: float | str | None = None  # a str is one ``${NAME}``, resolved per kernel
    max: float | str | None = None
    equals: Any = None
    step: str = ""
    code: int | str | None = None  # 0..255, "nonzero" or one ``${NAME}``

    def texts(self) -> dict[str, str]:
        """Every value that may hold a ``${NAME}``, by key: patterns, min, max, equals, code."""
        keys = {"contains": [""], "absent": [""], "value": [""], "rejected": [".message"]}
        named = {f"{self.kind}{k}": p for k, p in zip(keys.get(self.kind, []), self.patterns, strict=False)}
        if self.kind == "sequence":
            named = {f"sequence[{i}]": p for i, p in enumerate(self.patterns)}
        for key, value in (("min", self.min), ("max", self.max), ("equals", self.equals),
                           ("exit.code", self.code)):
            if isinstance(value, str):
                named[key] = value
        return named


@dataclass
class Outcome:
    """One checked expectation: pass/fail, why, and the lines that matched."""

    name: str
    kind: str
    passed: bool
    detail: str
    matched: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "passed": self.passed,
                "detail": self.detail, "matched": self.matched}


@dataclass
class Evidence:
    """What a run collected: texts by source and each step's exit status."""

    texts: dict[str, str]
    exits: dict[str, int | None]  # None: did not finish (timed out, never ran)

    def text(self, source: str) -> str | None:
        return self.texts.get(source)


Fail = Callable[[str, str], None]
Known = Callable[[dict, Iterable[str], str], None]  # SpecFile.known(data, allowed, where)


ONE_VAR = re.compile(r"\s*\$\{[A-Za-z_][A-Za-z0-9_]*\}\s*")


def _number(item: dict, key: str, where: str, fail: Fail, low: float | None = None) -> float | str | None:
    """A finite number (``.inf``/``.nan`` refused), at least ``low`` when given, or one
    ``${NAME}`` (checked once its value is known: ``resolved``)."""
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, str) and ONE_VAR.fullmatch(value):
        return value.strip()
    if isinstance(value, str):
        fail(f"{where}.{key}", f"must be a number or one ${{NAME}} from vars:, got {value!r}")
    return yaml_number(value, f"{where}.{key}", fail, low=low)


def _range(exp: Expectation, where: str, fail: Fail) -> None:
    if isinstance(exp.min, str) or isinstance(exp.max, str):
        return  # known per kernel (resolved)
    if exp.min is not None and exp.max is not None and exp.min > exp.max:
        fail(f"{where}.min", f"min {exp.min:g} is greater than max {exp.max:g}: nothing can pass")


def _regex(pattern: Any, where: str, fail: Fail) -> str:
    if not isinstance(pattern, str) or not pattern:
        fail(where, f"must be a non-empty regular expression, got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as error:
        fail(where, f"bad regular expression {pattern!r}: {error}")
    return pattern


def _source(item: dict, where: str, steps: list[str], fail: Fail, default: str) -> str:
    source = item.get("in", default)
    if not isinstance(source, str):
        fail(f"{where}.in", f"must be a string, got {source!r}")
    if source in ("trace", "output") or source.startswith("file:"):
        return source
    if source.startswith("step:"):
        if source[5:] not in steps:
            fail(f"{where}.in", f"no step named {source[5:]!r} (steps: {', '.join(steps)})")
        return source
    fail(f"{where}.in", f"must be trace, output, step:NAME or file:PATH, got {source!r}")
    return source


def _step_ref(value: Any, where: str, steps: list[str], fail: Fail, known: Known,
              allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("step"), str):
        fail(where, "must be a mapping with a step name")
    known(value, allowed, where)
    if value["step"] not in steps:
        fail(f"{where}.step", f"no step named {value['step']!r} (steps: {', '.join(steps)})")
    return value


def parse_expectation(item: Any, index: int, steps: list[str], fail: Fail, known: Known) -> Expectation:
    """One YAML expectation; ``fail(key, problem)`` raises with file and key."""
    where = f"[{index}]"
    if not isinstance(item, dict):
        fail(where, f"must be a mapping, got {item!r}")
    kinds = [k for k in KINDS if k in item]
    if len(kinds) != 1:
        fail(where, f"needs exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    allowed = {"name", "in", kind} | {
        "contains": {"min", "max"}, "value": {"equals", "min", "max"}}.get(kind, set())
    known(item, sorted(allowed), where)
    exp = Expectation(kind=kind, name=str(item.get("name") or ""))
    body = item[kind]
    if kind in ("contains", "absent", "value"):
        exp.patterns = [_regex(body, f"{where}.{kind}", fail)]
        exp.source = _source(item, where, steps, fail, "trace")
        counts = 0 if kind == "contains" else None  # a line count cannot be negative
        exp.min = _number(item, "min", where, fail, low=counts)
        exp.max = _number(item, "max", where, fail, low=counts)
        _range(exp, where, fail)
        if kind == "value":
            if re.compile(body).groups < 1:
                fail(f"{where}.value", "needs one (group) holding the value")
            exp.equals = item.get("equals")
            if exp.equals is None and exp.min is None and exp.max is None:
                fail(where, "a value expectation needs equals, min or max")
            if isinstance(exp.equals, float) and not math.isfinite(exp.equals):
                fail(f"{where}.equals", f"must be a finite number or a string, got {exp.equals!r}")
            if not isinstance(exp.equals, (str, int, float, type(None))):
                fail(f"{where}.equals", f"must be a number or a string, got {exp.equals!r}")
    elif kind == "sequence":
        if not isinstance(body, list) or len(body) < 2:
            fail(f"{where}.sequence", "must list at least two regular expressions")
        exp.patterns = [_regex(p, f"{where}.sequence[{i}]", fail) for i, p in enumerate(body)]
        exp.source = _source(item, where, steps, fail, "trace")
    elif kind == "rejected":
        ref = _step_ref(body, f"{where}.rejected", steps, fail, known, ("step", "message"))
        exp.step = ref["step"]
        exp.patterns = [_regex(ref.get("message"), f"{where}.rejected.message", fail)]
        exp.source = f"step:{exp.step}"
    else:
        ref = _step_ref(body, f"{where}.exit", steps, fail, known, ("step", "code"))
        exp.step = ref["step"]
        exp.code = ref.get("code", 0)
        if isinstance(exp.code, str) and ONE_VAR.fullmatch(exp.code):
            exp.code = exp.code.strip()
        elif not (exp.code == "nonzero" or (isinstance(exp.code, int) and not isinstance(exp.code, bool)
                                            and 0 <= exp.code <= 255)):
            fail(f"{where}.exit.code", f"must be an exit status 0..255, 'nonzero' or one ${{NAME}}, "
                 f"got {exp.code!r}")
    exp.name = exp.name or _default_name(exp)
    return exp


def _default_name(exp: Expectation) -> str:
    if exp.kind in ("rejected", "exit"):
        return f"{exp.kind} {exp.step}"
    return f"{exp.kind} {exp.patterns[0]}"[:80]


def parse_expectations(items: list, steps: list[str], fail: Fail, known: Known) -> list[Expectation]:
    out = [parse_expectation(item, i, steps, fail, known) for i, item in enumerate(items)]
    names = [e.name for e in out]
    for i, name in enumerate(names):
        if names.index(name) != i:
            fail(f"[{i}].name", f"duplicate expectation name {name!r}")
    return out


# ---------------------------------------------------------------- checking
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(text: str, variables: dict[str, str]) -> str:
    """Replace ``${NAME}`` with its value (unknown names stay as they are)."""
    return VAR.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _matching(lines: list[str], pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [line for line in lines if regex.search(line)]


def _check_contains(exp: Expectation, lines: list[str]) -> Outcome:
    hits = _matching(lines, exp.patterns[0])
    low = 1 if exp.min is None else exp.min
    ok = len(hits) >= low and (exp.max is None or len(hits) <= exp.max)
    want = f">= {low:g}" + (f" and <= {exp.max:g}" if exp.max is not None else "")
    return Outcome(exp.name, exp.kind, ok, f"{len(hits)} matching lines (want {want})",
                   hits[:MAX_LINES])


def _check_absent(exp: Expectation, lines: list[str]) -> Outcome:
    hits = _matching(lines, exp.patterns[0])
    detail = "no matching line" if not hits else f"{len(hits)} lines match, want none"
    return Outcome(exp.name, exp.kind, not hits, detail, hits[:MAX_LINES])


def _check_sequence(exp: Expectation, lines: list[str]) -> Outcome:
    matched: list[str] = []
    at = 0
    for n, pattern in enumerate(exp.patterns):
        regex = re.compile(pattern)
        while at < len(lines) and not regex.search(lines[at]):
            at += 1
        if at == len(lines):
            after = f" after {matched[-1]!r}" if matched else ""
            return Outcome(exp.name, exp.kind, False,
                           f"item {n + 1}/{len(exp.patterns)} {pattern!r} not found{after}",
                           matched[-MAX_LINES:])
        matched.append(lines[at])
        at += 1
    return Outcome(exp.name, exp.kind, True, f"all {len(exp.patterns)} items in order",
                   matched[:MAX_LINES * 3])


def _value_ok(exp: Expectation, raw: str) -> bool:
    number = _as_number(raw)
    if exp.equals is not None:
        if isinstance(exp.equals, (int, float)) and not isinstance(exp.equals, bool):
            if number is None or number != float(exp.equals):
                return False
        elif raw != str(exp.equals):
            return False
    if exp.min is not None and (number is None or number < exp.min):
        return False
    return not (exp.max is not None and (number is None or number > exp.max))


def _check_value(exp: Expectation, lines: list[str]) -> Outcome:
    regex = re.compile(exp.patterns[0])
    values, hits = [], []
    for line in lines:
        match = regex.search(line)
        if match:
            values.append(match.group(1))
            hits.append(line)
    want = " ".join(f"{k} {v}" for k, v in (("==", exp.equals), (">=", exp.min),
                                           ("<=", exp.max)) if v is not None)
    if not values:
        return Outcome(exp.name, exp.kind, False, f"no line matches (want value {want})")
    bad = [v for v in values if not _value_ok(exp, v)]
    shown = ", ".join(values[:10])
    detail = f"values {shown} (want {want})" + (f"; {len(bad)} do not fit" if bad else "")
    return Outcome(exp.name, exp.kind, not bad, detail, hits[:MAX_LINES])


def _check_exit(exp: Expectation, evidence: Evidence) -> Outcome:
    code = evidence.exits.get(exp.step)
    if code is None:
        return Outcome(exp.name, exp.kind, False, f"step {exp.step} did not finish")
    ok = code != 0 if exp.code == "nonzero" else code == exp.code
    return Outcome(exp.name, exp.kind, ok, f"step {exp.step} exited {code} (want {exp.code})")


def _check_rejected(exp: Expectation, evidence: Evidence) -> Outcome:
    code = evidence.exits.get(exp.step)
    hits = _matching(_lines(evidence.text(exp.source) or ""), exp.patterns[0])
    if code is None:
        return Outcome(exp.name, exp.kind, False, f"step {exp.step} did not finish", hits)
    if code == 0:
        return Outcome(exp.name, exp.kind, False,
                       f"step {exp.step} succeeded: the program was not rejected", hits)
    if not hits:
        return Outcome(exp.name, exp.kind, False,
                       f"step {exp.step} failed (exit {code}) without the message "
                       f"{exp.patterns[0]!r}")
    return Outcome(exp.name, exp.kind, True,
                   f"step {exp.step} rejected (exit {code}) with the expected message", hits)


CHECKS = {"contains": _check_contains, "absent": _check_absent,
          "sequence": _check_sequence, "value": _check_value}


def _as_number(text: str) -> float | None:
    try:
        number = float(int(text, 0)) if text.lower().startswith("0x") else float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def resolved(exp: Expectation, variables: dict[str, str]) -> Expectation:
    """``exp`` with every ``${NAME}`` replaced by its value on this kernel; ValueError naming
    the key when a number (min, max, exit code) is not one there."""
    changes: dict[str, Any] = {"patterns": [substitute(p, variables) for p in exp.patterns]}
    for key in ("min", "max"):
        value = getattr(exp, key)
        if isinstance(value, str):
            text = substitute(value, variables)
            changes[key] = _as_number(text)
            if changes[key] is None:
                raise ValueError(f"{key} {value} is {text!r} here, not a number")
    if isinstance(exp.equals, str) and VAR.search(exp.equals):
        text = substitute(exp.equals, variables)
        number = _as_number(text)
        changes["equals"] = text if number is None or VAR.search(text) else number
    if isinstance(exp.code, str) and exp.code != "nonzero":
        text = substitute(exp.code, variables)
        if text != "nonzero" and not (text.isdigit() and 0 <= int(text) <= 255):
            raise ValueError(f"exit code {exp.code} is {text!r} here, not 0..255 or nonzero")
        changes["code"] = text if text == "nonzero" else int(text)
    done = Expectation(**{**exp.__dict__, **changes})
    if done.min is not None and done.max is not None and done.min > done.max:  # type: ignore[operator]
        raise ValueError(f"min {done.min:g} is greater than max {done.max:g} here")
    return done


def check(exp: Expectation, evidence: Evidence,
          variables: dict[str, str] | None = None) -> Outcome:
    """Check one expectation against what the run collected (``${NAME}``s resolved first)."""
    try:
        exp = resolved(exp, variables or {})
    except ValueError as problem:
        return Outcome(exp.name, exp.kind, False, f"{problem}: fix its vars: entry")
    if exp.kind == "exit":
        return _check_exit(exp, evidence)
    if exp.kind == "rejected":
        return _check_rejected(exp, evidence)
    text = evidence.text(exp.source)
    if text is None:
        return Outcome(exp.name, exp.kind, False, f"nothing collected from {exp.source}")
    return CHECKS[exp.kind](exp, _lines(text))


def check_all(expectations: list[Expectation], evidence: Evidence,
              variables: dict[str, str] | None = None) -> list[Outcome]:
    return [check(e, evidence, variables) for e in expectations]
