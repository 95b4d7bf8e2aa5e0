"""The task boundary: an exception kernlab did not expect becomes one line and a log file."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from kernlab import __version__
from kernlab.core import paths

ENVIRONMENT_ERRNOS = {"ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS"}


def crash_log(task: str, error: BaseException) -> str:
    """Write ``error``'s traceback to ``<state>/logs/<time>-<task>.log``; return its path.

    Falls back to the temporary directory when the state dir cannot be written (it may
    be the very thing that failed); never raises.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    text = (f"kernlab {__version__}, task {task}, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n"
            f"argv: {sys.argv}\ncwd: {os.getcwd()}\n\n"
            + "".join(traceback.format_exception(error)))
    bases = []
    with contextlib.suppress(Exception):  # an unusable KERNLAB_STATE must not hide the crash
        bases.append(paths.state_dir() / "logs")
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


def environment_cause(error: BaseException) -> BaseException:
    """The OSError inside invoke's ThreadException (its output threads' own failure, such as
    a full disk under the captured output), else ``error`` itself."""
    wrapped = [getattr(each, "value", None) for each in getattr(error, "exceptions", ())]
    return next((each for each in wrapped if isinstance(each, OSError)), error)


def unexpected(task: str, error: BaseException) -> str:
    """The one line for an exception kernlab did not expect (its traceback goes to a log)."""
    log = crash_log(task, error)
    error = environment_cause(error)
    if isinstance(error, OSError) and errno.errorcode.get(error.errno or 0) in ENVIRONMENT_ERRNOS:
        where = f"{error.filename}: " if error.filename else ""
        return (f"{where}{error.strerror}; free some space or fix the permissions, or point "
                f"KERNLAB_WORK/KERNLAB_STATE/KERNLAB_RESULTS/KERNLAB_CACHE elsewhere "
                f"(traceback in {log})")
    return (f"unexpected {type(error).__name__}: {one_line_message(error)}; "
            f"this is a kernlab bug, traceback in {log}")
