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
