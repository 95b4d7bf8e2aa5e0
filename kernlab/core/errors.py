"""The one error type users see: a cause and a fix, printed on one line."""

from __future__ import annotations

from pathlib import Path


class KernlabError(Exception):
    """A failure the user can act on.

    ``cause`` says what went wrong, ``fix`` what to do about it; ``details`` (log
    tails, lists) is printed above the one-line summary.
    """

    def __init__(self, cause: str, fix: str = "", details: str = "") -> None:
        self.cause = cause
        self.fix = fix
        self.details = details
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.cause}; {self.fix}" if self.fix else self.cause


class NotFound(KernlabError):
    """Something named by the user (kernel, experiment, build, VM) does not exist."""


# ---------------------------------------------------------------- the task boundary
ENVIRONMENT_ERRNOS = {"ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS"}


def crash_log(task: str, error: BaseException) -> str:
    """Write ``error``'s traceback to ``<state>/logs/<time>-<task>.log``; return its path.

    Falls back to the temporary directory when the state dir cannot be written (it may
    be the very thing that failed); never raises.
    """
    import os
    import sys
    import tempfile
    import time
    import traceback

    from kernlab import __version__

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    text = (f"kernlab {__version__}, task {task}, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n"
            f"argv: {sys.argv}\ncwd: {os.getcwd()}\n\n"
            + "".join(traceback.format_exception(error)))
    bases = []
    try:
        from kernlab.core import paths

        bases.append(paths.state_dir() / "logs")
    except Exception:  # an unusable KERNLAB_STATE must not hide the crash
        pass
    bases.append(Path(tempfile.gettempdir()) / "kernlab-logs")
    for base in bases:
        try:
            base.mkdir(parents=True, exist_ok=True)
            path = base / f"{stamp}-{task}-{os.getpid()}.log"
            path.write_text(text)
            return str(path)
        except OSError:
            continue
    return "(no log: neither the state dir nor the temporary directory is writable)"


def one_line_message(error: BaseException, limit: int = 240) -> str:
    """``str(error)`` on one line, shortened: never a multi-line dump in the summary."""
    text = " ".join(str(error).split()) or repr(error)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def unexpected(task: str, error: BaseException) -> str:
    """The one line for an exception kernlab did not expect (its traceback goes to a log)."""
    import errno

    log = crash_log(task, error)
    if isinstance(error, OSError) and errno.errorcode.get(error.errno or 0) in ENVIRONMENT_ERRNOS:
        where = f"{error.filename}: " if error.filename else ""
        return (f"{where}{error.strerror}; free some space or fix the permissions, or point "
                f"KERNLAB_WORK/KERNLAB_STATE/KERNLAB_RESULTS/KERNLAB_CACHE elsewhere "
                f"(traceback in {log})")
    return (f"unexpected {type(error).__name__}: {one_line_message(error)}; "
            f"this is a kernlab bug, traceback in {log}")


class BuildInputError(KernlabError):
    """A kernel's inputs are unusable as given; `build-kernel` flags would fix it.

    ``fix`` is written for `build-kernel` itself. Commands that build a missing kernel
    on the way (run-experiment, matrix, ci, reproduce) lack those flags: they say
    "build it first: `invoke build-kernel --version V FLAGS`" from ``flags`` (the
    alternatives, best first) and ``other_fix`` (advice that needs no flag).
    """

    def __init__(self, cause: str, fix: str, flags: tuple[str, ...] = (), other_fix: str = "",
                 details: str = "") -> None:
        super().__init__(cause, fix, details)
        self.flags = flags
        self.other_fix = other_fix
