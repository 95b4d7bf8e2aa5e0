"""`invoke matrix --slurm`: the matrix as one Slurm job array, one task per kernel.

The submitting command writes a batch script into a run folder under ``--slurm-dir``
(a folder every node sees), submits it with ``sbatch --array=0-N``, follows the array
with ``scontrol`` (``sacct`` once the controller has forgotten a finished job, where
accounting runs) and echoes each task's state changes and progress lines. What it returns
(each task's report folder, or Slurm's words for why there is none) is merged into one
report by ``kernlab.compare.merge.slurm_run``, with `matrix --merge`'s code.

How the work is cut: one task per kernel. A kernel's experiments share one boot and one
snapshot; the task runs them in ``--lanes`` VMs side by side on its node, and asks Slurm
for as many CPUs (``--cpus-per-task``). Splitting one kernel's experiments across nodes
would boot and snapshot the kernel once per node for no gain on a suite that lanes finish
in the time of its longest experiment.

Where things live under ``--slurm-dir``:

- ``work/``  the kernels (KERNLAB_WORK) every task uses. A task builds its own kernel when
  it is missing; no two tasks of a run build the same kernel, and two runs sharing the
  folder are kept apart by kernlab's build lock (flock(2) in ``work/locks``, which holds
  across nodes on NFSv4, Lustre mounted with ``flock``, GPFS and BeeGFS).
- ``state/images/``  the guest image, built once by one job (``build-image``) that the
  array depends on (``--dependency=afterok``, ``--kill-on-invalid-dep=yes``); not
  submitted when the image is already there. With ``KERNLAB_REGISTRY`` set, tasks pull
  kernels and image from the registry instead and no image job runs.
- ``runs/<id>/``  the batch scripts, the tasks' logs (``logs/``) and each task attempt's
  bundles and report (``tasks/<index>/<array job id>/``). A task's VMs and snapshots live
  on its node's own disk (``$TMPDIR/kernlab-<job id>``, ``images`` linked to the shared
  ones) and go when it ends: short paths for QEMU's sockets, no guest RAM on the shared
  filesystem.

A task counts as done when its report (``matrix.json``) is there, whatever its cells say;
one without a report (cancelled, time limit, out of memory, node failure, a crash) gets
ERROR cells that name Slurm's state and reason for it, and ``--retry N`` resubmits only
those tasks, up to N more times. Ctrl-C cancels the array (``scancel``) and merges what
finished.

The tasks run this checkout with this Python (``sys.executable``): both must be on a
filesystem the nodes see, as for any Python job on a cluster. sbatch passes the
submitting environment on (``--export=ALL``, its default).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kernlab.core import paths
from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.progress import reporter, without_stamp
from kernlab.core.util import scoped_environ
from kernlab.experiments.lanes import lane_count
from kernlab.guest.image import find_image

COMMANDS = ("sbatch", "scontrol", "scancel")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT", "LOST"}
PROGRESS_PREFIXES = ("> ", "< ", "x ", "! ", "kernlab:")  # a task's lines echoed here
GIB_PER_LANE = 3  # a lab guest's 2 GiB, its QEMU and kernlab, per lane (--mem)
POLL_SECONDS = 5.0
CANCEL_WAIT = 90.0  # after Ctrl-C: how long the tasks get to stop (Slurm's KillWait is 30 s)
RECIPE = "bookworm"


@dataclass(frozen=True)
class SlurmOptions:
    """What `--slurm` and its flags ask for."""

    slurm_dir: Path
    partition: str = ""
    account: str = ""
    time: str = ""  # Slurm's --time, e.g. 2:00:00
    retry: int = 0
    lanes: int = 1
    poll: float = POLL_SECONDS


@dataclass
class TaskState:
    """One array task as Slurm sees it."""

    job: str  # the array job id
    task: int
    state: str
    reason: str = ""
    exit_code: str = ""
    node: str = ""
    run_time: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def why(self) -> str:
        """``Slurm job 12_1 CANCELLED (signal 15) on node1 after 00:00:41``: Slurm's own words."""
        words = [f"Slurm job {self.job}_{self.task} {self.state}"]
        details = [d for d in (self.reason if self.reason not in ("", "None") else "",
                               _exit_words(self.exit_code)) if d]
        if details:
            words.append(f"({', '.join(details)})")
        if self.node and self.node != "(null)":
            words.append(f"on {self.node}")
        if self.run_time and self.run_time not in ("0:00", "00:00:00"):
            words.append(f"after {self.run_time}")
        return " ".join(words)


