"""One loader for every YAML file a user writes: read it safely, check keys and types.

The kernel catalog (configs/kernels.yaml), each experiment.yaml, a hosts file, an image
recipe (vm/*.yaml) and the recipe a pack rewrites all go through ``SpecFile``, so that
they fail the same way, naming the file and the place in it:

- a syntax error: ``<file>:<line>:<column>: not valid YAML: <problem>``;
- an unknown key: ``<file>: unknown key 'foo' in <where> (did you mean 'food'?); allowed: a, b``;
- a wrong type: ``<file>: <where>: must be a <type>, got <value>``;
- not a regular file (a FIFO would block the read), over MAX_BYTES, or aliases that expand
  past MAX_NODES (an anchor bomb: a few lines that unfold into billions of nodes for
  whatever walks the data): refused before it is read or built.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from kernlab.core.errors import KernlabError
from kernlab.core.util import special_kind

MAX_BYTES = 1 << 20  # the largest YAML kernlab reads (the catalog is 10 KiB)
MAX_NODES = 100_000  # nodes once aliases are expanded (the catalog has about 2,000)
TOP = "(top level)"  # where a problem of the whole file is
TYPE_NAMES = {dict: "mapping", list: "list", str: "string", int: "whole number", float: "number",
              bool: "boolean (true or false)"}


def type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return "/".join(TYPE_NAMES.get(k, k.__name__) for k in kinds)


class SpecFile:
    """One YAML file being checked; ``fix`` is the advice its errors end with."""

    def __init__(self, path: Path, fix: str) -> None:
        self.path = path
        self.fix = fix

    def load(self, empty: Any = None) -> Any:
        """The parsed file (``empty`` for an empty one); a syntax error names file:line:column."""
        try:
            node = yaml.compose(self._text(), Loader=yaml.SafeLoader)
            if node is not None and expanded_size(node, self.path) > MAX_NODES:
                raise KernlabError(f"{self.path}: holds more than {MAX_NODES:,} values once its aliases "
                                   "(*name) are expanded: an anchor bomb, or far too big a file",
                                   "write the values out, or use fewer nested aliases")
            data = yaml.SafeLoader("").construct_document(node) if node is not None else None
        except yaml.YAMLError as error:
            raise KernlabError(f"{self._at(error)}: not valid YAML: {_problem(error)}", self.fix) from None
        except RecursionError:
            raise KernlabError(f"{self.path}: is nested too deeply to read",
                               "flatten it: kernlab's YAML files nest a few levels") from None
        except (OSError, UnicodeDecodeError) as error:
            raise KernlabError(f"{self.path}: cannot be read ({error})",
                               "make it a readable UTF-8 text file") from None
        return empty if data is None else data

    def _text(self) -> str:
        """The file's text, if it is a regular file of at most MAX_BYTES (checked before reading)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KernlabError(f"{self.path}: is {special_kind(info.st_mode)}, not a regular file",
                                   "make it a regular YAML file")
            if info.st_size > MAX_BYTES:
                raise KernlabError(f"{self.path}: is {info.st_size:,} bytes, more than the {MAX_BYTES:,} "
                                   "kernlab reads", "make it smaller (is it the right file?)")
            return handle.read(MAX_BYTES + 1).decode()

    def _at(self, error: yaml.YAMLError) -> str:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        return f"{self.path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(self.path)

    def fail(self, where: str, problem: str, fix: str = "") -> NoReturn:
        """``<file>: <where>: <problem>``; ``fix`` or the file's."""
        raise KernlabError(f"{self.path}: {where or TOP}: {problem}", fix or self.fix)

    def known(self, data: dict[str, Any], allowed: Iterable[str], where: str = "") -> None:
        """Refuse a key outside ``allowed`` (a typo would silently drop what it sets)."""
        allowed = tuple(allowed)
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise KernlabError(f"{self.path}: unknown key '{key}' in {where or 'the top level'}{hint}",
                                   f"allowed: {', '.join(allowed)}")

    def typed(self, value: Any, kind: type | tuple[type, ...], where: str) -> Any:
        """``value`` if it is a ``kind`` (a bool is not a number); else the one-line error."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.fail(where, f"must be a {type_name(kind)}, got {value!r}")
        if not isinstance(value, kinds):
            got = f"a {type_name(type(value))}" if isinstance(value, (dict, list)) else repr(value)
            self.fail(where, f"must be a {type_name(kind)}, got {got}")
        return value

    def mapping(self, value: Any, where: str = "", allowed: Iterable[str] | None = None) -> dict[str, Any]:
        """``value`` as a mapping, its keys checked against ``allowed`` when given."""
        data = self.typed(value, dict, where)
        if allowed is not None:
            self.known(data, allowed, where)
        return data


def expanded_size(node: yaml.Node, path: Path) -> int:
    """How many nodes ``node`` holds with every alias expanded (each shared node counted
    once per use), computed over the composed graph without expanding it."""
    sizes: dict[int, int] = {}

    def size(item: yaml.Node) -> int:
        if id(item) in sizes:
            if sizes[id(item)] == 0:  # met again while inside itself: no end when walked
                raise KernlabError(f"{path}: an alias (*name) refers to the value that holds it",
                                   "write the value out: kernlab's YAML has no recursive values")
            return sizes[id(item)]
        sizes[id(item)] = 0  # in progress
        if isinstance(item, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in item.value)
        elif isinstance(item, yaml.MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in item.value)
        else:
            total = 1
        sizes[id(item)] = min(total, MAX_NODES + 1)
        return sizes[id(item)]

    return size(node)


def _problem(error: yaml.YAMLError) -> str:
    text = getattr(error, "problem", None) or str(error)
    return " ".join(str(text).split())
