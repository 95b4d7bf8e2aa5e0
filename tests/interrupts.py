"""Children that a test interrupts must take Ctrl-C even when the test run was started
in the background: a shell starts background jobs with SIGINT ignored, children inherit
that, and Python then installs no KeyboardInterrupt handler. The user's terminal never
does this to a foreground kernlab, so the tests restore the default."""

from __future__ import annotations

import signal


def sigint_default() -> None:
    """Popen preexec_fn: SIGINT back to its default disposition in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
