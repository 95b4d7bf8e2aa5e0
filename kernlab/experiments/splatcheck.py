"""A run's kernel splat check: the kernel log since the run's mark (dmesg over SSH) and the
run's slice of the serial console, searched for kernel splats (kernlab.guest.splats).

A splat whose class the experiment does not declare expected fails the run: the reason
names the class and the report's first line, ``splats.txt`` in the bundle holds every
report in full, ``dmesg.txt`` the kernel log since the mark, and ``result.json`` lists
them (``splats``). An expected one is recorded the same way and the run can still PASS.
"""

from __future__ import annotations

from typing import Any

import paramiko

from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.experiments.bundle import FAIL, Bundle
from kernlab.experiments.expect import Outcome
from kernlab.experiments.spec import Experiment
from kernlab.guest import remote, splats

DMESG_TIMEOUT = 30.0
CHECK_NAME = "no unexpected kernel splat"
EXPECTATIONS_FAILED = "expectations failed"  # Bundle.settle's reason


def mark_tag(exp: Experiment, bundle: Bundle) -> str:
    """The run's mark in the kernel log: unique per bundle."""
    return f"{exp.name}@{bundle.kernel}@{bundle.dir.name}"


def marked(exp: Experiment, bundle: Bundle, command: str) -> str:
    """``command`` preceded by writing the run's mark into the guest's kernel log."""
    bundle.facts["kmsg_mark"] = splats.KMSG_MARK.format(tag=mark_tag(exp, bundle))
    return f"{splats.mark_command(mark_tag(exp, bundle))}; {command}"


def guest_dmesg(conn: Any, exp: Experiment, bundle: Bundle) -> str | None:
    """The guest's kernel log since the run's mark (None: no mark was written, or the guest
    cannot be asked)."""
    if conn is None or "kmsg_mark" not in bundle.facts:
        return None
    try:
        result = remote.run(conn, "dmesg", timeout=DMESG_TIMEOUT, check=False)
    except (KernlabError, paramiko.SSHException, OSError, EOFError) as error:  # only dmesg is lost
        reporter().warn(f"{exp.name}: no dmesg from the guest for the splat check ({error})")
        return None
    if result.exited != 0:
        return None
    return splats.after_mark(result.stdout, mark_tag(exp, bundle))


def check(exp: Experiment, bundle: Bundle, dmesg: str | None, console: str) -> list[splats.Splat]:
    """Search ``dmesg`` and ``console`` for splats; record them in ``bundle`` and fail it on
    an unexpected one. Returns what was found."""
    if dmesg is not None:
        bundle.write("dmesg.txt", dmesg)
    found = splats.unique(splats.find_splats(dmesg or "") + splats.find_splats(console))
    expected = exp.splats_expected
    bundle.facts["splats"] = [s.to_json(s.kind in expected) for s in found]
    bundle.facts["splat_sources"] = ["dmesg"] * (dmesg is not None) + ["console"]
    if not found:
        return found
    bundle.write("splats.txt", splats.report_text(found, expected))
    bad = [s for s in found if s.kind not in expected]
    if not bad:
        bundle.outcomes.append(Outcome(CHECK_NAME, "splats", True,
                                       f"only expected splats: {splats.summary(found)} (splats.txt)"))
        return found
    first = bad[0]
    detail = f"{first.kind}: {first.line} ({splats.summary(bad)}; full text: splats.txt)"
    bundle.outcomes.append(Outcome(CHECK_NAME, "splats", False, detail, first.first_lines()))
    if bundle.passed or EXPECTATIONS_FAILED in bundle.reason:  # the splat is the likelier cause
        bundle.status, bundle.reason = FAIL, f"kernel splat: {detail}"
    bundle.fail(f"kernel splat: {detail}")
    return found
