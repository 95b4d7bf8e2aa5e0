"""Progress events and their two front-ends (kernlab.core.progress), in-process and fast."""

from __future__ import annotations

import io
import re
import threading

import pytest

from kernlab.core.progress import (
    Note,
    Plain,
    Reporter,
    Status,
    StepDone,
    StepFailed,
    StepStarted,
    Terminal,
    without_stamp,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list = []

    def show(self, event) -> None:
        self.events.append(event)


def test_a_step_emits_start_and_done_with_depth() -> None:
    seen = Recorder()
    report = Reporter(seen)
    with report.step("outer"):
        report.note("inside")
        with report.step("inner"):
            pass
    kinds = [(type(e).__name__, e.depth) for e in seen.events]
    assert kinds == [("StepStarted", 0), ("Note", 1), ("StepStarted", 1), ("StepDone", 1), ("StepDone", 0)]


def test_a_failing_step_says_failed_or_interrupted_and_the_error_goes_on() -> None:
    seen = Recorder()
    report = Reporter(seen)
    for error, interrupted in ((ValueError("x"), False), (KeyboardInterrupt(), True)):
        with pytest.raises(type(error)), report.step("work"):
            raise error
        assert isinstance(seen.events[-1], StepFailed) and seen.events[-1].interrupted is interrupted
    with report.step("after"):  # the depth came back
        pass
    assert seen.events[-1] == StepDone("after", 0, seen.events[-1].seconds)


def test_plain_lines_are_timestamped_and_keep_the_progress_marks() -> None:
    out = io.StringIO()
    plain = Plain(out)
    for event in (StepStarted("boot", 0), Note("cache hit", 1), StepDone("boot", 0, 3.25)):
        plain.show(event)
    lines = out.getvalue().splitlines()
    assert all(re.match(r"^\d\d:\d\d:\d\d ", line) for line in lines), lines
    assert [without_stamp(line) for line in lines] == ["> boot", "  - cache hit", "< boot (3.2s)"]


def test_terminal_status_is_one_line_that_the_next_line_replaces() -> None:
    out = io.StringIO()
    term = Terminal(out)
    term.show(Status("compiling fs/ext4/inode.c", 0))
    term.show(Note("done", 0))
    text = out.getvalue()
    assert text.startswith("\r  compiling") and "\n" not in text.split("- done")[0]
    assert text.endswith("- done\n")


def test_threads_share_one_reporter_each_with_its_own_depth_and_whole_lines() -> None:
    out = io.StringIO()
    report = Reporter(Plain(out))

    def cell(name: str) -> None:
        for i in range(50):
            with report.step(f"{name} {i}"):
                report.note(f"{name} note {i}")

    threads = [threading.Thread(target=cell, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = [without_stamp(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 4 * 50 * 3
    notes = [line for line in lines if " note " in line]
    assert all(line.startswith("  - t") for line in notes), notes[:5]  # depth 1 in every thread