def _exit_words(exit_code: str) -> str:
    """Slurm's ``code:signal`` as words: ``exit 2``, ``signal 9``; '' for 0:0."""
    code, _, signal = exit_code.partition(":")
    if signal not in ("", "0"):
        return f"signal {signal}"
    return f"exit {code}" if code not in ("", "0") else ""


@dataclass
class Task:
    """One kernel's task and its attempts (array job ids, oldest first)."""

    index: int
    kernel: str
    attempts: list[str] = field(default_factory=list)
    state: TaskState | None = None

    def folder(self, run: Path, job: str | None = None) -> Path:
        return run / "tasks" / str(self.index) / (job or self.attempts[-1])

    def report(self, run: Path) -> Path | None:
        """The last attempt's report folder, when it holds a matrix.json."""
        if not self.attempts:
            return None
        found = self.folder(run) / "report"
        return found if (found / "matrix.json").is_file() else None

    def log(self, run: Path, job: str | None = None) -> Path:
        return run / "logs" / f"task-{self.index}-{job or self.attempts[-1]}.out"

    @property
    def node(self) -> str:
        """Where the last attempt ran ('' when it did not start)."""
        node = self.state.node if self.state else ""
        return "" if node in ("", "(null)", "None assigned") else node


@dataclass
class SlurmRun:
    """The tasks (with their attempts and last states), the run folder, and whether Ctrl-C
    cut the run short."""

    tasks: list[Task]
    run_dir: Path
    interrupted: bool = False

    def reports(self) -> list[Path]:
        """The report folders of the tasks that wrote one."""
        return [r for t in self.tasks if (r := t.report(self.run_dir)) is not None]

    def failed(self) -> list[tuple[Task, str]]:
        """The tasks without a report and why (Slurm's state and reason, their own error)."""
        return [(t, error_reason(t, self.run_dir)) for t in self.tasks if t.report(self.run_dir) is None]


# ---------------------------------------------------------------- checks
def check_tools() -> None:
    """sbatch, scontrol and scancel are on PATH (a login node of the cluster)."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise KernlabError(f"--slurm needs Slurm's commands; {', '.join(missing)} not found on PATH",
                           "run from a login node of the cluster, or install slurm-client "
                           "(Debian: apt install slurm-client) and point SLURM_CONF at its slurm.conf")


def slurm_dir_of(given: str) -> Path:
    """--slurm-dir, else KERNLAB_SLURM_DIR, else ``<checkout>/slurm``; made when missing."""
    value = given or os.environ.get("KERNLAB_SLURM_DIR") or str(paths.root() / "slurm")
    folder = Path(value).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise KernlabError(f"--slurm-dir {value} is a file, not a directory",
                           "give --slurm-dir a folder on a filesystem every node sees")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KernlabError(f"cannot make --slurm-dir {value} ({error.strerror or error})",
                           "give --slurm-dir a writable folder on a filesystem every node sees") from None
    return folder


def check_flags(slurm: bool, hosts: str, others: str = "", **flags: str | int | None) -> None:
    """--partition, --account, --time, --slurm-dir and --retry need --slurm; --slurm and
    --hosts are two ways to share the kernels out: one at a time; ``others`` names a flag
    given that runs nothing (--merge, --rerender)."""
    if slurm and hosts:
        raise KernlabError("--slurm and --hosts both share the kernels out",
                           "use one: --slurm for a cluster, --hosts for machines of your own")
    if slurm and others:
        raise KernlabError(f"{others} runs nothing; --slurm runs the matrix", f"drop --slurm or {others}")
    given = [f"--{name.replace('_', '-')}" for name, value in flags.items()
             if value not in (None, "", 0, "0")]
    if given and not slurm:
        raise KernlabError(f"{', '.join(given)}: only with --slurm", "add --slurm, or drop them")


def slurm_options(slurm: bool, hosts: str, lanes: int | str | None, others: str = "", *,
                  partition: str = "", account: str = "", time: str = "", slurm_dir: str = "",
                  retry: int | str = 0) -> SlurmOptions | None:
    """`matrix`/`ci`'s Slurm flags checked: the options, or None without --slurm."""
    check_flags(slurm, hosts, others, partition=partition, account=account, time=time,
                slurm_dir=slurm_dir, retry=retry)
    return options_of(slurm_dir, partition, account, time, retry, lanes) if slurm else None


