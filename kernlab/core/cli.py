"""The command line's glue to invoke: one-line errors, numbers checked, JSON printing.

tasks.py is the front: each task turns its flags into a call of kernlab. What every task
shares lives here: ``friendly`` (every failure one ``kernlab: error: cause; fix`` line, no
traceback), ``task`` (invoke's @task whose int/float flags are checked by the wrapper),
``print_json`` and ``names`` (a comma-separated flag's items).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from typing import Any

import invoke
from invoke import Argument, Exit, Task
from invoke.exceptions import ParseError, UnexpectedExit
from invoke.program import Program

from kernlab.core import interrupt
from kernlab.core.crash import unexpected
from kernlab.core.errors import KernlabError
from kernlab.core.validate import BadNumber

CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`'s yes


def friendly(func):
    """Every way a task can fail ends in one line `kernlab: error: cause; fix`, exit != 0.

    A KernlabError prints its details, then its one line. Any other exception is a
    kernlab bug: its traceback goes to a log file under the state dir and the one line
    names the exception and that file. No traceback reaches the terminal.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if any(value in ("--help", "-h") for value in kwargs.values()):
            _task_help(func.__name__)  # `invoke run-experiment --help`: invoke took it for NAME
        try:
            for value in (*args, *kwargs.values()):
                if isinstance(value, BadNumber):  # `--jobs abc`: parsed late, reported here
                    raise value.error()
            with interrupt.scope():  # SIGTERM/SIGHUP unwind as Ctrl-C: temporary outputs go
                done = func(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe (`| head`) shows here, inside the task
            return done
        except BrokenPipeError:
            _stdout_to_devnull()
            raise Exit(code=CLOSED_PIPE) from None
        except KernlabError as error:
            if error.details:
                print(error.details, file=sys.stderr)
            raise Exit(f"kernlab: error: {error.one_line()}", code=1) from None
        except KeyboardInterrupt as stop:
            bundle = getattr(stop, "bundle", None)  # kernlab.core.interrupt.Interrupted: a run's bundle
            if bundle is not None:
                print(f"{bundle.dir} {bundle.status}")
                raise Exit(f"kernlab: interrupted; the bundle holds what was collected: {bundle.dir}",
                           code=130) from None
            raise Exit("kernlab: interrupted", code=130) from None
        except (Exit, SystemExit):
            raise
        except UnexpectedExit as error:  # a command run with c.run (its output was shown)
            code = error.result.exited or 1
            raise Exit(f"kernlab: error: `{error.result.command}` failed (exit {code}); "
                       "see its output above", code=code) from None
        except Exception as error:
            raise Exit(f"kernlab: error: {unexpected(func.__name__, error)}", code=1) from None
        finally:  # a failure's exit: its stdout to a closed pipe is dropped, not a second error
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                _stdout_to_devnull()

    return wrapper


def _stdout_to_devnull() -> None:
    """After output to a closed pipe (`invoke probes ... | head`): what is still buffered for
    stdout goes nowhere, so the interpreter's last flush finds nothing to complain about.
    The task then stops quietly with CLOSED_PIPE, as `yes | head`'s yes does."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _NumberArgument(Argument):
    """An int/float flag whose bad value becomes a BadNumber (invoke would raise a traceback)."""

    def set_value(self, value, cast=True):
        try:
            super().set_value(value, cast)
        except (TypeError, ValueError):
            self.raw_value = value
            self._value = BadNumber(self.names[0], value, self.kind)


def _task_help(name: str) -> None:
    """Print the task's help as `invoke --help TASK` does, and stop (exit 0)."""
    task = name.rstrip("_").replace("_", "-")
    raise Exit(code=subprocess.call([sys.executable, "-m", "invoke", "--help", task]))


class KernlabTask(Task):
    def get_arguments(self, ignore_unknown_help=None):
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            if arg.kind in (int, float) and type(arg) is Argument:
                arg.__class__ = _NumberArgument
        return args


def one_line_parse_errors() -> None:
    """invoke's own command-line errors (an unknown flag, a missing NAME) in kernlab's form.

    invoke prints a ParseError's text and exits 1; prefixing it here makes every failure
    one `kernlab: error: cause; fix` line, the fix naming the help that lists the flags.

    This replaces ``invoke.Program.parse_tasks`` (checked with invoke 2.2.1): invoke offers
    no other way. Its ``invoke`` command makes its own Program, parses the task flags after
    loading tasks.py and prints a ParseError itself, with no hook a task file can give (a
    Program subclass only helps a separate entry point, and users run ``invoke``).
    """
    original = Program.parse_tasks
    if getattr(original, "kernlab", False):
        return

    def parse_tasks(self):
        try:
            if self.core.unparsed[:1] == ["probes"] and self.collection is not None:  # the task, not
                # a value such as `--name probes` of another task
                valued, joined = _value_flags(self.collection["probes"])
                _join_words(self.core.unparsed, "probes", valued, joined)
            original(self)
        except ParseError as error:
            task = getattr(error.context, "name", None)
            fix = f"see `invoke --help {task}`" if task else "see `invoke --list`"
            raise ParseError(f"kernlab: error: {error}; {fix}", error.context) from None

    parse_tasks.kernlab = True
    Program.parse_tasks = parse_tasks


def _value_flags(task: Task) -> tuple[set[str], set[str]]:
    """The task's flags that take a value (``--kernels``, ``-k``...), and among them the
    positional's own (``--targets``, ``-t``), from the task itself (never a list kept by hand)."""
    valued, joined = set(), set()
    for arg in task.get_arguments():
        if not arg.takes_value:
            continue
        flags = {f"--{n}" if len(n) > 1 else f"-{n}" for n in arg.names}
        valued |= flags
        if arg.positional:
            joined |= flags
    return valued, joined


def _join_words(argv: list[str], task_name: str, valued: set[str], joined: set[str]) -> None:
    """`invoke probes a b c --json` → `invoke probes a,b,c --json`: invoke has no variadic
    positional argument, so the task's words, and the values of ``joined`` flags (its
    positional's own, ``--targets x``), are joined into its one positional, in place."""
    start = argv.index(task_name) + 1
    words, rest, index = [], [], start
    while index < len(argv):
        token = argv[index]
        flag, eq, inline = token.partition("=")
        if token.startswith("-") and flag in joined:
            if eq:
                words.append(inline)
            elif index + 1 < len(argv):
                words.append(argv[index + 1])
                index += 1
        elif token.startswith("-"):
            rest.append(token)
            if token in valued and index + 1 < len(argv):
                rest.append(argv[index + 1])
                index += 1
        else:
            words.append(token)
        index += 1
    argv[start:] = [",".join(words), *rest]  # "" when none: --experiment alone is enough


class _NameUnlessAll(Argument):
    """The positional NAME, which ``--all`` makes unnecessary (invoke would require it)."""

    partner: Argument | None = None

    @property
    def value(self):
        if self._value is None and self.partner is not None and self.partner.value:
            return ""
        return self._value if self._value is not None else self.default

    @value.setter
    def value(self, arg):
        self.set_value(arg, cast=True)


class NameOrAllTask(KernlabTask):
    """A task with a positional NAME that ``--all`` makes unnecessary (`invoke run-experiment
    NAME` or `invoke run-experiment --all`)."""

    def get_arguments(self, ignore_unknown_help=None):
        args = super().get_arguments(ignore_unknown_help)
        name = next(a for a in args if a.name == "name")
        optional = _NameUnlessAll(names=name.names, kind=name.kind, default=name.default,
                                  help=name.help, positional=True)
        optional.partner = next(a for a in args if a.name == "all_")
        return [optional if a is name else a for a in args]


def task(*args: Any, **kwargs: Any) -> Any:
    """invoke's @task with kernlab's argument handling (numbers checked by the task wrapper)."""
    kwargs.setdefault("klass", KernlabTask)
    return invoke.task(*args, **kwargs)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True,
                     default=lambda record: record.to_json()))  # records print as their JSON


def csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def names(flag: str, value: str, what: str, example: str) -> list[str]:
    """A comma-separated flag's items: at least one, none twice."""
    items = csv(value)
    if not items:
        raise KernlabError(f"--{flag} {value!r} names no {what}",
                           f"give comma-separated {what}s, e.g. --{flag} {example}")
    if twice := sorted({i for i in items if items.count(i) > 1}):
        raise KernlabError(f"--{flag} names {', '.join(twice)} twice", f"give each {what} once")
    return items
