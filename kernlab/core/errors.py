"""The one error type users see: a cause and a fix, printed on one line."""

from __future__ import annotations


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
