"""Getting a run into the guest and back: the driver's plan, the upload (one tar over the
run's SSH connection) and the fetch of what the driver wrote."""

from __future__ import annotations

import io
import json
import shlex
import tarfile
import time
from pathlib import Path
from typing import Any

from kernlab.core.errors import KernlabError
from kernlab.experiments import driver
from kernlab.experiments.bundle import Bundle
from kernlab.experiments.expect import substitute
from kernlab.experiments.spec import Experiment, Step
from kernlab.guest import remote

GUEST_BUILD_TIMEOUT = 900.0
DRIVER = Path(__file__).with_name("driver.py")
DRIVER_SLACK = driver.BPFTRACE_STOP_GRACE + 60.0  # past the plan's timeout: stop grace and teardown


def guest_command(conn: Any, command: str, log: Path, timeout: float, check: bool = True, *,
           binary: bool = False, **stop: Any) -> Any:
    """Run a guest command; command, output and exit status go to ``log`` (a ``binary``
    stdout only by its size). ``stop``: remote.run's other arguments (``stop_grace``,
    ``stop_also``, ``stdin``)."""
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"\n$ {command}\n")
        try:
            result = remote.run(conn, command, timeout=timeout, check=False, **stop)
        except KernlabError as error:
            out.write(f"# {error.cause}\n")
            raise
        except KeyboardInterrupt:
            out.write(f"# interrupted (Ctrl-C) after {time.monotonic() - started:.1f}s; stopped there\n")
            raise
        out.write(f"# {len(result.data)} bytes on stdout\n" if binary else result.stdout)
        if result.stderr:
            out.write(f"# stderr:\n{result.stderr}")
        out.write(f"# exit {result.exited} after {time.monotonic() - started:.1f}s\n")
    if check and result.exited != 0:
        if full := disk_full(result.stdout + result.stderr):
            raise guest_disk_full(full, log)
        raise KernlabError(f"guest command failed (exit {result.exited}): {command}; "
                           f"log: {log}", "read the log",
                           details=(result.stdout + result.stderr).strip()[-2000:])
    return result


ENOSPC = ("No space left on device", "ENOSPC", "Errno 28")
DISK_FIX = ("free space in the guest (`invoke vm.ssh -c 'df -h /'`), or give the image more room "
            "(size: in vm/bookworm.yaml, then `invoke build-image`)")


def disk_full(text: str) -> str:
    """The first line of ``text`` saying the disk is full ('' if none)."""
    return next((line.strip() for line in text.splitlines() if any(w in line for w in ENOSPC)), "")


def guest_disk_full(line: str, log: Path | None = None) -> KernlabError:
    """The error for a full guest disk, with the line that said so."""
    where = f"; log: {log}" if log else ""
    return KernlabError(f"the guest's disk is full ({line[-160:]}){where}", DISK_FIX)


def driver_failure(result: Any, log: Path) -> str:
    """Why the guest driver ended badly ('' if it exited 0): a full disk first, else its last words."""
    if result.exited == 0:
        return ""
    output = result.stdout + result.stderr
    if full := disk_full(output):
        return guest_disk_full(full, log).one_line()
    last = [line.strip() for line in output.splitlines() if line.strip()]
    said = f": {last[-1][-200:]}" if last else ""
    return f"the guest driver failed (exit {result.exited}){said}; log: {log}"


def driver_plan(exp: Experiment, workdir: str, env: dict[str, str]) -> dict[str, Any]:
    guest_builds = [
        {"name": f"build-{i}", "cmd": s.cmd, "timeout": GUEST_BUILD_TIMEOUT}
        for i, s in enumerate(b for b in exp.build if b.kind == "guest")]
    steps = [{"name": s.name, "cmd": s.cmd, "timeout": s.timeout, "background": s.background,
              "ready": s.ready, "ready_timeout": s.ready_timeout,
              "stop_signal": s.stop_signal, **_bpftrace_plan(s, env)} for s in exp.steps]
    return {
        "workdir": workdir, "outdir": f"{workdir}/out", "env": env,
        "timeout": exp.run_timeout + GUEST_BUILD_TIMEOUT * len(guest_builds), "drain": exp.drain,
        "trace": {"enabled": exp.capture.trace_pipe, "max_bytes": exp.capture.max_bytes,
                  "max_seconds": exp.capture.max_seconds},
        "steps": guest_builds + steps,
    }


def _bpftrace_plan(step: Step, env: dict[str, str]) -> dict[str, Any]:
    """A bpftrace: step's program and command, ``${NAME}`` substituted (driver.Bpftrace)."""
    if not step.bpftrace:
        return {}
    return {"bpftrace": {"program": substitute(step.bpftrace, env),
                         "command": substitute(step.command, env)}}


def upload(conn: Any, exp: Experiment, built: Path, plan: dict, bundle: Bundle,
            tools: list[str]) -> dict[str, str]:
    """Send sources, outputs, driver and plan as one tar stream on a guest command's stdin,
    unpacked there by the same command, which also checks the guest's tools."""
    workdir = plan["workdir"]
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        tar.add(built, arcname=".")
        tar.add(DRIVER, arcname="kernlab_driver.py")
        info = tarfile.TarInfo("plan.json")
        data = json.dumps(plan, indent=2).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    checks = " ".join(shlex.quote(t) for t in tools)
    script = (f"set -e; rm -rf {workdir}; mkdir -p {workdir}; tar xf - -C {workdir}; "
              f"read -r release </proc/sys/kernel/osrelease; echo release=$release; "
              f"for t in {checks}; do command -v $t >/dev/null || echo missing=$t; done")
    with open(bundle.log("remote"), "a") as out:
        out.write(f"\n# sending {stream.tell()} bytes (tar) on stdin\n")
    result = guest_command(conn, script, bundle.log("remote"), timeout=120, stdin=stream.getvalue())
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    missing = [line.split("=", 1)[1] for line in result.stdout.splitlines()
               if line.startswith("missing=")]
    if missing:
        raise KernlabError(f"{', '.join(missing)} not installed in the guest image",
                           "add the package to vm/bookworm.yaml and run `invoke build-image`")
    return {"release": facts.get("release", "")}


def fetch(conn: Any, exp: Experiment, workdir: str, bundle: Bundle, dest: Path,
           timeout: float = 120.0) -> None:
    """Bring back ``out/`` and the artifact files (whatever exists) into ``dest``: one guest
    command writes them as a tar stream on its stdout."""
    wanted = ["out"] + [a.path for a in exp.artifacts if a.path]
    names = " ".join(shlex.quote(w) for w in wanted)
    result = guest_command(conn, f"cd {workdir} && mkdir -p out && tar cf - --ignore-failed-read "
                          f"$(for f in {names}; do [ -e \"$f\" ] && echo \"$f\"; done)",
                    bundle.log("remote"), timeout=timeout, binary=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(result.data)) as tar:
            tar.extractall(dest / "fetched", filter="data")
    except tarfile.TarError as error:
        raise KernlabError(f"the guest's output could not be unpacked ({error})",
                           "see logs/remote.log in the bundle") from None