def options_of(slurm_dir: str, partition: str, account: str, time_limit: str, retry: int | str,
               lanes: int | str | None) -> SlurmOptions:
    """The flags checked: --retry a whole number from 0, --lanes as `matrix` takes it."""
    try:
        retries = int(retry)
    except (TypeError, ValueError):
        retries = -1
    if retries < 0:
        raise KernlabError(f"--retry {retry!r} is not a number of retries",
                           "give a whole number from 0, e.g. --retry 1")
    for flag, value in (("--partition", partition), ("--account", account), ("--time", time_limit)):
        if value and not re.fullmatch(r"[A-Za-z0-9_.:,+-]+", value):
            raise KernlabError(f"{flag} {value!r} is not a Slurm name or time",
                               f"give {flag} as Slurm spells it (e.g. --partition batch, --time 2:00:00)")
    asked = lanes if lanes not in (None, "") else os.environ.get("KERNLAB_LANES") or 1
    count = lane_count(asked, 1 << 10)  # one lane per CPU Slurm gives the task
    return SlurmOptions(slurm_dir_of(slurm_dir), partition, account, time_limit, retries, count)


# ---------------------------------------------------------------- the run
def run_array(kernels: list[str], names: list[str], options: SlurmOptions) -> SlurmRun:
    """Submit one array task per kernel, follow it, resubmit what ended without a report
    (``options.retry`` times); Ctrl-C cancels it and returns what finished."""
    check_tools()
    if not kernels:
        raise KernlabError("no kernels to run", "name at least one kernel, e.g. --kernels 6.1")
    run = _new_run(options.slurm_dir)
    tasks = [Task(i, k) for i, k in enumerate(kernels)]
    reporter().note(f"slurm: run folder {run}")
    interrupted, jobs = False, []
    try:
        _rounds(tasks, names, run, options, jobs)
    except KernlabError:
        if not jobs:  # nothing was submitted: no run folder left behind
            shutil.rmtree(run, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        interrupted = True
        _cancel_and_wait(tasks, jobs, options)
    return SlurmRun(tasks, run, interrupted)


def _rounds(tasks: list[Task], names: list[str], run: Path, options: SlurmOptions, jobs: list[str]) -> None:
    """Submit the tasks, follow them; resubmit those without a report, ``retry`` times at most.
    ``jobs`` gets every job id submitted (for Ctrl-C)."""
    todo, image_job = tasks, None
    for attempt in range(options.retry + 1):
        if attempt:
            reporter().note(f"slurm: resubmitting {', '.join(t.kernel for t in todo)} "
                            f"(retry {attempt} of {options.retry})")
        image_job = _image_job(run, options, image_job)
        jobs += [image_job] if image_job else []
        job = submit_array(todo, names, run, options, image_job)
        jobs.append(job)
        follow(todo, job, run, options.poll)
        todo = [t for t in todo if t.report(run) is None]
        if not todo:
            return


def _new_run(slurm_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run = slurm_dir / "runs" / f"{stamp}-{os.getpid()}"
    (run / "logs").mkdir(parents=True, exist_ok=False)
    return run


def shared_areas(slurm_dir: Path) -> contextlib.AbstractContextManager[None]:
    """KERNLAB_WORK and KERNLAB_STATE pointed at the shared ones inside the block."""
    return scoped_environ({"KERNLAB_WORK": str(slurm_dir / "work"),
                           "KERNLAB_STATE": str(slurm_dir / "state")})


# ---------------------------------------------------------------- scripts and sbatch
def task_script(tasks: list[Task], names: list[str], run: Path, slurm_dir: Path, lanes: int) -> str:
    """The array's batch script: array index -> kernel, then `invoke matrix` for that kernel
    with the shared kernels, node-local state, and its attempt's own bundles and report."""
    cases = "\n".join(f"  {t.index}) KERNEL={shlex.quote(t.kernel)} ;;" for t in tasks)
    q = shlex.quote
    return f"""#!/bin/sh
# kernlab matrix task: written by `invoke matrix --slurm`; one array task per kernel.
set -eu
case "$SLURM_ARRAY_TASK_ID" in
{cases}
  *) echo "kernlab: error: no kernel for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;
esac
TASK_DIR={q(str(run))}/tasks/$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_JOB_ID
# VMs and snapshots on the node's own disk (short paths: QEMU's sockets allow 107 bytes),
# removed when the task ends; the image is the shared one
STATE="${{TMPDIR:-/tmp}}/kernlab-$SLURM_JOB_ID"
mkdir -p "$TASK_DIR" "$STATE"
trap 'rm -rf "$STATE"' EXIT
trap 'exit 143' TERM INT
ln -sfn {q(str(slurm_dir / "state" / "images"))} "$STATE/images"
export KERNLAB_WORK={q(str(slurm_dir / "work"))}
export KERNLAB_STATE="$STATE" KERNLAB_RESULTS="$TASK_DIR/bundles" KERNLAB_PLAIN=1
echo "kernlab: task $SLURM_ARRAY_TASK_ID: kernel $KERNEL on $(hostname), folder $TASK_DIR"
cd {q(str(paths.root()))}
status=0
{q(sys.executable)} -m invoke matrix --kernels "$KERNEL" --experiments {q(",".join(names))} \\
  --out "$TASK_DIR/report" --lanes {lanes} || status=$?
exit $status
"""


def image_script(slurm_dir: Path) -> str:
    """The job that builds the guest image once in the shared state, before the array."""
    return f"""#!/bin/sh
# kernlab image job: written by `invoke matrix --slurm`; the array depends on it.
set -eu
export KERNLAB_WORK={shlex.quote(str(slurm_dir / "work"))} KERNLAB_PLAIN=1
export KERNLAB_STATE={shlex.quote(str(slurm_dir / "state"))}
cd {shlex.quote(str(paths.root()))}
exec {shlex.quote(sys.executable)} -m invoke build-image --recipe {RECIPE}
"""


def _image_job(run: Path, options: SlurmOptions, earlier: str | None) -> str | None:
    """The image job's id, submitted when no image is there (and no registry serves one)."""
    if os.environ.get("KERNLAB_REGISTRY") or _image_ready(options.slurm_dir):
        return None
    if earlier and _job_state(earlier) == "COMPLETED":
        return None
    script = run / "image.sbatch"
    script.write_text(image_script(options.slurm_dir))
    log = run / "logs" / "image-%j.out"
    job = sbatch([*_common_flags(options, "kernlab-image"), f"--output={log}", str(script)])
    reporter().note(f"slurm: image job {job} (build-image; the array waits for it), log "
                    f"{run / 'logs' / f'image-{job}.out'}")
    return job


def _image_ready(slurm_dir: Path) -> bool:
    with shared_areas(slurm_dir):
        try:
            find_image(RECIPE)
        except NotFound:
            return False
    return True


def submit_array(tasks: list[Task], names: list[str], run: Path, options: SlurmOptions,
                 after: str | None = None) -> str:
    """sbatch the tasks as one array (after job ``after`` succeeded); the array job id."""
    script = run / f"matrix-{len(tasks[0].attempts)}.sbatch"
    script.write_text(task_script(tasks, names, run, options.slurm_dir, options.lanes))
    flags = [*_common_flags(options, "kernlab-matrix"),
             f"--array={','.join(str(t.index) for t in tasks)}",
             f"--cpus-per-task={options.lanes}", f"--mem={GIB_PER_LANE * options.lanes}G",
             f"--output={run / 'logs' / 'task-%a-%A.out'}"]
    if after:
        flags += [f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"]
    job = sbatch([*flags, str(script)])
    for task in tasks:
        task.attempts.append(job)
        task.state = None
    reporter().note(f"slurm: array job {job}: " + ", ".join(f"{job}_{t.index} {t.kernel}" for t in tasks))
    return job


def _common_flags(options: SlurmOptions, name: str) -> list[str]:
    flags = [f"--job-name={name}", "--parsable", f"--chdir={paths.root()}"]
    flags += [f"--partition={options.partition}"] if options.partition else []
    flags += [f"--account={options.account}"] if options.account else []
    flags += [f"--time={options.time}"] if options.time else []
    return flags


def sbatch(args: list[str]) -> str:
    """Run sbatch; the job id it prints (``--parsable``: ``ID`` or ``ID;cluster``)."""
    done = _slurm(["sbatch", *args])
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        unreachable = any(w in said[-1] for w in ("configuration source", "contact slurm controller"))
        raise KernlabError(f"sbatch refused the job: {said[-1][:300]}",
                           "point SLURM_CONF at the cluster's slurm.conf, or run on a login node"
                           if unreachable else
                           "check --partition, --account and --time against the cluster (`sinfo`)")
    return done.stdout.strip().split(";")[0]


def _slurm(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise KernlabError(f"`{' '.join(argv[:3])}` did not answer in {timeout:.0f} s",
                           "check that slurmctld runs (`scontrol ping`)") from None
    except OSError as error:
        raise KernlabError(f"cannot run {argv[0]} ({error.strerror or error})",
                           "install Slurm's client commands (slurm-client)") from None


# ---------------------------------------------------------------- following the array
def follow(tasks: list[Task], job: str, run: Path, poll: float) -> None:
    """Until every task of array ``job`` has ended: one line per change of a task's state,
    and the progress lines of its log."""
    offsets: dict[Path, int] = {}
    by_index = {t.index: t for t in tasks}
    while True:
        states = job_states(job)
        for label, log in _logs(tasks, run):  # before the states: a task's last lines, then its end
            _echo_log(label, log, offsets)
        for index, state in states.items():
            task = by_index.get(index)
            if task is not None:
                _show_change(task, state, run)
        if all(t.state is not None and t.state.final for t in tasks):
            return
        time.sleep(poll)


def _show_change(task: Task, state: TaskState, run: Path) -> None:
    before = task.state
    task.state = state
    if before is not None and (before.state, before.reason, before.node) == \
            (state.state, state.reason, state.node):
        return
    line = f"[{task.kernel}] {state.why()}"
    if state.final and state.state != "COMPLETED" and task.report(run) is None:
        line += f": ERROR, no report; log {task.log(run)}"
    reporter().note(line)


def _logs(tasks: list[Task], run: Path) -> list[tuple[str, Path]]:
    """The logs to echo: the image jobs' and each task's current attempt's."""
    images = [("image", log) for log in sorted((run / "logs").glob("image-*.out"))]
    return images + [(t.kernel, t.log(run)) for t in tasks if t.attempts]


def _echo_log(label: str, log: Path, offsets: dict[Path, int]) -> None:
    """The new progress lines (``> step``, ``< done``, ``kernlab: ...``) of a job's log."""
    try:
        with log.open("rb") as stream:
            stream.seek(offsets.get(log, 0))
            data = stream.read()
    except OSError:
        return
    complete = data[:data.rfind(b"\n") + 1]
    offsets[log] = offsets.get(log, 0) + len(complete)
    for raw in complete.decode(errors="replace").splitlines():
        shown = without_stamp(raw.strip()).lstrip()
        if shown.startswith(PROGRESS_PREFIXES):
            reporter().note(f"[{label}] {shown}")


def job_states(job: str) -> dict[int, TaskState]:
    """Each task of array ``job``: from scontrol while the controller holds the job (it keeps
    finished jobs for MinJobAge seconds), else from sacct (the accounting database)."""
    done = _slurm(["scontrol", "-o", "show", "job", job])
    if done.returncode == 0 and done.stdout.strip():
        return scontrol_states(done.stdout, job)
    done = _slurm(["sacct", "-n", "-P", "-X", "-j", job,
                   "--format=JobID,State,Reason,ExitCode,NodeList,Elapsed"])
    if done.returncode == 0 and done.stdout.strip():
        return sacct_states(done.stdout, job)
    return {}


def scontrol_states(text: str, job: str) -> dict[int, TaskState]:
    """``scontrol -o show job`` lines (one per task, or per range of pending tasks) by task."""
    states: dict[int, TaskState] = {}
    for line in text.splitlines():
        fields = scontrol_fields(line)
        if fields.get("ArrayJobId") != job:
            continue
        for index in task_ids(fields.get("ArrayTaskId", "")):
            states[index] = TaskState(job, index, fields.get("JobState", ""), fields.get("Reason", ""),
                                      fields.get("ExitCode", ""), fields.get("NodeList", ""),
                                      fields.get("RunTime", ""))
    return states


def scontrol_fields(line: str) -> dict[str, str]:
    """``Key=value Key=value`` into a dict (a word without '=' belongs to the value before)."""
    fields: dict[str, str] = {}
    last = ""
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_:/]*", key):
            fields[key], last = value, key
        elif last:
            fields[last] += " " + word
    return fields


def sacct_states(text: str, job: str) -> dict[int, TaskState]:
    """``sacct -P`` rows (JobID|State|Reason|ExitCode|NodeList|Elapsed) by task."""
    states: dict[int, TaskState] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 6 or not parts[0].startswith(f"{job}_"):
            continue
        spec = parts[0][len(job) + 1:].strip("[]")
        state = parts[1].split()[0] if parts[1] else ""  # "CANCELLED by 0"
        for index in task_ids(spec):
            states[index] = TaskState(job, index, state, parts[2], parts[3], parts[4], parts[5])
    return states


def task_ids(spec: str) -> list[int]:
    """Slurm's array index list: ``3``, ``0-4``, ``1,3-5``, ``0-9%2`` (a throttle)."""
    ids: list[int] = []
    for part in spec.split("%")[0].split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            ids += range(int(first), int(last or first) + 1)
    return ids


def _job_state(job: str) -> str:
    """A plain job's state ('' when Slurm no longer knows it)."""
    done = _slurm(["scontrol", "-o", "show", "job", job])
    return scontrol_fields(done.stdout).get("JobState", "") if done.returncode == 0 else ""


# ---------------------------------------------------------------- Ctrl-C
def _cancel_and_wait(tasks: list[Task], jobs: list[str], options: SlurmOptions) -> None:
    """scancel every job this run submitted, wait (bounded) for the arrays' tasks to end."""
    reporter().warn(f"interrupted: cancelling {', '.join(jobs) or 'nothing'} (scancel)")
    if jobs:
        _slurm(["scancel", *jobs])
    deadline = time.monotonic() + CANCEL_WAIT
    try:
        for job in sorted({t.attempts[-1] for t in tasks if t.attempts}):
            pending = [t for t in tasks if t.attempts and t.attempts[-1] == job]
            while time.monotonic() < deadline:
                states = job_states(job)
                for task in pending:
                    if task.index in states:
                        task.state = states[task.index]
                if all(t.state is not None and t.state.final for t in pending):
                    break
                time.sleep(min(options.poll, 2.0))
    except KeyboardInterrupt:
        reporter().warn("not waiting for the cancelled tasks to stop")


# ---------------------------------------------------------------- why a task has no report
def error_reason(task: Task, run: Path) -> str:
    """Why a task has no report: Slurm's words, the task's own error line, its log."""
    if not task.attempts:
        return "not submitted (interrupted)"
    slurm = task.state.why() if task.state else f"Slurm job {task.attempts[-1]}_{task.index}: no state"
    own = _last_error(task.log(run))
    log = task.log(run)
    if task.state and "Dependency" in task.state.reason:  # the image job failed: its log says why
        images = sorted((run / "logs").glob("image-*.out"), key=lambda p: p.stat().st_mtime)
        own, log = own or _last_error(images[-1]) if images else own, images[-1] if images else log
    return f"{slurm}{f'; {own}' if own else ''}; log {log}"


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if "kernlab: error: " in line]
    return errors[-1][errors[-1].index("kernlab: error: "):][:300] if errors else ""
